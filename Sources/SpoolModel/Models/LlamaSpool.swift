import SpoolFormat
import SpoolKernels

extension LlamaConfiguration {
    /// The hyperparameters a .spool header carries.
    public init(spool h: SpoolHeader) throws(ModelError) {
        let p = h.hyperparameters
        try self.init(architecture: h.architecture, layers: p.layers, dim: p.dim, ffnDim: p.ffnDim, heads: p.heads,
                      kvHeads: p.kvHeads, headDim: p.headDim, ropeDims: p.ropeDims, ropeBase: p.ropeBase,
                      normEps: p.normEps, vocabSize: p.vocabSize, contextLength: p.contextLength)
    }

    public var spoolHyperparameters: SpoolHyperparameters {
        SpoolHyperparameters(layers: layers, dim: dim, ffnDim: ffnDim, heads: heads, kvHeads: kvHeads, headDim: headDim,
                             ropeDims: ropeDims, ropeBase: ropeBase, normEps: normEps, vocabSize: vocabSize,
                             contextLength: contextLength)
    }
}

extension LlamaModel {
    /// Loads a .spool file: quantized matrices stay packed in the mapping (`PackedWeight`), float32
    /// tensors become `DenseWeight`s or plain arrays. Every extent's checksum is verified as its
    /// tensors are first read.
    public convenience init(spool: SpoolFile) throws(ModelError) {
        let c = try LlamaConfiguration(spool: spool.header)
        // One 8-bit activation buffer for all packed weights (one forward pass runs at a time).
        let activations = Q8Activations()
        func tensor(_ name: String, _ shape: [Int]) throws(ModelError) -> (SpoolTensor, UnsafeRawBufferPointer) {
            guard let t = spool.tensor(named: name) else { throw .spool(.missingTensor(name)) }
            guard t.shape == shape else { throw .format(.tensorShapeMismatch(tensor: name, expected: shape, actual: t.shape)) }
            do { return (t, try spool.data(of: t)) } catch { throw .spool(error) }
        }
        func matrix(_ name: String, rows: Int, cols: Int) throws(ModelError) -> LinearWeight {
            let (t, bytes) = try tensor(name, [rows, cols])
            if t.bits == QuantLayout.floatBits {
                let w = DenseWeight(rows: rows, cols: cols)
                for i in 0..<(rows * cols) { w.values[i] = Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
                return w
            }
            return try PackedWeight(rows: rows, cols: cols, bits: t.bits, group: t.group, bytes: bytes, owner: spool, name: name,
                                    activations: activations)
        }
        func vector(_ name: String, _ n: Int) throws(ModelError) -> [Float] {
            let (t, bytes) = try tensor(name, [n])
            guard t.bits == QuantLayout.floatBits else { throw .spool(.badEncoding(tensor: name, bits: t.bits, group: t.group)) }
            return (0..<n).map { Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        }
        let embedding = try matrix("token_embd.weight", rows: c.vocabSize, cols: c.dim)
        var layers: [LlamaLayer] = []
        for i in 0..<c.layers {
            let p = "blk.\(i)."
            layers.append(LlamaLayer(
                attnNorm: try vector(p + "attn_norm.weight", c.dim),
                wq: try matrix(p + "attn_q.weight", rows: c.qDim, cols: c.dim),
                wk: try matrix(p + "attn_k.weight", rows: c.kvDim, cols: c.dim),
                wv: try matrix(p + "attn_v.weight", rows: c.kvDim, cols: c.dim),
                wo: try matrix(p + "attn_output.weight", rows: c.dim, cols: c.qDim),
                ffnNorm: try vector(p + "ffn_norm.weight", c.dim),
                wGate: try matrix(p + "ffn_gate.weight", rows: c.ffnDim, cols: c.dim),
                wUp: try matrix(p + "ffn_up.weight", rows: c.ffnDim, cols: c.dim),
                wDown: try matrix(p + "ffn_down.weight", rows: c.dim, cols: c.ffnDim)))
        }
        let outputNorm = try vector("output_norm.weight", c.dim)
        let output = spool.tensor(named: "output.weight") == nil
            ? embedding
            : try matrix("output.weight", rows: c.vocabSize, cols: c.dim)
        self.init(configuration: c, embedding: embedding, layers: layers, outputNorm: outputNorm, output: output)
    }
}
