import ArgumentParser
import SpoolRuntime

struct ModelOptions: ParsableArguments {
    @Option(name: [.customShort("m"), .long], help: "Model file (.gguf or .spool).")
    var model: String

    @Option(name: [.short, .long], help: "Worker threads (default: all cores).")
    var threads: Int?

    @Option(name: [.customShort("c"), .customLong("ctx-size")], help: "Context length in tokens (default: 4096, capped by the model).")
    var contextSize: Int?

    func validate() throws {
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1") }
        if let c = contextSize, c < 1 { throw ValidationError("--ctx-size must be at least 1") }
    }

    func loadEngine() throws -> Engine {
        try Engine(path: model, options: EngineOptions(threads: threads))
    }
}

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
