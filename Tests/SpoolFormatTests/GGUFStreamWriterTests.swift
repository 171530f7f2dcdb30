import Foundation
import XCTest
@testable import SpoolFormat

final class GGUFStreamWriterTests: XCTestCase {
    func testStreamedFileEqualsTheInMemoryWriterAndReadsBack() throws {
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("llama.block_count", .uint32(2))
        w.set("tokenizer.ggml.tokens", .array(.string, [.string("a"), .string("b")]))
        let specs = [
            GGUFStreamWriter.TensorSpec(name: "norm", shape: [5], type: .f32),
            GGUFStreamWriter.TensorSpec(name: "w", shape: [64, 3], type: .q4_0),
            GGUFStreamWriter.TensorSpec(name: "b", shape: [7], type: .f32),
        ]
        var datas: [[UInt8]] = []
        for s in specs {
            let n = s.type.byteCount(forValues: s.shape.reduce(1, *))!
            datas.append((0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ s.name.utf8.count) })
            w.add(s.name, shape: s.shape, type: s.type, data: datas.last!)
        }
        let expected = w.serialize()

        let path = FileManager.default.temporaryDirectory.path + "/spool-stream-\(getpid()).gguf"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let s = try GGUFStreamWriter(path: path, metadata: w.metadata, tensors: specs)
        // Supplied in uneven pieces that straddle tensor boundaries.
        let all = datas.flatMap { $0 }
        var at = 0
        for piece in [1, 19, 40, 3, 1000] where at < all.count {
            let end = min(all.count, at + piece)
            try all[at..<end].withUnsafeBytes { try s.write($0) }
            at = end
        }
        try s.finish()
        let written = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(written, expected)
        let file = try GGUFFile(path: path)
        XCTAssertEqual(file.tensors.map(\.name), ["norm", "w", "b"])
        XCTAssertEqual(Array(file.data(of: file.tensors[1])), datas[1])
    }

    func testMissingOrExtraBytesAreErrors() throws {
        let path = FileManager.default.temporaryDirectory.path + "/spool-stream-short-\(getpid()).gguf"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let specs = [GGUFStreamWriter.TensorSpec(name: "t", shape: [4], type: .f32)]
        let s = try GGUFStreamWriter(path: path, metadata: [], tensors: specs)
        try [UInt8](repeating: 0, count: 8).withUnsafeBytes { try s.write($0) }
        XCTAssertThrowsError(try s.finish())
        try [UInt8](repeating: 0, count: 8).withUnsafeBytes { try s.write($0) }
        XCTAssertThrowsError(try [UInt8](repeating: 0, count: 1).withUnsafeBytes { try s.write($0) })
        XCTAssertThrowsError(try GGUFStreamWriter(path: path, metadata: [], tensors: [.init(name: "q", shape: [33], type: .q4_0)]))
    }
}
