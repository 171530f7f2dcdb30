extension Kernels {
    /// One thread's matmul over a block of rows held in their own buffer: for r in rowRange,
    /// y[t, r] = sum_c tile[r - rowRange.lowerBound, c] * x[t, c], y (tokens, rows).
    /// For weights that are decoded a row block at a time (packed formats): the caller decodes
    /// `tile` (rowRange.count, cols) into a small buffer and calls this from its own pool task.
    public static func matmulRows(
        _ tile: UnsafePointer<Float>, rowRange: Range<Int>, rows: Int, cols: Int,
        _ x: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>, level: KernelLevel = .selected
    ) {
        guard !rowRange.isEmpty, tokens > 0 else { return }
        // The block kernels address row r at w + r * cols; shift the base so that row
        // rowRange.lowerBound lands on the tile's first row. Only rows in rowRange are read.
        let base = tile - rowRange.lowerBound * cols
        matmulBlock(base, rows: rows, cols: cols, x, into: y, rowRange: rowRange, tokenRange: 0..<tokens, level: level.resolved)
    }
}
