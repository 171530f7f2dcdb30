/// The few dense linear-algebra routines GPTQ needs, on row-major square float matrices.
/// Inner loops are contiguous dot products in SIMD8 lanes (portable Swift SIMD).
enum LinearAlgebra {
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
        var i = 0
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        while i + 16 <= n {
            acc0 += ra.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self) * rb.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            acc1 += ra.loadUnaligned(fromByteOffset: 4 * i + 32, as: SIMD8<Float>.self) * rb.loadUnaligned(fromByteOffset: 4 * i + 32, as: SIMD8<Float>.self)
            i += 16
        }
        var s = (acc0 + acc1).sum()
        while i < n { s += a[i] * b[i]; i += 1 }
        return s
    }

    /// a[i] -= s * b[i]
    @inline(__always)
    static func axpy(_ a: UnsafeMutablePointer<Float>, _ s: Float, _ b: UnsafePointer<Float>, _ n: Int) {
        var i = 0
        let ra = UnsafeMutableRawPointer(a), rb = UnsafeRawPointer(b)
        let sv = SIMD8<Float>(repeating: s)
        while i + 8 <= n {
            let v = ra.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self) - sv * rb.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            ra.storeBytes(of: v, toByteOffset: 4 * i, as: SIMD8<Float>.self)
            i += 8
        }
        while i < n { a[i] -= s * b[i]; i += 1 }
    }

    /// In place: the lower Cholesky factor L of a (n, n) symmetric positive definite matrix
    /// (A = L Lᵀ). The upper triangle is zeroed. Returns false when a pivot is not positive.
    static func choleskyLower(_ a: UnsafeMutablePointer<Float>, n: Int) -> Bool {
        for j in 0..<n {
            let rj = a + j * n
            let djj = rj[j] - dot(rj, rj, j)
            guard djj > 0, djj.isFinite else { return false }
            let ljj = djj.squareRoot()
            rj[j] = ljj
            let inv = 1 / ljj
            for i in (j + 1)..<max(j + 1, n) {
                let ri = a + i * n
                ri[j] = (ri[j] - dot(ri, rj, j)) * inv
            }
            for k in (j + 1)..<max(j + 1, n) { rj[k] = 0 }
        }
        return true
    }

    /// The inverse of a lower-triangular (n, n) matrix, also lower triangular.
    static func invertLower(_ l: UnsafePointer<Float>, n: Int) -> [Float] {
        // Column j of X = L⁻¹ solves L x = e_j; stored transposed (row j of xt) so every inner
        // product runs over contiguous memory.
        var xt = [Float](repeating: 0, count: n * n)
        xt.withUnsafeMutableBufferPointer { xb in
            let x = xb.baseAddress!
            for j in 0..<n {
                let xj = x + j * n
                xj[j] = 1 / l[j * n + j]
                for i in (j + 1)..<max(j + 1, n) {
                    let li = l + i * n
                    xj[i] = -dot(li + j, xj + j, i - j) / li[i]
                }
            }
        }
        // Transpose back.
        var out = [Float](repeating: 0, count: n * n)
        for j in 0..<n { for i in j..<n { out[i * n + j] = xt[j * n + i] } }
        return out
    }

    /// The upper-triangular U with Uᵀ U = H⁻¹ (the factor GPTQ walks row by row).
    /// With J the order-reversing permutation and J H J = L Lᵀ, H⁻¹ = (J L⁻¹ J)ᵀ (J L⁻¹ J), and
    /// J L⁻¹ J is upper triangular: one Cholesky and one triangular inverse.
    static func upperCholeskyOfInverse(_ h: [Float], n: Int) -> [Float]? {
        var r = [Float](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0..<n { r[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)] } }
        let ok = r.withUnsafeMutableBufferPointer { choleskyLower($0.baseAddress!, n: n) }
        guard ok else { return nil }
        let li = r.withUnsafeBufferPointer { invertLower($0.baseAddress!, n: n) }
        var u = [Float](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0..<n { u[i * n + j] = li[(n - 1 - i) * n + (n - 1 - j)] } }
        return u
    }
}
