import XCTest
@testable import SpoolIO

/// Passes everything through to a real reader and records what was submitted.
final class RecordingReader: WeightReader {
    let inner: any WeightReader
    var submitted: [Extent] = []
    init(_ inner: any WeightReader) { self.inner = inner }
    var backend: IOBackend { inner.backend }
    var path: String { inner.path }
    var fileSize: Int { inner.fileSize }
    var isDirect: Bool { inner.isDirect }
    var inFlight: Int { inner.inFlight }
    func register(buffers: [AlignedBuffer]) throws(IOError) { try inner.register(buffers: buffers) }
    func submit(_ request: ReadRequest) throws(IOError) {
        submitted.append(request.extent)
        try inner.submit(request)
    }
    func waitNext() throws(IOError) -> ReadCompletion { try inner.waitNext() }
    func progress() throws(IOError) { try inner.progress() }
}

final class LayerStreamerTests: XCTestCase {
    static let fileSize = 2 << 20

    /// Ten layers laid out back to back with odd sizes; layer 4 is split into three sub-extents
    /// (as hot/cold neuron bundles would be).
    func makeLayers() -> [[Extent]] {
        var layers: [[Extent]] = []
        var at = 1000
        for i in 0..<10 {
            let size = 50_000 + i * 7_777
            if i == 4 {
                layers.append([Extent(offset: at, length: 10_000), Extent(offset: at + 20_000, length: 5),
                               Extent(offset: at + 30_000, length: size - 30_000)])
            } else {
                layers.append([Extent(offset: at, length: size)])
            }
            at += size + 333
        }
        return layers
    }

    func reader(_ file: TestFile, _ backend: IOBackend) throws -> RecordingReader {
        var o = WeightReaderOptions()
        o.chunkSize = 32 << 10
        o.allowFallback = false
        return RecordingReader(try openWeightReader(path: file.path, backend: backend, options: o).reader)
    }

    /// While prefetched reads stay in flight the busy interval never closes; the stats must count
    /// it anyway (it was left out, and `spool bench` printed tens of GB/s from a disk doing 2).
    func testBusyTimeCountsTheIntervalStillOpen() throws {
        let file = try TestFile(size: Self.fileSize)
        let layers = makeLayers()
        for backend in IOBackend.allCases {
            let streamer = try LayerStreamer(reader: try reader(file, backend), layers: layers, prefetchDepth: 2)
            _ = try streamer.acquire(0)
            let s = streamer.stats
            // Acquire waited for layer 0's read, issued inside it: a read was outstanding for
            // nearly all of that wait, so the busy time covers most of it.
            XCTAssertGreaterThan(s.waitNanoseconds, 0)
            XCTAssertGreaterThanOrEqual(s.ioBusyNanoseconds, s.waitNanoseconds / 2, "\(backend)")
            streamer.release(0)
        }
    }

    func testStreamsEveryLayerCorrectlyOverSeveralTokensOnEveryBackend() throws {
        let file = try TestFile(size: Self.fileSize)
        let layers = makeLayers()
        for backend in IOBackend.allCases {
            let r = try reader(file, backend)
            let streamer = try LayerStreamer(reader: r, layers: layers, resident: [0, 7], prefetchDepth: 2)
            XCTAssertEqual(streamer.slotCount, 3)
            for _ in 0..<3 {
                for i in layers.indices {
                    let view = try streamer.acquire(i)
                    XCTAssertEqual(view.isResident, i == 0 || i == 7)
                    XCTAssertEqual(view.parts.count, layers[i].count)
                    for (part, e) in zip(view.parts, layers[i]) where Array(part) != file.slice(e) {
                        XCTFail("\(backend): layer \(i) extent \(e) differs")
                    }
                    streamer.release(i)
                }
            }
            let s = streamer.stats
            // Resident layers once, streamed ones each token, plus the two prefetched for a fourth
            // token (the window wraps past the last layer).
            XCTAssertEqual(s.layerReads, 2 + 3 * 8 + 2, "\(backend)")
            XCTAssertEqual(s.acquires, 30)
            func spanBytes(_ l: Int) -> Int {
                layers[l].map { min($0.alignedSpan().end, Self.fileSize) - $0.alignedSpan().offset }.reduce(0, +)
            }
            let streamedPerToken = layers.indices.filter { $0 != 0 && $0 != 7 }.map(spanBytes).reduce(0, +)
            // Counted as completions are collected: the wrapped prefetches of layers 1 and 2 may or
            // may not have been collected by the time the last wait returned.
            XCTAssertGreaterThanOrEqual(s.streamedBytesRead, 3 * streamedPerToken, "\(backend)")
            XCTAssertLessThanOrEqual(s.streamedBytesRead, 3 * streamedPerToken + spanBytes(1) + spanBytes(2), "\(backend)")
            // Resident layers are read once, at start, and never again.
            XCTAssertEqual(r.submitted.filter { $0 == layers[0][0] }.count, 1)
            XCTAssertEqual(r.submitted.filter { $0 == layers[3][0] }.count, 3)
        }
    }

    func testFallbackReaderStreamsTheSameBytes() throws {
        let file = try TestFile(size: Self.fileSize)
        let layers = makeLayers()
        var o = WeightReaderOptions()
        o.syscalls = FaultySystemCalls(Faults(uringSetupError: .permissionDenied))
        let opened = try openWeightReader(path: file.path, backend: .uring, options: o)
        XCTAssertEqual(opened.reader.backend, .pread)
        XCTAssertNotNil(opened.fallbackReason)
        var outputs: [[[UInt8]]] = []
        for reader in [opened.reader, try openWeightReader(path: file.path, backend: .uring).reader] {
            let streamer = try LayerStreamer(reader: reader, layers: layers, resident: [3], prefetchDepth: 2)
            var got: [[UInt8]] = []
            for i in layers.indices {
                got.append(try streamer.acquire(i).parts.flatMap { Array($0) })
                streamer.release(i)
            }
            outputs.append(got)
        }
        XCTAssertEqual(outputs[0], outputs[1])
        XCTAssertEqual(outputs[0], layers.map { $0.flatMap(file.slice) })
    }

    func testAcquireLeavesTheNextLayersInFlight() throws {
        let file = try TestFile(size: Self.fileSize)
        let layers = makeLayers()
        let r = try reader(file, .uring)
        let streamer = try LayerStreamer(reader: r, layers: layers, resident: [2], prefetchDepth: 3)
        _ = try streamer.acquire(0)
        // Layer 0 plus the next three streamed layers (2 is resident, so 1, 3, 4).
        let issued = Set(r.submitted)
        for l in [0, 1, 3, 4] { XCTAssertTrue(layers[l].allSatisfy(issued.contains), "layer \(l) not issued") }
        XCTAssertFalse(issued.contains(layers[5][0]), "prefetch ran past its depth")
        streamer.release(0)
        XCTAssertFalse(Set(r.submitted).contains(layers[5][0]))
        // Moving on to layer 1 slides the window: layer 0's buffer now takes layer 5.
        _ = try streamer.acquire(1)
        XCTAssertTrue(Set(r.submitted).contains(layers[5][0]))
        streamer.release(1)
        for l in [3, 4, 5, 6] {
            _ = try streamer.acquire(l)
            streamer.release(l)
        }
        XCTAssertEqual(r.submitted.filter { $0 == layers[0][0] }.count, 1)
        // Near the end of the model the window wraps to the first layers of the next token.
        _ = try streamer.acquire(7)
        XCTAssertEqual(r.submitted.filter { $0 == layers[0][0] }.count, 2)
        XCTAssertEqual(r.submitted.filter { $0 == layers[1][0] }.count, 1)
        streamer.release(7)
        _ = try streamer.acquire(8)
        XCTAssertEqual(r.submitted.filter { $0 == layers[1][0] }.count, 2)
    }

    func testVerifyRunsOnceperExtentAndAMismatchFailsTheStreamer() throws {
        struct BadChecksum: Error {}
        let file = try TestFile(size: Self.fileSize)
        let layers = makeLayers()
        var calls: [String: Int] = [:]
        let r = try reader(file, .pread)
        let streamer = try LayerStreamer(reader: r, layers: layers, resident: [1], prefetchDepth: 1) { layer, part, bytes in
            calls["\(layer).\(part)", default: 0] += 1
            if Array(bytes) != file.slice(layers[layer][part]) { throw BadChecksum() }
        }
        for _ in 0..<2 {
            for i in layers.indices {
                _ = try streamer.acquire(i)
                streamer.release(i)
            }
        }
        XCTAssertEqual(calls.count, 12) // 9 single-extent layers + 3 parts of layer 4
        XCTAssertTrue(calls.values.allSatisfy { $0 == 1 }, "\(calls)")

        // A damaged layer 3: its first read is refused, and so is everything after.
        let r2 = try reader(file, .uring)
        let damaged = try LayerStreamer(reader: r2, layers: layers, prefetchDepth: 2) { layer, _, _ in
            if layer == 3 { throw BadChecksum() }
        }
        for i in 0..<3 {
            _ = try damaged.acquire(i)
            damaged.release(i)
        }
        XCTAssertThrowsError(try damaged.acquire(3)) { error in
            guard case let IOError.verificationFailed(_, extent, underlying) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(extent, layers[3][0])
            XCTAssertTrue(underlying is BadChecksum)
        }
        XCTAssertThrowsError(try damaged.acquire(0))
    }

    func testLayersThatAllFitTheRingAreReadOnce() throws {
        let file = try TestFile(size: Self.fileSize)
        let layers = Array(makeLayers().prefix(3))
        let r = try reader(file, .mmap)
        let streamer = try LayerStreamer(reader: r, layers: layers, prefetchDepth: 2)
        for _ in 0..<4 {
            for i in layers.indices {
                let v = try streamer.acquire(i)
                XCTAssertEqual(Array(v.parts[0]), file.slice(layers[i][0]))
                streamer.release(i)
            }
        }
        XCTAssertEqual(streamer.stats.layerReads, 3)
    }

    func testMisuseIsATypedError() throws {
        let file = try TestFile(size: Self.fileSize)
        let layers = makeLayers()
        let streamer = try LayerStreamer(reader: try reader(file, .pread), layers: layers, prefetchDepth: 1)
        XCTAssertThrowsError(try streamer.acquire(10))
        _ = try streamer.acquire(0)
        XCTAssertThrowsError(try streamer.acquire(0)) // twice without release
        _ = try streamer.acquire(1)
        XCTAssertThrowsError(try streamer.acquire(2)) // both buffers held
        streamer.release(0)
        XCTAssertNoThrow(try streamer.acquire(2))
        XCTAssertThrowsError(try LayerStreamer(reader: try reader(file, .pread), layers: [[]], prefetchDepth: 1))
    }
}
