import Foundation
@testable import SpoolFormat
import XCTest

final class SpoolFileTests: XCTestCase {
    static let tokenizer = SpoolTokenizerInfo(model: "gpt2", pre: "smollm", tokens: ["a", "b", "<s>"], tokenTypes: [1, 1, 3], merges: ["a b"],
                                              bosId: 2, eosId: 2, eotId: nil, unknownId: nil, paddingId: nil, addBos: false, addEos: false)
    static let hyper = SpoolHyperparameters(layers: 2, dim: 64, ffnDim: 128, heads: 2, kvHeads: 1, headDim: 32, ropeDims: 32,
                                            ropeBase: 10000, normEps: 1e-5, vocabSize: 3, contextLength: 256)

    static func plan() -> [SpoolExtentPlan] {
        var p = [SpoolExtentPlan(name: "token_embd", layer: nil, tensors: [SpoolTensor(name: "token_embd.weight", shape: [3, 64], bits: 8, group: 32)])]
        for i in 0..<2 {
            p.append(SpoolExtentPlan(name: "blk.\(i)", layer: i, tensors: [
                SpoolTensor(name: "blk.\(i).attn_norm.weight", shape: [64], bits: 32, group: 0),
                SpoolTensor(name: "blk.\(i).ffn_down.weight", shape: [64, 128], bits: 3, group: 64),
                SpoolTensor(name: "blk.\(i).ffn_up.weight", shape: [128, 64], bits: 2, group: 32),
            ]))
        }
        p.append(SpoolExtentPlan(name: "output_norm", layer: nil, tensors: [SpoolTensor(name: "output_norm.weight", shape: [64], bits: 32, group: 0)]))
        return p
    }

    /// Writes a small valid file; tensor bytes are a deterministic pattern. Returns its bytes.
    static func makeFile() throws -> (bytes: [UInt8], header: SpoolHeader, data: [String: [UInt8]]) {
        let path = NSTemporaryDirectory() + "spooltest-\(UUID().uuidString).spool"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let header = SpoolHeader(architecture: "llama", hyperparameters: hyper, tokenizer: tokenizer, chatTemplate: "{{ x }}",
                                 quantization: SpoolQuantization(method: "rtn", bits: 3, group: 64))
        let w = try SpoolWriter(path: path, header: header, plan: plan())
        var data: [String: [UInt8]] = [:]
        // Write extents out of order: the writer places each at its planned offset.
        for e in [2, 0, 3, 1] {
            let ts = w.layout.tensors.filter { $0.extent == e }
            let bytes = ts.map { t in (0..<t.length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ t.name.count) } }
            for (t, b) in zip(ts, bytes) { data[t.name] = b }
            try w.writeExtent(e, tensors: bytes)
        }
        try w.finish()
        let bytes = Array(FileManager.default.contents(atPath: path)!)
        return (bytes, try SpoolFile(file: MappedFile(copying: bytes)).header, data)
    }

    func open(_ bytes: [UInt8]) throws -> SpoolFile { try SpoolFile(file: MappedFile(copying: bytes)) }

    func expect(_ bytes: [UInt8], _ check: (SpoolError) -> Bool, _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        do {
            let f = try open(bytes)
            try f.verifyAll()
            XCTFail("\(label): accepted", file: file, line: line)
        } catch let e as SpoolError {
            XCTAssertTrue(check(e), "\(label): got \(e)", file: file, line: line)
            XCTAssertFalse(e.description.isEmpty)
        } catch {
            XCTFail("\(label): untyped error \(error)", file: file, line: line)
        }
    }

    func testCRC32CKnownValue() {
        // The standard check value of CRC-32C.
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(CRC32C.checksum([UInt8]()), 0)
        // Incremental equals one-shot at a split that is not a multiple of 8.
        let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let split = data.withUnsafeBytes { b in CRC32C.update(CRC32C.update(0, UnsafeRawBufferPointer(rebasing: b[0..<13])), UnsafeRawBufferPointer(rebasing: b[13...])) }
        XCTAssertEqual(split, CRC32C.checksum(data))
        XCTAssertEqual(
            Array("123456789".utf8).withUnsafeBytes { CRC32C.updatePortable(0, $0) }, 0xE306_9283)
    }

    /// The CPU-instruction CRC (where this machine has one) equals the portable table version at
    /// every length 0...67 and every start alignment 0...7, and on a long buffer, also when continued.
    func testCRC32CHardwareMatchesPortable() {
        var rng = SystemRandomNumberGenerator()
        let data = (0..<4171).map { _ in UInt8.random(in: 0...255, using: &rng) }
        data.withUnsafeBytes { b in
            for start in 0..<8 {
                for n in 0...67 {
                    let s = UnsafeRawBufferPointer(rebasing: b[start..<(start + n)])
                    XCTAssertEqual(CRC32C.update(0x1234_5678, s), CRC32C.updatePortable(0x1234_5678, s), "start \(start) n \(n)")
                }
            }
            XCTAssertEqual(CRC32C.update(0, b), CRC32C.updatePortable(0, b))
        }
        print("CRC32C.usesHardware = \(CRC32C.usesHardware)")
    }

    func testRoundTripAndLayout() throws {
        let (bytes, header, data) = try Self.makeFile()
        let f = try open(bytes)
        XCTAssertEqual(f.header.tokenizer, Self.tokenizer)
        XCTAssertEqual(f.header.hyperparameters, Self.hyper)
        XCTAssertEqual(f.header.chatTemplate, "{{ x }}")
        XCTAssertEqual(f.header, header)
        XCTAssertEqual(f.dataOffset % 4096, 0)
        for e in f.header.extents {
            XCTAssertEqual(e.offset % 4096, 0)
            XCTAssertEqual(e.length % 4096, 0)
        }
        XCTAssertEqual(f.header.extents.last.map { $0.offset + $0.length }, bytes.count)
        for (name, b) in data {
            let t = try XCTUnwrap(f.tensor(named: name))
            XCTAssertEqual(Array(try f.data(of: t)), b, name)
            XCTAssertEqual(t.offset % 64, 0)
        }
        // A layer is one extent, and its tensors are views at their offsets inside it.
        let ext = try XCTUnwrap(f.layerExtent(1))
        XCTAssertEqual(ext.name, "blk.1")
        let idx = f.header.extents.firstIndex(of: ext)!
        let inside = f.tensors(inExtent: idx)
        XCTAssertEqual(inside.map(\.name), ["blk.1.attn_norm.weight", "blk.1.ffn_down.weight", "blk.1.ffn_up.weight"])
        let extentBytes = Array(bytes[ext.offset..<(ext.offset + ext.length)])
        for t in inside { XCTAssertEqual(Array(extentBytes[t.offset..<(t.offset + t.length)]), data[t.name]) }
    }

    func testFlippedByteInEveryExtentIsRefusedWithTheTensorNamed() throws {
        let (bytes, header, _) = try Self.makeFile()
        for e in header.extents {
            for t in header.tensors where header.extents[t.extent] == e {
                for pos in [t.offset, t.offset + t.length / 2, t.offset + t.length - 1] {
                    var b = bytes
                    b[e.offset + pos] ^= 0x10
                    expect(b, { if case let .checksumMismatch(name, ext, _, _) = $0 { return name == t.name && ext == e.name } else { return false } },
                           "flip in \(t.name) at \(pos)")
                }
            }
            // The padding after the last tensor is covered by the extent checksum.
            var b = bytes
            b[e.offset + e.length - 1] ^= 1
            expect(b, { $0 == .paddingChecksumMismatch(extent: e.name) }, "flip in padding of \(e.name)")
        }
    }

    func testTruncationAtSeveralPoints() throws {
        let (bytes, header, _) = try Self.makeFile()
        let hl = Int(bytes[16]) | Int(bytes[17]) << 8
        for cut in [0, 7, 20, 24 + hl / 2, 24 + hl, header.extents[0].offset + 1, header.extents[1].offset + 4096, bytes.count - 1] {
            expect(Array(bytes[0..<cut]), { e in
                switch e {
                case .truncated, .extentOutOfBounds: return true
                case .notASpoolFile: return cut < 8
                default: return false
                }
            }, "cut at \(cut)")
        }
        // Trailing garbage is refused too.
        expect(bytes + [0], { $0 == .fileLengthMismatch(expected: bytes.count, actual: bytes.count + 1) }, "padded")
    }

    /// Rewrites the header (data offset must stay at 4096, which holds for this small file).
    /// The file with its header mutated; the preamble flags follow the new header unless `keepFlags`.
    func withHeader(_ bytes: [UInt8], keepFlags: Bool = false, _ mutate: (inout SpoolHeader) -> Void) throws -> [UInt8] {
        var h = try open(bytes).header
        mutate(&h)
        var b = rewrite(bytes, json: Array(try SpoolWriter.encode(h)))
        if !keepFlags { withUnsafeBytes(of: SpoolFile.flags(for: h).littleEndian) { b.replaceSubrange(12..<16, with: $0) } }
        return b
    }

    func rewrite(_ bytes: [UInt8], json: [UInt8]) -> [UInt8] {
        precondition(24 + json.count <= 4096)
        var b = bytes
        for i in 24..<4096 { b[i] = 0 }
        b.replaceSubrange(24..<(24 + json.count), with: json)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { b.replaceSubrange(16..<24, with: $0) }
        return b
    }

    func testMalformedPreamble() throws {
        let (bytes, _, _) = try Self.makeFile()
        var b = bytes; b[0] = UInt8(ascii: "G")
        expect(b, { if case .notASpoolFile = $0 { return true } else { return false } }, "magic")
        b = bytes; b[8] = 9
        expect(b, { $0 == .unsupportedVersion(9) }, "version")
        b = bytes; b[12] = 1
        expect(b, { if case .unsupportedFeature = $0 { return true } else { return false } }, "flags")
        b = bytes; b[23] = 0x01
        expect(b, { if case .headerTooLarge = $0 { return true } else { return false } }, "header length cap")
        b = bytes; withUnsafeBytes(of: UInt64(SpoolFile.maxHeaderLength).littleEndian) { b.replaceSubrange(16..<24, with: $0) }
        expect(b, { if case .truncated = $0 { return true } else { return false } }, "header past end of file")
    }

    func testMalformedHeaders() throws {
        let (bytes, _, _) = try Self.makeFile()
        expect(rewrite(bytes, json: Array("{\"format_version\": 1,".utf8)), { if case .invalidHeaderJSON = $0 { return true } else { return false } }, "bad JSON")
        expect(rewrite(bytes, json: Array("{\"format_version\": 1}".utf8)), { if case let .invalidHeaderJSON(r) = $0 { return r.contains("missing key") } else { return false } }, "missing keys")
        typealias Case = (String, (inout SpoolHeader) -> Void, (SpoolError) -> Bool)
        let cases: [Case] = [
            ("version mismatch", { $0.formatVersion = 2 }, { $0 == .versionMismatch(preamble: 1, header: 2) }),
            ("ffn layout", { $0.ffnLayout = "bundled" }, { if case .unsupportedFeature = $0 { return true } else { return false } }),
            ("misaligned extent", { $0.extents[1].offset += 64 }, { if case .misalignedExtent = $0 { return true } else { return false } }),
            ("extent before data", { $0.extents[0].offset = 0 }, { if case .extentBeforeData = $0 { return true } else { return false } }),
            ("extent past end", { $0.extents[3].length += 4096 }, { if case .extentOutOfBounds = $0 { return true } else { return false } }),
            ("overlapping extents", { $0.extents[2].offset = $0.extents[1].offset }, { if case .overlappingExtents = $0 { return true } else { return false } }),
            ("duplicate extent", { $0.extents[2].name = "blk.0" }, { $0 == .duplicateExtentName("blk.0") }),
            ("duplicate tensor", { $0.tensors[2].name = $0.tensors[1].name }, { if case .duplicateTensorName = $0 { return true } else { return false } }),
            ("bad shape", { $0.tensors[2].shape = [64, 0] }, { if case .badShape = $0 { return true } else { return false } }),
            ("too many dims", { $0.tensors[2].shape = [2, 2, 16] }, { if case .badShape = $0 { return true } else { return false } }),
            ("bad bits", { $0.tensors[2].bits = 5 }, { if case .badEncoding = $0 { return true } else { return false } }),
            ("bad group", { $0.tensors[2].group = 48 }, { if case .badEncoding = $0 { return true } else { return false } }),
            ("size mismatch", { $0.tensors[2].length -= 4 }, { if case .sizeMismatch = $0 { return true } else { return false } }),
            ("shape vs size", { $0.tensors[2].shape = [64, 256] }, { if case .sizeMismatch = $0 { return true } else { return false } }),
            ("extent index", { $0.tensors[2].extent = 9 }, { if case .tensorExtentOutOfRange = $0 { return true } else { return false } }),
            ("misaligned tensor", { $0.tensors[2].offset += 4 }, { if case .misalignedTensor = $0 { return true } else { return false } }),
            ("tensor outside extent", { $0.tensors[2].offset = $0.extents[1].length - 64 }, { if case .tensorOutsideExtent = $0 { return true } else { return false } }),
            ("overlapping tensors", { $0.tensors[3].offset = $0.tensors[2].offset }, { if case .overlappingTensors = $0 { return true } else { return false } }),
            ("checksum field", { $0.tensors[2].crc32c = "xyz" }, { if case .badChecksumField = $0 { return true } else { return false } }),
            ("extent checksum field", { $0.extents[1].crc32c = "123456789" }, { if case .badChecksumField = $0 { return true } else { return false } }),
            ("token types", { $0.tokenizer.tokenTypes = [1] }, { if case .badTokenizer = $0 { return true } else { return false } }),
            ("special id", { $0.tokenizer.bosId = 3 }, { if case .badTokenizer = $0 { return true } else { return false } }),
            ("exit adapter tensor", { $0.exitAdapters = [SpoolExitAdapter(afterLayer: 0, tensor: "exit.0.weight")] }, { $0 == .missingTensor("exit.0.weight") }),
            ("huge dimension", { $0.tensors[2].shape = [1 << 40, 64] }, { if case .badShape = $0 { return true } else { return false } }),
            ("unknown grid", { $0.tensors[2].grid = "i4" }, { if case let .badGridEncoding(_, g) = $0 { return g == "i4" } else { return false } }),
            // ffn_down (64, 128) at 3/32: 4096 bytes with float16 pairs, 3840 with compact grids.
            ("compact grid, plain length", { $0.tensors[2].group = 32; $0.tensors[2].length = 4096; $0.tensors[2].grid = QuantLayout.compactGridName },
             { $0 == .sizeMismatch(tensor: "blk.0.ffn_down.weight", expected: 3840, actual: 4096) }),
            ("compact grid on float", { $0.tensors[1].grid = QuantLayout.compactGridName }, { if case .badEncoding = $0 { return true } else { return false } }),
        ]
        for (label, mutate, check) in cases {
            expect(try withHeader(bytes, mutate), check, label)
        }
        // Compact grids need preamble flag bit 1, and the flag needs a compact tensor.
        expect(try withHeader(bytes, keepFlags: true) { $0.tensors[2].grid = QuantLayout.compactGridName },
               { if case .unsupportedFeature = $0 { return true } else { return false } }, "compact grid, flag clear")
        var flagged = bytes
        flagged[12] = UInt8(SpoolFile.compactGridFlag)
        expect(flagged, { if case .unsupportedFeature = $0 { return true } else { return false } }, "flag set, no compact grid")
    }
}
