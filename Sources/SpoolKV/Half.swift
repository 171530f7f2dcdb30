/// IEEE binary16 <-> Float conversions for the f16 cache and the KIVI scales, zero points and
/// residual window.
///
/// f16 -> f32 is done with integer and float SIMD ops rather than `Float(Float16)`: this module is
/// compiled for the baseline x86-64 target (no F16C), where each `Float16` conversion is a libcall.
/// The trick: put the 15 exponent+mantissa bits where a Float keeps them and multiply by 2^112,
/// which moves the exponent bias from 15 to 127 and renormalizes f16 subnormals exactly; infinities
/// and NaNs (exponent 31) get the f32 all-ones exponent instead. `Float16` itself is the reference.
enum Half {
    typealias V = SIMD8<Float>

    /// Round to nearest even, bit for bit what `Float16(x)` gives (`referenceBits`), with integer
    /// and float ops instead of the libcall: attention derives the f16 grids of compact KIVI
    /// groups on every read (`KIVIQuant.compactGrid`), about 1.5 million conversions per decoded
    /// token at depth 2048, where the libcall cost a third of the decode time.
    /// Normal results: rebias the exponent, add the rounding bias (0xfff plus the bit that will be
    /// the last mantissa bit, for ties to even) and shift; overflow carries into the exponent,
    /// up to infinity. Subnormal results: a float add with 0.5 aligns the 10 mantissa bits at the
    /// bottom and rounds them to nearest even.
    @inline(__always)
    static func bits(_ x: Float) -> UInt16 {
        let u = x.bitPattern, sign = UInt16(truncatingIfNeeded: (u & 0x8000_0000) >> 16)
        let a = u & 0x7fff_ffff
        if a >= 0x4780_0000 { return sign | (a > 0x7f80_0000 ? 0x7e00 : 0x7c00) }  // >= 65536 (after rounding: inf), NaN
        if a < 0x3880_0000 {  // below 2^-14: f16 subnormal or zero
            let magic: Float = 0.5
            return sign | UInt16(truncatingIfNeeded: (Float(bitPattern: a) + magic).bitPattern &- magic.bitPattern)
        }
        let odd = (a >> 13) & 1
        return sign | UInt16(truncatingIfNeeded: (a &+ 0xc800_0fff &+ odd) >> 13)
    }

    /// The reference: the standard library's conversion.
    static func referenceBits(_ x: Float) -> UInt16 { Float16(x).bitPattern }

    /// The reference conversion.
    static func referenceFloat(_ h: UInt16) -> Float { Float(Float16(bitPattern: h)) }

    @inline(__always)
    static func float(_ h: UInt16) -> Float {
        let w = UInt32(h)
        let em = (w & 0x7fff) &<< 13
        var f = Float(bitPattern: em) * 0x1p112
        if w & 0x7c00 == 0x7c00 { f = Float(bitPattern: em | 0x7f80_0000) }
        return Float(bitPattern: f.bitPattern | ((w & 0x8000) &<< 16))
    }

    /// Eight halves from `p` (unaligned) as floats, split into even (h0, h2, h4, h6) and odd
    /// (h1, h3, h5, h7) lanes: two halves per 32-bit lane is what SSE2 can widen without a shuffle
    /// (the stdlib's SIMD8 widening conversions are not inlined, and cost a call each). Callers
    /// interleave the two halves back (`KIVITiles.halfRows`).
    @inline(__always)
    static func load8Split(_ p: UnsafePointer<UInt16>) -> (even: SIMD4<Float>, odd: SIMD4<Float>) {
        let raw = UnsafeRawPointer(p).loadUnaligned(as: SIMD4<UInt32>.self)
        return (convert4(raw & 0xffff), convert4(raw &>> 16))
    }

    /// Four halves held in the low 16 bits of each lane, as floats.
    @inline(__always)
    static func convert4(_ w: SIMD4<UInt32>) -> SIMD4<Float> {
        let em = (w & 0x7fff) &<< 13
        let scaled = unsafeBitCast(unsafeBitCast(em, to: SIMD4<Float>.self) * 0x1p112, to: SIMD4<UInt32>.self)
        // Exponent 31 (inf/NaN): (e + 1) << 10 carries into bit 15. The scaled value then has
        // exponent 143 and the right mantissa, so OR-ing in the all-ones exponent finishes it.
        let special = (((w & 0x7c00) &+ 0x0400) &>> 15) & 1
        let allOnesIfSpecial = SIMD4<UInt32>.zero &- special
        let bits = scaled | (allOnesIfSpecial & 0x7f80_0000) | ((w & 0x8000) &<< 16)
        return unsafeBitCast(bits, to: SIMD4<Float>.self)
    }

    /// Converts `count` floats to halves.
    static func store(_ x: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<UInt16>) {
        for i in 0..<count { out[i] = bits(x[i]) }
    }
}
