import SpoolKernels
import XCTest

final class NUMATests: XCTestCase {
    /// A fake two-node machine (this one has a single node): placement, a pool placed on it, and
    /// node buffers for both nodes.
    func testFakeTwoNodeTopology() {
        let topology = NUMATopology(nodes: [[0, 1], [2, 3]])
        XCTAssertTrue(topology.isMultiNode)
        let four = topology.placement(threads: 4)
        XCTAssertEqual(four.map(\.node), [0, 0, 1, 1])
        XCTAssertEqual(four.map(\.cpu), [0, 1, 2, 3])
        let three = topology.placement(threads: 3)
        XCTAssertEqual(three.map(\.node), [0, 0, 1])
        // More threads than a node's CPUs wrap around that node's CPUs.
        XCTAssertEqual(topology.placement(threads: 6).map(\.cpu), [0, 1, 0, 2, 3, 2])

        // Pinning to CPUs this machine may lack is refused quietly; the pool still works.
        let pool = ThreadPool(threads: 4, topology: topology)
        XCTAssertEqual(pool.threadNodes, [0, 0, 1, 1])
        var hits = [Int](repeating: 0, count: 64)
        hits.withUnsafeMutableBufferPointer { h in
            let p = h.baseAddress!
            pool.parallelFor(64) { i in p[i] += 1 }
        }
        XCTAssertEqual(hits, [Int](repeating: 1, count: 64))

        let real = NUMATopology.detect()
        for node in 0..<topology.nodeCount {
            let buffer = NodeBuffer(bytes: 4096, node: node)
            // Bound only to nodes the machine really has (and never on a single-node machine).
            if let bound = buffer.boundNode {
                XCTAssertTrue(real.isMultiNode)
                XCTAssertEqual(bound, node)
            }
            let f = buffer.pointer.bindMemory(to: Float.self, capacity: 1024)
            f.initialize(repeating: Float(node), count: 1024)
            XCTAssertEqual(f[1023], Float(node))
        }
    }

    func testSingleNodeCostsNothing() {
        let single = NUMATopology(nodes: [[0, 1], []])
        XCTAssertFalse(single.isMultiNode)
        XCTAssertTrue(single.placement(threads: 2).isEmpty)
        XCTAssertEqual(ThreadPool(threads: 2, topology: single).threadNodes, [])
        XCTAssertNil(NodeBuffer(bytes: 64, node: 0, bind: false).boundNode)
        let detected = NUMATopology.detect()
        XCTAssertGreaterThanOrEqual(detected.nodeCount, 1)
        XCTAssertFalse(detected.nodes.flatMap { $0 }.isEmpty)
    }
}
