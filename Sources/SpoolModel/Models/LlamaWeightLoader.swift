import SpoolFormat

/// What a file format supplies for a Llama model (GGUF: `LlamaGGUFLoader`, .spool:
/// `LlamaSpoolLoader`): tensors by name, read through `Bytes` (the file's mapping, or a streamed
/// block's buffer). Blocks and whole models are then built the same way for every format.
public protocol LlamaWeightLoader {
    associatedtype Bytes
    var configuration: LlamaConfiguration { get }
    /// Tensor bytes from the file's mapping.
    var mapped: Bytes { get }
    func hasTensor(_ name: String) -> Bool
    func matrix(_ name: String, rows: Int, cols: Int, bytes: Bytes, owner: AnyObject?) throws(ModelError) -> LinearWeight
    func vector(_ name: String, _ n: Int, bytes: Bytes) throws(ModelError) -> [Float]
}

extension LlamaWeightLoader {
    /// Block i's weights.
    public func layer(_ i: Int, bytes: Bytes, owner: AnyObject? = nil) throws(ModelError) -> LlamaLayer {
        let c = configuration, p = "blk.\(i)."
        return LlamaLayer(
            attnNorm: try vector(p + "attn_norm.weight", c.dim, bytes: bytes),
            wq: try matrix(p + "attn_q.weight", rows: c.qDim, cols: c.dim, bytes: bytes, owner: owner),
            wk: try matrix(p + "attn_k.weight", rows: c.kvDim, cols: c.dim, bytes: bytes, owner: owner),
            wv: try matrix(p + "attn_v.weight", rows: c.kvDim, cols: c.dim, bytes: bytes, owner: owner),
            wo: try matrix(p + "attn_output.weight", rows: c.dim, cols: c.qDim, bytes: bytes, owner: owner),
            ffnNorm: try vector(p + "ffn_norm.weight", c.dim, bytes: bytes),
            wGate: try matrix(p + "ffn_gate.weight", rows: c.ffnDim, cols: c.dim, bytes: bytes, owner: owner),
            wUp: try matrix(p + "ffn_up.weight", rows: c.ffnDim, cols: c.dim, bytes: bytes, owner: owner),
            wDown: try matrix(p + "ffn_down.weight", rows: c.dim, cols: c.ffnDim, bytes: bytes, owner: owner))
    }
}

extension LlamaModel {
    /// The model from a loader's mapped tensors. With `residentLayers` false no block is built: a
    /// `layerSource` must be set before `forward`. The output weight is the embedding when the file
    /// has none (tied).
    convenience init<L: LlamaWeightLoader>(loader: L, residentLayers: Bool) throws(ModelError) {
        let c = loader.configuration
        let embedding = try loader.matrix("token_embd.weight", rows: c.vocabSize, cols: c.dim, bytes: loader.mapped, owner: nil)
        var layers: [LlamaLayer] = []
        if residentLayers {
            for i in 0..<c.layers { layers.append(try loader.layer(i, bytes: loader.mapped)) }
        }
        let outputNorm = try loader.vector("output_norm.weight", c.dim, bytes: loader.mapped)
        let output = loader.hasTensor("output.weight")
            ? try loader.matrix("output.weight", rows: c.vocabSize, cols: c.dim, bytes: loader.mapped, owner: nil)
            : embedding
        self.init(configuration: c, embedding: embedding, layers: layers, outputNorm: outputNorm, output: output)
        if loader.hasTensor(SpoolRotation.headTensor) {
            headRotation = try loader.matrix(SpoolRotation.headTensor, rows: c.dim, cols: c.dim, bytes: loader.mapped, owner: nil)
        }
    }
}
