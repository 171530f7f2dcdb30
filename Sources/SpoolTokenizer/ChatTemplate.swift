import Foundation

// Chat templates. GGUF files carry a Jinja template in `tokenizer.chat_template`; rather than embed
// a Jinja interpreter, Spool recognises the template families in wide use by their marker tokens
// and renders them natively. An unknown template falls back to ChatML with a warning the caller
// can show.

public struct ChatMessage: Codable, Sendable, Equatable {
    public var role: String
    public var content: String
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

public enum ChatTemplateError: Error, Equatable, CustomStringConvertible {
    case unknownTemplateName(String)
    case unknownRole(String)

    public var description: String {
        switch self {
        case let .unknownTemplateName(n): return "unknown chat template '\(n)' (known: \(ChatTemplate.Family.allCases.map(\.rawValue).joined(separator: ", ")))"
        case let .unknownRole(r): return "unknown role '\(r)' (expected system, user or assistant)"
        }
    }
}

public struct ChatTemplate: Sendable, Equatable {
    public enum Family: String, CaseIterable, Sendable {
        case chatml, llama3, gemma, mistral
    }

    public var family: Family
    /// A system prompt the model's own template inserts when the conversation has none.
    public var defaultSystemPrompt: String?

    public init(family: Family, defaultSystemPrompt: String? = nil) {
        self.family = family
        self.defaultSystemPrompt = defaultSystemPrompt
    }

    public init(named name: String) throws(ChatTemplateError) {
        guard let f = Family(rawValue: name.lowercased()) else { throw .unknownTemplateName(name) }
        self.init(family: f)
    }

    /// Recognises the family of a Jinja template by its markers; nil when none matches.
    public static func detect(jinja: String) -> ChatTemplate? {
        if jinja.contains("<|im_start|>") {
            return ChatTemplate(family: .chatml, defaultSystemPrompt: defaultSystem(in: jinja))
        }
        if jinja.contains("<|start_header_id|>") { return ChatTemplate(family: .llama3) }
        if jinja.contains("<start_of_turn>") { return ChatTemplate(family: .gemma) }
        if jinja.contains("[INST]") { return ChatTemplate(family: .mistral) }
        return nil
    }

    /// The template for a model: `name` when given (e.g. from `--chat-template`), else the family
    /// detected in the model's `tokenizer.chat_template`, else ChatML. The warning says when the
    /// metadata was missing or not recognised, so the caller can show it.
    public static func resolve(name: String?, metadata: String?) throws(ChatTemplateError) -> (template: ChatTemplate, warning: String?) {
        let detected = metadata.flatMap { detect(jinja: $0) }
        if let name {
            var t = try ChatTemplate(named: name)
            if detected?.family == t.family { t.defaultSystemPrompt = detected?.defaultSystemPrompt }
            return (t, nil)
        }
        if let detected { return (detected, nil) }
        let why = metadata == nil ? "the model has no tokenizer.chat_template" : "the model's chat template is not one Spool recognises"
        return (ChatTemplate(family: .chatml), "\(why); using chatml (choose another with --chat-template \(Family.allCases.map(\.rawValue).joined(separator: "|")))")
    }

    /// A ChatML template that writes a literal system turn ('<|im_start|>system\n...<|im_end|>')
    /// for conversations without one carries that text as its default system prompt.
    static func defaultSystem(in jinja: String) -> String? {
        let marker = "<|im_start|>system\\n"
        guard let start = jinja.range(of: marker), let end = jinja.range(of: "<|im_end|>", range: start.upperBound..<jinja.endIndex) else {
            return nil
        }
        let text = jinja[start.upperBound..<end.lowerBound]
        // Only a literal: a template that builds the system turn from variables has none.
        guard !text.contains("{"), !text.contains("'"), !text.isEmpty else { return nil }
        return String(text).replacingOccurrences(of: "\\n", with: "\n")
    }

    /// Strings that end an assistant turn in this family (besides the tokenizer's EOG tokens).
    public var stopStrings: [String] {
        switch family {
        case .chatml: return ["<|im_end|>"]
        case .llama3: return ["<|eot_id|>"]
        case .gemma: return ["<end_of_turn>"]
        case .mistral: return ["</s>"]
        }
    }

    /// Renders the conversation, ending with the assistant's turn opener when `addGenerationPrompt`.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) throws(ChatTemplateError) -> String {
        for m in messages where !["system", "user", "assistant"].contains(m.role) { throw .unknownRole(m.role) }
        var msgs = messages
        if msgs.first?.role != "system", let sys = defaultSystemPrompt {
            msgs.insert(ChatMessage(role: "system", content: sys), at: 0)
        }
        var out = ""
        switch family {
        case .chatml:
            for m in msgs { out += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n" }
            if addGenerationPrompt { out += "<|im_start|>assistant\n" }
        case .llama3:
            for m in msgs { out += "<|start_header_id|>\(m.role)<|end_header_id|>\n\n\(m.content)<|eot_id|>" }
            if addGenerationPrompt { out += "<|start_header_id|>assistant<|end_header_id|>\n\n" }
        case .gemma, .mistral:
            // Neither family has a system role: the system text opens the first user turn.
            var system: String?
            if msgs.first?.role == "system" { system = msgs.removeFirst().content }
            for m in msgs {
                var content = m.content
                if m.role == "user", let s = system {
                    content = s + "\n\n" + content
                    system = nil
                }
                if family == .gemma {
                    out += "<start_of_turn>\(m.role == "assistant" ? "model" : "user")\n\(content)<end_of_turn>\n"
                } else {
                    out += m.role == "assistant" ? " \(content)</s>" : "[INST] \(content) [/INST]"
                }
            }
            if addGenerationPrompt && family == .gemma { out += "<start_of_turn>model\n" }
        }
        return out
    }
}
