import Foundation
import SpoolModel
import SpoolRuntime
import SpoolTestSupport
import XCTest

/// The default model against llama.cpp's own outputs (../shared/golden). Spool computes what
/// llama.cpp's CPU backend computes, operation for operation (SpoolGGMLMath; checked tensor by tensor
/// with `spool dump-tensors` against llama-eval-callback, see docs/EXACTNESS.md), so the logits are
/// llama.cpp's up to the decimals the golden file keeps, and greedy texts are equal token for token.
final class GoldenLogitsTests: XCTestCase {
    /// The golden file prints logits with 6-7 significant digits (about 1e-5 at |logit| ~ 20); the
    /// arithmetic itself is identical. Anything but exact arithmetic gives differences of 0.1-1.
    static let MAX_LOGIT_DIFF: Float = 1e-3

    struct Golden: Decodable {
        struct Position: Decodable { var top_ids: [Int32]; var top_logits: [Float] }
        struct Case: Decodable { var prompt: String; var ids: [Int32]; var positions: [Position]; var greedy_ids: [Int32]; var greedy_text: String }
        var cases: [Case]
    }

    nonisolated(unsafe) static let engine: Result<Engine?, Error> = Result {
        guard let path = try TestAssets.modelPath() else { return nil }
        return try Engine(path: path, options: EngineOptions(threads: 2))
    }

    func load() throws -> (Engine, Golden) {
        guard let engine = try Self.engine.get() else { throw XCTSkip("default model absent; run Tools/fetch-model.sh") }
        let golden = try JSONDecoder().decode(Golden.self, from: TestAssets.golden("logits-smollm2-135m-q4_1.json"))
        return (engine, golden)
    }

    func testPromptTokensMatch() throws {
        let (engine, golden) = try load()
        for c in golden.cases {
            XCTAssertEqual(engine.tokenizer.encode(c.prompt, addSpecial: true, parseSpecial: true), c.ids, "prompt \(c.prompt.debugDescription)")
        }
    }

    func testTopOneAndLogitsMatchAtEveryPosition() throws {
        let (engine, golden) = try load()
        var worst: Float = 0
        var mismatches: [String] = []
        for c in golden.cases {
            let cache = engine.makeCache(capacity: c.ids.count)
            let logits = try engine.model.forward(c.ids, start: 0, cache: cache, logits: .all, pool: engine.pool)
            for (i, pos) in c.positions.enumerated() {
                let row = logits.row(i)
                let top = Sampler.argmax(row)
                if top != pos.top_ids[0] {
                    mismatches.append("prompt \(c.prompt.prefix(30).debugDescription) position \(i): top-1 \(top), llama.cpp \(pos.top_ids[0])")
                }
                for (id, expected) in zip(pos.top_ids, pos.top_logits) {
                    worst = max(worst, abs(row[row.startIndex + Int(id)] - expected))
                }
            }
        }
        print("largest logit difference against the golden top-10: \(worst)")
        XCTAssertEqual(mismatches, [])
        XCTAssertLessThan(worst, Self.MAX_LOGIT_DIFF)
    }

    /// Teacher forcing along llama.cpp's greedy continuation, one token per forward pass as
    /// llama.cpp decoded it (a batch of one is multiplied in another order than a longer batch, in
    /// llama.cpp as here): Spool's argmax must be llama.cpp's next token at all 5 x 48 decisions.
    func testGreedyDecisionsAlongLlamaCppContinuation() throws {
        let (engine, golden) = try load()
        var agree = 0, total = 0
        var bad: [String] = []
        for c in golden.cases {
            let cache = engine.makeCache(capacity: c.ids.count + c.greedy_ids.count)
            var logits = try engine.model.forward(c.ids, start: 0, cache: cache, logits: .last, pool: engine.pool)
            var position = c.ids.count
            for (k, expected) in c.greedy_ids.enumerated() {
                let ours = Sampler.argmax(logits.last)
                total += 1
                if ours == expected { agree += 1 } else { bad.append("\(c.prompt.prefix(20).debugDescription) decision \(k): Spool \(ours), llama.cpp \(expected)") }
                guard k + 1 < c.greedy_ids.count else { break }
                logits = try engine.model.forward([expected], start: position, cache: cache, logits: .last, pool: engine.pool)
                position += 1
            }
        }
        print("greedy decisions equal to llama.cpp's along its continuation: \(agree)/\(total)")
        XCTAssertEqual(bad, [])
    }

    /// Free-running greedy decoding (the engine's session, as `spool generate --temperature 0`
    /// runs it) against llama.cpp's 48-token texts: every text equal, token for token.
    func testGreedyContinuations() throws {
        let (engine, golden) = try load()
        var exact = 0
        for c in golden.cases {
            let session = engine.makeSession(contextLength: 256)
            let result = try session.generate(prompt: c.ids, maxTokens: c.greedy_ids.count, sampling: .greedy)
            if result.tokens == c.greedy_ids { exact += 1 } else {
                let at = zip(result.tokens, c.greedy_ids).prefix { $0 == $1 }.count
                XCTFail("greedy text of \(c.prompt.prefix(30).debugDescription) diverges at token \(at)")
            }
        }
        print("greedy continuations equal to llama.cpp: \(exact)/\(golden.cases.count)")
    }
}
