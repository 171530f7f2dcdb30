#if arch(x86_64)
import _Builtin_intrinsics.intel

/// AVX-512 versions of the two loops of `Kernels.attendKVHead` (generic versions:
/// `AttentionGeneric.panelScores` and `AttentionGeneric.weightedSum` in SpoolKernels).
public enum AttentionAVX512 {
    /// scores[j] = scale * Σ_d q[d] kt[d * width + j] for j < count; kt is a (dim, width) panel,
    /// width a multiple of 16 and zero past count. 64 positions per pass: 4 independent chains
    /// of broadcast-FMAs hide the FMA latency.
    @inline(never)
    public static func scores(_ q: UnsafePointer<Float>, _ kt: UnsafePointer<Float>, width: Int, count: Int, dim: Int,
                              scale: Float, into scores: UnsafeMutablePointer<Float>) {
        let s = _mm512_set1_ps(scale)
        var j = 0
        while j + 64 <= count {
            var a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps()
            for d in 0..<dim {
                let qd = _mm512_set1_ps(q[d]), row = kt + d * width + j
                a0 = _mm512_fmadd_ps(qd, _mm512_load_ps(row), a0)
                a1 = _mm512_fmadd_ps(qd, _mm512_load_ps(row + 16), a1)
                a2 = _mm512_fmadd_ps(qd, _mm512_load_ps(row + 32), a2)
                a3 = _mm512_fmadd_ps(qd, _mm512_load_ps(row + 48), a3)
            }
            _mm512_storeu_ps(scores + j, _mm512_mul_ps(a0, s))
            _mm512_storeu_ps(scores + j + 16, _mm512_mul_ps(a1, s))
            _mm512_storeu_ps(scores + j + 32, _mm512_mul_ps(a2, s))
            _mm512_storeu_ps(scores + j + 48, _mm512_mul_ps(a3, s))
            j += 64
        }
        while j < count {
            var a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps()
            var d = 0
            while d + 2 <= dim {
                a0 = _mm512_fmadd_ps(_mm512_set1_ps(q[d]), _mm512_load_ps(kt + d * width + j), a0)
                a1 = _mm512_fmadd_ps(_mm512_set1_ps(q[d + 1]), _mm512_load_ps(kt + (d + 1) * width + j), a1)
                d += 2
            }
            if d < dim { a0 = _mm512_fmadd_ps(_mm512_set1_ps(q[d]), _mm512_load_ps(kt + d * width + j), a0) }
            let n = min(16, count - j)
            _mm512_mask_storeu_ps(scores + j, UInt16(truncatingIfNeeded: (1 << n) - 1), _mm512_mul_ps(_mm512_add_ps(a0, a1), s))
            j += 16
        }
    }

    /// out[0..<dim] = Σ_j p[j] v[j * dim ..< j * dim + dim] for j < count; dim a multiple of 16.
    @inline(never)
    public static func mix(_ p: UnsafePointer<Float>, _ v: UnsafePointer<Float>, count: Int, dim: Int,
                           into out: UnsafeMutablePointer<Float>) {
        var c = 0
        while c < dim {
            // 64 columns (4 chains) at a time, then 16.
            if c + 64 <= dim {
                var a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps()
                for j in 0..<count {
                    let pj = _mm512_set1_ps(p[j]), row = v + j * dim + c
                    a0 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(row), a0)
                    a1 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(row + 16), a1)
                    a2 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(row + 32), a2)
                    a3 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(row + 48), a3)
                }
                _mm512_storeu_ps(out + c, a0)
                _mm512_storeu_ps(out + c + 16, a1)
                _mm512_storeu_ps(out + c + 32, a2)
                _mm512_storeu_ps(out + c + 48, a3)
                c += 64
            } else {
                var a0 = _mm512_setzero_ps()
                for j in 0..<count { a0 = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), _mm512_loadu_ps(v + j * dim + c), a0) }
                _mm512_storeu_ps(out + c, a0)
                c += 16
            }
        }
    }
}
#endif
