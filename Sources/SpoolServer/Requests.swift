import Foundation
import SpoolRuntime
import SpoolTokenizer

/// A completion request after every field has been checked.
public struct CompletionRequest: Sendable, Equatable {
    public enum Input: Sendable, Equatable {
        case chat([ChatMessage])
        case text(String)
    }

    public var input: Input
    /// nil: as many as the context has room for.
    public var maxTokens: Int?
    public var sampling: SamplingParameters
    public var stop: [String]
    public var stream: Bool
    public var includeUsage: Bool

    /// The most completions one request may ask for (`n`).
    public static let maxChoices = 1
    /// OpenAI's own limit on stop strings.
    public static let maxStops = 4

    /// Parses a `/v1/chat/completions` (`chat: true`) or `/v1/completions` body.
    public init(json body: Data, chat: Bool) throws(APIError) {
        let root: JSONValue
        do {
            root = try JSONDecoder().decode(JSONValue.self, from: body)
        } catch {
            throw .invalid(nil, "the body is not valid JSON: \(Self.describe(error))", code: "invalid_json")
        }
        guard case let .object(fields) = root else {
            throw .invalid(nil, "the body must be a JSON object, not \(root.typeName)", code: "invalid_json")
        }
        let f = Fields(fields: fields)
        input = chat ? .chat(try Self.messages(f)) : .text(try Self.prompt(f))

        if let n = try f.int("n") {
            guard n >= 1 else { throw .invalid("n", "'n' must be at least 1, got \(n)") }
            guard n <= Self.maxChoices else {
                throw .invalid("n", "'n' is \(n) but this server returns at most \(Self.maxChoices) choice per request; send separate requests instead")
            }
        }
        var max = try f.int("max_completion_tokens")
        if max == nil { max = try f.int("max_tokens") }
        if let max, max < 1 {
            throw .invalid(f.has("max_completion_tokens") ? "max_completion_tokens" : "max_tokens", "'max_tokens' must be at least 1, got \(max)")
        }
        maxTokens = max

        var s = SamplingParameters()
        // OpenAI's defaults: temperature 1, no nucleus cut. top_k and min_p stay at llama.cpp's
        // defaults unless the request sets them (llama-server's extensions).
        s.temperature = 1
        s.topP = 1
        if let t = try f.double("temperature") {
            guard t >= 0, t <= 2 else { throw .invalid("temperature", "'temperature' must be between 0 and 2, got \(t)") }
            s.temperature = Float(t)
        }
        if let p = try f.double("top_p") {
            guard p > 0, p <= 1 else { throw .invalid("top_p", "'top_p' must be in (0, 1], got \(p)") }
            s.topP = Float(p)
        }
        if let k = try f.int("top_k") {
            guard k >= 0 else { throw .invalid("top_k", "'top_k' must be >= 0, got \(k)") }
            s.topK = k
        }
        if let m = try f.double("min_p") {
            guard m >= 0, m <= 1 else { throw .invalid("min_p", "'min_p' must be in [0, 1], got \(m)") }
            s.minP = Float(m)
        }
        if let r = try f.double("repeat_penalty") {
            guard r > 0, r.isFinite else { throw .invalid("repeat_penalty", "'repeat_penalty' must be > 0, got \(r)") }
            s.repeatPenalty = Float(r)
        }
        if let seed = try f.int("seed") { s.seed = UInt64(bitPattern: Int64(seed)) }
        sampling = s

        stop = try Self.stops(f)
        stream = try f.bool("stream") ?? false
        includeUsage = false
        if let opts = f.fields["stream_options"], opts != .null {
            guard case let .object(o) = opts else { throw .wrongType("stream_options", expected: "an object", got: opts) }
            includeUsage = try Fields(fields: o, prefix: "stream_options.").bool("include_usage") ?? false
        }
    }

    static func messages(_ f: Fields) throws(APIError) -> [ChatMessage] {
        guard let raw = f.fields["messages"] else { throw .invalid("messages", "'messages' is required", code: "missing_field") }
        guard case let .array(items) = raw else { throw .wrongType("messages", expected: "an array", got: raw) }
        guard !items.isEmpty else { throw .invalid("messages", "'messages' is empty; send at least one message") }
        var out: [ChatMessage] = []
        for (i, item) in items.enumerated() {
            let name = "messages[\(i)]"
            guard case let .object(o) = item else { throw .wrongType(name, expected: "an object", got: item) }
            let m = Fields(fields: o, prefix: name + ".")
            guard let role = try m.string("role") else { throw .invalid(name + ".role", "'\(name).role' is required", code: "missing_field") }
            let known = ["system": "system", "developer": "system", "user": "user", "assistant": "assistant"]
            guard let mapped = known[role] else {
                throw .invalid(name + ".role", "unknown role '\(role)' in \(name) (expected system, developer, user or assistant)")
            }
            out.append(ChatMessage(role: mapped, content: try content(o["content"], name: name + ".content")))
        }
        return out
    }

    /// A message's content: a string, or an array of `{"type": "text", "text": ...}` parts.
    static func content(_ v: JSONValue?, name: String) throws(APIError) -> String {
        switch v {
        case nil, .null?: throw .invalid(name, "'\(name)' is required", code: "missing_field")
        case let .string(s)?: return s
        case let .array(parts)?:
            var text = ""
            for (i, p) in parts.enumerated() {
                guard case .string("text")? = p["type"], case let .string(t)? = p["text"] else {
                    throw .invalid("\(name)[\(i)]", "'\(name)[\(i)]' must be a text part ({\"type\": \"text\", \"text\": ...}); other parts are not supported")
                }
                text += t
            }
            return text
        case let v?: throw .wrongType(name, expected: "a string or an array of text parts", got: v)
        }
    }

    static func prompt(_ f: Fields) throws(APIError) -> String {
        guard let raw = f.fields["prompt"] else { throw .invalid("prompt", "'prompt' is required", code: "missing_field") }
        let text: String
        switch raw {
        case let .string(s): text = s
        case let .array(items):
            guard items.count == 1, case let .string(s) = items[0] else {
                throw .invalid("prompt", "'prompt' as an array must hold exactly one string (batched prompts are not supported)")
            }
            text = s
        default: throw .wrongType("prompt", expected: "a string", got: raw)
        }
        guard !text.isEmpty else { throw .invalid("prompt", "'prompt' is empty") }
        return text
    }

    static func stops(_ f: Fields) throws(APIError) -> [String] {
        let list: [String]
        switch f.fields["stop"] {
        case nil, .null?: return []
        case let .string(s)?: list = [s]
        case let .array(items)?:
            var out: [String] = []
            for item in items {
                guard case let .string(s) = item else { throw .wrongType("stop", expected: "a string or an array of strings", got: item) }
                out.append(s)
            }
            list = out
        case let v?: throw .wrongType("stop", expected: "a string or an array of strings", got: v)
        }
        guard list.count <= maxStops else { throw .invalid("stop", "'stop' has \(list.count) strings; at most \(maxStops) are allowed") }
        return list.filter { !$0.isEmpty }
    }

    static func describe(_ error: any Error) -> String {
        if case let DecodingError.dataCorrupted(ctx) = error {
            return (ctx.underlyingError as? CustomStringConvertible)?.description ?? ctx.debugDescription
        }
        return "\(error)"
    }
}

/// Typed access to a JSON object's fields; a field of the wrong type is an error naming it, an absent
/// or null one is nil.
struct Fields {
    let fields: [String: JSONValue]
    var prefix = ""

    func has(_ key: String) -> Bool { fields[key] != nil && fields[key] != .null }

    func int(_ key: String) throws(APIError) -> Int? {
        switch fields[key] {
        case nil, .null?: return nil
        case let .int(i)?: return i
        case let .double(d)? where d == d.rounded() && abs(d) < 1e15: return Int(d)
        case let .double(d)? where d == d.rounded():
            throw .invalid(prefix + key, "'\(prefix + key)' is \(d), far outside any allowed range")
        case let v?: throw .wrongType(prefix + key, expected: "an integer", got: v)
        }
    }

    func double(_ key: String) throws(APIError) -> Double? {
        switch fields[key] {
        case nil, .null?: return nil
        case let .int(i)?: return Double(i)
        case let .double(d)?: return d
        case let v?: throw .wrongType(prefix + key, expected: "a number", got: v)
        }
    }

    func bool(_ key: String) throws(APIError) -> Bool? {
        switch fields[key] {
        case nil, .null?: return nil
        case let .bool(b)?: return b
        case let v?: throw .wrongType(prefix + key, expected: "a boolean", got: v)
        }
    }

    func string(_ key: String) throws(APIError) -> String? {
        switch fields[key] {
        case nil, .null?: return nil
        case let .string(s)?: return s
        case let v?: throw .wrongType(prefix + key, expected: "a string", got: v)
        }
    }
}
