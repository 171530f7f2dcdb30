import SpoolFormat

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
public enum TokenType: Int, Sendable {
    case undefined = 0, normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
}

public enum TokenizerError: Error, Equatable, CustomStringConvertible {
    case metadata(GGUFError)
    case unsupportedModel(String)
    case unknownPreTokenizer(String)
    case emptyVocabulary
    case tokenTypeCountMismatch(tokens: Int, types: Int)
    case invalidTokenType(index: Int, value: Int)
    case specialTokenOutOfRange(key: String, id: Int, vocabularySize: Int)
    case malformedMerge(index: Int, text: String)

    public var description: String {
        switch self {
        case let .metadata(e): return "tokenizer metadata: \(e)"
        case let .unsupportedModel(m): return "tokenizer model '\(m)' is not supported (supported: gpt2 byte-level BPE)"
        case let .unknownPreTokenizer(p): return "unknown pre-tokenizer '\(p)' in tokenizer.ggml.pre (known: \(PreTokenizer.knownNames.joined(separator: ", ")))"
        case .emptyVocabulary: return "tokenizer.ggml.tokens is empty"
        case let .tokenTypeCountMismatch(t, n): return "tokenizer.ggml.token_type has \(n) entries for \(t) tokens"
        case let .invalidTokenType(i, v): return "tokenizer.ggml.token_type[\(i)] = \(v) is not a known token type (0...6)"
        case let .specialTokenOutOfRange(key, id, n): return "\(key) = \(id) is outside the vocabulary (0..<\(n))"
        case let .malformedMerge(i, text): return "tokenizer.ggml.merges[\(i)] = \(text.debugDescription) is not two space-separated tokens"
        }
    }
}

/// Everything the tokenizer needs, as read from GGUF metadata (or built by hand in tests).
public struct TokenizerVocabulary: Sendable {
    public var tokens: [String]
    public var types: [TokenType]
    /// "left right" pairs in rank order (rank = index).
    public var merges: [String]
    public var preTokenizer: PreTokenizer
    public var bosID: Int32?
    public var eosID: Int32?
    public var eotID: Int32?
    public var unknownID: Int32?
    public var paddingID: Int32?
    public var addBOS: Bool
    public var addEOS: Bool

    public init(tokens: [String], types: [TokenType]? = nil, merges: [String], preTokenizer: PreTokenizer = .gpt2,
                bosID: Int32? = nil, eosID: Int32? = nil, eotID: Int32? = nil, unknownID: Int32? = nil, paddingID: Int32? = nil,
                addBOS: Bool = false, addEOS: Bool = false) {
        self.tokens = tokens
        self.types = types ?? Array(repeating: .normal, count: tokens.count)
        self.merges = merges
        self.preTokenizer = preTokenizer
        self.bosID = bosID
        self.eosID = eosID
        self.eotID = eotID
        self.unknownID = unknownID
        self.paddingID = paddingID
        self.addBOS = addBOS
        self.addEOS = addEOS
    }

    /// Reads `tokenizer.ggml.*` keys. Only byte-level BPE (`tokenizer.ggml.model = gpt2`) is supported.
    public init(gguf: GGUFFile) throws(TokenizerError) {
        do {
            let model = try gguf.require("tokenizer.ggml.model", gguf.string)
            guard model == "gpt2" else { throw TokenizerError.unsupportedModel(model) }
            let pre: PreTokenizer
            if let name = try gguf.string("tokenizer.ggml.pre") {
                guard let p = PreTokenizer(name: name) else { throw TokenizerError.unknownPreTokenizer(name) }
                pre = p
            } else {
                pre = .gpt2
            }
            let tokens = try gguf.require("tokenizer.ggml.tokens", gguf.stringArray)
            guard !tokens.isEmpty else { throw TokenizerError.emptyVocabulary }
            var types = Array(repeating: TokenType.normal, count: tokens.count)
            if let raw = try gguf.integerArray("tokenizer.ggml.token_type") {
                guard raw.count == tokens.count else { throw TokenizerError.tokenTypeCountMismatch(tokens: tokens.count, types: raw.count) }
                for (i, v) in raw.enumerated() {
                    guard let t = TokenType(rawValue: v) else { throw TokenizerError.invalidTokenType(index: i, value: v) }
                    types[i] = t
                }
            }
            let merges = try gguf.stringArray("tokenizer.ggml.merges") ?? []
            func special(_ key: String) throws -> Int32? {
                guard let id = try gguf.integer(key) else { return nil }
                // llama.cpp writes -1 (or UInt32.max) for "none".
                if id < 0 || id == Int(UInt32.max) { return nil }
                guard id < tokens.count else { throw TokenizerError.specialTokenOutOfRange(key: key, id: id, vocabularySize: tokens.count) }
                return Int32(id)
            }
            self.init(tokens: tokens, types: types, merges: merges, preTokenizer: pre,
                      bosID: try special("tokenizer.ggml.bos_token_id"),
                      eosID: try special("tokenizer.ggml.eos_token_id"),
                      eotID: try special("tokenizer.ggml.eot_token_id"),
                      unknownID: try special("tokenizer.ggml.unknown_token_id"),
                      paddingID: try special("tokenizer.ggml.padding_token_id"),
                      addBOS: try gguf.bool("tokenizer.ggml.add_bos_token") ?? false,
                      addEOS: try gguf.bool("tokenizer.ggml.add_eos_token") ?? false)
        } catch let e as TokenizerError {
            throw e
        } catch let e as GGUFError {
            throw .metadata(e)
        } catch {
            throw .unsupportedModel("\(error)")
        }
    }
}
