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
        case let .unsupportedFile(path): return "\(path): not a GGUF file (expected the magic bytes GGUF)"
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
    /// Makes caches as `options.kv` says; checked against the model when the engine loads.
    public let kvCaches: KVCacheFactory

    public init(path: String, options: EngineOptions = EngineOptions()) throws {
        let t0 = Date()
        self.path = path
        self.options = options
        let gguf: GGUFFile
        do {
            gguf = try GGUFFile(path: path)
            model = try ModelRegistry.load(gguf: gguf)
            tokenizer = try BPETokenizer(gguf: gguf)
            chatTemplate = try gguf.string("tokenizer.chat_template")
            kvCaches = try KVCacheFactory(configuration: options.kv, geometry: model.kvGeometry(capacity: 0))
        } catch let e as CustomStringConvertible & Error {
            throw EngineError.load(path: path, reason: e.description)
        }
        pool = ThreadPool(threads: options.threads ?? ProcessInfo.processInfo.activeProcessorCount)
        loadSeconds = Date().timeIntervalSince(t0)
    }

    public var configuration: LlamaConfiguration { model.configuration }

    /// A KV cache for `capacity` tokens, stored as `options.kv` says.
    public func makeCache(capacity: Int) -> KVCache { kvCaches.makeCache(capacity: capacity) }

    public func makeSession(contextLength: Int? = nil) -> Session {
        Session(engine: self, contextLength: min(contextLength ?? 4096, configuration.contextLength))
    }
}
