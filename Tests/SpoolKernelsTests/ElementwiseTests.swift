import Foundation
import SpoolKernels
import SpoolTestSupport
import XCTest
#if arch(x86_64)
import SpoolKernelsAVX2
#endif

final class ElementwiseTests: XCTestCase {
    static let lengths = [1, 3, 7, 8, 9, 16, 17, 31, 64, 100, 576, 1537]

    func testExpErrorIsBounded() {
        // A dense sweep of the range plus the edges.
        var xs: [Float] = stride(from: Float(-87), through: 88, by: 0.0137).map { $0 }
        xs += [0, -0, 1e-8, -1e-8, 0.34657359, -0.34657359, 88.3, -87.3]
        for level in testLevels {
            var out = [Float](repeating: .nan, count: xs.count)
            Kernels.exp(xs, count: xs.count, into: &out, level: level)
            var worst: Float = 0
            for (x, e) in zip(xs, out) {
                let ref = Float(Foundation.exp(Double(x)))
                worst = max(worst, abs(e - ref) / ref)
            }
            XCTAssertLessThanOrEqual(worst, MAX_EXP_REL_ERROR, "\(level)")
        }
    }

    func testExpEdges() {
        let xs: [Float] = [-.infinity, -1000, -88, 100, .infinity]
        for level in testLevels {
            var out = [Float](repeating: .nan, count: xs.count)
            Kernels.exp(xs, count: xs.count, into: &out, level: level)
            XCTAssertEqual(Array(out[0..<3]), [0, 0, 0], "\(level): tiny inputs flush to zero")
            XCTAssertTrue(out[3].isFinite && out[3] > 1e38, "\(level): large inputs saturate")
            XCTAssertTrue(out[4].isFinite && out[4] > 1e38, "\(level)")
        }
    }

    func testSoftmax() {
        var rng = TestRandom(seed: 10)
        for n in Self.lengths {
            var x = rng.floats(n, -20, 20)
            if n > 4 { x[2] = -.infinity } // masked entries
            var ref = x
            Reference.softmax(&ref, n: n)
            for level in testLevels {
                var y = x
                Kernels.softmax(&y, n: n, level: level)
                let scale = ref.max()!
                let worst = zip(y, ref).map { abs($0 - $1) }.max()! / scale
                XCTAssertLessThanOrEqual(worst, MAX_SOFTMAX_REL_ERROR, "\(level) n \(n)")
                if n > 4 { XCTAssertEqual(y[2], 0, "\(level): masked entry") }
            }
        }
    }

    func testRMSNormInAndOutOfPlace() {
        var rng = TestRandom(seed: 11)
        for n in Self.lengths {
            let tokens = 3
            let x = rng.floats(n * tokens, -4, 4), weight = rng.floats(n, 0.5, 1.5)
            var ref = [Float](repeating: 0, count: n * tokens)
            Reference.rmsNorm(x, weight: weight, n: n, tokens: tokens, eps: 1e-5, into: &ref)
            for level in testLevels {
                var y = [Float](repeating: .nan, count: n * tokens)
                Kernels.rmsNorm(x, weight: weight, n: n, tokens: tokens, eps: 1e-5, into: &y, level: level)
                var inPlace = x
                inPlace.withUnsafeMutableBufferPointer { p in
                    Kernels.rmsNorm(p.baseAddress!, weight: weight, n: n, tokens: tokens, eps: 1e-5, into: p.baseAddress!, level: level)
                }
                for t in 0..<tokens {
                    let row = t * n..<(t + 1) * n
                    let scale = ref[row].map(abs).max()!
                    let worst = row.map { abs(y[$0] - ref[$0]) }.max()! / scale
                    XCTAssertLessThanOrEqual(worst, MAX_RMSNORM_REL_ERROR, "\(level) n \(n)")
                }
                XCTAssertEqual(y, inPlace, "\(level) n \(n): in place")
            }
        }
    }

    func testSwigluInAndOutOfPlace() {
        var rng = TestRandom(seed: 12)
        for n in Self.lengths + [4096] {
            var gate = rng.floats(n, -30, 30)
            if n > 3 { gate[0] = -100; gate[1] = 100; gate[2] = 0 }
            let up = rng.floats(n, -2, 2)
            var ref = [Float](repeating: 0, count: n)
            Reference.swiglu(gate, up, count: n, into: &ref)
            for level in testLevels {
                var y = [Float](repeating: .nan, count: n)
                Kernels.swiglu(gate, up, count: n, into: &y, level: level)
                for i in 0..<n {
                    let err = abs(y[i] - ref[i]) / max(abs(ref[i]), abs(up[i]) * 1e-3, .leastNormalMagnitude)
                    XCTAssertLessThanOrEqual(err, MAX_SWIGLU_REL_ERROR, "\(level) n \(n) i \(i) gate \(gate[i])")
                }
                // The model calls swiglu with out == gate.
                var g = gate
                g.withUnsafeMutableBufferPointer { p in
                    Kernels.swiglu(p.baseAddress!, up, count: n, into: p.baseAddress!, level: level)
                }
                XCTAssertEqual(g, y, "\(level) n \(n): in place")
            }
        }
    }

    /// The AVX2 module's elementwise entry points called directly.
    func testAVX2ElementwiseDirectly() throws {
        #if arch(x86_64)
        try XCTSkipUnless(KernelLevel.avx2.isSupported, "CPU lacks AVX2+FMA")
        var rng = TestRandom(seed: 13)
        let n = 203
        let x = rng.floats(n, -10, 10), up = rng.floats(n), weight = rng.floats(n, 0.5, 1.5)
        var a = x, b = x
        ElementwiseAVX2.softmax(&a, n: n)
        Reference.softmax(&b, n: n)
        XCTAssertLessThanOrEqual(zip(a, b).map { abs($0 - $1) }.max()! / b.max()!, MAX_SOFTMAX_REL_ERROR)
        ElementwiseAVX2.swiglu(x, up, count: n, into: &a)
        Reference.swiglu(x, up, count: n, into: &b)
        for i in 0..<n { XCTAssertLessThanOrEqual(abs(a[i] - b[i]) / max(abs(b[i]), abs(up[i]) * 1e-3), MAX_SWIGLU_REL_ERROR) }
        ElementwiseAVX2.rmsNorm(x, weight: weight, n: n, tokens: 1, eps: 1e-6, into: &a)
        Reference.rmsNorm(x, weight: weight, n: n, tokens: 1, eps: 1e-6, into: &b)
        XCTAssertLessThanOrEqual(zip(a, b).map { abs($0 - $1) }.max()! / b.map(abs).max()!, MAX_RMSNORM_REL_ERROR)
        ElementwiseAVX2.exp(x, count: n, into: &a)
        for i in 0..<n { XCTAssertLessThanOrEqual(abs(a[i] - Float(Foundation.exp(Double(x[i])))) / a[i], MAX_EXP_REL_ERROR) }
        #else
        throw XCTSkip("not x86_64")
        #endif
    }

    func testRope() {
        var rng = TestRandom(seed: 14)
        // (heads, headDim, ropeDims): full, partial, and a pair count off the 8-float vector.
        for (heads, headDim, ropeDims) in [(3, 64, 64), (2, 64, 32), (2, 20, 20), (1, 10, 6), (4, 2, 2)] {
            let positions: [Int32] = [0, 1, 7, 100, 5000, 9000, -3]
            let tokens = positions.count
            let x = rng.floats(tokens * heads * headDim, -3, 3)
            var ref = x
            Reference.rope(&ref, tokens: tokens, heads: heads, headDim: headDim, ropeDims: ropeDims, positions: positions, base: 10000)
            var y = x
            Kernels.rope(&y, tokens: tokens, heads: heads, headDim: headDim, ropeDims: ropeDims, positions: positions, base: 10000)
            var z = x
            let table = RopeTable(ropeDims: ropeDims, base: 10000, positions: 200) // 5000, 9000, -3 computed on the fly
            Kernels.rope(&z, tokens: tokens, heads: heads, headDim: headDim, positions: positions, table: table)
            for head in 0..<(tokens * heads) {
                let span = head * headDim..<(head + 1) * headDim
                let scale = x[span].map(abs).max()!
                let limit = MAX_ROPE_REL_ERROR + MAX_ROPE_ANGLE_ERROR_PER_POSITION * Float(abs(positions[head / heads]))
                XCTAssertLessThanOrEqual(span.map { abs(y[$0] - ref[$0]) }.max()! / scale, limit, "shared table \(heads)x\(headDim)/\(ropeDims)")
                XCTAssertLessThanOrEqual(span.map { abs(z[$0] - ref[$0]) }.max()! / scale, limit, "own table \(heads)x\(headDim)/\(ropeDims)")
                for i in ropeDims..<headDim { XCTAssertEqual(y[span.lowerBound + i], x[span.lowerBound + i], "unrotated tail") }
            }
        }
    }
}
