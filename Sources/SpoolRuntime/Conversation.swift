import Foundation
import SpoolTokenizer

/// A chat as the user sees it: an optional system prompt and the turns after it. This is what
/// `/save` writes and `/load` reads.
public struct Conversation: Codable, Sendable, Equatable {
    public var system: String?
    /// User and assistant messages, oldest first.
    public var turns: [ChatMessage]

    public init(system: String? = nil, turns: [ChatMessage] = []) {
        self.system = system
        self.turns = turns
    }

    public var messages: [ChatMessage] {
        (system.map { [ChatMessage(role: "system", content: $0)] } ?? []) + turns
    }

    public func validate() throws(ChatError) {
        for m in turns where m.role != "user" && m.role != "assistant" {
            throw .badConversation("turn with role '\(m.role)' (expected user or assistant)")
        }
    }

    public func json() throws -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try enc.encode(self)
    }

    public init(json data: Data) throws(ChatError) {
        do {
            self = try JSONDecoder().decode(Conversation.self, from: data)
        } catch {
            throw .badConversation("not a saved conversation: \(error)")
        }
        try validate()
    }
}

public enum ChatError: Error, Equatable, CustomStringConvertible {
    /// The newest message alone (with the system prompt and room for a reply) does not fit.
    case messageTooLong(tokens: Int, context: Int)
    case badConversation(String)

    public var description: String {
        switch self {
        case let .messageTooLong(tokens, context):
            return "the message needs \(tokens) tokens (with the system prompt and room for a reply) but the context holds \(context); shorten it or raise --ctx-size"
        case let .badConversation(why): return why
        }
    }
}

public struct ChatTurnResult: Sendable {
    public var reply: String
    public var finishReason: FinishReason
    public var stats: GenerationStats
    /// Messages dropped from the start of the conversation (after the system prompt) to make room.
    public var droppedMessages: Int
}

/// A multi-turn chat over one session. Each turn renders the whole conversation with the chat
/// template but feeds the model only what is new: the tokens of everything up to the end of the last
/// reply are kept exactly as generated, so the session's prefix match covers the whole history and
/// prefill runs over the new user message alone. When the context cannot hold the next turn, the
/// oldest messages are dropped (never the system prompt) and the caller is told how many.
public final class ChatSession {
    public let engine: Engine
    public let session: Session
    public var template: ChatTemplate
    public private(set) var conversation: Conversation
    public var sampling: SamplingParameters
    /// The most tokens one reply may have.
    public var maxReplyTokens: Int
    /// Rendered text of the conversation up to the end of the last reply, and its tokens as the model
    /// saw and produced them.
    var cachedText = ""
    var cachedTokens: [Int32] = []
    public private(set) var lastStats: GenerationStats?

    public init(engine: Engine, session: Session, template: ChatTemplate, system: String? = nil,
                sampling: SamplingParameters = SamplingParameters(), maxReplyTokens: Int = 1024) {
        self.engine = engine
        self.session = session
        self.template = template
        self.conversation = Conversation(system: system)
        self.sampling = sampling
        self.maxReplyTokens = maxReplyTokens
    }

    /// Forgets the turns and keeps the system prompt (whose cached tokens the next turn reuses).
    public func reset() {
        conversation.turns.removeAll()
        forgetCachedText()
    }

    public func setSystem(_ text: String?) {
        conversation.system = text
        forgetCachedText()
    }

    public func load(_ c: Conversation) throws(ChatError) {
        try c.validate()
        conversation = c
        forgetCachedText()
    }

    func forgetCachedText() {
        cachedText = ""
        cachedTokens = []
    }

    /// Room kept free for the reply when deciding whether the history must shrink.
    public var replyReserve: Int { max(1, min(maxReplyTokens, session.contextLength / 4)) }

    /// Adds a user message, generates the reply (streamed through `onText`, which returns false to
    /// stop it) and adds the reply, even a cut-short one, to the conversation. `onDropped` hears,
    /// before the reply starts, how many old messages had to go to make room.
    public func send(_ text: String, onDropped: (Int) -> Void = { _ in }, onText: (String) -> Bool = { _ in true }) throws -> ChatTurnResult {
        conversation.turns.append(ChatMessage(role: "user", content: text))
        var dropped = 0
        var (promptText, prompt) = try renderPrompt()
        while prompt.count + replyReserve > session.contextLength {
            // Drop the oldest message; a user message goes together with the reply that followed it.
            guard conversation.turns.count > 1 else {
                conversation.turns.removeLast()
                throw ChatError.messageTooLong(tokens: prompt.count + replyReserve, context: session.contextLength)
            }
            conversation.turns.removeFirst()
            dropped += 1
            if conversation.turns.count > 1, conversation.turns.first?.role == "assistant" {
                conversation.turns.removeFirst()
                dropped += 1
            }
            forgetCachedText()
            (promptText, prompt) = try renderPrompt()
        }
        if dropped > 0 { onDropped(dropped) }
        let result: GenerationResult
        do {
            result = try session.generate(prompt: prompt, maxTokens: maxReplyTokens, sampling: sampling,
                                          stop: template.stopStrings, onText: onText)
        } catch {
            conversation.turns.removeLast()
            throw error
        }
        conversation.turns.append(ChatMessage(role: "assistant", content: result.text))
        cachedText = promptText + result.text
        // The generated tokens stand for the reply only when they decode to it exactly (a stop string
        // cut inside a token breaks that); otherwise re-tokenize, and prefix reuse does the rest.
        if engine.tokenizer.decode(result.tokens) == result.text {
            cachedTokens = prompt + result.tokens
        } else {
            cachedTokens = engine.tokenizer.encode(cachedText, addSpecial: true, parseSpecial: true)
        }
        lastStats = result.stats
        return ChatTurnResult(reply: result.text, finishReason: result.finishReason, stats: result.stats, droppedMessages: dropped)
    }

    /// The conversation rendered for the next reply, and its tokens: the cached tokens of the history
    /// plus the new text, when the history is unchanged.
    func renderPrompt() throws -> (String, [Int32]) {
        let text = try template.render(conversation.messages, addGenerationPrompt: true)
        if !cachedText.isEmpty, text.hasPrefix(cachedText) {
            let rest = String(text.dropFirst(cachedText.count))
            return (text, cachedTokens + engine.tokenizer.encode(rest, addSpecial: false, parseSpecial: true))
        }
        return (text, engine.tokenizer.encode(text, addSpecial: true, parseSpecial: true))
    }
}
