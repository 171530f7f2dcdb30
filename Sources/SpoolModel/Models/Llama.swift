// Llama-family decoder (Llama 2/3, SmolLM, Mistral-style GQA): pre-norm blocks of
// RMSNorm -> grouped-query attention with rotary positions -> residual, then
// RMSNorm -> SwiGLU feed-forward -> residual; a final RMSNorm and the LM head.

import SpoolFormat
import SpoolKV
import SpoolKernels

public final class LlamaLayer {
    let attnNorm: [Float]        // (dim)
    let wq: LinearWeight         // (heads * headDim, dim)
    let wk: LinearWeight         // (kvHeads * headDim, dim)
    let wv: LinearWeight         // (kvHeads * headDim, dim)
    let wo: LinearWeight         // (dim, heads * headDim)
    let ffnNorm: [Float]         // (dim)
    let wGate: LinearWeight      // (ffnDim, dim)
    let wUp: LinearWeight        // (ffnDim, dim)
    let wDown: LinearWeight      // (dim, ffnDim)

    public init(attnNorm: [Float], wq: LinearWeight, wk: LinearWeight, wv: LinearWeight, wo: LinearWeight,
         ffnNorm: [Float], wGate: LinearWeight, wUp: LinearWeight, wDown: LinearWeight) {
        self.attnNorm = attnNorm
        self.wq = wq
        self.wk = wk
        self.wv = wv
        self.wo = wo
        self.ffnNorm = ffnNorm
        self.wGate = wGate
        self.wUp = wUp
        self.wDown = wDown
    }

    var weights: [LinearWeight] { [wq, wk, wv, wo, wGate, wUp, wDown] }
}

public final class LlamaModel: LanguageModel {
    public let configuration: LlamaConfiguration
    let embedding: LinearWeight      // (vocab, dim)
    let layers: [LlamaLayer]
    let outputNorm: [Float]          // (dim)
    let output: LinearWeight         // (vocab, dim); the embedding itself when tied
    /// (dim, dim) M, applied to the normalized hidden state before the LM head when the packer
    /// rotated the residual stream and the head is tied (see SpoolQuant/LlamaRotation.swift).
    public internal(set) var headRotation: LinearWeight?
    /// Where layers come from when they are not all held in memory (streaming); nil: `layers`.
    public var layerSource: LayerSource?
    /// How the GGUF layers were built, for a streaming source to build them again from its buffers.
    public private(set) var ggufLoader: LlamaGGUFLoader?
    /// The same for a .spool file (set by `init(spool:residentLayers:)`).
    public internal(set) var spoolLoader: LlamaSpoolLoader?
    private let scratch = Scratch()
    /// Called after each stage of `forward` with llama.cpp's tensor name for it ("Qcur-3",
    /// "ffn_out-3", "result_output" ...) and the values, (tokens, width) row-major, so intermediate
    /// tensors can be compared with llama-eval-callback's. nil (the default) costs nothing.
    public var tap: ((_ name: String, _ values: UnsafePointer<Float>, _ count: Int) -> Void)?

    public init(configuration: LlamaConfiguration, embedding: LinearWeight, layers: [LlamaLayer],
                outputNorm: [Float], output: LinearWeight) {
        self.configuration = configuration
        self.embedding = embedding
        self.layers = layers
        self.outputNorm = outputNorm
        self.output = output
    }

    /// Loads a GGUF file written by llama.cpp's converter (tensor names `blk.N.attn_q.weight` etc.).
    /// Block-quantized weights stay in the file's mapping; see `LlamaGGUFLoader`.
    /// With `residentLayers` false no block is built: a `layerSource` must be set before `forward`.
    public convenience init(gguf: GGUFFile, residentLayers: Bool = true) throws(ModelError) {
        let loader = try LlamaGGUFLoader(gguf: gguf)
        try self.init(loader: loader, residentLayers: residentLayers)
        ggufLoader = loader
    }

    public var weightBytes: Int {
        var total = embedding.byteCount + (output === embedding ? 0 : output.byteCount) + (headRotation?.byteCount ?? 0)
        for l in layers { total += l.weights.reduce(0) { $0 + $1.byteCount } }
        return total
    }

    public func makeCache(capacity: Int) -> KVCache {
        FloatKVCache(geometry: KVGeometry(layers: configuration.layers, kvHeads: configuration.kvHeads,
                                          queryHeads: configuration.heads, headDim: configuration.headDim,
                                          capacity: capacity))
    }

    public func forward(_ tokens: [Int32], start: Int, cache: KVCache, logits selection: LogitsSelection, pool: ThreadPool) throws -> Logits {
        let c = configuration
        let n = tokens.count
        guard n > 0 else { throw ForwardError.emptyInput }
        guard start + n <= cache.geometry.capacity else {
            throw ForwardError.contextFull(needed: start + n, capacity: cache.geometry.capacity)
        }
        for id in tokens where id < 0 || Int(id) >= c.vocabSize {
            throw ForwardError.tokenOutOfRange(id: id, vocabSize: c.vocabSize)
        }
        let s = scratch
        s.reserve(tokens: n, c)
        let x = s.x, xn = s.xn
        for (t, id) in tokens.enumerated() { embedding.row(Int(id), into: x + t * c.dim) }
        let positions = (0..<n).map { Int32(start + $0) }

        guard layerSource != nil || layers.count == c.layers else { throw ForwardError.noLayerSource }
        for li in 0..<c.layers {
            let layer = try layerSource?.acquire(li) ?? layers[li]
            defer { layerSource?.release(li) }
            // Attention block.
            Kernels.rmsNorm(x, weight: layer.attnNorm, n: c.dim, tokens: n, eps: c.normEps, into: xn)
            tap?("attn_norm-\(li)", xn, n * c.dim)
            applyShared([layer.wq, layer.wk, layer.wv], xn, tokens: n, into: [s.q, s.k, s.v], pool: pool)
            positions.withUnsafeBufferPointer { pos in
                Kernels.rope(s.q, tokens: n, heads: c.heads, headDim: c.headDim, ropeDims: c.ropeDims, positions: pos.baseAddress!, base: c.ropeBase)
                Kernels.rope(s.k, tokens: n, heads: c.kvHeads, headDim: c.headDim, ropeDims: c.ropeDims, positions: pos.baseAddress!, base: c.ropeBase)
            }
            tap?("Qcur-\(li)", s.q, n * c.qDim)
            tap?("Kcur-\(li)", s.k, n * c.kvDim)
            tap?("Vcur-\(li)", s.v, n * c.kvDim)
            try cache.store(layer: li, start: start, tokens: n, keys: s.k, values: s.v)
            cache.attend(layer: li, start: start, tokens: n, queries: s.q, output: s.att, pool: pool)
            tap?("kqv_out-\(li)", s.att, n * c.qDim)
            layer.wo.apply(s.att, tokens: n, into: xn, pool: pool)
            tap?("attn_out-\(li)", xn, n * c.dim)
            Self.addInPlace(x, xn, count: n * c.dim)
            tap?("ffn_inp-\(li)", x, n * c.dim)

            // Feed-forward block.
            Kernels.rmsNorm(x, weight: layer.ffnNorm, n: c.dim, tokens: n, eps: c.normEps, into: xn)
            tap?("ffn_norm-\(li)", xn, n * c.dim)
            applyShared([layer.wGate, layer.wUp], xn, tokens: n, into: [s.gate, s.up], pool: pool)
            tap?("ffn_gate-\(li)", s.gate, n * c.ffnDim)
            tap?("ffn_up-\(li)", s.up, n * c.ffnDim)
            Kernels.swiglu(s.gate, s.up, count: n * c.ffnDim, into: s.gate)
            tap?("ffn_swiglu-\(li)", s.gate, n * c.ffnDim)
            layer.wDown.apply(s.gate, tokens: n, into: xn, pool: pool)
            tap?("ffn_out-\(li)", xn, n * c.dim)
            Self.addInPlace(x, xn, count: n * c.dim)
            tap?("l_out-\(li)", x, n * c.dim)
        }
        cache.commit(upTo: start + n)

        let range = selection.range(tokens: n)
        var out = Logits(firstIndex: range.lowerBound, count: range.count, vocabSize: c.vocabSize,
                         values: [Float](repeating: 0, count: range.count * c.vocabSize))
        guard !range.isEmpty else { return out }
        let rows = x + range.lowerBound * c.dim
        Kernels.rmsNorm(rows, weight: outputNorm, n: c.dim, tokens: range.count, eps: c.normEps, into: xn)
        if let m = headRotation {
            var normed = Array(UnsafeBufferPointer(start: xn, count: range.count * c.dim))
            normed.withUnsafeMutableBufferPointer { m.apply(xn, tokens: range.count, into: $0.baseAddress!, pool: pool) }
            xn.update(from: normed, count: normed.count)
        }
        tap?("result_norm", xn, range.count * c.dim)
        out.values.withUnsafeMutableBufferPointer { buf in
            output.apply(xn, tokens: range.count, into: buf.baseAddress!, pool: pool)
            tap?("result_output", buf.baseAddress!, range.count * c.vocabSize)
        }
        return out
    }

    @inline(__always)
    static func addInPlace(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, count: Int) {
        for i in 0..<count { a[i] += b[i] }
    }
}

/// Activation buffers reused across forward passes, grown when a larger batch arrives.
final class Scratch {
    private(set) var capacity = 0
    var x = UnsafeMutablePointer<Float>.allocate(capacity: 1)     // (tokens, dim) residual stream
    var xn = UnsafeMutablePointer<Float>.allocate(capacity: 1)    // (tokens, dim) normed / block output
    var q = UnsafeMutablePointer<Float>.allocate(capacity: 1)     // (tokens, heads * headDim)
    var k = UnsafeMutablePointer<Float>.allocate(capacity: 1)     // (tokens, kvHeads * headDim)
    var v = UnsafeMutablePointer<Float>.allocate(capacity: 1)     // (tokens, kvHeads * headDim)
    var att = UnsafeMutablePointer<Float>.allocate(capacity: 1)   // (tokens, heads * headDim)
    var gate = UnsafeMutablePointer<Float>.allocate(capacity: 1)  // (tokens, ffnDim)
    var up = UnsafeMutablePointer<Float>.allocate(capacity: 1)    // (tokens, ffnDim)

    func reserve(tokens: Int, _ c: LlamaConfiguration) {
        guard tokens > capacity else { return }
        free()
        capacity = tokens
        x = .allocate(capacity: tokens * c.dim)
        xn = .allocate(capacity: tokens * c.dim)
        q = .allocate(capacity: tokens * c.qDim)
        k = .allocate(capacity: tokens * c.kvDim)
        v = .allocate(capacity: tokens * c.kvDim)
        att = .allocate(capacity: tokens * c.qDim)
        gate = .allocate(capacity: tokens * c.ffnDim)
        up = .allocate(capacity: tokens * c.ffnDim)
    }

    private func free() {
        for p in [x, xn, q, k, v, att, gate, up] { p.deallocate() }
    }

    deinit { free() }
}

extension LlamaModel {
    /// Activation memory of a forward pass over `tokens` tokens with up to `contextLength` cached:
    /// the `Scratch` buffers, one row of logits (`.last`; a caller asking for every row adds its
    /// own), the 8-bit activation copies of block-quantized weights (one byte per value and two
    /// floats per 32), and a row of attention scores per head. What the streaming planner counts.
    public static func scratchBytes(_ c: LlamaConfiguration, tokens: Int, contextLength: Int) -> Int {
        let floatsPerToken = 2 * c.dim + 2 * c.qDim + 2 * c.kvDim + 2 * c.ffnDim
        let q8 = tokens * max(c.dim, c.qDim, c.ffnDim) * 5 / 4
        return tokens * floatsPerToken * 4 + c.vocabSize * 4 + q8 + c.heads * contextLength * 4
    }
}
