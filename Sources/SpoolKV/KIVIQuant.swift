/// Asymmetric round-to-nearest quantization of KIVI groups and the bit layout of their codes.
///
/// A group of n values x is stored as codes q in 0...2^bits-1 with an f16 scale s and an f16 zero
/// point z (the group minimum): x ~ s * q + z. Codes are packed little-endian, value i at bit
/// i * bits, so that 8 consecutive codes are `bits` bytes (2, 4, 8 bits never straddle a byte).
///
/// Error per value: at most s/2 from rounding, plus the f16 rounding of s (times q) and of z, i.e.
/// |x - x'| <= s/2 + (|z| + (max - min)) * 2^-11 (the tests state it as `maxRoundTripError`).
enum KIVIQuant {
    static func maxCode(bits: Int) -> Int { (1 << bits) - 1 }

    /// Quantizes n values read as x(i) into `codes` (n * bits / 8 bytes) and returns (scale, zero) as f16 bits.
    /// With `clipSteps` > 0 it also tries ranges clipped at either end (by multiples of
    /// `clipStep` of the min-max range, up to `clipSteps` of them per end) and keeps the range whose
    /// rounding error (sum of squares, against the stored f16 scale and zero) is smallest.
    @inline(__always)
    static func quantize(
        n: Int, bits: Int, codes: UnsafeMutableRawPointer, clipSteps: Int = 0, _ x: (Int) -> Float
    ) -> (scale: UInt16, zero: UInt16) {
        let r = range(n: n, bits: bits, clipSteps: clipSteps, x)
        let grid = grid(lo: r.lo, hi: r.hi, bits: bits)
        encode(n: n, bits: bits, codes: codes, scale: grid.scale, zero: grid.zero, x)
        return grid
    }

    /// The f16 (scale, zero) of the range lo...hi at `bits` (scale 0 and zero the midpoint at 0 bits).
    @inline(__always)
    static func grid(lo: Float, hi: Float, bits: Int) -> (scale: UInt16, zero: UInt16) {
        bits == 0 ? (0, Half.bits(lo + (hi - lo) / 2)) : (Half.bits((hi - lo) / Float(maxCode(bits: bits))), Half.bits(lo))
    }

    /// The range a group is quantized over: min...max, or with `clipSteps` > 0 the clipped range
    /// with the least squared rounding error (see `quantize`).
    @inline(__always)
    static func range(n: Int, bits: Int, clipSteps: Int = 0, _ x: (Int) -> Float) -> (lo: Float, hi: Float) {
        var lo = Float.infinity, hi = -Float.infinity
        for i in 0..<n { let v = x(i); lo = min(lo, v); hi = max(hi, v) }
        guard clipSteps > 0, bits > 0, hi > lo else { return (lo, hi) }
        let qmax = Float(maxCode(bits: bits))
        var best = squaredError(n: n, qmax: qmax, scale: Half.bits((hi - lo) / qmax), zero: Half.bits(lo), x)
        var out = (lo: lo, hi: hi)
        let step = (hi - lo) * clipStep
        for a in 0...clipSteps {
            for b in 0...clipSteps where a + b > 0 {
                let l = lo + Float(a) * step, h = hi - Float(b) * step
                let e = squaredError(n: n, qmax: qmax, scale: Half.bits((h - l) / qmax), zero: Half.bits(l), x)
                if e < best { best = e; out = (l, h) }
            }
        }
        return out
    }

    /// Writes the codes of n values against a stored (f16) scale and zero, which dequantization uses.
    @inline(__always)
    static func encode(n: Int, bits: Int, codes: UnsafeMutableRawPointer, scale: UInt16, zero: UInt16, _ x: (Int) -> Float) {
        let qmax = Float(maxCode(bits: bits))
        let z = Half.referenceFloat(zero), s = Half.referenceFloat(scale)
        let inv: Float = s > 0 && s.isFinite ? 1 / s : 0
        codes.initializeMemory(as: UInt8.self, repeating: 0, count: n * bits / 8)
        let bytes = codes.assumingMemoryBound(to: UInt8.self)
        for i in 0..<n {
            let q = min(max(((x(i) - z) * inv).rounded(.toNearestOrEven), 0), qmax)
            let bit = i * bits
            bytes[bit >> 3] |= UInt8(Int(q) << (bit & 7))
        }
    }

    // MARK: compact grids

    /// Compact grids (`KVCacheConfiguration.compactGrids`): instead of an f16 scale and zero per
    /// group, the ends lo...hi of its range as signed 8-bit multiples of ref * 2^-shift / 127.
    /// ref (f16) is shared by a block of groups (a key head's channels in one packed group, or one
    /// value group's G tokens) and bounds every |lo| and |hi| in it; key channels also keep a
    /// 4-bit shift, the largest that still bounds their own range, because pre-RoPE keys have
    /// outlier channels many times wider than the rest, and steps of ref / 127 alone would be
    /// coarse for the narrow ones (measured: +0.23% perplexity without the shift; values, whose
    /// Hadamard rotation evens out their groups, use shift 0). The ends are rounded outwards, so
    /// the range still covers the group, widened by at most 2 / 127 of the bound. The
    /// (scale, zero) used to encode and decode are derived from the bytes (`compactGrid`), in f16.
    static let limitSteps: Float = 127
    static let maxShift = 15

    /// The smallest f16 >= amax (> 0 unless amax is 0).
    @inline(__always)
    static func reference(_ amax: Float) -> UInt16 {
        let a = max(0, amax)
        var b = Half.bits(a)
        if Half.referenceFloat(b) < a { b &+= 1 }
        return b
    }

    /// The largest shift s <= maxShift with ref * 2^-s >= amax (the bound of one channel).
    @inline(__always)
    static func shift(amax: Float, ref: UInt16) -> Int {
        let r = Half.referenceFloat(ref)
        var s = 0
        while s < maxShift && r * Float(sign: .plus, exponent: -(s + 1), significand: 1) >= amax { s += 1 }
        return s
    }

    /// A channel's bound, ref * 2^-shift. Attention evaluates it for every grid it reads, so it
    /// widens ref with `Half.float` (exact, no libcall) rather than `referenceFloat`.
    @inline(__always)
    static func bound(ref: UInt16, shift: Int) -> Float { Half.float(ref) * Float(sign: .plus, exponent: -shift, significand: 1) }

    /// The 8-bit code of a range end x (|x| <= the bound), rounded down (`up` false), up, or to nearest.
    @inline(__always)
    static func limitCode(_ x: Float, bound r: Float, _ rule: FloatingPointRoundingRule) -> Int8 {
        guard r > 0 else { return 0 }
        return Int8(min(max((x / r * limitSteps).rounded(rule), -limitSteps), limitSteps))
    }

    @inline(__always)
    static func limit(_ code: Int8, bound r: Float) -> Float { r * Float(code) / limitSteps }

    /// The f16 (scale, zero) of a compact grid: at 0 bits (no codes) lo is the midpoint and hi unused.
    @inline(__always)
    static func compactGrid(lo: Int8, hi: Int8, ref: UInt16, shift: Int = 0, bits: Int) -> (scale: UInt16, zero: UInt16) {
        let r = bound(ref: ref, shift: shift)
        let l = limit(lo, bound: r)
        guard bits > 0 else { return (0, Half.bits(l)) }
        return (Half.bits((limit(hi, bound: r) - l) / Float(maxCode(bits: bits))), Half.bits(l))
    }

    /// Compact limits of a range lo...hi (at 0 bits: its midpoint, and 0).
    @inline(__always)
    static func compactLimits(lo: Float, hi: Float, ref: UInt16, shift: Int = 0, bits: Int) -> (lo: Int8, hi: Int8) {
        let r = bound(ref: ref, shift: shift)
        return bits == 0 ? (limitCode(lo + (hi - lo) / 2, bound: r, .toNearestOrEven), 0)
            : (limitCode(lo, bound: r, .down), limitCode(hi, bound: r, .up))
    }

    /// The fraction of a group's min-max range one clipping step removes (see `quantize`).
    static let clipStep: Float = 0.05

    /// Sum over the group of (x - dequantized x)^2 with round-to-nearest codes clamped to 0...qmax.
    @inline(__always)
    static func squaredError(n: Int, qmax: Float, scale: UInt16, zero: UInt16, _ x: (Int) -> Float) -> Float {
        let z = Half.referenceFloat(zero), s = Half.referenceFloat(scale)
        let inv: Float = s > 0 && s.isFinite ? 1 / s : 0
        var e: Float = 0
        for i in 0..<n {
            let v = x(i)
            let q = min(max(((v - z) * inv).rounded(.toNearestOrEven), 0), qmax)
            let r = v - (s * q + z)
            e += r * r
        }
        return e
    }

    @inline(__always)
    static func code(_ codes: UnsafeRawPointer, index i: Int, bits: Int) -> Int {
        let bit = i * bits
        return Int(codes.load(fromByteOffset: bit >> 3, as: UInt8.self) >> UInt8(bit & 7)) & maxCode(bits: bits)
    }

    @inline(__always)
    static func dequantize(_ codes: UnsafeRawPointer, index i: Int, bits: Int, scale: UInt16, zero: UInt16) -> Float {
        Half.float(scale) * Float(code(codes, index: i, bits: bits)) + Half.float(zero)
    }
}

/// Unpacking of 8 consecutive codes into floats with portable SIMD that needs no per-lane shifts
/// (SSE2 has none): each lane masks its own code in place, so lane m holds code * laneScale[m]^-1;
/// kernels accumulate those and multiply by `laneScale` once at the end (powers of two: exact).
/// The integers stay below 2^16 and become floats through the 2^23 magic-number trick.
protocol CodeWidth {
    static var bits: Int { get }
    static var laneScale: SIMD8<Float> { get }
    static func unpack8(_ row: UnsafeRawPointer, chunk: Int) -> SIMD8<Float>
}

@inline(__always)
func kiviSmallIntsToFloat(_ u: SIMD8<UInt32>) -> SIMD8<Float> {
    unsafeBitCast(u | 0x4B00_0000, to: SIMD8<Float>.self) - 8_388_608
}

enum Code2: CodeWidth {
    static var bits: Int { 2 }
    static var laneScale: SIMD8<Float> { SIMD8(1, 0x1p-2, 0x1p-4, 0x1p-6, 0x1p-8, 0x1p-10, 0x1p-12, 0x1p-14) }
    @inline(__always)
    static func unpack8(_ row: UnsafeRawPointer, chunk: Int) -> SIMD8<Float> {
        let v = UInt32(row.loadUnaligned(fromByteOffset: chunk * 2, as: UInt16.self))
        let masks = SIMD8<UInt32>(3, 3 << 2, 3 << 4, 3 << 6, 3 << 8, 3 << 10, 3 << 12, 3 << 14)
        return kiviSmallIntsToFloat(SIMD8(repeating: v) & masks)
    }
}

enum Code4: CodeWidth {
    static var bits: Int { 4 }
    static var laneScale: SIMD8<Float> { SIMD8(1, 0x1p-4, 0x1p-8, 0x1p-12, 1, 0x1p-4, 0x1p-8, 0x1p-12) }
    @inline(__always)
    static func unpack8(_ row: UnsafeRawPointer, chunk: Int) -> SIMD8<Float> {
        let v = row.loadUnaligned(fromByteOffset: chunk * 4, as: UInt32.self)
        let lo = v & 0xffff, hi = v >> 16
        let masks = SIMD8<UInt32>(0xf, 0xf0, 0xf00, 0xf000, 0xf, 0xf0, 0xf00, 0xf000)
        return kiviSmallIntsToFloat(SIMD8(lo, lo, lo, lo, hi, hi, hi, hi) & masks)
    }
}

enum Code8: CodeWidth {
    static var bits: Int { 8 }
    static var laneScale: SIMD8<Float> { SIMD8(1, 0x1p-8, 1, 0x1p-8, 1, 0x1p-8, 1, 0x1p-8) }
    @inline(__always)
    static func unpack8(_ row: UnsafeRawPointer, chunk: Int) -> SIMD8<Float> {
        let v = row.loadUnaligned(fromByteOffset: chunk * 8, as: UInt64.self)
        let a = UInt32(truncatingIfNeeded: v) & 0xffff, b = UInt32(truncatingIfNeeded: v >> 16) & 0xffff
        let c = UInt32(truncatingIfNeeded: v >> 32) & 0xffff, d = UInt32(truncatingIfNeeded: v >> 48)
        let masks = SIMD8<UInt32>(0xff, 0xff00, 0xff, 0xff00, 0xff, 0xff00, 0xff, 0xff00)
        return kiviSmallIntsToFloat(SIMD8(a, a, b, b, c, c, d, d) & masks)
    }
}
