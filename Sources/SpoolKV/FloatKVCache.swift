import Foundation
import SpoolKernels

/// A KV cache that stores keys and values as floats, in f32 (the exact reference every quantized
/// cache is measured against) or f16 (llama.cpp's default cache type, `--kv-bits 16`).
///
/// With f16 storage (and a head size that is a multiple of 16) attention is computed as llama.cpp's
/// non-flash path computes it (`Kernels.attendHalf`): queries and probabilities rounded to f16,
/// products accumulated in f32 lanes in ggml's order.
public final class FloatKVCache: KVCache {
    public enum Precision: Sendable { case f32, f16 }

    public let geometry: KVGeometry
    public let precision: Precision
    public private(set) var count = 0
    // Per layer: (capacity, kvDim) keys and values, as Float (f32) or UInt16 bit patterns (f16).
    private var keys: [UnsafeMutableRawPointer]
    private var values: [UnsafeMutableRawPointer]

    /// With f16 storage: attend as llama.cpp does (`Kernels.attendHalf`, bit for bit), or, when
    /// false, through the faster `Kernels.attendKVHead` (keys/values converted once per KV head and
    /// chunk, shared by the group's query heads). Models whose logits cannot match llama.cpp anyway
    /// (.spool files) take the fast one.
    public let exactAttention: Bool

    public init(geometry: KVGeometry, precision: Precision = .f32, exactAttention: Bool = true) {
        self.geometry = geometry
        self.precision = precision
        self.exactAttention = exactAttention
        let bytes = max(geometry.capacity * geometry.kvDim, 1) * (precision == .f32 ? 4 : 2)
        keys = (0..<geometry.layers).map { _ in .allocate(byteCount: bytes, alignment: 64) }
        values = (0..<geometry.layers).map { _ in .allocate(byteCount: bytes, alignment: 64) }
    }

    deinit {
        keys.forEach { $0.deallocate() }
        values.forEach { $0.deallocate() }
    }

    private var elementSize: Int { precision == .f32 ? 4 : 2 }
    public var bytesPerToken: Double { Double(2 * geometry.layers * geometry.kvDim * elementSize) }
    public var allocatedBytes: Int { Int(bytesPerToken) * geometry.capacity }

    public func store(layer: Int, start: Int, tokens: Int, keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>) throws {
        guard start >= 0, start + tokens <= geometry.capacity else {
            throw KVCacheError.contextFull(needed: start + tokens, capacity: geometry.capacity)
        }
        let d = geometry.kvDim
        switch precision {
        case .f32:
            (keys[layer].assumingMemoryBound(to: Float.self) + start * d).update(from: k, count: tokens * d)
            (values[layer].assumingMemoryBound(to: Float.self) + start * d).update(from: v, count: tokens * d)
        case .f16:
            Half.store(k, count: tokens * d, into: keys[layer].assumingMemoryBound(to: UInt16.self) + start * d)
            Half.store(v, count: tokens * d, into: values[layer].assumingMemoryBound(to: UInt16.self) + start * d)
        }
    }

    public func attend(layer: Int, start: Int, tokens: Int, queries: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let g = geometry
        let group = g.queryHeads / g.kvHeads
        let scale = 1 / Float(g.headDim).squareRoot()
        let k = UnsafeRawPointer(keys[layer]), v = UnsafeRawPointer(values[layer])
        if precision == .f16 && exactAttention && g.headDim % 16 == 0 {
            // llama.cpp's arithmetic, operation for operation (see GGMLMath): one task per
            // (token, query head).
            pool.parallelRanges(tokens * g.queryHeads) { range in
                let scores = UnsafeMutablePointer<Float>.allocate(capacity: start + tokens)
                let qh = UnsafeMutablePointer<Float>.allocate(capacity: g.headDim)
                let lanes = UnsafeMutablePointer<Float>.allocate(capacity: 64 * g.headDim)
                defer { scores.deallocate(); qh.deallocate(); lanes.deallocate() }
                let kh = k.assumingMemoryBound(to: UInt16.self), vh = v.assumingMemoryBound(to: UInt16.self)
                for task in range {
                    let t = task / g.queryHeads, h = task % g.queryHeads
                    let q = queries + (t * g.queryHeads + h) * g.headDim
                    let head = (h / group) * g.headDim
                    for i in 0..<g.headDim { qh[i] = Half.float(Half.bits(q[i])) }
                    Kernels.attendHalf(query: qh, keys: kh + head, values: vh + head, stride: g.kvDim, count: start + t + 1,
                                       dim: g.headDim, scale: scale, singleToken: tokens == 1, scores: scores, lanes: lanes,
                                       into: output + (t * g.queryHeads + h) * g.headDim)
                }
            }
            return
        }
        // Tasks: (KV head, token chunk). Each converts its KV head's rows once and serves the
        // chunk's tokens for all query heads of the group (`Kernels.attendKVHead`); chunks of 32
        // tokens keep the repeated conversion small next to the dot products.
        let chunk = 32
        let chunks = (tokens + chunk - 1) / chunk
        let half = precision == .f16
        pool.parallelFor(g.kvHeads * chunks) { task in
            let kvh = task % g.kvHeads, c = task / g.kvHeads
            let args = AttentionHeadArgs(
                queries: queries, queryStride: g.queryHeads * g.headDim, heads: (kvh * group)..<((kvh + 1) * group),
                keys: k, values: v, half: half, rowStride: g.kvDim, headOffset: kvh * g.headDim, headDim: g.headDim,
                start: start, scale: scale, output: output)
            Kernels.attendKVHead(args, tokens: (c * chunk)..<min(tokens, (c + 1) * chunk))
        }
    }

    public func commit(upTo count: Int) { self.count = min(max(0, count), geometry.capacity) }
    public func truncate(to count: Int) { self.count = min(self.count, max(0, count)) }
}
