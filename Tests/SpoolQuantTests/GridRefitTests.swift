import SpoolKernels
@testable import SpoolQuant
import XCTest

/// Relative disagreement allowed between the refit's own per-row error (assembled from its normal
/// equations) and a direct evaluation of (w − ŵ)ᵀ H (w − ŵ) in double precision.
let MAX_REFIT_ERROR_MISMATCH = 1e-3

final class GridRefitTests: XCTestCase {
    /// (w − ŵ)ᵀ H (w − ŵ) per row, summed directly in double precision.
    func rowErrors(_ w: [Float], _ q: QuantizedMatrix, _ h: [Float]) -> [Double] {
        let rows = q.rows, cols = q.cols
        let dq = q.dequantized()
        return (0..<rows).map { r in
            let e = (0..<cols).map { Double(w[r * cols + $0] - dq[r * cols + $0]) }
            var s = 0.0
            for i in 0..<cols { var t = 0.0; for j in 0..<cols { t += Double(h[i * cols + j]) * e[j] }; s += e[i] * t }
            return s
        }
    }

    func testRefitNeverRaisesAndLowersTheHessianError() throws {
        let pool = ThreadPool(threads: 2)
        let (w, _, acc, rows, cols, _) = GPTQTests.correlatedProblem(seed: 21, pool: pool)
        let options = GPTQOptions(blockSize: 48, refitRounds: 1)
        let factor = try GPTQ.factor(hessian: acc.matrix, cols: cols, options: options)
        XCTAssertEqual(factor.damped.count, cols * cols)
        for (bits, group) in [(2, 32), (3, 64), (4, 32)] {
            let spec = try QuantSpec(bits: bits, group: group)
            let plain = try GPTQ.quantize(w, rows: rows, cols: cols, factor: factor, spec: spec, options: GPTQOptions(blockSize: 48), pool: pool)
            var refit = plain
            let (before, after) = GridRefit.refit(&refit, original: w, hessian: factor.damped, pool: pool)
            let direct0 = rowErrors(w, plain, factor.damped), direct1 = rowErrors(w, refit, factor.damped)
            XCTAssertEqual(refit.q, plain.q, "the refit changes grids only, never codes")
            var changed = 0
            for r in 0..<rows {
                XCTAssertEqual(before[r], direct0[r], accuracy: MAX_REFIT_ERROR_MISMATCH * direct0[r], "\(spec) row \(r): before")
                XCTAssertEqual(after[r], direct1[r], accuracy: MAX_REFIT_ERROR_MISMATCH * direct1[r], "\(spec) row \(r): after")
                XCTAssertLessThanOrEqual(direct1[r], direct0[r] * (1 + MAX_REFIT_ERROR_MISMATCH), "\(spec) row \(r): the refit raised the error")
                if direct1[r] < direct0[r] { changed += 1 }
            }
            let sum0 = direct0.reduce(0, +), sum1 = direct1.reduce(0, +)
            // Correlated inputs: the full-H fit must find something the diagonal fit missed.
            XCTAssertGreaterThan(changed, rows / 2, "\(spec): rows improved")
            XCTAssertLessThan(sum1, 0.98 * sum0, "\(spec): total \(sum1) vs \(sum0)")
        }
    }

    /// Codes fixed, grids spoiled: the least-squares solution recovers grids at least as good as
    /// the true ones (it is the optimum for those codes), far below the spoiled error.
    func testRefitRecoversSpoiledGrids() throws {
        let pool = ThreadPool(threads: 1)
        let (_, _, acc, rows, cols, _) = GPTQTests.correlatedProblem(seed: 5, pool: pool)
        let spec = try QuantSpec(bits: 3, group: 32)
        var truth = QuantizedMatrix(rows: rows, cols: cols, spec: spec)
        var g = PackedWeightTests.LCG(s: 9)
        for i in truth.q.indices { truth.q[i] = UInt8(Int(abs(g.next()) * 1000) % 8) }
        for i in truth.grids.indices { truth.grids[i] = GroupGrid(d: Float(Float16(0.1 + 0.05 * abs(g.next()))), m: Float(Float16(g.next()))) }
        // One group whose codes are all equal: its d and m cannot be told apart (ridge case).
        for c in 0..<spec.group { truth.q[c] = 3 }
        let w = truth.dequantized()
        var spoiled = truth
        for i in spoiled.grids.indices { spoiled.grids[i].d *= 1.25; spoiled.grids[i].m -= 0.05 }
        let h = acc.matrix
        let e0 = rowErrors(w, spoiled, h).reduce(0, +)
        GridRefit.refit(&spoiled, original: w, hessian: h, pool: pool)
        let e1 = rowErrors(w, spoiled, h).reduce(0, +)
        let scale = rowErrors(w, QuantizedMatrix(rows: rows, cols: cols, spec: spec), h).reduce(0, +)  // ŵ = 0
        XCTAssertGreaterThan(e0, 1e-3 * scale, "the spoiled grids must be measurably wrong")
        // float16 rounding of the solved (d, m) is all that may remain.
        XCTAssertLessThan(e1, 1e-3 * e0, "refit \(e1) vs spoiled \(e0)")
    }

    func testRefitRoundsLowerGPTQOutputError() throws {
        let pool = ThreadPool(threads: 2)
        let (w, _, acc, rows, cols, _) = GPTQTests.correlatedProblem(seed: 31, pool: pool)
        for bits in [2, 3] {
            let spec = try QuantSpec(bits: bits, group: 64)
            var errors: [Double] = []
            for rounds in [0, 1, 2] {
                let q = try GPTQ.quantize(w, rows: rows, cols: cols, hessian: acc.matrix, spec: spec,
                                          options: GPTQOptions(blockSize: 48, refitRounds: rounds), pool: pool)
                errors.append(relativeOutputError(original: w, quantized: q.dequantized(), rows: rows, cols: cols, hessian: acc.matrix))
            }
            XCTAssertLessThan(errors[1], 0.98 * errors[0], "bits \(bits): one refit round \(errors)")
            XCTAssertLessThanOrEqual(errors[2], errors[1] * 1.001, "bits \(bits): a second round never loses (best row kept) \(errors)")
        }
    }
}
