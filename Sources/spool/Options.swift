import ArgumentParser
import SpoolIO
import SpoolKV
import SpoolRuntime

struct ModelOptions: ParsableArguments {
    @Option(name: [.customShort("m"), .long], help: "Model file (.gguf or .spool).")
    var model: String

    @Option(name: [.short, .long], help: "Worker threads (default: all cores).")
    var threads: Int?

    @Option(name: [.customShort("c"), .customLong("ctx-size")], help: "Context length in tokens (default: 4096, capped by the model).")
    var contextSize: Int?

    @Option(name: .long, help: "Device profile: a name from profiles/ (workstation, numa-2socket, sbc-8gb, ci-2core) or a path. Flags override its values.")
    var profile: String?

    @Option(name: .customLong("mem-budget"), help: "Memory budget (e.g. 512M, 1.5G): transformer blocks that do not fit are streamed from disk for every token.")
    var memBudget: String?

    @Option(name: .customLong("io"), help: "I/O backend for streamed blocks: uring (default, falls back to pread), pread, mmap.")
    var io: IOBackend?

    @Option(name: .customLong("prefetch"), help: "Blocks read ahead of the one computing when streaming (default 2, or the profile's).")
    var prefetch: Int?

    @OptionGroup var kv: KVOptions

    func validate() throws {
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1") }
        if let c = contextSize, c < 1 { throw ValidationError("--ctx-size must be at least 1") }
        if let p = prefetch, p < 0 { throw ValidationError("--prefetch must be at least 0") }
        if let b = memBudget { do { _ = try ByteSize.parse(b) } catch { throw ValidationError("--mem-budget: \(error)") } }
    }

    /// The engine options: the profile's values, then the flags over them.
    func engineOptions() throws -> EngineOptions {
        let p = try profile.map { name throws in try DeviceProfile.find(name) }
        var options = EngineOptions(threads: threads ?? p?.threads, kv: kv.configuration(profile: p))
        let budget = try memBudget.map { try ByteSize.parse($0) } ?? p?.memoryBudgetBytes()
        if let budget {
            var s = StreamingOptions(memoryBudget: budget, backend: io ?? p?.ioBackend ?? .uring,
                                     prefetchDepth: prefetch ?? p?.io.prefetchDepth ?? 2)
            if let p { s.reader = try p.readerOptions() }
            s.contextLength = contextSize
            options.streaming = s
        } else if io != nil || prefetch != nil {
            throw ValidationError("--io and --prefetch apply to streaming: give --mem-budget or a --profile")
        }
        return options
    }

    func loadEngine() throws -> Engine {
        let engine = try Engine(path: model, options: engineOptions())
        if let why = engine.streamedLayers?.fallbackReason { printErr(why) }
        return engine
    }
}

/// How the KV cache stores keys and values.
struct KVOptions: ParsableArguments {
    @Option(name: .customLong("kv-bits"), help: "KV cache storage: 32 (f32), 16 (f16, llama.cpp's default), or 8, 4, 2 (KIVI).")
    var bits: Int?
    @Option(name: .customLong("kv-group"), help: "KIVI group size: tokens per key group, channels per value group (default \(KVCacheConfiguration().group), or the profile's).")
    var group: Int?
    @Option(name: .customLong("kv-residual"), help: "KIVI residual window: newest tokens kept in f16, at least the group size (default \(KVCacheConfiguration().residual), or the profile's).")
    var residual: Int?
    @Option(name: .customLong("kv-sink"), help: "KIVI attention sinks: first tokens of the context kept in f16.")
    var sink = KVCacheConfiguration().sink
    @Option(name: .customLong("kv-value-bits"), help: "KIVI value bits when they differ from --kv-bits (2, 4 or 8).")
    var valueBits: Int?
    @Option(name: .customLong("kv-key-rope"), help: "KIVI: quantize keys before or after RoPE (auto: before at 2 bits, after at 4 and 8).")
    var keyRoPE: KeyRoPE = .auto
    @Option(name: .customLong("kv-value-group"), help: "KIVI channels per value group when they differ from --kv-group.")
    var valueGroup: Int?
    @Option(name: .customLong("kv-clip"), help: "KIVI key rounding: clipping steps searched at each end of a group's range (0: min-max).")
    var keyClip: Int?
    @Option(name: .customLong("kv-key-outliers"), help: "KIVI pre-RoPE keys: widest rotary pairs per head and group stored at 4 bits.")
    var keyOutliers: Int?
    @Option(name: .customLong("kv-key-dropped"), help: "KIVI pre-RoPE keys: narrowest rotary pairs per head and group kept as their midpoint only.")
    var keyDropped: Int?
    @Option(name: .customLong("kv-value-clip"), help: "KIVI value rounding: the same for value groups.")
    var valueClip: Int?
    @Option(name: .customLong("kv-layer-bits"), help: "Per-layer KV storage overriding --kv-bits, e.g. 0-1:4,29:16.")
    var layerBits: String?
    @Flag(name: .customLong("kv-value-hadamard"), inversion: .prefixedNo,
          help: "KIVI: Hadamard-rotate each head's values before quantizing (default: on at 2-bit values).")
    var valueHadamard: Bool? = nil
    @Flag(name: .customLong("kv-compact-grids"), inversion: .prefixedNo,
          help: "KIVI: store each group's range as two bytes under a shared f16 bound (default: on at 2 bits).")
    var compactGrids: Bool? = nil
    @Flag(name: .customLong("kv-query-weighted-pairs"), inversion: .prefixedNo,
          help: "KIVI pre-RoPE keys: choose the 4-bit and dropped rotary pairs by width times the energy of the queries seen so far (default: on).")
    var queryWeightedPairs: Bool? = nil

    enum KeyRoPE: String, ExpressibleByArgument, CaseIterable { case auto, before, after }

    /// The flags' configuration; a profile's KV bits, group and window apply where the flags are not given.
    func configuration(profile: DeviceProfile? = nil) -> KVCacheConfiguration {
        let d = KVCacheConfiguration()
        var c = KVCacheConfiguration(bits: bits ?? profile?.kvBits ?? d.bits, group: group ?? profile?.kvGroup ?? d.group,
                                     residual: residual ?? profile?.kvResidual ?? d.residual, sink: sink, valueBits: valueBits)
        c.keysBeforeRoPE = keyRoPE == .auto ? nil : keyRoPE == .before
        c.valueGroup = valueGroup
        c.keyClip = keyClip
        c.valueClip = valueClip
        c.keyOutlierPairs = keyOutliers
        c.keyDroppedPairs = keyDropped
        c.valueHadamard = valueHadamard
        c.compactGrids = compactGrids
        c.queryWeightedPairs = queryWeightedPairs
        c.layerBits = layerBits.flatMap { try? KVCacheConfiguration.parseLayerBits($0) }
        return c
    }

    func validate() throws {
        if let bits, !KVCacheConfiguration.supportedBits.contains(bits) {
            throw ValidationError(KVConfigurationError.unsupportedBits(bits).description)
        }
        if let layerBits {
            do { _ = try KVCacheConfiguration.parseLayerBits(layerBits) } catch { throw ValidationError(error.description) }
        }
    }
}

extension IOBackend: ExpressibleByArgument {}

struct SamplingOptions: ParsableArguments {
    @Option(name: .long, help: "Temperature; 0 is greedy.")
    var temperature: Float = 0.8
    @Option(name: .customLong("top-k"), help: "Top-k (0 disables).")
    var topK: Int = 40
    @Option(name: .customLong("top-p"), help: "Top-p (1 disables).")
    var topP: Float = 0.95
    @Option(name: .customLong("min-p"), help: "Min-p (0 disables).")
    var minP: Float = 0.05
    @Option(name: .customLong("repeat-penalty"), help: "Repetition penalty (1 disables).")
    var repeatPenalty: Float = 1.0
    @Option(name: .customLong("repeat-last-n"), help: "Tokens the repetition penalty looks back over.")
    var repeatLastN: Int = 64
    @Option(name: .long, help: "Random seed (default: from the clock).")
    var seed: UInt64?

    var parameters: SamplingParameters {
        var p = SamplingParameters()
        p.temperature = temperature
        p.topK = topK
        p.topP = topP
        p.minP = minP
        p.repeatPenalty = repeatPenalty
        p.repeatLastN = repeatLastN
        p.seed = seed
        return p
    }

    func validate() throws {
        do { try parameters.validate() } catch { throw ValidationError(error.description) }
    }
}
