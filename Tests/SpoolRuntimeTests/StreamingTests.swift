import Foundation
import SpoolIO
import SpoolKV
import SpoolModel
import SpoolRuntime
import SpoolTestSupport
import XCTest

/// The default model streamed from disk under a memory budget far below its size gives the same
/// greedy text as the model mapped whole, with every I/O backend.
final class StreamingTests: XCTestCase {
    static let prompt = "Once upon a time"
    static let tokens = 24
    /// 60 MiB with a 256-token context: the planner keeps a few blocks resident beside its ring of
    /// 3 buffers (the blocks are 63 MiB of the file's 92 MiB; the rest is the tied embedding).
    static let budget = 60 << 20

    func path() throws -> String {
        guard let p = try TestAssets.modelPath() else { throw XCTSkip("default model absent; run Tools/fetch-model.sh") }
        return p
    }

    func greedy(_ options: EngineOptions, path: String) throws -> ([Int32], Engine) {
        let engine = try Engine(path: path, options: options)
        let session = engine.makeSession(contextLength: 256)
        let ids = engine.tokenizer.encode(Self.prompt, addSpecial: true, parseSpecial: true)
        return (try session.generate(prompt: ids, maxTokens: Self.tokens, sampling: .greedy).tokens, engine)
    }

    func testStreamedOutputEqualsResidentUnderEveryBackend() throws {
        let path = try path()
        let (resident, _) = try greedy(EngineOptions(threads: 2), path: path)
        XCTAssertEqual(resident.count, Self.tokens)
        for backend in IOBackend.allCases {
            var options = EngineOptions(threads: 2)
            var s = StreamingOptions(memoryBudget: Self.budget, backend: backend, prefetchDepth: 2)
            s.contextLength = 256
            options.streaming = s
            let (streamed, engine) = try greedy(options, path: path)
            XCTAssertEqual(streamed, resident, "\(backend)")
            let layers = try XCTUnwrap(engine.streamedLayers)
            XCTAssertTrue(layers.plan.streams, "\(backend): the budget should force streaming")
            XCTAssertLessThan(layers.plan.resident.count, 10, "\(backend)")
            // Every streamed block was read once per forward pass (prompt batch + each decode step).
            XCTAssertGreaterThanOrEqual(layers.stats.layerReads, layers.plan.streamed.count * Self.tokens, "\(backend)")
        }
    }

    func testForcedPreadAndFailedUringGiveTheSameOutput() throws {
        let path = try path()
        var options = EngineOptions(threads: 2)
        var s = StreamingOptions(memoryBudget: Self.budget, backend: .uring)
        s.contextLength = 256
        s.reader.syscalls = FailingUringSetup()
        options.streaming = s
        let (fallback, engine) = try greedy(options, path: path)
        XCTAssertEqual(engine.streamedLayers?.backend, .pread)
        XCTAssertNotNil(engine.streamedLayers?.fallbackReason)
        s.reader.syscalls = LinuxSystemCalls()
        s.backend = .pread
        options.streaming = s
        XCTAssertEqual(try greedy(options, path: path).0, fallback)
    }

    /// The planner counts the KV cache as configured: at context 2048 an f16 cache is 45 MiB
    /// smaller than an f32 one (2 × 30 layers × 192 × 2048 × 2 bytes), and those bytes keep blocks
    /// resident instead.
    func testPlanCountsTheConfiguredKVCache() throws {
        let path = try path()
        func plan(bits: Int) throws -> MemoryPlanner.Plan {
            var options = EngineOptions(threads: 1, kv: KVCacheConfiguration(bits: bits))
            var s = StreamingOptions(memoryBudget: 150 << 20)
            s.contextLength = 2048
            options.streaming = s
            return try XCTUnwrap(try Engine(path: path, options: options).streamedLayers?.plan)
        }
        let f32 = try plan(bits: 32), f16 = try plan(bits: 16), kivi = try plan(bits: 4)
        XCTAssertEqual(f32.fixedBytes - f16.fixedBytes, 2 * 30 * 192 * 2048 * 2)
        XCTAssertLessThan(kivi.fixedBytes, f16.fixedBytes)
        XCTAssertGreaterThan(f16.resident.count, f32.resident.count)
        XCTAssertGreaterThanOrEqual(kivi.resident.count, f16.resident.count)
        for p in [f32, f16, kivi] { XCTAssertLessThanOrEqual(p.totalBytes, 150 << 20) }
    }

    func testBudgetTooSmallIsRefusedWithTheMinimum() throws {
        let path = try path()
        var options = EngineOptions(threads: 2)
        options.streaming = StreamingOptions(memoryBudget: 8 << 20)
        XCTAssertThrowsError(try Engine(path: path, options: options)) { error in
            XCTAssertTrue("\(error)".contains("the minimum is"), "\(error)")
        }
    }
}

/// The real system calls, except that io_uring cannot start (as under a seccomp filter or
/// kernel.io_uring_disabled = 2): the engine must fall back to pread.
struct FailingUringSetup: SystemCalls {
    let real = LinuxSystemCalls()
    func open(_ path: String, flags: Int32) throws(Errno) -> Int32 { try real.open(path, flags: flags) }
    func close(_ fd: Int32) { real.close(fd) }
    func fileSize(_ fd: Int32) throws(Errno) -> Int { try real.fileSize(fd) }
    func pread(_ fd: Int32, into buffer: UnsafeMutableRawPointer, count: Int, offset: Int) throws(Errno) -> Int {
        try real.pread(fd, into: buffer, count: count, offset: offset)
    }
    func makeURing(entries: Int, asyncSubmission: Bool) throws(Errno) -> any URingQueue { throw .permissionDenied }
    func ioURingDisabledSetting() -> Int? { real.ioURingDisabledSetting() }
    func seccompFilterActive() -> Bool { real.seccompFilterActive() }
}
