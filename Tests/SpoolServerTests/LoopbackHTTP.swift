import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A minimal blocking HTTP/1.1 client over a loopback TCP socket, so tests can do what real clients
/// do and what a library client hides: send broken bodies, read a stream part way, hang up mid-reply.
final class LoopbackConnection {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HTTPTestError.socket(errno) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            throw HTTPTestError.socket(errno)
        }
        var timeout = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func send(method: String, path: String, body: Data? = nil, headers: [String: String] = [:]) throws {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        head += "\r\n"
        try write(Data(head.utf8) + (body ?? Data()))
    }

    func write(_ data: Data) throws {
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            var off = 0
            while off < raw.count {
                let n = Glibc.send(fd, raw.baseAddress! + off, raw.count - off, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw HTTPTestError.socket(errno)
                }
                off += n
            }
        }
    }

    /// Reads at least one byte unless the peer closed; empty at end of stream.
    func readSome() throws -> Data {
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n < 0 {
                if errno == EINTR { continue }
                throw HTTPTestError.socket(errno)
            }
            return Data(buf[..<n])
        }
    }

    /// Reads until `marker` has arrived (or the stream ends) and returns everything read.
    func read(until marker: String) throws -> Data {
        var all = Data()
        while String(decoding: all, as: UTF8.self).range(of: marker) == nil {
            let d = try readSome()
            if d.isEmpty { break }
            all += d
        }
        return all
    }

    /// Reads the whole response (the server closes after it because of Connection: close).
    func readResponse() throws -> HTTPTestResponse {
        var all = Data()
        while true {
            let d = try readSome()
            if d.isEmpty { break }
            all += d
        }
        return try HTTPTestResponse(raw: all)
    }
}

struct HTTPTestResponse {
    var status: Int
    var headers: [String: String]
    var body: Data

    init(raw: Data) throws {
        guard let split = raw.range(of: Data("\r\n\r\n".utf8)) else { throw HTTPTestError.malformed(String(decoding: raw, as: UTF8.self)) }
        let head = String(decoding: raw[..<split.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = head[0].split(separator: " ")
        guard statusParts.count >= 2, let code = Int(statusParts[1]) else { throw HTTPTestError.malformed(head[0]) }
        status = code
        var h: [String: String] = [:]
        for line in head.dropFirst() {
            if let c = line.firstIndex(of: ":") {
                h[line[..<c].lowercased()] = line[line.index(after: c)...].trimmingCharacters(in: .whitespaces)
            }
        }
        headers = h
        let rest = Data(raw[split.upperBound...])
        body = h["transfer-encoding"]?.lowercased() == "chunked" ? try Self.dechunk(rest) : rest
    }

    static func dechunk(_ data: Data) throws -> Data {
        var out = Data()
        var i = data.startIndex
        while i < data.endIndex {
            guard let eol = data[i...].range(of: Data("\r\n".utf8)) else { throw HTTPTestError.malformed("chunk size") }
            let sizeText = String(decoding: data[i..<eol.lowerBound], as: UTF8.self).split(separator: ";")[0]
            guard let size = Int(sizeText, radix: 16) else { throw HTTPTestError.malformed("chunk size \(sizeText)") }
            if size == 0 { break }
            let start = eol.upperBound
            guard start + size <= data.endIndex else { throw HTTPTestError.malformed("short chunk") }
            out += data[start..<(start + size)]
            i = start + size + 2
        }
        return out
    }

    var text: String { String(decoding: body, as: UTF8.self) }

    var json: [String: Any]? { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] }

    var errorObject: [String: Any]? { json?["error"] as? [String: Any] }

    /// The `data:` payloads of a server-sent-events body.
    var events: [String] {
        text.components(separatedBy: "\n\n").compactMap { block in
            block.hasPrefix("data: ") ? String(block.dropFirst(6)) : nil
        }
    }
}

enum HTTPTestError: Error {
    case socket(Int32)
    case malformed(String)
}
