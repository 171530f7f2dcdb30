import Foundation
import SpoolRuntime
import SpoolTestSupport
import SpoolTokenizer
import XCTest

/// Multi-turn chat on the default model: KV reuse across turns, dropping old turns when the context
/// is full, saving and loading, slash commands.
final class ChatSessionTests: XCTestCase {
    nonisolated(unsafe) static let engine: Result<Engine?, Error> = Result {
        guard let path = try TestAssets.modelPath() else { return nil }
        return try Engine(path: path, options: EngineOptions(threads: 2))
    }

    func chat(context: Int, maxReply: Int, system: String? = nil) throws -> ChatSession {
        guard let e = try Self.engine.get() else { throw XCTSkip("default model absent; run Tools/fetch-model.sh") }
        let template = try ChatTemplate.resolve(name: nil, metadata: e.chatTemplate).template
        return ChatSession(engine: e, session: e.makeSession(contextLength: context), template: template, system: system,
                           sampling: .greedy, maxReplyTokens: maxReply)
    }

    func testSecondTurnPrefillsOnlyItsNewTokens() throws {
        let c = try chat(context: 512, maxReply: 8)
        let r1 = try c.send("Name a fruit.")
        XCTAssertEqual(r1.stats.reusedTokens, 0)
        let cached = c.session.tokens.count
        XCTAssertGreaterThanOrEqual(cached, r1.stats.promptTokens + r1.stats.generatedTokens - 1)
        let r2 = try c.send("Another one?")
        XCTAssertEqual(r2.stats.reusedTokens, cached, "the whole first turn comes from the cache")
        XCTAssertLessThan(r2.stats.promptTokens - r2.stats.reusedTokens, 20, "only the new message (and the turn markers) is prefilled")
        XCTAssertEqual(c.conversation.turns.map(\.role), ["user", "assistant", "user", "assistant"])
        XCTAssertEqual(c.conversation.turns[1].content, r1.reply)
    }

    func testContextFullDropsOldestTurnsButKeepsSystem() throws {
        let c = try chat(context: 128, maxReply: 12, system: "Answer briefly.")
        var dropped = 0
        for i in 0..<6 {
            let r = try c.send("Question \(i): tell me one short fact about the number \(i), the sea and the sky, please.")
            dropped += r.droppedMessages
            XCTAssertLessThanOrEqual(c.session.tokens.count, 128)
        }
        XCTAssertGreaterThan(dropped, 0, "six turns cannot fit in 128 tokens")
        XCTAssertEqual(c.conversation.system, "Answer briefly.")
        XCTAssertEqual(c.conversation.turns.first?.role, "user")
        XCTAssertTrue(c.conversation.turns.last?.role == "assistant")
    }

    func testMessageLongerThanContextIsRefusedAndForgotten() throws {
        let c = try chat(context: 64, maxReply: 8)
        let long = String(repeating: "many words here ", count: 40)
        XCTAssertThrowsError(try c.send(long)) { error in
            guard case .messageTooLong(_, 64)? = error as? ChatError else { return XCTFail("\(error)") }
        }
        XCTAssertTrue(c.conversation.turns.isEmpty)
    }

    func testSaveAndLoad() throws {
        let conv = Conversation(system: "S", turns: [.init(role: "user", content: "hi"), .init(role: "assistant", content: "hello")])
        XCTAssertEqual(try Conversation(json: try conv.json()), conv)
        XCTAssertThrowsError(try Conversation(json: Data(#"{"turns":[{"role":"robot","content":"x"}]}"#.utf8)))
        XCTAssertThrowsError(try Conversation(json: Data("not json".utf8)))
    }

    func testSetChecksValues() throws {
        let c = try chat(context: 64, maxReply: 8)
        try c.set(key: "temperature", value: "0.3")
        XCTAssertEqual(c.sampling.temperature, 0.3)
        try c.set(key: "max_tokens", value: "5")
        XCTAssertEqual(c.maxReplyTokens, 5)
        XCTAssertThrowsError(try c.set(key: "top_p", value: "2"))
        XCTAssertThrowsError(try c.set(key: "top_k", value: "many"))
        XCTAssertThrowsError(try c.set(key: "warmth", value: "1"))
        XCTAssertEqual(c.sampling.topP, SamplingParameters.greedy.topP)
    }

    func testCommandParsing() throws {
        XCTAssertNil(try ChatCommand.parse("hello /there"))
        XCTAssertEqual(try ChatCommand.parse(" /set temperature 0.7"), .set(key: "temperature", value: "0.7"))
        XCTAssertEqual(try ChatCommand.parse("/system Be kind."), .system("Be kind."))
        XCTAssertEqual(try ChatCommand.parse("/system"), .system(nil))
        XCTAssertEqual(try ChatCommand.parse("/save a.json"), .save("a.json"))
        XCTAssertThrowsError(try ChatCommand.parse("/save"))
        XCTAssertThrowsError(try ChatCommand.parse("/frobnicate"))
    }

    /// Streamed pieces never include the start of a stop string that later matches: what was shown
    /// is exactly the final text.
    func testStreamedTextNeverShowsPartOfAStopString() throws {
        guard let e = try Self.engine.get() else { throw XCTSkip("default model absent") }
        let ids = e.tokenizer.encode("Count: 1, 2, 3, 4,", addSpecial: true, parseSpecial: true)
        let free = try e.makeSession(contextLength: 128).generate(prompt: ids, maxTokens: 12, sampling: .greedy)
        guard free.text.contains(" 6") else { throw XCTSkip("the model did not count: \(free.text)") }
        var shown = ""
        let r = try e.makeSession(contextLength: 128).generate(prompt: ids, maxTokens: 12, sampling: .greedy, stop: [", 6"]) { piece in
            shown += piece
            return true
        }
        XCTAssertEqual(r.finishReason, .stop)
        XCTAssertEqual(shown, r.text)
        XCTAssertFalse(shown.contains(", 6"))
        XCTAssertTrue(free.text.hasPrefix(r.text))
    }
}
