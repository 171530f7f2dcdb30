import SpoolKernels
import SpoolTestSupport
import XCTest

/// Packed-format integer kernels (every level) vs `PackedQuantGeneric.referenceBlock`, relative to
/// Σ_b |d_g d_x Σ q q_x| + |m_g s_x| of the (row, token): the integer sums are exact at every level,
/// so only the order of float additions differs.
let MAX_PACKED_QDOT_REL_ERROR: Float = 1e-5

final class PackedQuantKernelTests: XCTestCase {
    /// Random packed bytes for (rows, cols) in `format`: quants then (d, m) f16 pairs per group.
    func randomMatrix(_ f: PackedQuantFormat, rows: Int, cols: Int, rng: inout TestRandom) -> (quants: [UInt8], scales: [UInt8]) {
        let quants = (0..<(rows * f.rowBytes(cols: cols))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        var scales: [UInt8] = []
        for _ in 0..<(rows * cols / f.group) {
            let d = Float16(rng.float(0, 0.02)), m = Float16(rng.float(-0.1, 0.1))
            withUnsafeBytes(of: d.bitPattern.littleEndian) { scales += $0 }
            withUnsafeBytes(of: m.bitPattern.littleEndian) { scales += $0 }
        }
        return (quants, scales)
    }

    func testPackedMatmulMatchesReferenceAtEveryLevel() {
        let pool = ThreadPool(threads: 2)
        let shapes = [(13, 96, 32, 1), (37, 384, 128, 3), (64, 576, 64, 7), (22, 160, 32, 9), (24, 1536, 64, 21), (9, 192, 64, 130), (40, 256, 128, 12), (48, 64, 32, 2)]
        for bits in PackedQuantFormat.supportedBits {
            for (rows, cols, group, tokens) in shapes {
                let f = PackedQuantFormat(bits: bits, group: group)!
                var rng = TestRandom(seed: UInt64(bits * 100_000 + rows * 1000 + cols))
                let (quants, scales) = randomMatrix(f, rows: rows, cols: cols, rng: &rng)
                let x = rng.floats(tokens * cols, -2, 2)
                let a = Q8Activations()
                Kernels.quantizeActivations(x, tokens: tokens, cols: cols, into: a, pool: pool, level: .generic)
                quants.withUnsafeBytes { qp in
                    scales.withUnsafeBytes { sp in
                        let m = PackedQuantMatrix(quants: qp.baseAddress!, scales: sp.baseAddress!, rows: rows, cols: cols, format: f)
                        var ref = [Float](repeating: .nan, count: tokens * rows)
                        PackedQuantGeneric.referenceBlock(m, a, into: &ref, rowRange: 0..<rows, tokenRange: 0..<tokens)
                        let mag = magnitudes(m, a)
                        for level in testLevels {
                            var y = [Float](repeating: .nan, count: tokens * rows)
                            Kernels.packedMatmul(m, a, into: &y, pool: pool, level: level)
                            for i in 0..<(tokens * rows) {
                                let err = abs(y[i] - ref[i]) / max(mag[i], 1e-6)
                                XCTAssertLessThanOrEqual(err, MAX_PACKED_QDOT_REL_ERROR, "\(f) \(level) \(rows)x\(cols) t\(tokens) at \(i)")
                            }
                        }
                    }
                }
            }
        }
    }

    /// Interleaved 4-bit matrices (`PackedPanels`): the gather inverts the interleave, the panel
    /// reference equals the row reference, and every level (AVX-512 reads the panels, the others
    /// gather rows back) matches it, for decode and batch token counts and partial row ranges.
    func testInterleavedPanelsMatchReference() {
        let pool = ThreadPool(threads: 2)
        let shapes = [(16, 96, 32, 1), (48, 576, 64, 1), (32, 384, 128, 3), (64, 576, 64, 7), (96, 1536, 64, 2),
                      (32, 256, 128, 12), (16, 64, 32, 5), (192, 576, 32, 1)]
        for (rows, cols, group, tokens) in shapes {
            let f = PackedQuantFormat(bits: 4, group: group)!
            var rng = TestRandom(seed: UInt64(rows * 1000 + cols + group))
            let (quants, scales) = randomMatrix(f, rows: rows, cols: cols, rng: &rng)
            let x = rng.floats(tokens * cols, -2, 2)
            let a = Q8Activations()
            Kernels.quantizeActivations(x, tokens: tokens, cols: cols, into: a, pool: pool, level: .generic)
            var pq = [UInt8](repeating: 0, count: quants.count), ps = [UInt8](repeating: 0, count: scales.count)
            quants.withUnsafeBytes { qp in
                scales.withUnsafeBytes { sp in
                    let m = PackedQuantMatrix(quants: qp.baseAddress!, scales: sp.baseAddress!, rows: rows, cols: cols, format: f)
                    XCTAssertTrue(PackedPanels.supports(rows: rows, cols: cols, format: f))
                    pq.withUnsafeMutableBytes { pqp in
                        ps.withUnsafeMutableBytes { psp in PackedPanels.interleave(m, toQuants: pqp.baseAddress!, toScales: psp.baseAddress!) }
                    }
                    XCTAssertNotEqual(pq, quants, "interleaving moved nothing")
                    var ref = [Float](repeating: .nan, count: tokens * rows)
                    PackedQuantGeneric.referenceBlock(m, a, into: &ref, rowRange: 0..<rows, tokenRange: 0..<tokens)
                    let mag = magnitudes(m, a)
                    pq.withUnsafeBytes { pqp in
                        ps.withUnsafeBytes { psp in
                            let pm = PackedQuantMatrix(quants: pqp.baseAddress!, scales: psp.baseAddress!, rows: rows, cols: cols,
                                                       format: f, panels: true)
                            PackedPanels.withRowLayout(pm, rows: 0..<rows) { back in
                                XCTAssertEqual(Array(UnsafeRawBufferPointer(start: back.quants, count: quants.count)), quants, "gather \(rows)x\(cols)")
                                XCTAssertEqual(Array(UnsafeRawBufferPointer(start: back.scales, count: scales.count)), scales, "gather scales \(rows)x\(cols)")
                            }
                            var pref = [Float](repeating: .nan, count: tokens * rows)
                            PackedPanels.referenceBlock(pm, a, into: &pref, rowRange: 0..<rows, tokenRange: 0..<tokens)
                            for i in 0..<(tokens * rows) {
                                XCTAssertLessThanOrEqual(abs(pref[i] - ref[i]) / max(mag[i], 1e-6), MAX_PACKED_QDOT_REL_ERROR, "panel reference at \(i)")
                            }
                            for level in testLevels {
                                var y = [Float](repeating: .nan, count: tokens * rows)
                                Kernels.packedMatmul(pm, a, into: &y, pool: pool, level: level)
                                // A block that starts mid-panel (the non-panel path must serve it).
                                var part = [Float](repeating: .nan, count: tokens * rows)
                                Kernels.packedMatmulBlock(pm, a, into: &part, rowRange: 3..<(rows - 5), tokenRange: 0..<tokens, level: level)
                                for t in 0..<tokens {
                                    for r in 0..<rows {
                                        let i = t * rows + r
                                        XCTAssertLessThanOrEqual(abs(y[i] - ref[i]) / max(mag[i], 1e-6), MAX_PACKED_QDOT_REL_ERROR,
                                                                 "panels \(level) \(rows)x\(cols) g\(group) t\(tokens) at \(i)")
                                        if r >= 3 && r < rows - 5 {
                                            XCTAssertLessThanOrEqual(abs(part[i] - ref[i]) / max(mag[i], 1e-6), MAX_PACKED_QDOT_REL_ERROR,
                                                                     "panel block \(level) \(rows)x\(cols) at \(i)")
                                        } else {
                                            XCTAssertTrue(part[i].isNaN, "row \(r) outside the block was written")
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The reference is the float math it stands for: Σ (d q + m) · (q_x d_x) with unpack32's q.
    func testReferenceIsTheDequantizedDotProduct() {
        let pool = ThreadPool(threads: 1)
        for bits in PackedQuantFormat.supportedBits {
            let f = PackedQuantFormat(bits: bits, group: 64)!
            let rows = 5, cols = 192, tokens = 2
            var rng = TestRandom(seed: UInt64(bits))
            let (quants, scales) = randomMatrix(f, rows: rows, cols: cols, rng: &rng)
            let x = rng.floats(tokens * cols, -1, 1)
            let a = Q8Activations()
            Kernels.quantizeActivations(x, tokens: tokens, cols: cols, into: a, pool: pool, level: .generic)
            quants.withUnsafeBytes { qp in
                scales.withUnsafeBytes { sp in
                    let m = PackedQuantMatrix(quants: qp.baseAddress!, scales: sp.baseAddress!, rows: rows, cols: cols, format: f)
                    var ref = [Float](repeating: .nan, count: tokens * rows)
                    PackedQuantGeneric.referenceBlock(m, a, into: &ref, rowRange: 0..<rows, tokenRange: 0..<tokens)
                    var q = [UInt8](repeating: 0, count: 32)
                    for t in 0..<tokens {
                        for r in 0..<rows {
                            var exact: Double = 0, mag: Double = 0
                            for b in 0..<(cols / 32) {
                                PackedQuantGeneric.unpack32(qp.baseAddress! + r * f.rowBytes(cols: cols) + b * f.chunkBytes, bits: bits, into: &q)
                                let g = (r * cols / 64 + b * 32 / 64) * 4
                                let d = Double(Float(Float16(bitPattern: UInt16(scales[g]) | UInt16(scales[g + 1]) << 8)))
                                let mw = Double(Float(Float16(bitPattern: UInt16(scales[g + 2]) | UInt16(scales[g + 3]) << 8)))
                                let dx = Double(a.d[t * cols / 32 + b])
                                var sq = 0
                                for j in 0..<32 {
                                    let xq = Double(a.qs[t * cols + b * 32 + j])
                                    sq += Int(a.qs[t * cols + b * 32 + j])
                                    exact += (d * Double(q[j]) + mw) * xq * dx
                                    mag += abs((d * Double(q[j]) + mw) * xq * dx)
                                }
                                // s_x is stored at f16 precision: the reference uses the stored one.
                                exact += mw * (Double(a.s[t * cols / 32 + b]) - Double(sq) * dx)
                            }
                            XCTAssertLessThanOrEqual(Float(abs(Double(ref[t * rows + r]) - exact) / mag), MAX_PACKED_QDOT_REL_ERROR, "bits \(bits)")
                        }
                    }
                }
            }
        }
    }

    func magnitudes(_ m: PackedQuantMatrix, _ a: Q8Activations) -> [Float] {
        let f = m.format, nb = m.cols / 32
        var out = [Float](repeating: 0, count: a.tokens * m.rows)
        var q = [UInt8](repeating: 0, count: 32)
        for r in 0..<m.rows {
            for b in 0..<nb {
                PackedQuantGeneric.unpack32(m.quants + r * f.rowBytes(cols: m.cols) + b * f.chunkBytes, bits: f.bits, into: &q)
                let sp = m.scales + (r * m.cols / f.group + b * 32 / f.group) * 4
                let d = Float(Float16(bitPattern: sp.loadUnaligned(as: UInt16.self)))
                let mw = Float(Float16(bitPattern: sp.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
                for t in 0..<a.tokens {
                    var isum: Int32 = 0
                    for j in 0..<32 { isum += Int32(q[j]) * Int32(a.qs[t * m.cols + b * 32 + j]) }
                    out[t * m.rows + r] += abs(d * a.d[t * nb + b] * Float(isum)) + abs(mw * a.s[t * nb + b])
                }
            }
        }
        return out
    }
}
