import Foundation

/// Finds the files tests need that are not in the repository: the default model (fetched by
/// Tools/fetch-model.sh) and the golden outputs in ../shared/golden.
public enum TestAssets {
    public enum Missing: Error, CustomStringConvertible {
        case model(String)
        case golden(String)
        public var description: String {
            switch self {
            case let .model(p): return "default model not found at \(p); run Tools/fetch-model.sh"
            case let .golden(p): return "golden file not found at \(p)"
            }
        }
    }

    /// The repository root, found from this source file's path.
    public static var repoRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// True when tests must fail, not skip, if the model is absent (CI sets SPOOL_REQUIRE_MODEL=1).
    public static var modelRequired: Bool { ProcessInfo.processInfo.environment["SPOOL_REQUIRE_MODEL"] == "1" }

    public static var defaultModelPath: String {
        let env = ProcessInfo.processInfo.environment
        if let p = env["SPOOL_MODEL"] { return p }
        let dir = env["SPOOL_MODEL_DIR"]
            ?? (env["XDG_CACHE_HOME"].map { $0 + "/spool/models" })
            ?? (NSHomeDirectory() + "/.cache/spool/models")
        return dir + "/SmolLM2-135M-Instruct.Q4_1.gguf"
    }

    /// The model path, or nil when it is absent and not required. Throws when required and absent.
    public static func modelPath() throws -> String? {
        let p = defaultModelPath
        if FileManager.default.fileExists(atPath: p) { return p }
        if modelRequired { throw Missing.model(p) }
        return nil
    }

    public static func golden(_ name: String) throws -> Data {
        let url = repoRoot.deletingLastPathComponent().appendingPathComponent("shared/golden/\(name)")
        guard let d = FileManager.default.contents(atPath: url.path) else { throw Missing.golden(url.path) }
        return d
    }

    public static func sharedData(_ relative: String) -> String {
        repoRoot.deletingLastPathComponent().appendingPathComponent("shared/data/\(relative)").path
    }
}
