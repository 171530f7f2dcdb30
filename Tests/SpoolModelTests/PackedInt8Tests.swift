import SpoolFormat
import SpoolKernels
import SpoolModel
import SpoolTestSupport
import XCTest

/// PackedWeight's 8-bit activation path vs its float-activation path, relative to Σ |w x| of the
/// row: the only difference is rounding x to 8 bits per block of 32 (at most amax / 254 per value,
/// and the roundings mostly cancel).
let MAX_PACKED_INT8_VS_FLOAT_ERROR: Float = 4e-3

final class PackedInt8Tests: XCTestCase {
    /// The kernels' unpacking is SpoolFormat's layout.
    func testUnpackAgreesWithQuantLayout() {
        var rng = TestRandom(seed: 3)
        for bits in [2, 3, 4, 8] {
            for _ in 0..<20 {
                let p = (0..<QuantLayout.chunkBytes(bits: bits)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                var a = [UInt8](repeating: 0, count: 32), b = a
                QuantLayout.unpack32(p, bits: bits, into: &a)
                p.withUnsafeBytes { PackedQuantGeneric.unpack32($0.baseAddress!, bits: bits, into: &b) }
                XCTAssertEqual(a, b, "bits \(bits)")
            }
        }
    }

    func packed(rows: Int, cols: Int, bits: Int, group: Int, rng: inout TestRandom) -> MappedFile {
        Self.packed(rows: rows, cols: cols, bits: bits, group: group, rng: &rng)
    }

    /// A random packed tensor laid out as QuantLayout says.
    static func packed(rows: Int, cols: Int, bits: Int, group: Int, rng: inout TestRandom) -> MappedFile {
        let size = QuantLayout.tensorBytes(shape: [rows, cols], bits: bits, group: group)!
        var bytes = [UInt8](repeating: 0, count: size)
        var q = [UInt8](repeating: 0, count: 32)
        let cb = QuantLayout.chunkBytes(bits: bits)
        for r in 0..<rows {
            for c in 0..<(cols / 32) {
                for i in 0..<32 { q[i] = UInt8(rng.next() % UInt64(1 << bits)) }
                bytes.withUnsafeMutableBufferPointer {
                    QuantLayout.pack32(q, bits: bits, into: $0.baseAddress! + r * QuantLayout.rowBytes(cols: cols, bits: bits) + c * cb)
                }
            }
        }
        let so = QuantLayout.scaleOffset(rows: rows, cols: cols, bits: bits)
        for g in 0..<(rows * cols / group) {
            let d = Float16(rng.float(0.001, 0.02)), m = Float16(-Float(d) * Float((1 << bits) / 2))
            withUnsafeBytes(of: d.bitPattern.littleEndian) { for k in 0..<2 { bytes[so + 4 * g + k] = $0[k] } }
            withUnsafeBytes(of: m.bitPattern.littleEndian) { for k in 0..<2 { bytes[so + 4 * g + 2 + k] = $0[k] } }
        }
        return MappedFile(copying: bytes)
    }

    func testInt8PathMatchesFloatPath() throws {
        let pool = ThreadPool(threads: 2)
        for bits in [2, 3, 4, 8] {
            for (rows, cols, group, tokens) in [(37, 576, 64, 1), (20, 384, 128, 3), (33, 160, 32, 12)] {
                var rng = TestRandom(seed: UInt64(bits * 7 + rows))
                let file = packed(rows: rows, cols: cols, bits: bits, group: group, rng: &rng)
                let w = try PackedWeight(rows: rows, cols: cols, bits: bits, group: group, bytes: file.bytes, owner: file, name: "w")
                let x = rng.floats(tokens * cols, -1, 1)
                var yi = [Float](repeating: .nan, count: tokens * rows), yf = yi
                w.apply(x, tokens: tokens, into: &yi, pool: pool)
                w.applyFloat(x, tokens: tokens, into: &yf, pool: pool)
                var row = [Float](repeating: 0, count: cols)
                for r in 0..<rows {
                    w.row(r, into: &row)
                    for t in 0..<tokens {
                        var mag: Float = 0
                        for c in 0..<cols { mag += abs(row[c] * x[t * cols + c]) }
                        let err = abs(yi[t * rows + r] - yf[t * rows + r]) / mag
                        XCTAssertLessThanOrEqual(err, MAX_PACKED_INT8_VS_FLOAT_ERROR, "bits \(bits) g\(group) row \(r) token \(t)")
                    }
                }
            }
        }
    }

    /// applyShared (one quantization, one parallel loop over all row blocks) gives exactly what
    /// separate applies give.
    func testApplySharedEqualsSeparateApplies() throws {
        let pool = ThreadPool(threads: 2)
        let shared = Q8Activations()
        var rng = TestRandom(seed: 5)
        let cols = 192, tokens = 4
        var weights: [LinearWeight] = []
        var files: [MappedFile] = []
        for (rows, bits) in [(64, 4), (24, 8), (40, 3)] {
            let file = packed(rows: rows, cols: cols, bits: bits, group: 64, rng: &rng)
            files.append(file)
            weights.append(try PackedWeight(rows: rows, cols: cols, bits: bits, group: 64, bytes: file.bytes, owner: file,
                                            name: "w\(bits)", activations: shared))
        }
        let x = rng.floats(tokens * cols, -1, 1)
        var separate = weights.map { [Float](repeating: .nan, count: tokens * $0.rows) }
        for (i, w) in weights.enumerated() { w.apply(x, tokens: tokens, into: &separate[i], pool: pool) }
        let outs = weights.map { UnsafeMutablePointer<Float>.allocate(capacity: tokens * $0.rows) }
        defer { outs.forEach { $0.deallocate() } }
        applyShared(weights, x, tokens: tokens, into: outs, pool: pool)
        for (i, w) in weights.enumerated() {
            XCTAssertEqual(Array(UnsafeBufferPointer(start: outs[i], count: tokens * w.rows)), separate[i], "weight \(i)")
        }
        XCTAssertEqual(files.count, 3)
    }
}
