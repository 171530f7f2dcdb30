import Dispatch
import Foundation
import Synchronization

/// pread backend: chunk reads run on a small pool of threads (blocking syscalls, so several of
/// them keep the disk queue busy), O_DIRECT when the file system allows. The fallback when io_uring
/// cannot start.
public final class PReadWeightReader: WeightReader {
    public let path: String
    public let fileSize: Int
    public let isDirect: Bool
    public var backend: IOBackend { .pread }
    public var inFlight: Int { table.inFlight }

    private let shared: PReadShared
    private var table: RequestTable
    /// Chunks handed to the workers and not yet collected.
    private var outstanding = 0

    public init(path: String, options: WeightReaderOptions) throws(IOError) {
        try options.validate()
        let opened = try openWeightsFile(path, direct: options.directIO, options.syscalls)
        self.path = path
        fileSize = opened.size
        isDirect = opened.direct
        table = RequestTable(path: path, fileSize: opened.size, chunkSize: options.chunkSize)
        shared = PReadShared(fd: opened.fd, path: path, sys: options.syscalls, workers: options.preadThreads)
        for i in 0..<options.preadThreads {
            let s = shared
            let t = Thread { s.workerLoop() }
            t.name = "spool-pread-\(i)"
            t.start()
        }
    }

    deinit {
        // Let queued reads finish (they write into caller buffers), then stop the workers; the last
        // one out closes the file.
        while outstanding > 0 {
            shared.completed.wait()
            _ = shared.results.withLock { $0.isEmpty ? nil : $0.removeFirst() }
            outstanding -= 1
        }
        shared.stop()
    }

    public func register(buffers: [AlignedBuffer]) throws(IOError) {}

    /// Nothing to do: the worker threads keep the queue moving on their own.
    public func progress() throws(IOError) {}

    public func submit(_ request: ReadRequest) throws(IOError) {
        let chunks = try table.add(request)
        outstanding += chunks.count
        shared.enqueue(chunks)
    }

    public func waitNext() throws(IOError) -> ReadCompletion {
        while true {
            if let done = try table.takeFinished() { return done }
            guard outstanding > 0 else { throw .nothingInFlight }
            shared.completed.wait()
            guard let (chunk, error) = shared.results.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { continue }
            outstanding -= 1
            table.finish(chunk, error: error)
        }
    }
}

/// State the consumer and the pread workers share. Everything mutable is behind a Mutex; the
/// semaphores count queued jobs and finished results.
final class PReadShared: Sendable {
    let fd: Int32
    let path: String
    let sys: any SystemCalls
    let jobs = Mutex<[Chunk]>([])
    let jobAvailable = DispatchSemaphore(value: 0)
    let results = Mutex<[(Chunk, IOError?)]>([])
    let completed = DispatchSemaphore(value: 0)
    let workers: Int
    private let stopping = Atomic<Bool>(false)
    /// Workers not yet exited; the last one closes the file.
    private let running: Atomic<Int>

    init(fd: Int32, path: String, sys: any SystemCalls, workers: Int) {
        self.fd = fd
        self.path = path
        self.sys = sys
        self.workers = workers
        running = Atomic(workers)
    }

    func enqueue(_ chunks: [Chunk]) {
        jobs.withLock { $0 += chunks }
        for _ in chunks { jobAvailable.signal() }
    }

    func stop() {
        stopping.store(true, ordering: .releasing)
        for _ in 0..<workers { jobAvailable.signal() }
    }

    func workerLoop() {
        while true {
            jobAvailable.wait()
            if stopping.load(ordering: .acquiring) { break }
            guard let chunk = jobs.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { continue }
            let outcome = perform(chunk)
            results.withLock { $0.append(outcome) }
            completed.signal()
        }
        if running.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { sys.close(fd) }
    }

    /// Reads one chunk to completion: short reads continue, EINTR and EAGAIN are retried.
    private func perform(_ start: Chunk) -> (Chunk, IOError?) {
        var chunk = start
        var retries = 0
        while true {
            let n: Int
            do {
                n = try sys.pread(fd, into: chunk.nextDestination, count: chunk.remaining, offset: chunk.nextOffset)
            } catch where error == .interrupted || error == .wouldBlock {
                retries += 1
                if retries > 1000 { return (chunk, .read(path: path, offset: chunk.nextOffset, length: chunk.remaining, error)) }
                continue
            } catch {
                return (chunk, .read(path: path, offset: chunk.nextOffset, length: chunk.remaining, error))
            }
            switch chunk.absorb(n) {
            case .finished: return (chunk, nil)
            case .resubmit: continue
            case .endOfFile:
                return (chunk, .unexpectedEndOfFile(path: path, offset: chunk.fileOffset, expected: chunk.needed, got: chunk.done))
            }
        }
    }
}
