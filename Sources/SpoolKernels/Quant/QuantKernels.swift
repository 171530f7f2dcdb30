#if arch(x86_64)
import SpoolKernelsAVX2
import SpoolKernelsAVX512
#endif

/// The 8-bit activation kernels: quantize a batch of activations once, then multiply it with weight
/// rows stored as blocks (`WeightBlockFormat`) without ever expanding the weights to floats.
extension Kernels {
    /// Quantizes x (tokens, cols) into `out`. cols must be a multiple of 32.
    public static func quantizeActivations(
        _ x: UnsafePointer<Float>, tokens: Int, cols: Int, into out: Q8Activations, pool: ThreadPool,
        level: KernelLevel = .selected
    ) {
        out.reserve(tokens: tokens, cols: cols)
        let level = level.resolved
        let body = { (rows: Range<Int>) in
            #if arch(x86_64)
            if level != .generic {
                QuantAVX2.quantizeRows(x, cols: cols, qs: out.qs, d: out.d, s: out.s, rows: rows)
                return
            }
            #endif
            QuantGeneric.quantizeRows(x, tokens: tokens, cols: cols, into: out, rows: rows)
        }
        // A row is ~1 µs of work: only large batches are worth splitting.
        if tokens >= 16 { pool.parallelRanges(tokens, body) } else { body(0..<tokens) }
    }

    /// y (tokens, rows) = x · Wᵀ with W (rows, cols) stored as `format` blocks, row after row.
    public static func quantMatmul(
        _ format: WeightBlockFormat, _ w: UnsafeRawPointer, rows: Int, cols: Int,
        _ x: Q8Activations, into y: UnsafeMutablePointer<Float>, pool: ThreadPool,
        level: KernelLevel = .selected
    ) {
        let tokens = x.tokens
        guard rows > 0, tokens > 0 else { return }
        let level = level.resolved
        let perChunk = rowsPerChunk(rows, threads: pool.threadCount)
        pool.parallelFor((rows + perChunk - 1) / perChunk) { i in
            let range = (i * perChunk)..<min(rows, (i + 1) * perChunk)
            quantMatmulBlock(format, w, rows: rows, cols: cols, x, into: y, rowRange: range, tokenRange: 0..<tokens, level: level)
        }
    }

    /// Rows per task of the integer matmuls: a multiple of the 4-row tile, about 8 tasks per
    /// thread so that threads finishing early take more.
    public static func rowsPerChunk(_ rows: Int, threads: Int) -> Int {
        max(8, (rows / (threads * 8) + 3) & ~3)
    }

    /// One block of `quantMatmul` (rows `rowRange`, tokens `tokenRange`) at `level`.
    @inline(__always)
    public static func quantMatmulBlock(
        _ format: WeightBlockFormat, _ w: UnsafeRawPointer, rows: Int, cols: Int, _ x: Q8Activations,
        into y: UnsafeMutablePointer<Float>, rowRange: Range<Int>, tokenRange: Range<Int>, level: KernelLevel
    ) {
        #if arch(x86_64)
        if level != .generic {
            let args = QuantMatmulArgs(
                w: w, rows: rows, cols: cols, qs: UnsafePointer(x.qs), d: UnsafePointer(x.d), s: UnsafePointer(x.s), y: y)
            if level == .avx512vnni {
                switch format {
                case .q4_1: QuantAVX512.matmulQ4_1(args, rowRange: rowRange, tokenRange: tokenRange)
                case .q8_0: QuantAVX512.matmulQ8_0(args, rowRange: rowRange, tokenRange: tokenRange)
                }
                return
            }
            switch format {
            case .q4_1: QuantAVX2.matmulQ4_1(args, rowRange: rowRange, tokenRange: tokenRange)
            case .q8_0: QuantAVX2.matmulQ8_0(args, rowRange: rowRange, tokenRange: tokenRange)
            }
            return
        }
        #endif
        QuantGeneric.matmulBlock(format, w, rows: rows, cols: cols, x, into: y, rowRange: rowRange, tokenRange: tokenRange)
    }
}
