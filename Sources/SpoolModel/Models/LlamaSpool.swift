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

/// Builds Llama weights from .spool tensors, reading each tensor's bytes through a caller-supplied
/// function: the file's mapping for a resident model (checksums verified on an extent's first
/// read), or a buffer holding one streamed block's extent (the streamer verifies it).
public struct LlamaSpoolLoader: LlamaWeightLoader {
    public let spool: SpoolFile
    public let configuration: LlamaConfiguration
    /// One 8-bit activation buffer for all packed weights (one forward pass runs at a time),
    /// streamed blocks included.
    let activations = Q8Activations()

    public typealias Bytes = (SpoolTensor) throws(ModelError) -> UnsafeRawBufferPointer

    public init(spool: SpoolFile) throws(ModelError) {
        self.spool = spool
        configuration = try LlamaConfiguration(spool: spool.header)
    }

    /// Tensor bytes from the file's mapping, after its extent's checksum.
    public var mapped: Bytes {
        { [spool] t throws(ModelError) in
            do throws(SpoolError) { return try spool.data(of: t) } catch { throw .spool(error) }
        }
    }

    public func tensor(_ name: String, _ shape: [Int]) throws(ModelError) -> SpoolTensor {
        guard let t = spool.tensor(named: name) else { throw .spool(.missingTensor(name)) }
        guard t.shape == shape else { throw .format(.tensorShapeMismatch(tensor: name, expected: shape, actual: t.shape)) }
        return t
    }

    /// A (rows, cols) weight: packed groups are used in place (`PackedWeight`, kept alive by
    /// `owner`, default the file's mapping); float32 ones are copied into a `DenseWeight`.
    public func matrix(_ name: String, rows: Int, cols: Int, bytes: Bytes, owner: AnyObject? = nil) throws(ModelError) -> LinearWeight {
        let t = try tensor(name, [rows, cols])
        let data = try bytes(t)
        if t.bits == QuantLayout.floatBits {
            guard data.count == rows * cols * 4 else { throw .spool(.sizeMismatch(tensor: name, expected: rows * cols * 4, actual: data.count)) }
            let w = DenseWeight(rows: rows, cols: cols)
            for i in 0..<(rows * cols) { w.values[i] = Float(bitPattern: UInt32(littleEndian: data.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
            return w
        }
        // 4-bit weights are interleaved for the AVX-512 kernels when those run: weights read from
        // the mapping (owner nil) release its pages after the copy; streamed blocks are copied out
        // of their ring buffer as well, so that streamed and resident blocks compute the same bits.
        let mapped = owner == nil
        return try PackedWeight(rows: rows, cols: cols, bits: t.bits, group: t.group, bytes: data, owner: owner ?? spool, name: name,
                                activations: activations, interleave: PackedWeight.interleaveAtLoad,
                                releaseSource: mapped && spool.file.isFileMapping, compactGrid: t.compactGrid)
    }

    public func vector(_ name: String, _ n: Int, bytes: Bytes) throws(ModelError) -> [Float] {
        let t = try tensor(name, [n])
        guard t.bits == QuantLayout.floatBits else { throw .spool(.badEncoding(tensor: name, bits: t.bits, group: t.group)) }
        let data = try bytes(t)
        guard data.count == n * 4 else { throw .spool(.sizeMismatch(tensor: name, expected: n * 4, actual: data.count)) }
        return (0..<n).map { Float(bitPattern: UInt32(littleEndian: data.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
    }

    /// The index (into the header's extents) of block i's extent, which holds all of its tensors.
    public func layerExtent(_ i: Int) throws(ModelError) -> Int {
        let extents = spool.header.extents
        guard let e = extents.firstIndex(where: { $0.layer == i }) else { throw .spool(.missingTensor("blk.\(i) (no extent for layer \(i))")) }
        for suffix in LlamaGGUFLoader.layerTensorSuffixes {
            guard let t = spool.tensor(named: "blk.\(i).\(suffix)") else { throw .spool(.missingTensor("blk.\(i).\(suffix)")) }
            guard t.extent == e else {
                throw .invalidTensorData(tensor: t.name, reason: "stored outside its block's extent \(extents[e].name), so the block cannot be streamed as one read")
            }
        }
        return e
    }

    public func hasTensor(_ name: String) -> Bool { spool.tensor(named: name) != nil }
}

extension LlamaModel {
    /// Loads a .spool file: quantized matrices stay packed in the mapping (`PackedWeight`), float32
    /// tensors become `DenseWeight`s or plain arrays. Every extent's checksum is verified as its
    /// tensors are first read. With `residentLayers` false no block is built: a `layerSource`
    /// (streaming, see `spoolLoader`) must be set before `forward`.
    public convenience init(spool: SpoolFile, residentLayers: Bool = true) throws(ModelError) {
        let loader = try LlamaSpoolLoader(spool: spool)
        try self.init(loader: loader, residentLayers: residentLayers)
        spoolLoader = loader
    }
}
