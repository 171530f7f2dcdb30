import Foundation
import SpoolGGMLMath
import SpoolKernels
import SpoolTestSupport
import XCTest

/// llama.cpp-exact arithmetic (SpoolGGMLMath): against plain math within named limits, and every
/// SIMD level against the generic one bit for bit (the whole point is that the results do not
/// depend on the level).
final class GGMLMathTests: XCTestCase {
    /// ggml_v_expf's stated accuracy is 1.45 ulp + 0.5 ulp; relative to Foundation.exp.
    static let MAX_GGML_EXP_REL_ERROR: Float = 3e-7
    /// Attention with f16 probabilities against a double-precision softmax · V over the same f16
    /// K/V values, relative to max |v|: the probabilities' f16 rounding (2^-11) dominates.
    static let MAX_ATTEND_HALF_REL_ERROR: Float = 2e-3

    func testExpAgainstFoundation() {
        var worst: Float = 0
        var x: Float = -87
        while x < 88 {
            var v = SIMD16<Float>(repeating: 0)
            for l in 0..<16 { v[l] = x + Float(l) * 0.0037 }
            let e = GGMLMath.exp(v)
            for l in 0..<16 {
                let ref = Foundation.exp(Double(v[l]))
                worst = max(worst, Float(abs(Double(e[l]) - ref) / ref))
            }
            x += 0.0591
        }
        XCTAssertLessThan(worst, Self.MAX_GGML_EXP_REL_ERROR)
        // Saturation as ggml does it: |n| > 192 gives 0 below, infinity above.
        let edge = GGMLMath.exp(SIMD16<Float>(repeating: -200).replacing(with: 200, where: SIMD16<Int32>(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1) .== 1))
        XCTAssertEqual(edge[0], 0)
        XCTAssertEqual(edge[1], .infinity)
        XCTAssertEqual(GGMLMath.exp(SIMD16<Float>(repeating: -.infinity))[3], 0)
    }

    func testReduceOrderIsGGMLs() {
        // 2^24 + 1 - 2^24 depends on the order: ggml's reduce adds lane i and lane i + 8 first.
        var v = SIMD16<Float>(repeating: 0)
        v[0] = 16_777_216; v[8] = 1; v[4] = -16_777_216
        // (v0 + v8) = 16777216 (the 1 is lost), + v4 = 0.
        XCTAssertEqual(GGMLMath.reduce(v), 0)
        var w = SIMD8<Float>(repeating: 0)
        w[0] = 16_777_216; w[4] = 1; w[2] = -16_777_216
        XCTAssertEqual(GGMLMath.reduce(w), 0)
    }

    func half(_ x: Float) -> UInt16 { Float16(x).bitPattern }

    func testAttendHalfAgainstDoubleReference() {
        var rng = TestRandom(seed: 11)
        let dim = 64, stride = 192, n = 77
        let keys = (0..<(n * stride)).map { _ in half(rng.float(-2, 2)) }
        let values = (0..<(n * stride)).map { _ in half(rng.float(-1, 1)) }
        let q = (0..<dim).map { _ in Float(Float16(rng.float(-2, 2))) }
        for single in [false, true] {
            var out = [Float](repeating: 0, count: dim)
            var scores = [Float](repeating: 0, count: n)
            var lanes = [Float](repeating: 0, count: 64 * dim)
            Kernels.attendHalf(query: q, keys: keys, values: values, stride: stride, count: n, dim: dim, scale: 0.125,
                               singleToken: single, scores: &scores, lanes: &lanes, into: &out)
            var s = (0..<n).map { j in (0..<dim).reduce(0.0) { $0 + Double(q[$1]) * Double(Float(Float16(bitPattern: keys[j * stride + $1]))) } * 0.125 }
            let m = s.max()!
            s = s.map { Foundation.exp($0 - m) }
            let total = s.reduce(0, +)
            var worst: Float = 0
            for c in 0..<dim {
                let ref = (0..<n).reduce(0.0) { $0 + s[$1] / total * Double(Float(Float16(bitPattern: values[$1 * stride + c]))) }
                worst = max(worst, Float(abs(Double(out[c]) - ref)))
            }
            XCTAssertLessThan(worst, Self.MAX_ATTEND_HALF_REL_ERROR, "singleToken \(single)")
        }
    }

    func testLevelsAreBitIdentical() {
        var rng = TestRandom(seed: 5)
        let dim = 64, stride = 64, n = 150
        let keys = (0..<(n * stride)).map { _ in half(rng.float(-3, 3)) }
        let values = (0..<(n * stride)).map { _ in half(rng.float(-1, 1)) }
        let q = (0..<dim).map { _ in Float(Float16(rng.float(-3, 3))) }
        let gate = (0..<1000).map { _ in rng.float(-12, 12) }
        let up = (0..<1000).map { _ in rng.float(-3, 3) }
        func run(_ level: KernelLevel) -> [Float] {
            var result: [Float] = []
            for single in [false, true] {
                var out = [Float](repeating: 0, count: dim)
                var scores = [Float](repeating: 0, count: n)
                var lanes = [Float](repeating: 0, count: 64 * dim)
                Kernels.attendHalf(query: q, keys: keys, values: values, stride: stride, count: n, dim: dim, scale: 0.125,
                                   singleToken: single, scores: &scores, lanes: &lanes, into: &out, level: level)
                result += out
            }
            var sw = [Float](repeating: 0, count: gate.count)
            Kernels.swiglu(gate, up, count: gate.count, into: &sw, level: level)
            return result + sw
        }
        let generic = run(.generic)
        for level in KernelLevel.supported where level != .generic {
            XCTAssertEqual(run(level).map(\.bitPattern), generic.map(\.bitPattern), "level \(level)")
        }
    }
}
