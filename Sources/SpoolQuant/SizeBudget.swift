import SpoolFormat

/// Widths chosen for a whole-file size budget.
public struct BudgetAllocation: Sendable {
    /// Full tensor name -> width, for `PackOptions.perTensor`.
    public var perTensor: [String: QuantChoice]
    /// The exact length of the file these widths give.
    public var fileSize: Int
    /// Summed estimated error (the allocator's objective).
    public var error: Double
}

public enum BudgetError: Error, CustomStringConvertible {
    case tooSmall(budget: Int, minimum: Int)

    public var description: String {
        switch self {
        case let .tooSmall(b, m):
            return "a size of \(b) bytes cannot be met: with every layer matrix at its narrowest width the file is \(m) bytes"
        }
    }
}

extension Packer {
    /// The length of the .spool file this packer would write under `header`.
    public func plannedFileSize(header: SpoolHeader) throws -> Int {
        try SpoolWriter.fileSize(header: recordingRotation(header), plan: plan())
    }

    /// Chooses each layer matrix's width from `choices` so the whole file (header, embedding,
    /// norms and padding included, at the widths `options` gives them) fits in `maxSize` bytes.
    ///
    /// The allocator works on tensor bytes; extents round up to 4 KiB, so the budget it gets is
    /// the file's room minus one such rounding per extent, and the result is checked against the
    /// exact layout (and the budget lowered by any overshoot, which the slack makes unlikely).
    public func allocate(_ table: SensitivityTable, choices: [QuantChoice], maxSize: Int, header: SpoolHeader) throws -> BudgetAllocation {
        let items = try table.items(choices: choices)
        func withWidths(_ widths: [String: QuantChoice]) throws -> Packer {
            var o = options
            o.perTensor = widths
            return try Packer(gguf: gguf, options: o, pool: pool, log: log)
        }
        // The file with every matrix at its cheapest width: what is not layer matrices is fixed.
        var cheapest: [String: QuantChoice] = [:]
        var cheapestBytes = 0
        for item in items {
            let c = item.candidates.min { ($0.bytes, $0.error) < ($1.bytes, $1.error) }!
            cheapest[item.name] = c.choice
            cheapestBytes += c.bytes
        }
        let minimum = try withWidths(cheapest).plannedFileSize(header: header)
        guard minimum <= maxSize else { throw BudgetError.tooSmall(budget: maxSize, minimum: minimum) }
        let fixed = minimum - cheapestBytes
        let slack = SpoolFile.extentAlignment * (configuration.layers + 3)
        var budget = maxSize - fixed - slack
        for _ in 0..<4 {
            let a = try BitAllocator.allocate(items, budget: max(budget, cheapestBytes))
            var widths: [String: QuantChoice] = [:]
            for (item, choice) in zip(items, a.choices) { widths[item.name] = choice }
            let size = try withWidths(widths).plannedFileSize(header: header)
            if size <= maxSize { return BudgetAllocation(perTensor: widths, fileSize: size, error: a.error) }
            budget -= size - maxSize
        }
        throw BudgetError.tooSmall(budget: maxSize, minimum: minimum)
    }

    /// One line per block ("blk.0   attn_q 4/32 attn_k 3/64 ..."), then how many matrices got each width.
    public static func describe(_ widths: [String: QuantChoice], layers: Int) -> [String] {
        var lines: [String] = []
        var counts: [QuantChoice: Int] = [:]
        for li in 0..<layers {
            var line = String(format: "blk.%-2d ", li)
            for stem in matrixStems {
                guard let c = widths["blk.\(li).\(stem).weight"] else { continue }
                line += " \(stem) \(c)"
                counts[c, default: 0] += 1
            }
            lines.append(line)
        }
        lines.append("matrices per width: " + counts.keys.sorted().map { "\($0): \(counts[$0]!)" }.joined(separator: ", "))
        return lines
    }
}
