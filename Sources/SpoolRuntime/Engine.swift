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

    public init(threads: Int? = nil) { self.threads = threads }
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

    public init(path: String, options: EngineOptions = EngineOptions()) throws {
        let t0 = Date()
        self.path = path
        self.options = options
        do {
            // The first bytes decide the format: .spool (packed by spool-pack) or GGUF.
            if SpoolFile.hasMagic(path: path) {
                let spool = try SpoolFile(path: path)
                model = try ModelRegistry.load(spool: spool)
                tokenizer = try BPETokenizer(TokenizerVocabulary(spool: spool.header.tokenizer))
                chatTemplate = spool.header.chatTemplate
            } else {
                let gguf = try GGUFFile(path: path)
                model = try ModelRegistry.load(gguf: gguf)
                tokenizer = try BPETokenizer(gguf: gguf)
                chatTemplate = try gguf.string("tokenizer.chat_template")
            }
        } catch let e as CustomStringConvertible & Error {
            throw EngineError.load(path: path, reason: e.description)
        }
        pool = ThreadPool(threads: options.threads ?? ProcessInfo.processInfo.activeProcessorCount)
        loadSeconds = Date().timeIntervalSince(t0)
    }

    public var configuration: LlamaConfiguration { model.configuration }

    public func makeSession(contextLength: Int? = nil) -> Session {
        Session(engine: self, contextLength: min(contextLength ?? 4096, configuration.contextLength))
    }
}
