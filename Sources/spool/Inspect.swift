import ArgumentParser
import Foundation
import SpoolFormat

struct Inspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a model file's metadata and tensor layout.")

    @Argument(help: "Model file (.gguf or .spool).")
    var file: String

    @Flag(help: "List every tensor.")
    var tensors = false

    func run() async throws {
        if SpoolFile.hasMagic(path: file) { return try InspectSpool.run(path: file, listTensors: tensors) }
        let gguf = try GGUFFile(path: file)
        print("GGUF v\(gguf.version), \(gguf.metadata.count) metadata keys, \(gguf.tensors.count) tensors, alignment \(gguf.alignment), data at \(gguf.dataOffset)")
        for key in gguf.metadataKeys {
            guard let v = gguf.metadata[key] else { continue }
            let shown: String
            switch v {
            case let .array(t, items): shown = "[\(t) x \(items.count)]"
            case let .string(s): shown = s.count > 80 ? String(s.prefix(77)).debugDescription + "..." : s.debugDescription
            default: shown = "\(v)"
            }
            print("  \(key) = \(shown)")
        }
        var byType: [String: (Int, Int)] = [:]
        for t in gguf.tensors {
            let e = byType[t.type.description, default: (0, 0)]
            byType[t.type.description] = (e.0 + 1, e.1 + t.byteCount)
            if tensors { print("  \(t.name) \(t.shape) \(t.type) @\(t.offset) \(t.byteCount) B") }
        }
        for (type, (n, bytes)) in byType.sorted(by: { $0.key < $1.key }) {
            print(String(format: "  %@: %d tensors, %.2f MiB", type, n, Double(bytes) / 1048576))
        }
    }
}
