import SpoolFormat

/// One way to store a quantized tensor: bits per weight, values per (scale, offset) group, and
/// whether the groups' (d, m) are compact 8-bit codes ("3/32c") or float16 pairs ("3/32").
public struct QuantChoice: Sendable, Hashable, Codable, Comparable, CustomStringConvertible {
    public var bits: Int
    public var group: Int
    public var compact: Bool

    public init(bits: Int, group: Int, compact: Bool = false) throws(QuantError) {
        _ = try QuantSpec(bits: bits, group: group)
        self.bits = bits
        self.group = group
        self.compact = compact
    }

    /// "BITS/GROUP", e.g. "3/64", or "BITS/GROUPc" for compact grids, e.g. "3/32c".
    public init(parsing text: some StringProtocol) throws(QuantError) {
        let parts = text.split(separator: "/")
        let compact = parts.count == 2 && parts[1].hasSuffix("c")
        guard parts.count == 2, let b = Int(parts[0]), let g = Int(compact ? parts[1].dropLast() : parts[1]) else { throw .badChoice(String(text)) }
        try self.init(bits: b, group: g, compact: compact)
    }

    enum CodingKeys: String, CodingKey { case bits, group, compact }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        bits = try c.decode(Int.self, forKey: .bits)
        group = try c.decode(Int.self, forKey: .group)
        compact = try c.decodeIfPresent(Bool.self, forKey: .compact) ?? false
    }

    public var spec: QuantSpec { QuantSpec(validatedBits: bits, group: group, compactGrid: compact) }
    /// Storage per weight, scale and offset included: bits + 32 / group (16 / group compact; the
    /// compact rows' 4 bytes of bounds are left out).
    public var bitsPerWeight: Double { Double(bits) + (compact ? 16 : 32) / Double(group) }
    public var description: String { "\(bits)/\(group)\(compact ? "c" : "")" }
    /// The same width with float16 grids.
    public var plain: QuantChoice { var c = self; c.compact = false; return c }
    public static func < (a: QuantChoice, b: QuantChoice) -> Bool {
        (a.bitsPerWeight, a.bits, a.compact ? 1 : 0) < (b.bitsPerWeight, b.bits, b.compact ? 1 : 0)
    }
}

/// A tensor the allocator may store at one of several widths, with what each costs and how much
/// quality it loses (any additive error measure; lower is better).
public struct AllocationItem: Sendable {
    public struct Candidate: Sendable {
        public var choice: QuantChoice
        public var bytes: Int
        public var error: Double

        public init(choice: QuantChoice, bytes: Int, error: Double) {
            self.choice = choice
            self.bytes = bytes
            self.error = error
        }
    }

    public var name: String
    public var candidates: [Candidate]

    public init(name: String, candidates: [Candidate]) {
        self.name = name
        self.candidates = candidates
    }
}

public enum AllocationError: Error, Equatable, CustomStringConvertible {
    case noCandidates(tensor: String)
    case invalidError(tensor: String, choice: String)
    case budgetTooSmall(budget: Int, minimum: Int)

    public var description: String {
        switch self {
        case let .noCandidates(t): return "tensor \(t) has no candidate width to allocate"
        case let .invalidError(t, c): return "tensor \(t) at \(c): the measured error is negative or not finite"
        case let .budgetTooSmall(b, m): return "a budget of \(b) bytes is below the \(m) bytes of every tensor at its narrowest width"
        }
    }
}

/// The chosen width of every item, in input order.
public struct Allocation: Sendable {
    public var choices: [QuantChoice]
    public var bytes: Int
    public var error: Double
}

/// Chooses a width per tensor so the summed error is small and the summed bytes stay within a
/// budget (a multiple-choice knapsack).
///
/// Greedy by marginal gain: every tensor starts at its cheapest candidate; the upgrade with the
/// largest error reduction per extra byte is taken while it fits. Upgrades walk each tensor's lower
/// convex hull of (bytes, error), so the ratios a tensor offers fall step by step and the greedy
/// order is the one an exact fractional solution would follow; candidates inside the hull (worth
/// less per byte than a mix of their neighbours) are used only by the final pass, which spends
/// what is left on the best single swap that still fits, until none does.
public enum BitAllocator {
    public static func allocate(_ items: [AllocationItem], budget: Int) throws(AllocationError) -> Allocation {
        var options: [[AllocationItem.Candidate]] = []
        for item in items {
            guard !item.candidates.isEmpty else { throw .noCandidates(tensor: item.name) }
            for c in item.candidates where !(c.error.isFinite && c.error >= 0) {
                throw .invalidError(tensor: item.name, choice: c.choice.description)
            }
            options.append(item.candidates.sorted { ($0.bytes, $0.error) < ($1.bytes, $1.error) })
        }
        let hulls = options.map(lowerHull)
        var position = hulls.map { _ in 0 }   // index into each hull
        var spent = hulls.reduce(0) { $0 + $1[0].bytes }
        guard spent <= budget else { throw .budgetTooSmall(budget: budget, minimum: spent) }

        // Hull walk: take the best ratio that fits; a tensor whose next step does not fit stops
        // climbing (its later steps cost more and are worth less per byte).
        var blocked = hulls.map { $0.count <= 1 }
        while true {
            var best: (item: Int, ratio: Double)? = nil
            for i in hulls.indices where !blocked[i] {
                let a = hulls[i][position[i]], b = hulls[i][position[i] + 1]
                let ratio = (a.error - b.error) / Double(b.bytes - a.bytes)
                if best == nil || ratio > best!.ratio { best = (i, ratio) }
            }
            guard let (i, _) = best else { break }
            let a = hulls[i][position[i]], b = hulls[i][position[i] + 1]
            if spent - a.bytes + b.bytes <= budget {
                spent += b.bytes - a.bytes
                position[i] += 1
                blocked[i] = position[i] + 1 >= hulls[i].count
            } else {
                blocked[i] = true
            }
        }

        // Fill: any candidate (hull or not) that lowers a tensor's error and fits in what is left.
        var current = hulls.indices.map { hulls[$0][position[$0]] }
        while true {
            var best: (item: Int, candidate: AllocationItem.Candidate, ratio: Double)? = nil
            for i in options.indices {
                for c in options[i] where c.error < current[i].error && spent - current[i].bytes + c.bytes <= budget {
                    let extra = c.bytes - current[i].bytes
                    // A swap that saves bytes and error is always taken first.
                    let ratio = extra <= 0 ? Double.infinity : (current[i].error - c.error) / Double(extra)
                    if best == nil || ratio > best!.ratio { best = (i, c, ratio) }
                }
            }
            guard let (i, c, _) = best else { break }
            spent += c.bytes - current[i].bytes
            current[i] = c
        }
        return Allocation(choices: current.map(\.choice), bytes: spent, error: current.reduce(0) { $0 + $1.error })
    }

    /// The candidates on the lower convex hull of (bytes, error), cheapest first, each strictly
    /// better than the one before. `sorted` is ordered by bytes, then error.
    static func lowerHull(_ sorted: [AllocationItem.Candidate]) -> [AllocationItem.Candidate] {
        var hull: [AllocationItem.Candidate] = []
        for c in sorted {
            // Same bytes as the last point: the first (lowest error) one is kept.
            if let last = hull.last, c.bytes == last.bytes || c.error >= last.error { continue }
            // Drop the last point while it lies on or above the segment from its predecessor to c.
            while hull.count >= 2 {
                let a = hull[hull.count - 2], b = hull[hull.count - 1]
                let cross = Double(b.bytes - a.bytes) * (c.error - a.error) - (b.error - a.error) * Double(c.bytes - a.bytes)
                if cross <= 0 { hull.removeLast() } else { break }
            }
            hull.append(c)
        }
        return hull
    }
}
