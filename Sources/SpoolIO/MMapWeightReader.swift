#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// mmap backend: the file is mapped once; `submit` asks the kernel to start reading the range
/// (MADV_WILLNEED, asynchronous readahead) and `waitNext` copies it into the caller's buffer.
/// Goes through the page cache (no O_DIRECT), so under a memory cap the cache competes with the
/// weights; and a disk error shows up as SIGBUS during the copy rather than as an errno, which is
/// why it is not the default.
public final class MMapWeightReader: WeightReader {
    public let path: String
    public let fileSize: Int
    public var isDirect: Bool { false }
    public var backend: IOBackend { .mmap }
    public var inFlight: Int { table.inFlight }

    private let sys: any SystemCalls
    private let map: UnsafeRawPointer?
    private var table: RequestTable
    private var queued: [[Chunk]] = []

    public init(path: String, options: WeightReaderOptions) throws(IOError) {
        try options.validate()
        sys = options.syscalls
        let opened = try openWeightsFile(path, direct: false, options.syscalls)
        defer { options.syscalls.close(opened.fd) }
        self.path = path
        fileSize = opened.size
        table = RequestTable(path: path, fileSize: opened.size, chunkSize: options.chunkSize)
        if opened.size == 0 {
            map = nil
            return
        }
        let p = mmap(nil, opened.size, PROT_READ, MAP_SHARED, opened.fd, 0)
        guard let p, p != MAP_FAILED else { throw .cannotOpen(path: path, Errno.current) }
        map = UnsafeRawPointer(p)
    }

    deinit {
        if let map { munmap(UnsafeMutableRawPointer(mutating: map), fileSize) }
    }

    public func register(buffers: [AlignedBuffer]) throws(IOError) {}

    /// Nothing to do: the kernel's readahead, started by MADV_WILLNEED at submit, needs no driving.
    public func progress() throws(IOError) {}

    public func submit(_ request: ReadRequest) throws(IOError) {
        let chunks = try table.add(request)
        if let map, let first = chunks.first, let last = chunks.last {
            let start = alignDown(first.fileOffset, Int(getpagesize()))
            let end = min(last.fileOffset + last.length, fileSize)
            _ = madvise(UnsafeMutableRawPointer(mutating: map + start), end - start, MADV_WILLNEED)
        }
        queued.append(chunks)
    }

    public func waitNext() throws(IOError) -> ReadCompletion {
        while true {
            if let done = try table.takeFinished() { return done }
            guard !queued.isEmpty, let map else { throw .nothingInFlight }
            for var chunk in queued.removeFirst() {
                // The aligned tail past the end of the file does not exist in the map.
                let count = max(0, min(chunk.length, fileSize - chunk.fileOffset))
                chunk.nextDestination.copyMemory(from: map + chunk.fileOffset, byteCount: count)
                _ = chunk.absorb(count)
                table.finish(chunk, error: nil)
            }
        }
    }
}
