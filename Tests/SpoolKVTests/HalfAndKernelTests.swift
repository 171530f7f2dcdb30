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
}
