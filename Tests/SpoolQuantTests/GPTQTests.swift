import Foundation
import SpoolFormat
import SpoolKernels
import SpoolModel
@testable import SpoolQuant
import XCTest

/// ‖Uᵀ U H − I‖_max for the GPTQ factor of a well-conditioned H.
let MAX_INVERSE_FACTOR_ERROR: Float = 1e-3

final class GPTQTests: XCTestCase {
    typealias LCG = PackedWeightTests.LCG

    /// Inputs with strongly correlated features: x = z · A, A mixing 8 latent factors into cols.
    static func correlatedInputs(tokens: Int, cols: Int, seed: UInt64) -> [Float] {
        var g = LCG(s: seed)
        let latent = 8
        let a = (0..<(latent * cols)).map { _ in g.next() }
        var x = [Float](repeating: 0, count: tokens * cols)
        for t in 0..<tokens {
            let z = (0..<latent).map { _ in g.next() }
            for c in 0..<cols {
                var v: Float = 0.05 * g.next()
                for k in 0..<latent { v += z[k] * a[k * cols + c] }
                x[t * cols + c] = v
            }
        }
        return x
    }

    func testUpperFactorInvertsHessian() {
        let n = 40
        var g = LCG(s: 3)
        let b = (0..<(n * n)).map { _ in g.next() }
        var h = [Float](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0..<n { var s: Float = 0; for k in 0..<n { s += b[i * n + k] * b[j * n + k] }; h[i * n + j] = s + (i == j ? Float(n) : 0) } }
        let u = LinearAlgebra.upperCholeskyOfInverse(h, n: n)!
        for i in 0..<n { for j in 0..<i { XCTAssertEqual(u[i * n + j], 0, "U must be upper triangular") } }
        // (Uᵀ U) H = I
        for i in 0..<n {
            for j in 0..<n {
                var s: Float = 0
                for k in 0..<n {
                    var utu: Float = 0
                    for l in 0..<n { utu += u[l * n + i] * u[l * n + k] }
                    s += utu * h[k * n + j]
                }
                XCTAssertLessThan(abs(s - (i == j ? 1 : 0)), MAX_INVERSE_FACTOR_ERROR, "(\(i), \(j))")
            }
        }
        // Not positive definite: refused, not a crash.
        var bad = h
        bad[0] = -1
        XCTAssertNil(LinearAlgebra.upperCholeskyOfInverse(bad, n: n))
    }

    func testHessianAccumulatorMatchesDirectSum() {
        let pool = ThreadPool(threads: 2)
        let cols = 24, tokens = 50
        let x = Self.correlatedInputs(tokens: tokens, cols: cols, seed: 5)
        let acc = HessianAccumulator(cols: cols)
        acc.add(x, tokens: 20, pool: pool)
        x.withUnsafeBufferPointer { acc.add($0.baseAddress! + 20 * cols, tokens: 30, pool: pool) }
        for i in 0..<cols {
            for j in 0..<cols {
                var s: Float = 0
                for t in 0..<tokens { s += x[t * cols + i] * x[t * cols + j] }
                let want = 2 * s / Float(tokens)
                XCTAssertEqual(acc.matrix[i * cols + j], want, accuracy: 1e-3 * max(1, abs(want)))
            }
        }
    }

    /// Output error ‖(W − Ŵ) xᵀ‖² summed over the inputs.
    func outputError(_ w: [Float], _ q: [Float], _ x: [Float], rows: Int, cols: Int, tokens: Int) -> Double {
        var e = 0.0
        for t in 0..<tokens {
            for r in 0..<rows {
                var d: Float = 0
                for c in 0..<cols { d += (w[r * cols + c] - q[r * cols + c]) * x[t * cols + c] }
                e += Double(d * d)
            }
        }
        return e
    }

    /// A random (32, 128) weight and the Hessian of 512 correlated inputs (`correlatedInputs` with
    /// `seed`, the weight from `seed + 1`).
    static func correlatedProblem(seed: UInt64, pool: ThreadPool)
        -> (w: [Float], x: [Float], acc: HessianAccumulator, rows: Int, cols: Int, tokens: Int) {
        let rows = 32, cols = 128, tokens = 512
        let x = correlatedInputs(tokens: tokens, cols: cols, seed: seed)
        var g = LCG(s: seed + 1)
        let w = (0..<(rows * cols)).map { _ in g.next() }
        let acc = HessianAccumulator(cols: cols)
        acc.add(x, tokens: tokens, pool: pool)
        return (w, x, acc, rows, cols, tokens)
    }

    func testGPTQBeatsRTNOnOutputErrorWithCorrelatedInputs() throws {
        let pool = ThreadPool(threads: 2)
        let (w, x, acc, rows, cols, tokens) = Self.correlatedProblem(seed: 11, pool: pool)
        for bits in [2, 3, 4] {
            let spec = try QuantSpec(bits: bits, group: 32)
            let rtn = try RTN.quantize(w, rows: rows, cols: cols, spec: spec).dequantized()
            let rtnErr = outputError(w, rtn, x, rows: rows, cols: cols, tokens: tokens)
            for actOrder in [false, true] {
                let gq = try GPTQ.quantize(w, rows: rows, cols: cols, hessian: acc.matrix, spec: spec,
                                           options: GPTQOptions(blockSize: 48, actOrder: actOrder), pool: pool)
                let gErr = outputError(w, gq.dequantized(), x, rows: rows, cols: cols, tokens: tokens)
                // A wide margin: GPTQ should cut the output error by far more than half here.
                XCTAssertLessThan(gErr, 0.5 * rtnErr, "bits \(bits) act-order \(actOrder): GPTQ \(gErr) vs RTN \(rtnErr)")
                // The estimate the packer prints agrees with the direct measurement.
                let rel = relativeOutputError(original: w, quantized: gq.dequantized(), rows: rows, cols: cols, hessian: acc.matrix)
                let den = outputError(w, [Float](repeating: 0, count: w.count), x, rows: rows, cols: cols, tokens: tokens)
                XCTAssertEqual(rel, gErr / den, accuracy: 0.02 * gErr / den)
            }
        }
    }

    /// Pack -> write -> read -> decode: every value is within the bound stated for RTN's grid:
    /// inside the grid's range [m, m + maxQ·d], at most half a step (d/2, plus float16 rounding of
    /// m); a value the clipping search left outside the range, at most 40% of the group's min..max
    /// span (the search shrinks the range by at most that much) plus half a step.
    func testPackReadRoundTripWithinQuantizationBound() throws {
        let path = NSTemporaryDirectory() + "spool-rt-\(UUID().uuidString).spool"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let rows = 24, cols = 256
        var g = LCG(s: 77)
        let w = (0..<(rows * cols)).map { _ in g.next() * g.next() }
        let specs = [(2, 32), (3, 64), (4, 128), (8, 64)]
        let plan = [SpoolExtentPlan(name: "blk.0", layer: 0, tensors: specs.map { SpoolTensor(name: "w\($0.0)", shape: [rows, cols], bits: $0.0, group: $0.1) })]
        let info = SpoolTokenizerInfo(model: "gpt2", pre: nil, tokens: ["a"], tokenTypes: [1], merges: [], bosId: nil, eosId: nil, eotId: nil,
                                      unknownId: nil, paddingId: nil, addBos: false, addEos: false)
        let header = SpoolHeader(architecture: "llama", hyperparameters: SpoolHyperparameters(layers: 1, dim: cols, ffnDim: cols, heads: 1, kvHeads: 1, headDim: cols, ropeDims: cols, ropeBase: 10000, normEps: 1e-5, vocabSize: 1, contextLength: 16),
                                 tokenizer: info, chatTemplate: nil, quantization: SpoolQuantization(method: "rtn", bits: 4, group: 64))
        let writer = try SpoolWriter(path: path, header: header, plan: plan)
        let quantized = try specs.map { try RTN.quantize(w, rows: rows, cols: cols, spec: QuantSpec(bits: $0.0, group: $0.1)) }
        try writer.writeExtent(0, tensors: quantized.map { $0.packed() })
        try writer.finish()

        let file = try SpoolFile(path: path)
        for (k, (bits, group)) in specs.enumerated() {
            let t = try XCTUnwrap(file.tensor(named: "w\(bits)"))
            let pw = try PackedWeight(rows: rows, cols: cols, bits: bits, group: group, bytes: try file.data(of: t), owner: file, name: t.name)
            var row = [Float](repeating: 0, count: cols)
            let maxQ = Float((1 << bits) - 1)
            for r in 0..<rows {
                pw.row(r, into: &row)
                for grp in 0..<(cols / group) {
                    let grid = quantized[k].grids[r * (cols / group) + grp]
                    let vals = (0..<group).map { w[r * cols + grp * group + $0] }
                    let span = vals.max()! - vals.min()!
                    for i in 0..<group {
                        let v = vals[i], got = row[grp * group + i]
                        let slack = 1e-3 * abs(grid.m) + 1e-6
                        let inRange = v >= grid.m - slack && v <= grid.m + maxQ * grid.d + slack
                        let bound = grid.d / 2 + slack + (inRange ? 0 : 0.4 * span)
                        XCTAssertLessThanOrEqual(abs(v - got), bound, "bits \(bits) row \(r) group \(grp) value \(i)")
                    }
                }
            }
        }
    }
}
