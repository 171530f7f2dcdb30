import SpoolKV
import SpoolKernels

/// Hooks for the offline packer: run one transformer block on given hidden states and observe the
/// inputs of its linear layers (GPTQ needs each linear's input distribution).

/// Which linear layers share an input.
public enum LinearInput: Int, CaseIterable, Sendable {
    /// attn_norm output: wq, wk, wv.
    case attention
    /// Attention output: wo.
    case attentionOutput
    /// ffn_norm output: wGate, wUp.
    case ffn
    /// silu(gate) * up: wDown.
    case ffnDown
}

extension LlamaLayer {
    /// Builds a block from its tensors (the packer assembles float and quantized blocks itself).
    public static func make(attnNorm: [Float], wq: LinearWeight, wk: LinearWeight, wv: LinearWeight, wo: LinearWeight,
                            ffnNorm: [Float], wGate: LinearWeight, wUp: LinearWeight, wDown: LinearWeight) -> LlamaLayer {
        LlamaLayer(attnNorm: attnNorm, wq: wq, wk: wk, wv: wv, wo: wo, ffnNorm: ffnNorm, wGate: wGate, wUp: wUp, wDown: wDown)
    }

    /// Runs this block in place on one sequence x (tokens, dim) at positions 0..<tokens, as
    /// `LlamaModel.forward` does for each layer (keep the two in step), calling `observe` with each
    /// linear input (tokens, its cols) before it is used. `cache` must hold `tokens` positions;
    /// the block is stored at layer 0 of it. With `stopAfter`, it returns right after observing
    /// that input (x is then partly updated): the packer's true-sequential stages need one input only.
    public func runCalibration(_ x: UnsafeMutablePointer<Float>, tokens n: Int, configuration c: LlamaConfiguration,
                               cache: KVCache, pool: ThreadPool, stopAfter: LinearInput? = nil,
                               observe: (LinearInput, UnsafePointer<Float>, Int) -> Void) throws {
        let s = CalibrationScratch(tokens: n, c)
        defer { s.free() }
        let xn = s.xn
        let positions = (0..<n).map { Int32($0) }
        cache.truncate(to: 0)
        Kernels.rmsNorm(x, weight: attnNorm, n: c.dim, tokens: n, eps: c.normEps, into: xn)
        observe(.attention, xn, c.dim)
        if stopAfter == .attention { return }
        wq.apply(xn, tokens: n, into: s.q, pool: pool)
        wk.apply(xn, tokens: n, into: s.k, pool: pool)
        wv.apply(xn, tokens: n, into: s.v, pool: pool)
        positions.withUnsafeBufferPointer { pos in
            Kernels.rope(s.q, tokens: n, heads: c.heads, headDim: c.headDim, ropeDims: c.ropeDims, positions: pos.baseAddress!, base: c.ropeBase)
            Kernels.rope(s.k, tokens: n, heads: c.kvHeads, headDim: c.headDim, ropeDims: c.ropeDims, positions: pos.baseAddress!, base: c.ropeBase)
        }
        try cache.store(layer: 0, start: 0, tokens: n, keys: s.k, values: s.v)
        cache.attend(layer: 0, start: 0, tokens: n, queries: s.q, output: s.att, pool: pool)
        observe(.attentionOutput, s.att, c.qDim)
        if stopAfter == .attentionOutput { return }
        wo.apply(s.att, tokens: n, into: xn, pool: pool)
        LlamaModel.addInPlace(x, xn, count: n * c.dim)

        Kernels.rmsNorm(x, weight: ffnNorm, n: c.dim, tokens: n, eps: c.normEps, into: xn)
        observe(.ffn, xn, c.dim)
        if stopAfter == .ffn { return }
        wGate.apply(xn, tokens: n, into: s.gate, pool: pool)
        wUp.apply(xn, tokens: n, into: s.up, pool: pool)
        Kernels.swiglu(s.gate, s.up, count: n * c.ffnDim, into: s.gate)
        observe(.ffnDown, s.gate, c.ffnDim)
        if stopAfter == .ffnDown { return }
        wDown.apply(s.gate, tokens: n, into: xn, pool: pool)
        LlamaModel.addInPlace(x, xn, count: n * c.dim)
    }
}

extension LlamaModel {
    /// A one-layer cache for `runCalibration` on sequences of up to `tokens`.
    public static func calibrationCache(_ c: LlamaConfiguration, tokens: Int) -> KVCache {
        FloatKVCache(geometry: KVGeometry(layers: 1, kvHeads: c.kvHeads, queryHeads: c.heads, headDim: c.headDim, capacity: tokens))
    }

    /// Copies the embeddings of `tokens` into x (tokens, dim): the input of layer 0.
    public func embed(_ tokens: [Int32], into x: UnsafeMutablePointer<Float>) {
        for (t, id) in tokens.enumerated() { embedding.row(Int(id), into: x + t * configuration.dim) }
    }
}

/// Per-call activation buffers for `runCalibration`.
struct CalibrationScratch {
    let xn, q, k, v, att, gate, up: UnsafeMutablePointer<Float>

    init(tokens n: Int, _ c: LlamaConfiguration) {
        xn = .allocate(capacity: n * c.dim)
        q = .allocate(capacity: n * c.qDim)
        k = .allocate(capacity: n * c.kvDim)
        v = .allocate(capacity: n * c.kvDim)
        att = .allocate(capacity: n * c.qDim)
        gate = .allocate(capacity: n * c.ffnDim)
        up = .allocate(capacity: n * c.ffnDim)
    }

    func free() { for p in [xn, q, k, v, att, gate, up] { p.deallocate() } }
}
