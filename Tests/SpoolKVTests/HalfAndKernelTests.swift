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

    func testDotHalfMatchesReference() {
        var r = TestRandom(seed: 1)
        for n in [8, 24, 64, 70] {
            let a = r.floats(n), b = r.floats(n, -3, 3).map { Half.bits($0) }
            var split = a
            KVKernels.deinterleave(a, n, into: &split)
            let got = KVKernels.dotHalf(split, b, n), ref = KVKernels.dotHalfReference(a, b, n)
            let mag = (0..<n).reduce(Float(0)) { $0 + abs(a[$1] * Half.referenceFloat(b[$1])) }
            XCTAssertLessThanOrEqual(abs(got - ref), MAX_KV_KERNEL_REL_ERROR * mag, "n \(n)")
        }
    }

    func testAxpyHalfMatchesReferenceAndInterleaveInverts() {
        var r = TestRandom(seed: 5)
        for n in [8, 64, 70] {
            let x = r.floats(n, -3, 3).map { Half.bits($0) }, start = r.floats(n), w = r.float(-2, 2)
            var split = start, back = start
            KVKernels.deinterleave(start, n, into: &split)
            XCTAssertNotEqual(split, start)
            KVKernels.axpyHalf(w, x, &split, n)
            KVKernels.interleave(split, n, into: &back)
            for i in 0..<n {
                let ref = Double(start[i]) + Double(w) * Double(Half.referenceFloat(x[i]))
                XCTAssertLessThanOrEqual(abs(Double(back[i]) - ref), Double(MAX_KV_KERNEL_REL_ERROR) * (abs(Double(start[i])) + abs(ref)), "n \(n) i \(i)")
            }
        }
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

    func testKeyGroupScoresMatchReference() {
        var r = TestRandom(seed: 3)
        for bits in [2, 4, 8] {
            for group in [8, 24, 32, 64] {
                let channels = 64, rowBytes = group * bits / 8
                let codes = (0..<(channels * rowBytes)).map { _ in UInt8(truncatingIfNeeded: r.next()) }
                let qs = r.floats(channels, -2, 2), qz = r.float(-1, 1)
                var got = [Float](repeating: 0, count: group), ref = got
                codes.withUnsafeBytes { c in
                    switch bits {
                    case 2: KVKernels.keyGroupScores(Code2.self, qs: qs, qz: qz, codes: c.baseAddress!, rowBytes: rowBytes, channels: channels, group: group, into: &got)
                    case 4: KVKernels.keyGroupScores(Code4.self, qs: qs, qz: qz, codes: c.baseAddress!, rowBytes: rowBytes, channels: channels, group: group, into: &got)
                    default: KVKernels.keyGroupScores(Code8.self, qs: qs, qz: qz, codes: c.baseAddress!, rowBytes: rowBytes, channels: channels, group: group, into: &got)
                    }
                    KVKernels.keyGroupScoresReference(bits: bits, qs: qs, qz: qz, codes: c.baseAddress!, rowBytes: rowBytes, channels: channels, group: group, into: &ref)
                    for i in 0..<group {
                        let mag = abs(qz) + (0..<channels).reduce(Float(0)) { $0 + abs(qs[$1]) * Float(KIVIQuant.code(c.baseAddress! + $1 * rowBytes, index: i, bits: bits)) }
                        XCTAssertLessThanOrEqual(abs(got[i] - ref[i]), MAX_KV_KERNEL_REL_ERROR * mag, "bits \(bits) group \(group) token \(i)")
                    }
                }
            }
        }
    }

    func testValueAccumulateMatchesReference() {
        var r = TestRandom(seed: 4)
        for bits in [2, 4, 8] {
            for (group, kvDim, firstChannel, channels) in [(32, 192, 64, 64), (8, 192, 128, 64), (16, 64, 0, 64), (64, 192, 128, 64), (24, 96, 48, 48), (32, 96, 0, 40)] {
                let tokens = 37, tokenBytes = kvDim * bits / 8, groups = kvDim / group
                let codes = (0..<(tokens * tokenBytes)).map { _ in UInt8(truncatingIfNeeded: r.next()) }
                let scales = (0..<(tokens * groups)).map { _ in Half.bits(r.float(0, 0.5)) }
                let zeros = (0..<(tokens * groups)).map { _ in Half.bits(r.float(-2, 2)) }
                let w = r.floats(tokens, 0, 1)
                let start = r.floats(channels)
                var got = start, ref = start
                codes.withUnsafeBytes { c in scales.withUnsafeBufferPointer { sb in zeros.withUnsafeBufferPointer { zb in
                    let cp = c.baseAddress! + firstChannel * bits / 8
                    let sp = sb.baseAddress! + firstChannel / group, zp = zb.baseAddress! + firstChannel / group
                    switch bits {
                    case 2: KVKernels.valueAccumulate(Code2.self, weights: w, tokens: tokens, codes: cp, tokenBytes: tokenBytes, scales: sp, zeros: zp, groupsPerToken: groups, firstChannel: firstChannel, channels: channels, group: group, into: &got)
                    case 4: KVKernels.valueAccumulate(Code4.self, weights: w, tokens: tokens, codes: cp, tokenBytes: tokenBytes, scales: sp, zeros: zp, groupsPerToken: groups, firstChannel: firstChannel, channels: channels, group: group, into: &got)
                    default: KVKernels.valueAccumulate(Code8.self, weights: w, tokens: tokens, codes: cp, tokenBytes: tokenBytes, scales: sp, zeros: zp, groupsPerToken: groups, firstChannel: firstChannel, channels: channels, group: group, into: &got)
                    }
                    KVKernels.valueAccumulateReference(bits: bits, weights: w, tokens: tokens, codes: cp, tokenBytes: tokenBytes, scales: sp, zeros: zp, groupsPerToken: groups, firstChannel: firstChannel, channels: channels, group: group, into: &ref)
                } } }
                // Every term is at most w * (|scale| * 255 + |zero|) <= w * 130.
                let mag = abs(start.map(abs).max()!) + w.reduce(0, +) * 130
                for i in 0..<channels {
                    XCTAssertLessThanOrEqual(abs(got[i] - ref[i]), MAX_KV_KERNEL_REL_ERROR * mag, "bits \(bits) group \(group) channel \(i)")
                }
            }
        }
    }
}
