import ArgumentParser
import Foundation

@main
struct Spool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spool",
        abstract: "Run large language models on machines too small to hold them.",
        subcommands: [Generate.self, Tokenize.self, PerplexityCommand.self, Inspect.self, Chat.self, Serve.self, Bench.self, DumpTensors.self]
    )
}

/// Where diagnostics go: stdout is reserved for the generated text.
func printErr(_ s: String, terminator: String = "\n") {
    FileHandle.standardError.write(Data((s + terminator).utf8))
}
