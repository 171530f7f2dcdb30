import SpoolKernels
import SpoolTestSupport
import XCTest

/// Integer kernels vs the float math they stand for: the quantized activations must reconstruct x
/// to half a step (amax/127/2, plus the f16 rounding of d), and y must equal the float dot product
/// of the dequantized weights with the dequantized activations up to float summation order.
let MAX_QDOT_REL_ERROR: Float = 1e-5

final class QuantKernelTests: XCTestCase {
    /// Random blocks of `format` for a (rows, cols) matrix, and their float values.
    func randomWeights(_ format: WeightBlockFormat, rows: Int, cols: Int, rng: inout TestRandom) -> ([UInt8], [Float]) {
        var bytes: [UInt8] = []
        var floats: [Float] = []
        for _ in 0..<(rows * cols / 32) {
            let d = Float16(rng.float(-0.02, 0.02))
            switch format {
            case .q4_1:
                let m = Float16(rng.float(-0.1, 0.1))
                withUnsafeBytes(of: d.bitPattern.littleEndian) { bytes += $0 }
                withUnsafeBytes(of: m.bitPattern.littleEndian) { bytes += $0 }
                let q = (0..<32).map { _ in UInt8(rng.next() % 16) }
                for j in 0..<16 { bytes.append(q[j] | (q[j + 16] << 4)) }
                floats += q.map { Float(d) * Float($0) + Float(m) }
            case .q8_0:
                withUnsafeBytes(of: d.bitPattern.littleEndian) { bytes += $0 }
                // The full int8 range, -128 included (the sign trick must handle it).
                let q = (0..<32).map { _ in Int8(truncatingIfNeeded: rng.next()) }
                bytes += q.map { UInt8(bitPattern: $0) }
                floats += q.map { Float(d) * Float($0) }
            }
        }
        return (bytes, floats)
    }

    func testActivationQuantizationRoundTrips() {
        var rng = TestRandom(seed: 7)
        let tokens = 5, cols = 96
        var x = rng.floats(tokens * cols, -3, 3)
        x[0] = 0; for j in 32..<64 { x[j] = 0 }   // a zero block must give d = 0, q = 0
        let pool = ThreadPool(threads: 2)
        var reference: Q8Activations?
        for level in testLevels {
            let a = Q8Activations()
            Kernels.quantizeActivations(x, tokens: tokens, cols: cols, into: a, pool: pool, level: level)
            for t in 0..<tokens {
                for b in 0..<(cols / 32) {
                    let d = a.d[t * 3 + b]
                    var amax: Float = 0, sum = 0
                    for j in 0..<32 { amax = max(amax, abs(x[t * cols + b * 32 + j])) }
                    XCTAssertEqual(d, Float(Float16(amax / 127)), "\(level)")
                    for j in 0..<32 {
                        let i = t * cols + b * 32 + j
                        sum += Int(a.qs[i])
                        // Half a step, plus the relative error of storing d as f16 (2^-11 * 127).
                        XCTAssertLessThanOrEqual(abs(Float(a.qs[i]) * d - x[i]), d * 0.5 + amax * 0.07, "\(level) \(i)")
                    }
                    XCTAssertEqual(a.s[t * 3 + b], Float(Float16(Float(sum) * amax / 127)), "\(level)")
                }
            }
            if let r = reference {
                // Every level rounds identically (to nearest even).
                for i in 0..<(tokens * cols) { XCTAssertEqual(a.qs[i], r.qs[i], "\(level) vs generic at \(i)") }
            } else {
                reference = a
            }
        }
        XCTAssertEqual(reference?.qs[32], 0)
        XCTAssertEqual(reference?.d[1], 0)
    }

    func testQuantMatmulMatchesFloatMath() {
        let pool = ThreadPool(threads: 2)
        for format in WeightBlockFormat.allCases {
            for (rows, cols, tokens) in [(13, 64, 1), (37, 96, 3), (64, 576, 7), (22, 160, 9), (24, 1536, 21), (29, 576, 2), (7, 1536, 1)] {
                var rng = TestRandom(seed: UInt64(rows * 1000 + cols))
                let (w, wf) = randomWeights(format, rows: rows, cols: cols, rng: &rng)
                let x = rng.floats(tokens * cols, -2, 2)
                for level in testLevels {
                    let a = Q8Activations()
                    Kernels.quantizeActivations(x, tokens: tokens, cols: cols, into: a, pool: pool, level: level)
                    var y = [Float](repeating: .nan, count: tokens * rows)
                    w.withUnsafeBytes { wp in
                        Kernels.quantMatmul(format, wp.baseAddress!, rows: rows, cols: cols, a, into: &y, pool: pool, level: level)
                    }
                    for t in 0..<tokens {
                        for r in 0..<rows {
                            // Float reference on the dequantized activations (q * d per block).
                            var ref: Double = 0, mag: Double = 0
                            for c in 0..<cols {
                                let xq = Double(a.qs[t * cols + c]) * Double(a.d[t * cols / 32 + c / 32])
                                ref += Double(wf[r * cols + c]) * xq
                                mag += abs(Double(wf[r * cols + c]) * xq)
                            }
                            if format == .q4_1 {
                                // The m * s term uses s rounded to f16: account for it exactly.
                                for b in 0..<(cols / 32) {
                                    var sq = 0
                                    for j in 0..<32 { sq += Int(a.qs[t * cols + b * 32 + j]) }
                                    let exact = Double(sq) * Double(a.d[t * cols / 32 + b])
                                    let stored = Double(a.s[t * cols / 32 + b])
                                    ref += minOffset(format, w, rows: rows, cols: cols, row: r, block: b) * (stored - exact)
                                }
                            }
                            let err = abs(Double(y[t * rows + r]) - ref) / max(mag, 1e-6)
                            XCTAssertLessThanOrEqual(Float(err), MAX_QDOT_REL_ERROR, "\(format) \(level) \(rows)x\(cols) t\(t) r\(r)")
                        }
                    }
                }
            }
        }
    }

    /// The offset m of a q4_1 block (0 for formats without one).
    func minOffset(_ format: WeightBlockFormat, _ w: [UInt8], rows: Int, cols: Int, row: Int, block: Int) -> Double {
        guard format == .q4_1 else { return 0 }
        let o = (row * cols / 32 + block) * 20 + 2
        return Double(Float(Float16(bitPattern: UInt16(w[o]) | UInt16(w[o + 1]) << 8)))
    }
}
