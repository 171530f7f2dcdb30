import SpoolKV
import SpoolKernels

/// Which positions of a forward pass need logits.
public enum LogitsSelection: Sendable, Equatable {
    /// Only the last token (generation).
    case last
    /// Every token (verification of drafted tokens).
    case all
    /// Tokens from this index of the batch onwards (perplexity scores only the second half of a chunk).
    case from(Int)

    func range(tokens: Int) -> Range<Int> {
        switch self {
        case .last: return (tokens - 1)..<tokens
        case .all: return 0..<tokens
        case let .from(i): return min(max(0, i), tokens)..<tokens
        }
    }
}

/// Logits for a contiguous run of batch positions: `values` is (count, vocabSize).
public struct Logits: Sendable {
    public var firstIndex: Int
    public var count: Int
    public var vocabSize: Int
    public var values: [Float]

    public func row(_ i: Int) -> ArraySlice<Float> {
        let r = i - firstIndex
        return values[(r * vocabSize)..<((r + 1) * vocabSize)]
    }

    public var last: ArraySlice<Float> { row(firstIndex + count - 1) }
}

/// A decoder-only language model that runs tokens through its layers against a KV cache.
public protocol LanguageModel: AnyObject {
    var configuration: LlamaConfiguration { get }
    /// A float KV cache sized for this model.
    func makeCache(capacity: Int) -> KVCache
    /// Runs `tokens` at positions start..<start+tokens.count, stores their keys and values in the
    /// cache, commits them, and returns logits for the selected positions.
    func forward(_ tokens: [Int32], start: Int, cache: KVCache, logits: LogitsSelection, pool: ThreadPool) throws -> Logits
    /// Bytes of weights held in memory.
    var weightBytes: Int { get }
}

extension LanguageModel {
    /// The shape of this model's keys and values in a cache of `capacity` tokens.
    public func kvGeometry(capacity: Int) -> KVGeometry {
        KVGeometry(layers: configuration.layers, kvHeads: configuration.kvHeads, queryHeads: configuration.heads,
                   headDim: configuration.headDim, capacity: capacity,
                   ropeDims: configuration.ropeDims, ropeBase: configuration.ropeBase)
    }

    /// A cache stored as `configuration` says (f32, f16 or KIVI), checked against this model's shape.
    public func makeCache(capacity: Int, configuration: KVCacheConfiguration) throws(KVConfigurationError) -> KVCache {
        try configuration.makeCache(geometry: kvGeometry(capacity: capacity))
    }
}
