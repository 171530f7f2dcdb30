import ArgumentParser
import Foundation
import SpoolModel
import SpoolRuntime

/// Writes every intermediate tensor of one forward pass over a prompt to a folder, one raw
/// little-endian float32 file per stage named as llama.cpp names the tensor ("0003_Qcur-0.bin"),
/// like llama.cpp's eval-callback tool. Used to find where Spool's arithmetic departs from llama.cpp's.
struct DumpTensors: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump-tensors",
        abstract: "Write the intermediate tensors of one forward pass to a folder (for comparisons with llama.cpp).")

    @OptionGroup var modelOptions: ModelOptions

    @Option(name: [.customShort("p"), .long], help: "The prompt (special tokens are parsed).")
    var prompt: String

    @Option(name: .customLong("out"), help: "Folder to write into (created if missing).")
    var out: String

    func run() async throws {
        let engine = try Engine(path: modelOptions.model, options: modelOptions.engineOptions())
        guard let llama = engine.model as? LlamaModel else {
            throw ValidationError("dump-tensors supports Llama-family models only")
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let ids = engine.tokenizer.encode(prompt, addSpecial: true, parseSpecial: true)
        var sequence = 0
        var failure: Error?
        llama.tap = { name, values, count in
            let path = "\(out)/\(String(format: "%04d", sequence))_\(name).bin"
            sequence += 1
            do { try Data(bytes: values, count: count * 4).write(to: URL(fileURLWithPath: path)) } catch { failure = failure ?? error }
        }
        defer { llama.tap = nil }
        let cache = engine.makeCache(capacity: ids.count)
        _ = try engine.model.forward(ids, start: 0, cache: cache, logits: .all, pool: engine.pool)
        if let failure { throw failure }
        printErr("\(ids.count) tokens, \(sequence) tensors written to \(out)")
    }
}
