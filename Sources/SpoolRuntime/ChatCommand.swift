import Foundation

/// The REPL's slash commands, parsed from a line of input.
public enum ChatCommand: Equatable, Sendable {
    case help
    case exit
    case reset
    case system(String?)
    case stats
    case set(key: String, value: String)
    case save(String)
    case load(String)

    public static let helpText = """
        /help              this list
        /reset             forget the conversation (keeps the system prompt)
        /system TEXT       set the system prompt (no TEXT: remove it); starts a new conversation
        /stats             speed of the last turn, context used, KV memory, bytes read
        /set KEY VALUE     sampling: temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed, max_tokens
        /save FILE         write the conversation as JSON
        /load FILE         read a conversation written by /save
        /exit              quit (Ctrl-D also quits; Ctrl-C stops a reply)
        A line ending in \\ continues on the next line.
        """

    /// nil when the line is not a command (it does not start with '/').
    public static func parse(_ line: String) throws(ChatCommandError) -> ChatCommand? {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix("/") else { return nil }
        let parts = trimmed.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        let name = String(parts[0])
        let arg = parts.count > 1 ? String(parts[1]).trimmingCharacters(in: .whitespaces) : ""
        switch name {
        case "/help", "/?": return .help
        case "/exit", "/quit", "/bye": return .exit
        case "/reset", "/clear": return .reset
        case "/system": return .system(arg.isEmpty ? nil : arg)
        case "/stats": return .stats
        case "/set":
            let kv = arg.split(separator: " ", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { throw .usage("/set KEY VALUE, e.g. /set temperature 0.7") }
            return .set(key: kv[0], value: kv[1].trimmingCharacters(in: .whitespaces))
        case "/save":
            guard !arg.isEmpty else { throw .usage("/save FILE") }
            return .save(arg)
        case "/load":
            guard !arg.isEmpty else { throw .usage("/load FILE") }
            return .load(arg)
        default: throw .unknown(name)
        }
    }
}

public enum ChatCommandError: Error, Equatable, CustomStringConvertible {
    case unknown(String)
    case usage(String)
    case badValue(key: String, value: String, why: String)

    public var description: String {
        switch self {
        case let .unknown(c): return "unknown command \(c); /help lists them"
        case let .usage(u): return "usage: \(u)"
        case let .badValue(key, value, why): return "cannot set \(key) to '\(value)': \(why)"
        }
    }
}

extension ChatSession {
    /// Applies `/set KEY VALUE`; the change is checked before it is kept.
    public func set(key: String, value: String) throws(ChatCommandError) {
        var s = sampling
        func number<T: LosslessStringConvertible>(_: T.Type) throws(ChatCommandError) -> T {
            guard let v = T(value) else { throw .badValue(key: key, value: value, why: "not a number") }
            return v
        }
        switch key.replacingOccurrences(of: "-", with: "_") {
        case "temperature", "temp": s.temperature = try number(Float.self)
        case "top_k": s.topK = try number(Int.self)
        case "top_p": s.topP = try number(Float.self)
        case "min_p": s.minP = try number(Float.self)
        case "repeat_penalty": s.repeatPenalty = try number(Float.self)
        case "repeat_last_n": s.repeatLastN = try number(Int.self)
        case "seed": s.seed = try number(UInt64.self)
        case "max_tokens", "n_predict":
            let n = try number(Int.self)
            guard n >= 1 else { throw .badValue(key: key, value: value, why: "must be at least 1") }
            maxReplyTokens = n
            return
        default:
            throw .badValue(key: key, value: value, why: "unknown key (temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed, max_tokens)")
        }
        do {
            try s.validate()
        } catch {
            throw .badValue(key: key, value: value, why: error.description)
        }
        sampling = s
    }
}
