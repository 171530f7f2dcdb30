import Dispatch
import SpoolKernels
import Synchronization
import XCTest

final class ThreadPoolTests: XCTestCase {
    /// Every index in 0..<chunks ran exactly once.
    func assertEachChunkOnce(_ pool: ThreadPool, _ chunks: Int, file: StaticString = #filePath, line: UInt = #line) {
        let counts = UnsafeMutablePointer<Int>.allocate(capacity: max(chunks, 1))
        counts.initialize(repeating: 0, count: max(chunks, 1))
        defer { counts.deallocate() }
        pool.parallelFor(chunks) { i in counts[i] += 1 } // distinct i: no two threads share a slot
        for i in 0..<chunks where counts[i] != 1 {
            XCTFail("chunk \(i) of \(chunks) ran \(counts[i]) times", file: file, line: line)
            return
        }
    }

    func testAllChunksRunExactlyOnce() {
        for threads in [1, 2, 3, 8] {
            let pool = ThreadPool(threads: threads)
            XCTAssertEqual(pool.threadCount, threads)
            for chunks in [0, 1, 2, 3, 7, 64, 1000] { assertEachChunkOnce(pool, chunks) }
        }
    }

    func testRepeatedCallsIncludingAfterWorkersSleep() {
        let pool = ThreadPool(threads: 3, spinMicroseconds: 50)
        for i in 0..<5000 { assertEachChunkOnce(pool, 1 + i % 9) }
        // Let the workers block on their semaphores, then make sure they wake.
        for _ in 0..<20 {
            usleep(300)
            assertEachChunkOnce(pool, 16)
        }
    }

    func testWorkIsActuallyShared() {
        let pool = ThreadPool(threads: 2)
        let seen = Mutex<Set<String>>([])
        // Chunks that take a while, so the worker has time to claim some.
        pool.parallelFor(64) { _ in
            let name = "\(pthread_self())"
            seen.withLock { _ = $0.insert(name) }
            usleep(200)
        }
        XCTAssertEqual(seen.withLock { $0.count }, 2)
    }

    func testSingleThreadRunsInline() {
        let pool = ThreadPool(threads: 1)
        let caller = pthread_self()
        var order: [Int] = []
        pool.parallelFor(5) { i in
            XCTAssertTrue(pthread_equal(pthread_self(), caller) != 0)
            order.append(i)
        }
        XCTAssertEqual(order, [0, 1, 2, 3, 4])
        XCTAssertEqual(ThreadPool(threads: 0).threadCount, 1)
    }

    func testNestedAndConcurrentCallsRunEverything() {
        let pool = ThreadPool(threads: 2)
        let total = Atomic<Int>(0)
        pool.parallelFor(4) { _ in
            pool.parallelFor(10) { _ in total.add(1, ordering: .relaxed) } // runs inline
        }
        XCTAssertEqual(total.load(ordering: .relaxed), 40)
        total.store(0, ordering: .relaxed)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<200 { pool.parallelFor(5) { _ in total.add(1, ordering: .relaxed) } }
        }
        XCTAssertEqual(total.load(ordering: .relaxed), 4 * 200 * 5)
    }

    func testParallelRangesCoverExactly() {
        let pool = ThreadPool(threads: 3)
        for (count, granule) in [(0, 1), (1, 4), (10, 1), (100, 4), (97, 8), (5, 16)] {
            let covered = Mutex<[Int]>([])
            pool.parallelRanges(count, granule: granule) { r in
                XCTAssertTrue(r.lowerBound % granule == 0)
                covered.withLock { $0 += Array(r) }
            }
            XCTAssertEqual(covered.withLock { $0.sorted() }, Array(0..<count))
        }
    }

    func testPinnedPoolAndPoolTeardown() {
        #if os(Linux)
        XCTAssertFalse(Affinity.allowedCPUs().isEmpty)
        #endif
        for _ in 0..<20 {
            let pool = ThreadPool(threads: 2, pinWorkers: true)
            assertEachChunkOnce(pool, 33)
        } // each pool's workers are told to exit when it goes away
    }
}
