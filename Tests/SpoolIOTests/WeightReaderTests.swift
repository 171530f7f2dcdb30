import XCTest
@testable import SpoolIO

final class WeightReaderTests: XCTestCase {
    static let fileSize = 3 * (1 << 20) + 12_345 // not a multiple of 4096: the last block is partial

    func options(_ sys: (any SystemCalls)? = nil, chunk: Int = 256 << 10) -> WeightReaderOptions {
        var o = WeightReaderOptions()
        o.chunkSize = chunk
        o.queueDepth = 8
        o.preadThreads = 3
        if let sys { o.syscalls = sys }
        o.allowFallback = false
        return o
    }

    func testAllBackendsReadTheSameBytes() throws {
        let file = try TestFile(size: Self.fileSize)
        let extents = sampleExtents(fileSize: Self.fileSize, count: 40)
        for backend in IOBackend.allCases {
            let opened = try openWeightReader(path: file.path, backend: backend, options: options())
            XCTAssertEqual(opened.reader.backend, backend)
            XCTAssertNil(opened.fallbackReason)
            if backend != .mmap { XCTAssertTrue(opened.reader.isDirect, "\(backend) should use O_DIRECT on this file system") }
            let got = try readAll(opened.reader, extents)
            for (e, bytes) in zip(extents, got) where bytes != file.slice(e) {
                XCTFail("\(backend): extent \(e) differs from the file")
                break
            }
            XCTAssertEqual(opened.reader.inFlight, 0)
        }
    }

    func testRegisteredBuffersAndSubExtentsInOneBuffer() throws {
        let file = try TestFile(size: Self.fileSize)
        let reader = try URingWeightReader(path: file.path, options: options())
        let buffer = try AlignedBuffer(count: 4 << 20)
        try reader.register(buffers: [buffer])
        XCTAssertNil(reader.registrationNote)
        // Three sub-extents packed at aligned offsets of one registered buffer.
        let parts = [Extent(offset: 100, length: 5000), Extent(offset: 70_000, length: 1 << 20), Extent(offset: 2_000_001, length: 77)]
        var offset = 0
        var requests: [ReadRequest] = []
        for (i, p) in parts.enumerated() {
            requests.append(ReadRequest(id: i, extent: p, buffer: buffer, bufferOffset: offset))
            offset += p.bufferBytes
        }
        let done = try reader.read(requests)
        for (c, p) in zip(done, parts) { XCTAssertEqual(Array(c.bytes), file.slice(p)) }
    }

    func testSimulatedEPERMFallsBackToPReadWithIdenticalBytes() throws {
        let file = try TestFile(size: Self.fileSize)
        let extents = sampleExtents(fileSize: Self.fileSize, count: 20)
        var o = options(FaultySystemCalls(Faults(uringSetupError: .permissionDenied)))
        o.allowFallback = true
        let opened = try openWeightReader(path: file.path, backend: .uring, options: o)
        XCTAssertEqual(opened.reader.backend, .pread)
        let reason = try XCTUnwrap(opened.fallbackReason)
        XCTAssertTrue(reason.contains("EPERM"), reason)
        XCTAssertFalse(reason.contains("\n"))
        let fallback = try readAll(opened.reader, extents)
        let uring = try readAll(try openWeightReader(path: file.path, backend: .uring, options: options()).reader, extents)
        XCTAssertEqual(fallback, uring)
        XCTAssertEqual(fallback, extents.map(file.slice))

        // Without fallback the setup error is thrown, typed.
        o.allowFallback = false
        XCTAssertThrowsError(try openWeightReader(path: file.path, backend: .uring, options: o)) { error in
            guard case IOError.uringSetup(.permissionDenied) = error else { return XCTFail("\(error)") }
        }
        for e in [Errno.noFunction, Errno.invalidArgument] {
            var o2 = options(FaultySystemCalls(Faults(uringSetupError: e)))
            o2.allowFallback = true
            let r = try openWeightReader(path: file.path, options: o2)
            XCTAssertEqual(r.reader.backend, .pread)
            XCTAssertTrue(r.fallbackReason?.contains(e == .noFunction ? "ENOSYS" : "EINVAL") == true)
        }
    }

    func testFallbackReasonNamesTheSysctlAndSeccomp() throws {
        let file = try TestFile(size: 8192)
        var o = options(FaultySystemCalls(Faults(uringSetupError: .permissionDenied, ioURingDisabled: 2, seccomp: true)))
        o.allowFallback = true
        let reason = try XCTUnwrap(try openWeightReader(path: file.path, options: o).fallbackReason)
        XCTAssertEqual(reason, "io_uring unavailable (io_uring_setup failed with EPERM (Operation not permitted); "
            + "/proc/sys/kernel/io_uring_disabled is 2; a seccomp filter is active); using pread")
        var quiet = options(FaultySystemCalls(Faults(uringSetupError: .noFunction, ioURingDisabled: 0, seccomp: false)))
        quiet.allowFallback = true
        XCTAssertEqual(try openWeightReader(path: file.path, options: quiet).fallbackReason,
                       "io_uring unavailable (io_uring_setup failed with ENOSYS (Function not implemented)); using pread")
    }

    func testShortReadsAreContinued() throws {
        let file = try TestFile(size: Self.fileSize)
        let extents = sampleExtents(fileSize: Self.fileSize, count: 24)
        for backend in [IOBackend.pread, .uring] {
            let sys = FaultySystemCalls(Faults(shortReadEvery: 2))
            let reader = try openWeightReader(path: file.path, backend: backend, options: options(sys, chunk: 64 << 10)).reader
            let got = try readAll(reader, extents)
            XCTAssertEqual(got, extents.map(file.slice), "\(backend)")
            XCTAssertGreaterThan(sys.snapshot.shortReads, 5, "\(backend): the fault was not exercised")
        }
    }

    func testInterruptedAndWouldBlockCallsAreRetried() throws {
        let file = try TestFile(size: Self.fileSize)
        let extents = sampleExtents(fileSize: Self.fileSize, count: 24)
        for backend in [IOBackend.pread, .uring] {
            let sys = FaultySystemCalls(Faults(interruptEvery: 3, wouldBlockEvery: 5))
            let reader = try openWeightReader(path: file.path, backend: backend, options: options(sys, chunk: 64 << 10)).reader
            let got = try readAll(reader, extents)
            XCTAssertEqual(got, extents.map(file.slice), "\(backend)")
            XCTAssertGreaterThan(sys.snapshot.interrupts, 5, "\(backend): the fault was not exercised")
        }
    }

    func testChecksumMismatchIsATypedErrorAndTheReaderCarriesOn() throws {
        struct Mismatch: Error {}
        let file = try TestFile(size: Self.fileSize)
        let good = Extent(offset: 8192, length: 10_000)
        let bad = Extent(offset: 50_000, length: 4000)
        let expected = checksum(file.slice(bad)) ^ 1 // what a damaged file's directory would say
        for backend in IOBackend.allCases {
            let reader = try openWeightReader(path: file.path, backend: backend, options: options()).reader
            let buffer = try AlignedBuffer(count: 64 << 10)
            try reader.submit(ReadRequest(id: 7, extent: bad, buffer: buffer) { bytes in
                if checksum(Array(bytes)) != expected { throw Mismatch() }
            })
            XCTAssertThrowsError(try reader.waitNext(), "\(backend)") { error in
                guard case let IOError.verificationFailed(_, extent, underlying) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(extent, bad)
                XCTAssertTrue(underlying is Mismatch)
            }
            let ok = try reader.read([ReadRequest(id: 1, extent: good, buffer: buffer) { _ in }])
            XCTAssertEqual(Array(ok[0].bytes), file.slice(good))
        }
    }

    func testIOErrorIsTypedNeverGarbage() throws {
        let file = try TestFile(size: Self.fileSize)
        let sys = FaultySystemCalls(Faults(ioErrorAtOffset: 1 << 20))
        let reader = try openWeightReader(path: file.path, backend: .pread, options: options(sys)).reader
        let buffer = try AlignedBuffer(count: 2 << 20)
        try reader.submit(ReadRequest(id: 0, extent: Extent(offset: 900_000, length: 500_000), buffer: buffer))
        XCTAssertThrowsError(try reader.waitNext()) { error in
            guard case let IOError.read(_, _, _, errno) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(errno, .ioError)
        }
    }

    func testURingCompletionErrorIsTypedAndTheReaderCarriesOn() throws {
        let file = try TestFile(size: Self.fileSize)
        let sys = FaultySystemCalls(Faults(uringErrorAtCompletion: (index: 2, result: -EIO)))
        let reader = try openWeightReader(path: file.path, backend: .uring, options: options(sys, chunk: 64 << 10)).reader
        let buffer = try AlignedBuffer(count: 1 << 20)
        try reader.submit(ReadRequest(id: 0, extent: Extent(offset: 5000, length: 300_000), buffer: buffer))
        XCTAssertThrowsError(try reader.waitNext()) { error in
            guard case let IOError.read(_, _, _, errno) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(errno, .ioError)
        }
        XCTAssertEqual(reader.inFlight, 0)
        let again = try reader.read([ReadRequest(id: 1, extent: Extent(offset: 5000, length: 300_000), buffer: buffer)])
        XCTAssertEqual(Array(again[0].bytes), file.slice(Extent(offset: 5000, length: 300_000)))
    }

    func testProgressRefillsTheQueueWithoutBlocking() throws {
        let file = try TestFile(size: Self.fileSize)
        let sys = FaultySystemCalls(Faults())
        var o = options(sys, chunk: 64 << 10)
        o.queueDepth = 2
        let reader = try URingWeightReader(path: file.path, options: o)
        let buffer = try AlignedBuffer(count: 2 << 20)
        let extent = Extent(offset: 0, length: 1 << 20) // 16 chunks, 2 in flight at a time
        try reader.submit(ReadRequest(id: 0, extent: extent, buffer: buffer))
        XCTAssertEqual(sys.snapshot.uringReadsPrepared, 2)
        var rounds = 0
        while sys.snapshot.uringReadsPrepared < 16 && rounds < 2000 {
            usleep(1000)
            try reader.progress()
            rounds += 1
        }
        XCTAssertEqual(sys.snapshot.uringReadsPrepared, 16, "progress() did not move the queue along")
        let done = try reader.waitNext()
        XCTAssertEqual(Array(done.bytes), file.slice(extent))
    }

    func testBadRequestsAreRefused() throws {
        let file = try TestFile(size: 10_000)
        for backend in IOBackend.allCases {
            let reader = try openWeightReader(path: file.path, backend: backend, options: options()).reader
            let buffer = try AlignedBuffer(count: 8192)
            XCTAssertThrowsError(try reader.submit(ReadRequest(id: 0, extent: Extent(offset: 9000, length: 2000), buffer: buffer)))
            XCTAssertThrowsError(try reader.submit(ReadRequest(id: 0, extent: Extent(offset: 4000, length: 5000), buffer: buffer)))
            XCTAssertThrowsError(try reader.submit(ReadRequest(id: 0, extent: Extent(offset: 0, length: 10), buffer: buffer, bufferOffset: 100)))
            XCTAssertThrowsError(try reader.waitNext()) { error in
                guard case IOError.nothingInFlight = error else { return XCTFail("\(error)") }
            }
            // The last, partial block of the file.
            let tail = try reader.read([ReadRequest(id: 0, extent: Extent(offset: 8000, length: 2000), buffer: buffer)])
            XCTAssertEqual(Array(tail[0].bytes), file.slice(Extent(offset: 8000, length: 2000)))
        }
        XCTAssertThrowsError(try openWeightReader(path: "/nonexistent/weights.spool", backend: .pread)) { error in
            guard case IOError.cannotOpen(_, let e) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(e, Errno(ENOENT))
        }
    }

    func testBackendNamesParse() {
        XCTAssertEqual(IOBackend(rawValue: "uring"), .uring)
        XCTAssertEqual(IOBackend(rawValue: "pread"), .pread)
        XCTAssertEqual(IOBackend(rawValue: "mmap"), .mmap)
        XCTAssertNil(IOBackend(rawValue: "aio"))
    }
}

/// FNV-1a: a stand-in for the caller's CRC32C.
func checksum(_ bytes: [UInt8]) -> UInt64 {
    var h: UInt64 = 0xcbf29ce484222325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100000001b3 }
    return h
}
