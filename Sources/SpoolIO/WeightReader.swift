/// A byte range of a weights file.
public struct Extent: Hashable, Sendable, CustomStringConvertible {
    public var offset: Int
    public var length: Int
    public init(offset: Int, length: Int) {
        self.offset = offset
        self.length = length
    }
    public var end: Int { offset + length }
    public var description: String { "[\(offset), +\(length))" }

    /// The smallest `alignment`-aligned range covering this extent: what an O_DIRECT read fetches.
    public func alignedSpan(_ alignment: Int = directIOAlignment) -> Extent {
        let start = alignDown(offset, alignment)
        return Extent(offset: start, length: alignUp(end, alignment) - start)
    }

    /// Buffer bytes a read of this extent needs (its aligned span).
    public var bufferBytes: Int { alignedSpan().length }
}

/// "Read this extent into this buffer": the data lands at `buffer.base + bufferOffset + (extent.offset
/// mod 4096)`, because every backend reads the extent's 4 KiB-aligned span (O_DIRECT needs that,
/// and one layout for all backends keeps them interchangeable). `ReadCompletion.bytes` is the slice.
public struct ReadRequest {
    /// The caller's tag; it comes back in the completion.
    public var id: Int
    public var extent: Extent
    public var buffer: AlignedBuffer
    /// Where in `buffer` the aligned span starts; a multiple of 4096.
    public var bufferOffset: Int
    /// Run on the extent's bytes when the read completes, on the thread that waits; a throw fails
    /// the read with `IOError.verificationFailed`. Callers pass it on an extent's first read only.
    public var verify: ((UnsafeRawBufferPointer) throws -> Void)?

    public init(id: Int, extent: Extent, buffer: AlignedBuffer, bufferOffset: Int = 0,
                verify: ((UnsafeRawBufferPointer) throws -> Void)? = nil) {
        self.id = id
        self.extent = extent
        self.buffer = buffer
        self.bufferOffset = bufferOffset
        self.verify = verify
    }
}

/// A finished read.
public struct ReadCompletion {
    public var id: Int
    public var extent: Extent
    /// The extent's bytes inside the request's buffer (valid while the buffer lives and is not
    /// reused for another read).
    public var bytes: UnsafeRawBufferPointer
    /// Bytes actually transferred from the file (the aligned span, clipped at end of file).
    public var deviceBytes: Int
}

/// Reads extents of one file into aligned buffers, several at a time. One thread drives a reader
/// (submit and wait); backends may use more threads inside.
public protocol WeightReader: AnyObject {
    var backend: IOBackend { get }
    var path: String { get }
    var fileSize: Int { get }
    /// True when reads bypass the page cache (O_DIRECT).
    var isDirect: Bool { get }
    /// Reads submitted and not yet returned by `waitNext`.
    var inFlight: Int { get }
    /// Declares buffers that reads will target for a long time (the streamer's ring), so io_uring
    /// can register them as fixed buffers. Optional: reads into other buffers work too.
    func register(buffers: [AlignedBuffer]) throws(IOError)
    /// Starts a read; returns without waiting for it.
    func submit(_ request: ReadRequest) throws(IOError)
    /// Blocks until one submitted read has finished (in any order) and returns it. A read that
    /// failed, or whose verify callback threw, is thrown here.
    func waitNext() throws(IOError) -> ReadCompletion
    /// Collects finished reads without blocking and starts queued ones, so the device queue stays
    /// full while the caller computes. Call it between layers; it never waits.
    func progress() throws(IOError)
}

extension WeightReader {
    /// Reads all `requests` and returns their completions in request order.
    public func read(_ requests: [ReadRequest]) throws(IOError) -> [ReadCompletion] {
        var byID: [Int: ReadCompletion] = [:]
        for r in requests { try submit(r) }
        for _ in requests {
            let c = try waitNext()
            byID[c.id] = c
        }
        return requests.map { byID[$0.id]! }
    }
}

/// Which WeightReader implementation to use (`--io uring|pread|mmap`).
public enum IOBackend: String, CaseIterable, Sendable, CustomStringConvertible {
    /// io_uring with O_DIRECT and registered buffers; the default.
    case uring
    /// pread(2) on a small thread pool, O_DIRECT; the fallback when io_uring is unavailable.
    case pread
    /// A memory map of the file, copied out (page cache, readahead hints); no O_DIRECT.
    case mmap

    public var description: String { rawValue }
}

/// Tuning shared by the backends.
public struct WeightReaderOptions: Sendable {
    /// Chunk reads in flight at once (io_uring queue entries). io_uring completions are collected
    /// only when the caller waits or calls `progress()`, so queueDepth × chunkSize should cover the
    /// prefetch window (prefetch depth × layer bytes), or the disk idles during long computes.
    public var queueDepth = 256
    /// Large extents are split into reads of this size (a multiple of 4096), so one layer is
    /// several reads in flight, which NVMe needs to reach full bandwidth.
    public var chunkSize = 1 << 20
    /// Queue io_uring reads with IOSQE_ASYNC, so the kernel's io-wq workers issue them. Without
    /// it, io_uring_submit issues O_DIRECT reads inline and blocks while the device queue is full,
    /// which stalls the computing thread inside a prefetch. Measured here (virtio disk, 7B-shaped
    /// layers, 1 GiB budget, 30 ms simulated compute per layer): the same throughput within the
    /// disk's run-to-run noise, and the caller is only ever blocked waiting for its own layer.
    public var uringAsyncSubmission = true
    /// Threads of the pread backend.
    public var preadThreads = 4
    /// Open with O_DIRECT (bypass the page cache). If the file system refuses it (EINVAL, e.g.
    /// tmpfs), the file is opened buffered and the reader's `isDirect` is false.
    public var directIO = true
    /// When the io_uring backend cannot start, use pread instead of failing.
    public var allowFallback = true
    public var syscalls: any SystemCalls = LinuxSystemCalls()

    public init() {}

    func validate() throws(IOError) {
        guard queueDepth >= 1, queueDepth <= 4096 else { throw .invalidRequest("queue depth \(queueDepth) (1...4096)") }
        guard chunkSize >= directIOAlignment, chunkSize % directIOAlignment == 0, chunkSize <= 1 << 30 else {
            throw .invalidRequest("chunk size \(chunkSize) (a multiple of 4096, at most 1 GiB)")
        }
        guard preadThreads >= 1, preadThreads <= 256 else { throw .invalidRequest("pread threads \(preadThreads) (1...256)") }
    }
}

/// A reader and how it came to be: `fallbackReason` is set when io_uring was asked for and pread
/// is used instead; it is one line naming the cause, for the caller to log.
public struct OpenedWeightReader {
    public var reader: any WeightReader
    public var requested: IOBackend
    public var fallbackReason: String?
}

/// Opens `path` with the requested backend. For `.uring`, a failed io_uring setup (EPERM, ENOSYS,
/// EINVAL, ENOMEM; `kernel.io_uring_disabled`; a seccomp filter) falls back to pread when
/// `options.allowFallback`, with the cause in `fallbackReason`; otherwise it is thrown.
public func openWeightReader(path: String, backend: IOBackend = .uring,
                             options: WeightReaderOptions = WeightReaderOptions()) throws(IOError) -> OpenedWeightReader {
    try options.validate()
    switch backend {
    case .pread:
        return OpenedWeightReader(reader: try PReadWeightReader(path: path, options: options), requested: backend)
    case .mmap:
        return OpenedWeightReader(reader: try MMapWeightReader(path: path, options: options), requested: backend)
    case .uring:
        do {
            return OpenedWeightReader(reader: try URingWeightReader(path: path, options: options), requested: backend)
        } catch {
            guard case let .uringSetup(errno) = error, options.allowFallback else { throw error }
            let reason = uringFallbackReason(errno, options.syscalls)
            let reader = try PReadWeightReader(path: path, options: options)
            return OpenedWeightReader(reader: reader, requested: backend, fallbackReason: reason)
        }
    }
}

/// One line: why io_uring could not start, and what we do instead.
func uringFallbackReason(_ errno: Errno, _ sys: any SystemCalls) -> String {
    var causes = ["io_uring_setup failed with \(errno)"]
    if let disabled = sys.ioURingDisabledSetting(), disabled != 0 {
        causes.append("/proc/sys/kernel/io_uring_disabled is \(disabled)")
    }
    if sys.seccompFilterActive() { causes.append("a seccomp filter is active") }
    return "io_uring unavailable (" + causes.joined(separator: "; ") + "); using pread"
}
