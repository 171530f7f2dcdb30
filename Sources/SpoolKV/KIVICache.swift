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
/// Keys before or after RoPE. The model rotates keys before `store`, so without more this cache
/// quantizes post-RoPE keys. With `keysBeforeRoPE` it un-rotates keys before quantizing (KVQuant's
/// choice: RoPE mixes each channel pair with a position-dependent angle, which blurs the
/// per-channel ranges that per-channel grouping relies on) and, in attention, rotates them back
/// (`KIVITiles`: the key tile by each token's offset in its group, the query back by the group's
/// start, so the extra work is per KV head and group, not per query head). Measured on SmolLM2-135M, 2-bit, G = 32, R = 32, 4 sinks, wiki.test context 512
/// (f16 cache 22.50 over 40 chunks; 22.21 over 3): post-RoPE 26.88 (40 chunks) / 25.70 (3 chunks),
/// pre-RoPE 26.21 (40 chunks) / 24.87 (3 chunks). Pre-RoPE quantization loses less (+16.5% vs
/// +19.5%), so it is worth its slower key path at 2 bits; at 4 and 8 bits post-RoPE is already
/// within 1% and keeps the cheap path. Most of the 2-bit loss is in the keys:
/// keys 2 / values 8 bits 23.72, keys 8 / values 2 bits 22.65 (3 chunks, post-RoPE).
///
/// Key pair split (pre-RoPE keys). Per head and group, the error of a per-channel 2-bit key is
/// dominated by the few rotary pairs with the widest ranges. So each group stores the widest
/// `keyOutlierPairs` pairs with 4-bit codes and, to pay for them, the narrowest `keyDroppedPairs`
/// pairs with no codes at all (their zero is the middle of their range); two 64-bit masks per head
/// and group record the split. Measured on wiki.test, context 512, 10 chunks (f16 cache 25.63):
/// plain 2-bit (values over 32 channels) 28.97 (+13.0%, 0.204x of f16 at context 2048);
/// 4 widest pairs at 4 bits 26.98 (+5.3%), 8 pairs 26.60 (+3.8%), but both over 0.2x;
/// within 0.2x: 4 pairs + values over 64 channels 27.47, 8 pairs + 8 dropped + values over 64
/// channels 27.47 (+7.2%, 0.190x, the default), 12 + 12 dropped 27.60, 8 + 12 dropped (values
/// over 32) 27.55, 6 + 10 dropped 27.60. A clipping search on the key ranges (`keyClip`, least
/// squared error) did not help (4 pairs: 26.98 -> 27.02): the extreme keys are the ones that
/// matter for the scores. Over 40 chunks: f16 22.55, the 2-bit default 24.36 (+8.0%; before
/// the split +16.5%).
///
/// Query-weighted pair choice (`KVCacheConfiguration.queryWeightedPairs`, on by default). A pair's
/// rounding error reaches a score multiplied by the query's components on that pair, so the
/// split ranks pairs by squared width times sqrt(E), E the energy |q_pair|^2 (RoPE leaves it
/// unchanged) of the queries of the KV head's query heads that the layer has attended so far in
/// the sequence (`Layer.queryEnergy`, reset when the sequence restarts at 0). To use only what
/// token-by-token decoding would have seen, `store` leaves the groups it flushes pending (their
/// f16 rows stay in staging) and the layer's `attend` packs them first (`packPending`), adding
/// for group gi the batch's queries before position S + R + gi * G, the token whose store flushed
/// it. wiki.test, context 512, 40 chunks, R = 64, values over 32 channels, compact grids: widths
/// alone 23.169, weighted 22.981 (f16 cache 22.550).
///
/// Compact grids (`KVCacheConfiguration.compactGrids`, on at 2 bits): each group's range stored as
/// two signed bytes under an f16 bound shared by the group's block (`KIVIQuant.compactGrid`),
/// with a 4-bit shift per key channel; the f16 (scale, zero) that encode and decode use are
/// derived from them, so every reader goes through `KIVICache+Grids`. They cost half of the
/// f16 grids and pay for the 64-token window and values grouped over 32 channels within 0.2x
/// of f16 (0.193x at context 2048).
///
/// Storage per layer:
/// - keyCodes  (packed groups, kvHeads, keyHeadBytes): per head, channel rows of G codes: the
///   4-bit rows of the widest pairs, then the `bits` rows, in `KIVILayout.pairOrder`
/// - keyMasks  (groups, kvHeads, 2) UInt64: the widest and the dropped pairs (only with a split)
/// - keyScale, keyZero  (groups, kvDim) f16, or with compact grids keyLimits (groups, kvDim, 2)
///   Int8, keyShifts (groups, kvDim) 4-bit and keyRef (groups, kvHeads) f16 (`KIVIQuant.compactGrid`)
/// - valueCodes  (packed tokens, kvDim * bits / 8 bytes), token S first
/// - valueScale, valueZero  (tokens, kvDim / valueGroup) f16, or with compact grids valueLimits
///   (tokens, kvDim / valueGroup, 2) Int8 and valueRef (groups, kvDim / valueGroup) f16
/// - windowKeys, windowValues  (R, kvDim) f16: tokens windowStart..<count
/// - sinkKeys, sinkValues  (S, kvDim) f16: tokens 0..<S
public final class KIVICache: KVCache {
    public let geometry: KVGeometry
    public let configuration: KVCacheConfiguration
    public internal(set) var count = 0
    /// The kernels attention runs (tests set each supported level).
    var kernelLevel = KernelLevel.selected
    /// Values rotated per head by a Hadamard matrix before quantization (`KVCacheConfiguration.valueHadamard`).
    let valueHadamard: Bool

    let layout: KIVILayout
    let layers: [Layer]
    /// Set when keys are quantized before RoPE: the model's rotation, to undo on store and redo on read.
    let rotation: KeyRotation?
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
        /// (groups, kvHeads, 2) when pairs are split: bit i of the first mask set when rotary pair i
        /// of that head and group has high-precision codes, of the second when it has none (only its
        /// zero, the midpoint of its range). `KIVILayout.pairOrder` gives the order of the rows.
        let keyMasks: UnsafeMutablePointer<UInt64>
        /// f16 grids (`KIVILayout.compactKeys` false): (groups, kvDim) each.
        let keyScale: UnsafeMutablePointer<UInt16>
        let keyZero: UnsafeMutablePointer<UInt16>
        /// Compact grids: (groups, kvDim, 2) range ends, (groups, kvHeads) f16 bounds and
        /// (groups, kvDim) 4-bit shifts, two per byte.
        let keyLimits: UnsafeMutablePointer<Int8>
        let keyRef: UnsafeMutablePointer<UInt16>
        let keyShifts: UnsafeMutablePointer<UInt8>
        let valueCodes: UnsafeMutableRawPointer
        /// f16 grids (`KIVILayout.compactValues` false): (tokens, valueGroups) each.
        let valueScale: UnsafeMutablePointer<UInt16>
        let valueZero: UnsafeMutablePointer<UInt16>
        /// Compact grids: (tokens, valueGroups, 2) range ends and (groups, valueGroups) f16 bounds.
        let valueLimits: UnsafeMutablePointer<Int8>
        let valueRef: UnsafeMutablePointer<UInt16>
        let windowKeys: UnsafeMutablePointer<UInt16>
        let windowValues: UnsafeMutablePointer<UInt16>
        let sinkKeys: UnsafeMutablePointer<UInt16>
        let sinkValues: UnsafeMutablePointer<UInt16>
        let bytes: Int
        /// With query-weighted pairs: (kvHeads, pairs) energy of the queries attended so far in
        /// this sequence (`KIVICache.addQueryEnergy`).
        var queryEnergy: [Double]

        func resetQueryEnergy() { for i in queryEnergy.indices { queryEnergy[i] = 0 } }

        init(_ l: KIVILayout) {
            queryEnergy = [Double](repeating: 0, count: l.queryWeightedPairs ? l.kvHeads * l.orderedPairs : 0)
            let d = l.kvDim
            let groups = l.packedCapacity / l.group
            keyCodes = .allocate(byteCount: max(1, groups * l.kvHeads * l.keyHeadBytes), alignment: 64)
            keyMasks = .allocate(capacity: max(1, groups * l.kvHeads * 2))
            let kf = l.compactKeys ? 0 : groups * d, kc = l.compactKeys ? groups * d : 0
            keyScale = .allocate(capacity: max(1, kf))
            keyZero = .allocate(capacity: max(1, kf))
            keyLimits = .allocate(capacity: max(1, 2 * kc))
            keyRef = .allocate(capacity: max(1, l.compactKeys ? groups * l.kvHeads : 0))
            keyShifts = .allocate(capacity: max(1, (kc + 1) / 2))
            keyShifts.initialize(repeating: 0, count: max(1, (kc + 1) / 2))
            valueCodes = .allocate(byteCount: max(1, l.packedCapacity * l.valueTokenBytes), alignment: 64)
            let vf = l.compactValues ? 0 : l.packedCapacity * l.valueGroups, vc = l.compactValues ? l.packedCapacity * l.valueGroups : 0
            valueScale = .allocate(capacity: max(1, vf))
            valueZero = .allocate(capacity: max(1, vf))
            valueLimits = .allocate(capacity: max(1, 2 * vc))
            valueRef = .allocate(capacity: max(1, l.compactValues ? groups * l.valueGroups : 0))
            windowKeys = .allocate(capacity: l.residual * d)
            windowValues = .allocate(capacity: l.residual * d)
            sinkKeys = .allocate(capacity: max(1, l.sink * d))
            sinkValues = .allocate(capacity: max(1, l.sink * d))
            bytes = groups * (l.kvHeads * (l.keyHeadBytes + l.maskBytes) + l.keyGridBytesPerGroup) + l.packedCapacity * l.valueTokenBytes
                + groups * l.valueGridBytesPerGroup + 2 * (l.residual + l.sink) * d * 2
        }

        deinit {
            keyCodes.deallocate(); keyMasks.deallocate(); keyScale.deallocate(); keyZero.deallocate()
            keyLimits.deallocate(); keyRef.deallocate(); keyShifts.deallocate()
            valueCodes.deallocate(); valueScale.deallocate(); valueZero.deallocate()
            valueLimits.deallocate(); valueRef.deallocate()
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
    /// First tokens of the groups of `stagingLayer` stored but not yet packed (`packPending`).
    var pendingGroups: [Int] = []

    /// How a pair's query energy E weighs its squared width when choosing the 4-bit and the
    /// dropped pairs: sqrt(E). E itself measured the same (docs/KV.md: 22.982 vs 22.981 over 40
    /// chunks); the square root is the milder of the two.
    @inline(__always)
    static func queryWeight(_ e: Double) -> Double { e.squareRoot() }

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
        let hd = geometry.headDim
        valueHadamard = configuration.resolvedValueHadamard && hd > 0 && hd & (hd - 1) == 0 && l.valueGroup <= hd && hd % l.valueGroup == 0
        rotation = configuration.quantizesKeysBeforeRoPE && geometry.ropeDims > 0
            ? KeyRotation(ropeDims: geometry.ropeDims, base: geometry.ropeBase, group: l.group, groups: l.packedCapacity / l.group, sink: l.sink) : nil
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
        let keys = (Double(geometry.kvHeads) * Double(layout.keyHeadBytes + layout.maskBytes) + Double(layout.keyGridBytesPerGroup)) / Double(group)
        let values = d * Double(valueBits) / 8 + Double(layout.valueGridBytesPerGroup) / Double(group)
        return Double(geometry.layers) * (keys + values)
    }

    public var allocatedBytes: Int {
        layers.reduce(0) { $0 + $1.bytes } + 2 * stagingCapacity * geometry.kvDim * 2 + (rotation?.bytes ?? 0)
    }
}

/// Sizes derived from a configuration and geometry.
struct KIVILayout {
    let keyBits: Int, valueBits: Int, group: Int, residual: Int, sink: Int, kvDim: Int, kvHeads: Int, headDim: Int
    /// Pre-RoPE keys: rotary pairs per head and group stored with `keyHighBits` (the widest ones,
    /// chosen per group; see `KVCacheConfiguration.keyOutlierPairs`), and the pairs whose order is
    /// recorded (ropeDims / 2 when keyHighPairs > 0, else 0). Up to 64 pairs (a 64-bit mask per
    /// head and group); with more rotary pairs than that the split is off.
    let keyHighPairs: Int, orderedPairs: Int
    /// Pre-RoPE keys: the narrowest rotary pairs per head and group, stored without codes.
    let keyZeroPairs: Int
    /// Bytes of masks per head and group: 16 when the split is on.
    var maskBytes: Int { orderedPairs > 0 ? 16 : 0 }
    static let keyHighBits = 4
    /// G * keyHighBits / 8: one high-precision channel of one key group.
    let keyHighRowBytes: Int
    /// One head's key codes in one group: 2 * keyHighPairs high rows, then the rest.
    let keyHeadBytes: Int
    /// Channels per value group (`KVCacheConfiguration.resolvedValueGroup`).
    let valueGroup: Int
    /// Tokens the packed store can hold: windowStart(capacity) - sink.
    let packedCapacity: Int
    /// G * bits / 8: one channel of one key group.
    let keyRowBytes: Int
    /// kvDim * bits / 8: one token's value codes.
    let valueTokenBytes: Int
    /// kvDim / valueGroup: value groups per token.
    let valueGroups: Int
    /// Whether key and value grids are compact (`KVCacheConfiguration.compactGrids`).
    let compactKeys: Bool, compactValues: Bool
    /// Whether the pair split weighs widths by query energy (`KVCacheConfiguration.queryWeightedPairs`).
    let queryWeightedPairs: Bool
    /// Bytes of key grids per packed group: an f16 scale and zero per channel, or two bytes and a
    /// 4-bit shift per channel and an f16 bound per head.
    var keyGridBytesPerGroup: Int { compactKeys ? 2 * kvDim + (kvDim + 1) / 2 + 2 * kvHeads : 4 * kvDim }
    /// Bytes of value grids per packed group of G tokens.
    var valueGridBytesPerGroup: Int { compactValues ? group * 2 * valueGroups + 2 * valueGroups : group * 4 * valueGroups }

    init(_ c: KVCacheConfiguration, _ g: KVGeometry) {
        keyBits = c.bits
        valueBits = c.valueBits ?? c.bits
        group = c.group
        residual = c.residual
        sink = c.sink
        kvDim = g.kvDim
        keyRowBytes = group * keyBits / 8
        kvHeads = g.kvHeads
        headDim = g.headDim
        let pairs = c.quantizesKeysBeforeRoPE ? g.ropeDims / 2 : 0
        keyHighPairs = pairs <= 64 ? min(pairs, c.resolvedKeyOutlierPairs) : 0
        keyZeroPairs = pairs <= 64 ? min(pairs - keyHighPairs, c.resolvedKeyDroppedPairs) : 0
        orderedPairs = keyHighPairs + keyZeroPairs > 0 ? pairs : 0
        keyHighRowBytes = group * Self.keyHighBits / 8
        keyHeadBytes = 2 * keyHighPairs * keyHighRowBytes + (headDim - 2 * keyHighPairs - 2 * keyZeroPairs) * keyRowBytes
        valueTokenBytes = kvDim * valueBits / 8
        valueGroup = c.resolvedValueGroup(kvDim: g.kvDim)
        valueGroups = kvDim / valueGroup
        compactKeys = c.resolvedCompactKeyGrids
        compactValues = c.resolvedCompactValueGrids
        queryWeightedPairs = orderedPairs > 0 && c.resolvedQueryWeightedPairs
        let cap = max(0, g.capacity)
        packedCapacity = group * ((max(0, cap - c.sink - residual) + group - 1) / group)
    }

    /// The order of a head's code rows, two per pair: the pairs set in `high` ascending, then
    /// those in neither mask, then those set in `zero` (which have no rows).
    @inline(__always)
    func pairOrder(high: UInt64, zero: UInt64, into order: UnsafeMutablePointer<UInt8>) {
        var k = 0
        for i in 0..<orderedPairs where high & (1 << UInt64(i)) != 0 { order[k] = UInt8(i); k += 1 }
        for i in 0..<orderedPairs where (high | zero) & (1 << UInt64(i)) == 0 { order[k] = UInt8(i); k += 1 }
        for i in 0..<orderedPairs where zero & (1 << UInt64(i)) != 0 { order[k] = UInt8(i); k += 1 }
    }

    /// `pairOrder` for head h of packed group gi of layer l.
    @inline(__always)
    func pairOrder(_ masks: UnsafePointer<UInt64>, group gi: Int, head h: Int, into order: UnsafeMutablePointer<UInt8>) {
        pairOrder(high: masks[2 * (gi * kvHeads + h)], zero: masks[2 * (gi * kvHeads + h) + 1], into: order)
    }

    /// For each channel of one head's key block, the byte offset of its code row and its width
    /// (0: no codes), given the group's masks (`pairOrder`; ignored without a split). Iterates
    /// set bits rather than all pairs: this runs once per packed group and KV head in attention.
    @inline(__always)
    func keyRows(high: UInt64, zero: UInt64, offsets: UnsafeMutablePointer<Int32>, bits: UnsafeMutablePointer<UInt8>) {
        var first = 0
        if orderedPairs > 0 {
            let hiRows = 2 * keyHighPairs * keyHighRowBytes
            var k = 0
            func place(_ m: UInt64) {
                var m = m
                while m != 0 {
                    let i = m.trailingZeroBitCount
                    let (offset, width, row): (Int, UInt8, Int) =
                        k < keyHighPairs ? (2 * k * keyHighRowBytes, UInt8(Self.keyHighBits), keyHighRowBytes)
                        : k < orderedPairs - keyZeroPairs ? (hiRows + 2 * (k - keyHighPairs) * keyRowBytes, UInt8(keyBits), keyRowBytes)
                        : (0, 0, 0)
                    offsets[2 * i] = Int32(offset); offsets[2 * i + 1] = Int32(offset + row)
                    bits[2 * i] = width; bits[2 * i + 1] = width
                    k += 1
                    m &= m - 1
                }
            }
            let all: UInt64 = orderedPairs == 64 ? ~0 : (1 << UInt64(orderedPairs)) - 1
            place(high & all)
            place(all & ~(high | zero))
            place(zero & all)
            first = 2 * orderedPairs
        }
        for c in first..<headDim {
            let (offset, width) = keyRow(c)
            offsets[c] = Int32(offset)
            bits[c] = UInt8(width)
        }
    }

    /// Byte offset of head h's key codes in packed group gi.
    @inline(__always)
    func keyBlock(group gi: Int, head h: Int) -> Int { (gi * kvHeads + h) * keyHeadBytes }

    /// Byte offset within a head's block of code row r, and its bits.
    @inline(__always)
    func keyRow(_ r: Int) -> (offset: Int, bits: Int) {
        let hi = 2 * keyHighPairs, zeroStart = 2 * (orderedPairs - keyZeroPairs), zeroEnd = 2 * orderedPairs
        if r < hi { return (r * keyHighRowBytes, Self.keyHighBits) }
        if r >= zeroStart && r < zeroEnd { return (0, 0) }
        let low = r < zeroStart ? r - hi : r - hi - 2 * keyZeroPairs
        return (hi * keyHighRowBytes + low * keyRowBytes, keyBits)
    }

    /// Tokens before the window when the cache holds c tokens: min(c, S) sink tokens, then whole
    /// packed groups, leaving at most R tokens in the window. Packed group gi holds tokens
    /// S + gi * G ..< S + (gi + 1) * G.
    @inline(__always)
    func windowStart(_ c: Int) -> Int { min(c, sink) + group * ((max(0, c - sink - residual) + group - 1) / group) }
}

/// The rotary angles a pre-RoPE key cache needs, kept small: a key at position P + m, with P the
/// first position of its packed group, is rotated by angle (P + m) * theta_i, and
/// cos/sin((P + m) theta) follow from cos/sin(P theta) and cos/sin(m theta) by angle addition. So
/// the cache keeps one row per group start (groups, pair) and one column per offset in a group
/// (pair, G), about 25 KB for this model at context 2048, instead of a (pair, position) table as
/// large as 1% of the packed cache. Attention rotates the query back by P once per group
/// (`queryAtGroupStart`) and the key tile by each offset m (`KIVITiles`: 8 or 16 consecutive
/// lanes of one offset column). Angles are computed in Double as `RopeTable` does.
final class KeyRotation {
    let ropeDims: Int, pairs: Int, group: Int, groups: Int, sink: Int
    /// (pair, G): cos and sin of m * theta_i for offsets m in 0..<G.
    let offsetCos: UnsafeMutablePointer<Float>, offsetSin: UnsafeMutablePointer<Float>
    /// (groups, pair): cos and sin of (S + gi * G) * theta_i.
    let startCos: UnsafeMutablePointer<Float>, startSin: UnsafeMutablePointer<Float>

    init(ropeDims: Int, base: Float, group: Int, groups: Int, sink: Int) {
        self.ropeDims = ropeDims
        pairs = ropeDims / 2
        self.group = group
        self.groups = groups
        self.sink = sink
        let pairs = ropeDims / 2
        offsetCos = .allocate(capacity: max(1, pairs * group))
        offsetSin = .allocate(capacity: max(1, pairs * group))
        startCos = .allocate(capacity: max(1, pairs * groups))
        startSin = .allocate(capacity: max(1, pairs * groups))
        for i in 0..<pairs {
            let inv = pow(Double(base), -Double(2 * i) / Double(ropeDims))
            for m in 0..<group {
                offsetCos[i * group + m] = Float(Foundation.cos(Double(m) * inv))
                offsetSin[i * group + m] = Float(Foundation.sin(Double(m) * inv))
            }
            for gi in 0..<groups {
                let theta = Double(sink + gi * group) * inv
                startCos[gi * pairs + i] = Float(Foundation.cos(theta))
                startSin[gi * pairs + i] = Float(Foundation.sin(theta))
            }
        }
    }

    deinit {
        offsetCos.deallocate(); offsetSin.deallocate(); startCos.deallocate(); startSin.deallocate()
    }

    var bytes: Int { 4 * pairs * (group + groups) * 4 }

    /// cos and sin of the angle of pair i at offset m of packed group gi.
    @inline(__always)
    func angle(pair i: Int, group gi: Int, offset m: Int) -> (cos: Float, sin: Float) {
        let cp = startCos[gi * pairs + i], sp = startSin[gi * pairs + i]
        let cm = offsetCos[i * group + m], sm = offsetSin[i * group + m]
        return (cp * cm - sp * sm, sp * cm + cp * sm)
    }

    /// Rotates the first `ropeDims` channels of one head vector x by +angle (sign 1, as the model's
    /// RoPE does) or -angle (sign -1) of offset m in packed group gi.
    @inline(__always)
    func rotate(_ x: UnsafeMutablePointer<Float>, group gi: Int, offset m: Int, sign: Float) {
        for i in 0..<pairs {
            let (c, s0) = angle(pair: i, group: gi, offset: m)
            let s = sign * s0
            let a = x[2 * i], b = x[2 * i + 1]
            x[2 * i] = a * c - b * s
            x[2 * i + 1] = a * s + b * c
        }
    }

    /// A query in key tile order (`KIVITiles`: pair i's channels at i and pairs + i, then the rest)
    /// rotated back by the start position of group gi: q'_a = q_a cos + q_b sin,
    /// q'_b = q_b cos - q_a sin; channels past ropeDims copied.
    @inline(__always)
    func queryAtGroupStart(_ q: UnsafePointer<Float>, channels: Int, group gi: Int, into out: UnsafeMutablePointer<Float>) {
        typealias V = SIMD8<Float>
        let cs = startCos + gi * pairs, sn = startSin + gi * pairs
        func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
        var i = 0
        while i + 8 <= pairs {
            let a = load(q + i), b = load(q + pairs + i), c = load(cs + i), s = load(sn + i)
            UnsafeMutableRawPointer(out + i).storeBytes(of: a * c + b * s, as: V.self)
            UnsafeMutableRawPointer(out + pairs + i).storeBytes(of: b * c - a * s, as: V.self)
            i += 8
        }
        while i < pairs {
            let a = q[i], b = q[pairs + i], c = cs[i], s = sn[i]
            out[i] = a * c + b * s
            out[pairs + i] = b * c - a * s
            i += 1
        }
        for c in ropeDims..<channels { out[c] = q[c] }
    }
}
