import Foundation
import Synchronization
import XCTest
@testable import SpoolIO

/// A temporary file of deterministic pseudo-random bytes, deleted with the object.
final class TestFile {
    let path: String
    let contents: [UInt8]

    init(size: Int, seed: UInt64 = 0x5EED) throws {
        var state = seed
        var bytes = [UInt8](repeating: 0, count: size)
        for i in 0..<size {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            bytes[i] = UInt8(truncatingIfNeeded: state >> 33)
        }
        contents = bytes
        let dir = FileManager.default.temporaryDirectory.path
        path = "\(dir)/spool-io-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).bin"
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
            throw IOError.invalidRequest("cannot create \(path)")
        }
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func slice(_ e: Extent) -> [UInt8] { Array(contents[e.offset..<e.end]) }
}

/// Which faults the wrapper injects; counters are shared with the test through the Mutex.
struct Faults {
    var uringSetupError: Errno?
    /// What /proc/sys/kernel/io_uring_disabled and the seccomp status appear to say (nil: the real ones).
    var ioURingDisabled: Int?
    var seccomp: Bool?
    /// Every n-th pread (and io_uring completion) reports fewer bytes than it read.
    var shortReadEvery = 0
    /// Every n-th pread fails with EINTR before reading; every n-th io_uring wait is interrupted
    /// and every n-th completion carries -EINTR (the read is then redone).
    var interruptEvery = 0
    /// Every n-th pread fails with EAGAIN.
    var wouldBlockEvery = 0
    /// pread at or past this offset fails with EIO.
    var ioErrorAtOffset: Int?
    /// The n-th io_uring completion (1-based) carries this negative errno instead of its result.
    var uringErrorAtCompletion: (index: Int, result: Int32)?
    var shortReads = 0
    var interrupts = 0
    var uringReadsPrepared = 0
    var calls = 0
}

/// Real syscalls with injected faults.
final class FaultySystemCalls: SystemCalls {
    let real = LinuxSystemCalls()
    let faults: Mutex<Faults>

    init(_ faults: Faults) { self.faults = Mutex(faults) }


    var snapshot: Faults { faults.withLock { $0 } }

    func open(_ path: String, flags: Int32) throws(Errno) -> Int32 { try real.open(path, flags: flags) }
    func close(_ fd: Int32) { real.close(fd) }
    func fileSize(_ fd: Int32) throws(Errno) -> Int { try real.fileSize(fd) }
    func ioURingDisabledSetting() -> Int? { snapshot.ioURingDisabled ?? real.ioURingDisabledSetting() }
    func seccompFilterActive() -> Bool { snapshot.seccomp ?? real.seccompFilterActive() }

    func pread(_ fd: Int32, into buffer: UnsafeMutableRawPointer, count: Int, offset: Int) throws(Errno) -> Int {
        enum Action { case none, interrupt, wouldBlock, ioError, short }
        let action: Action = faults.withLock { f in
            f.calls += 1
            if let bad = f.ioErrorAtOffset, offset + count > bad { return .ioError }
            if f.interruptEvery > 0 && f.calls % f.interruptEvery == 0 { f.interrupts += 1; return .interrupt }
            if f.wouldBlockEvery > 0 && f.calls % f.wouldBlockEvery == 0 { return .wouldBlock }
            if f.shortReadEvery > 0 && f.calls % f.shortReadEvery == 0 { f.shortReads += 1; return .short }
            return Action.none
        }
        switch action {
        case .interrupt: throw .interrupted
        case .wouldBlock: throw .wouldBlock
        case .ioError: throw .ioError
        case .none: return try real.pread(fd, into: buffer, count: count, offset: offset)
        case .short:
            // The read happens, but reports an unaligned part of it, as a signal or a device
            // boundary could; the reader must continue from where it really got to.
            let n = try real.pread(fd, into: buffer, count: count, offset: offset)
            return n > 4096 ? n / 2 + 7 : n
        }
    }

    func makeURing(entries: Int, asyncSubmission: Bool) throws(Errno) -> any URingQueue {
        if let e = faults.withLock({ $0.uringSetupError }) { throw e }
        return FaultyURing(try real.makeURing(entries: entries, asyncSubmission: asyncSubmission), self)
    }
}

/// A real ring whose completions are tampered with.
final class FaultyURing: URingQueue {
    let real: any URingQueue
    let owner: FaultySystemCalls
    var waits = 0
    var completions = 0

    init(_ real: any URingQueue, _ owner: FaultySystemCalls) {
        self.real = real
        self.owner = owner
    }

    func registerBuffers(_ buffers: [UnsafeMutableRawBufferPointer]) throws(Errno) { try real.registerBuffers(buffers) }
    func prepareRead(fd: Int32, into buffer: UnsafeMutableRawPointer, count: Int, offset: Int,
                     userData: UInt64, fixedBufferIndex: Int?) throws(Errno) {
        owner.faults.withLock { $0.uringReadsPrepared += 1 }
        try real.prepareRead(fd: fd, into: buffer, count: count, offset: offset, userData: userData, fixedBufferIndex: fixedBufferIndex)
    }
    func submit() throws(Errno) -> Int { try real.submit() }
    func peekCompletion() throws(Errno) -> URingCompletion? { try real.peekCompletion() }

    func waitCompletion() throws(Errno) -> URingCompletion {
        waits += 1
        let f = owner.snapshot
        if f.interruptEvery > 0 && waits % (2 * f.interruptEvery) == 1 {
            owner.faults.withLock { $0.interrupts += 1 }
            throw .interrupted // the wait was interrupted; the completion is still in the ring
        }
        var c = try real.waitCompletion()
        completions += 1
        if let bad = f.uringErrorAtCompletion, bad.index == completions {
            c.result = bad.result
            return c
        }
        if f.interruptEvery > 0 && waits % f.interruptEvery == 0 && c.result > 0 {
            owner.faults.withLock { $0.interrupts += 1 }
            c.result = -EINTR
        } else if f.shortReadEvery > 0 && waits % f.shortReadEvery == 0 && c.result > 4096 {
            owner.faults.withLock { $0.shortReads += 1 }
            c.result = c.result / 2 + 7
        }
        return c
    }
}

/// A deterministic spread of extents over a file: aligned and unaligned, tiny and multi-chunk,
/// and one that ends exactly at the end of the file.
func sampleExtents(fileSize: Int, count: Int, seed: UInt64 = 42) -> [Extent] {
    var state = seed
    func next(_ bound: Int) -> Int {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Int((state >> 33) % UInt64(bound))
    }
    var out = [
        Extent(offset: 0, length: 4096),
        Extent(offset: 4096 * 3, length: 3 * 4096),
        Extent(offset: 1, length: 1),
        Extent(offset: fileSize - 1000, length: 1000),
        Extent(offset: 12345, length: 1 << 20),
    ]
    while out.count < count {
        let length = 1 + next(min(600_000, fileSize - 1))
        let offset = next(fileSize - length + 1)
        out.append(Extent(offset: offset, length: length))
    }
    return out
}

/// Reads `extents` with `reader` (a few in flight at a time) and returns each extent's bytes.
func readAll(_ reader: any WeightReader, _ extents: [Extent], inFlight: Int = 4,
             verify: ((UnsafeRawBufferPointer) throws -> Void)? = nil) throws -> [[UInt8]] {
    var results = [[UInt8]](repeating: [], count: extents.count)
    var buffers: [AlignedBuffer] = []
    for e in extents { buffers.append(try AlignedBuffer(count: e.bufferBytes)) }
    var next = 0
    var done = 0
    while done < extents.count {
        while next < extents.count && next - done < inFlight {
            try reader.submit(ReadRequest(id: next, extent: extents[next], buffer: buffers[next], verify: verify))
            next += 1
        }
        let c = try reader.waitNext()
        XCTAssertEqual(c.extent, extents[c.id])
        results[c.id] = Array(c.bytes)
        done += 1
    }
    return results
}
