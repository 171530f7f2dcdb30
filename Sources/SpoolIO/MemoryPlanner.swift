/// Decides, under a memory budget, which transformer layers stay resident and which stream.
///
/// Memory is: the fixed parts (embeddings, norms, LM head, KV cache, scratch; always resident),
/// the resident layers, and, if any layer streams, a ring of `prefetchDepth + 1` buffers each as
/// large as the largest streamed layer (one being computed on, d in flight). The smallest workable
/// budget is therefore fixed + (d + 1) × largest layer, with every layer streaming.
public struct MemoryPlanner {
    public struct Input: Sendable {
        /// Named always-resident parts and their bytes, e.g. ("embeddings", 94_000_000).
        public var fixed: [(name: String, bytes: Int)]
        /// Buffer bytes each layer needs (its aligned extent sizes).
        public var layerBytes: [Int]
        public var budget: Int
        public var prefetchDepth: Int

        public init(fixed: [(name: String, bytes: Int)], layerBytes: [Int], budget: Int, prefetchDepth: Int) {
            self.fixed = fixed
            self.layerBytes = layerBytes
            self.budget = budget
            self.prefetchDepth = prefetchDepth
        }
    }

    public struct Plan: Sendable, Equatable {
        public var resident: [Int]
        public var streamed: [Int]
        public var ringSlots: Int
        public var slotBytes: Int
        public var fixedBytes: Int
        public var residentLayerBytes: Int
        /// Bytes read from disk per pass over the model (per decoded token).
        public var streamedBytesPerToken: Int
        public var totalBytes: Int { fixedBytes + residentLayerBytes + ringSlots * slotBytes }
        public var streams: Bool { !streamed.isEmpty }
    }

    public enum PlanError: Error, CustomStringConvertible, Equatable {
        case budgetTooSmall(budget: Int, minimum: Int, breakdown: String)
        case invalid(String)

        public var description: String {
            switch self {
            case let .budgetTooSmall(budget, minimum, breakdown):
                return "memory budget \(ByteSize.format(budget)) is too small to run this model: the minimum is "
                    + "\(ByteSize.format(minimum)) (\(minimum) bytes: \(breakdown))"
            case let .invalid(what): return "invalid memory plan input: \(what)"
            }
        }
    }

    public static func plan(_ input: Input) throws(PlanError) -> Plan {
        let d = input.prefetchDepth
        guard d >= 0 else { throw .invalid("prefetch depth \(d)") }
        guard input.budget >= 0 else { throw .invalid("budget \(input.budget)") }
        for f in input.fixed where f.bytes < 0 { throw .invalid("\(f.name) has \(f.bytes) bytes") }
        for (i, b) in input.layerBytes.enumerated() where b <= 0 { throw .invalid("layer \(i) has \(b) bytes") }
        let fixed = input.fixed.reduce(0) { $0 + $1.bytes }
        let layers = input.layerBytes
        let n = layers.count

        // Everything resident needs no ring at all.
        let all = layers.reduce(0, +)
        if fixed + all <= input.budget {
            return Plan(resident: Array(0..<n), streamed: [], ringSlots: 0, slotBytes: 0, fixedBytes: fixed,
                        residentLayerBytes: all, streamedBytesPerToken: 0)
        }
        // Otherwise keep as many as fit beside the ring, largest first (each resident byte is one
        // byte less to read per token). Among equal sizes, spread the resident ones evenly through
        // the model, so the disk keeps working while resident layers compute.
        let order = residencyOrder(layers)
        for k in stride(from: n - 1, through: 0, by: -1) {
            let keep = Set(order.prefix(k))
            let streamed = (0..<n).filter { !keep.contains($0) }
            let slotBytes = streamed.map { layers[$0] }.max()!
            let slots = min(d + 1, streamed.count)
            let residentBytes = keep.reduce(0) { $0 + layers[$1] }
            if fixed + residentBytes + slots * slotBytes <= input.budget {
                return Plan(resident: keep.sorted(), streamed: streamed, ringSlots: slots, slotBytes: slotBytes,
                            fixedBytes: fixed, residentLayerBytes: residentBytes,
                            streamedBytesPerToken: streamed.reduce(0) { $0 + layers[$1] })
            }
        }
        let largest = layers.max() ?? 0
        let minimum = fixed + min(d + 1, n) * largest
        var parts = input.fixed.map { "\($0.name) \(ByteSize.format($0.bytes))" }
        parts.append("\(min(d + 1, n)) layer buffers of \(ByteSize.format(largest)) for prefetch depth \(d)")
        throw .budgetTooSmall(budget: input.budget, minimum: minimum, breakdown: parts.joined(separator: " + "))
    }

    /// Layer indices in the order they should be made resident.
    static func residencyOrder(_ layers: [Int]) -> [Int] {
        let n = layers.count
        // Even spread: bit-reversal-like order by repeatedly halving gaps (0, n/2, n/4, 3n/4, ...).
        var spread: [Int] = []
        var seen = Set<Int>()
        var step = n
        while spread.count < n && step >= 1 {
            var i = 0
            while i < n {
                if seen.insert(i).inserted { spread.append(i) }
                i += step
            }
            step /= 2
        }
        for i in 0..<n where !seen.contains(i) { spread.append(i) }
        let rank = Dictionary(uniqueKeysWithValues: spread.enumerated().map { ($1, $0) })
        return (0..<n).sorted { a, b in
            layers[a] != layers[b] ? layers[a] > layers[b] : rank[a]! < rank[b]!
        }
    }
}
