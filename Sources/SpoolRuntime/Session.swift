import Foundation
import SpoolKV
import SpoolModel
import SpoolTokenizer

public enum SessionError: Error, Equatable, CustomStringConvertible {
    case promptTooLong(tokens: Int, context: Int)
    case emptyPrompt

    public var description: String {
        switch self {
        case let .promptTooLong(tokens, context): return "the prompt has \(tokens) tokens but the context holds \(context); shorten it or raise --ctx-size"
        case .emptyPrompt: return "the prompt is empty"
        }
    }
}

public enum FinishReason: String, Sendable, Codable {
    case stop            // end-of-generation token or a stop string
    case length          // max tokens reached
    case contextFull     // the context filled up
    case cancelled       // the caller asked to stop
}

public struct GenerationStats: Sendable, Codable {
    public var promptTokens = 0
    /// Prompt tokens whose keys and values were already in the cache.
    public var reusedTokens = 0
    public var prefillSeconds = 0.0
    public var generatedTokens = 0
    public var decodeSeconds = 0.0

    public var prefillTokensPerSecond: Double { prefillSeconds > 0 ? Double(promptTokens - reusedTokens) / prefillSeconds : 0 }
    public var decodeTokensPerSecond: Double { decodeSeconds > 0 ? Double(generatedTokens) / decodeSeconds : 0 }
}

public struct GenerationResult: Sendable {
    public var text: String
    public var tokens: [Int32]
    public var finishReason: FinishReason
    public var stats: GenerationStats
}

/// One conversation: a KV cache and the tokens in it.
public final class Session {
    public let engine: Engine
    public let cache: KVCache
    /// The tokens whose keys and values are in the cache, in order.
    public private(set) var tokens: [Int32] = []

    init(engine: Engine, contextLength: Int) {
        self.engine = engine
        cache = engine.model.makeCache(capacity: contextLength)
    }

    public var contextLength: Int { cache.geometry.capacity }

    public func reset() {
        tokens.removeAll()
        cache.truncate(to: 0)
    }

    /// Makes the cache hold exactly `prompt`, reusing the longest prefix already there, and returns
    /// the logits after its last token.
    public func prefill(_ prompt: [Int32], stats: inout GenerationStats) throws -> ArraySlice<Float> {
        guard !prompt.isEmpty else { throw SessionError.emptyPrompt }
        guard prompt.count <= contextLength else { throw SessionError.promptTooLong(tokens: prompt.count, context: contextLength) }
        var common = zip(tokens, prompt).prefix { $0 == $1 }.count
        // At least one token must run to produce logits.
        common = min(common, prompt.count - 1)
        tokens.removeSubrange(common...)
        cache.truncate(to: common)
        stats.promptTokens = prompt.count
        stats.reusedTokens = common
        let t0 = Date()
        let logits = try evaluate(Array(prompt[common...]))
        stats.prefillSeconds = Date().timeIntervalSince(t0)
        return logits
    }

    /// Runs new tokens after those in the cache, in batches; returns the logits after the last one.
    public func evaluate(_ newTokens: [Int32]) throws -> ArraySlice<Float> {
        guard !newTokens.isEmpty else { throw SessionError.emptyPrompt }
        guard tokens.count + newTokens.count <= contextLength else {
            throw SessionError.promptTooLong(tokens: tokens.count + newTokens.count, context: contextLength)
        }
        var last: ArraySlice<Float> = []
        var i = 0
        while i < newTokens.count {
            let batch = Array(newTokens[i..<min(newTokens.count, i + engine.options.batchSize)])
            let out = try engine.model.forward(batch, start: tokens.count, cache: cache, logits: .last, pool: engine.pool)
            tokens += batch
            last = out.last
            i += batch.count
        }
        return last
    }

    /// Generates a continuation of `prompt`. `onText` receives each complete piece of text as it is
    /// produced and returns false to stop.
    public func generate(
        prompt: [Int32], maxTokens: Int, sampling: SamplingParameters, stop: [String] = [],
        onText: (String) -> Bool = { _ in true }
    ) throws -> GenerationResult {
        let generation = try Generation(session: self, prompt: prompt, maxTokens: maxTokens, sampling: sampling, stop: stop)
        while let piece = try generation.step() {
            if !piece.isEmpty, !onText(piece) {
                generation.cancel()
                break
            }
        }
        return generation.result
    }
}
