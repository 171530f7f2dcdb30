import Foundation
@testable import SpoolFormat
import XCTest

/// The header records the packer options that change the weights; files that predate a field
/// (it is absent) still open, with the field nil.
final class SpoolQuantizationRecordTests: XCTestCase {
    typealias Base = SpoolFileTests

    func write(_ q: SpoolQuantization) throws -> SpoolFile {
        let path = NSTemporaryDirectory() + "spoolq-\(UUID().uuidString).spool"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let header = SpoolHeader(architecture: "llama", hyperparameters: Base.hyper, tokenizer: Base.tokenizer, chatTemplate: nil, quantization: q)
        let plan = Base.plan()
        let w = try SpoolWriter(path: path, header: header, plan: plan)
        for e in plan.indices {
            try w.writeExtent(e, tensors: w.layout.tensors.filter { $0.extent == e }.map { [UInt8](repeating: 1, count: $0.length) })
        }
        try w.finish()
        return try SpoolFile(file: MappedFile(copying: Array(FileManager.default.contents(atPath: path)!)))
    }

    func testPackerOptionsRoundTrip() throws {
        var q = SpoolQuantization(method: "gptq", bits: 3, group: 64, overrides: ["embed": 4], calibration: "wiki.valid.tokens",
                                  calibrationTokens: 32768, actOrder: false, damping: 0.01, source: "m.gguf")
        q.groupOverrides = ["embed": 64]
        q.headDamping = 0.1
        q.refitRounds = 1
        q.trueSequential = true
        q.weightedGrid = false
        q.maxSize = 66 << 20
        XCTAssertEqual(try write(q).header.quantization, q)
    }

    func testFilesWithoutTheNewFieldsOpen() throws {
        let q = SpoolQuantization(method: "rtn", bits: 4, group: 32)
        let f = try write(q)
        XCTAssertEqual(f.header.quantization, q)
        XCTAssertNil(f.header.quantization.refitRounds)
        XCTAssertNil(f.header.quantization.maxSize)
        // Nothing of the new fields is written when they are unset: the header reads as before.
        let json = String(decoding: f.file.bytes[SpoolFile.preambleSize..<f.dataOffset], as: UTF8.self)
        for key in ["group_overrides", "head_damping", "refit_rounds", "true_sequential", "weighted_grid", "max_size"] {
            XCTAssertFalse(json.contains(key), key)
        }
    }
}
