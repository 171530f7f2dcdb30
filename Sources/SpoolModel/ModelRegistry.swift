import SpoolFormat

/// Maps a GGUF `general.architecture` to the code that builds the model.
public enum ModelRegistry {
    static let loaders: [String: @Sendable (GGUFFile, Bool) throws(ModelError) -> LanguageModel] = [
        "llama": { gguf, resident throws(ModelError) in try LlamaModel(gguf: gguf, residentLayers: resident) },
    ]

    public static var architectures: [String] { Array(loaders.keys) }

    /// With `residentLayers` false the blocks are not built (a streaming layer source supplies them).
    public static func load(gguf: GGUFFile, residentLayers: Bool = true) throws(ModelError) -> LanguageModel {
        let arch: String
        do {
            arch = try gguf.require("general.architecture", gguf.string)
        } catch {
            throw .format(error)
        }
        guard let loader = loaders[arch] else { throw .unsupportedArchitecture(arch) }
        return try loader(gguf, residentLayers)
    }

    /// Builds the model stored in a .spool file; with `residentLayers` false the blocks are not
    /// built (a streaming layer source supplies them).
    public static func load(spool: SpoolFile, residentLayers: Bool = true) throws(ModelError) -> LanguageModel {
        let arch = spool.header.architecture
        guard arch == "llama" else { throw .unsupportedArchitecture(arch) }
        return try LlamaModel(spool: spool, residentLayers: residentLayers)
    }
}
