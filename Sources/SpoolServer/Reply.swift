import Foundation
import SpoolRuntime

/// Formats one request's responses in the OpenAI shapes: `chat.completion` / `chat.completion.chunk`
/// for chat, `text_completion` for plain completions.
struct Reply: Sendable {
    let chat: Bool
    let model: String
    let includeUsage: Bool
    let id: String
    let created: Int

    init(chat: Bool, model: String, includeUsage: Bool) {
        self.chat = chat
        self.model = model
        self.includeUsage = includeUsage
        id = (chat ? "chatcmpl-" : "cmpl-") + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(24)
        created = Int(Date().timeIntervalSince1970)
    }

    static func finishReason(_ r: FinishReason) -> String {
        switch r {
        case .stop, .cancelled: return "stop"
        case .length, .contextFull: return "length"
        }
    }

    func usage(_ prompt: Int, _ completion: Int) -> JSONValue {
        ["prompt_tokens": .int(prompt), "completion_tokens": .int(completion), "total_tokens": .int(prompt + completion)]
    }

    func complete(text: String, finish: FinishReason, promptTokens: Int, completionTokens: Int) -> JSONValue {
        let choice: JSONValue = chat
            ? ["index": 0, "message": ["role": "assistant", "content": .string(text)], "logprobs": nil, "finish_reason": .string(Self.finishReason(finish))]
            : ["index": 0, "text": .string(text), "logprobs": nil, "finish_reason": .string(Self.finishReason(finish))]
        return ["id": .string(id), "object": chat ? "chat.completion" : "text_completion", "created": .int(created), "model": .string(model),
                "choices": [choice], "usage": usage(promptTokens, completionTokens)]
    }

    /// A streamed piece; text nil with finish nil is the opening chunk (the role for chat).
    func chunk(text: String?, finish: FinishReason?) -> JSONValue {
        let reason: JSONValue = finish.map { .string(Self.finishReason($0)) } ?? .null
        let choice: JSONValue
        if chat {
            var delta: [String: JSONValue] = [:]
            if let text { delta["content"] = .string(text) } else if finish == nil { delta = ["role": "assistant", "content": ""] }
            choice = ["index": 0, "delta": .object(delta), "logprobs": nil, "finish_reason": reason]
        } else {
            choice = ["index": 0, "text": .string(text ?? ""), "logprobs": nil, "finish_reason": reason]
        }
        return ["id": .string(id), "object": chat ? "chat.completion.chunk" : "text_completion", "created": .int(created),
                "model": .string(model), "choices": [choice]]
    }

    /// The extra last chunk `stream_options.include_usage` asks for: usage and no choices.
    func usageChunk(promptTokens: Int, completionTokens: Int) -> JSONValue {
        ["id": .string(id), "object": chat ? "chat.completion.chunk" : "text_completion", "created": .int(created),
         "model": .string(model), "choices": [], "usage": usage(promptTokens, completionTokens)]
    }
}
