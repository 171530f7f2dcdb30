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

#if arch(x86_64)
/// Panel preparation for `Kernels.attendKVHead` (generic version: `AttentionHeadArgs.fillPanels`):
/// here f16 values convert with F16C (`vcvtph2ps`), which the generic module, built without it,
/// would do through a libgcc call per value.
extension AttentionAVX2 {
    /// kt (dim, width): keys 0..<n transposed, zero past n; v (n, dim): values as f32 rows.
    /// Row j of the cache starts at element j * rowStride + offset; `half` means f16 bit patterns.
    @inline(never)
    public static func fillPanels(keys: UnsafeRawPointer, values: UnsafeRawPointer, half: Bool, rowStride: Int, offset: Int,
                                  dim: Int, n: Int, width: Int, kt: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: dim) { row in
            let r = row.baseAddress!
            for j in 0..<n {
                let e = j * rowStride + offset
                if half {
                    convert(keys + 2 * e, dim, into: r)
                    convert(values + 2 * e, dim, into: v + j * dim)
                } else {
                    r.update(from: (keys + 4 * e).assumingMemoryBound(to: Float.self), count: dim)
                    (v + j * dim).update(from: (values + 4 * e).assumingMemoryBound(to: Float.self), count: dim)
                }
                for d in 0..<dim { kt[d * width + j] = r[d] }
            }
        }
        if n < width { for d in 0..<dim { (kt + d * width + n).initialize(repeating: 0, count: width - n) } }
    }

    /// out (n, dim): cache rows 0..<n as f32 (row j at element j * rowStride + offset of `rows`,
    /// f16 bit patterns when `half`). Decode converts K and V tiles with it: one query per head
    /// does not repay fillPanels' transposition.
    @inline(never)
    public static func convertRows(_ rows: UnsafeRawPointer, half: Bool, rowStride: Int, offset: Int, dim: Int, n: Int,
                                   into out: UnsafeMutablePointer<Float>) {
        for j in 0..<n {
            let e = j * rowStride + offset
            if half {
                convert(rows + 2 * e, dim, into: out + j * dim)
            } else {
                (out + j * dim).update(from: (rows + 4 * e).assumingMemoryBound(to: Float.self), count: dim)
            }
        }
    }

    /// dim f16 values to floats, 8 at a time.
    @inline(__always)
    static func convert(_ src: UnsafeRawPointer, _ dim: Int, into out: UnsafeMutablePointer<Float>) {
        var i = 0
        while i + 8 <= dim {
            _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((src + 2 * i).assumingMemoryBound(to: __m128i.self))))
            i += 8
        }
        while i < dim { out[i] = Float(Float16(bitPattern: src.load(fromByteOffset: 2 * i, as: UInt16.self))); i += 1 }
    }

    /// q rounded to f16 and back (the query an f16 cache sees), or copied.
    @inline(never)
    public static func prepareQuery(_ q: UnsafePointer<Float>, dim: Int, half: Bool, into out: UnsafeMutablePointer<Float>) {
        if half {
            for d in 0..<dim { out[d] = Float(Float16(q[d])) }
        } else {
            out.update(from: q, count: dim)
        }
    }
}
#endif
