import SpoolKernels

/// Post-GPTQ grid refit with the full Hessian.
///
/// GPTQ fixes each group's grid (d, m) before the group's columns are quantized, from the
/// error-compensated weights and only the Hessian's diagonal. Once every code q of a row is known,
/// the (d, m) of all the row's groups that minimize the row's output error
///     (w − ŵ)ᵀ H (w − ŵ),   ŵ_j = d_g(j) q_j + m_g(j),   w the ORIGINAL row,
/// are a linear least-squares problem with 2G unknowns (G groups per row), because ŵ is linear in
/// them: ŵ = A θ with A[j, 2g] = q_j and A[j, 2g+1] = 1 for j in group g. The normal equations
/// (Aᵀ H A) θ = Aᵀ H w are 2G × 2G per row (18 for 576 columns at g64, 48 for 1536), solved by
/// Cholesky. The off-diagonal blocks of H let one group's grid absorb error its neighbours left,
/// which the per-group diagonal fit cannot see.
///
/// A row keeps its old grids when the system is singular, a scale comes out non-positive or not
/// finite, or the float16-rounded result does not lower the row's error: the refit never raises
/// the Hessian-weighted error of a row.
enum GridRefit {
    /// Rows processed at once; bounds the scratch to `chunkRows × cols` floats plus the systems.
    static let chunkRows = 1024

    /// Refits the grids of `q` in place against `original` (rows, cols) under `hessian` (cols, cols,
    /// symmetric positive semi-definite; pass the damped one GPTQ used). Returns per row the
    /// Hessian-weighted error (w − ŵ)ᵀ H (w − ŵ) before and after.
    @discardableResult
    static func refit(_ q: inout QuantizedMatrix, original w: UnsafePointer<Float>, hessian h: [Float], pool: ThreadPool)
        -> (before: [Double], after: [Double]) {
        let rows = q.rows, cols = q.cols, g = q.spec.group, groups = cols / g, n = 2 * groups
        var before = [Double](repeating: 0, count: rows), after = [Double](repeating: 0, count: rows)
        guard h.count == cols * cols, rows > 0 else { return (before, after) }

        // Column slices of H, one per group: hs[k][j, i] = H[j, k·g + i]  (cols, g). Matmul with
        // a slice of the codes gives, for every row, H[:, group k] q[group k].
        var slices = [[Float]](repeating: [], count: groups)
        // Row-independent block of the system: Σ_{j∈g} Σ_{i∈k} H[j, i]  (groups, groups).
        var ones = [Double](repeating: 0, count: groups * groups)
        for k in 0..<groups {
            var s = [Float](repeating: 0, count: cols * g)
            for j in 0..<cols { for i in 0..<g { s[j * g + i] = h[j * cols + k * g + i] } }
            for gj in 0..<groups {
                var t = 0.0
                for j in (gj * g)..<((gj + 1) * g) { for i in 0..<g { t += Double(s[j * g + i]) } }
                ones[gj * groups + k] = t
            }
            slices[k] = s
        }

        var r0 = 0
        while r0 < rows {
            let nr = min(chunkRows, rows - r0)
            // Codes as floats (nr, cols) and the group-k slices of them (nr, g).
            var qf = [Float](repeating: 0, count: nr * cols)
            for r in 0..<nr { for c in 0..<cols { qf[r * cols + c] = Float(q.q[(r0 + r) * cols + c]) } }
            // The system is solved for the change Δθ from the current grids, against the current
            // residual e = w − ŵ: the error is then eᵀHe − 2 bᵀΔθ + ΔθᵀMΔθ with b = AᵀHe, terms
            // of the error's own size (solving for θ against w instead cancels wᵀHw, which at 4
            // bits is 10³× the error, and float32 sums lose the comparison).
            var e = [Float](repeating: 0, count: nr * cols)
            for r in 0..<nr {
                for c in 0..<cols {
                    let grid = q.grids[(r0 + r) * groups + c / g]
                    e[r * cols + c] = w[(r0 + r) * cols + c] - grid.value(Int(q.q[(r0 + r) * cols + c]))
                }
            }
            // H e per row (nr, cols): matmul's y[t, j] = Σ_c H[j, c] e[t, c].
            var hw = [Float](repeating: 0, count: nr * cols)
            h.withUnsafeBufferPointer { hb in
                e.withUnsafeBufferPointer { eb in
                    hw.withUnsafeMutableBufferPointer { Kernels.matmul(hb.baseAddress!, rows: cols, cols: cols, eb.baseAddress!, tokens: nr, into: $0.baseAddress!, pool: pool) }
                }
            }
            // Per row: the system M (n, n), the right-hand side b (n), and eᵀ H e.
            var m = [Double](repeating: 0, count: nr * n * n)
            var b = [Double](repeating: 0, count: nr * n)
            var whw = [Double](repeating: 0, count: nr)
            var qk = [Float](repeating: 0, count: nr * g)
            var p = [Float](repeating: 0, count: nr * cols)
            for k in 0..<groups {
                for r in 0..<nr { for i in 0..<g { qk[r * g + i] = qf[r * cols + k * g + i] } }
                // p[r, j] = Σ_{i∈k} H[j, i] q[r, i]
                slices[k].withUnsafeBufferPointer { sb in
                    qk.withUnsafeBufferPointer { qb in
                        p.withUnsafeMutableBufferPointer { Kernels.matmul(sb.baseAddress!, rows: cols, cols: g, qb.baseAddress!, tokens: nr, into: $0.baseAddress!, pool: pool) }
                    }
                }
                for r in 0..<nr {
                    let mr = r * n * n, pr = r * cols, qr = r * cols
                    for gj in 0..<groups {
                        var qq = 0.0, oq = 0.0
                        for j in (gj * g)..<((gj + 1) * g) {
                            qq += Double(qf[qr + j] * p[pr + j])
                            oq += Double(p[pr + j])
                        }
                        // (q of gj)ᵀ H (q of k), and (ones of gj)ᵀ H (q of k) with its mirror.
                        m[mr + (2 * gj) * n + 2 * k] = qq
                        m[mr + (2 * gj + 1) * n + 2 * k] = oq
                        m[mr + (2 * k) * n + 2 * gj + 1] = oq
                    }
                }
            }
            for r in 0..<nr {
                let mr = r * n * n, qr = r * cols
                for gj in 0..<groups {
                    for k in 0..<groups { m[mr + (2 * gj + 1) * n + 2 * k + 1] = ones[gj * groups + k] }
                    var bq = 0.0, bo = 0.0
                    for j in (gj * g)..<((gj + 1) * g) {
                        bq += Double(qf[qr + j] * hw[qr + j])
                        bo += Double(hw[qr + j])
                    }
                    b[r * n + 2 * gj] = bq
                    b[r * n + 2 * gj + 1] = bo
                }
                var t = 0.0
                for j in 0..<cols { t += Double(e[qr + j]) * Double(hw[qr + j]) }
                whw[r] = t
            }
            // Solve row by row (independent systems, split across threads).
            let rowConstant = whw
            before.withUnsafeMutableBufferPointer { bfb in
                after.withUnsafeMutableBufferPointer { afb in
                    q.grids.withUnsafeMutableBufferPointer { gb in
                        m.withUnsafeBufferPointer { mb in
                            b.withUnsafeBufferPointer { bb in
                                let bfp = bfb.baseAddress!, afp = afb.baseAddress!, grids = gb.baseAddress!
                                let mp = mb.baseAddress!, bp = bb.baseAddress!
                                pool.parallelRanges(nr, granule: 16) { range in
                                    for r in range {
                                        let row = r0 + r
                                        let old = (0..<n).map { i -> Double in
                                            let grid = grids[row * groups + i / 2]
                                            return Double(i % 2 == 0 ? grid.d : grid.m)
                                        }
                                        let sys = mp + r * n * n, rhs = bp + r * n
                                        let eOld = rowConstant[r]
                                        bfp[row] = eOld
                                        afp[row] = eOld
                                        guard let step = solve(sys, rhs, n: n) else { continue }
                                        // What the file stores: float16 scales and offsets.
                                        var rounded = [Double](repeating: 0, count: n)
                                        var ok = true
                                        for i in 0..<n {
                                            let v = Float(Float16(Float(old[i] + step[i])))
                                            if !v.isFinite || (i % 2 == 0 && !(v > 0)) { ok = false; break }
                                            rounded[i] = Double(v) - old[i]
                                        }
                                        guard ok else { continue }
                                        let eNew = eOld + objective(rounded, sys, rhs, n)
                                        guard eNew < eOld else { continue }
                                        for gi in 0..<groups {
                                            grids[row * groups + gi] = GroupGrid(d: Float(old[2 * gi] + rounded[2 * gi]), m: Float(old[2 * gi + 1] + rounded[2 * gi + 1]))
                                        }
                                        afp[row] = eNew
                                    }
                                }
                            }
                        }
                    }
                }
            }
            r0 += nr
        }
        return (before, after)
    }

    /// Δθᵀ M Δθ − 2 bᵀ Δθ: the change of the row's error for a change Δθ of its grids.
    static func objective(_ theta: [Double], _ m: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ n: Int) -> Double {
        var s = 0.0
        for i in 0..<n {
            var mi = 0.0
            for j in 0..<n { mi += m[i * n + j] * theta[j] }
            s += theta[i] * (mi - 2 * b[i])
        }
        return s
    }

    /// Relative ridge on the step: keeps the system positive definite when a group's codes are
    /// all equal (its d and m columns coincide) without moving a well-posed solution.
    static let ridge = 1e-9

    /// Solves (M + εD) Δθ = b with D = diag(M), by Cholesky; nil if it breaks down.
    static func solve(_ m: UnsafePointer<Double>, _ b: UnsafePointer<Double>, n: Int) -> [Double]? {
        var a = [Double](repeating: 0, count: n * n)
        var y = [Double](repeating: 0, count: n)
        for i in 0..<n {
            for j in 0..<n { a[i * n + j] = m[i * n + j] }
            let e = ridge * m[i * n + i]
            a[i * n + i] += e
            y[i] = b[i]
        }
        // In place: lower factor L, A = L Lᵀ.
        for j in 0..<n {
            var d = a[j * n + j]
            for k in 0..<j { d -= a[j * n + k] * a[j * n + k] }
            guard d > 0, d.isFinite else { return nil }
            let l = d.squareRoot()
            a[j * n + j] = l
            for i in (j + 1)..<max(j + 1, n) {
                var s = a[i * n + j]
                for k in 0..<j { s -= a[i * n + k] * a[j * n + k] }
                a[i * n + j] = s / l
            }
        }
        // L z = y, then Lᵀ θ = z.
        for i in 0..<n {
            var s = y[i]
            for k in 0..<i { s -= a[i * n + k] * y[k] }
            y[i] = s / a[i * n + i]
        }
        for i in stride(from: n - 1, through: 0, by: -1) {
            var s = y[i]
            for k in (i + 1)..<max(i + 1, n) { s -= a[k * n + i] * y[k] }
            y[i] = s / a[i * n + i]
        }
        return y.allSatisfy(\.isFinite) ? y : nil
    }
}
