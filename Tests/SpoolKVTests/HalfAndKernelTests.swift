@testable import SpoolKV
import SpoolTestSupport
import XCTest

final class HalfAndKernelTests: XCTestCase {
    func testHalfToFloatMatchesFloat16ForEveryBitPattern() {
        var halves = [UInt16](repeating: 0, count: 8)
        for base in stride(from: 0, to: 65536, by: 8) {
            for i in 0..<8 { halves[i] = UInt16(base + i) }
            let (even, odd) = halves.withUnsafeBufferPointer { Half.load8Split($0.baseAddress!) }
            for i in 0..<8 {
                let ref = Half.referenceFloat(halves[i])
                for got in [i % 2 == 0 ? even[i / 2] : odd[i / 2], Half.float(halves[i])] {
                    if ref.isNaN { XCTAssertTrue(got.isNaN, "\(halves[i])") } else {
                        XCTAssertEqual(got.bitPattern, ref.bitPattern, "half \(halves[i])")
                    }
                }
            }
        }
    }

    /// `Half.bits` against the standard library's conversion: every f16 value, the floats next to
    /// it, every tie between neighbours (round to even) and the floats either side of each tie,
    /// plus random bit patterns over the whole float range.
    func testFloatToHalfMatchesFloat16() {
        func check(_ x: Float) {
            let got = Half.bits(x), want = Half.referenceBits(x)
            if x.isNaN { XCTAssertTrue(Float16(bitPattern: got).isNaN, "\(x.bitPattern)") } else {
                XCTAssertEqual(got, want, "float bits \(String(x.bitPattern, radix: 16))")
            }
        }
        for h in 0..<UInt32(0x7c00) {
            for sign: Float in [1, -1] {
                let a = sign * Float(Float16(bitPattern: UInt16(h))), b = sign * Float(Float16(bitPattern: UInt16(h + 1)))
                let tie = (a + b) / 2
                for x in [a, a.nextUp, a.nextDown, tie, tie.nextUp, tie.nextDown] { check(x) }
            }
        }
        var r = TestRandom(seed: 77)
        for _ in 0..<200_000 { check(Float(bitPattern: UInt32(truncatingIfNeeded: Int(r.float(0, 1) * 4_294_967_295)))) }
        for x: Float in [0, -0, .infinity, -.infinity, .nan, 65504, 65519.99, 65520, 1e-8, 3e-8, -2.98e-8, .greatestFiniteMagnitude] { check(x) }
    }

    func testQuantizeRoundTripWithinStatedError() {
        var r = TestRandom(seed: 2)
        for bits in [2, 4, 8] {
            for n in [8, 32, 64] {
                for trial in 0..<20 {
                    let offset = r.float(-20, 20), spread = trial == 0 ? 0 : r.float(0.01, 10)
                    let x = (0..<n).map { _ in offset + spread * r.float(-1, 1) }
                    var codes = [UInt8](repeating: 0, count: n * bits / 8)
                    let (s, z) = codes.withUnsafeMutableBytes { KIVIQuant.quantize(n: n, bits: bits, codes: $0.baseAddress!) { x[$0] } }
                    let lo = x.min()!, hi = x.max()!
                    // The error stated on KIVIQuant: half a step plus the f16 rounding of scale and zero.
                    let limit = (hi - lo) / Float(KIVIQuant.maxCode(bits: bits)) / 2 + (abs(lo) + (hi - lo)) * 0x1p-11 + 1e-7
                    codes.withUnsafeBytes { c in
                        for i in 0..<n {
                            let y = KIVIQuant.dequantize(c.baseAddress!, index: i, bits: bits, scale: s, zero: z)
                            XCTAssertLessThanOrEqual(abs(y - x[i]), limit, "bits \(bits) n \(n) value \(i)")
                        }
                    }
                }
            }
        }
    }

    /// Compact grids (`KIVIQuant.compactGrid`): the decoded range covers the group (ends rounded
    /// outwards), widens it by at most 2/127 of the channel's bound (ref * 2^-shift), the f16
    /// scale and zero are that range up to f16 rounding (relative, or 2^-25 absolute below f16's
    /// normal range), and the bound covers the channel while the next shift would not.
    func testCompactGridCoversRangeWithinStatedWidening() {
        var r = TestRandom(seed: 5)
        for trial in 0..<2000 {
            let amax = r.float(0.001, 300)
            // One channel of the block: anywhere from the widest down to 2^-12 of the bound.
            let scale = trial % 3 == 0 ? 1 : Float(sign: .plus, exponent: -Int(r.float(0, 12)), significand: 1)
            var lo = r.float(-amax, amax) * scale, hi = r.float(-amax, amax) * scale
            if lo > hi { swap(&lo, &hi) }
            let ref = KIVIQuant.reference(amax)
            XCTAssertGreaterThanOrEqual(Half.referenceFloat(ref), amax)
            let cmax = max(abs(lo), abs(hi))
            for shift in [0, KIVIQuant.shift(amax: cmax, ref: ref)] {
                let bound = KIVIQuant.bound(ref: ref, shift: shift)
                XCTAssertGreaterThanOrEqual(bound, cmax)
                for bits in [2, 4] {
                    let e = KIVIQuant.compactLimits(lo: lo, hi: hi, ref: ref, shift: shift, bits: bits)
                    let l = KIVIQuant.limit(e.lo, bound: bound), h = KIVIQuant.limit(e.hi, bound: bound)
                    XCTAssertLessThanOrEqual(l, lo + bound * 1e-6, "trial \(trial)")
                    XCTAssertGreaterThanOrEqual(h, hi - bound * 1e-6, "trial \(trial)")
                    XCTAssertLessThanOrEqual((h - l) - (hi - lo), 2 * bound / KIVIQuant.limitSteps * (1 + 1e-5), "trial \(trial)")
                    let g = KIVIQuant.compactGrid(lo: e.lo, hi: e.hi, ref: ref, shift: shift, bits: bits)
                    XCTAssertEqual(Half.referenceFloat(g.zero), l, accuracy: abs(l) * 0x1p-11 + 0x1p-25)
                    XCTAssertEqual(Half.referenceFloat(g.scale) * Float(KIVIQuant.maxCode(bits: bits)), h - l, accuracy: (h - l) * 0x1p-10 + Float(KIVIQuant.maxCode(bits: bits)) * 0x1p-25)
                }
            }
            let s = KIVIQuant.shift(amax: cmax, ref: ref)
            if s < KIVIQuant.maxShift { XCTAssertLessThan(KIVIQuant.bound(ref: ref, shift: s + 1), cmax, "trial \(trial)") }
        }
    }

    /// With the shift, a channel 1000x narrower than its head's widest keeps steps close to its
    /// own range; with shift 0 its range would widen by up to 2/127 of the widest's bound.
    func testCompactShiftKeepsNarrowChannelsFine() {
        let ref = KIVIQuant.reference(100)
        let lo: Float = 0.031, hi: Float = 0.097
        let s = KIVIQuant.shift(amax: hi, ref: ref)
        XCTAssertGreaterThan(s, 8)
        for (shift, limit) in [(s, Float(1.05)), (0, Float(30))] {
            let e = KIVIQuant.compactLimits(lo: lo, hi: hi, ref: ref, shift: shift, bits: 2)
            let b = KIVIQuant.bound(ref: ref, shift: shift)
            let width = KIVIQuant.limit(e.hi, bound: b) - KIVIQuant.limit(e.lo, bound: b)
            if shift == 0 { XCTAssertGreaterThan(width, 10 * (hi - lo)) } else { XCTAssertLessThanOrEqual(width, limit * (hi - lo)) }
        }
    }
}
