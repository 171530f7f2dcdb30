import Foundation
import SpoolKernels
import SpoolTestSupport
import XCTest

/// attendKVHead outputs vs a double-precision softmax-attention reference, relative to the largest
/// |value| of the head (the output is a convex mix of value rows).
let MAX_ATTENTION_HEAD_REL_ERROR: Float = 2e-6

final class AttentionHeadTests: XCTestCase {
    func testAttendKVHeadMatchesReference() {
        var rng = TestRandom(seed: 11)
        // (kvHeads, group, headDim, start, tokens): decode (keys over several 32-row tiles, and two
        // tokens whose windows end in different tiles), prefill, and a continued prefill past 64 keys.
        for (kvHeads, group, headDim, start, tokens) in [(3, 3, 64, 0, 1), (3, 3, 64, 40, 1), (3, 3, 64, 100, 1), (1, 2, 64, 63, 2),
                                                         (2, 2, 32, 0, 37), (1, 4, 48, 70, 5), (3, 3, 64, 5, 70)] {
            let kvDim = kvHeads * headDim, n = start + tokens, heads = kvHeads * group
            let k = rng.floats(n * kvDim, -2, 2), v = rng.floats(n * kvDim, -1, 1)
            let q = rng.floats(tokens * heads * headDim, -2, 2)
            for half in [false, true] {
                let kh = k.map { Float16($0).bitPattern }, vh = v.map { Float16($0).bitPattern }
                let kf = half ? kh.map { Float(Float16(bitPattern: $0)) } : k
                let vf = half ? vh.map { Float(Float16(bitPattern: $0)) } : v
                let scale = 1 / Float(headDim).squareRoot()
                for level in testLevels {
                    var out = [Float](repeating: .nan, count: tokens * heads * headDim)
                    k.withUnsafeBytes { kb in v.withUnsafeBytes { vb in kh.withUnsafeBytes { khb in vh.withUnsafeBytes { vhb in
                        out.withUnsafeMutableBufferPointer { o in
                            for kvh in 0..<kvHeads {
                                let a = AttentionHeadArgs(
                                    queries: q, queryStride: heads * headDim, heads: (kvh * group)..<((kvh + 1) * group),
                                    keys: half ? khb.baseAddress! : kb.baseAddress!, values: half ? vhb.baseAddress! : vb.baseAddress!,
                                    half: half, rowStride: kvDim, headOffset: kvh * headDim, headDim: headDim, start: start,
                                    scale: scale, output: o.baseAddress!)
                                Kernels.attendKVHead(a, tokens: 0..<tokens, level: level)
                            }
                        }
                    } } } }
                    for t in 0..<tokens {
                        for h in 0..<heads {
                            let kvh = h / group, nt = start + t + 1
                            let qv = (0..<headDim).map { d -> Double in
                                let x = q[(t * heads + h) * headDim + d]
                                return Double(half ? Float(Float16(x)) : x)
                            }
                            var s = (0..<nt).map { j in
                                (0..<headDim).reduce(0.0) { $0 + qv[$1] * Double(kf[j * kvDim + kvh * headDim + $1]) } * Double(scale)
                            }
                            let mx = s.max()!
                            s = s.map { Foundation.exp($0 - mx) }
                            let total = s.reduce(0, +)
                            var vmax: Float = 0
                            for j in 0..<nt { for d in 0..<headDim { vmax = max(vmax, abs(vf[j * kvDim + kvh * headDim + d])) } }
                            for d in 0..<headDim {
                                var ref = 0.0
                                for j in 0..<nt { ref += s[j] / total * Double(vf[j * kvDim + kvh * headDim + d]) }
                                let got = out[(t * heads + h) * headDim + d]
                                XCTAssertLessThanOrEqual(abs(Float(ref) - got) / vmax, MAX_ATTENTION_HEAD_REL_ERROR,
                                                         "\(level) half \(half) start \(start) t \(t) h \(h) d \(d)")
                            }
                        }
                    }
                }
            }
        }
    }
}
