import Foundation

/// How a cache stores keys and values: `--kv-bits`, `--kv-group`, `--kv-residual`.
///
/// - bits 32: `FloatKVCache` in f32 (the exact reference);
/// - bits 16: `FloatKVCache` in f16 (llama.cpp's default cache type, and the default here: same
///   perplexity as f32 to 4 digits at half the memory);
/// - bits 2, 4, 8: `KIVICache` (keys per channel over `group` tokens, values per token over `group`
///   channels, the newest `residual` tokens in f16).
public struct KVCacheConfiguration: Sendable, Equatable, Codable {
    public var bits: Int
    /// KIVI group size: tokens per key group, channels per value group.
    public var group: Int
    /// KIVI residual window: at most this many of the newest tokens stay in f16.
    ///
    /// Default 64. Each window slot costs a full f16 token, so the window decides how close the
    /// cache stays to 0.2x of f16 at context 2048; compact grids (`compactGrids`) pay for 64
    /// slots with values grouped over 32 channels: 0.193x. The window is worth its memory: 2-bit
    /// over 40 chunks of wiki.test at context 512 (f16 cache 22.55), with f16 grids R = 32 23.91,
    /// R = 128 23.08; with compact grids R = 64 and values over 32 channels 23.17, R = 96 and
    /// values over 64 channels 23.18 (docs/KV.md).
    public var residual: Int
    /// KIVI attention sinks: the first tokens of the context stay in f16 for good.
    ///
    /// Small models put most of their attention on the first token (StreamingLLM's "attention
    /// sink"), and its key has outlier channels: quantized with the next G - 1 tokens it both loses
    /// its own precision (an error every later query weights heavily) and stretches the per-channel
    /// range of its group. 2-bit, R = 32, 3 chunks of wiki.test at context 512: no sink 28.92,
    /// 1 sink token 25.68, 4 sink tokens 25.70 (f32 cache 22.21). Default 4 (StreamingLLM's choice;
    /// 1 measured the same here), costing 4 f16 tokens.
    public var sink: Int
    /// KIVI value bits when they differ from the key bits (`bits`); nil: the same.
    public var valueBits: Int?
    /// KIVI: quantize keys as they were before RoPE (un-rotate on store, rotate the query back per
    /// token inside attention), or as stored (after RoPE). nil: before RoPE at 2 bits, where it
    /// measured better, and after at 4 and 8 bits, where the cheaper path loses under 1%. See
    /// `KIVICache` on pre- vs post-RoPE.
    public var keysBeforeRoPE: Bool? = nil

    /// KIVI channels per value group when it differs from `group`; nil: `group`.
    public var valueGroup: Int? = nil
    /// KIVI rounding search: each key group channel tries this many clipping steps at either end of
    /// its range and keeps the one with the least squared error (`KIVIQuant.quantize`); 0 is plain
    /// min-max rounding. nil: the default for the bit width.
    public var keyClip: Int? = nil
    /// The same for value groups.
    public var valueClip: Int? = nil
    /// KIVI: rotate each head's values by an orthonormal Hadamard matrix before quantizing
    /// (QuaRot-style; spreads outlier channels over the per-token group), rotating the mixed
    /// values back in attention. Needs a power-of-2 head size and value groups within a head;
    /// otherwise ignored. nil: on for 2-bit values, where it measured better (docs/KV.md: 10
    /// chunks 27.38 -> 26.93, 40 chunks 24.36 -> 23.81), off at 4 and 8 bits (the extra work buys
    /// little there).
    public var valueHadamard: Bool? = nil
    public var resolvedValueHadamard: Bool { valueHadamard ?? ((valueBits ?? bits) == 2) }

    /// KIVI compact grids: each group's range stored as two signed bytes relative to an f16 bound
    /// shared by a block of groups, instead of an f16 scale and zero (`KIVIQuant.compactGrid`).
    /// About halves the cost of the grids (keys: 1 -> 0.57 bits per element at G = 32 with their
    /// 4-bit shifts; values: 16 -> 8.5 bits per group), which pays for a longer residual window
    /// and finer value groups within 0.2x of f16. nil: on
    /// for a 2-bit stream (keys and values decide separately), off at 4 and 8 bits, whose finer
    /// steps the 8-bit ends would blur.
    public var compactGrids: Bool? = nil
    public var resolvedCompactKeyGrids: Bool { compactGrids ?? (bits == 2) }
    public var resolvedCompactValueGrids: Bool { compactGrids ?? ((valueBits ?? bits) == 2) }

    /// KIVI pre-RoPE keys: choose each group's 4-bit and dropped pairs by their width weighted by
    /// the energy of the queries the layer has attended so far in the sequence (what a pair's
    /// rounding error is multiplied by in the scores), instead of by width alone. nil: on
    /// whenever there is a pair split.
    public var queryWeightedPairs: Bool? = nil
    public var resolvedQueryWeightedPairs: Bool { queryWeightedPairs ?? true }

    /// KIVI pre-RoPE keys: in every key group, the rotary pairs (two channels each) of each head
    /// with the widest ranges are stored with 4-bit codes instead of `bits` (a dense-and-sparse
    /// split by channel, as KVQuant keeps outliers apart); the pair order costs one byte per pair
    /// and group. nil: the default for the bit width.
    public var keyOutlierPairs: Int? = nil
    public var resolvedKeyOutlierPairs: Int { keyOutlierPairs ?? (bits == 2 ? 8 : 0) }
    /// KIVI pre-RoPE keys: in every key group, the rotary pairs of each head with the narrowest
    /// ranges keep no codes, only their zero point set to the middle of their range; their bits pay
    /// for the 4-bit outlier pairs. nil: the default for the bit width.
    public var keyDroppedPairs: Int? = nil
    public var resolvedKeyDroppedPairs: Int { keyDroppedPairs ?? (bits == 2 ? 8 : 0) }

    /// Per-layer storage: layer index -> bits (2, 4, 8, 16, 32) for the layers stored otherwise than
    /// `bits`, with every other setting the same (`LayeredKVCache`). nil or empty: every layer at `bits`.
    public var layerBits: [Int: Int]? = nil

    /// Parses "LAYERS:BITS,..." where LAYERS is one layer or a range "a-b" (`--kv-layer-bits 0-1:4,29:16`).
    public static func parseLayerBits(_ text: String) throws(KVConfigurationError) -> [Int: Int] {
        var out: [Int: Int] = [:]
        guard !text.isEmpty else { throw .badLayerBits(text) }
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: ":")
            guard parts.count == 2, let bits = Int(parts[1].trimmingCharacters(in: .whitespaces)) else { throw .badLayerBits(text) }
            let ends = parts[0].split(separator: "-", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard (1...2).contains(ends.count), let lo = ends.first ?? nil, let hi = ends.last ?? nil, lo >= 0, lo <= hi, hi < 1 << 16 else {
                throw .badLayerBits(text)
            }
            for l in lo...hi { out[l] = bits }
        }
        return out
    }

    /// Layer l's configuration: `bits` replaced by its `layerBits` entry, if any.
    public func configuration(layer l: Int) -> KVCacheConfiguration {
        var c = self
        c.layerBits = nil
        if let b = layerBits?[l] {
            c.bits = b
            if b >= 16 { c.valueBits = nil }
        }
        return c
    }

    /// Channels per value group, with nil resolved: 2 * group at 2 bits with f16 grids where that
    /// divides the key/value width (it pays for the window and the 4-bit key pairs within 0.2x of
    /// f16), else group (compact grids cost half as much, so values keep the finer groups).
    public func resolvedValueGroup(kvDim: Int) -> Int {
        valueGroup ?? (bits == 2 && !resolvedCompactValueGrids && kvDim % (2 * group) == 0 ? 2 * group : group)
    }
    public var resolvedKeyClip: Int { keyClip ?? 0 }
    public var resolvedValueClip: Int { valueClip ?? 0 }

    /// Whether keys are quantized before RoPE, with nil resolved.
    public var quantizesKeysBeforeRoPE: Bool { keysBeforeRoPE ?? (bits == 2) }

    public static let supportedBits = [2, 4, 8, 16, 32]

    public init(bits: Int = 16, group: Int = 32, residual: Int = 64, sink: Int = 4, valueBits: Int? = nil) {
        self.bits = bits
        self.valueBits = valueBits
        self.group = group
        self.residual = residual
        self.sink = sink
    }

    public var isQuantized: Bool { bits < 16 }

    /// Checks the configuration against the shape of a model's keys and values.
    public func validate(kvHeads: Int, headDim: Int) throws(KVConfigurationError) {
        if let layerBits {
            for l in layerBits.keys.sorted() {
                guard l >= 0 else { throw .badLayer(l) }
                try configuration(layer: l).validate(kvHeads: kvHeads, headDim: headDim)
            }
        }
        guard Self.supportedBits.contains(bits) else { throw .unsupportedBits(bits) }
        guard isQuantized else {
            guard valueBits == nil || valueBits == bits else { throw .unsupportedBits(valueBits!) }
            return
        }
        if let v = valueBits, ![2, 4, 8].contains(v) { throw .unsupportedBits(v) }
        guard group >= 8, group % 8 == 0 else { throw .badGroup(group) }
        guard headDim % 8 == 0 else { throw .headDimNotMultipleOf8(headDim) }
        guard (kvHeads * headDim) % group == 0 else { throw .groupDoesNotDivideKVDim(group: group, kvDim: kvHeads * headDim) }
        let vg = resolvedValueGroup(kvDim: kvHeads * headDim)
        guard vg >= 8, vg % 8 == 0 else { throw .badGroup(vg) }
        guard (kvHeads * headDim) % vg == 0 else { throw .groupDoesNotDivideKVDim(group: vg, kvDim: kvHeads * headDim) }
        if let p = keyOutlierPairs, p < 0 || 2 * p > headDim { throw .badOutlierPairs(p, headDim: headDim) }
        if let p = keyDroppedPairs, p < 0 || 2 * (p + resolvedKeyOutlierPairs) > headDim { throw .badOutlierPairs(p, headDim: headDim) }
        for clip in [keyClip, valueClip] { if let clip, clip < 0 || clip > 8 { throw .badClip(clip) } }
        guard residual >= group, residual <= 1024 else { throw .badResidual(residual, group: group) }
        guard sink >= 0, sink <= 256 else { throw .badSink(sink) }
    }

    /// A cache for `geometry`.
    public func makeCache(geometry: KVGeometry) throws(KVConfigurationError) -> KVCache {
        try KVCacheFactory(configuration: self, geometry: geometry).makeCache(capacity: geometry.capacity)
    }
}

public enum KVConfigurationError: Error, Equatable, CustomStringConvertible {
    case unsupportedBits(Int)
    case badGroup(Int)
    case headDimNotMultipleOf8(Int)
    case groupDoesNotDivideKVDim(group: Int, kvDim: Int)
    case badResidual(Int, group: Int)
    case badSink(Int)
    case badClip(Int)
    case badOutlierPairs(Int, headDim: Int)
    /// A per-layer setting for a layer the model does not have.
    case badLayer(Int)
    case badLayerBits(String)

    public var description: String {
        switch self {
        case let .unsupportedBits(b): return "--kv-bits \(b) is not supported (use 2, 4, 8, 16 or 32)"
        case let .badGroup(g): return "--kv-group \(g) must be a positive multiple of 8"
        case let .headDimNotMultipleOf8(d): return "the quantized KV cache needs a head dimension that is a multiple of 8; this model's is \(d)"
        case let .groupDoesNotDivideKVDim(g, d): return "--kv-group \(g) must divide the model's key/value width \(d) (value groups run over channels)"
        case let .badResidual(r, g): return "--kv-residual \(r) must be between the group size \(g) and 1024"
        case let .badSink(s): return "--kv-sink \(s) must be between 0 and 256"
        case let .badOutlierPairs(p, d): return "--kv-key-outliers and --kv-key-dropped (\(p)) must be >= 0 and add up to at most half the head dimension \(d)"
        case let .badClip(c): return "--kv-clip \(c) must be between 0 and 8 steps"
        case let .badLayerBits(t): return "--kv-layer-bits \"\(t)\": expected LAYER:BITS or FIRST-LAST:BITS items separated by commas"
        case let .badLayer(l): return "--kv-layer-bits names layer \(l), which this model does not have"
        }
    }
}

/// A validated configuration for one model's key/value shape: makes caches of any capacity without
/// further checks, so sessions can be created without a `throws`.
public struct KVCacheFactory: Sendable {
    public let configuration: KVCacheConfiguration
    /// The model's shape; its `capacity` is replaced by each `makeCache` call's.
    public let geometry: KVGeometry

    /// f16 caches attend with llama.cpp's exact arithmetic (see `FloatKVCache.exactAttention`).
    public let exactAttention: Bool

    public init(configuration: KVCacheConfiguration, geometry: KVGeometry, exactAttention: Bool = true) throws(KVConfigurationError) {
        try configuration.validate(kvHeads: geometry.kvHeads, headDim: geometry.headDim)
        if let l = configuration.layerBits?.keys.first(where: { $0 >= geometry.layers }) { throw .badLayer(l) }
        self.configuration = configuration
        self.geometry = geometry
        self.exactAttention = exactAttention
    }

    public func makeCache(capacity: Int) -> KVCache {
        var g = geometry
        g.capacity = max(0, capacity)
        if let lb = configuration.layerBits, lb.contains(where: { $0.value != configuration.bits }) {
            return LayeredKVCache(geometry: g, configurations: (0..<g.layers).map { configuration.configuration(layer: $0) })
        }
        switch configuration.bits {
        case 32: return FloatKVCache(geometry: g, precision: .f32)
        case 16: return FloatKVCache(geometry: g, precision: .f16, exactAttention: exactAttention)
        default: return KIVICache(validated: configuration, geometry: g)
        }
    }
}
