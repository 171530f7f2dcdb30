import XCTest
@testable import SpoolFormat

/// Valid and hostile GGUF files, built in memory. Every hostile file must give a typed error.
final class GGUFReaderTests: XCTestCase {
    /// A small valid file: a few metadata kinds and two tensors.
    func makeWriter() -> GGUFWriter {
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("llama.block_count", .uint32(2))
        w.set("llama.rope.freq_base", .float32(10000))
        w.set("tokenizer.ggml.tokens", .array(.string, ["a", "b", "c"].map { .string($0) }))
        w.set("tokenizer.ggml.token_type", .array(.int32, [1, 1, 3].map { .int32($0) }))
        w.add("a.weight", shape: [4, 2], floats: (0..<8).map(Float.init))
        w.add("b.weight", shape: [32], type: .q8_0, data: [UInt8](repeating: 1, count: 34))
        return w
    }

    func parse(_ bytes: [UInt8]) throws(GGUFError) -> GGUFFile {
        try GGUFFile(file: MappedFile(copying: bytes))
    }

    func assertError(_ bytes: [UInt8], _ check: (GGUFError) -> Bool, file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try parse(bytes)
            XCTFail("expected an error", file: file, line: line)
        } catch {
            XCTAssertTrue(check(error), "unexpected error: \(error)", file: file, line: line)
        }
    }

    func testValidFileRoundTrips() throws {
        var w = makeWriter()
        let g = try parse(w.serialize())
        XCTAssertEqual(g.version, 3)
        XCTAssertEqual(try g.string("general.architecture"), "llama")
        XCTAssertEqual(try g.integer("llama.block_count"), 2)
        XCTAssertEqual(try g.float("llama.rope.freq_base"), 10000)
        XCTAssertEqual(try g.stringArray("tokenizer.ggml.tokens"), ["a", "b", "c"])
        XCTAssertEqual(try g.integerArray("tokenizer.ggml.token_type"), [1, 1, 3])
        XCTAssertEqual(g.metadataKeys.first, "general.architecture")
        let a = try g.requireTensor("a.weight")
        XCTAssertEqual(a.shape, [4, 2])
        XCTAssertEqual(a.type, .f32)
        let data = g.data(of: a)
        XCTAssertEqual(data.count, 32)
        XCTAssertEqual(data.loadUnaligned(fromByteOffset: 7 * 4, as: Float.self), 7)
        XCTAssertEqual(try g.requireTensor("b.weight").byteCount, 34)
        XCTAssertEqual(g.dataOffset % 32, 0)
    }

    func testWrongMetadataTypeIsTyped() throws {
        var w = makeWriter()
        let g = try parse(w.serialize())
        XCTAssertThrowsError(try g.integer("general.architecture")) { e in
            XCTAssertEqual(e as? GGUFError, .wrongMetadataType(key: "general.architecture", expected: "integer", actual: "string"))
        }
        XCTAssertThrowsError(try g.stringArray("tokenizer.ggml.token_type"))
        XCTAssertThrowsError(try g.string("llama.block_count"))
        XCTAssertThrowsError(try g.require("missing.key", g.string)) { e in
            XCTAssertEqual(e as? GGUFError, .missingKey("missing.key"))
        }
        XCTAssertNil(try g.string("missing.key"))
    }

    func testTruncationAtEveryBoundaryIsTyped() {
        var w = makeWriter()
        let bytes = w.serialize()
        // Every prefix of the header, and a few inside the data section.
        let header = w.tensorInfoOffsets.last! + 40
        for n in Array(0..<header) + [bytes.count - 1, bytes.count - 20] {
            do {
                _ = try parse(Array(bytes[0..<n]))
                XCTFail("a file cut at \(n) of \(bytes.count) bytes was accepted")
            } catch {
                switch error {
                case .truncated, .notAGGUFFile, .tensorOutOfBounds, .stringTooLong, .countTooLarge: break
                default: XCTFail("cut at \(n): unexpected \(error)")
                }
            }
        }
    }

    func testBadMagicAndVersion() {
        var w = makeWriter()
        var bytes = w.serialize()
        bytes[0] = UInt8(ascii: "X")
        assertError(bytes) { if case .notAGGUFFile = $0 { true } else { false } }
        bytes = w.serialize()
        bytes[4] = 1
        assertError(bytes) { $0 == .unsupportedVersion(1) }
        bytes = w.serialize()
        bytes[4] = 0; bytes[7] = 3  // version 3, big-endian
        assertError(bytes) { $0 == .bigEndianNotSupported }
    }

    func testHugeCountsAreRefusedBeforeAllocation() {
        var w = makeWriter()
        var bytes = w.serialize()
        // Tensor count at offset 8, metadata count at 16.
        bytes.replaceSubrange(8..<16, with: le(UInt64.max))
        assertError(bytes) { if case .countTooLarge(field: "tensor count", _, _) = $0 { true } else { false } }
        bytes = w.serialize()
        bytes.replaceSubrange(16..<24, with: le(UInt64(1) << 40))
        assertError(bytes) { if case .countTooLarge(field: "metadata count", _, _) = $0 { true } else { false } }
    }

    func testHugeStringAndArrayLengths() {
        // A key whose length claims 2^62 bytes.
        var w = GGUFWriter()
        w.set("k", .string("v"))
        var bytes = w.serialize()
        bytes.replaceSubrange(24..<32, with: le(UInt64(1) << 62))
        assertError(bytes) { if case .stringTooLong = $0 { true } else { false } }
        // An array whose count claims 2^60 elements.
        w = GGUFWriter()
        w.set("arr", .array(.uint32, [.uint32(1)]))
        bytes = w.serialize()
        let countAt = 24 + 8 + 3 + 4 + 4
        bytes.replaceSubrange(countAt..<(countAt + 8), with: le(UInt64(1) << 60))
        assertError(bytes) { if case .countTooLarge = $0 { true } else { false } }
    }

    func testUnknownValueTypeAndDeepNesting() {
        var w = GGUFWriter()
        w.set("k", .uint32(7))
        var bytes = w.serialize()
        bytes.replaceSubrange(33..<37, with: le(UInt32(99)))
        assertError(bytes) { $0 == .unknownValueType(key: "k", rawType: 99) }

        w = GGUFWriter()
        w.set("deep", .array(.array, [.array(.array, [.array(.uint8, [.uint8(1)])])]))
        assertError(w.serialize()) { $0 == .arrayNestingTooDeep(key: "deep") }
    }

    func testDuplicateKeysAndTensorNames() {
        var w = GGUFWriter()
        w.metadata = [("k", .uint8(1)), ("k", .uint8(2))]
        assertError(w.serialize()) { $0 == .duplicateKey("k") }
        w = GGUFWriter()
        w.add("t", shape: [2], floats: [1, 2])
        w.add("t", shape: [2], floats: [3, 4])
        assertError(w.serialize()) { $0 == .duplicateTensorName("t") }
    }

    func testBadAlignment() {
        for (value, expected) in [(GGUFValue.uint32(0), GGUFError.badAlignment(0)), (.uint32(24), .badAlignment(24))] {
            var w = makeWriter()
            w.set("general.alignment", value)
            assertError(w.serialize()) { $0 == expected }
        }
        var w = makeWriter()
        w.set("general.alignment", .string("32"))
        assertError(w.serialize()) { if case .wrongMetadataType(key: "general.alignment", _, _) = $0 { true } else { false } }
    }

    func testBadDimensions() {
        // Five dimensions.
        var w = GGUFWriter()
        w.add("t", shape: [1, 1, 1, 1, 2], floats: [1, 2])
        assertError(w.serialize()) { $0 == .tooManyDimensions(tensor: "t", count: 5) }
        // A zero dimension.
        w = GGUFWriter()
        w.add("t", shape: [2], floats: [1, 2])
        var bytes = w.serialize()
        let dimAt = w.tensorInfoOffsets[0] + 8 + 1 + 4
        bytes.replaceSubrange(dimAt..<(dimAt + 8), with: le(UInt64(0)))
        assertError(bytes) { $0 == .badDimension(tensor: "t", index: 0, value: 0) }
        // A "negative" dimension (as int64).
        bytes.replaceSubrange(dimAt..<(dimAt + 8), with: le(UInt64(bitPattern: -5)))
        assertError(bytes) { if case .badDimension = $0 { true } else { false } }
    }

    func testElementCountOverflow() {
        var w = GGUFWriter()
        w.add("t", shape: [1 << 30, 1 << 30, 1 << 30, 1 << 30], floats: [])
        assertError(w.serialize()) { $0 == .elementCountOverflow(tensor: "t") }
    }

    func testRowsMustBeWholeBlocks() {
        var w = GGUFWriter()
        w.add("q", shape: [48], type: .q8_0, data: [UInt8](repeating: 0, count: 68))
        assertError(w.serialize()) { if case .rowNotWholeBlocks(tensor: "q", rowLength: 48, blockSize: 32, _) = $0 { true } else { false } }
    }

    func testUnknownTensorType() {
        var w = GGUFWriter()
        w.add("t", shape: [2], floats: [1, 2])
        var bytes = w.serialize()
        let typeAt = w.tensorInfoOffsets[0] + 8 + 1 + 4 + 8
        bytes.replaceSubrange(typeAt..<(typeAt + 4), with: le(UInt32(4)))  // a removed ggml type
        assertError(bytes) { $0 == .unknownTensorType(tensor: "t", rawType: 4) }
    }

    func testOffsetsOutOfBoundsMisalignedAndOverlapping() {
        var w = makeWriter()
        var bytes = w.serialize()
        // Tensor "b.weight" offset: after name(8+8), ndims(4), dims(8), type(4).
        let offAt = w.tensorInfoOffsets[1] + 8 + 8 + 4 + 8 + 4
        bytes.replaceSubrange(offAt..<(offAt + 8), with: le(UInt64(1) << 40))
        assertError(bytes) { if case .tensorOutOfBounds(tensor: "b.weight", _, _, _) = $0 { true } else { false } }
        bytes.replaceSubrange(offAt..<(offAt + 8), with: le(UInt64(3)))
        assertError(bytes) { $0 == .misalignedTensor(tensor: "b.weight", offset: 3, alignment: 32) }
        bytes.replaceSubrange(offAt..<(offAt + 8), with: le(UInt64(0)))
        assertError(bytes) { $0 == .overlappingTensors("a.weight", "b.weight") || $0 == .overlappingTensors("b.weight", "a.weight") }
    }

    func testInvalidUTF8Key() {
        var w = GGUFWriter()
        w.set("ab", .uint8(1))
        var bytes = w.serialize()
        bytes[32] = 0xFF
        assertError(bytes) { if case .invalidUTF8 = $0 { true } else { false } }
    }

    func testRandomCorruptionNeverCrashes() {
        var w = makeWriter()
        let good = w.serialize()
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            var bytes = good
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            _ = try? parse(bytes)  // must return or throw, never trap
        }
    }

    private func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] {
        withUnsafeBytes(of: v.littleEndian) { Array($0) }
    }
}
