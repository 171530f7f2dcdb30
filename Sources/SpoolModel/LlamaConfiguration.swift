import SpoolFormat

/// Hyperparameters of a Llama-family model, read from `{arch}.*` metadata keys.
public struct LlamaConfiguration: Codable, Sendable, Equatable {
    public var architecture: String
    public var layers: Int
    public var dim: Int
    public var ffnDim: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var ropeDims: Int
    public var ropeBase: Float
    public var normEps: Float
    public var vocabSize: Int
    public var contextLength: Int

    public init(architecture: String = "llama", layers: Int, dim: Int, ffnDim: Int, heads: Int, kvHeads: Int,
                headDim: Int? = nil, ropeDims: Int? = nil, ropeBase: Float = 10000, normEps: Float = 1e-5,
                vocabSize: Int, contextLength: Int = 2048) throws(ModelError) {
        self.architecture = architecture
        self.layers = layers
        self.dim = dim
        self.ffnDim = ffnDim
        self.heads = heads
        self.kvHeads = kvHeads
        self.headDim = headDim ?? (heads > 0 ? dim / heads : 0)
        self.ropeDims = ropeDims ?? self.headDim
        self.ropeBase = ropeBase
        self.normEps = normEps
        self.vocabSize = vocabSize
        self.contextLength = contextLength
        try validate()
    }

    /// Reads the configuration from GGUF metadata. Values missing from the file fall back to the
    /// defaults llama.cpp uses; shapes that make no sense are refused.
    public init(gguf: GGUFFile) throws(ModelError) {
        do {
            let arch = try gguf.require("general.architecture", gguf.string)
            func int(_ key: String) throws(GGUFError) -> Int { try gguf.require("\(arch).\(key)", gguf.integer) }
            let dim = try int("embedding_length")
            let heads = try int("attention.head_count")
            let vocab: Int
            if let v = try gguf.integer("\(arch).vocab_size") {
                vocab = v
            } else if let tokens = try gguf.stringArray("tokenizer.ggml.tokens") {
                vocab = tokens.count
            } else {
                throw GGUFError.missingKey("\(arch).vocab_size")
            }
            let headDim = try gguf.integer("\(arch).attention.key_length") ?? (heads > 0 ? dim / heads : 0)
            try self.init(
                architecture: arch,
                layers: try int("block_count"),
                dim: dim,
                ffnDim: try int("feed_forward_length"),
                heads: heads,
                kvHeads: try gguf.integer("\(arch).attention.head_count_kv") ?? heads,
                headDim: headDim,
                ropeDims: try gguf.integer("\(arch).rope.dimension_count") ?? headDim,
                ropeBase: Float(try gguf.float("\(arch).rope.freq_base") ?? 10000),
                normEps: Float(try gguf.float("\(arch).attention.layer_norm_rms_epsilon") ?? 1e-5),
                vocabSize: vocab,
                contextLength: try gguf.integer("\(arch).context_length") ?? 2048)
        } catch let e as GGUFError {
            throw .format(e)
        } catch let e as ModelError {
            throw e
        } catch {
            throw .format(.missingKey("\(error)"))
        }
    }

    public func validate() throws(ModelError) {
        func check(_ ok: Bool, _ key: String, _ value: Int, _ reason: String) throws(ModelError) {
            if !ok { throw .invalidHyperparameter(key: key, value: "\(value)", reason: reason) }
        }
        let cap = 1 << 20
        try check((1...4096).contains(layers), "block_count", layers, "must be 1...4096")
        try check((1...cap).contains(dim), "embedding_length", dim, "must be 1...\(cap)")
        try check((1...cap).contains(ffnDim), "feed_forward_length", ffnDim, "must be 1...\(cap)")
        try check((1...4096).contains(heads), "attention.head_count", heads, "must be 1...4096")
        try check((1...heads).contains(kvHeads) && heads % kvHeads == 0, "attention.head_count_kv", kvHeads, "must divide head_count \(heads)")
        try check(headDim > 0 && headDim % 2 == 0 && headDim * heads <= 8 * cap, "attention.key_length", headDim, "must be even and positive")
        try check(ropeDims > 0 && ropeDims % 2 == 0 && ropeDims <= headDim, "rope.dimension_count", ropeDims, "must be even and at most the head size \(headDim)")
        try check((1...(1 << 24)).contains(vocabSize), "vocab_size", vocabSize, "must be 1...2^24")
        try check(contextLength > 0, "context_length", contextLength, "must be positive")
        if !(ropeBase > 0 && ropeBase.isFinite) {
            throw .invalidHyperparameter(key: "rope.freq_base", value: "\(ropeBase)", reason: "must be positive and finite")
        }
        if !(normEps > 0 && normEps < 1) {
            throw .invalidHyperparameter(key: "attention.layer_norm_rms_epsilon", value: "\(normEps)", reason: "must be in (0, 1)")
        }
    }

    public var kvDim: Int { kvHeads * headDim }
    public var qDim: Int { heads * headDim }
}
