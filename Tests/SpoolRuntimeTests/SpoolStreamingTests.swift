import Foundation
import SpoolFormat
import SpoolIO
import SpoolModel
import SpoolRuntime
import SpoolTestSupport
import XCTest

/// The default model packed to .spool and streamed under a memory budget below a third of the
/// packed file gives the same greedy text as the .spool held resident, under every I/O backend; a
/// damaged streamed block fails the forward pass with an error naming the tensor.
final class SpoolStreamingTests: XCTestCase {
    static let prompt = "Once upon a time"
    static let tokens = 48
    /// Enough for the prompt and 48 tokens; the KV cache and scratch are planned for it.
    static let context = 64

    /// Where the shared pack goes (per process, so concurrent test runs do not collide).
    static let packPath = NSTemporaryDirectory() + "spool-stream-\(getpid()).spool"

    /// One pack per test run (a few seconds), shared by the tests.
    static let packed: Result<String, Error> = Result {
        guard let model = try TestAssets.modelPath() else { throw XCTSkip("default model absent; run Tools/fetch-model.sh") }
        try QuickPack.pack(gguf: model, to: packPath)
        return packPath
    }

    func packedPath() throws -> String { try Self.packed.get() }

    /// The pack is 77 MB: remove it when the class's tests are done.
    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: packPath)
        super.tearDown()
    }

    static func fileSize(_ path: String) throws -> Int {
        try XCTUnwrap(FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
    }

    func options(budget: Int? = nil, backend: IOBackend = .uring, prefetch: Int = 1) -> EngineOptions {
        var options = EngineOptions(threads: 2)
        if let budget {
            var s = StreamingOptions(memoryBudget: budget, backend: backend, prefetchDepth: prefetch)
            s.contextLength = Self.context
            options.streaming = s
        }
        return options
    }

    func greedy(_ engine: Engine) throws -> [Int32] {
        let session = engine.makeSession(contextLength: Self.context)
        let ids = engine.tokenizer.encode(Self.prompt, addSpecial: true, parseSpecial: true)
        return try session.generate(prompt: ids, maxTokens: Self.tokens, sampling: .greedy).tokens
    }

    func testStreamedSpoolEqualsResidentUnderEveryBackend() throws {
        let path = try packedPath()
        let budget = try Self.fileSize(path) / 3
        let resident = try greedy(try Engine(path: path, options: options()))
        XCTAssertEqual(resident.count, Self.tokens)
        for backend in IOBackend.allCases {
            let engine = try Engine(path: path, options: options(budget: budget, backend: backend))
            let layers = try XCTUnwrap(engine.streamedLayers)
            XCTAssertTrue(layers.plan.streams, "\(backend): a third of the file should force streaming")
            XCTAssertLessThanOrEqual(layers.plan.totalBytes, budget, "\(backend)")
            XCTAssertEqual(try greedy(engine), resident, "\(backend)")
            XCTAssertEqual(layers.backend, backend)
            // Every streamed block was read once per forward pass (the prompt, then each decode step
            // but the last token's, which is sampled without a pass).
            XCTAssertGreaterThanOrEqual(layers.stats.layerReads, layers.plan.streamed.count * (Self.tokens - 1), "\(backend)")
        }
    }

    func testFailedUringFallsBackToPreadWithTheSameOutput() throws {
        let path = try packedPath()
        let budget = try Self.fileSize(path) / 3
        var o = options(budget: budget)
        o.streaming?.reader.syscalls = FailingUringSetup()
        let fallback = try Engine(path: path, options: o)
        XCTAssertEqual(fallback.streamedLayers?.backend, .pread)
        XCTAssertNotNil(fallback.streamedLayers?.fallbackReason)
        XCTAssertEqual(try greedy(fallback), try greedy(try Engine(path: path, options: options())))
    }

    /// A flipped byte in a streamed block's tensor: loading succeeds (the block is not read yet),
    /// the first forward pass that reads it throws `verificationFailed` around the checksum error
    /// naming the tensor and its extent. The same damage in a resident block is refused at load.
    func testChecksumMismatchInAStreamedBlockIsATypedError() throws {
        let path = try packedPath()
        let budget = try Self.fileSize(path) / 3
        let plan = try XCTUnwrap(try Engine(path: path, options: options(budget: budget)).streamedLayers?.plan)
        let streamedLayer = try XCTUnwrap(plan.streamed.last)
        let damaged = try damagedCopy(path, tensor: "blk.\(streamedLayer).ffn_up.weight")
        defer { try? FileManager.default.removeItem(atPath: damaged) }

        for backend in IOBackend.allCases {
            let engine = try Engine(path: damaged, options: options(budget: budget, backend: backend))
            XCTAssertThrowsError(try greedy(engine), "\(backend)") { error in
                guard case let IOError.verificationFailed(_, _, underlying) = error,
                      case let SpoolError.checksumMismatch(tensor, extent, _, _) = underlying else {
                    return XCTFail("\(backend): expected a checksum mismatch, got \(error)")
                }
                XCTAssertEqual(tensor, "blk.\(streamedLayer).ffn_up.weight")
                XCTAssertEqual(extent, "blk.\(streamedLayer)")
                XCTAssertTrue("\(error)".contains("blk.\(streamedLayer).ffn_up.weight"), "\(error)")
            }
        }
        // Resident: with the whole model in the budget every block is read (and checked) at load.
        XCTAssertThrowsError(try Engine(path: damaged, options: options(budget: 1 << 30))) { error in
            XCTAssertTrue("\(error)".contains("blk.\(streamedLayer).ffn_up.weight"), "\(error)")
        }
    }

    func testBudgetTooSmallIsRefusedWithTheMinimum() throws {
        let path = try packedPath()
        XCTAssertThrowsError(try Engine(path: path, options: options(budget: 4 << 20))) { error in
            XCTAssertTrue("\(error)".contains("the minimum is"), "\(error)")
        }
    }

    /// A copy of `path` with one byte of `tensor` flipped (its checksums in the header unchanged).
    func damagedCopy(_ path: String, tensor: String) throws -> String {
        let spool = try SpoolFile(path: path)
        let t = try XCTUnwrap(spool.tensor(named: tensor))
        let offset = spool.header.extents[t.extent].offset + t.offset + t.length / 2
        var data = try Data(contentsOf: URL(fileURLWithPath: path))
        data[offset] ^= 0x10
        let out = path + ".damaged-\(UUID().uuidString)"
        try data.write(to: URL(fileURLWithPath: out))
        return out
    }
}
