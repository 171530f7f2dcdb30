import Dispatch

/// Splits work across a fixed number of threads.
///
/// This first version runs on Dispatch's shared worker pool, which keeps its threads between calls
/// (no thread creation per token).
public final class ThreadPool: Sendable {
    public let threadCount: Int

    public init(threads: Int) {
        threadCount = max(1, threads)
    }

    /// Calls `body(chunkIndex)` for chunk indices 0..<chunks, spread over the pool's threads.
    public func parallelFor(_ chunks: Int, _ body: (Int) -> Void) {
        if chunks <= 1 || threadCount == 1 {
            for i in 0..<chunks { body(i) }
            return
        }
        withoutActuallyEscaping(body) { body in
            nonisolated(unsafe) let body = body
            DispatchQueue.concurrentPerform(iterations: chunks) { body($0) }
        }
    }

    /// Splits 0..<count into about `threadCount` ranges (multiples of `granule`) and runs them in parallel.
    public func parallelRanges(_ count: Int, granule: Int = 1, _ body: (Range<Int>) -> Void) {
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
