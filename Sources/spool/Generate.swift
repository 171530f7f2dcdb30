import ArgumentParser
import Foundation
import SpoolKV
import SpoolRuntime

struct Generate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Continue a prompt; the text streams to stdout, timings to stderr.")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var sampling: SamplingOptions

    @Option(name: [.short, .long], help: "The prompt. Special tokens such as <|im_start|> are parsed unless --no-special.")
    var prompt: String

    @Option(name: [.customShort("n"), .customLong("n-predict")], help: "Tokens to generate.")
    var nPredict: Int = 128

    @Flag(name: .customLong("no-special"), help: "Treat special-token text in the prompt as plain text.")
    var noSpecial = false

    @Option(name: .long, help: "Stop when this text appears (repeatable).")
    var stop: [String] = []

    func validate() throws {
        if nPredict < 0 { throw ValidationError("-n must be >= 0") }
    }

    func run() async throws {
        let engine = try modelOptions.loadEngine()
        let session = engine.makeSession(contextLength: modelOptions.contextSize)
        let ids = engine.tokenizer.encode(prompt, addSpecial: true, parseSpecial: !noSpecial)
        let out = FileHandle.standardOutput
        let result = try session.generate(prompt: ids, maxTokens: nPredict, sampling: sampling.parameters, stop: stop) { piece in
            out.write(Data(piece.utf8))
            return true
        }
        out.write(Data("\n".utf8))
        let s = result.stats
        printErr(String(format: "load: %.2f s | prefill: %d tokens, %.1f tok/s | decode: %d tokens, %.1f tok/s | finish: %@",
                        engine.loadSeconds, s.promptTokens - s.reusedTokens, s.prefillTokensPerSecond,
                        s.generatedTokens, s.decodeTokensPerSecond, result.finishReason.rawValue))
        printErr(String(format: "kv: %d bits, %.0f bytes/token, %.2f MiB for %d tokens", engine.options.kv.bits,
                        session.cache.bytesPerToken, Double(session.cache.allocatedBytes) / 1_048_576, session.contextLength))
    }
}
