import SpoolFormat
@testable import SpoolQuant
import XCTest

final class BitAllocatorTests: XCTestCase {
    static let widths = ["2/64", "3/64", "4/64", "4/32"]

    /// A tensor of `weights` values whose error at b bits is `scale` · 4^-b (each extra bit
    /// quarters the squared error, as uniform rounding does); group 32 halves it again.
    static func item(_ name: String, weights: Int, scale: Double) throws -> AllocationItem {
        let candidates = try widths.map { w -> AllocationItem.Candidate in
            let c = try QuantChoice(parsing: w)
            let bytes = Int((Double(weights) * c.bitsPerWeight / 8).rounded())
            return .init(choice: c, bytes: bytes, error: scale * pow(4, -Double(c.bits)) * (c.group == 32 ? 0.5 : 1))
        }
        return AllocationItem(name: name, candidates: candidates)
    }

    /// Twelve tensors of three sizes with sensitivities spread over three orders of magnitude.
    static func synthetic() throws -> [AllocationItem] {
        try (0..<12).map { i in try item("t\(i)", weights: [4096, 8192, 16384][i % 3], scale: pow(10, Double(i % 4)) * Double(1 + i / 4)) }
    }

    static func bytes(_ items: [AllocationItem], _ a: Allocation) -> Int {
        zip(items, a.choices).reduce(0) { s, p in s + p.0.candidates.first { $0.choice == p.1 }!.bytes }
    }

    func testBudgetIsRespectedAndReportedBytesAreExact() throws {
        let items = try Self.synthetic()
        let minimum = items.reduce(0) { $0 + $1.candidates.map(\.bytes).min()! }
        let maximum = items.reduce(0) { $0 + $1.candidates.map(\.bytes).max()! }
        for budget in stride(from: minimum, through: maximum + 100, by: 997) {
            let a = try BitAllocator.allocate(items, budget: budget)
            XCTAssertLessThanOrEqual(a.bytes, budget, "budget \(budget)")
            XCTAssertEqual(a.bytes, Self.bytes(items, a), "budget \(budget)")
        }
        // Everything at the widest width fits: every tensor gets its lowest-error choice.
        let all = try BitAllocator.allocate(items, budget: maximum)
        XCTAssertEqual(all.choices, items.map { _ in try! QuantChoice(parsing: "4/32") })
    }

    func testBudgetBelowTheNarrowestIsAnError() throws {
        let items = try Self.synthetic()
        let minimum = items.reduce(0) { $0 + $1.candidates.map(\.bytes).min()! }
        XCTAssertThrowsError(try BitAllocator.allocate(items, budget: minimum - 1)) { e in
            XCTAssertEqual(e as? AllocationError, .budgetTooSmall(budget: minimum - 1, minimum: minimum))
        }
        XCTAssertThrowsError(try BitAllocator.allocate([AllocationItem(name: "x", candidates: [])], budget: 100)) { e in
            XCTAssertEqual(e as? AllocationError, .noCandidates(tensor: "x"))
        }
    }

    /// More bytes never make the summed error worse, and a tensor that is more sensitive than an
    /// otherwise identical one never gets fewer bits.
    func testMonotoneInBudgetAndSensitivity() throws {
        var items = try Self.synthetic()
        items.append(try Self.item("twin-low", weights: 8192, scale: 20))
        items.append(try Self.item("twin-high", weights: 8192, scale: 80))
        let minimum = items.reduce(0) { $0 + $1.candidates.map(\.bytes).min()! }
        let maximum = items.reduce(0) { $0 + $1.candidates.map(\.bytes).max()! }
        var previous = Double.infinity
        var sawUpgrade = false
        for budget in stride(from: minimum, through: maximum, by: 512) {
            let a = try BitAllocator.allocate(items, budget: budget)
            XCTAssertLessThanOrEqual(a.error, previous * (1 + 1e-12), "budget \(budget)")
            previous = a.error
            let low = a.choices[items.count - 2], high = a.choices[items.count - 1]
            XCTAssertGreaterThanOrEqual(high.bitsPerWeight, low.bitsPerWeight, "budget \(budget): \(high) for the sensitive twin, \(low) for the other")
            if high != low { sawUpgrade = true }
        }
        XCTAssertTrue(sawUpgrade, "some budget should separate the twins")
    }

    /// On a case small enough to enumerate, the greedy result is close to the exact optimum.
    func testNearOptimalOnAnEnumerableCase() throws {
        let items = try (0..<5).map { i in try Self.item("t\(i)", weights: [2048, 4096, 8192][i % 3], scale: pow(7, Double(i))) }
        let minimum = items.reduce(0) { $0 + $1.candidates.map(\.bytes).min()! }
        for budget in stride(from: minimum, through: minimum + 6000, by: 333) {
            let a = try BitAllocator.allocate(items, budget: budget)
            var best = Double.infinity
            func search(_ i: Int, _ bytes: Int, _ err: Double) {
                if bytes > budget { return }
                if i == items.count { best = min(best, err); return }
                for c in items[i].candidates { search(i + 1, bytes + c.bytes, err + c.error) }
            }
            search(0, 0, 0)
            // Greedy on a knapsack is not exact; on this case it stays within 25% of the optimum.
            XCTAssertLessThanOrEqual(a.error, best * 1.25, "budget \(budget): greedy \(a.error), optimum \(best)")
        }
    }

    func testLowerHullDropsDominatedAndConcaveChoices() throws {
        let c = try ["2/64", "3/64", "3/32", "4/64"].map { try QuantChoice(parsing: $0) }
        let points: [AllocationItem.Candidate] = [
            .init(choice: c[0], bytes: 100, error: 10),
            .init(choice: c[1], bytes: 140, error: 9),    // above the segment 100..180: not on the hull
            .init(choice: c[2], bytes: 160, error: 12),   // dominated: costs more, worse
            .init(choice: c[3], bytes: 180, error: 2),
        ]
        XCTAssertEqual(BitAllocator.lowerHull(points).map(\.choice), [c[0], c[3]])
    }

    func testChoiceParsingAndCost() throws {
        let c = try QuantChoice(parsing: "3/64")
        XCTAssertEqual(c.bitsPerWeight, 3.5)
        XCTAssertThrowsError(try QuantChoice(parsing: "5/64")) { XCTAssertEqual($0 as? QuantError, .unsupportedBits(5)) }
        XCTAssertThrowsError(try QuantChoice(parsing: "3-64")) { XCTAssertEqual($0 as? QuantError, .badChoice("3-64")) }
        XCTAssertThrowsError(try QuantChoice(parsing: "4/48")) { XCTAssertEqual($0 as? QuantError, .unsupportedGroup(48)) }
    }
}
