import SpoolKernels
import SpoolTestSupport
import XCTest

/// Attention loops vs the double-precision reference: error relative to sum_i |a_i b_i| of each
/// output (what float accumulation in any order can promise for these lengths).
let MAX_ATTENTION_REL_ERROR: Float = 1e-5

final class AttentionKernelTests: XCTestCase {
    func testDotRowsAndWeightedSumMatchReferenceOnEveryLevel() {
        var rng = TestRandom(seed: 11)
        // dim 64 with a stride (a head inside a 3-head cache row), and odd sizes for the tails.
        for (dim, stride, count) in [(64, 192, 37), (45, 50, 9), (8, 8, 1), (96, 96, 130)] {
            let q = rng.floats(dim, -2, 2)
            let rows = rng.floats(stride * count, -2, 2)
            let weights = rng.floats(count, 0, 1)
            var refScores = [Float](repeating: 0, count: count), refOut = [Float](repeating: 0, count: dim)
            Reference.dotRows(q, rows, stride: stride, count: count, dim: dim, scale: 0.125, into: &refScores)
            Reference.weightedSum(weights, rows, stride: stride, count: count, dim: dim, into: &refOut)
            for level in testLevels {
                var scores = [Float](repeating: .nan, count: count), out = [Float](repeating: .nan, count: dim)
                Kernels.dotRows(q, rows, stride: stride, count: count, dim: dim, scale: 0.125, into: &scores, level: level)
                Kernels.weightedSum(weights, rows, stride: stride, count: count, dim: dim, into: &out, level: level)
                for j in 0..<count {
                    var mag: Float = 0
                    for i in 0..<dim { mag += abs(q[i] * rows[j * stride + i]) * 0.125 }
                    XCTAssertLessThanOrEqual(abs(scores[j] - refScores[j]) / max(mag, 1e-6), MAX_ATTENTION_REL_ERROR, "\(level) dim \(dim) score \(j)")
                }
                for i in 0..<dim {
                    var mag: Float = 0
                    for j in 0..<count { mag += abs(weights[j] * rows[j * stride + i]) }
                    XCTAssertLessThanOrEqual(abs(out[i] - refOut[i]) / max(mag, 1e-6), MAX_ATTENTION_REL_ERROR, "\(level) dim \(dim) out \(i)")
                }
            }
        }
    }
}
