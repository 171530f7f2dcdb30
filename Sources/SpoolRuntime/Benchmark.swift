import Foundation
import SpoolKernels
import SpoolModel
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What `Benchmark.run` measures, as llama-bench does: `pp` prompt tokens in one batch from an empty
/// cache (prefill), and `tg` tokens decoded one at a time from an empty cache (decode), each
/// repeated `repetitions` times after one warm-up run.
public struct BenchmarkOptions: Sendable {
    public var promptTokens = 512
    public var generatedTokens = 128
    public var repetitions = 5
    /// Seed of the random token ids (llama-bench also feeds random tokens).
    public var seed: UInt64 = 1234
    /// Buffer size of a streaming-read bandwidth measurement; 0 skips it.
    public var bandwidthBytes = 0
    /// Context tokens already in the cache when the decode test starts (llama-bench's -d): each
    /// repetition first prefills this many random tokens, untimed.
    public var depth = 0

    public init(promptTokens: Int = 512, generatedTokens: Int = 128, repetitions: Int = 5) {
        self.promptTokens = promptTokens
        self.generatedTokens = generatedTokens
        self.repetitions = repetitions
    }
}

public enum BenchmarkError: Error, CustomStringConvertible {
    case invalidOptions(String)

    public var description: String {
        switch self {
        case let .invalidOptions(why): return "invalid benchmark options: \(why)"
        }
    }
}

/// Tokens per second over repetitions of one test.
public struct BenchmarkRate: Codable, Sendable {
    /// Tokens processed per repetition.
    public var tokens: Int
    public var samplesTokensPerSecond: [Double]
    public var medianTokensPerSecond: Double
    public var meanTokensPerSecond: Double
    /// Sample standard deviation (n - 1), as llama-bench reports it; 0 for one sample.
    public var stddevTokensPerSecond: Double

    public init(tokens: Int, seconds: [Double]) {
        self.tokens = tokens
        samplesTokensPerSecond = seconds.map { $0 > 0 ? Double(tokens) / $0 : 0 }
        let s = samplesTokensPerSecond.sorted()
        let n = s.count
        medianTokensPerSecond = n == 0 ? 0 : (n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2)
        meanTokensPerSecond = n == 0 ? 0 : s.reduce(0, +) / Double(n)
        let mean = meanTokensPerSecond
        stddevTokensPerSecond = n < 2 ? 0 : (s.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(n - 1)).squareRoot()
    }
}

/// The result of `spool bench`. Other measurements (KV bytes per token, streaming) are meant to be
/// added as optional fields, so readers of older JSON keep working.
public struct BenchmarkReport: Codable, Sendable {
    public var model: String
    /// Size of the model file.
    public var modelFileBytes: Int
    /// Bytes of weights the forward pass reads (`LanguageModel.weightBytes`).
    public var weightBytes: Int
    public var threads: Int
    public var kernelLevel: String
    /// pp<promptTokens>; nil when promptTokens is 0.
    public var prefill: BenchmarkRate?
    /// tg<generatedTokens>; nil when generatedTokens is 0.
    public var decode: BenchmarkRate?
    /// Peak resident set size of the process (VmHWM), after the runs.
    public var peakRSSBytes: Int
    public var repetitions: Int
    /// Streaming-read bandwidth of the same threads (only with `bandwidthBytes` > 0).
    public var memoryBandwidth: MemoryBandwidth?
    /// Bytes decode reads per token (weights) times decode tok/s, over the measured bandwidth.
    public var decodeRooflineFraction: Double?
    /// KV cache bytes per token of context, as the engine's cache stores them.
    public var kvBytesPerToken: Double?
    /// Context the benchmark's cache was made for (max of prompt tokens and depth + decode tokens).
    public var kvContext: Int?
    /// Bytes the cache allocates for `kvContext` tokens after the runs (every table, window and
    /// scratch row it keeps between passes), and an f16 cache's bytes for the same context.
    public var kvCacheBytes: Int?
    public var kvF16Bytes: Int?
    /// With a memory budget: what streams and how fast.
    public var streaming: StreamingReport?
}

/// Streaming figures of a benchmark run (`--mem-budget` or a profile).
public struct StreamingReport: Codable, Sendable {
    public var backend: String
    public var fallbackReason: String?
    public var residentLayers: Int
    public var streamedLayers: Int
    /// Bytes read from disk per decoded token (the streamed blocks' aligned extents).
    public var bytesReadPerToken: Int
    /// Bytes read over the time the reads were in flight, whole run.
    public var readBytesPerSecond: Double
    /// Fraction of the run's wall time the forward pass waited for a block to arrive.
    public var ioWaitFraction: Double
}

public enum Benchmark {
    /// Runs the tests of `options` on `engine` and reports the rates.
    public static func run(engine: Engine, options: BenchmarkOptions) throws -> BenchmarkReport {
        guard options.promptTokens >= 0, options.generatedTokens >= 0, options.promptTokens + options.generatedTokens > 0 else {
            throw BenchmarkError.invalidOptions("prompt and generated token counts must be >= 0 and not both 0")
        }
        guard options.repetitions >= 1 else { throw BenchmarkError.invalidOptions("repetitions must be at least 1") }
        let model = engine.model
        guard options.depth >= 0 else { throw BenchmarkError.invalidOptions("depth must be >= 0") }
        let needed = max(options.promptTokens, options.depth + options.generatedTokens)
        guard needed <= model.configuration.contextLength else {
            throw BenchmarkError.invalidOptions("\(needed) tokens exceed the model's context of \(model.configuration.contextLength)")
        }
        let cache = engine.makeCache(capacity: needed)
        let started = ContinuousClock.now
        var rng = options.seed
        let vocab = UInt64(model.configuration.vocabSize)
        func randomTokens(_ n: Int) -> [Int32] {
            (0..<n).map { _ in
                rng = rng &* 6364136223846793005 &+ 1442695040888963407
                return Int32((rng >> 33) % vocab)
            }
        }

        func timePrefill() throws -> Double {
            let tokens = randomTokens(options.promptTokens)
            cache.truncate(to: 0)
            let t0 = ContinuousClock.now
            _ = try model.forward(tokens, start: 0, cache: cache, logits: .last, pool: engine.pool)
            return seconds(ContinuousClock.now - t0)
        }
        func timeDecode(_ n: Int) throws -> Double {
            let tokens = randomTokens(n)
            cache.truncate(to: 0)
            if options.depth > 0 {
                _ = try model.forward(randomTokens(options.depth), start: 0, cache: cache, logits: .last, pool: engine.pool)
            }
            let t0 = ContinuousClock.now
            for (i, t) in tokens.enumerated() {
                _ = try model.forward([t], start: options.depth + i, cache: cache, logits: .last, pool: engine.pool)
            }
            return seconds(ContinuousClock.now - t0)
        }

        var prefill: BenchmarkRate?
        if options.promptTokens > 0 {
            _ = try timePrefill()   // warm-up: page in the weights, size the buffers
            prefill = BenchmarkRate(tokens: options.promptTokens, seconds: try (0..<options.repetitions).map { _ in try timePrefill() })
        }
        var decode: BenchmarkRate?
        if options.generatedTokens > 0 {
            _ = try timeDecode(min(8, options.generatedTokens))
            decode = BenchmarkRate(
                tokens: options.generatedTokens,
                seconds: try (0..<options.repetitions).map { _ in try timeDecode(options.generatedTokens) })
        }
        let fileBytes = (try? FileManager.default.attributesOfItem(atPath: engine.path)[.size] as? Int) ?? 0
        var report = BenchmarkReport(
            model: engine.path, modelFileBytes: fileBytes, weightBytes: model.weightBytes,
            threads: engine.pool.threadCount, kernelLevel: KernelLevel.selected.rawValue,
            prefill: prefill, decode: decode, peakRSSBytes: peakRSSBytes(), repetitions: options.repetitions)
        report.kvBytesPerToken = cache.bytesPerToken
        report.kvContext = needed
        report.kvCacheBytes = cache.allocatedBytes
        report.kvF16Bytes = cache.geometry.layers * 2 * cache.geometry.kvDim * 2 * needed
        if let layers = engine.streamedLayers {
            let stats = layers.stats
            let elapsed = ContinuousClock.now - started
            let ns = UInt64(elapsed.components.seconds) * 1_000_000_000 + UInt64(elapsed.components.attoseconds / 1_000_000_000)
            report.streaming = StreamingReport(
                backend: layers.backend.rawValue, fallbackReason: layers.fallbackReason,
                residentLayers: layers.plan.resident.count, streamedLayers: layers.plan.streamed.count,
                bytesReadPerToken: layers.plan.streamedBytesPerToken, readBytesPerSecond: stats.achievedBandwidth,
                ioWaitFraction: stats.waitFraction(elapsedNanoseconds: ns))
        }
        if options.bandwidthBytes > 0 {
            // After the peak RSS reading: the probe buffer is not part of the model's footprint.
            let bw = MemoryBandwidth.measure(pool: engine.pool, bytes: options.bandwidthBytes, repetitions: options.repetitions)
            report.memoryBandwidth = bw
            if let d = decode, bw.bytesPerSecond > 0 {
                report.decodeRooflineFraction = d.medianTokensPerSecond * Double(model.weightBytes) / bw.bytesPerSecond
            }
        }
        return report
    }

    static func seconds(_ d: Duration) -> Double {
        let c = d.components
        return Double(c.seconds) + Double(c.attoseconds) * 1e-18
    }

    /// VmHWM from /proc/self/status where there is one, else getrusage's maximum RSS.
    public static func peakRSSBytes() -> Int {
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) {
            for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
                let fields = line.split(separator: " ")
                if fields.count >= 2, let kb = Int(fields[1]) { return kb * 1024 }
            }
        }
        var usage = rusage()
        #if canImport(Darwin)
        guard getrusage(RUSAGE_SELF, &usage) == 0 else { return 0 }
        return Int(usage.ru_maxrss)          // bytes on Darwin
        #else
        guard getrusage(RUSAGE_SELF.rawValue, &usage) == 0 else { return 0 }
        return Int(usage.ru_maxrss) * 1024   // kilobytes on Linux
        #endif
    }
}
