import Foundation
import Synchronization
import SpoolRuntime
import SpoolTokenizer

/// What a request asks the model for, in Sendable values only: the model itself never leaves the
/// compute thread.
public struct GenerationJob: Sendable {
    public var prompt: [Int32]
    public var maxTokens: Int
    public var sampling: SamplingParameters
    public var stop: [String]

    public init(prompt: [Int32], maxTokens: Int, sampling: SamplingParameters, stop: [String]) {
        self.prompt = prompt
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.stop = stop
    }
}

public enum GenerationEvent: Sendable, Equatable {
    /// The job got a slot and its prompt is in the cache.
    case started(promptTokens: Int, reusedTokens: Int)
    case text(String)
    case finished(FinishReason, completionTokens: Int)
    case failed(String)
}

/// Facts about the loaded model that request handlers need, all Sendable.
public struct ModelInfo: Sendable {
    public var id: String
    public var contextLength: Int
    public var template: ChatTemplate
    public var templateWarning: String?
    public var tokenizer: BPETokenizer
}

public struct SchedulerLimits: Sendable {
    /// Generations that advance together, each with its own KV cache.
    public var slots: Int
    /// Requests that may wait for a slot; past that they are refused.
    public var queue: Int
    public init(slots: Int, queue: Int) {
        self.slots = slots
        self.queue = queue
    }
}

public struct SchedulerCounts: Sendable, Equatable {
    public var slots: Int
    public var busy: Int
    public var queued: Int
}

public enum SchedulerError: Error, CustomStringConvertible, Equatable {
    case busy(running: Int, queued: Int)
    case stopped

    public var description: String {
        switch self {
        case let .busy(running, queued):
            return "the server is busy (\(running) requests running, \(queued) waiting, the queue is full); try again later"
        case .stopped: return "the server is shutting down"
        }
    }
}

/// Runs every forward pass on one dedicated thread, which owns the engine and one session per slot.
/// Requests queue in a bounded FIFO; the thread admits them into free slots and then advances every
/// active slot by one token in turn, so slots progress together while the model only ever runs one
/// pass at a time (the model's scratch buffers and thread pool are not shareable). Cancellation (a
/// client that went away) is a flag the thread checks between tokens; it frees the slot at once.
public final class GenerationScheduler: Sendable {
    public let info: ModelInfo
    public let limits: SchedulerLimits
    let core: Core

    struct Waiting: Sendable {
        var id: Int
        var job: GenerationJob
        var events: AsyncStream<GenerationEvent>.Continuation
    }

    struct State {
        var nextID = 1
        var queue: [Waiting] = []
        var busy = 0
        var cancelled: Set<Int> = []
        var stopping = false
    }

    final class Core: Sendable {
        let state = Mutex(State())
        /// Signalled whenever there is something for the compute thread to look at.
        let wake = DispatchSemaphore(value: 0)
    }

    init(info: ModelInfo, limits: SchedulerLimits, core: Core) {
        self.info = info
        self.limits = limits
        self.core = core
    }

    /// Loads the model on a new compute thread and returns once it is ready.
    public static func start(modelPath: String, options: EngineOptions, contextLength: Int?, limits: SchedulerLimits) async throws -> GenerationScheduler {
        let core = Core()
        let slots = max(1, limits.slots)
        let info: ModelInfo = try await withCheckedThrowingContinuation { ready in
            let thread = Thread {
                ComputeLoop.run(core: core, modelPath: modelPath, options: options, contextLength: contextLength, slots: slots, ready: ready)
            }
            thread.name = "spool-compute"
            thread.stackSize = 16 << 20
            thread.start()
        }
        return GenerationScheduler(info: info, limits: SchedulerLimits(slots: slots, queue: max(0, limits.queue)), core: core)
    }

    /// Queues a job. Throws `.busy` when every slot is taken and the queue is full. The stream ends
    /// after `.finished` or `.failed`; call `cancel(id)` when the consumer goes away.
    public func submit(_ job: GenerationJob) throws(SchedulerError) -> (id: Int, events: AsyncStream<GenerationEvent>) {
        let (stream, continuation) = AsyncStream<GenerationEvent>.makeStream()
        let id: Int = try core.state.withLock { (s: inout State) throws(SchedulerError) -> Int in
            if s.stopping { throw .stopped }
            if s.busy + s.queue.count >= limits.slots + limits.queue { throw .busy(running: s.busy, queued: s.queue.count) }
            let id = s.nextID
            s.nextID += 1
            s.queue.append(Waiting(id: id, job: job, events: continuation))
            return id
        }
        let core = self.core
        continuation.onTermination = { reason in
            if case .cancelled = reason { GenerationScheduler.cancel(id, core: core) }
        }
        core.wake.signal()
        return (id, stream)
    }

    /// Stops a job, queued or running; a no-op for one that has finished.
    public func cancel(_ id: Int) { Self.cancel(id, core: core) }

    static func cancel(_ id: Int, core: Core) {
        let removed: Waiting? = core.state.withLock { s in
            if let i = s.queue.firstIndex(where: { $0.id == id }) { return s.queue.remove(at: i) }
            s.cancelled.insert(id)
            return nil
        }
        if let w = removed {
            w.events.yield(.finished(.cancelled, completionTokens: 0))
            w.events.finish()
        }
        core.wake.signal()
    }

    public var counts: SchedulerCounts {
        core.state.withLock { s in SchedulerCounts(slots: limits.slots, busy: s.busy, queued: s.queue.count) }
    }

    /// Ends the compute thread after the running generations are cancelled.
    public func shutdown() {
        core.state.withLock { $0.stopping = true }
        core.wake.signal()
    }
}

/// The compute thread's side: everything here runs on that one thread.
enum ComputeLoop {
    final class Slot {
        let session: Session
        var id = 0
        var generation: Generation?
        var events: AsyncStream<GenerationEvent>.Continuation?
        init(session: Session) { self.session = session }
    }

    static func run(core: GenerationScheduler.Core, modelPath: String, options: EngineOptions, contextLength: Int?, slots count: Int,
                    ready: CheckedContinuation<ModelInfo, any Error>) {
        let engine: Engine
        let template: (template: ChatTemplate, warning: String?)
        do {
            engine = try Engine(path: modelPath, options: options)
            template = try ChatTemplate.resolve(name: nil, metadata: engine.chatTemplate)
        } catch {
            ready.resume(throwing: error)
            return
        }
        let slots = (0..<count).map { _ in Slot(session: engine.makeSession(contextLength: contextLength)) }
        let modelID = URL(fileURLWithPath: modelPath).deletingPathExtension().lastPathComponent
        ready.resume(returning: ModelInfo(id: modelID, contextLength: slots[0].session.contextLength, template: template.template,
                                          templateWarning: template.warning, tokenizer: engine.tokenizer))

        while true {
            let free = slots.filter { $0.generation == nil }.count
            let (admitted, cancelled, stopping) = core.state.withLock { s in
                let n = min(free, s.queue.count)
                let admitted = Array(s.queue.prefix(n))
                s.queue.removeFirst(n)
                s.busy += n
                let cancelled = s.cancelled
                s.cancelled.removeAll()
                return (admitted, cancelled, s.stopping)
            }
            for slot in slots where slot.generation != nil && (stopping || cancelled.contains(slot.id)) {
                slot.generation?.cancel()
                finish(slot, core: core)
            }
            if stopping {
                let waiting = core.state.withLock { s in
                    defer { s.queue.removeAll() }
                    return s.queue + admitted
                }
                for w in waiting {
                    w.events.yield(.failed(SchedulerError.stopped.description))
                    w.events.finish()
                }
                return
            }
            for w in admitted { start(w, in: slots, core: core) }
            let active = slots.filter { $0.generation != nil }
            if active.isEmpty {
                core.wake.wait()
                continue
            }
            for slot in active { advance(slot, core: core) }
        }
    }

    /// Puts a job in the free slot whose cache shares the longest prefix with its prompt, and prefills.
    static func start(_ w: GenerationScheduler.Waiting, in slots: [Slot], core: GenerationScheduler.Core) {
        let free = slots.filter { $0.generation == nil }
        guard let slot = free.max(by: { commonPrefix($0.session.tokens, w.job.prompt) < commonPrefix($1.session.tokens, w.job.prompt) }) else {
            // Cannot happen: admission never takes more jobs than there are free slots.
            w.events.yield(.failed("no free slot"))
            w.events.finish()
            core.state.withLock { $0.busy -= 1 }
            return
        }
        slot.id = w.id
        slot.events = w.events
        do {
            let g = try Generation(session: slot.session, prompt: w.job.prompt, maxTokens: w.job.maxTokens, sampling: w.job.sampling, stop: w.job.stop)
            slot.generation = g
            w.events.yield(.started(promptTokens: g.stats.promptTokens, reusedTokens: g.stats.reusedTokens))
            if g.isFinished { finish(slot, core: core) }
        } catch {
            slot.session.reset()
            release(slot, core: core)
            w.events.yield(.failed("\(error)"))
            w.events.finish()
        }
    }

    static func advance(_ slot: Slot, core: GenerationScheduler.Core) {
        guard let g = slot.generation else { return }
        do {
            if let piece = try g.step(), !piece.isEmpty { slot.events?.yield(.text(piece)) }
            if g.isFinished { finish(slot, core: core) }
        } catch {
            // A failed forward pass leaves the cache in an unknown state: start this slot afresh.
            slot.session.reset()
            let events = slot.events
            release(slot, core: core)
            events?.yield(.failed("\(error)"))
            events?.finish()
        }
    }

    /// Frees the slot first and only then reports the end, so a client that has seen its reply end
    /// never finds its slot still counted as busy.
    static func finish(_ slot: Slot, core: GenerationScheduler.Core) {
        let events = slot.events
        let end = slot.generation.map { GenerationEvent.finished($0.finishReason ?? .cancelled, completionTokens: $0.generated.count) }
        release(slot, core: core)
        if let end { events?.yield(end) }
        events?.finish()
    }

    static func release(_ slot: Slot, core: GenerationScheduler.Core) {
        slot.generation = nil
        slot.events = nil
        slot.id = 0
        core.state.withLock { $0.busy -= 1 }
    }

    static func commonPrefix(_ a: [Int32], _ b: [Int32]) -> Int {
        zip(a, b).prefix { $0 == $1 }.count
    }
}
