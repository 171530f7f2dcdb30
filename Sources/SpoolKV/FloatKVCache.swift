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

    public init(geometry: KVGeometry, precision: Precision = .f32) {
        self.geometry = geometry
        self.precision = precision
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
        let k = UnsafeRawPointer(keys[layer]), v = UnsafeRawPointer(values[layer])
        let group = g.queryHeads / g.kvHeads
        let scale = 1 / Float(g.headDim).squareRoot()
        let tasks = tokens * g.queryHeads
        let precision = precision
        pool.parallelRanges(tasks) { range in
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: start + tokens)
            let qh = UnsafeMutablePointer<Float>.allocate(capacity: g.headDim)
            let acc = UnsafeMutablePointer<Float>.allocate(capacity: g.headDim)
            let lanes = UnsafeMutablePointer<Float>.allocate(capacity: 64 * g.headDim)
            defer { scores.deallocate(); qh.deallocate(); acc.deallocate(); lanes.deallocate() }
            for task in range {
                let t = task / g.queryHeads, h = task % g.queryHeads
                let kvh = h / group
                let q = queries + (t * g.queryHeads + h) * g.headDim
                let n = start + t + 1
                let out = output + (t * g.queryHeads + h) * g.headDim
                let head = kvh * g.headDim
                switch precision {
                case .f32:
                    let kf = k.assumingMemoryBound(to: Float.self), vf = v.assumingMemoryBound(to: Float.self)
                    for j in 0..<n { scores[j] = Self.dot(q, kf + j * g.kvDim + head, g.headDim) * scale }
                    Kernels.softmax(scores, n: n)
                    out.initialize(repeating: 0, count: g.headDim)
                    for j in 0..<n { Self.axpy(scores[j], vf + j * g.kvDim + head, out, g.headDim) }
                case .f16 where g.headDim % 16 == 0:
                    // llama.cpp's arithmetic, operation for operation (see GGMLMath).
                    for i in 0..<g.headDim { qh[i] = Half.float(Half.bits(q[i])) }
                    let kh = k.assumingMemoryBound(to: UInt16.self), vh = v.assumingMemoryBound(to: UInt16.self)
                    Kernels.attendHalf(query: qh, keys: kh + head, values: vh + head, stride: g.kvDim, count: n,
                                       dim: g.headDim, scale: scale, singleToken: tokens == 1, scores: scores, lanes: lanes, into: out)
                case .f16:
                    for i in 0..<g.headDim { acc[i] = Half.float(Half.bits(q[i])) }
                    KVKernels.deinterleave(acc, g.headDim, into: qh)
                    let kh = k.assumingMemoryBound(to: UInt16.self), vh = v.assumingMemoryBound(to: UInt16.self)
                    for j in 0..<n { scores[j] = KVKernels.dotHalf(qh, kh + j * g.kvDim + head, g.headDim) * scale }
                    Kernels.softmax(scores, n: n)
                    acc.initialize(repeating: 0, count: g.headDim)
                    for j in 0..<n { KVKernels.axpyHalf(scores[j], vh + j * g.kvDim + head, acc, g.headDim) }
                    KVKernels.interleave(acc, g.headDim, into: out)
                }
            }
        }
    }

    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD8<Float>.zero
        var i = 0
        while i + 8 <= n {
            acc += UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self)
                * UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
            i += 8
        }
        var s = acc.sum()
        while i < n { s += a[i] * b[i]; i += 1 }
        return s
    }

    /// out += w * x
    @inline(__always)
    static func axpy(_ w: Float, _ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i + 8 <= n {
            let o = UnsafeMutableRawPointer(out + i)
            o.storeBytes(of: o.loadUnaligned(as: SIMD8<Float>.self) + w * UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self), as: SIMD8<Float>.self)
            i += 8
        }
        while i < n { out[i] += w * x[i]; i += 1 }
    }

    public func commit(upTo count: Int) { self.count = min(max(0, count), geometry.capacity) }
    public func truncate(to count: Int) { self.count = min(self.count, max(0, count)) }
}
