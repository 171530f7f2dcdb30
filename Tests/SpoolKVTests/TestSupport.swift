@testable import SpoolKV
import SpoolKernels
import SpoolTestSupport
import XCTest

/// Error limits, named so a change to one is a visible decision.
///
/// SIMD kernels vs their scalar (double-accumulating) references, relative to the sum of the
/// magnitudes of the terms (float accumulation in another order: ~n * 2^-24 worst case).
let MAX_KV_KERNEL_REL_ERROR: Float = 1e-5
/// A cache's attention output vs attention computed in double over exactly what the cache holds
/// (dequantized codes and f16 rows), relative to the largest |value| the query can see; the
/// polynomial exp of the softmax (MAX_EXP_REL_ERROR 5e-7) dominates.
let MAX_ATTENTION_REF_ERROR: Float = 2e-5
/// Attention output of a cache vs the exact f32 cache on the random keys and values of
/// `attentionData`, RMS error relative to the RMS of the f32 output, per storage (measured values in
/// the comments; random data has no outlier channels, so 2 bits is near its worst here).
let MAX_ATTENTION_RMS_ERROR: [Int: Float] = [
    16: 5e-4,   // measured 2.1e-4
    8: 1e-2,    // measured 3.7e-3
    4: 0.1,     // measured 0.064
    // measured 0.33 with plain values, 0.48 with the default Hadamard-rotated values: these values
    // are uniform, min-max 2-bit rounding's best case, and the rotation makes them Gaussian, whose
    // range over 64 channels is wider (real values have outlier channels, where it helps).
    2: 0.55,
]

/// Keys and values shaped like real ones: every channel has its own offset and scale (keys have a
/// few large-magnitude channels, as post-RoPE LLM keys do), values are plain noise.
struct AttentionData {
    var geometry: KVGeometry
    var keys: [Float]     // (tokens, kvDim)
    var values: [Float]   // (tokens, kvDim)
    var queries: [Float]  // (tokens, queryHeads, headDim)

    init(geometry g: KVGeometry, tokens: Int, seed: UInt64) {
        geometry = g
        var r = TestRandom(seed: seed)
        let d = g.kvDim
        let scale = (0..<d).map { c in c % 17 == 3 ? r.float(4, 8) : r.float(0.5, 1.5) }
        let offset = (0..<d).map { _ in r.float(-1, 1) }
        keys = (0..<(tokens * d)).map { i in offset[i % d] + scale[i % d] * r.float(-1, 1) }
        values = r.floats(tokens * d)
        queries = r.floats(tokens * g.queryHeads * g.headDim, -0.5, 0.5)
    }
}

let smallGeometry = KVGeometry(layers: 2, kvHeads: 3, queryHeads: 9, headDim: 64, capacity: 256)

/// Stores `data` tokens from..<to in one call and attends for them; returns (tokens, heads, headDim).
@discardableResult
func storeAndAttend(_ cache: KVCache, _ data: AttentionData, layer: Int = 0, from: Int, to: Int, pool: ThreadPool) throws -> [Float] {
    let g = data.geometry, d = g.kvDim, qd = g.queryHeads * g.headDim
    var out = [Float](repeating: 0, count: (to - from) * qd)
    try data.keys.withUnsafeBufferPointer { k in
        try data.values.withUnsafeBufferPointer { v in
            try cache.store(layer: layer, start: from, tokens: to - from, keys: k.baseAddress! + from * d, values: v.baseAddress! + from * d)
        }
    }
    data.queries.withUnsafeBufferPointer { q in
        out.withUnsafeMutableBufferPointer { o in
            cache.attend(layer: layer, start: from, tokens: to - from, queries: q.baseAddress! + from * qd, output: o.baseAddress!, pool: pool)
        }
    }
    return out
}

/// Causal attention in double for query `t` of head `h` over rows given by `row(j)` = (key, value).
func referenceAttention(query q: ArraySlice<Float>, head h: Int, geometry g: KVGeometry, visible n: Int,
                        row: (Int) -> (key: [Float], value: [Float])) -> [Double] {
    let kvh = h / (g.queryHeads / g.kvHeads), hd = g.headDim
    let rows = (0..<n).map(row)
    let scores = rows.map { r in
        (0..<hd).reduce(0.0) { $0 + Double(q[q.startIndex + $1]) * Double(r.key[kvh * hd + $1]) } / Double(hd).squareRoot()
    }
    let m = scores.max()!
    let e = scores.map { Foundation.exp($0 - m) }
    let sum = e.reduce(0, +)
    return (0..<hd).map { i in (0..<n).reduce(0.0) { $0 + e[$1] / sum * Double(rows[$1].value[kvh * hd + i]) } }
}

func rmsRelative(_ a: [Float], _ b: [Float]) -> Float {
    var num = 0.0, den = 0.0
    for i in a.indices { num += Double((a[i] - b[i]) * (a[i] - b[i])); den += Double(b[i] * b[i]) }
    return Float((num / max(den, 1e-30)).squareRoot())
}
