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
    public let streamedLayers: StreamedGGUFLayers?
    /// Makes caches as `options.kv` says; checked against the model when the engine loads.
    public let kvCaches: KVCacheFactory

    public init(path: String, options: EngineOptions = EngineOptions()) throws {
        let t0 = Date()
        self.path = path
        self.options = options
        do {
            // The first bytes decide the format: .spool (packed by spool-pack) or GGUF.
            if SpoolFile.hasMagic(path: path) {
                guard options.streaming == nil else {
                    throw EngineError.load(path: path, reason: "streaming (--mem-budget, --profile) reads GGUF files so far; .spool streaming is not implemented yet")
                }
                let spool = try SpoolFile(path: path)
                model = try ModelRegistry.load(spool: spool)
                tokenizer = try BPETokenizer(TokenizerVocabulary(spool: spool.header.tokenizer))
                chatTemplate = spool.header.chatTemplate
            } else {
                let gguf = try GGUFFile(path: path)
                model = try ModelRegistry.load(gguf: gguf, residentLayers: options.streaming == nil)
                tokenizer = try BPETokenizer(gguf: gguf)
                chatTemplate = try gguf.string("tokenizer.chat_template")
            }
            kvCaches = try KVCacheFactory(configuration: options.kv, geometry: model.kvGeometry(capacity: 0))
            let loaded = model
            streamedLayers = try options.streaming.map { s in try Engine.attachStreaming(loaded, path: path, options: s) }
        } catch let e as CustomStringConvertible & Error {
            throw EngineError.load(path: path, reason: e.description)
        }
        pool = ThreadPool(threads: options.threads ?? ProcessInfo.processInfo.activeProcessorCount)
        loadSeconds = Date().timeIntervalSince(t0)
    }

    public var configuration: LlamaConfiguration { model.configuration }

    /// Sets a streaming layer source on a GGUF Llama model. What stays outside the blocks: the
    /// embedding and output weights, an f32 KV cache at the session context, and activation scratch
    /// for a 512-token batch.
    static func attachStreaming(_ model: LanguageModel, path: String, options: StreamingOptions) throws -> StreamedGGUFLayers {
        guard let llama = model as? LlamaModel, let loader = llama.ggufLoader else {
            throw EngineError.load(path: path, reason: "streaming needs a GGUF Llama model")
        }
        let c = llama.configuration
        let context = min(options.contextLength ?? 4096, c.contextLength)
        let fixed: [(name: String, bytes: Int)] = [
            ("embedding and output", llama.weightBytes),
            ("kv cache", 2 * c.layers * c.kvDim * context * 4),
            ("activations", 512 * (4 * c.dim + 2 * c.qDim + 2 * c.kvDim + 2 * c.ffnDim) * 4),
        ]
        let source = try StreamedGGUFLayers(path: path, loader: loader, fixedBytes: fixed, options: options)
        llama.layerSource = source
        return source
    }

    /// A KV cache for `capacity` tokens, stored as `options.kv` says.
    public func makeCache(capacity: Int) -> KVCache { kvCaches.makeCache(capacity: capacity) }

    public func makeSession(contextLength: Int? = nil) -> Session {
        Session(engine: self, contextLength: min(contextLength ?? 4096, configuration.contextLength))
    }
}
