#if arch(x86_64)
import _Builtin_intrinsics.intel

/// AVX2+FMA versions of the attention inner loops (`AttentionGeneric` in SpoolKernels): scores of a
/// query against rows of keys, and the score-weighted sum of rows of values. Written with
/// intrinsics so every multiply-add is one `vfmadd` (a stdlib `addingProduct` in a module built
/// without +fma turns into calls to libm's fmaf).
public enum AttentionAVX2 {
    @inline(__always)
    static func hsum(_ v: __m256) -> Float {
        // __m256 is SIMD8<Float>; halves without the extract intrinsic (a macro Swift cannot import).
        let h = v.lowHalf + v.highHalf
        let q = h.lowHalf + h.highHalf
        return q[0] + q[1]
    }

    /// dot of q with one row, 8 lanes at a time, two accumulators.
    @inline(__always)
    static func dot(_ q: UnsafePointer<Float>, _ r: UnsafePointer<Float>, dim: Int) -> Float {
        var a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps()
        var i = 0
        while i + 16 <= dim {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(r + i), a0)
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), _mm256_loadu_ps(r + i + 8), a1)
            i += 16
        }
        if i + 8 <= dim {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(r + i), a0)
            i += 8
        }
        var s = hsum(_mm256_add_ps(a0, a1))
        while i < dim { s += q[i] * r[i]; i += 1 }
        return s
    }

    /// scores[j] = scale * dot(q, rows + j * stride) for j < count.
    @inline(never)
    public static func dotRows(
        _ q: UnsafePointer<Float>, _ rows: UnsafePointer<Float>, stride: Int, count: Int, dim: Int, scale: Float,
        into scores: UnsafeMutablePointer<Float>
    ) {
        for j in 0..<count { scores[j] = dot(q, rows + j * stride, dim: dim) * scale }
    }

    /// out[i] = sum_j weights[j] * rows[j * stride + i] for i < dim; 32 outputs per pass over the
    /// rows, kept in 4 registers.
    @inline(never)
    public static func weightedSum(
        _ weights: UnsafePointer<Float>, _ rows: UnsafePointer<Float>, stride: Int, count: Int, dim: Int,
        into out: UnsafeMutablePointer<Float>
    ) {
        var c = 0
        while c + 32 <= dim {
            var a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps()
            for j in 0..<count {
                let w = _mm256_set1_ps(weights[j])
                let r = rows + j * stride + c
                a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(r), a0)
                a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(r + 8), a1)
                a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(r + 16), a2)
                a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(r + 24), a3)
            }
            _mm256_storeu_ps(out + c, a0); _mm256_storeu_ps(out + c + 8, a1)
            _mm256_storeu_ps(out + c + 16, a2); _mm256_storeu_ps(out + c + 24, a3)
            c += 32
        }
        while c + 8 <= dim {
            var a = _mm256_setzero_ps()
            for j in 0..<count { a = _mm256_fmadd_ps(_mm256_set1_ps(weights[j]), _mm256_loadu_ps(rows + j * stride + c), a) }
            _mm256_storeu_ps(out + c, a)
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
#endif
