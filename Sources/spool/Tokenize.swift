import ArgumentParser
import Foundation
import SpoolRuntime

struct Tokenize: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the token ids of a text, like llama-tokenize.")

    @Option(name: [.customShort("m"), .long], help: "Model file (.gguf or .spool).")
    var model: String

    @Flag(help: "Print a JSON array of ids.")
    var json = false

    @Flag(name: .customLong("no-special"), help: "Do not parse special-token text such as <|im_start|>.")
    var noSpecial = false

    @Flag(name: .customLong("add-special"), help: "Add BOS/EOS as the model's metadata asks.")
    var addSpecial = false

    @Argument(help: "The text to tokenize.")
    var text: String

    func run() async throws {
        let engine = try Engine(path: model, options: EngineOptions(threads: 1))
        let ids = engine.tokenizer.encode(text, addSpecial: addSpecial, parseSpecial: !noSpecial)
        if json {
            print("[" + ids.map(String.init).joined(separator: ", ") + "]")
        } else {
            for id in ids {
                let piece = engine.tokenizer.decode([id], renderSpecial: true)
                print("\(String(id).leftPad(6)) -> '\(piece)'")
            }
        }
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}
