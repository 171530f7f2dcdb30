import Foundation
import SpoolModel
import SpoolRuntime
import SpoolTestSupport
import XCTest

/// Session behaviour on the default model: context limits, cache reuse, perplexity protocol.
final class SessionTests: XCTestCase {
    nonisolated(unsafe) static let engine: Result<Engine?, Error> = Result {
        guard let path = try TestAssets.modelPath() else { return nil }
        return try Engine(path: path, options: EngineOptions(threads: 2))
    }

    func engine() throws -> Engine {
        guard let e = try Self.engine.get() else { throw XCTSkip("default model absent; run Tools/fetch-model.sh") }
        return e
    }

    func testPromptLongerThanContextIsRefused() throws {
        let e = try engine()
        let session = e.makeSession(contextLength: 8)
        let ids = e.tokenizer.encode("one two three four five six seven eight nine ten", addSpecial: true, parseSpecial: true)
        XCTAssertGreaterThan(ids.count, 8)
        XCTAssertThrowsError(try session.generate(prompt: ids, maxTokens: 4, sampling: .greedy)) { error in
            XCTAssertEqual(error as? SessionError, .promptTooLong(tokens: ids.count, context: 8))
        }
        XCTAssertThrowsError(try session.generate(prompt: [], maxTokens: 4, sampling: .greedy))
    }

    func testGenerationStopsWhenContextIsFull() throws {
        let e = try engine()
        let session = e.makeSession(contextLength: 12)
        let ids = e.tokenizer.encode("The history of the Roman Empire is", addSpecial: true, parseSpecial: true)
        let r = try session.generate(prompt: ids, maxTokens: 100, sampling: .greedy)
        XCTAssertEqual(r.finishReason, .contextFull)
        XCTAssertLessThanOrEqual(session.tokens.count, 12)
    }

    /// A second turn that extends the first reuses the cached prefix, and gives the same tokens as a
    /// fresh session would.
    func testPrefixReuseMatchesFreshRun() throws {
        let e = try engine()
        let first = e.tokenizer.encode("<|im_start|>user\nName a fruit.<|im_end|>\n<|im_start|>assistant\n", addSpecial: true, parseSpecial: true)
        let session = e.makeSession(contextLength: 256)
        let r1 = try session.generate(prompt: first, maxTokens: 8, sampling: .greedy)
        let second = first + r1.tokens + e.tokenizer.encode("<|im_end|>\n<|im_start|>user\nAnother one?<|im_end|>\n<|im_start|>assistant\n", addSpecial: false, parseSpecial: true)
        let r2 = try session.generate(prompt: second, maxTokens: 8, sampling: .greedy)
        XCTAssertGreaterThanOrEqual(r2.stats.reusedTokens, first.count + r1.tokens.count - 1)
        let fresh = try e.makeSession(contextLength: 256).generate(prompt: second, maxTokens: 8, sampling: .greedy)
        XCTAssertEqual(r2.tokens, fresh.tokens)
        XCTAssertEqual(fresh.stats.reusedTokens, 0)
    }

    func testStopStringEndsGenerationBeforeIt() throws {
        let e = try engine()
        let ids = e.tokenizer.encode("Count: 1, 2, 3,", addSpecial: true, parseSpecial: true)
        let free = try e.makeSession(contextLength: 128).generate(prompt: ids, maxTokens: 16, sampling: .greedy)
        guard let comma = free.text.dropFirst().firstIndex(of: ",") else { throw XCTSkip("no comma in \(free.text)") }
        let r = try e.makeSession(contextLength: 128).generate(prompt: ids, maxTokens: 16, sampling: .greedy, stop: [","])
        XCTAssertEqual(r.finishReason, .stop)
        XCTAssertEqual(r.text, String(free.text[..<comma]))
    }

    /// The perplexity tool's figure equals exp(mean NLL) computed here from full logits of the
    /// same chunks, scoring only each chunk's second half.
    func testPerplexityFollowsTheProtocol() throws {
        let e = try engine()
        let text = try String(contentsOfFile: TestAssets.sharedData("wikitext-2-raw/wiki.test.raw"), encoding: .utf8)
        let ctx = 64
        let result = try Perplexity.run(engine: e, text: String(text.prefix(20_000)), context: ctx, maxChunks: 2)
        XCTAssertEqual(result.chunks, 2)
        XCTAssertEqual(result.tokens, 2 * (ctx - 1 - ctx / 2))
        let all = e.tokenizer.encode(String(text.prefix(20_000)), addSpecial: true, parseSpecial: false)
        var nll = 0.0
        for c in 0..<2 {
            let chunk = Array(all[(c * ctx)..<((c + 1) * ctx)])
            let logits = try e.model.forward(chunk, start: 0, cache: e.makeCache(capacity: ctx), logits: .all, pool: e.pool)
            for j in (ctx / 2)..<(ctx - 1) {
                let row = logits.row(j).map(Double.init)
                let m = row.max()!
                let lse = m + log(row.reduce(0) { $0 + exp($1 - m) })
                nll += lse - row[Int(chunk[j + 1])]
            }
        }
        XCTAssertEqual(result.perplexity, exp(nll / Double(result.tokens)), accuracy: 1e-3 * result.perplexity)
        XCTAssertThrowsError(try Perplexity.run(engine: e, text: "too short", context: 64, maxChunks: 1))
    }
}
