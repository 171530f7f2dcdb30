import SpoolFormat
import SpoolKernels
import SpoolModel
@testable import SpoolQuant
import XCTest

/// Checks of the 2- and 3-bit paths that do not depend on random data: every level at every
/// position of a chunk goes through the tensor packer, the file layout and both kernels exactly,
/// and the grid fit's least-squares refinement never does worse than the range search alone.
final class LowBitLayoutTests: XCTestCase {
    typealias LCG = PackedWeightTests.LCG

    /// A tensor whose row r, column c holds level (r + c) mod 2^bits, with d = 1 and m = 0, so a
    /// decoded value must equal its level exactly. Rows shift the pattern, so every level meets
    /// every position of a 32-value chunk, including the high bits at positions 24..<32.
    func testEveryLevelAtEveryChunkPositionDecodesExactly() throws {
        let pool = ThreadPool(threads: 1)
        for bits in [2, 3, 4, 8] {
            let levels = 1 << bits
            let rows = max(levels, 32), cols = 128
            var qm = QuantizedMatrix(rows: rows, cols: cols, spec: try QuantSpec(bits: bits, group: 64))
            for r in 0..<rows { for c in 0..<cols { qm.q[r * cols + c] = UInt8((r + c) % levels) } }
            for i in qm.grids.indices { qm.grids[i] = GroupGrid(d: 1, m: 0) }
            let file = MappedFile(copying: qm.packed())
            let pw = try PackedWeight(rows: rows, cols: cols, bits: bits, group: 64, bytes: file.bytes, owner: file, name: "levels")
            var row = [Float](repeating: -1, count: cols)
            for r in 0..<rows {
                pw.row(r, into: &row)
                XCTAssertEqual(row, (0..<cols).map { Float((r + $0) % levels) }, "bits \(bits) row \(r)")
            }
            // One-hot activations pick single columns: both dot kernels return the level itself.
            for c in [0, 7, 8, 15, 16, 23, 24, 31, 63, 64, 127] {
                var x = [Float](repeating: 0, count: cols)
                x[c] = 1
                var ys = [Float](repeating: 0, count: rows), yr = ys
                pw.applyDot(x, tokens: 1, into: &ys, pool: pool)
                pw.applyDot(x, tokens: 1, into: &yr, pool: pool, reference: true)
                XCTAssertEqual(ys, (0..<rows).map { Float(($0 + c) % levels) }, "bits \(bits) simd, column \(c)")
                XCTAssertEqual(yr, ys, "bits \(bits) reference, column \(c)")
            }
        }
    }

    /// The refined fit is never worse than min..max with the shrink search, and on Gaussian-like
    /// groups it is better on average at 2 and 3 bits (where the levels are few).
    func testRefinedFitLowersGroupError() {
        for bits in [2, 3, 4] {
            let maxQ = (1 << bits) - 1
            var g = LCG(s: UInt64(40 + bits))
            var refinedTotal: Float = 0, searchTotal: Float = 0
            for _ in 0..<200 {
                let v = (0..<64).map { _ in g.next() + g.next() + g.next() }
                let (lo, hi) = (v.min()!, v.max()!)
                v.withUnsafeBufferPointer { p in
                    let fit = GroupGrid.fit(p.baseAddress!, count: 64, maxQ: maxQ)
                    var search = GroupGrid.make(lo: lo, hi: hi, maxQ: maxQ)
                    var err = search.error(p.baseAddress!, count: 64, stride: 1, maxQ: maxQ)
                    for step in 1...GroupGrid.searchSteps {
                        let s = 1 - Float(step) * GroupGrid.searchShrink
                        let c = GroupGrid.make(lo: lo * s, hi: hi * s, maxQ: maxQ)
                        let e = c.error(p.baseAddress!, count: 64, stride: 1, maxQ: maxQ)
                        if e < err { search = c; err = e }
                    }
                    let fitErr = fit.error(p.baseAddress!, count: 64, stride: 1, maxQ: maxQ)
                    XCTAssertLessThanOrEqual(fitErr, err, "bits \(bits)")
                    // The range still reaches within maxClip of the span at both ends.
                    XCTAssertLessThanOrEqual(fit.m, lo + GroupGrid.maxClip * (hi - lo) + 1e-3)
                    XCTAssertGreaterThanOrEqual(fit.m + Float(maxQ) * fit.d, hi - GroupGrid.maxClip * (hi - lo) - 1e-3)
                    refinedTotal += fitErr
                    searchTotal += err
                }
            }
            if bits < 4 { XCTAssertLessThan(refinedTotal, 0.98 * searchTotal, "bits \(bits): refinement should pay at low bit widths") }
        }
    }

    /// With an importance per value (some columns far more active than others), the weighted fit
    /// lowers the importance-weighted squared error against the unweighted fit, summed over groups.
    func testImportanceWeightedFitLowersWeightedError() {
        for bits in [2, 3] {
            let maxQ = (1 << bits) - 1
            var g = LCG(s: UInt64(90 + bits))
            var weightedTotal: Float = 0, plainTotal: Float = 0
            for _ in 0..<200 {
                let v = (0..<64).map { _ in g.next() + g.next() + g.next() }
                let a = (0..<64).map { _ in g.next() > 0.8 ? Float(100) : Float(1) }
                v.withUnsafeBufferPointer { p in
                    a.withUnsafeBufferPointer { w in
                        let weighted = GroupGrid.fit(p.baseAddress!, count: 64, maxQ: maxQ, importance: w.baseAddress!)
                        let plain = GroupGrid.fit(p.baseAddress!, count: 64, maxQ: maxQ)
                        weightedTotal += weighted.error(p.baseAddress!, count: 64, stride: 1, maxQ: maxQ, importance: w.baseAddress!)
                        plainTotal += plain.error(p.baseAddress!, count: 64, stride: 1, maxQ: maxQ, importance: w.baseAddress!)
                    }
                }
            }
            XCTAssertLessThan(weightedTotal, 0.95 * plainTotal, "bits \(bits)")
        }
    }
}
