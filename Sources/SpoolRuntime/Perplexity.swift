import Foundation
import SpoolKV
import SpoolModel

public struct PerplexityResult: Sendable, Codable {
    public var perplexity: Double
    public var chunks: Int
    public var tokens: Int
    /// Standard error of the mean negative log-likelihood, propagated to perplexity as llama.cpp does.
    public var perplexityError: Double
    public var seconds: Double
    /// The KV cache used: `--kv-bits`, and its size for one chunk's context.
    public var kvBits = 32
    public var kvAllocatedBytes = 0
}

public enum PerplexityError: Error, CustomStringConvertible {
    case tooFewTokens(have: Int, need: Int)
    case badContext(Int)

    public var description: String {
        switch self {
        case let .tooFewTokens(have, need): return "the text has \(have) tokens; at least \(need) (2 x context) are needed"
        case let .badContext(c): return "context \(c) must be at least 8 and even"
        }
    }
}

/// llama.cpp's perplexity protocol: tokenize the whole text, cut it into chunks of `context`
/// tokens, run each chunk from an empty cache, and score the second half of each chunk (each token
/// predicted from at least context/2 tokens of history). With `add_bos`, a chunk's first token is
/// replaced by BOS.
public enum Perplexity {
    public static func run(
        engine: Engine, text: String, context: Int, maxChunks: Int?,
        progress: (Int, Int, Double) -> Void = { _, _, _ in }
    ) throws -> PerplexityResult {
        guard context >= 8, context % 2 == 0 else { throw PerplexityError.badContext(context) }
        let t0 = Date()
        let all = engine.tokenizer.encode(text, addSpecial: true, parseSpecial: false)
        guard all.count >= 2 * context else { throw PerplexityError.tooFewTokens(have: all.count, need: 2 * context) }
        let available = all.count / context
        let chunks = min(maxChunks ?? available, available)
        let cache = engine.makeCache(capacity: context)
        let first = context / 2
        var nll = 0.0, nll2 = 0.0
        var count = 0
        for c in 0..<chunks {
            var chunk = Array(all[(c * context)..<((c + 1) * context)])
            if engine.tokenizer.addsBOS, let bos = engine.tokenizer.bosID { chunk[0] = bos }
            cache.truncate(to: 0)
            let logits = try engine.model.forward(chunk, start: 0, cache: cache, logits: .from(first), pool: engine.pool)
            for j in first..<(context - 1) {
                let row = logits.row(j)
                let lp = logSoftmax(row, at: Int(chunk[j + 1]))
                nll -= lp
                nll2 += lp * lp
                count += 1
            }
            progress(c + 1, chunks, exp(nll / Double(count)))
        }
        let mean = nll / Double(count)
        let variance = max(0, nll2 / Double(count) - mean * mean)
        let stderr = (variance / Double(max(1, count - 1))).squareRoot()
        let ppl = exp(mean)
        return PerplexityResult(perplexity: ppl, chunks: chunks, tokens: count, perplexityError: ppl * stderr,
                                seconds: Date().timeIntervalSince(t0), kvBits: engine.options.kv.bits,
                                kvAllocatedBytes: cache.allocatedBytes)
    }

    static func logSoftmax(_ row: ArraySlice<Float>, at index: Int) -> Double {
        var m = -Float.infinity
        for v in row { m = max(m, v) }
        var sum = 0.0
        for v in row { sum += Foundation.exp(Double(v - m)) }
        return Double(row[row.startIndex + index] - m) - Foundation.log(sum)
    }
}
