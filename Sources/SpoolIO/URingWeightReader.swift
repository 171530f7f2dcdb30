/// io_uring backend: O_DIRECT reads, registered (fixed) buffers when the caller declares them, and
/// up to `queueDepth` chunk reads in flight. Single-threaded: the thread that waits reaps.
public final class URingWeightReader: WeightReader {
    public let path: String
    public let fileSize: Int
    public let isDirect: Bool
    public var backend: IOBackend { .uring }
    public var inFlight: Int { table.inFlight }
    /// Why registering fixed buffers failed (reads then use plain buffers), if it did.
    public private(set) var registrationNote: String?

    private let sys: any SystemCalls
    private let fd: Int32
    private let ring: any URingQueue
    private let depth: Int
    private var table: RequestTable
    /// Chunks waiting for a submission slot, oldest first.
    private var backlog: [Chunk] = []
    private var backlogHead = 0
    /// Chunks the kernel has, by user data.
    private var submitted: [UInt64: Chunk] = [:]
    private var nextUserData: UInt64 = 1
    /// Queued in the submission ring but not yet handed to the kernel.
    private var prepared = 0
    /// Registered buffers, as (start address, end address, index).
    private var fixed: [(start: UInt, end: UInt, index: Int)] = []
    private var registeredBuffers: [AlignedBuffer] = []

    public init(path: String, options: WeightReaderOptions) throws(IOError) {
        try options.validate()
        sys = options.syscalls
        do {
            ring = try retryOnInterrupt { () throws(Errno) in try options.syscalls.makeURing(entries: options.queueDepth, asyncSubmission: options.uringAsyncSubmission) }
        } catch {
            throw .uringSetup(error)
        }
        let opened = try openWeightsFile(path, direct: options.directIO, options.syscalls)
        self.path = path
        fd = opened.fd
        isDirect = opened.direct
        fileSize = opened.size
        depth = options.queueDepth
        table = RequestTable(path: path, fileSize: opened.size, chunkSize: options.chunkSize)
    }

    deinit {
        // Reads still in the kernel write into caller buffers: reap them before the ring goes.
        // Anything prepared but never accepted is handed over first, so every wait has an answer.
        if prepared > 0, (try? ring.submit()) == nil { submitted.removeAll() }
        while !submitted.isEmpty {
            guard let c = try? retryOnInterrupt({ () throws(Errno) in try ring.waitCompletion() }) else { break }
            submitted[c.userData] = nil
        }
        sys.close(fd)
    }

    public func register(buffers: [AlignedBuffer]) throws(IOError) {
        guard submitted.isEmpty, prepared == 0 else { throw .invalidRequest("register buffers while reads are in flight") }
        do {
            try ring.registerBuffers(buffers.map { $0.bytes })
            registeredBuffers = buffers
            fixed = buffers.enumerated().map { i, b in
                (UInt(bitPattern: b.base), UInt(bitPattern: b.base) + UInt(b.count), i)
            }
            registrationNote = nil
        } catch {
            // Locked-memory limits (ENOMEM) or an old kernel: plain reads still work, a bit slower.
            fixed = []
            registeredBuffers = []
            registrationNote = "fixed buffers not registered: \(error)"
        }
    }

    public func submit(_ request: ReadRequest) throws(IOError) {
        let chunks = try table.add(request)
        backlog += chunks
        try pump()
    }

    public func waitNext() throws(IOError) -> ReadCompletion {
        while true {
            if let done = try table.takeFinished() { return done }
            guard table.inFlight > 0 else { throw .nothingInFlight }
            try pump()
            if prepared > 0 && prepared == submitted.count {
                // Nothing reached the kernel (submit kept failing), so a wait would never return.
                throw .uringSubmit(.wouldBlock)
            }
            let completion: URingCompletion
            do {
                completion = try retryOnInterrupt { () throws(Errno) in try ring.waitCompletion() }
            } catch {
                throw .read(path: path, offset: 0, length: 0, error)
            }
            handle(completion)
        }
    }

    public func progress() throws(IOError) {
        while true {
            let completion: URingCompletion?
            do {
                completion = try retryOnInterrupt { () throws(Errno) in try ring.peekCompletion() }
            } catch {
                throw .read(path: path, offset: 0, length: 0, error)
            }
            guard let completion else { break }
            handle(completion)
        }
        try pump()
    }

    /// Accounts for one completion: done, continued after a short read, retried, or failed.
    private func handle(_ completion: URingCompletion) {
        guard var chunk = submitted.removeValue(forKey: completion.userData) else { return }
        let res = Int(completion.result)
        if res < 0 {
            let e = Errno(Int32(-res))
            if e == .interrupted || e == .wouldBlock {
                requeue(chunk)
            } else {
                table.finish(chunk, error: table.readError(chunk, e))
            }
            return
        }
        switch chunk.absorb(res) {
        case .finished: table.finish(chunk, error: nil)
        case .resubmit: requeue(chunk)
        case .endOfFile: table.finish(chunk, error: table.endOfFileError(chunk))
        }
    }

    private func requeue(_ chunk: Chunk) {
        backlog.append(chunk)
    }

    /// Moves backlog chunks into the ring up to the depth and submits them.
    private func pump() throws(IOError) {
        while backlogHead < backlog.count, submitted.count < depth {
            let chunk = backlog[backlogHead]
            let userData = nextUserData
            let dst = chunk.nextDestination
            do {
                try ring.prepareRead(fd: fd, into: dst, count: chunk.remaining, offset: chunk.nextOffset,
                                     userData: userData, fixedBufferIndex: fixedIndex(dst, chunk.remaining))
            } catch where error == .busy {
                break
            } catch {
                throw .uringSubmit(error)
            }
            nextUserData += 1
            submitted[userData] = chunk
            backlogHead += 1
            prepared += 1
        }
        if backlogHead == backlog.count {
            backlog.removeAll(keepingCapacity: true)
            backlogHead = 0
        }
        while prepared > 0 {
            do {
                let n = try retryOnInterrupt { () throws(Errno) in try ring.submit() }
                prepared -= min(n, prepared)
                if n == 0 { break }
            } catch where error == .wouldBlock || error == .busy {
                // The kernel is short of resources or the completion queue is full: reap first.
                break
            } catch {
                throw .uringSubmit(error)
            }
        }
    }

    private func fixedIndex(_ p: UnsafeMutableRawPointer, _ count: Int) -> Int? {
        let a = UInt(bitPattern: p)
        for f in fixed where a >= f.start && a + UInt(count) <= f.end { return f.index }
        return nil
    }
}
