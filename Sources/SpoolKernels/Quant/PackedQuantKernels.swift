#if arch(x86_64)
import SpoolKernelsAVX2
import SpoolKernelsAVX512
#endif

/// The 8-bit activation kernels for the .spool packed formats: x quantized once
/// (`quantizeActivations`), the packed quants unpacked in registers or a small per-thread tile,
/// never a whole tensor.
extension Kernels {
    /// y (tokens, rows) = x · Wᵀ with W a packed .spool matrix.
    public static func packedMatmul(
        _ w: PackedQuantMatrix, _ x: Q8Activations, into y: UnsafeMutablePointer<Float>, pool: ThreadPool,
        level: KernelLevel = .selected
    ) {
        let tokens = x.tokens, rows = w.rows
        guard rows > 0, tokens > 0 else { return }
        let level = level.resolved
        let perChunk = packedRowsPerChunk(rows, tokens: tokens, threads: pool.threadCount, panels: w.panels)
        pool.parallelFor((rows + perChunk - 1) / perChunk) { i in
            let range = (i * perChunk)..<min(rows, (i + 1) * perChunk)
            packedMatmulBlock(w, x, into: y, rowRange: range, tokenRange: 0..<tokens, level: level)
        }
    }

    /// Rows per task of `packedMatmul`: for batches, whole 16-row panels (the AVX-512 panel kernel
    /// pads a partial one with zero rows), about 4 tasks per thread; for decode `rowsPerChunk`.
    /// Interleaved matrices (`panels`) always split at whole panels.
    public static func packedRowsPerChunk(_ rows: Int, tokens: Int, threads: Int, panels: Bool = false) -> Int {
        if panels {
            let per = tokens >= 4 ? 4 : panelTasksPerThread
            return max(PackedPanels.rows, (rows / (threads * per) + PackedPanels.rows - 1) / PackedPanels.rows * PackedPanels.rows)
        }
        guard tokens >= 4 else { return rowsPerChunk(rows, threads: threads) }
        return max(16, (rows / (threads * 4) + 15) & ~15)
    }

    /// Decode tasks per thread on interleaved matrices: one, claimed dynamically. The matvec has
    /// no per-task start-up cost worth spreading, and fewer claims mean fewer contended atomics; on
    /// the idle 2-core machine tg128 was 371/376 tok/s with 1 against 315/323 with 4 (A/B, -r 8).
    static let panelTasksPerThread = 1

    /// One block of y: rows `rowRange`, tokens `tokenRange`, at `level` (already resolved).
    public static func packedMatmulBlock(
        _ w: PackedQuantMatrix, _ x: Q8Activations, into y: UnsafeMutablePointer<Float>,
        rowRange: Range<Int>, tokenRange: Range<Int>, level: KernelLevel
    ) {
        // (A panel matrix has whole panels, so a block of whole panels has both bounds on a panel.)
        if w.panels && !(level == .avx512vnni && rowRange.lowerBound % PackedPanels.rows == 0
                         && rowRange.upperBound % PackedPanels.rows == 0) {
            // Only the AVX-512 kernels read panels, a whole panel at a time; every other case
            // gathers its rows back into the row layout (correct, not fast).
            let n = rowRange.count
            PackedPanels.withRowLayout(w, rows: rowRange) { rm in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: max(1, n * tokenRange.upperBound)) { tmp in
                    let ty = tmp.baseAddress!   // (tokens, n): rows of the tokens before the range unused
                    packedMatmulBlock(rm, x, into: ty, rowRange: 0..<n, tokenRange: tokenRange, level: level)
                    for t in tokenRange { for i in 0..<n { y[t * w.rows + rowRange.lowerBound + i] = ty[t * n + i] } }
                }
            }
            return
        }
        #if arch(x86_64)
        if level.usesAVX2 {
            let args = PackedMatmulArgs(
                quants: w.quants, scales: w.scales, rows: w.rows, cols: w.cols, bits: w.format.bits, group: w.format.group,
                qs: UnsafePointer(x.qs), d: UnsafePointer(x.d), s: UnsafePointer(x.s), y: y, panels: w.panels)
            if level == .avx512vnni {
                QuantAVX512.matmulPacked(args, rowRange: rowRange, tokenRange: tokenRange)
            } else {
                PackedQuantAVX2.matmul(args, rowRange: rowRange, tokenRange: tokenRange)
            }
            return
        }
        #endif
        PackedQuantGeneric.matmulBlock(w, x, into: y, rowRange: rowRange, tokenRange: tokenRange)
    }
}
