import Foundation
@testable import SpoolFormat
import XCTest

/// A rotated file (header `rotation`, preamble flag bit 0) must carry a (dim, dim) head matrix when
/// its LM head is tied; every way of getting that wrong is refused with a typed error.
final class SpoolRotationHeaderTests: XCTestCase {
    typealias Base = SpoolFileTests

    /// Writes Base.plan() plus `extra` extents, with or without a rotation in the header.
    static func write(rotated: Bool, extra: [SpoolExtentPlan]) throws -> [UInt8] {
        let path = NSTemporaryDirectory() + "spoolrot-\(UUID().uuidString).spool"
        defer { try? FileManager.default.removeItem(atPath: path) }
        var header = SpoolHeader(architecture: "llama", hyperparameters: Base.hyper, tokenizer: Base.tokenizer, chatTemplate: nil,
                                 quantization: SpoolQuantization(method: "rtn", bits: 3, group: 64))
        if rotated { header.rotation = SpoolRotation(method: "hadamard", seed: 7, valueHeads: true) }
        let plan = Base.plan() + extra
        let w = try SpoolWriter(path: path, header: header, plan: plan)
        for e in plan.indices {
            try w.writeExtent(e, tensors: w.layout.tensors.filter { $0.extent == e }.map { [UInt8](repeating: 1, count: $0.length) })
        }
        try w.finish()
        return Array(FileManager.default.contents(atPath: path)!)
    }

    static func head(_ shape: [Int]) -> SpoolExtentPlan {
        SpoolExtentPlan(name: "output_rotation", layer: nil, tensors: [SpoolTensor(name: SpoolRotation.headTensor, shape: shape, bits: 32, group: 0)])
    }

    func expect(_ bytes: [UInt8], _ check: (SpoolError) -> Bool, _ label: String, line: UInt = #line) {
        XCTAssertThrowsError(try SpoolFile(file: MappedFile(copying: bytes)), label, line: line) { e in
            guard let e = e as? SpoolError else { return XCTFail("\(label): untyped \(e)", line: line) }
            XCTAssertTrue(check(e), "\(label): got \(e)", line: line)
        }
    }

    func testRotatedFileWithHeadMatrixLoadsAndSetsTheFlag() throws {
        let bytes = try Self.write(rotated: true, extra: [Self.head([64, 64])])
        XCTAssertEqual(bytes[12], 1, "preamble flag bit 0")
        let f = try SpoolFile(file: MappedFile(copying: bytes))
        XCTAssertEqual(f.header.rotation, SpoolRotation(method: "hadamard", seed: 7, valueHeads: true))
        XCTAssertEqual(f.tensor(named: SpoolRotation.headTensor)?.shape, [64, 64])
        XCTAssertEqual(try Self.write(rotated: false, extra: [])[12], 0)
    }

    func testRotatedFileWithoutOrWithMisshapenHeadMatrixIsRefused() throws {
        expect(try Self.write(rotated: true, extra: []), { if case let .missingTensor(n) = $0 { return n.hasPrefix(SpoolRotation.headTensor) } else { return false } }, "missing")
        expect(try Self.write(rotated: true, extra: [Self.head([64, 32])]), { $0 == .badShape(tensor: SpoolRotation.headTensor, shape: [64, 32]) }, "shape")
        expect(try Self.write(rotated: true, extra: [Self.head([128])]), { $0 == .badShape(tensor: SpoolRotation.headTensor, shape: [128]) }, "vector")
        // A head matrix in an unrotated file would be applied to an unrotated model.
        expect(try Self.write(rotated: false, extra: [Self.head([64, 64])]), { if case .unsupportedFeature = $0 { return true } else { return false } }, "stray")
    }

    func testFlagAndHeaderMustAgree() throws {
        var b = try Self.write(rotated: true, extra: [Self.head([64, 64])])
        b[12] = 0   // rotation in the header, flag clear
        expect(b, { if case .unsupportedFeature = $0 { return true } else { return false } }, "flag clear")
        b = try Self.write(rotated: false, extra: [])
        b[12] = 1   // flag set, no rotation in the header
        expect(b, { if case .unsupportedFeature = $0 { return true } else { return false } }, "flag set")
        b[12] = 4   // an unknown flag
        expect(b, { $0 == .unsupportedFeature("preamble flags 4") }, "unknown flag")
    }
}
