import Foundation
import SpoolFormat
import SpoolKernels
import SpoolModel
import SpoolRuntime
@testable import SpoolQuant
import XCTest

/// Largest ratio of a compact-grid quantization's error to the float16-grid one's on the same
/// weights (RTN weight error; GPTQ output error). The 8-bit codes move each grid by at most half a
/// code step, and the snap tries the neighbouring codes. GPTQ: summed over five cases.
let MAX_COMPACT_ERROR_RATIO = 1.10
/// The same for one GPTQ case of a 32 x 128 problem, where any grid change sends GPTQ down another
/// path: measured 0.83-1.35 at 2 bits, 0.95-1.03 at 3 and 4.
let MAX_COMPACT_GPTQ_CASE_RATIO = 1.6

final class CompactGridTests: XCTestCase {
    typealias LCG = PackedWeightTests.LCG

    func weights(_ rows: Int, _ cols: Int, seed: UInt64) -> [Float] {
        var g = LCG(s: seed)
        // A few rows much wider than the rest, as real matrices have, so the row bounds matter.
        return (0..<(rows * cols)).map { i in g.next() * (i / cols % 7 == 0 ? 0.5 : 0.05) + (i % cols == 3 ? 0.2 : 0) }
    }

    /// The file bytes of `q`, read back through PackedWeight: every row equals the quantizer's
    /// dequantized values exactly (the loader expands the same codes the quantizer snapped to).
    func assertRoundTrip(_ q: QuantizedMatrix, _ label: String) throws {
        let bytes = q.packed()
        XCTAssertEqual(bytes.count, QuantLayout.tensorBytes(shape: [q.rows, q.cols], bits: q.spec.bits, group: q.spec.group, compactGrid: true), label)
        let file = MappedFile(copying: bytes)
        let pw = try PackedWeight(rows: q.rows, cols: q.cols, bits: q.spec.bits, group: q.spec.group, bytes: file.bytes, owner: file,
                                  name: label, compactGrid: true)
        let want = q.dequantized()
        var row = [Float](repeating: 0, count: q.cols)
        for r in 0..<q.rows {
            pw.row(r, into: &row)
            XCTAssertEqual(row, Array(want[(r * q.cols)..<((r + 1) * q.cols)]), "\(label) row \(r)")
        }
    }

    func testRTNCompactGridsRoundTripExactlyAndCostLittle() throws {
        let rows = 21, cols = 128
        let w = weights(rows, cols, seed: 3)
        for bits in [2, 3, 4, 8] {
            for group in [32, 64, 128] {
                let label = "\(bits)/\(group)"
                let c = try RTN.quantize(w, rows: rows, cols: cols, spec: QuantSpec(bits: bits, group: group, compactGrid: true))
                try assertRoundTrip(c, label)
                let p = try RTN.quantize(w, rows: rows, cols: cols, spec: QuantSpec(bits: bits, group: group))
                func err(_ q: QuantizedMatrix) -> Double { zip(w, q.dequantized()).reduce(0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) } }
                XCTAssertLessThan(err(c), err(p) * MAX_COMPACT_ERROR_RATIO, label)
                // 16 bits per group instead of 32, plus 4 bytes of bounds per row.
                XCTAssertEqual(c.packed().count, p.packed().count - rows * (cols / group) * 2 + rows * 4, label)
            }
        }
    }

    func testGPTQCompactGridsRoundTripExactlyWithActOrderAndRefitRequested() throws {
        let pool = ThreadPool(threads: 2)
        let (w, _, acc, rows, cols, _) = GPTQTests.correlatedProblem(seed: 41, pool: pool)
        var totalCompact = 0.0, totalPlain = 0.0
        for (bits, actOrder) in [(3, false), (2, true), (4, false), (2, false), (3, true)] {
            var o = GPTQOptions()
            o.actOrder = actOrder
            o.refitRounds = 1   // not applied to compact grids: the codes must stay what GPTQ snapped
            let c = try GPTQ.quantize(w, rows: rows, cols: cols, hessian: acc.matrix, spec: QuantSpec(bits: bits, group: 32, compactGrid: true), options: o, pool: pool)
            try assertRoundTrip(c, "gptq \(bits)")
            o.refitRounds = 0
            let p = try GPTQ.quantize(w, rows: rows, cols: cols, hessian: acc.matrix, spec: QuantSpec(bits: bits, group: 32), options: o, pool: pool)
            let ec = relativeOutputError(original: w, quantized: c.dequantized(), rows: rows, cols: cols, hessian: acc.matrix)
            let ep = relativeOutputError(original: w, quantized: p.dequantized(), rows: rows, cols: cols, hessian: acc.matrix)
            // One small problem at 2 bits swings either way (measured 0.83 and 1.35): GPTQ's path
            // changes with any grid change. Per case a loose guard, the total the real check.
            XCTAssertLessThan(ec, ep * MAX_COMPACT_GPTQ_CASE_RATIO, "gptq \(bits) act-order \(actOrder)")
            totalCompact += ec
            totalPlain += ep
        }
        XCTAssertLessThan(totalCompact, totalPlain * MAX_COMPACT_ERROR_RATIO)
    }

    func testCodesDecodeToTheBoundsAndSnapPicksTheBestNeighbour() {
        let b = CompactGridRow(dBound: 0.5, mBound: 2)
        XCTAssertEqual(b.grid(d: 255, m: 127).d, 0.5)
        XCTAssertEqual(b.grid(d: 255, m: -127).m, -2)
        XCTAssertEqual(b.grid(d: 0, m: 0).d, 0)
        // Values on the grid d = 0.5 * 100 / 255, m = -2 * 30 / 127: the snap finds those codes exactly.
        let exact = b.grid(d: 100, m: -30)
        let values = (0..<32).map { exact.value($0 % 16) }
        let s = values.withUnsafeBufferPointer { b.snap(GroupGrid(d: exact.d * 1.002, m: exact.m * 0.998), $0.baseAddress!, count: 32, maxQ: 15, importance: nil) }
        XCTAssertEqual(s.d, 100)
        XCTAssertEqual(s.m, -30)
        // Bounds round up: no group of the row needs a code above 255 / 127.
        let row: [Float] = (0..<64).map { Float($0) / 63 * 1.7 - 0.3 }
        let r = row.withUnsafeBufferPointer { CompactGridRow(row: $0.baseAddress!, cols: 64, group: 32, maxQ: 7) }
        XCTAssertGreaterThanOrEqual(Float(r.mBound), 1.4 * CompactGridRow.slack)
        XCTAssertGreaterThanOrEqual(Float(r.dBound), 1.7 * 31 / 63 / 7 * CompactGridRow.slack)
    }

    func testChoiceParsingAndCost() throws {
        let c = try QuantChoice(parsing: "3/32c")
        XCTAssertTrue(c.compact)
        XCTAssertEqual(c.description, "3/32c")
        XCTAssertEqual(c.bitsPerWeight, 3.5)
        XCTAssertEqual(c.plain, try QuantChoice(parsing: "3/32"))
        XCTAssertThrowsError(try QuantChoice(parsing: "3/32x"))
        XCTAssertThrowsError(try QuantChoice(parsing: "3/c"))
        // Decoding a choice saved before compact grids existed.
        let old = try JSONDecoder().decode(QuantChoice.self, from: Data(#"{"bits":4,"group":64}"#.utf8))
        XCTAssertEqual(old, try QuantChoice(bits: 4, group: 64))
    }
}

/// A compact-grid pack of the tiny model: its directory says so, it loads resident and streamed
/// (the streamed blocks expand their codes out of the ring buffer) with the same logits, and it
/// stays about as close to the source as the float16-grid pack.
final class CompactGridPackTests: XCTestCase {
    func testCompactPackLoadsResidentAndStreamedAndTracksTheFloat16Pack() throws {
        let gguf = try PackEndToEndTests.tinyGGUF(tied: true)
        defer { try? FileManager.default.removeItem(atPath: gguf) }
        let e2e = PackEndToEndTests(name: "helper", testClosure: { _ in })   // its pack and logits helpers
        let plain = try e2e.pack(gguf, method: .gptq, bits: 3, keep: ["embed": 4])
        let compact = try e2e.pack(gguf, method: .gptq, bits: 3, keep: ["embed": 4]) { $0.compactGrids = true }
        defer { for p in [plain, compact] { try? FileManager.default.removeItem(atPath: p) } }

        let f = try SpoolFile(path: compact)
        let quantized = f.header.tensors.filter { $0.bits != QuantLayout.floatBits }
        XCTAssertFalse(quantized.isEmpty)
        XCTAssertTrue(quantized.allSatisfy(\.compactGrid))
        try f.verifyAll()
        XCTAssertLessThan(try SpoolFile(path: compact).file.bytes.count, try SpoolFile(path: plain).file.bytes.count + 4096)

        let tokens = PackEndToEndTests.randomSequence(seed: 77)
        let source = try e2e.logits(Engine(path: gguf, options: EngineOptions(threads: 2)), tokens)
        let resident = try e2e.logits(Engine(path: compact, options: EngineOptions(threads: 2)), tokens)
        var streamedOptions = EngineOptions(threads: 2)
        var s = StreamingOptions(memoryBudget: 2 << 20, backend: .pread, prefetchDepth: 1)
        s.contextLength = 64
        streamedOptions.streaming = s
        let streamedEngine = try Engine(path: compact, options: streamedOptions)
        XCTAssertNotNil(streamedEngine.streamedLayers)
        XCTAssertEqual(try e2e.logits(streamedEngine, tokens), resident)
        let plainLogits = try e2e.logits(Engine(path: plain, options: EngineOptions(threads: 2)), tokens)
        func err(_ l: [Float]) -> Float { zip(source, l).map { ($0 - $1) * ($0 - $1) }.reduce(0, +) }
        XCTAssertLessThan(err(resident), err(plainLogits) * Float(MAX_COMPACT_GPTQ_CASE_RATIO))
    }
}
