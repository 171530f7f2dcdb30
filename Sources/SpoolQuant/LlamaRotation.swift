import SpoolModel

/// The computational-invariance transform of a Llama model (QuaRot's R1 and R2, SliceGPT's
/// folding), applied to float weights before they are calibrated and quantized. The rotated model
/// computes the same function; its weights have no outlier columns, so low-bit grids fit them
/// better.
///
/// Conventions: activations are row vectors, a linear is y = x Wᵀ with W (outputs, inputs).
/// - R1, the residual stream: x' = x Q (Q orthogonal, dim x dim). RMSNorm commutes with Q once its
///   gain g is folded into the linears that read it: n(x') = n(x) Q, so a reader W becomes
///   W diag(g) Q (attn_q/k/v with attn_norm, ffn_gate/up with ffn_norm), and the norms store ones.
///   Writers into the residual (attn_output, ffn_down) become Qᵀ W; the embedding rows E Q.
/// - The LM head reads n(x) diag(g_f). Untied, it becomes W diag(g_f) Q. Tied, the stored
///   embedding is E Q, so logits = n(x') M (E Q)ᵀ with M = Qᵀ diag(g_f) Q (dim x dim, symmetric),
///   the one matrix the runtime applies (`SpoolRotation.headTensor`).
/// - R2, per KV head: v_h' = v_h H (H orthogonal, headDim x headDim), so attn_v's rows of head h
///   become Hᵀ W_h and attn_output's columns of every query head j become W_j H. Attention mixes
///   value rows linearly per head, so the rotation passes through it unchanged (GQA included: all
///   heads use the same H).
public struct LlamaRotation: Sendable {
    public let seed: UInt64
    let residual: HadamardRotation   // (dim)
    let value: HadamardRotation      // (headDim)
    let configuration: LlamaConfiguration

    public init(configuration c: LlamaConfiguration, seed: UInt64) throws(RotationError) {
        self.seed = seed
        configuration = c
        residual = try HadamardRotation(width: c.dim, seed: seed, what: "residual (embedding_length)")
        value = try HadamardRotation(width: c.headDim, seed: seed &+ 0x5151, what: "attention head")
    }

    static func copy(_ w: DenseWeight) -> [Float] { Array(UnsafeBufferPointer(start: w.pointer, count: w.rows * w.cols)) }

    /// E (vocab, dim) → E Q.
    public func embedding(_ e: DenseWeight) -> DenseWeight {
        var v = Self.copy(e)
        v.withUnsafeMutableBufferPointer { residual.rotateRows($0.baseAddress!, rows: e.rows) }
        return DenseWeight(rows: e.rows, cols: e.cols, copying: v)
    }

    /// A reader of the normalized residual: W (rows, dim) → W diag(g) Q.
    func reader(_ w: DenseWeight, gain g: [Float]) -> [Float] {
        var v = Self.copy(w)
        v.withUnsafeMutableBufferPointer { b in
            for r in 0..<w.rows { for i in 0..<w.cols { b[r * w.cols + i] *= g[i] } }
            residual.rotateRows(b.baseAddress!, rows: w.rows)
        }
        return v
    }

    /// One block: weights keyed by stem ("attn_q" ... "ffn_down"), norms replaced by ones.
    public func layer(attnNorm: [Float], ffnNorm: [Float], weights w: [String: DenseWeight])
        -> (attnNorm: [Float], ffnNorm: [Float], weights: [String: DenseWeight]) {
        let c = configuration
        var out: [String: DenseWeight] = [:]
        for s in ["attn_q", "attn_k"] { out[s] = DenseWeight(rows: w[s]!.rows, cols: c.dim, copying: reader(w[s]!, gain: attnNorm)) }
        for s in ["ffn_gate", "ffn_up"] { out[s] = DenseWeight(rows: w[s]!.rows, cols: c.dim, copying: reader(w[s]!, gain: ffnNorm)) }

        // attn_v: R1 on its inputs, then R2 on each KV head's block of headDim output rows.
        var v = reader(w["attn_v"]!, gain: attnNorm)
        v.withUnsafeMutableBufferPointer { b in
            for h in 0..<c.kvHeads { value.rotateColumns(b.baseAddress! + h * c.headDim * c.dim, cols: c.dim) }
        }
        out["attn_v"] = DenseWeight(rows: c.kvDim, cols: c.dim, copying: v)

        // attn_output (dim, heads * headDim): R1 on its outputs, R2 on each query head's columns.
        var o = Self.copy(w["attn_output"]!)
        o.withUnsafeMutableBufferPointer { b in
            residual.rotateColumns(b.baseAddress!, cols: c.qDim)
            for r in 0..<c.dim { for h in 0..<c.heads { value.rotate(b.baseAddress! + r * c.qDim + h * c.headDim) } }
        }
        out["attn_output"] = DenseWeight(rows: c.dim, cols: c.qDim, copying: o)

        var d = Self.copy(w["ffn_down"]!)
        d.withUnsafeMutableBufferPointer { residual.rotateColumns($0.baseAddress!, cols: c.ffnDim) }
        out["ffn_down"] = DenseWeight(rows: c.dim, cols: c.ffnDim, copying: d)

        let ones = [Float](repeating: 1, count: c.dim)
        return (ones, ones, out)
    }

    /// An untied LM head (vocab, dim) → W diag(g_f) Q; the output norm then stores ones.
    public func untiedHead(_ w: DenseWeight, outputNorm: [Float]) -> DenseWeight {
        DenseWeight(rows: w.rows, cols: w.cols, copying: reader(w, gain: outputNorm))
    }

    /// M = Qᵀ diag(g_f) Q (dim, dim), applied to the normalized hidden state before a tied head.
    public func headMatrix(outputNorm g: [Float]) -> [Float] {
        let n = configuration.dim
        let q = residual.matrix()
        var m = [Float](repeating: 0, count: n * n)
        // M[i][j] = Σ_k Q[k][i] g[k] Q[k][j]: accumulate one scaled outer product of row k per k.
        m.withUnsafeMutableBufferPointer { mb in
            q.withUnsafeBufferPointer { qb in
                for k in 0..<n {
                    let row = qb.baseAddress! + k * n
                    for i in 0..<n {
                        let a = row[i] * g[k]
                        let mi = mb.baseAddress! + i * n
                        for j in 0..<n { mi[j] += a * row[j] }
                    }
                }
            }
        }
        return m
    }

    /// x (dim) ← x M without forming M: the tied head's input, for its calibration Hessian.
    public func applyHeadMatrix(_ x: UnsafeMutablePointer<Float>, outputNorm g: [Float]) {
        residual.rotateBack(x)
        for i in 0..<configuration.dim { x[i] *= g[i] }
        residual.rotate(x)
    }
}
