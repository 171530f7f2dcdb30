import Foundation

/// How the next token is chosen. Defaults follow llama.cpp's.
public struct SamplingParameters: Codable, Sendable, Equatable {
    /// 0 means greedy (argmax).
    public var temperature: Float = 0.8
    /// 0 disables top-k.
    public var topK: Int = 40
    /// 1 disables top-p.
    public var topP: Float = 0.95
    /// 0 disables min-p.
    public var minP: Float = 0.05
    /// 1 disables the repetition penalty.
    public var repeatPenalty: Float = 1.0
    /// How many recent tokens the repetition penalty looks at.
    public var repeatLastN: Int = 64
    /// nil: seeded from the clock.
    public var seed: UInt64?

    public init() {}

    public static var greedy: SamplingParameters {
        var p = SamplingParameters()
        p.temperature = 0
        return p
    }

    public func validate() throws(SamplingError) {
        guard temperature >= 0, temperature.isFinite else { throw .invalid("temperature", "\(temperature)", "must be >= 0") }
        guard topK >= 0 else { throw .invalid("top-k", "\(topK)", "must be >= 0") }
        guard topP > 0, topP <= 1 else { throw .invalid("top-p", "\(topP)", "must be in (0, 1]") }
        guard minP >= 0, minP <= 1 else { throw .invalid("min-p", "\(minP)", "must be in [0, 1]") }
        guard repeatPenalty > 0, repeatPenalty.isFinite else { throw .invalid("repeat-penalty", "\(repeatPenalty)", "must be > 0") }
        guard repeatLastN >= 0 else { throw .invalid("repeat-last-n", "\(repeatLastN)", "must be >= 0") }
    }
}

public enum SamplingError: Error, Equatable, CustomStringConvertible {
    case invalid(String, String, String)
    public var description: String {
        if case let .invalid(name, value, why) = self { return "invalid \(name) \(value): \(why)" }
        return "invalid sampling parameter"
    }
}

/// xoshiro256** seeded through splitmix64: small, fast and reproducible across platforms.
public struct Xoshiro256: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var x = seed
        func splitmix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitmix(), splitmix(), splitmix(), splitmix())
    }

    public mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = s.3 << 45 | s.3 >> 19
        return result
    }
}

/// Picks tokens from logits: repetition penalty, then top-k, top-p, min-p and temperature, then a draw.
public struct Sampler: Sendable {
    public var parameters: SamplingParameters
    private var rng: Xoshiro256

    public init(_ parameters: SamplingParameters) {
        self.parameters = parameters
        rng = Xoshiro256(seed: parameters.seed ?? UInt64(Date().timeIntervalSince1970 * 1e6))
    }

    public static func argmax<C: Collection>(_ logits: C) -> Int32 where C.Element == Float, C.Index == Int {
        var best = logits.startIndex
        var bestValue = -Float.infinity
        for i in logits.indices where logits[i] > bestValue {
            bestValue = logits[i]
            best = i
        }
        return Int32(best - logits.startIndex)
    }

    public mutating func sample(_ logitsIn: ArraySlice<Float>, history: [Int32] = []) -> Int32 {
        let p = parameters
        var logits = Array(logitsIn)
        if p.repeatPenalty != 1, p.repeatLastN > 0 {
            for id in Set(history.suffix(p.repeatLastN)) where id >= 0 && Int(id) < logits.count {
                let l = logits[Int(id)]
                logits[Int(id)] = l > 0 ? l / p.repeatPenalty : l * p.repeatPenalty
            }
        }
        if p.temperature <= 0 { return Self.argmax(logits) }

        // Candidates sorted by logit, cut by top-k.
        var ids = Array(0..<logits.count)
        let k = p.topK > 0 ? min(p.topK, logits.count) : logits.count
        if k < logits.count {
            ids = Array(ids.partialSort(k) { logits[$0] > logits[$1] })
        } else {
            ids.sort { logits[$0] > logits[$1] }
        }
        // Probabilities at temperature 1 for the top-p and min-p cuts (llama.cpp's order applies
        // temperature last).
        var probs = Self.softmax(ids.map { logits[$0] })
        if p.topP < 1 {
            var cum: Float = 0
            var keep = probs.count
            for (i, pr) in probs.enumerated() {
                cum += pr
                if cum >= p.topP { keep = i + 1; break }
            }
            ids.removeSubrange(keep...)
            probs.removeSubrange(keep...)
        }
        if p.minP > 0, let top = probs.first {
            let keep = max(1, probs.prefix { $0 >= p.minP * top }.count)
            ids.removeSubrange(keep...)
        }
        probs = Self.softmax(ids.map { logits[$0] / p.temperature })
        let r = Float(Double(rng.next() >> 11) / Double(1 << 53))
        var cum: Float = 0
        for (i, pr) in probs.enumerated() {
            cum += pr
            if r < cum { return Int32(ids[i]) }
        }
        return Int32(ids[ids.count - 1])
    }

    static func softmax(_ x: [Float]) -> [Float] {
        guard let m = x.max() else { return [] }
        let e = x.map { Foundation.exp($0 - m) }
        let s = e.reduce(0, +)
        return e.map { $0 / s }
    }
}

extension Array {
    /// The first k elements in order, by a heap-free selection that is O(n log k).
    fileprivate func partialSort(_ k: Int, by less: (Element, Element) -> Bool) -> ArraySlice<Element> {
        var top: [Element] = []
        top.reserveCapacity(k + 1)
        for e in self {
            if top.count == k, let last = top.last, !less(e, last) { continue }
            // Binary search for the insertion point.
            var lo = 0, hi = top.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if less(e, top[mid]) { hi = mid } else { lo = mid + 1 }
            }
            top.insert(e, at: lo)
            if top.count > k { top.removeLast() }
        }
        return top[...]
    }
}
