import ArgumentParser
import Foundation
import SpoolRuntime

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Prefill (pp) and decode (tg) speed with medians over repetitions, like llama-bench.")

    @OptionGroup var modelOptions: ModelOptions

    @Option(name: [.customShort("p"), .customLong("n-prompt")], help: "Prompt tokens of the prefill test (0 skips it).")
    var promptTokens = 512

    @Option(name: [.customShort("n"), .customLong("n-gen")], help: "Tokens of the decode test (0 skips it).")
    var generatedTokens = 128

    @Option(name: [.customShort("d"), .long], help: "Context tokens in the cache before the decode test (prefilled, untimed).")
    var depth = 0

    @Option(name: [.customShort("r"), .long], help: "Repetitions of each test.")
    var repetitions = 5

    @Option(name: .long, help: "Also measure streaming-read memory bandwidth with a buffer of this many MiB (0 skips it).")
    var bandwidth = 0

    @Flag(help: "Print the report as JSON on stdout.")
    var json = false

    func validate() throws {
        if depth < 0 { throw ValidationError("--depth must be >= 0") }
        if promptTokens < 0 || generatedTokens < 0 || promptTokens + generatedTokens == 0 {
            throw ValidationError("-p and -n must be >= 0 and not both 0")
        }
        if repetitions < 1 { throw ValidationError("--repetitions must be at least 1") }
        if bandwidth < 0 { throw ValidationError("--bandwidth must be >= 0") }
    }

    func run() async throws {
        let engine = try modelOptions.loadEngine()
        var options = BenchmarkOptions(promptTokens: promptTokens, generatedTokens: generatedTokens, repetitions: repetitions)
        options.bandwidthBytes = bandwidth * 1024 * 1024
        options.depth = depth
        let report = try Benchmark.run(engine: engine, options: options)
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            print(String(decoding: try enc.encode(report), as: UTF8.self))
            return
        }
        let mib = { (b: Int) in String(format: "%.1f MiB", Double(b) / 1048576) }
        print("model: \(report.model) (\(mib(report.modelFileBytes)) file, \(mib(report.weightBytes)) weights)")
        print("threads: \(report.threads), kernels: \(report.kernelLevel), repetitions: \(report.repetitions)")
        for (name, rate) in [("pp", report.prefill), ("tg", report.decode)] {
            guard let r = rate else { continue }
            let label = name == "tg" && depth > 0 ? "tg\(r.tokens)@d\(depth)" : "\(name)\(r.tokens)"
            print(label.padding(toLength: 12, withPad: " ", startingAt: 0)
                  + String(format: " %9.2f ± %.2f tok/s (median ± stddev)", r.medianTokensPerSecond, r.stddevTokensPerSecond))
        }
        print("peak RSS: \(mib(report.peakRSSBytes))")
        if let kv = report.kvBytesPerToken { print(String(format: "kv cache: %.0f bytes/token", kv)) }
        if let n = report.kvContext, let b = report.kvCacheBytes, let f = report.kvF16Bytes, f > 0 {
            print(String(format: "kv memory at context %d: %@ (%.4fx of an f16 cache, %@)", n, mib(b), Double(b) / Double(f), mib(f)))
        }
        if let s = report.streaming {
            print(String(format: "streaming (%@): %d blocks resident, %d streamed, %@ read per token, %.2f GB/s, waiting on I/O %.0f%% of the time",
                         s.backend, s.residentLayers, s.streamedLayers, mib(s.bytesReadPerToken), s.readBytesPerSecond / 1e9, s.ioWaitFraction * 100))
        }
        if let bw = report.memoryBandwidth {
            print(String(format: "read bandwidth: %.2f GB/s (%@ buffer, median)", bw.bytesPerSecond / 1e9, mib(bw.bufferBytes)))
        }
        if let f = report.decodeRooflineFraction {
            print(String(format: "decode roofline: %.1f%% (weights per token x tg tok/s / bandwidth)", f * 100))
        }
    }
}
