import Foundation
import SpoolFormat
import SpoolKernels
import SpoolModel
@testable import SpoolQuant
import XCTest

/// The tiny random Llama: sensitivity measured, widths allocated under a file size, packed.
final class BudgetPackTests: XCTestCase {
    func testMeasuredAllocationFitsTheFileSizeAndIsWhatIsPacked() throws {
        let gguf = try PackEndToEndTests.tinyGGUF()
        defer { try? FileManager.default.removeItem(atPath: gguf) }
        let file = try GGUFFile(path: gguf)
        let pool = ThreadPool(threads: 2)
        let options = PackOptions(spec: try QuantSpec(bits: 4, group: 64), method: .gptq, keep: ["output": 8, "embed": 8])
        let packer = try Packer(gguf: file, options: options, pool: pool, log: { _ in })
        let c = try LlamaConfiguration(gguf: file)
        let header = SpoolHeader(architecture: "llama", hyperparameters: c.spoolHyperparameters, tokenizer: try SpoolTokenizerInfo(gguf: file),
                                 chatTemplate: nil, quantization: SpoolQuantization(method: "gptq", bits: 4, group: 64))
        let calib = (0..<12).map { PackEndToEndTests.randomSequence(seed: UInt64(40 + $0)) }
        let choices = try ["2/64", "3/64", "4/64", "4/32"].map { try QuantChoice(parsing: $0) }
        let table = try packer.measureSensitivity(calibration: calib, choices: choices, gainSequences: 2) { _, _, _ in }

        XCTAssertEqual(table.entries.count, 2 * Packer.matrixStems.count)
        for e in table.entries {
            let err = choices.map { e.errors[$0.description]! }
            XCTAssertTrue(err.allSatisfy { $0.isFinite && $0 >= 0 }, "\(e.name): \(err)")
            // More bits, less error: 2 > 3 > 4 bits at group 64.
            XCTAssertGreaterThan(err[0], err[1], e.name)
            XCTAssertGreaterThan(err[1], err[2], e.name)
            XCTAssertGreaterThan(e.gain, 0, e.name)
        }
        // The table survives its JSON form.
        let again = try SensitivityTable.decode(try table.encoded())
        XCTAssertEqual(again.entries.map(\.errors), table.entries.map(\.errors))

        // Budgets between the all-narrowest and all-widest files.
        func size(_ choice: QuantChoice) throws -> Int {
            var o = options
            for e in table.entries { o.perTensor[e.name] = choice }
            return try Packer(gguf: file, options: o, pool: pool, log: { _ in }).plannedFileSize(header: header)
        }
        let small = try size(choices[0]), large = try size(choices[3])
        XCTAssertThrowsError(try packer.allocate(table, choices: choices, maxSize: small - 1, header: header))
        var previousError = Double.infinity
        for maxSize in [small, (small + large) / 2, large] {
            let a = try packer.allocate(table, choices: choices, maxSize: maxSize, header: header)
            XCTAssertLessThanOrEqual(a.fileSize, maxSize)
            XCTAssertLessThanOrEqual(a.error, previousError)
            previousError = a.error
            XCTAssertEqual(Set(a.perTensor.keys), Set(table.entries.map(\.name)))

            // Packing with these widths gives exactly the planned file, with the widths in its directory.
            var o = options
            o.perTensor = a.perTensor
            let out = NSTemporaryDirectory() + "budget-\(UUID().uuidString).spool"
            defer { try? FileManager.default.removeItem(atPath: out) }
            _ = try Packer(gguf: file, options: o, pool: pool, log: { _ in }).pack(to: out, header: header, calibration: calib) { _, _, _ in }
            let written = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: out)[.size] as? Int)
            XCTAssertEqual(written, a.fileSize)
            let spool = try SpoolFile(path: out)
            for (name, choice) in a.perTensor {
                let t = try XCTUnwrap(spool.tensor(named: name))
                XCTAssertEqual(t.bits, choice.bits, name)
                XCTAssertEqual(t.group, choice.group, name)
            }
        }
    }
}
