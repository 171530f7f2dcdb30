import SpoolKernels

/// Asymmetric calibration (the idea of GPTAQ): a layer of the quantized model sees inputs X_q
/// that already carry the error of the layers before it, while the float model saw X_f at the same
/// positions. Plain GPTQ asks for Ŵ X_q ≈ W X_q; asking for Ŵ X_q ≈ W X_f instead lets each layer
/// cancel part of the error it inherits. With rows x_n (inputs as row vectors) the objective
///     Σ_n ‖Ŵ x_q,nᵀ − W x_f,nᵀ‖² + λ ‖Ŵ − W‖²
/// equals ‖(Ŵ − W′) X_qᵀ‖² + λ‖Ŵ − W′‖² plus a constant, with
///     W′ = (W K + λ W)(H + λI)⁻¹,   K = 2/N Σ x_f,nᵀ x_q,n,   H = 2/N Σ x_q,nᵀ x_q,n,
/// so GPTQ on W′ with the usual H minimizes it: no change to GPTQ itself. The λ term (GPTQ's
/// damping) keeps W′ = W exactly when X_f = X_q, and W′ near W in directions the calibration
/// inputs barely span.
public final class CrossAccumulator {
    public let cols: Int
    public private(set) var samples = 0
    /// (cols, cols): k[i, j] = 2/N Σ_n x_f[n, i] x_q[n, j].
    var k: [Float]
    private var ft: [Float] = [], qt: [Float] = []

    public init(cols: Int) {
        self.cols = cols
        k = [Float](repeating: 0, count: cols * cols)
    }

    /// Adds `tokens` paired input rows: x_f from the float model, x_q from the quantized one
    /// (tokens, cols) each, row n of both at the same position.
    public func add(float xf: UnsafePointer<Float>, quantized xq: UnsafePointer<Float>, tokens: Int, pool: ThreadPool) {
        guard tokens > 0 else { return }
        if ft.count < cols * tokens {
            ft = [Float](repeating: 0, count: cols * tokens)
            qt = ft
        }
        var prod = [Float](repeating: 0, count: cols * cols)
        ft.withUnsafeMutableBufferPointer { fb in
            qt.withUnsafeMutableBufferPointer { qb in
                let f = fb.baseAddress!, q = qb.baseAddress!
                for n in 0..<tokens {
                    for c in 0..<cols {
                        f[c * tokens + n] = xf[n * cols + c]
                        q[c * tokens + n] = xq[n * cols + c]
                    }
                }
                // matmul's y[t, r] = Σ_n f[r, n] q[t, n] = Σ_n x_f[n, r] x_q[n, t]: y[t, r] = k[r, t].
                prod.withUnsafeMutableBufferPointer { Kernels.matmul(f, rows: cols, cols: tokens, q, tokens: cols, into: $0.baseAddress!, pool: pool) }
            }
        }
        let total = samples + tokens
        let keep = Float(samples) / Float(total), add = 2 / Float(total)
        for r in 0..<cols { for t in 0..<cols { k[r * cols + t] = k[r * cols + t] * keep + prod[t * cols + r] * add } }
        samples = total
    }

    public var matrix: [Float] { k }
}

public enum AsymmetricTarget {
    /// W′ = (W K + λW)(H + λI)⁻¹ for w (rows, cols), λ = `damping` × mean diagonal of H (dead
    /// inputs, H_ii = 0, get 1 as in `GPTQ.factor`). Nil when H + λI is not positive definite in
    /// float32 (the caller then quantizes W itself).
    public static func weights(_ w: UnsafePointer<Float>, rows: Int, cols: Int, cross k: [Float], hessian h: [Float],
                               damping: Float, pool: ThreadPool) -> [Float]? {
        guard k.count == cols * cols, h.count == cols * cols, rows > 0 else { return nil }
        var meanDiag: Float = 0
        for i in 0..<cols { meanDiag += h[i * cols + i] }
        meanDiag /= Float(cols)
        let lambda = damping * meanDiag
        var hd = h
        for i in 0..<cols {
            if hd[i * cols + i] == 0 { hd[i * cols + i] = 1 }
            hd[i * cols + i] += lambda
        }
        guard let u = LinearAlgebra.upperCholeskyOfInverse(hd, n: cols) else { return nil }
        // Z = W K + λW: matmul's y[r, j] = Σ_i kt[j, i] w[r, i] with kt = Kᵀ.
        var kt = [Float](repeating: 0, count: cols * cols)
        for i in 0..<cols { for j in 0..<cols { kt[j * cols + i] = k[i * cols + j] } }
        var z = [Float](repeating: 0, count: rows * cols)
        kt.withUnsafeBufferPointer { kb in
            z.withUnsafeMutableBufferPointer { Kernels.matmul(kb.baseAddress!, rows: cols, cols: cols, w, tokens: rows, into: $0.baseAddress!, pool: pool) }
        }
        for i in 0..<(rows * cols) { z[i] += lambda * w[i] }
        // (H + λI)⁻¹ = Uᵀ U: Z Uᵀ (y[r, j] = Σ_i u[j, i] z[r, i]), then (Z Uᵀ) U with ut = Uᵀ.
        var zu = [Float](repeating: 0, count: rows * cols)
        u.withUnsafeBufferPointer { ub in
            z.withUnsafeBufferPointer { zb in
                zu.withUnsafeMutableBufferPointer { Kernels.matmul(ub.baseAddress!, rows: cols, cols: cols, zb.baseAddress!, tokens: rows, into: $0.baseAddress!, pool: pool) }
            }
        }
        var ut = [Float](repeating: 0, count: cols * cols)
        for i in 0..<cols { for j in 0..<cols { ut[j * cols + i] = u[i * cols + j] } }
        ut.withUnsafeBufferPointer { ub in
            zu.withUnsafeBufferPointer { zb in
                z.withUnsafeMutableBufferPointer { Kernels.matmul(ub.baseAddress!, rows: cols, cols: cols, zb.baseAddress!, tokens: rows, into: $0.baseAddress!, pool: pool) }
            }
        }
        return z.allSatisfy(\.isFinite) ? z : nil
    }
}
