import Foundation

/// The process's I/O counters from /proc/self/io (Linux): `readBytes` is what the kernel fetched from
/// storage for this process, including page faults on mapped weights. nil where /proc is absent.
public struct ProcessIO: Sendable, Equatable {
    public var readBytes: Int
    /// Bytes passed through read-like calls, cached or not.
    public var readChars: Int

    public static func current() -> ProcessIO? {
        guard let text = try? String(contentsOfFile: "/proc/self/io", encoding: .utf8) else { return nil }
        var fields: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            let kv = line.split(separator: ":")
            if kv.count == 2, let v = Int(kv[1].trimmingCharacters(in: .whitespaces)) { fields[String(kv[0])] = v }
        }
        guard let rb = fields["read_bytes"], let rc = fields["rchar"] else { return nil }
        return ProcessIO(readBytes: rb, readChars: rc)
    }
}
