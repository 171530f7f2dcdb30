import SpoolFormat
import SpoolIO
import SpoolModel

extension StreamedLayers {
    /// A .spool Llama model's blocks: each block is one 4 KiB-aligned extent of the file (the
    /// format's layer-major layout), so streaming a block is one large read. Each extent's CRC-32C
    /// is checked on its first read (resident blocks at load, streamed ones on the first pass); a
    /// mismatch fails that read with `IOError.verificationFailed` around a `SpoolError` that names
    /// the damaged tensor and extent, and the forward pass throws it instead of computing.
    public static func spool(path: String, loader: LlamaSpoolLoader, fixedBytes: [(name: String, bytes: Int)],
                             options: StreamingOptions) throws -> StreamedLayers {
        let spool = loader.spool
        let indices = try (0..<loader.configuration.layers).map { i throws(ModelError) in try loader.layerExtent(i) }
        let blocks = indices.map { spool.header.extents[$0] }
        // Tensor offsets are relative to their extent, so a block's tensors are slices of its buffer.
        let tensors = indices.map { spool.tensors(inExtent: $0) }
        let extents = blocks.map { Extent(offset: $0.offset, length: $0.length) }
        return try StreamedLayers(
            path: path, extents: extents, fixedBytes: fixedBytes, options: options,
            verify: { layer, _, bytes in try SpoolFile.checkExtent(blocks[layer], tensors: tensors[layer], bytes: bytes) }
        ) { layer, buffer, owner in
            let block = blocks[layer]
            // (A typed variable, as in StreamedLayers.gguf: the closure literal crashes SILGen.)
            let bytes: LlamaSpoolLoader.Bytes = { t throws(ModelError) in
                guard t.extent == indices[layer], t.offset >= 0, t.offset + t.length <= buffer.count else {
                    throw .invalidTensorData(tensor: t.name, reason: "outside its block's extent \(block.name)")
                }
                return UnsafeRawBufferPointer(rebasing: buffer[t.offset..<(t.offset + t.length)])
            }
            return try loader.layer(layer, bytes: bytes, owner: owner)
        }
    }
}
