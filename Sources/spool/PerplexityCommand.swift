import ArgumentParser
import Foundation
import SpoolRuntime

struct PerplexityCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perplexity",
        abstract: "Perplexity of a text file with llama.cpp's protocol (score the second half of each chunk).")

    @Option(name: [.customShort("m"), .long], help: "Model file (.gguf or .spool).")
    var model: String

    @Option(name: [.short, .long], help: "Worker threads (default: all cores).")
    var threads: Int?

    @Option(name: [.customShort("f"), .long], help: "Text file.")
    var file: String

    @Option(name: [.customShort("c"), .customLong("ctx-size")], help: "Tokens per chunk.")
    var contextSize: Int = 512

    @Option(name: .long, help: "Chunks to score (default: all).")
    var chunks: Int?

    @OptionGroup var kv: KVOptions

    @Flag(help: "Print the result as JSON on stdout.")
    var json = false

    func validate() throws {
        if let c = chunks, c < 1 { throw ValidationError("--chunks must be at least 1") }
        if contextSize < 8 || contextSize % 2 != 0 { throw ValidationError("--ctx-size must be even and at least 8") }
    }

    func run() async throws {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw ValidationError("cannot read \(file)")
        }
        let text = String(decoding: data, as: UTF8.self)
        let engine = try Engine(path: model, options: EngineOptions(threads: threads, kv: kv.configuration()))
        let result = try Perplexity.run(engine: engine, text: text, context: contextSize, maxChunks: chunks) { done, total, ppl in
            printErr(String(format: "[%d/%d] %.4f", done, total, ppl))
        }
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            print(String(decoding: try enc.encode(result), as: UTF8.self))
        } else {
            print(String(format: "perplexity: %.4f +/- %.4f over %d chunks of %d tokens (%d scored) in %.1f s",
                         result.perplexity, result.perplexityError, result.chunks, contextSize, result.tokens, result.seconds))
        }
    }
}
