import Foundation
import SpoolKernels

/// KIVI (Liu et al., 2024): keys quantized per channel over groups of G tokens, values per token over
/// groups of G channels, 2/4/8-bit asymmetric codes with f16 scale and zero, and the newest tokens
/// kept in f16 in a residual window of at most R tokens. The first S tokens ("attention sinks",
/// StreamingLLM) also stay in f16 for good: see `KVCacheConfiguration.sink`.
///
/// Window and flushing. With c tokens stored, tokens 0..<min(c, S) are sink tokens, the next
/// G * ceil(max(0, c - S - R) / G) are packed and the rest (at most R) are in the window: whenever
/// the window would exceed R tokens, its oldest G tokens are quantized as one group. A prompt ending mid-group simply leaves a partial
/// group in the window. Because a group's codes depend only on its own tokens, the cache after a
/// batch of n tokens is bit-identical to the cache after those n tokens one at a time, and attention
/// keeps that equivalence too: query p sees tokens S..<windowStart(p + 1) packed and the rest in f16,
/// exactly what it would see in token-by-token decoding (the f16 rows of a batch's tokens that get
/// packed during the batch are kept in `staging` until the layer's attention has run).
///
/// Rewinding into the packed region (`truncate(to:)` or a `store` at an earlier position) moves
/// the partial group back into the window as dequantized f16 values; they are re-quantized with
/// whatever tokens complete the group later. That costs those tokens one more rounding, and keeps
/// no extra data.
///
/// Keys before or after RoPE. The model rotates keys before `store`, so by default this cache
/// quantizes post-RoPE keys, and the packed QK dot folds each channel's scale into the query
/// (one multiply per code). With `keysBeforeRoPE` it un-rotates keys before quantizing (KVQuant's
/// choice: RoPE mixes each channel pair with a position-dependent angle, which blurs the
/// per-channel ranges that per-channel grouping relies on) and, in attention, rotates the query
/// back by each token's position instead (`KVKernels.rotatedKeyGroupScores`: about 3x the key
/// arithmetic). Measured on SmolLM2-135M, 2-bit, G = 32, R = 32, 4 sinks, wiki.test context 512
/// (f16 cache 22.50 over 40 chunks; 22.21 over 3): post-RoPE 26.88 (40 chunks) / 25.70 (3 chunks),
/// pre-RoPE 26.21 (40 chunks) / 24.87 (3 chunks). Pre-RoPE quantization loses less (+16.5% vs
/// +19.5%), so it is worth its slower key path at 2 bits; at 4 and 8 bits post-RoPE is already
/// within 1% and keeps the cheap path. Most of the 2-bit loss is in the keys:
/// keys 2 / values 8 bits 23.72, keys 8 / values 2 bits 22.65 (3 chunks, post-RoPE).
///
/// Storage per layer:
/// - keyCodes  (packed groups, kvDim channels, G * bits / 8 bytes): channel-major per group
/// - keyScale, keyZero  (groups, kvDim) f16
/// - valueCodes  (packed tokens, kvDim * bits / 8 bytes), token S first
/// - valueScale, valueZero  (tokens, kvDim / G) f16
/// - windowKeys, windowValues  (R, kvDim) f16: tokens windowStart..<count
/// - sinkKeys, sinkValues  (S, kvDim) f16: tokens 0..<S
public final class KIVICache: KVCache {
    public let geometry: KVGeometry
    public let configuration: KVCacheConfiguration
    public internal(set) var count = 0

    let layout: KIVILayout
    let layers: [Layer]
    /// Set when keys are quantized before RoPE: the model's rotation, to undo on store and redo on read.
    let rope: RopeTable?
    /// The same angles laid out per rotary pair for the SIMD kernel (only with `rope`).
    let ropeColumns: RotaryColumns?
    var keyBits: Int { layout.keyBits }
    var valueBits: Int { layout.valueBits }
    var group: Int { layout.group }
    var residual: Int { layout.residual }
    var sink: Int { layout.sink }

    /// One layer's packed store, scales and zeros, and window (see the type's comment for shapes).
    final class Layer {
        var count = 0
        /// Tokens before the window: the sink tokens and the packed ones (windowStart(count)).
        var windowStart = 0
        let keyCodes: UnsafeMutableRawPointer
        let keyScale: UnsafeMutablePointer<UInt16>
        let keyZero: UnsafeMutablePointer<UInt16>
        let valueCodes: UnsafeMutableRawPointer
        let valueScale: UnsafeMutablePointer<UInt16>
        let valueZero: UnsafeMutablePointer<UInt16>
        let windowKeys: UnsafeMutablePointer<UInt16>
        let windowValues: UnsafeMutablePointer<UInt16>
        let sinkKeys: UnsafeMutablePointer<UInt16>
        let sinkValues: UnsafeMutablePointer<UInt16>
        let bytes: Int

        init(_ l: KIVILayout) {
            let d = l.kvDim
            let groups = l.packedCapacity / l.group
            keyCodes = .allocate(byteCount: max(1, groups * d * l.keyRowBytes), alignment: 64)
            keyScale = .allocate(capacity: max(1, groups * d))
            keyZero = .allocate(capacity: max(1, groups * d))
            valueCodes = .allocate(byteCount: max(1, l.packedCapacity * l.valueTokenBytes), alignment: 64)
            valueScale = .allocate(capacity: max(1, l.packedCapacity * l.valueGroups))
            valueZero = .allocate(capacity: max(1, l.packedCapacity * l.valueGroups))
            windowKeys = .allocate(capacity: l.residual * d)
            windowValues = .allocate(capacity: l.residual * d)
            sinkKeys = .allocate(capacity: max(1, l.sink * d))
            sinkValues = .allocate(capacity: max(1, l.sink * d))
            bytes = groups * d * (l.keyRowBytes + 4) + l.packedCapacity * (l.valueTokenBytes + 4 * l.valueGroups)
                + 2 * (l.residual + l.sink) * d * 2
        }

        deinit {
            keyCodes.deallocate(); keyScale.deallocate(); keyZero.deallocate()
            valueCodes.deallocate(); valueScale.deallocate(); valueZero.deallocate()
            windowKeys.deallocate(); windowValues.deallocate()
            sinkKeys.deallocate(); sinkValues.deallocate()
        }
    }

    /// f16 rows of tokens stagingBase..<layer.count of `stagingLayer` during one forward pass: the
    /// window as it was before the last `store` plus that store's tokens (see the type's comment).
    /// Shared by all layers: the protocol calls store and attend layer after layer.
    var stagingKeys: UnsafeMutablePointer<UInt16>? = nil
    var stagingValues: UnsafeMutablePointer<UInt16>? = nil
    var stagingCapacity = 0
    var stagingLayer = -1
    var stagingBase = 0

    public convenience init(geometry: KVGeometry, configuration: KVCacheConfiguration) throws(KVConfigurationError) {
        try configuration.validate(kvHeads: geometry.kvHeads, headDim: geometry.headDim)
        guard configuration.isQuantized else { throw .unsupportedBits(configuration.bits) }
        self.init(validated: configuration, geometry: geometry)
    }

    /// `configuration` has passed `validate` for this geometry and has bits 2, 4 or 8.
    init(validated configuration: KVCacheConfiguration, geometry: KVGeometry) {
        self.geometry = geometry
        self.configuration = configuration
        let l = KIVILayout(configuration, geometry)
        layout = l
        layers = (0..<geometry.layers).map { _ in Layer(l) }
        rope = configuration.quantizesKeysBeforeRoPE && geometry.ropeDims > 0
            ? RopeTable(ropeDims: geometry.ropeDims, base: geometry.ropeBase, positions: max(1, geometry.capacity)) : nil
        ropeColumns = rope == nil ? nil : RotaryColumns(ropeDims: geometry.ropeDims, base: geometry.ropeBase, positions: max(1, geometry.capacity) + 8)
    }

    deinit {
        stagingKeys?.deallocate()
        stagingValues?.deallocate()
    }

    @inline(__always)
    func windowStart(_ c: Int) -> Int { layout.windowStart(c) }

    /// Packed bytes per token over all layers (codes, and scales and zeros amortized over their
    /// groups); the residual window adds a fixed 2 * R * kvDim * 2 bytes per layer (`allocatedBytes`).
    public var bytesPerToken: Double {
        let d = Double(geometry.kvDim)
        let keys = d * Double(keyBits) / 8 + d * 4 / Double(group)
        let values = d * Double(valueBits) / 8 + Double(layout.valueGroups) * 4
        return Double(geometry.layers) * (keys + values)
    }

    public var allocatedBytes: Int {
        layers.reduce(0) { $0 + $1.bytes } + 2 * stagingCapacity * geometry.kvDim * 2 + (ropeColumns?.bytes ?? 0)
    }
}

/// Sizes derived from a configuration and geometry.
struct KIVILayout {
    let keyBits: Int, valueBits: Int, group: Int, residual: Int, sink: Int, kvDim: Int
    /// Tokens the packed store can hold: windowStart(capacity) - sink.
    let packedCapacity: Int
    /// G * bits / 8: one channel of one key group.
    let keyRowBytes: Int
    /// kvDim * bits / 8: one token's value codes.
    let valueTokenBytes: Int
    /// kvDim / G: value groups per token.
    let valueGroups: Int

    init(_ c: KVCacheConfiguration, _ g: KVGeometry) {
        keyBits = c.bits
        valueBits = c.valueBits ?? c.bits
        group = c.group
        residual = c.residual
        sink = c.sink
        kvDim = g.kvDim
        keyRowBytes = group * keyBits / 8
        valueTokenBytes = kvDim * valueBits / 8
        valueGroups = kvDim / group
        let cap = max(0, g.capacity)
        packedCapacity = group * ((max(0, cap - c.sink - residual) + group - 1) / group)
    }

    /// Tokens before the window when the cache holds c tokens: min(c, S) sink tokens, then whole
    /// packed groups, leaving at most R tokens in the window. Packed group gi holds tokens
    /// S + gi * G ..< S + (gi + 1) * G.
    @inline(__always)
    func windowStart(_ c: Int) -> Int { min(c, sink) + group * ((max(0, c - sink - residual) + group - 1) / group) }
}

/// cos and sin of every rotary angle laid out (pair, position), so that 8 consecutive positions of
/// one pair are one vector load. Angles as `RopeTable` computes them (in Double).
final class RotaryColumns: Sendable {
    let pairs: Int, positions: Int
    let cos: [Float], sin: [Float]

    init(ropeDims: Int, base: Float, positions: Int) {
        pairs = ropeDims / 2
        self.positions = positions
        var c = [Float](repeating: 0, count: pairs * positions), s = c
        for i in 0..<pairs {
            let inv = pow(Double(base), -Double(2 * i) / Double(ropeDims))
            for p in 0..<positions {
                let theta = Double(p) * inv
                c[i * positions + p] = Float(Foundation.cos(theta))
                s[i * positions + p] = Float(Foundation.sin(theta))
            }
        }
        cos = c
        sin = s
    }

    var bytes: Int { 2 * pairs * positions * 4 }
}
