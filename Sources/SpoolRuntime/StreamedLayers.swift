import SpoolFormat
import SpoolIO
import SpoolModel

/// How the engine runs a model whose weights should not all be held in memory: a memory budget
/// decides which transformer blocks stay resident, the others are read from disk for every forward
/// pass through a `LayerStreamer` (io_uring by default) while earlier blocks compute.
public struct StreamingOptions: Sendable {
    /// Bytes the weights, KV cache and buffers may take.
    public var memoryBudget: Int
    public var backend: IOBackend = .uring
    /// Blocks read ahead of the one computing.
    public var prefetchDepth = 2
    public var reader = WeightReaderOptions()
    /// The context the KV cache is budgeted for (default: 4096, capped by the model).
    public var contextLength: Int?

    public init(memoryBudget: Int, backend: IOBackend = .uring, prefetchDepth: Int = 2) {
        self.memoryBudget = memoryBudget
        self.backend = backend
        self.prefetchDepth = prefetchDepth
    }
}

/// The blocks of a Llama model, streamed: block i is one extent of the file (its tensors are stored
/// together), read into a ring buffer and wrapped in weights that view the buffer. Resident blocks
/// are read once and kept. The file format only decides where the extents are, how a block is built
/// over its bytes, and how an extent is verified (see `gguf` here and `spool` in
/// StreamedSpoolLayers.swift).
public final class StreamedLayers: LayerSource {
    /// Builds block i's weights as views into `bytes` (its extent), kept alive by `owner`.
    public typealias Build = (_ layer: Int, _ bytes: UnsafeRawBufferPointer, _ owner: AnyObject) throws -> LlamaLayer

    public let plan: MemoryPlanner.Plan
    public let streamer: LayerStreamer
    /// Why io_uring was not used, if it was asked for and could not start (one log line).
    public let fallbackReason: String?
    public let backend: IOBackend
    public let extents: [Extent]
    private let build: Build
    private var residentLayers: [Int: LlamaLayer] = [:]

    /// - Parameters:
    ///   - extents: block i's extent of the file at `path`.
    ///   - fixedBytes: memory outside the blocks (embeddings, KV cache, scratch), named.
    ///   - verify: checks an extent's bytes on its first read (a throw fails the read).
    public init(path: String, extents: [Extent], fixedBytes: [(name: String, bytes: Int)], options: StreamingOptions,
                verify: LayerStreamer.Verify? = nil, build: @escaping Build) throws {
        self.extents = extents
        self.build = build
        plan = try MemoryPlanner.plan(.init(
            fixed: fixedBytes, layerBytes: extents.map { LayerStreamer.bufferBytes([$0]) },
            budget: options.memoryBudget, prefetchDepth: options.prefetchDepth))
        let opened = try openWeightReader(path: path, backend: options.backend, options: options.reader)
        fallbackReason = opened.fallbackReason
        backend = opened.fallbackReason == nil ? options.backend : .pread
        streamer = try LayerStreamer(reader: opened.reader, layers: extents.map { [$0] }, resident: Set(plan.resident),
                                     prefetchDepth: options.prefetchDepth, verify: verify)
    }

    public func acquire(_ layer: Int) throws -> LlamaLayer {
        if let l = residentLayers[layer] { return l }
        let view = try streamer.acquire(layer)
        // The streamer owns the buffers: weights hold it, not this source (no cycle through the
        // resident layers kept here).
        let built = try build(layer, view.parts[0], streamer)
        if view.isResident { residentLayers[layer] = built }
        return built
    }

    public func release(_ layer: Int) {
        if residentLayers[layer] == nil { streamer.release(layer) }
    }

    public var stats: StreamStats { streamer.stats }
}

extension StreamedLayers {
    /// A GGUF Llama model's blocks: block i's extent spans its tensors (the converter stores them
    /// together). GGUF has no checksums, so nothing is verified.
    public static func gguf(path: String, loader: LlamaGGUFLoader, fixedBytes: [(name: String, bytes: Int)],
                            options: StreamingOptions) throws -> StreamedLayers {
        let gguf = loader.gguf
        var extents: [Extent] = []
        for i in 0..<loader.configuration.layers {
            let tensors = try loader.layerTensors(i)
            let start = tensors.map(\.offset).min()!, end = tensors.map { $0.offset + $0.byteCount }.max()!
            extents.append(Extent(offset: gguf.dataOffset + start, length: end - start))
        }
        return try StreamedLayers(path: path, extents: extents, fixedBytes: fixedBytes, options: options) { layer, buffer, owner in
            let base = extents[layer].offset - gguf.dataOffset
            // (Bound to a typed variable first: a typed-throws closure literal passed straight to the
            // protocol extension's `layer` crashes SILGen in Swift 6.3.1.)
            let bytes: LlamaGGUFLoader.Bytes = { t throws(ModelError) in
                let lo = t.offset - base
                guard lo >= 0, lo + t.byteCount <= buffer.count else {
                    throw .invalidTensorData(tensor: t.name, reason: "outside its block's extent")
                }
                return UnsafeRawBufferPointer(rebasing: buffer[lo..<(lo + t.byteCount)])
            }
            return try loader.layer(layer, bytes: bytes, owner: owner)
        }
    }
}
