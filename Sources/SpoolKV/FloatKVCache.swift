import Foundation
import SpoolKernels

/// A KV cache that stores keys and values as 32-bit floats: the reference every quantized cache
/// is measured against.
public final class FloatKVCache: KVCache {
    public let geometry: KVGeometry
    public private(set) var count = 0
    // Per layer: (capacity, kvDim) keys and values.
    private var keys: [UnsafeMutablePointer<Float>]
    private var values: [UnsafeMutablePointer<Float>]

    public init(geometry: KVGeometry) {
        self.geometry = geometry
        let n = geometry.capacity * geometry.kvDim
        keys = (0..<geometry.layers).map { _ in .allocate(capacity: max(n, 1)) }
        values = (0..<geometry.layers).map { _ in .allocate(capacity: max(n, 1)) }
    }

    deinit {
        keys.forEach { $0.deallocate() }
        values.forEach { $0.deallocate() }
    }

    public var bytesPerToken: Double { Double(2 * geometry.layers * geometry.kvDim * MemoryLayout<Float>.size) }
    public var allocatedBytes: Int { Int(bytesPerToken) * geometry.capacity }

    public func store(layer: Int, start: Int, tokens: Int, keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>) throws {
        guard start >= 0, start + tokens <= geometry.capacity else {
            throw KVCacheError.contextFull(needed: start + tokens, capacity: geometry.capacity)
        }
        let d = geometry.kvDim
        (keys[layer] + start * d).update(from: k, count: tokens * d)
        (values[layer] + start * d).update(from: v, count: tokens * d)
    }

    public func attend(layer: Int, start: Int, tokens: Int, queries: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let g = geometry
        let k = UnsafePointer(keys[layer]), v = UnsafePointer(values[layer])
        let group = g.queryHeads / g.kvHeads
        let scale = 1 / Float(g.headDim).squareRoot()
        let tasks = tokens * g.queryHeads
        pool.parallelRanges(tasks) { range in
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: start + tokens)
            defer { scores.deallocate() }
            for task in range {
                let t = task / g.queryHeads, h = task % g.queryHeads
                let kvh = h / group
                let q = queries + (t * g.queryHeads + h) * g.headDim
                let n = start + t + 1
                for j in 0..<n {
                    scores[j] = Self.dot(q, k + j * g.kvDim + kvh * g.headDim, g.headDim) * scale
                }
                Kernels.softmax(scores, n: n)
                let out = output + (t * g.queryHeads + h) * g.headDim
                out.initialize(repeating: 0, count: g.headDim)
                for j in 0..<n {
                    let w = scores[j]
                    let vr = v + j * g.kvDim + kvh * g.headDim
                    for i in 0..<g.headDim { out[i] += w * vr[i] }
                }
            }
        }
    }

    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD8<Float>.zero
        var i = 0
        while i + 8 <= n {
            acc = acc.addingProduct(UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self),
                                    UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self))
            i += 8
        }
        var s = acc.sum()
        while i < n { s += a[i] * b[i]; i += 1 }
        return s
    }

    public func commit(upTo count: Int) { self.count = min(max(0, count), geometry.capacity) }
    public func truncate(to count: Int) { self.count = min(self.count, max(0, count)) }
}
