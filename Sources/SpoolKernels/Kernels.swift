import Foundation
import SpoolGGMLMath
#if arch(x86_64)
import SpoolKernelsAVX2
#endif

/// The kernels the forward pass calls. Each has a scalar twin in `Reference` and tests comparing them.
///
/// Every kernel takes a `level` (default `KernelLevel.selected`: the best one this CPU supports,
/// unless the environment says otherwise). An unsupported level silently runs the generic code, so
/// no caller can reach instructions the CPU lacks.
public enum Kernels {
    /// Rows per matmul work chunk: a multiple of the 3-, 4- and 16-row tiles, and small enough that
    /// the chunk's w block (96 x 512 floats = 192 KB) stays in L2 while token tiles pass over it.
    static let matmulRowBlock = 96
    /// Work chunks per thread the matmul aims for, so that dynamic claiming evens out the threads.
    static let matmulChunksPerThread = 4
    /// Smallest token block when a matmul has too few row blocks and is also split by tokens.
    static let matmulMinTokenBlock = 32

    /// y[t, r] = sum_c w[r, c] * x[t, c]; w: (rows, cols), x: (tokens, cols), y: (tokens, rows).
    /// Work is split into (row block, token block) chunks across the pool's threads; one token uses
    /// a dedicated matvec. Buffers aligned to 32 or 64 bytes avoid split vector loads (worth ~5-10%
    /// on the matvec and few-token paths).
    public static func matmul(
        _ w: UnsafePointer<Float>, rows: Int, cols: Int,
        _ x: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>, pool: ThreadPool,
        level: KernelLevel = .selected
    ) {
        guard rows > 0, tokens > 0 else { return }
        guard cols > 0 else {
            y.initialize(repeating: 0, count: rows * tokens)
            return
        }
        let level = level.resolved
        if tokens == 1 {
            // Memory bound: enough chunks to balance, each large enough to amortize a claim.
            let perChunk = max(16, (rows / (pool.threadCount * 4) + 3) & ~3)
            let chunks = (rows + perChunk - 1) / perChunk
            pool.parallelFor(chunks) { i in
                let range = (i * perChunk)..<min(rows, (i + 1) * perChunk)
                matvecBlock(w, cols: cols, x, into: y, rowRange: range, level: level)
            }
            return
        }
        // Whole token range per chunk where possible: a chunk repacks its w rows (AVX2 path), so
        // splitting tokens repeats that work. Split tokens only when row blocks are too few.
        let rb = matmulRowBlock
        let rowBlocks = (rows + rb - 1) / rb
        let wanted = pool.threadCount == 1 ? 1 : pool.threadCount * matmulChunksPerThread
        let tokenSplit = min((wanted + rowBlocks - 1) / rowBlocks, max(1, tokens / matmulMinTokenBlock))
        let tb = (tokens + tokenSplit - 1) / tokenSplit
        let tokenBlocks = (tokens + tb - 1) / tb
        pool.parallelFor(rowBlocks * tokenBlocks) { i in
            let r = i / tokenBlocks, t = i % tokenBlocks
            matmulBlock(
                w, rows: rows, cols: cols, x, into: y,
                rowRange: (r * rb)..<min(rows, (r + 1) * rb), tokenRange: (t * tb)..<min(tokens, (t + 1) * tb),
                level: level)
        }
    }

    /// One thread's share of `matmul`. `level` must already be resolved.
    @inline(__always)
    static func matmulBlock(
        _ w: UnsafePointer<Float>, rows: Int, cols: Int, _ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>,
        rowRange: Range<Int>, tokenRange: Range<Int>, level: KernelLevel
    ) {
        #if arch(x86_64)
        if level.usesAVX2 {
            MatmulAVX2.matmulBlock(w, rows: rows, cols: cols, x, into: y, rowRange: rowRange, tokenRange: tokenRange)
            return
        }
        #endif
        MatmulGeneric.matmulBlock(w, rows: rows, cols: cols, x, into: y, rowRange: rowRange, tokenRange: tokenRange)
    }

    @inline(__always)
    static func matvecBlock(
        _ w: UnsafePointer<Float>, cols: Int, _ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>,
        rowRange: Range<Int>, level: KernelLevel
    ) {
        #if arch(x86_64)
        if level.usesAVX2 {
            MatmulAVX2.matvecBlock(w, cols: cols, x, into: y, rowRange: rowRange)
            return
        }
        #endif
        MatmulGeneric.matvecBlock(w, cols: cols, x, into: y, rowRange: rowRange)
    }

    /// out = x / sqrt(mean(x^2) + eps) * weight, per row of n. `out` may be `x`. Computed as
    /// llama.cpp computes it (`GGMLMath.rmsNorm`) at every level: it is a small part of a token.
    public static func rmsNorm(
        _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, n: Int, tokens: Int, eps: Float,
        into out: UnsafeMutablePointer<Float>, level: KernelLevel = .selected
    ) {
        for t in 0..<tokens { GGMLMath.rmsNorm(x + t * n, weight: weight, n: n, eps: eps, into: out + t * n) }
    }

    /// See `Reference.rope`. Angles come from a process-wide `RopeTable` for (ropeDims, base),
    /// built on first use and regrown when a larger position appears.
    public static func rope(
        _ x: UnsafeMutablePointer<Float>, tokens: Int, heads: Int, headDim: Int, ropeDims: Int,
        positions: UnsafePointer<Int32>, base: Float
    ) {
        guard tokens > 0, ropeDims > 0 else { return }
        var maxPosition = 0
        for t in 0..<tokens { maxPosition = max(maxPosition, Int(positions[t])) }
        let table = RopeTable.shared(ropeDims: ropeDims, base: base, covering: maxPosition)
        RopeGeneric.apply(x, tokens: tokens, heads: heads, headDim: headDim, positions: positions, table: table)
    }

    /// `rope` with a table the caller owns; positions outside it are computed on the fly.
    public static func rope(
        _ x: UnsafeMutablePointer<Float>, tokens: Int, heads: Int, headDim: Int,
        positions: UnsafePointer<Int32>, table: RopeTable
    ) {
        RopeGeneric.apply(x, tokens: tokens, heads: heads, headDim: headDim, positions: positions, table: table)
    }

    /// In-place softmax over n values, with a polynomial exp (see `MAX_EXP_REL_ERROR` in the tests).
    public static func softmax(_ x: UnsafeMutablePointer<Float>, n: Int, level: KernelLevel = .selected) {
        #if arch(x86_64)
        if level.resolved.usesAVX2 {
            ElementwiseAVX2.softmax(x, n: n)
            return
        }
        #endif
        ElementwiseGeneric.softmax(x, n: n)
    }

    /// out = silu(gate) * up, elementwise. `out` may be `gate` or `up`. llama.cpp's arithmetic
    /// (`GGMLMath.swiglu`, its polynomial exp) at every level.
    public static func swiglu(
        _ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<Float>,
        level: KernelLevel = .selected
    ) {
        #if arch(x86_64)
        if level.resolved.usesAVX2 {
            ExactAVX2.swiglu(gate, up, count: count, into: out)
            return
        }
        #endif
        GGMLMath.swiglu(gate, up, count: count, into: out, expf: { Foundation.exp($0) })
    }

    /// One query head attending over an f16 K/V cache with llama.cpp's non-flash arithmetic
    /// (`GGMLMath.attendHalf`): q must already hold f16-rounded values; keys/values rows are
    /// `stride` halves apart; scores: n floats and lanes: 64 * dim floats of scratch; `singleToken`: the batch has one token. dim % 16 == 0.
    public static func attendHalf(
        query q: UnsafePointer<Float>, keys: UnsafePointer<UInt16>, values: UnsafePointer<UInt16>,
        stride: Int, count n: Int, dim: Int, scale: Float, singleToken: Bool,
        scores: UnsafeMutablePointer<Float>, lanes: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>,
        level: KernelLevel = .selected
    ) {
        #if arch(x86_64)
        if level.resolved.usesAVX2 {
            ExactAVX2.attendHalf(query: q, keys: keys, values: values, stride: stride, count: n, dim: dim, scale: scale, singleToken: singleToken,
                                 scores: scores, lanes: lanes, into: out)
            return
        }
        #endif
        GGMLMath.attendHalf(query: q, keys: keys, values: values, stride: stride, count: n, dim: dim, scale: scale, singleToken: singleToken,
                            scores: scores, lanes: lanes, into: out)
    }

    /// out[i] = exp(x[i]) with the kernels' polynomial exp; public so its error can be tested.
    public static func exp(_ x: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<Float>, level: KernelLevel = .selected) {
        #if arch(x86_64)
        if level.resolved.usesAVX2 {
            ElementwiseAVX2.exp(x, count: count, into: out)
            return
        }
        #endif
        ElementwiseGeneric.exp(x, count: count, into: out)
    }
}
