import CSpoolSys
import Dispatch
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs chunks of work on a fixed set of threads: the calling thread plus `threadCount - 1` workers
/// that live as long as the pool.
///
/// Decode issues a couple of hundred small matvecs per token, so the cost of one `parallelFor`
/// must be a few microseconds at most. Waking a blocked thread costs tens of microseconds, so
/// between jobs the workers spin (with `pause`) for `spinMicroseconds` and only then block on a
/// semaphore. Chunks are claimed from a shared counter, so a worker that wakes late simply finds
/// fewer chunks left.
///
/// All shared state is `Atomic`/`Mutex` from the Synchronization module; the one unchecked spot is
/// the job's closure (see `Job`).
public final class ThreadPool: Sendable {
    public let threadCount: Int
    /// The NUMA node of each thread (index 0 is the caller), when the pool was placed on a
    /// multi-node topology; empty otherwise. Kernels can use it to pick node-local copies of data.
    public let threadNodes: [Int]
    private let state: PoolState

    /// - Parameters:
    ///   - threads: total threads including the caller; values below 1 mean 1 (no workers).
    ///   - pinWorkers: pin worker i (1-based; the caller is 0) to the i-th CPU of the process's
    ///     affinity mask, modulo its size. Linux only; the calling thread is left alone.
    ///   - spinMicroseconds: how long an idle worker spins before it blocks.
    public convenience init(threads: Int, pinWorkers: Bool = false, spinMicroseconds: Int = 1000) {
        let cpus = pinWorkers ? Affinity.allowedCPUs() : []
        let count = max(1, threads)
        self.init(threads: count, cpus: cpus.isEmpty ? [] : (0..<count).map { cpus[$0 % cpus.count] }, nodes: [],
                  spinMicroseconds: spinMicroseconds)
    }

    /// A pool placed on a NUMA topology: on a multi-node topology thread i runs on the node and CPU
    /// of `topology.placement(threads:)` (workers are pinned; the caller, thread 0, is expected to
    /// run on node 0 and is left alone), on a single node this is the plain unpinned pool.
    public convenience init(threads: Int, topology: NUMATopology, spinMicroseconds: Int = 1000) {
        let count = max(1, threads)
        let placement = topology.placement(threads: count)
        self.init(threads: count, cpus: placement.map(\.cpu), nodes: placement.map(\.node), spinMicroseconds: spinMicroseconds)
    }

    /// `cpus`: empty, or the CPU of every thread (index 0 is the caller, not pinned).
    private init(threads count: Int, cpus: [Int], nodes: [Int], spinMicroseconds: Int) {
        threadCount = count
        threadNodes = nodes
        state = PoolState(workers: threadCount - 1, spinNanoseconds: UInt64(max(0, spinMicroseconds)) * 1000)
        for i in 0..<(threadCount - 1) {
            let cpu = cpus.isEmpty ? nil : cpus[i + 1]
            let (state, slot) = (state, state.slots[i])
            let thread = Thread {
                if let cpu { _ = Affinity.pinCurrentThread(toCPU: cpu) }
                state.workerLoop(slot)
            }
            thread.name = "spool-worker-\(i + 1)"
            thread.start()
        }
    }

    deinit {
        state.shutdown()
    }

    /// Calls `body(chunkIndex)` once for every index in 0..<chunks, spread over the pool's threads,
    /// and returns when all calls have returned. `body` runs concurrently with itself and must be
    /// safe to do so for distinct indices. A call made while the pool is already running a job
    /// (from inside a `body`, or from another thread) runs its chunks serially on the calling
    /// thread instead of waiting.
    public func parallelFor(_ chunks: Int, _ body: (Int) -> Void) {
        guard chunks > 0 else { return }
        if chunks == 1 || threadCount == 1 || !state.tryAcquire() {
            for i in 0..<chunks { body(i) }
            return
        }
        defer { state.release() }
        if chunks > Int(PoolState.countMask) {
            // The claim word has 32 bits for the count; group indices so that it never overflows.
            let groups = threadCount * 64
            withoutActuallyEscaping(body) { body in
                state.run(groups) { g in
                    for i in (chunks * g / groups)..<(chunks * (g + 1) / groups) { body(i) }
                }
            }
            return
        }
        withoutActuallyEscaping(body) { state.run(chunks, $0) }
    }

    /// Splits 0..<count into about `threadCount` ranges (multiples of `granule`) and runs them in parallel.
    public func parallelRanges(_ count: Int, granule: Int = 1, _ body: (Range<Int>) -> Void) {
        let granule = max(1, granule)
        let units = (count + granule - 1) / granule
        let parts = min(threadCount, units)
        guard parts > 1 else {
            if count > 0 { body(0..<count) }
            return
        }
        parallelFor(parts) { p in
            let lo = units * p / parts * granule
            let hi = min(count, units * (p + 1) / parts * granule)
            if lo < hi { body(lo..<hi) }
        }
    }
}

/// The job being run: a closure that outlives no `parallelFor` call.
///
/// `nonisolated(unsafe)` because the closure is not `@Sendable` (kernel closures capture raw
/// pointers). It is sound here: `parallelFor` does not return until every chunk has finished and
/// every worker has dropped its copy (see `PoolState.runClaimed`), and the atomics order the
/// closure's effects before that return.
struct Job: Sendable {
    nonisolated(unsafe) let body: (Int) -> Void
}

/// A worker's parking place.
final class WorkerSlot: Sendable {
    static let running = 0, sleeping = 1
    let state = Atomic<Int>(WorkerSlot.running)
    let wake = DispatchSemaphore(value: 0)
}

final class PoolState: Sendable {
    /// The claim word: (job tag << 32) | chunks not yet claimed. A claim decrements the count with a
    /// compare-exchange, so a worker holding a stale word from an earlier job can never claim a
    /// chunk of the next one (the tag differs). Chunks are handed out from the last index down.
    let claim = Atomic<UInt64>(0)
    static let countMask: UInt64 = 0xFFFF_FFFF
    /// Chunks finished in the current job, added by each thread after it has dropped the closure.
    let completed = Atomic<Int>(0)
    let job = Mutex<Job?>(nil)
    let busy = Atomic<Bool>(false)
    let stopping = Atomic<Bool>(false)
    let slots: [WorkerSlot]
    let spinNanoseconds: UInt64

    init(workers: Int, spinNanoseconds: UInt64) {
        slots = (0..<workers).map { _ in WorkerSlot() }
        self.spinNanoseconds = spinNanoseconds
    }

    func tryAcquire() -> Bool {
        busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
    }

    func release() {
        busy.store(false, ordering: .releasing)
    }

    /// Publishes a job, takes part in it, and waits for the rest. Caller holds `busy`.
    func run(_ chunks: Int, _ body: @escaping (Int) -> Void) {
        job.withLock { $0 = Job(body: body) }
        completed.store(0, ordering: .relaxed)
        let tag = (claim.load(ordering: .relaxed) >> 32) &+ 1
        // Sequentially consistent: pairs with the worker's store-then-load of its slot state.
        claim.store(tag << 32 | UInt64(chunks), ordering: .sequentiallyConsistent)
        // A plain load first: spinning workers keep their slot line shared, and a compare-exchange
        // on it every call would bounce it between cores.
        for slot in slots
        where slot.state.load(ordering: .sequentiallyConsistent) == WorkerSlot.sleeping
            && slot.state.compareExchange(
                expected: WorkerSlot.sleeping, desired: WorkerSlot.running, ordering: .sequentiallyConsistent
            ).exchanged {
            slot.wake.signal()
        }
        let mine = runClaimed(body)
        if mine > 0 { completed.add(mine, ordering: .releasing) }
        var spins = 0
        while completed.load(ordering: .acquiring) < chunks {
            spins &+= 1
            if spins & 1023 == 0 { sched_yield() } else { spool_cpu_relax() }
        }
        job.withLock { $0 = nil }
    }

    /// Claims and runs chunks until none are left; returns how many it ran.
    @inline(never)
    func runClaimed(_ body: ((Int) -> Void)?) -> Int {
        var body = body
        var ran = 0
        var word = claim.load(ordering: .acquiring)
        while word & Self.countMask > 0 {
            let (exchanged, current) = claim.compareExchange(
                expected: word, desired: word - 1, ordering: .acquiringAndReleasing)
            if exchanged {
                // A claimed chunk keeps its job from finishing, so the job read here is that chunk's.
                if body == nil { body = job.withLock { $0 }!.body }
                body!(Int(word & Self.countMask) - 1)
                ran += 1
                word = claim.load(ordering: .acquiring)
            } else {
                word = current
            }
        }
        return ran
    }

    func workerLoop(_ slot: WorkerSlot) {
        while true {
            guard waitForWork(slot) else { return }
            // Called through a non-inlined function so the closure copy is released before the
            // count is published (the caller may return as soon as the count is complete).
            let ran = runClaimed(nil)
            if ran > 0 { completed.add(ran, ordering: .releasing) }
        }
    }

    /// Spins, then sleeps, until a job has chunks left to claim. False when the pool is shutting down.
    private func waitForWork(_ slot: WorkerSlot) -> Bool {
        var deadline: UInt64 = 0
        var spins = 0
        while true {
            if stopping.load(ordering: .relaxed) { return false }
            if claim.load(ordering: .acquiring) & Self.countMask > 0 { return true }
            spins &+= 1
            if spins & 255 != 0 {
                spool_cpu_relax()
                continue
            }
            let now = DispatchTime.now().uptimeNanoseconds
            if deadline == 0 { deadline = now + spinNanoseconds }
            if now < deadline {
                // Give the core away if someone else wants it (more threads than cores).
                if spins & 4095 == 0 { sched_yield() }
                continue
            }
            // Announce the sleep, then look again: the dispatcher stores the claim word and then
            // reads our state (both sequentially consistent), so at least one of us sees the other.
            slot.state.store(WorkerSlot.sleeping, ordering: .sequentiallyConsistent)
            if claim.load(ordering: .sequentiallyConsistent) & Self.countMask > 0 || stopping.load(ordering: .sequentiallyConsistent) {
                if slot.state.compareExchange(
                    expected: WorkerSlot.sleeping, desired: WorkerSlot.running, ordering: .sequentiallyConsistent
                ).exchanged {
                    deadline = 0
                    continue
                }
                // The dispatcher already flipped us to running and is signalling: consume it.
            }
            slot.wake.wait()
            deadline = 0
        }
    }

    func shutdown() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        for slot in slots
        where slot.state.compareExchange(
            expected: WorkerSlot.sleeping, desired: WorkerSlot.running, ordering: .sequentiallyConsistent
        ).exchanged {
            slot.wake.signal()
        }
    }
}

/// CPU pinning, used only when a pool is asked to pin.
public enum Affinity {
    /// CPUs this process may run on, ascending; empty where unknown.
    public static func allowedCPUs() -> [Int] {
        var cpus = [Int32](repeating: 0, count: 1024)
        let n = Int(spool_allowed_cpus(&cpus, Int32(cpus.count)))
        return n <= 0 ? [] : cpus.prefix(min(n, cpus.count)).map(Int.init)
    }

    /// Pins the calling thread to one CPU (Linux). Returns false where unsupported or refused.
    @discardableResult
    public static func pinCurrentThread(toCPU cpu: Int) -> Bool {
        spool_pin_current_thread(Int32(clamping: cpu)) == 0
    }
}
