#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a GGUF v3 file to disk as it goes: the header (metadata and tensor directory) first, then
/// each tensor's bytes in directory order, supplied in pieces. Memory use is one staging buffer, so
/// files of any size can be made (GGUFWriter builds the whole file in memory instead). The bytes
/// are the same as GGUFWriter.serialize() would produce for the same input.
public final class GGUFStreamWriter {
    public struct TensorSpec: Sendable {
        public var name: String
        public var shape: [Int]
        public var type: GGMLType
        public init(name: String, shape: [Int], type: GGMLType) {
            self.name = name
            self.shape = shape
            self.type = type
        }
    }

    public enum WriteError: Error, CustomStringConvertible, Equatable {
        case cannotCreate(path: String, errno: Int32)
        case writeFailed(path: String, errno: Int32)
        case badTensor(String)
        /// More bytes were supplied than the tensor holds, or `finish` came before all were.
        case sizeMismatch(tensor: String, expected: Int, got: Int)
        case noMoreTensors

        public var description: String {
            switch self {
            case let .cannotCreate(path, e): return "cannot create \(path): \(String(cString: strerror(e)))"
            case let .writeFailed(path, e): return "writing \(path) failed: \(String(cString: strerror(e)))"
            case let .badTensor(what): return "bad tensor: \(what)"
            case let .sizeMismatch(t, expected, got): return "tensor \(t) takes \(expected) bytes, got \(got)"
            case .noMoreTensors: return "tensor data supplied past the last tensor"
            }
        }
    }

    public let path: String
    public let tensors: [TensorSpec]
    public let byteCounts: [Int]
    public let alignment: Int
    private let fd: Int32
    private var staging: [UInt8] = []
    private var position = 0
    private var current = 0
    private var writtenInCurrent = 0

    /// Creates (truncates) `path` and writes the header.
    public init(path: String, metadata: [(String, GGUFValue)], tensors: [TensorSpec],
                alignment: Int = GGUFFile.defaultAlignment) throws(WriteError) {
        guard alignment > 0, alignment & (alignment - 1) == 0 else { throw .badTensor("alignment \(alignment)") }
        var counts: [Int] = []
        for t in tensors {
            guard (1...4).contains(t.shape.count), t.shape.allSatisfy({ $0 > 0 }) else {
                throw .badTensor("\(t.name) has shape \(t.shape)")
            }
            let (n, overflow) = t.shape.reduce((1, false)) { acc, d in
                let r = acc.0.multipliedReportingOverflow(by: d)
                return (r.partialValue, acc.1 || r.overflow)
            }
            guard !overflow, t.shape[0] % t.type.blockSize == 0, let bytes = t.type.byteCount(forValues: n) else {
                throw .badTensor("\(t.name): \(t.shape) is not whole \(t.type) blocks")
            }
            counts.append(bytes)
        }
        self.path = path
        self.tensors = tensors
        self.byteCounts = counts
        self.alignment = alignment
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .cannotCreate(path: path, errno: errno) }
        self.fd = fd
        staging.reserveCapacity(1 << 20)
        var header: [UInt8] = []
        Self.encodeHeader(into: &header, metadata: metadata, tensors: tensors, byteCounts: counts, alignment: alignment)
        try append(header)
        try skipEmptyTensors()
    }

    deinit { close(fd) }

    /// Appends bytes of the current tensor (in directory order); moves to the next tensor when one
    /// is complete.
    public func write(_ bytes: UnsafeRawBufferPointer) throws(WriteError) {
        var rest = bytes
        while !rest.isEmpty {
            guard current < tensors.count else { throw .noMoreTensors }
            let need = byteCounts[current] - writtenInCurrent
            let n = min(need, rest.count)
            try append(UnsafeRawBufferPointer(rebasing: rest[..<n]))
            writtenInCurrent += n
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
            if writtenInCurrent == byteCounts[current] {
                current += 1
                writtenInCurrent = 0
                try skipEmptyTensors()
            }
        }
    }

    /// Flushes and checks that every tensor got all its bytes.
    public func finish() throws(WriteError) {
        if current < tensors.count {
            throw .sizeMismatch(tensor: tensors[current].name, expected: byteCounts[current], got: writtenInCurrent)
        }
        try flush()
        if fsync(fd) != 0 && errno != EINVAL { throw .writeFailed(path: path, errno: errno) }
    }

    /// Pads to the next tensor's aligned start (tensors of zero bytes cannot exist; shapes are > 0).
    private func skipEmptyTensors() throws(WriteError) {
        guard current < tensors.count, writtenInCurrent == 0 else { return }
        let pad = (alignment - position % alignment) % alignment
        if pad > 0 { try append([UInt8](repeating: 0, count: pad)) }
    }

    private func append(_ bytes: [UInt8]) throws(WriteError) {
        staging.append(contentsOf: bytes)
        position += bytes.count
        if staging.count >= 1 << 20 { try flush() }
    }

    private func append(_ bytes: UnsafeRawBufferPointer) throws(WriteError) {
        staging.append(contentsOf: bytes)
        position += bytes.count
        if staging.count >= 1 << 20 { try flush() }
    }

    private func flush() throws(WriteError) {
        var done = 0
        while done < staging.count {
            let n = staging.withUnsafeBytes { posixWrite(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .writeFailed(path: path, errno: errno)
            }
            done += n
        }
        staging.removeAll(keepingCapacity: true)
    }

    /// The GGUF v3 header (metadata and tensor infos, data offsets laid out at `alignment`), padded
    /// to `alignment`. Returns the byte offset of each tensor's info record. `GGUFWriter` uses it too.
    @discardableResult
    static func encodeHeader(into out: inout [UInt8], metadata: [(String, GGUFValue)], tensors: [TensorSpec],
                             byteCounts: [Int], alignment: Int) -> [Int] {
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func str(_ s: String) { u64(UInt64(s.utf8.count)); out += Array(s.utf8) }
        func value(_ v: GGUFValue) {
            switch v {
            case let .uint8(x): out.append(x)
            case let .int8(x): out.append(UInt8(bitPattern: x))
            case let .uint16(x): withUnsafeBytes(of: x.littleEndian) { out += $0 }
            case let .int16(x): withUnsafeBytes(of: x.littleEndian) { out += $0 }
            case let .uint32(x): u32(x)
            case let .int32(x): u32(UInt32(bitPattern: x))
            case let .uint64(x): u64(x)
            case let .int64(x): u64(UInt64(bitPattern: x))
            case let .float32(x): u32(x.bitPattern)
            case let .float64(x): u64(x.bitPattern)
            case let .bool(x): out.append(x ? 1 : 0)
            case let .string(s): str(s)
            case let .array(t, items):
                u32(t.rawValue)
                u64(UInt64(items.count))
                for item in items { value(item) }
            }
        }
        out += Array("GGUF".utf8)
        u32(3)
        u64(UInt64(tensors.count))
        u64(UInt64(metadata.count))
        for (k, v) in metadata {
            str(k)
            u32(v.type.rawValue)
            value(v)
        }
        var offset = 0
        var infoOffsets: [Int] = []
        for (t, bytes) in zip(tensors, byteCounts) {
            infoOffsets.append(out.count)
            str(t.name)
            u32(UInt32(t.shape.count))
            for d in t.shape { u64(UInt64(d)) }
            u32(t.type.rawValue)
            u64(UInt64(offset))
            offset = (offset + bytes + alignment - 1) / alignment * alignment
        }
        while out.count % alignment != 0 { out.append(0) }
        return infoOffsets
    }
}

/// write(2), reachable from inside GGUFStreamWriter (whose own `write` would shadow it).
private func posixWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int { write(fd, p, n) }
