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
        var lo = Float.infinity, hi = -Float.infinity
        for i in 0..<n { let v = x(i); lo = min(lo, v); hi = max(hi, v) }
        let qmax = Float(maxCode(bits: bits))
        var zeroBits = Half.bits(lo), scaleBits = Half.bits((hi - lo) / qmax)
        if clipSteps > 0, hi > lo {
            var best = squaredError(n: n, qmax: qmax, scale: scaleBits, zero: zeroBits, x)
            let step = (hi - lo) * clipStep
            for a in 0...clipSteps {
                for b in 0...clipSteps where a + b > 0 {
                    let l = lo + Float(a) * step, h = hi - Float(b) * step
                    let zb = Half.bits(l), sb = Half.bits((h - l) / qmax)
                    let e = squaredError(n: n, qmax: qmax, scale: sb, zero: zb, x)
                    if e < best { best = e; zeroBits = zb; scaleBits = sb }
                }
            }
        }
        // Codes are computed against the stored (f16) scale and zero, which dequantization uses.
        let z = Half.referenceFloat(zeroBits), s = Half.referenceFloat(scaleBits)
        let inv: Float = s > 0 && s.isFinite ? 1 / s : 0
        codes.initializeMemory(as: UInt8.self, repeating: 0, count: n * bits / 8)
        let bytes = codes.assumingMemoryBound(to: UInt8.self)
        for i in 0..<n {
            let q = min(max(((x(i) - z) * inv).rounded(.toNearestOrEven), 0), qmax)
            let bit = i * bits
            bytes[bit >> 3] |= UInt8(Int(q) << (bit & 7))
        }
        return (scaleBits, zeroBits)
    }

    /// A group stored without codes: scale 0 and zero the middle of its range (error at most half the range).
    @inline(__always)
    static func midpoint(n: Int, _ x: (Int) -> Float) -> (scale: UInt16, zero: UInt16) {
        var lo = Float.infinity, hi = -Float.infinity
        for i in 0..<n { let v = x(i); lo = min(lo, v); hi = max(hi, v) }
        return (0, Half.bits(lo + (hi - lo) / 2))
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
