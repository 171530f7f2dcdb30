import CSpoolSys

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One read syscall's worth of a request: a piece of the request's aligned span, with its progress.
/// Plain integers (the destination address too) so a pread worker thread can carry it.
struct Chunk: Sendable {
    var request: Int
    var fileOffset: Int
    var destination: UInt
    /// Bytes this chunk asks for (aligned), and how many of them must arrive: past the extent's end
    /// the aligned tail may legitimately be cut short by the end of the file.
    var length: Int
    var needed: Int
    var done = 0

    enum Step { case finished, resubmit, endOfFile }

    /// Accounts for a read that returned `n` bytes. A short read is continued from the last aligned
    /// position reached (O_DIRECT cannot start mid-block; re-reading a few bytes is harmless).
    mutating func absorb(_ n: Int) -> Step {
        if n == 0 { return done >= needed ? .finished : .endOfFile }
        done += n
        if done >= needed { return .finished }
        done = alignDown(done, directIOAlignment)
        return .resubmit
    }

    var nextOffset: Int { fileOffset + done }
    var nextDestination: UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: destination + UInt(done))! }
    var remaining: Int { length - done }
}

/// The bookkeeping every backend shares: validates requests, splits them into chunks, gathers chunk
/// results, runs the verify callback and produces completions or typed errors.
struct RequestTable {
    struct Entry {
        var request: ReadRequest
        var outstanding: Int
        var deviceBytes = 0
        var error: IOError?
    }

    let path: String
    let fileSize: Int
    let chunkSize: Int
    private var entries: [Int: Entry] = [:]
    private var nextSerial = 0
    private(set) var ready: [ReadCompletion] = []
    private(set) var failed: [IOError] = []

    init(path: String, fileSize: Int, chunkSize: Int) {
        self.path = path
        self.fileSize = fileSize
        self.chunkSize = chunkSize
    }

    /// Requests accepted and not yet handed back.
    var inFlight: Int { entries.count + ready.count + failed.count }

    /// Validates `request`, records it and returns its chunks.
    mutating func add(_ request: ReadRequest) throws(IOError) -> [Chunk] {
        let e = request.extent
        guard e.offset >= 0, e.length > 0, e.end <= fileSize else {
            throw .extentOutsideFile(path: path, extent: e, fileSize: fileSize)
        }
        guard request.bufferOffset >= 0, request.bufferOffset % directIOAlignment == 0 else {
            throw .invalidRequest("buffer offset \(request.bufferOffset) is not a multiple of \(directIOAlignment)")
        }
        let span = e.alignedSpan()
        let available = request.buffer.count - request.bufferOffset
        guard span.length <= available else { throw .bufferTooSmall(extent: e, needed: span.length, available: available) }
        let serial = nextSerial
        nextSerial += 1
        var chunks: [Chunk] = []
        let base = UInt(bitPattern: request.buffer.base) + UInt(request.bufferOffset)
        var at = span.offset
        while at < span.end {
            let length = min(chunkSize, span.end - at)
            let needed = max(0, min(at + length, e.end) - at)
            chunks.append(Chunk(request: serial, fileOffset: at, destination: base + UInt(at - span.offset),
                                length: length, needed: needed))
            at += length
        }
        entries[serial] = Entry(request: request, outstanding: chunks.count)
        return chunks
    }

    /// Records a chunk's outcome: its bytes, or the error that ended it.
    mutating func finish(_ chunk: Chunk, error: IOError?) {
        guard var entry = entries[chunk.request] else { return }
        entry.outstanding -= 1
        entry.deviceBytes += chunk.done
        if entry.error == nil, let error { entry.error = error }
        guard entry.outstanding == 0 else {
            entries[chunk.request] = entry
            return
        }
        // Every chunk is back, so no read still writes into the buffer: safe to hand it back.
        entries[chunk.request] = nil
        if let error = entry.error {
            failed.append(error)
            return
        }
        let r = entry.request
        let start = r.buffer.base + r.bufferOffset + (r.extent.offset - r.extent.alignedSpan().offset)
        let bytes = UnsafeRawBufferPointer(start: start, count: r.extent.length)
        if let verify = r.verify {
            do { try verify(bytes) } catch {
                failed.append(.verificationFailed(path: path, extent: r.extent, underlying: error))
                return
            }
        }
        ready.append(ReadCompletion(id: r.id, extent: r.extent, bytes: bytes, deviceBytes: entry.deviceBytes))
    }

    /// A finished request (or its error), if one is waiting.
    mutating func takeFinished() throws(IOError) -> ReadCompletion? {
        if !failed.isEmpty { throw failed.removeFirst() }
        if !ready.isEmpty { return ready.removeFirst() }
        return nil
    }

    func readError(_ chunk: Chunk, _ errno: Errno) -> IOError {
        .read(path: path, offset: chunk.nextOffset, length: chunk.remaining, errno)
    }

    func endOfFileError(_ chunk: Chunk) -> IOError {
        .unexpectedEndOfFile(path: path, offset: chunk.fileOffset, expected: chunk.needed, got: chunk.done)
    }
}

/// Opens `path` read-only, with O_DIRECT when asked and supported. Returns the descriptor, whether
/// it is direct, and the file size.
func openWeightsFile(_ path: String, direct: Bool, _ sys: any SystemCalls) throws(IOError) -> (fd: Int32, direct: Bool, size: Int) {
    var fd: Int32 = -1
    var isDirect = false
    let directFlag = spool_o_direct_flag()
    if direct && directFlag != 0 {
        do {
            fd = try retryOnInterrupt { () throws(Errno) in try sys.open(path, flags: O_RDONLY | directFlag) }
            isDirect = true
        } catch Errno.invalidArgument {
            // The file system does not do O_DIRECT (tmpfs, some overlays): read through the cache.
        } catch {
            throw .cannotOpen(path: path, error)
        }
    }
    if fd < 0 {
        do {
            fd = try retryOnInterrupt { () throws(Errno) in try sys.open(path, flags: O_RDONLY) }
        } catch {
            throw .cannotOpen(path: path, error)
        }
    }
    do {
        let size = try sys.fileSize(fd)
        return (fd, isDirect, size)
    } catch {
        sys.close(fd)
        throw .cannotOpen(path: path, error)
    }
}
