import SpoolKernels

/// The shape of the keys and values one model stores per token and layer.
public struct KVGeometry: Sendable, Equatable {
    public var layers: Int
    public var kvHeads: Int
    public var queryHeads: Int
    public var headDim: Int
    /// Tokens the cache can hold.
    public var capacity: Int
    /// The model's rotary embedding (rotated dimensions per head, 0 for none, and base), for a
    /// cache that quantizes keys before RoPE.
    public var ropeDims: Int
    public var ropeBase: Float

    public init(layers: Int, kvHeads: Int, queryHeads: Int, headDim: Int, capacity: Int, ropeDims: Int = 0, ropeBase: Float = 10000) {
        self.ropeDims = ropeDims
        self.ropeBase = ropeBase
        self.layers = layers
        self.kvHeads = kvHeads
        self.queryHeads = queryHeads
        self.headDim = headDim
        self.capacity = capacity
    }

    public var kvDim: Int { kvHeads * headDim }
}

public enum KVCacheError: Error, Equatable, CustomStringConvertible {
    case contextFull(needed: Int, capacity: Int)
    /// A store that would leave positions stored..<start of a layer empty.
    case gap(layer: Int, start: Int, stored: Int)

    public var description: String {
        switch self {
        case let .contextFull(needed, capacity): return "context full: \(needed) tokens needed, the cache holds \(capacity)"
        case let .gap(layer, start, stored): return "layer \(layer): a store at position \(start) would leave a gap after the \(stored) tokens stored"
        }
    }
}

/// Keys and values of past tokens, per layer. A forward pass over tokens at positions
/// start..<start+n calls `store` then `attend` for every layer, then `commit(upTo:)` once.
///
/// Implementations own the attention computation so that a quantized cache can attend on its packed
/// data without materializing floats.
public protocol KVCache: AnyObject {
    var geometry: KVGeometry { get }
    /// Tokens committed so far (positions 0..<count hold valid entries in every layer).
    var count: Int { get }
    /// Writes keys and values (tokens, kvDim) for positions start..<start+tokens of one layer.
    func store(layer: Int, start: Int, tokens: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>) throws
    /// Causal attention for `tokens` queries (tokens, queryHeads, headDim) at positions start..<start+tokens:
    /// query i sees positions 0...start+i. Writes (tokens, queryHeads, headDim) to `output`.
    func attend(layer: Int, start: Int, tokens: Int, queries: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, pool: ThreadPool)
    /// Marks positions 0..<count as valid in every layer.
    func commit(upTo count: Int)
    /// Forgets positions count..., e.g. to rewind a conversation or reject speculative tokens.
    func truncate(to count: Int)
    /// Bytes of storage used per token across all layers.
    var bytesPerToken: Double { get }
    /// Bytes currently allocated.
    var allocatedBytes: Int { get }
}
