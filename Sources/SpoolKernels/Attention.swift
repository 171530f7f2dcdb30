#if arch(x86_64)
import SpoolKernelsAVX2
#endif

/// The two inner loops of attention over a float KV cache, for one query head:
/// `dotRows` gives the scores of a query against `count` key rows, `weightedSum` mixes `count`
/// value rows by the (softmaxed) scores. Rows are `dim` floats, `stride` floats apart (a head's
/// slice of a (positions, kvHeads * headDim) cache has stride kvHeads * headDim).
extension Kernels {
    /// scores[j] = scale * sum_i q[i] * rows[j * stride + i], for j < count.
    public static func dotRows(
        _ q: UnsafePointer<Float>, _ rows: UnsafePointer<Float>, stride: Int, count: Int, dim: Int, scale: Float,
        into scores: UnsafeMutablePointer<Float>, level: KernelLevel = .selected
    ) {
        #if arch(x86_64)
        if level.resolved.usesAVX2 {
            AttentionAVX2.dotRows(q, rows, stride: stride, count: count, dim: dim, scale: scale, into: scores)
            return
        }
        #endif
        AttentionGeneric.dotRows(q, rows, stride: stride, count: count, dim: dim, scale: scale, into: scores)
    }

    /// out[i] = sum_j weights[j] * rows[j * stride + i], for i < dim (out is overwritten).
    public static func weightedSum(
        _ weights: UnsafePointer<Float>, _ rows: UnsafePointer<Float>, stride: Int, count: Int, dim: Int,
        into out: UnsafeMutablePointer<Float>, level: KernelLevel = .selected
    ) {
        #if arch(x86_64)
        if level.resolved.usesAVX2 {
            AttentionAVX2.weightedSum(weights, rows, stride: stride, count: count, dim: dim, into: out)
            return
        }
        #endif
        AttentionGeneric.weightedSum(weights, rows, stride: stride, count: count, dim: dim, into: out)
    }
}
