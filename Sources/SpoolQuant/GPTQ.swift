import SpoolFormat
import SpoolKernels

/// Accumulates H = 2/N Σ xᵀx over the calibration inputs of one linear layer (cols = its input size).
public final class HessianAccumulator {
    public let cols: Int
    public private(set) var samples = 0
    var h: [Float]                // (cols, cols)
    private var xt: [Float] = []  // (cols, tokens) transpose scratch

    public init(cols: Int) {
        self.cols = cols
        h = [Float](repeating: 0, count: cols * cols)
    }

    /// Adds `tokens` input rows x (tokens, cols). Uses the matmul kernel: with xt = xᵀ,
    /// matmul(w: xt, x: xt) gives y[t, r] = Σ_n x[n, r] x[n, t] = (xᵀx)[t, r].
    public func add(_ x: UnsafePointer<Float>, tokens: Int, pool: ThreadPool) {
        guard tokens > 0 else { return }
        if xt.count < cols * tokens { xt = [Float](repeating: 0, count: cols * tokens) }
        var prod = [Float](repeating: 0, count: cols * cols)
        xt.withUnsafeMutableBufferPointer { xtb in
            let p = xtb.baseAddress!
            for n in 0..<tokens { for c in 0..<cols { p[c * tokens + n] = x[n * cols + c] } }
            prod.withUnsafeMutableBufferPointer { pb in
                Kernels.matmul(p, rows: cols, cols: tokens, p, tokens: cols, into: pb.baseAddress!, pool: pool)
            }
        }
        // Running mean of 2 xᵀx, so H's scale does not grow with the sample count.
        let total = samples + tokens
        let keep = Float(samples) / Float(total), add = 2 / Float(total)
        for i in 0..<(cols * cols) { h[i] = h[i] * keep + prod[i] * add }
        samples = total
    }

    public var matrix: [Float] { h }
}

public struct GPTQOptions: Sendable {
    /// Damping added to the diagonal, as a fraction of its mean (GPTQ's percdamp).
    public var damping: Float = 0.01
    /// Columns per lazy batch update.
    public var blockSize = 128
    /// Process columns in order of decreasing Hessian diagonal.
    public var actOrder = false
    /// Fit each group's grid weighting every column's error by its Hessian diagonal (mean x²).
    public var weightedGrid = true
    /// Rounds of the full-Hessian grid refit after GPTQ (`GridRefit`): 0 = none; 1 = refit the
    /// grids once the codes are known; each further round re-runs GPTQ with the refitted grids
    /// held fixed and refits again, keeping per row whichever round's result has the lower error.
    public var refitRounds = 0

    public init(damping: Float = 0.01, blockSize: Int = 128, actOrder: Bool = false, weightedGrid: Bool = true, refitRounds: Int = 0) {
        self.damping = damping
        self.blockSize = blockSize
        self.actOrder = actOrder
        self.weightedGrid = weightedGrid
        self.refitRounds = refitRounds
    }
}

/// GPTQ (Frantar et al. 2022): quantize columns one at a time and spread each column's rounding
/// error over the columns not yet quantized, weighted by the inverse Hessian, so the layer's
/// output on the calibration inputs changes as little as possible.
public enum GPTQ {
    /// What GPTQ derives from a Hessian alone: the column order and the upper Cholesky factor of
    /// the damped inverse Hessian in that order. Linear layers that share an input (q/k/v,
    /// gate/up) share one.
    public struct Factor: Sendable {
        public let cols: Int
        /// Processing position -> original column.
        public let perm: [Int]
        /// (cols, cols) upper triangular, Uᵀ U = (H + λI)⁻¹ in `perm` order.
        public let u: [Float]
        /// Per original column: H_ii + λ, the weight of that column's error in the grid fit (dead
        /// inputs get only λ, so they barely pull the grid).
        public let importance: [Float]
        /// (cols, cols) H + λI in the original column order (λ as in `importance`): the objective
        /// of the grid refit. Empty when no refit was asked for.
        public let damped: [Float]
    }

    public static func factor(hessian: [Float], cols: Int, options: GPTQOptions = GPTQOptions(), name: String = "") throws(QuantError) -> Factor {
        var h = hessian
        var rawMean: Float = 0
        for i in 0..<cols { rawMean += hessian[i * cols + i] }
        rawMean /= Float(cols)
        let importance = (0..<cols).map { hessian[$0 * cols + $0] + options.damping * rawMean }
        var damped: [Float] = []
        if options.refitRounds > 0 {
            damped = hessian
            for i in 0..<cols { damped[i * cols + i] = importance[i] }
        }
        // Dead inputs (never active in calibration): their weights cannot matter; keep H invertible.
        for i in 0..<cols where h[i * cols + i] == 0 { h[i * cols + i] = 1 }
        // Column order: natural, or by decreasing H diagonal (act-order).
        var perm = Array(0..<cols)
        if options.actOrder {
            perm.sort { h[$0 * cols + $0] > h[$1 * cols + $1] }
            var hp = h
            for i in 0..<cols { for j in 0..<cols { hp[i * cols + j] = h[perm[i] * cols + perm[j]] } }
            h = hp
        }
        var meanDiag: Float = 0
        for i in 0..<cols { meanDiag += h[i * cols + i] }
        meanDiag /= Float(cols)
        var damping = options.damping
        for _ in 0..<6 {
            var hd = h
            for i in 0..<cols { hd[i * cols + i] += damping * meanDiag }
            if let u = LinearAlgebra.upperCholeskyOfInverse(hd, n: cols) { return Factor(cols: cols, perm: perm, u: u, importance: importance, damped: damped) }
            // Not positive definite in float32: damp harder, as GPTQ implementations do.
            damping *= 10
        }
        throw .hessianNotPositiveDefinite(tensor: name)
    }

    public static func quantize(_ weights: UnsafePointer<Float>, rows: Int, cols: Int, hessian: [Float], spec: QuantSpec,
                                options: GPTQOptions = GPTQOptions(), pool: ThreadPool, name: String = "") throws(QuantError) -> QuantizedMatrix {
        try quantize(weights, rows: rows, cols: cols, factor: factor(hessian: hessian, cols: cols, options: options, name: name),
                     spec: spec, options: options, pool: pool, name: name)
    }

    public static func quantize(_ weights: UnsafePointer<Float>, rows: Int, cols: Int, factor: Factor, spec: QuantSpec,
                                options: GPTQOptions = GPTQOptions(), pool: ThreadPool, name: String = "") throws(QuantError) -> QuantizedMatrix {
        var best = try quantize(weights, rows: rows, cols: cols, factor: factor, spec: spec, options: options, grids: nil, pool: pool, name: name)
        // The refit solves for float16 (d, m) freely; compact grids keep GPTQ's snapped codes.
        guard options.refitRounds > 0, !spec.compactGrid, factor.damped.count == cols * cols else { return best }
        var bestError = GridRefit.refit(&best, original: weights, hessian: factor.damped, pool: pool).after
        for _ in 1..<max(1, options.refitRounds) {
            // GPTQ again with the refitted grids fixed: the codes now follow the better grids.
            var next = try quantize(weights, rows: rows, cols: cols, factor: factor, spec: spec, options: options, grids: best.grids, pool: pool, name: name)
            let e = GridRefit.refit(&next, original: weights, hessian: factor.damped, pool: pool).after
            // Rows are independent under GPTQ (one shared H): keep the better result per row.
            let gpr = cols / spec.group
            for r in 0..<rows where e[r] < bestError[r] {
                for c in 0..<cols { best.q[r * cols + c] = next.q[r * cols + c] }
                for k in 0..<gpr { best.grids[r * gpr + k] = next.grids[r * gpr + k] }
                bestError[r] = e[r]
            }
        }
        return best
    }

    /// One GPTQ pass. `grids` (rows × groups, optional): use these grids instead of fitting each
    /// group's when its first column comes up.
    static func quantize(_ weights: UnsafePointer<Float>, rows: Int, cols: Int, factor: Factor, spec: QuantSpec,
                         options: GPTQOptions, grids fixed: [GroupGrid]?, pool: ThreadPool, name: String) throws(QuantError) -> QuantizedMatrix {
        guard cols % spec.group == 0 else { throw .columnsNotWholeGroups(tensor: name, cols: cols, group: spec.group) }
        let g = spec.group, maxQ = spec.maxQ
        let perm = factor.perm, u = factor.u
        // W in processing order.
        var w = [Float](repeating: 0, count: rows * cols)
        for r in 0..<rows { for i in 0..<cols { w[r * cols + i] = weights[r * cols + perm[i]] } }

        var out = QuantizedMatrix(rows: rows, cols: cols, spec: spec)
        let gpr = cols / g
        // Original column -> processing position, to find a group's columns in the permuted order.
        var position = [Int](repeating: 0, count: cols)
        for (i, c) in perm.enumerated() { position[c] = i }
        var gridReady = [Bool](repeating: false, count: gpr)
        if let fixed, fixed.count == out.grids.count {
            out.grids = fixed
            gridReady = [Bool](repeating: true, count: gpr)
        }
        var groupVals = [Float](repeating: 0, count: g)
        // Compact grids: each row's bounds come from its original weights.
        let compactRows: [CompactGridRow] = spec.compactGrid ? (0..<rows).map { out.startCompactRow($0, weights + $0 * cols) } : []
        let weighted = options.weightedGrid && factor.importance.count == cols
        let bs = options.blockSize
        var err = [Float](repeating: 0, count: rows * bs)   // (rows, block) scaled errors
        var ut = [Float](repeating: 0, count: cols * bs)    // (remaining cols, block) transpose of U's block rows
        var delta = [Float](repeating: 0, count: rows * cols)

        w.withUnsafeMutableBufferPointer { wb in
            let W = wb.baseAddress!
            u.withUnsafeBufferPointer { ub in
                let U = ub.baseAddress!
                var i1 = 0
                while i1 < cols {
                    let i2 = min(i1 + bs, cols), nb = i2 - i1
                    for i in i1..<i2 {
                        let col = perm[i], grp = col / g
                        if !gridReady[grp] {
                            // The grid comes from the group's current (error-compensated) weights.
                            for r in 0..<rows {
                                for k in 0..<g { groupVals[k] = W[r * cols + position[grp * g + k]] }
                                let grid = groupVals.withUnsafeBufferPointer { v in
                                    factor.importance.withUnsafeBufferPointer { imp in
                                        let importance = weighted ? imp.baseAddress! + grp * g : nil
                                        let fitted = GroupGrid.fit(v.baseAddress!, count: g, maxQ: maxQ, importance: importance)
                                        guard !compactRows.isEmpty else { return fitted }
                                        return out.setCompact(r * gpr + grp, compactRows[r].snap(fitted, v.baseAddress!, count: g, maxQ: maxQ, importance: importance))
                                    }
                                }
                                out.grids[r * gpr + grp] = grid
                            }
                            gridReady[grp] = true
                        }
                        let dii = U[i * cols + i]
                        let urow = U + i * cols + i + 1
                        for r in 0..<rows {
                            let wr = W + r * cols
                            let grid = out.grids[r * gpr + grp]
                            let q = grid.quantize(wr[i], maxQ: maxQ)
                            out.q[r * cols + col] = UInt8(q)
                            let e = (wr[i] - grid.value(q)) / dii
                            err[r * bs + (i - i1)] = e
                            LinearAlgebra.axpy(wr + i + 1, e, urow, i2 - i - 1)
                        }
                    }
                    // Lazy batch update of the columns after the block: W[:, i2:] -= E · U[i1:i2, i2:].
                    let rest = cols - i2
                    if rest > 0 {
                        for j in 0..<rest { for k in 0..<nb { ut[j * nb + k] = U[(i1 + k) * cols + i2 + j] } }
                        var e2 = [Float](repeating: 0, count: rows * nb)
                        for r in 0..<rows { for k in 0..<nb { e2[r * nb + k] = err[r * bs + k] } }
                        ut.withUnsafeBufferPointer { utb in
                            e2.withUnsafeBufferPointer { eb in
                                delta.withUnsafeMutableBufferPointer { db in
                                    Kernels.matmul(utb.baseAddress!, rows: rest, cols: nb, eb.baseAddress!, tokens: rows, into: db.baseAddress!, pool: pool)
                                }
                            }
                        }
                        for r in 0..<rows {
                            let wr = W + r * cols + i2, dr = rest * r
                            for j in 0..<rest { wr[j] -= delta[dr + j] }
                        }
                    }
                    i1 = i2
                }
            }
        }
        return out
    }
}

/// Output-space error of a quantized matrix on the calibration distribution:
/// tr(ΔW H ΔWᵀ) / tr(W H Wᵀ), i.e. ‖ΔW x‖² / ‖W x‖² averaged over the calibration inputs.
public func relativeOutputError(original w: UnsafePointer<Float>, quantized: [Float], rows: Int, cols: Int, hessian h: [Float],
                                pool: ThreadPool = ThreadPool(threads: 1)) -> Double {
    var dw = [Float](repeating: 0, count: rows * cols)
    for i in 0..<(rows * cols) { dw[i] = w[i] - quantized[i] }
    let num = dw.withUnsafeBufferPointer { hessianQuadratic($0.baseAddress!, rows: rows, cols: cols, hessian: h, pool: pool) }
    let den = hessianQuadratic(w, rows: rows, cols: cols, hessian: h, pool: pool)
    return den > 0 ? num / den : 0
}

/// tr(M H Mᵀ) for M (rows, cols): with H = 2/N Σ xᵀx, twice the mean ‖M x‖² over the inputs.
public func hessianQuadratic(_ m: UnsafePointer<Float>, rows: Int, cols: Int, hessian h: [Float], pool: ThreadPool) -> Double {
    // Rows of M H (H is symmetric, so matmul's x·Hᵀ is x·H).
    var mh = [Float](repeating: 0, count: rows * cols)
    h.withUnsafeBufferPointer { hb in
        mh.withUnsafeMutableBufferPointer { Kernels.matmul(hb.baseAddress!, rows: cols, cols: cols, m, tokens: rows, into: $0.baseAddress!, pool: pool) }
    }
    var total = 0.0
    mh.withUnsafeBufferPointer { p in for r in 0..<rows { total += Double(LinearAlgebra.dot(p.baseAddress! + r * cols, m + r * cols, cols)) } }
    return total
}
