/// Portable versions of the attention inner loops (see `Kernels.dotRows` / `Kernels.weightedSum`).
/// Multiply and add are kept separate on purpose: this module is built without +fma on x86, where
/// a fused `addingProduct` becomes a call to libm's fmaf per lane.
enum AttentionGeneric {
    typealias V = SIMD8<Float>

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }

    static func dotRows(
        _ q: UnsafePointer<Float>, _ rows: UnsafePointer<Float>, stride: Int, count: Int, dim: Int, scale: Float,
        into scores: UnsafeMutablePointer<Float>
    ) {
        for j in 0..<count {
            let r = rows + j * stride
            var acc = V.zero
            var i = 0
            while i + 8 <= dim {
                acc += load(q + i) * load(r + i)
                i += 8
            }
            var s = acc.sum()
            while i < dim { s += q[i] * r[i]; i += 1 }
            scores[j] = s * scale
        }
    }

    static func weightedSum(
        _ weights: UnsafePointer<Float>, _ rows: UnsafePointer<Float>, stride: Int, count: Int, dim: Int,
        into out: UnsafeMutablePointer<Float>
    ) {
        var c = 0
        while c + 8 <= dim {
            var acc = V.zero
            for j in 0..<count { acc += V(repeating: weights[j]) * load(rows + j * stride + c) }
            UnsafeMutableRawPointer(out + c).storeBytes(of: acc, as: V.self)
            c += 8
        }
        while c < dim {
            var s: Float = 0
            for j in 0..<count { s += weights[j] * rows[j * stride + c] }
            out[c] = s
            c += 1
        }
    }
}
