import Foundation
import SpoolIO

/// A device profile (profiles/NAME.json): how to run on one kind of machine. CLI flags override
/// single values after loading (the lead wires `--profile`; see `DeviceProfile.find`).
///
/// ```json
/// { "name": "ci-2core", "description": "...", "threads": 2, "numa": "none",
///   "io": { "backend": "uring", "prefetchDepth": 2, "queueDepth": 32, "chunkSize": "1M", "preadThreads": 2 },
///   "memoryBudget": "1G", "kvBits": 16, "kvGroup": 32, "kvResidual": 64 }
/// ```
/// Unknown keys are refused, so a typo does not silently fall back to a default.
///
/// What acts on each field: `io` and `memoryBudget` feed SpoolIO (`readerOptions()`,
/// `MemoryPlanner`); `threads` the kernel thread pool; `kvBits`, `kvGroup` and `kvResidual` the KV
/// cache where `--kv-bits`, `--kv-group` and `--kv-residual` are not given. `numa` is validated
/// and carried.
public struct DeviceProfile: Codable, Equatable, Sendable {
    public enum NUMAPolicy: String, Codable, Sendable, CaseIterable {
        /// Do nothing NUMA-specific (single-node machines).
        case none
        /// Each worker thread is pinned to a node and the weights it reads are placed on that node.
        case local
        /// Weight pages are interleaved across nodes (bandwidth of all nodes, no placement logic).
        case interleave
    }

    public struct IO: Codable, Equatable, Sendable {
        /// "uring" (falls back to pread when io_uring cannot start), "pread" or "mmap".
        public var backend: String
        /// Layers in flight ahead of the one computing.
        public var prefetchDepth: Int
        /// Chunk reads in flight at once (io_uring entries); queueDepth × chunkSize should cover
        /// prefetchDepth × layer bytes so the disk keeps reading through a long compute.
        public var queueDepth: Int
        /// Size each layer read is split into, e.g. "1M"; default 1 MiB.
        public var chunkSize: String?
        /// Threads of the pread backend; default 4.
        public var preadThreads: Int?
    }

    public var name: String
    public var description: String?
    /// Compute threads; 0 means every CPU the process may run on.
    public var threads: Int
    public var numa: NUMAPolicy
    public var io: IO
    /// Everything Spool may keep in memory (weights, KV cache, scratch), e.g. "6G".
    public var memoryBudget: String
    /// KV cache precision: 32 (float), 16, 8, 4 or 2 (KIVI).
    public var kvBits: Int
    /// KIVI group size and residual window (`--kv-group`, `--kv-residual`); nil: the defaults.
    public var kvGroup: Int? = nil
    public var kvResidual: Int? = nil

    public static let kvBitChoices = [2, 4, 8, 16, 32]

    public enum ProfileError: Error, CustomStringConvertible, Equatable {
        case notFound(name: String, searched: [String], available: [String])
        case unreadable(path: String, reason: String)
        case invalid(path: String, problems: [String])

        public var description: String {
            switch self {
            case let .notFound(name, searched, available):
                var s = "no profile named '\(name)' (looked for \(searched.joined(separator: ", ")))"
                if !available.isEmpty { s += "; available: \(available.joined(separator: ", "))" }
                return s
            case let .unreadable(path, reason): return "cannot read profile \(path): \(reason)"
            case let .invalid(path, problems): return "profile \(path) is invalid: " + problems.joined(separator: "; ")
            }
        }
    }

    // MARK: typed views

    public var ioBackend: IOBackend { IOBackend(rawValue: io.backend) ?? .uring }

    public func memoryBudgetBytes() throws(ByteSize.ParseError) -> Int { try ByteSize.parse(memoryBudget) }

    /// Reader options as this profile sets them.
    public func readerOptions() throws(ByteSize.ParseError) -> WeightReaderOptions {
        var o = WeightReaderOptions()
        o.queueDepth = io.queueDepth
        if let c = io.chunkSize { o.chunkSize = try ByteSize.parse(c) }
        if let t = io.preadThreads { o.preadThreads = t }
        return o
    }

    // MARK: validation

    static let topKeys: Set<String> = ["name", "description", "threads", "numa", "io", "memoryBudget", "kvBits", "kvGroup", "kvResidual"]
    static let ioKeys: Set<String> = ["backend", "prefetchDepth", "queueDepth", "chunkSize", "preadThreads"]

    /// Every problem with the values, in one list (empty when valid).
    public func problems() -> [String] {
        var p: [String] = []
        if name.isEmpty { p.append("name is empty") }
        if threads < 0 || threads > 4096 { p.append("threads \(threads) (0 = all CPUs, else 1...4096)") }
        if IOBackend(rawValue: io.backend) == nil {
            p.append("io.backend '\(io.backend)' is not one of \(IOBackend.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if io.prefetchDepth < 0 || io.prefetchDepth > 64 { p.append("io.prefetchDepth \(io.prefetchDepth) (0...64)") }
        if io.queueDepth < 1 || io.queueDepth > 4096 { p.append("io.queueDepth \(io.queueDepth) (1...4096)") }
        if let c = io.chunkSize {
            if let bytes = try? ByteSize.parse(c) {
                if bytes < 4096 || bytes % 4096 != 0 || bytes > 1 << 30 { p.append("io.chunkSize \(c) (a multiple of 4K, at most 1G)") }
            } else {
                p.append("io.chunkSize '\(c)' is not a size like 1M")
            }
        }
        if let t = io.preadThreads, t < 1 || t > 256 { p.append("io.preadThreads \(t) (1...256)") }
        if let bytes = try? ByteSize.parse(memoryBudget) {
            if bytes < 16 << 20 { p.append("memoryBudget \(memoryBudget) is below 16M") }
        } else {
            p.append("memoryBudget '\(memoryBudget)' is not a size like 512M or 1.5G")
        }
        if !Self.kvBitChoices.contains(kvBits) { p.append("kvBits \(kvBits) (one of \(Self.kvBitChoices.map(String.init).joined(separator: ", ")))") }
        if let g = kvGroup, g < 8 || g > 1024 || g % 8 != 0 { p.append("kvGroup \(g) (a multiple of 8, 8...1024)") }
        if let r = kvResidual, r < (kvGroup ?? 32) || r > 1024 { p.append("kvResidual \(r) (at least kvGroup, \(kvGroup ?? 32) by default, and at most 1024)") }
        return p
    }

    // MARK: loading

    /// Parses and validates a profile file.
    public static func load(path: String) throws(ProfileError) -> DeviceProfile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .unreadable(path: path, reason: "no such file or not readable")
        }
        return try decode(data, path: path)
    }

    static func decode(_ data: Data, path: String) throws(ProfileError) -> DeviceProfile {
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw .unreadable(path: path, reason: "not a JSON object")
        }
        var unknown = Set(object.keys).subtracting(topKeys).map { "unknown key '\($0)'" }
        if let io = object["io"] as? [String: Any] {
            unknown += Set(io.keys).subtracting(ioKeys).map { "unknown key 'io.\($0)'" }
        }
        let profile: DeviceProfile
        do {
            profile = try JSONDecoder().decode(DeviceProfile.self, from: data)
        } catch let DecodingError.keyNotFound(key, ctx) {
            throw .invalid(path: path, problems: unknown.sorted() + ["missing '\((ctx.codingPath + [key]).map(\.stringValue).joined(separator: "."))'"])
        } catch let DecodingError.typeMismatch(_, ctx) {
            throw .invalid(path: path, problems: unknown.sorted() + ["'\(ctx.codingPath.map(\.stringValue).joined(separator: "."))' has the wrong type"])
        } catch let DecodingError.dataCorrupted(ctx) {
            throw .invalid(path: path, problems: unknown.sorted() + ["'\(ctx.codingPath.map(\.stringValue).joined(separator: "."))': \(ctx.debugDescription)"])
        } catch {
            throw .invalid(path: path, problems: unknown.sorted() + ["\(error)"])
        }
        let problems = unknown.sorted() + profile.problems()
        if !problems.isEmpty { throw .invalid(path: path, problems: problems) }
        return profile
    }

    /// Finds a profile by name or path. A value containing "/" or ending in ".json" is a path.
    /// A name is looked up as NAME.json in, in order: each directory of `SPOOL_PROFILES`
    /// (colon-separated), `profiles/` beside the executable or in any directory above it (the
    /// repository when run from .build/), then `profiles/` in the current directory.
    public static func find(_ nameOrPath: String,
                            environment: [String: String] = ProcessInfo.processInfo.environment,
                            executablePath: String? = nil,
                            currentDirectory: String = FileManager.default.currentDirectoryPath) throws(ProfileError) -> DeviceProfile {
        if nameOrPath.contains("/") || nameOrPath.hasSuffix(".json") { return try load(path: nameOrPath) }
        let dirs = searchDirectories(environment: environment, executablePath: executablePath ?? currentExecutablePath(),
                                     currentDirectory: currentDirectory)
        for dir in dirs {
            let path = dir + "/" + nameOrPath + ".json"
            if FileManager.default.fileExists(atPath: path) { return try load(path: path) }
        }
        var available: Set<String> = []
        for dir in dirs {
            for f in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where f.hasSuffix(".json") {
                available.insert(String(f.dropLast(5)))
            }
        }
        throw .notFound(name: nameOrPath, searched: dirs.map { $0 + "/" + nameOrPath + ".json" }, available: available.sorted())
    }

    static func searchDirectories(environment: [String: String], executablePath: String?, currentDirectory: String) -> [String] {
        var dirs: [String] = []
        if let env = environment["SPOOL_PROFILES"] {
            dirs += env.split(separator: ":").map(String.init).filter { !$0.isEmpty }
        }
        if let exe = executablePath {
            var dir = URL(fileURLWithPath: exe).resolvingSymlinksInPath().deletingLastPathComponent()
            for _ in 0..<6 {
                let candidate = dir.appendingPathComponent("profiles").path
                if FileManager.default.fileExists(atPath: candidate) {
                    dirs.append(candidate)
                    break
                }
                let parent = dir.deletingLastPathComponent()
                if parent.path == dir.path { break }
                dir = parent
            }
        }
        dirs.append(currentDirectory + "/profiles")
        var seen: Set<String> = []
        return dirs.filter { seen.insert($0).inserted }
    }

    static func currentExecutablePath() -> String? {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments.first
    }
}
