import CSpoolSys
#if arch(x86_64)
import SpoolKernelsAVX2
import SpoolKernelsAVX512
#endif

/// Causal attention of the query heads that share one KV head, for a range of tokens, over a float
/// KV cache slice (f32 or f16 rows).
///
/// Work shape: the keys the range needs are converted once to f32 and transposed into a
/// (headDim, keys) panel, the values to f32 rows; then every (token, head) query computes 16
/// scores per vector with broadcast-multiply-adds over the panel (no horizontal sums), takes the
/// softmax, and mixes the value rows. The conversion is paid once per (KV head, token range)
/// instead of once per query, and the 3 query heads of a KV head and all tokens of the range reuse
/// the panel from L2.
public struct AttentionHeadArgs {
    /// (tokens, queryStride): the query head h of token t is at t * queryStride + h * headDim.
    public var queries: UnsafePointer<Float>
    public var queryStride: Int
    /// The query heads sharing this KV head.
    public var heads: Range<Int>
    /// Cache rows: position j of this head at (j * rowStride + headOffset) elements, f32 or f16 bits.
    public var keys: UnsafeRawPointer
    public var values: UnsafeRawPointer
    public var half: Bool
    public var rowStride: Int
    public var headOffset: Int
    public var headDim: Int
    /// Position of token 0; token t sees positions 0 ... start + t.
    public var start: Int
    public var scale: Float
    /// Same layout as the queries.
    public var output: UnsafeMutablePointer<Float>

    public init(queries: UnsafePointer<Float>, queryStride: Int, heads: Range<Int>, keys: UnsafeRawPointer,
                values: UnsafeRawPointer, half: Bool, rowStride: Int, headOffset: Int, headDim: Int, start: Int,
                scale: Float, output: UnsafeMutablePointer<Float>) {
        self.queries = queries; self.queryStride = queryStride; self.heads = heads; self.keys = keys
        self.values = values; self.half = half; self.rowStride = rowStride; self.headOffset = headOffset
        self.headDim = headDim; self.start = start; self.scale = scale; self.output = output
    }

    /// Keys panel width: positions rounded up to 16.
    static func panelWidth(_ n: Int) -> Int { (n + 15) & ~15 }

    /// Element (j, d) of the keys or values as f32.
    @inline(__always)
    func load(_ base: UnsafeRawPointer, _ j: Int, _ d: Int) -> Float {
        let i = j * rowStride + headOffset + d
        return half ? Float(Float16(bitPattern: base.load(fromByteOffset: 2 * i, as: UInt16.self)))
                    : base.load(fromByteOffset: 4 * i, as: Float.self)
    }

    /// Fills kt (headDim, panelWidth(n)) with the transposed keys 0..<n (zero past n) and
    /// v (n, headDim) with the values.
    func fillPanels(n: Int, kt: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>) {
        let w = Self.panelWidth(n)
        for j in 0..<n {
            for d in 0..<headDim {
                kt[d * w + j] = load(keys, j, d)
                v[j * headDim + d] = load(values, j, d)
            }
        }
        for d in 0..<headDim { for j in n..<w { kt[d * w + j] = 0 } }
    }

    /// The query as the cache's precision sees it: rounded to f16 for an f16 cache (as llama.cpp
    /// converts the other operand of an f16 K cache product).
    @inline(__always)
    func query(_ t: Int, _ h: Int, _ d: Int) -> Float {
        let x = queries[t * queryStride + h * headDim + d]
        return half ? Float(Float16(x)) : x
    }
}

extension Kernels {
    /// Attention for `tokens` (a range of the batch's tokens) and the query heads in `a.heads`.
    public static func attendKVHead(_ a: AttentionHeadArgs, tokens: Range<Int>, level: KernelLevel = .selected) {
        guard !tokens.isEmpty, !a.heads.isEmpty else { return }
        #if arch(x86_64)
        if level.resolved.usesAVX2 && tokens.count * a.heads.count <= 4 {
            attendFewQueries(a, tokens: tokens, level: level)
            return
        }
        #endif
        let n = a.start + tokens.upperBound, w = AttentionHeadArgs.panelWidth(n)
        let floats = a.headDim * w + n * a.headDim + w + a.headDim
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: floats * 4, alignment: 64).bindMemory(to: Float.self, capacity: floats)
        defer { buffer.deallocate() }
        let kt = buffer, v = kt + a.headDim * w, scores = v + n * a.headDim, q = scores + w
        #if arch(x86_64)
        if level.resolved.usesAVX2 {
            AttentionAVX2.fillPanels(keys: a.keys, values: a.values, half: a.half, rowStride: a.rowStride, offset: a.headOffset,
                                     dim: a.headDim, n: n, width: w, kt: kt, v: v)
        } else {
            a.fillPanels(n: n, kt: kt, v: v)
        }
        if level.resolved == .avx512vnni && a.headDim % 16 == 0 {
            for t in tokens {
                for h in a.heads {
                    AttentionAVX2.prepareQuery(a.queries + t * a.queryStride + h * a.headDim, dim: a.headDim, half: a.half, into: q)
                    let nt = a.start + t + 1
                    AttentionAVX512.scores(q, kt, width: w, count: nt, dim: a.headDim, scale: a.scale, into: scores)
                    Kernels.softmax(scores, n: nt, level: level)
                    AttentionAVX512.mix(scores, v, count: nt, dim: a.headDim,
                                        into: a.output + t * a.queryStride + h * a.headDim)
                }
            }
            return
        }
        #else
        a.fillPanels(n: n, kt: kt, v: v)
        #endif
        for t in tokens {
            for h in a.heads {
                #if arch(x86_64)
                if level.resolved.usesAVX2 {
                    AttentionAVX2.prepareQuery(a.queries + t * a.queryStride + h * a.headDim, dim: a.headDim, half: a.half, into: q)
                } else {
                    for d in 0..<a.headDim { q[d] = a.query(t, h, d) }
                }
                #else
                for d in 0..<a.headDim { q[d] = a.query(t, h, d) }
                #endif
                let nt = a.start + t + 1
                AttentionGeneric.panelScores(q, kt, width: w, count: nt, dim: a.headDim, scale: a.scale, into: scores)
                Kernels.softmax(scores, n: nt, level: level)
                AttentionGeneric.weightedSum(scores, v, stride: a.headDim, count: nt, dim: a.headDim,
                                             into: a.output + t * a.queryStride + h * a.headDim)
            }
        }
    }

    #if arch(x86_64)
    /// Few queries (decode): keys and values converted to f32 a tile of `decodeTile` rows at a time
    /// into L1 and used there by every query of the call, instead of a whole-context f32 copy that
    /// is written out and read back (12% of a 1-thread tg256 went to that copy's stores).
    static func attendFewQueries(_ a: AttentionHeadArgs, tokens: Range<Int>, level: KernelLevel) {
        let tile = decodeTile, dim = a.headDim, heads = a.heads.count
        let n = a.start + tokens.upperBound
        let queries = tokens.count * heads
        let floats = 2 * tile * dim + queries * (n + 2 * dim)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: floats) { buf in
            let kt = buf.baseAddress!, v = kt + tile * dim
            let scores = v + tile * dim            // (queries, n)
            let q = scores + queries * n           // (queries, dim)
            let part = q + queries * dim           // (dim)
            @inline(__always) func query(_ i: Int) -> (t: Int, h: Int) { (tokens.lowerBound + i / heads, a.heads.lowerBound + i % heads) }
            // The cache rows of one head are strided (a row holds every KV head) and decode has
            // streamed the weights through the caches since this layer's last step, so they come
            // from DRAM: request the next tile's rows while the current one is converted.
            let elementBytes = a.half ? 2 : 4, headBytes = dim * elementBytes
            @inline(__always) func prefetchTile(_ base: UnsafeRawPointer, _ from: Int) {
                guard from < n else { return }
                for j in from..<min(n, from + tile) {
                    let row = base + (j * a.rowStride + a.headOffset) * elementBytes
                    var o = 0
                    while o < headBytes { spool_prefetch(row + o); o += 64 }
                }
            }
            prefetchTile(a.keys, 0)
            for i in 0..<queries {
                let (t, h) = query(i)
                AttentionAVX2.prepareQuery(a.queries + t * a.queryStride + h * dim, dim: dim, half: a.half, into: q + i * dim)
            }
            /// Converts `cache` (K or V) a tile at a time into `into`, prefetching the next tile (then
            /// the first rows of `next`), and hands each tile (first row, rows) to `body`.
            @inline(__always) func tiles(_ cache: UnsafeRawPointer, into: UnsafeMutablePointer<Float>, next: UnsafeRawPointer?,
                                         _ body: (Int, Int) -> Void) {
                var j0 = 0
                while j0 < n {
                    let m = min(tile, n - j0)
                    if j0 + tile < n { prefetchTile(cache, j0 + tile) } else if let next { prefetchTile(next, 0) }
                    AttentionAVX2.convertRows(cache + j0 * a.rowStride * elementBytes, half: a.half, rowStride: a.rowStride,
                                              offset: a.headOffset, dim: dim, n: m, into: into)
                    body(j0, m)
                    j0 += m
                }
            }
            tiles(a.keys, into: kt, next: a.values) { j0, m in
                for i in 0..<queries {
                    let nt = a.start + query(i).t + 1
                    if j0 < nt {
                        Kernels.dotRows(q + i * dim, kt, stride: dim, count: min(m, nt - j0), dim: dim, scale: a.scale,
                                        into: scores + i * n + j0, level: level)
                    }
                }
            }
            for i in 0..<queries {
                let (t, h) = query(i)
                Kernels.softmax(scores + i * n, n: a.start + t + 1, level: level)
                (a.output + t * a.queryStride + h * dim).initialize(repeating: 0, count: dim)
            }
            tiles(a.values, into: v, next: nil) { j0, m in
                for i in 0..<queries {
                    let (t, h) = query(i)
                    let nt = a.start + t + 1
                    guard j0 < nt else { continue }
                    Kernels.weightedSum(scores + i * n + j0, v, stride: dim, count: min(m, nt - j0), dim: dim, into: part, level: level)
                    let out = a.output + t * a.queryStride + h * dim
                    for d in 0..<dim { out[d] += part[d] }
                }
            }
        }
    }

    /// Rows per converted tile of `attendFewQueries`: 32 rows of 64 f32 are 8 KB, K and V tiles 16 KB.
    static let decodeTile = 32
    #endif
}

extension AttentionGeneric {
    /// scores[j] = scale * Σ_d q[d] kt[d * width + j] for j < count (16 positions per vector).
    static func panelScores(_ q: UnsafePointer<Float>, _ kt: UnsafePointer<Float>, width: Int, count: Int, dim: Int,
                            scale: Float, into scores: UnsafeMutablePointer<Float>) {
        typealias V = SIMD16<Float>
        var j = 0
        while j < count {
            var acc = V.zero
            for d in 0..<dim { acc += q[d] * UnsafeRawPointer(kt + d * width + j).load(as: V.self) }
            acc *= scale
            if j + 16 <= count {
                UnsafeMutableRawPointer(scores + j).storeBytes(of: acc, as: V.self)
            } else {
                for i in 0..<(count - j) { scores[j + i] = acc[i] }
            }
            j += 16
        }
    }

}
