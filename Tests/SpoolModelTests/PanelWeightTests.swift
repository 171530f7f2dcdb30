import Foundation
import SpoolFormat
import SpoolKernels
import SpoolModel
import SpoolTestSupport
import XCTest

/// Interleaved vs row layout on the same 8-bit activations, relative to Σ |w x|: the integer sums
/// are equal, only the order of the float scaling differs.
let MAX_PANEL_VS_ROW_ERROR: Float = 1e-5

/// PackedWeight with its 4-bit bytes interleaved at load (`PackedPanels`): the same rows, the same
/// products, and a released file mapping that still reads back intact.
final class PanelWeightTests: XCTestCase {
    func testInterleavedWeightMatchesRowLayout() throws {
        let pool = ThreadPool(threads: 2)
        for (rows, cols, group, tokens) in [(48, 576, 64, 1), (32, 384, 128, 2), (64, 160, 32, 9), (16, 1536, 64, 1)] {
            var rng = TestRandom(seed: UInt64(rows * 31 + cols))
            let file = PackedInt8Tests.packed(rows: rows, cols: cols, bits: 4, group: group, rng: &rng)
            let plain = try PackedWeight(rows: rows, cols: cols, bits: 4, group: group, bytes: file.bytes, owner: file, name: "w")
            let panel = try PackedWeight(rows: rows, cols: cols, bits: 4, group: group, bytes: file.bytes, owner: file, name: "w",
                                         interleave: true)
            XCTAssertFalse(plain.panels)
            XCTAssertTrue(panel.panels)
            var a = [Float](repeating: 0, count: cols), b = a
            for r in 0..<rows {
                plain.row(r, into: &a)
                panel.row(r, into: &b)
                XCTAssertEqual(a, b, "row \(r)")
            }
            let x = rng.floats(tokens * cols, -1, 1)
            var yp = [Float](repeating: .nan, count: tokens * rows), yq = yp, fp = yp, fq = yp
            plain.apply(x, tokens: tokens, into: &yp, pool: pool)
            panel.apply(x, tokens: tokens, into: &yq, pool: pool)
            plain.applyFloat(x, tokens: tokens, into: &fp, pool: pool)
            panel.applyFloat(x, tokens: tokens, into: &fq, pool: pool)
            XCTAssertEqual(fp, fq, "float path \(rows)x\(cols)")
            for i in 0..<(tokens * rows) {
                var mag: Float = 0
                plain.row(i % rows, into: &a)
                for c in 0..<cols { mag += abs(a[c] * x[(i / rows) * cols + c]) }
                XCTAssertLessThanOrEqual(abs(yp[i] - yq[i]) / mag, MAX_PANEL_VS_ROW_ERROR, "\(rows)x\(cols) g\(group) at \(i)")
            }
        }
    }

    /// Shapes the panels cannot hold keep the row layout.
    func testUnsupportedShapesStayInRows() throws {
        var rng = TestRandom(seed: 9)
        for (rows, bits) in [(20, 4), (32, 3), (32, 8)] {
            let file = PackedInt8Tests.packed(rows: rows, cols: 64, bits: bits, group: 32, rng: &rng)
            let w = try PackedWeight(rows: rows, cols: 64, bits: bits, group: 32, bytes: file.bytes, owner: file, name: "w", interleave: true)
            XCTAssertFalse(w.panels, "\(rows) rows, \(bits) bits")
        }
    }

    /// Releasing the pages of a real file mapping after interleaving loses nothing: the mapping
    /// reads back the file's bytes.
    func testReleasedMappingReadsBack() throws {
        let rows = 64, cols = 4096, group = 64
        var rng = TestRandom(seed: 21)
        let heap = PackedInt8Tests.packed(rows: rows, cols: cols, bits: 4, group: group, rng: &rng)
        let original = Array(heap.bytes)
        let path = NSTemporaryDirectory() + "spool-panel-\(getpid()).bin"
        defer { unlink(path) }
        try Data(original).write(to: URL(fileURLWithPath: path))
        let mapped = try MappedFile(path: path)
        XCTAssertTrue(mapped.isFileMapping)
        XCTAssertFalse(heap.isFileMapping)
        let w = try PackedWeight(rows: rows, cols: cols, bits: 4, group: group, bytes: mapped.bytes, owner: mapped, name: "w",
                                 interleave: true, releaseSource: true)
        XCTAssertTrue(w.panels)
        XCTAssertEqual(Array(mapped.bytes), original)
    }
}
