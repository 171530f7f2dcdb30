import XCTest
@testable import SpoolIO

final class MemoryPlannerTests: XCTestCase {
    let MiB = 1 << 20

    func testByteSizesParse() throws {
        XCTAssertEqual(try ByteSize.parse("512M"), 512 << 20)
        XCTAssertEqual(try ByteSize.parse("1.5G"), 3 << 29)
        XCTAssertEqual(try ByteSize.parse("64k"), 65_536)
        XCTAssertEqual(try ByteSize.parse("2GiB"), 2 << 30)
        XCTAssertEqual(try ByteSize.parse("3MB"), 3 << 20)
        XCTAssertEqual(try ByteSize.parse("1T"), 1 << 40)
        XCTAssertEqual(try ByteSize.parse(" 4096 "), 4096)
        for bad in ["", "M", "-1G", "1.5X", "one", "1e3", "1..5G", "inf", "99999999999T"] {
            XCTAssertThrowsError(try ByteSize.parse(bad), bad) { error in
                XCTAssertTrue("\(error)".contains("512M"), "\(error)")
            }
        }
        XCTAssertEqual(ByteSize.format(3 << 29), "1.5 GiB")
        XCTAssertEqual(ByteSize.format(100), "100 B")
    }

    func testEverythingResidentWhenItFits() throws {
        let plan = try MemoryPlanner.plan(.init(fixed: [("embeddings", 100 * MiB)], layerBytes: Array(repeating: 10 * MiB, count: 8),
                                                budget: 180 * MiB, prefetchDepth: 2))
        XCTAssertEqual(plan.resident, Array(0..<8))
        XCTAssertFalse(plan.streams)
        XCTAssertEqual(plan.ringSlots, 0)
        XCTAssertEqual(plan.totalBytes, 180 * MiB)
    }

    func testKeepsAsManyLayersAsFitBesideTheRing() throws {
        // 32 layers of 100 MiB, 300 MiB fixed, depth 2: ring = 3 x 100 MiB.
        let layers = Array(repeating: 100 * MiB, count: 32)
        let plan = try MemoryPlanner.plan(.init(fixed: [("embeddings", 250 * MiB), ("kv cache", 50 * MiB)], layerBytes: layers,
                                                budget: 1024 * MiB, prefetchDepth: 2))
        // 1024 - 300 - 300 = 424 -> 4 resident layers.
        XCTAssertEqual(plan.resident.count, 4)
        XCTAssertEqual(plan.streamed.count, 28)
        XCTAssertEqual(plan.ringSlots, 3)
        XCTAssertEqual(plan.slotBytes, 100 * MiB)
        XCTAssertLessThanOrEqual(plan.totalBytes, 1024 * MiB)
        XCTAssertEqual(plan.streamedBytesPerToken, 28 * 100 * MiB)
        // Spread through the model, not bunched at the start.
        XCTAssertEqual(plan.resident, [0, 8, 16, 24])
    }

    func testLargestLayersStayResidentFirst() throws {
        let layers = [10, 50, 10, 40, 10].map { $0 * MiB } // 120 MiB in all
        // Depth 1: a ring of 2 buffers as large as the largest streamed layer.
        // {1, 3} resident: 90 + 2 x 10 = 110 fits 115; {1, 3, 0}: 100 + 2 x 10 = 120 does not.
        let plan = try MemoryPlanner.plan(.init(fixed: [], layerBytes: layers, budget: 115 * MiB, prefetchDepth: 1))
        XCTAssertEqual(plan.resident, [1, 3])
        XCTAssertEqual(plan.streamedBytesPerToken, 30 * MiB)
        XCTAssertEqual(plan.totalBytes, 110 * MiB)
        // 100 MiB: {1} + 2 x 40 = 130 is too much, so everything streams through 2 x 50.
        let tight = try MemoryPlanner.plan(.init(fixed: [], layerBytes: layers, budget: 100 * MiB, prefetchDepth: 1))
        XCTAssertEqual(tight.resident, [])
        XCTAssertEqual(tight.totalBytes, 100 * MiB)
    }

    func testTooSmallABudgetIsRefusedWithTheMinimum() {
        let input = MemoryPlanner.Input(fixed: [("embeddings", 200 * MiB), ("kv cache", 56 * MiB)],
                                        layerBytes: Array(repeating: 100 * MiB, count: 32), budget: 500 * MiB, prefetchDepth: 2)
        XCTAssertThrowsError(try MemoryPlanner.plan(input)) { error in
            guard case let MemoryPlanner.PlanError.budgetTooSmall(_, minimum, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(minimum, 556 * MiB)
            let text = "\(error)"
            XCTAssertTrue(text.contains("556.0 MiB"), text)
            XCTAssertTrue(text.contains("embeddings"), text)
        }
        var exact = input
        exact.budget = 556 * MiB
        XCTAssertEqual(try MemoryPlanner.plan(exact).resident, [])
    }

    func testBadInputIsRefused() {
        XCTAssertThrowsError(try MemoryPlanner.plan(.init(fixed: [], layerBytes: [0], budget: 1 << 30, prefetchDepth: 1)))
        XCTAssertThrowsError(try MemoryPlanner.plan(.init(fixed: [], layerBytes: [1], budget: 1 << 30, prefetchDepth: -1)))
    }
}
