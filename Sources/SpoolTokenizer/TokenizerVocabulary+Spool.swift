import SpoolFormat

extension TokenizerVocabulary {
    /// The vocabulary a .spool header carries (copied from the source model by the packer).
    public init(spool t: SpoolTokenizerInfo) throws(TokenizerError) {
        guard t.model == "gpt2" else { throw .unsupportedModel(t.model) }
        let pre: PreTokenizer
        if let name = t.pre {
            guard let p = PreTokenizer(name: name) else { throw .unknownPreTokenizer(name) }
            pre = p
        } else {
            pre = .gpt2
        }
        guard !t.tokens.isEmpty else { throw .emptyVocabulary }
        guard t.tokenTypes.count == t.tokens.count else { throw .tokenTypeCountMismatch(tokens: t.tokens.count, types: t.tokenTypes.count) }
        var types: [TokenType] = []
        types.reserveCapacity(t.tokens.count)
        for (i, v) in t.tokenTypes.enumerated() {
            guard let tt = TokenType(rawValue: v) else { throw .invalidTokenType(index: i, value: v) }
            types.append(tt)
        }
        func special(_ key: String, _ id: Int?) throws(TokenizerError) -> Int32? {
            guard let id else { return nil }
            guard (0..<t.tokens.count).contains(id) else { throw .specialTokenOutOfRange(key: key, id: id, vocabularySize: t.tokens.count) }
            return Int32(id)
        }
        self.init(tokens: t.tokens, types: types, merges: t.merges, preTokenizer: pre,
                  bosID: try special("bos_id", t.bosId), eosID: try special("eos_id", t.eosId),
                  eotID: try special("eot_id", t.eotId), unknownID: try special("unknown_id", t.unknownId),
                  paddingID: try special("padding_id", t.paddingId), addBOS: t.addBos, addEOS: t.addEos)
    }
}

extension SpoolTokenizerInfo {
    /// Copies the tokenizer of a GGUF model, keeping the pre-tokenizer's name as the file spells it.
    public init(gguf: GGUFFile) throws(TokenizerError) {
        let v = try TokenizerVocabulary(gguf: gguf)
        let pre: String?
        do { pre = try gguf.string("tokenizer.ggml.pre") } catch { throw .metadata(error) }
        self.init(model: "gpt2", pre: pre, tokens: v.tokens, tokenTypes: v.types.map(\.rawValue), merges: v.merges,
                  bosId: v.bosID.map(Int.init), eosId: v.eosID.map(Int.init), eotId: v.eotID.map(Int.init),
                  unknownId: v.unknownID.map(Int.init), paddingId: v.paddingID.map(Int.init),
                  addBos: v.addBOS, addEos: v.addEOS)
    }
}
