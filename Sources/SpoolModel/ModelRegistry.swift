import SpoolFormat

/// Maps a GGUF `general.architecture` to the code that builds the model.
public enum ModelRegistry {
    static let loaders: [String: @Sendable (GGUFFile) throws(ModelError) -> LanguageModel] = [
        "llama": { gguf throws(ModelError) in try LlamaModel(gguf: gguf) },
    ]

    public static var architectures: [String] { Array(loaders.keys) }

    public static func load(gguf: GGUFFile) throws(ModelError) -> LanguageModel {
        let arch: String
        do {
            arch = try gguf.require("general.architecture", gguf.string)
        } catch {
            throw .format(error)
        }
        guard let loader = loaders[arch] else { throw .unsupportedArchitecture(arch) }
        return try loader(gguf)
    }

    /// Builds the model stored in a .spool file.
    public static func load(spool: SpoolFile) throws(ModelError) -> LanguageModel {
        let arch = spool.header.architecture
        guard arch == "llama" else { throw .unsupportedArchitecture(arch) }
        return try LlamaModel(spool: spool)
    }
}
