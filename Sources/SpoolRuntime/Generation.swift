import Foundation
import SpoolTokenizer

/// One generation in progress, advanced a token at a time. `Session.generate` is a loop over it; the
/// server drives several of them (one per slot) from its single compute thread, one token each in
/// turn, which is how slots share the model without ever running two forward passes at once.
///
/// Text is handed out only once it cannot be the start of a stop string, so a caller that streams it
/// never shows a stop string's first half.
public final class Generation {
    public let session: Session
    public let maxTokens: Int
    /// Stop strings as UTF-8; matching is byte-wise, which is exact for valid UTF-8.
    let stops: [[UInt8]]
    var sampler: Sampler
    var decoder: StreamingDecoder
    var logits: ArraySlice<Float>
    public private(set) var generated: [Int32] = []
    /// The text so far, as UTF-8.
    var bytes: [UInt8] = []
    /// How many of `bytes` have been handed out by `step`.
    var emitted = 0
    public private(set) var finishReason: FinishReason?
    public private(set) var stats = GenerationStats()
    let decodeStart: Date

    /// Prefills `prompt` (reusing whatever prefix the session's cache already holds).
    public init(session: Session, prompt: [Int32], maxTokens: Int, sampling: SamplingParameters, stop: [String] = []) throws {
        try sampling.validate()
        self.session = session
        self.maxTokens = max(0, maxTokens)
        stops = stop.filter { !$0.isEmpty }.map { Array($0.utf8) }
        sampler = Sampler(sampling)
        decoder = StreamingDecoder(tokenizer: session.engine.tokenizer)
        logits = try session.prefill(prompt, stats: &stats)
        decodeStart = Date()
        if self.maxTokens == 0 { _ = finish(.length) }
    }

    public var isFinished: Bool { finishReason != nil }
    public var text: String { String(decoding: bytes, as: UTF8.self) }

    public var result: GenerationResult {
        GenerationResult(text: text, tokens: generated, finishReason: finishReason ?? .cancelled, stats: stats)
    }

    /// Samples one token and, unless generation ends with it, runs it through the model. Returns the
    /// text that became safe to show (possibly empty), or nil once the generation has finished.
    public func step() throws -> String? {
        guard finishReason == nil else { return nil }
        let tokenizer = session.engine.tokenizer
        let id = sampler.sample(logits, history: session.tokens)
        if tokenizer.isEndOfGeneration(id) {
            bytes += Array(decoder.flush().utf8)
            return finish(.stop)
        }
        generated.append(id)
        bytes += Array(decoder.append(id).utf8)
        if let cut = firstStop() {
            bytes.removeSubrange(cut...)
            return finish(.stop)
        }
        var ending: FinishReason?
        if generated.count >= maxTokens {
            ending = .length
        } else if session.tokens.count >= session.contextLength {
            ending = .contextFull
        }
        if let ending {
            bytes += Array(decoder.flush().utf8)
            if let cut = firstStop() {
                bytes.removeSubrange(cut...)
                return finish(.stop)
            }
            return finish(ending)
        }
        logits = try session.evaluate([id])
        let safe = bytes.count - heldBack()
        defer { emitted = max(emitted, safe) }
        return safe > emitted ? String(decoding: bytes[emitted..<safe], as: UTF8.self) : ""
    }

    /// Ends the generation early, e.g. because the client went away.
    public func cancel() {
        if finishReason == nil { _ = finish(.cancelled) }
    }

    /// Marks the generation finished and returns the text not handed out yet.
    func finish(_ reason: FinishReason) -> String {
        finishReason = reason
        stats.generatedTokens = generated.count
        stats.decodeSeconds = Date().timeIntervalSince(decodeStart)
        let rest = emitted < bytes.count ? String(decoding: bytes[emitted...], as: UTF8.self) : ""
        emitted = bytes.count
        return rest
    }

    /// Byte offset of the earliest stop string in the text, searching only where a new match can be.
    func firstStop() -> Int? {
        var best: Int?
        for s in stops {
            let from = max(0, emitted - s.count)
            guard bytes.count - from >= s.count else { continue }
            var i = from
            while i + s.count <= bytes.count {
                if bytes[i] == s[0], bytes[i..<(i + s.count)].elementsEqual(s) {
                    if best.map({ i < $0 }) ?? true { best = i }
                    break
                }
                i += 1
            }
        }
        return best
    }

    /// Length of the longest tail of the text that is a proper prefix of some stop string.
    func heldBack() -> Int {
        var hold = 0
        for s in stops {
            var k = min(s.count - 1, bytes.count)
            while k > hold {
                if bytes[(bytes.count - k)...].elementsEqual(s[..<k]) { hold = k; break }
                k -= 1
            }
        }
        return hold
    }
}
