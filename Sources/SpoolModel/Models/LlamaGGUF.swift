import SpoolFormat
import SpoolKernels

/// Where a Llama model's layers come from when they are not all held in memory: a streaming source
/// hands out layer i (weights as views into a buffer it owns) until `release(i)`.
public protocol LayerSource: AnyObject {
    func acquire(_ layer: Int) throws -> LlamaLayer
    func release(_ layer: Int)
}

/// Builds Llama weights from GGUF tensors (llama.cpp's names: `blk.N.attn_q.weight` ...), reading
/// each tensor's bytes through a caller-supplied function: the file's mapping for a resident model,
/// or a buffer holding one streamed layer's extent.
public struct LlamaGGUFLoader: LlamaWeightLoader {
    public let gguf: GGUFFile
    public let configuration: LlamaConfiguration
    /// One 8-bit activation buffer shared by every block-quantized weight of the model (one forward
    /// pass runs at a time).
    public let activations = Q8Activations()

    public typealias Bytes = (GGUFTensorInfo) throws(ModelError) -> UnsafeRawBufferPointer

    public init(gguf: GGUFFile) throws(ModelError) {
        self.gguf = gguf
        configuration = try LlamaConfiguration(gguf: gguf)
    }

    /// Tensor bytes from the file's mapping.
    public var mapped: Bytes { { t in gguf.data(of: t) } }

    public func tensor(_ name: String, _ shape: [Int]) throws(ModelError) -> GGUFTensorInfo {
        guard let t = gguf.tensor(named: name) else { throw .format(.missingTensor(name)) }
        guard t.shape == shape else { throw .format(.tensorShapeMismatch(tensor: name, expected: shape, actual: t.shape)) }
        return t
    }

    /// A (rows, cols) weight: used in place when the integer kernels know its blocks, else expanded
    /// to floats.
    public func matrix(_ name: String, rows: Int, cols: Int, bytes: Bytes, owner: AnyObject? = nil) throws(ModelError) -> LinearWeight {
        let t = try tensor(name, [cols, rows])
        let data = try bytes(t)
        if let format = BlockQuantWeight.format(for: t.type), cols % WeightBlockFormat.blockSize == 0 {
            return try BlockQuantWeight(format: format, rows: rows, cols: cols, data: data, owner: owner ?? gguf,
                                        activations: activations, name: name)
        }
        let w = DenseWeight(rows: rows, cols: cols)
        try w.load(t, from: data)
        return w
    }

    public func vector(_ name: String, _ n: Int, bytes: Bytes) throws(ModelError) -> [Float] {
        let t = try tensor(name, [n])
        let w = DenseWeight(rows: 1, cols: n)
        try w.load(t, from: try bytes(t))
        return Array(UnsafeBufferPointer(start: w.pointer, count: n))
    }

    public static let layerTensorSuffixes = [
        "attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
        "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight",
    ]

    /// The tensors of block i.
    public func layerTensors(_ i: Int) throws(ModelError) -> [GGUFTensorInfo] {
        var out: [GGUFTensorInfo] = []
        for suffix in Self.layerTensorSuffixes {
            guard let t = gguf.tensor(named: "blk.\(i).\(suffix)") else { throw .format(.missingTensor("blk.\(i).\(suffix)")) }
            out.append(t)
        }
        return out
    }

    public func hasTensor(_ name: String) -> Bool { gguf.tensor(named: name) != nil }
}
