import SpoolRuntime
import XCTest

final class SamplerTests: XCTestCase {
    let logits: ArraySlice<Float> = [1.0, 3.0, 2.0, 0.5, 2.9][...]

    func testGreedyPicksArgmax() {
        var s = Sampler(.greedy)
        XCTAssertEqual(s.sample(logits), 1)
    }

    func testSeedMakesSamplingReproducible() {
        var p = SamplingParameters()
        p.temperature = 1.5
        p.topK = 0
        p.topP = 1
        p.minP = 0
        p.seed = 42
        var a = Sampler(p), b = Sampler(p)
        let xs = (0..<50).map { _ in a.sample(logits) }
        let ys = (0..<50).map { _ in b.sample(logits) }
        XCTAssertEqual(xs, ys)
        XCTAssertGreaterThan(Set(xs).count, 2, "a high temperature should visit several tokens")
    }

    func testTopKOneIsGreedy() {
        var p = SamplingParameters()
        p.temperature = 5
        p.topK = 1
        p.seed = 7
        var s = Sampler(p)
        for _ in 0..<20 { XCTAssertEqual(s.sample(logits), 1) }
    }

    func testTopKRestrictsCandidates() {
        var p = SamplingParameters()
        p.temperature = 10
        p.topK = 2
        p.topP = 1
        p.minP = 0
        p.seed = 3
        var s = Sampler(p)
        let seen = Set((0..<200).map { _ in s.sample(logits) })
        XCTAssertEqual(seen, [1, 4])
    }

    func testTopPKeepsSmallestSetAboveP() {
        // Probabilities at T=1 for [0, 10, 0]: token 1 holds almost all the mass.
        var p = SamplingParameters()
        p.temperature = 1
        p.topK = 0
        p.topP = 0.5
        p.minP = 0
        p.seed = 1
        var s = Sampler(p)
        for _ in 0..<50 { XCTAssertEqual(s.sample([0, 10, 0][...]), 1) }
    }

    func testMinPDropsUnlikelyTokens() {
        var p = SamplingParameters()
        p.temperature = 1
        p.topK = 0
        p.topP = 1
        p.minP = 0.5  // keeps tokens with p >= 0.5 * p(top)
        p.seed = 9
        var s = Sampler(p)
        let seen = Set((0..<300).map { _ in s.sample(logits) })
        // p = [0.054, 0.402, 0.148, 0.033, 0.363]: only tokens 1 and 4 reach half of the top.
        XCTAssertEqual(seen, [1, 4])
    }

    func testRepetitionPenaltyDemotesSeenTokens() {
        var p = SamplingParameters.greedy
        p.repeatPenalty = 2
        var s = Sampler(p)
        // Token 1 (3.0) is penalized to 1.5, so 4 (2.9) wins.
        XCTAssertEqual(s.sample(logits, history: [1]), 4)
        XCTAssertEqual(s.sample(logits, history: []), 1)
    }

    func testValidationNamesTheParameter() {
        var p = SamplingParameters()
        p.topP = 0
        XCTAssertThrowsError(try p.validate()) { XCTAssertTrue("\($0)".contains("top-p")) }
        p = SamplingParameters()
        p.temperature = -1
        XCTAssertThrowsError(try p.validate()) { XCTAssertTrue("\($0)".contains("temperature")) }
    }
}
