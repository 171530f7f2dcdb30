import Foundation
import SpoolFormat
import SpoolKernels
import SpoolKV
import SpoolModel
import SpoolTokenizer

public struct EngineOptions: Sendable {
    /// Worker threads for the kernels; nil: all cores.
    public var threads: Int?
    /// Tokens per forward pass during prefill.
    public var batchSize = 512
    /// How sessions store keys and values (`--kv-bits`, `--kv-group`, `--kv-residual`).
    public var kv = KVCacheConfiguration()

    /// Stream blocks from disk under a memory budget; nil: map the whole file.
    public var streaming: StreamingOptions?

    public init(threads: Int? = nil, kv: KVCacheConfiguration = KVCacheConfiguration()) {
        self.threads = threads
        self.kv = kv
    }
}

public enum EngineError: Error, CustomStringConvertible {
    case unsupportedFile(path: String)
    case load(path: String, reason: String)

    public var description: String {
        switch self {
        case let .unsupportedFile(path): return "\(path): not a GGUF or .spool file"
        case let .load(path, reason): return "\(path): \(reason)"
        }
    }
}

/// A loaded model with its tokenizer and thread pool. Sessions hold per-conversation state.
public final class Engine {
    public let path: String
    public let model: LanguageModel
    public let tokenizer: BPETokenizer
    public let pool: ThreadPool
    public let options: EngineOptions
    /// `tokenizer.chat_template` from the model's metadata, if any.
    public let chatTemplate: String?
    public let loadSeconds: Double
    /// The streaming layer source when `options.streaming` is set.
    public let streamedLayers: StreamedLayers?
    /// Makes caches as `options.kv` says; checked against the model when the engine loads.
    public let kvCaches: KVCacheFactory

    public init(path: String, options: EngineOptions = EngineOptions()) throws {
        let t0 = Date()
        self.path = path
        self.options = options
        do {
            // The first bytes decide the format: .spool (packed by spool-pack) or GGUF.
            if SpoolFile.hasMagic(path: path) {
                let spool = try SpoolFile(path: path)
                model = try ModelRegistry.load(spool: spool, residentLayers: options.streaming == nil)
                tokenizer = try BPETokenizer(TokenizerVocabulary(spool: spool.header.tokenizer))
                chatTemplate = spool.header.chatTemplate
            } else {
                let gguf = try GGUFFile(path: path)
                model = try ModelRegistry.load(gguf: gguf, residentLayers: options.streaming == nil)
                tokenizer = try BPETokenizer(gguf: gguf)
                chatTemplate = try gguf.string("tokenizer.chat_template")
            }
            // .spool weights are not llama.cpp's: their f16 attention need not be bit-exact, so it takes the fast kernel.
            kvCaches = try KVCacheFactory(configuration: options.kv, geometry: model.kvGeometry(capacity: 0),
                                          exactAttention: !SpoolFile.hasMagic(path: path))
            let loaded = model
            let kv = kvCaches
            streamedLayers = try options.streaming.map { s in
                try Engine.attachStreaming(loaded, path: path, options: s, kv: kv, batchSize: options.batchSize)
            }
        } catch let e as CustomStringConvertible & Error {
            throw EngineError.load(path: path, reason: e.description)
        }
        pool = ThreadPool(threads: options.threads ?? ProcessInfo.processInfo.activeProcessorCount)
        loadSeconds = Date().timeIntervalSince(t0)
    }

    public var configuration: LlamaConfiguration { model.configuration }

    /// Sets a streaming layer source on a Llama model (GGUF or .spool), planned by `streamingFixedBytes`.
    static func attachStreaming(_ model: LanguageModel, path: String, options: StreamingOptions, kv: KVCacheFactory,
                                batchSize: Int) throws -> StreamedLayers {
        guard let llama = model as? LlamaModel else { throw EngineError.load(path: path, reason: "streaming needs a Llama model") }
        let fixed = streamingFixedBytes(llama, options: options, kv: kv, batchSize: batchSize)
        let source: StreamedLayers
        if let loader = llama.spoolLoader {
            source = try StreamedLayers.spool(path: path, loader: loader, fixedBytes: fixed, options: options)
        } else if let loader = llama.ggufLoader {
            source = try StreamedLayers.gguf(path: path, loader: loader, fixedBytes: fixed, options: options)
        } else {
            throw EngineError.load(path: path, reason: "streaming needs a model loaded from a GGUF or .spool file")
        }
        llama.layerSource = source
        return source
    }

    /// What stays in memory outside the blocks when streaming, as the run will really use it:
    /// - the embedding and LM head (used in place from the file's mapping; they are touched every
    ///   token, so their pages stay resident);
    /// - the KV cache as configured (f16 by default, or KIVI), at the planned context;
    /// - activation scratch for the largest forward pass: a prefill batch, at most the context.
    static func streamingFixedBytes(_ llama: LlamaModel, options: StreamingOptions, kv: KVCacheFactory,
                                    batchSize: Int) -> [(name: String, bytes: Int)] {
        let c = llama.configuration
        let context = streamingContext(options, c)
        var kvBytes = kv.makeCache(capacity: 0).bytesPerToken * Double(context)
        if kv.configuration.isQuantized {
            // KIVI keeps its residual window and sink tokens in f16 beside the packed store.
            let f16Tokens = kv.configuration.residual + kv.configuration.sink
            kvBytes += Double(f16Tokens * 2 * c.layers * c.kvDim * 2)
        }
        return [
            ("embedding and output", llama.weightBytes),
            ("kv cache (\(kv.configuration.bits)-bit, \(context) tokens)", Int(kvBytes.rounded(.up))),
            ("activations", LlamaModel.scratchBytes(c, tokens: min(batchSize, context), contextLength: context)),
        ]
    }

    /// The context the streaming plan holds a KV cache for; sessions default to it.
    static func streamingContext(_ options: StreamingOptions, _ c: LlamaConfiguration) -> Int {
        min(options.contextLength ?? 4096, c.contextLength)
    }

    /// A KV cache for `capacity` tokens, stored as `options.kv` says.
    public func makeCache(capacity: Int) -> KVCache { kvCaches.makeCache(capacity: capacity) }

    public func makeSession(contextLength: Int? = nil) -> Session {
        // Streaming budgeted the KV cache for its context: a session defaults to that one.
        let planned = options.streaming.map { Engine.streamingContext($0, configuration) }
        return Session(engine: self, contextLength: min(contextLength ?? planned ?? 4096, configuration.contextLength))
    }
}
