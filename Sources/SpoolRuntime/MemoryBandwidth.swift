import SpoolKernels

/// Streaming-read bandwidth: the pool's threads sum disjoint slices of a buffer much larger than
/// the caches, so every byte comes from DRAM. This is the roofline decode is compared with (decode
/// reads every weight byte once per token).
public struct MemoryBandwidth: Codable, Sendable {
    public var bufferBytes: Int
    public var threads: Int
    /// Median over the repetitions.
    public var bytesPerSecond: Double
    public var samplesBytesPerSecond: [Double]

    /// Measures with a buffer of `bytes` (rounded down to whole 64 KiB slices).
    public static func measure(pool: ThreadPool, bytes: Int, repetitions: Int) -> MemoryBandwidth {
        let slice = 64 * 1024
        let slices = max(1, bytes / slice)
        let floatsPerSlice = slice / MemoryLayout<Float>.size
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: slices * slice, alignment: 64)
            .bindMemory(to: Float.self, capacity: slices * floatsPerSlice)
        defer { buffer.deallocate() }
        // Touch every page first (and on the threads that will read it, where first-touch matters).
        pool.parallelRanges(slices) { r in
            (buffer + r.lowerBound * floatsPerSlice).initialize(repeating: 1, count: r.count * floatsPerSlice)
        }
        let sums = UnsafeMutablePointer<Float>.allocate(capacity: slices)
        defer { sums.deallocate() }
        var samples: [Double] = []
        for _ in 0..<max(1, repetitions) {
            let t0 = ContinuousClock.now
            pool.parallelRanges(slices) { r in
                for s in r { sums[s] = sumSlice(buffer + s * floatsPerSlice, count: floatsPerSlice) }
            }
            let dt = Benchmark.seconds(ContinuousClock.now - t0)
            samples.append(dt > 0 ? Double(slices * slice) / dt : 0)
        }
        // The sums are read so the loads cannot be optimized away: every slice sums to its length.
        var check: Float = 0
        for s in 0..<slices { check += sums[s] }
        let valid = check == Float(slices) * Float(floatsPerSlice)
        let sorted = samples.sorted()
        return MemoryBandwidth(
            bufferBytes: slices * slice, threads: pool.threadCount,
            bytesPerSecond: valid ? sorted[sorted.count / 2] : 0, samplesBytesPerSecond: samples)
    }

    @inline(__always)
    static func sumSlice(_ p: UnsafePointer<Float>, count: Int) -> Float {
        typealias V = SIMD16<Float>
        var a0 = V.zero, a1 = V.zero, a2 = V.zero, a3 = V.zero
        var i = 0
        let raw = UnsafeRawPointer(p)
        while i + 64 <= count {
            a0 += raw.load(fromByteOffset: i * 4, as: V.self)
            a1 += raw.load(fromByteOffset: i * 4 + 64, as: V.self)
            a2 += raw.load(fromByteOffset: i * 4 + 128, as: V.self)
            a3 += raw.load(fromByteOffset: i * 4 + 192, as: V.self)
            i += 64
        }
        var s = ((a0 + a1) + (a2 + a3)).sum()
        while i < count { s += p[i]; i += 1 }
        return s
    }
}
