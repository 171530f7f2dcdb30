import SpoolKernels
@testable import SpoolQuant
import XCTest

/// W′ from identical float and quantized inputs must be W itself, up to float32 solve error.
let MAX_SAME_INPUT_TARGET_ERROR: Float = 2e-3

final class AsymmetricTargetTests: XCTestCase {
    typealias LCG = PackedWeightTests.LCG

    /// Σ_n ‖M x_q,n − W x_f,n‖² over the inputs.
    func mismatch(_ m: [Float], _ w: [Float], xq: [Float], xf: [Float], rows: Int, cols: Int, tokens: Int) -> Double {
        var e = 0.0
        for t in 0..<tokens {
            for r in 0..<rows {
                var a: Float = 0, b: Float = 0
                for c in 0..<cols { a += m[r * cols + c] * xq[t * cols + c]; b += w[r * cols + c] * xf[t * cols + c] }
                e += Double((a - b) * (a - b))
            }
        }
        return e
    }

    func testTargetIsWeightWhenInputsAgree() {
        let pool = ThreadPool(threads: 2)
        let (w, x, acc, rows, cols, tokens) = GPTQTests.correlatedProblem(seed: 41, pool: pool)
        let cross = CrossAccumulator(cols: cols)
        x.withUnsafeBufferPointer { cross.add(float: $0.baseAddress!, quantized: $0.baseAddress!, tokens: tokens, pool: pool) }
        for i in 0..<(cols * cols) { XCTAssertEqual(cross.matrix[i], acc.matrix[i], accuracy: 1e-4 * max(1, abs(acc.matrix[i]))) }
        let t = AsymmetricTarget.weights(w, rows: rows, cols: cols, cross: cross.matrix, hessian: acc.matrix, damping: 0.01, pool: pool)!
        for i in 0..<(rows * cols) { XCTAssertEqual(t[i], w[i], accuracy: MAX_SAME_INPUT_TARGET_ERROR, "\(i)") }
    }

    /// Perturbed inputs (what a quantized model feeds a layer): the target maps them closer to the
    /// float outputs than W does, and GPTQ on the target keeps most of that gain.
    func testTargetCancelsInheritedInputError() throws {
        let pool = ThreadPool(threads: 2)
        let (w, xf, _, rows, cols, tokens) = GPTQTests.correlatedProblem(seed: 43, pool: pool)
        // x_q = x_f (I + E): a systematic distortion plus small noise, as a quantized layer adds.
        var g = LCG(s: 44)
        let e = (0..<(cols * cols)).map { _ in 0.03 * g.next() }
        var xq = xf
        for t in 0..<tokens {
            for j in 0..<cols {
                var s: Float = 0
                for i in 0..<cols { s += xf[t * cols + i] * e[i * cols + j] }
                xq[t * cols + j] += s + 0.01 * g.next()
            }
        }
        let h = HessianAccumulator(cols: cols), k = CrossAccumulator(cols: cols)
        h.add(xq, tokens: tokens, pool: pool)
        xf.withUnsafeBufferPointer { f in xq.withUnsafeBufferPointer { k.add(float: f.baseAddress!, quantized: $0.baseAddress!, tokens: tokens, pool: pool) } }
        let t = try XCTUnwrap(AsymmetricTarget.weights(w, rows: rows, cols: cols, cross: k.matrix, hessian: h.matrix, damping: 0.01, pool: pool))
        let plain = mismatch(w, w, xq: xq, xf: xf, rows: rows, cols: cols, tokens: tokens)
        let shifted = mismatch(t, w, xq: xq, xf: xf, rows: rows, cols: cols, tokens: tokens)
        XCTAssertLessThan(shifted, 0.2 * plain, "float target \(shifted) vs W \(plain)")

        let spec = try QuantSpec(bits: 4, group: 32)
        let options = GPTQOptions(blockSize: 48)
        let qPlain = try GPTQ.quantize(w, rows: rows, cols: cols, hessian: h.matrix, spec: spec, options: options, pool: pool).dequantized()
        let qShift = try GPTQ.quantize(t, rows: rows, cols: cols, hessian: h.matrix, spec: spec, options: options, pool: pool).dequantized()
        let ePlain = mismatch(qPlain, w, xq: xq, xf: xf, rows: rows, cols: cols, tokens: tokens)
        let eShift = mismatch(qShift, w, xq: xq, xf: xf, rows: rows, cols: cols, tokens: tokens)
        XCTAssertLessThan(eShift, 0.7 * ePlain, "GPTQ on the target \(eShift) vs on W \(ePlain)")
    }
}
