import SpoolFormat
import SpoolKernels
import SpoolModel
@testable import SpoolQuant
import XCTest

/// Largest |simd - reference| of a packed dot product, relative to Σ|w·x| of the row.
let MAX_PACKED_DOT_ERROR: Float = 1e-5
/// Largest error of the tiled (decode a row block, float matmul) path against the reference dot.
let MAX_PACKED_TILE_ERROR: Float = 1e-4

final class PackedWeightTests: XCTestCase {
    struct LCG {
        var s: UInt64
        mutating func next() -> Float {
            s = s &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: s >> 11) % 2_000_001 - 1_000_000) / 1_000_000
        }
    }

    func makeWeight(rows: Int, cols: Int, bits: Int, group: Int, seed: UInt64) throws -> (PackedWeight, [Float], [Float]) {
        var g = LCG(s: seed)
        let w = (0..<(rows * cols)).map { _ in g.next() * 0.1 }
        let q = try RTN.quantize(w, rows: rows, cols: cols, spec: QuantSpec(bits: bits, group: group))
        let bytes = q.packed()
        let file = MappedFile(copying: bytes)
        let pw = try PackedWeight(rows: rows, cols: cols, bits: bits, group: group, bytes: file.bytes, owner: file, name: "test")
        return (pw, w, q.dequantized())
    }

    func testSIMDDotMatchesReference() throws {
        let pool = ThreadPool(threads: 2)
        for bits in [2, 3, 4, 8] {
            for group in [32, 64, 128] {
                let rows = 37, cols = 384, tokens = 3
                let (pw, _, dq) = try makeWeight(rows: rows, cols: cols, bits: bits, group: group, seed: UInt64(bits * 1000 + group))
                var g = LCG(s: 99)
                let x = (0..<(tokens * cols)).map { _ in g.next() }
                var ys = [Float](repeating: 0, count: tokens * rows), yr = ys
                pw.applyDot(x, tokens: tokens, into: &ys, pool: pool)
                pw.applyDot(x, tokens: tokens, into: &yr, pool: pool, reference: true)
                for t in 0..<tokens {
                    for r in 0..<rows {
                        var mag: Float = 0, exact: Float = 0
                        for c in 0..<cols { mag += abs(dq[r * cols + c] * x[t * cols + c]); exact += dq[r * cols + c] * x[t * cols + c] }
                        let e = abs(ys[t * rows + r] - yr[t * rows + r]) / mag
                        XCTAssertLessThan(e, MAX_PACKED_DOT_ERROR, "bits \(bits) group \(group) row \(r)")
                        XCTAssertLessThan(abs(yr[t * rows + r] - exact) / mag, MAX_PACKED_DOT_ERROR, "reference vs dequantized, bits \(bits)")
                    }
                }
            }
        }
    }

    func testTiledPathMatchesReference() throws {
        let pool = ThreadPool(threads: 2)
        for bits in [2, 3, 4, 8] {
            let rows = 101, cols = 576, tokens = 45
            let (pw, _, dq) = try makeWeight(rows: rows, cols: cols, bits: bits, group: 64, seed: UInt64(bits))
            var g = LCG(s: 7)
            let x = (0..<(tokens * cols)).map { _ in g.next() }
            var y = [Float](repeating: .nan, count: tokens * rows)
            pw.applyFloat(x, tokens: tokens, into: &y, pool: pool)
            for t in 0..<tokens {
                for r in 0..<rows {
                    var mag: Float = 0, exact: Float = 0
                    for c in 0..<cols { mag += abs(dq[r * cols + c] * x[t * cols + c]); exact += dq[r * cols + c] * x[t * cols + c] }
                    XCTAssertLessThan(abs(y[t * rows + r] - exact) / mag, MAX_PACKED_TILE_ERROR, "bits \(bits) token \(t) row \(r)")
                }
            }
            // Row lookup (embeddings) decodes exactly the dequantized values.
            var row = [Float](repeating: 0, count: cols)
            pw.row(5, into: &row)
            XCTAssertEqual(row, Array(dq[(5 * cols)..<(6 * cols)]))
        }
    }

    func testPackUnpackRoundTrip() {
        for bits in [2, 3, 4, 8] {
            var g = LCG(s: UInt64(bits))
            let q = (0..<32).map { _ in UInt8(Int((g.next() + 1) * 1000) % (1 << bits)) }
            var p = [UInt8](repeating: 0, count: QuantLayout.chunkBytes(bits: bits))
            var back = [UInt8](repeating: 0, count: 32)
            QuantLayout.pack32(q, bits: bits, into: &p)
            QuantLayout.unpack32(p, bits: bits, into: &back)
            XCTAssertEqual(back, q, "bits \(bits)")
        }
    }
}
