// GGUF reader (versions 2 and 3).
//
// Layout: magic "GGUF", u32 version, u64 tensor count, u64 metadata count, the metadata key/value
// pairs, the tensor infos, padding to `general.alignment` (default 32), then the tensor data.
// Every count, length, dimension and offset is checked against the bytes that remain before
// anything is allocated, so a hostile file costs at most its own size in memory.

/// Where one tensor lives and what it holds. `shape` is in ggml order: shape[0] is the row length.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    public let shape: [Int]
    public let type: GGMLType
    /// Offset relative to the start of the data section.
    public let offset: Int
    public let byteCount: Int
    public var elementCount: Int { shape.reduce(1, *) }
}

public final class GGUFFile {
    public static let defaultAlignment = 32
    /// Caps that keep a hostile header from asking for absurd work; far above any real model.
    public static let maxTensorCount: UInt64 = 1 << 20
    public static let maxMetadataCount: UInt64 = 1 << 20
    public static let maxDimension: UInt64 = 1 << 40

    public let file: MappedFile
    public let version: UInt32
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    /// Absolute file offset of the data section.
    public let dataOffset: Int
    private let tensorIndex: [String: Int]

    public convenience init(path: String) throws(GGUFError) {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws(GGUFError) {
        self.file = file
        var r = ByteCursor(file.bytes)
        let magic = try r.bytes(4, "magic")
        guard magic == Array("GGUF".utf8) else { throw .notAGGUFFile(magic: magic) }
        let version = try r.u32("version")
        if version & 0xFFFF == 0 && version != 0 { throw .bigEndianNotSupported }
        guard version == 2 || version == 3 else { throw .unsupportedVersion(version) }
        self.version = version
        let tensorCount = try r.u64("tensor count")
        let kvCount = try r.u64("metadata count")
        // Each key/value pair takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor info
        // at least 8 + 4 + 8 + 4 + 8.
        try Self.checkCount(kvCount, field: "metadata count", minBytesEach: 13, remaining: r.remaining, cap: Self.maxMetadataCount)
        try Self.checkCount(tensorCount, field: "tensor count", minBytesEach: 32, remaining: r.remaining, cap: Self.maxTensorCount)

        var metadata: [String: GGUFValue] = [:]
        var keys: [String] = []
        for i in 0..<Int(kvCount) {
            let key = try r.string("metadata key #\(i)")
            let rawType = try r.u32("type of \(key)")
            let value = try r.value(rawType: rawType, key: key, depth: 0)
            guard metadata.updateValue(value, forKey: key) == nil else { throw .duplicateKey(key) }
            keys.append(key)
        }
        self.metadata = metadata
        self.metadataKeys = keys

        var alignment = Self.defaultAlignment
        if let a = metadata["general.alignment"] {
            guard case let .uint32(v) = a else {
                throw .wrongMetadataType(key: "general.alignment", expected: "u32", actual: a.typeName)
            }
            guard v != 0, v & (v - 1) == 0 else { throw .badAlignment(UInt64(v)) }
            alignment = Int(v)
        }
        self.alignment = alignment

        var infos: [GGUFTensorInfo] = []
        var index: [String: Int] = [:]
        var rawOffsets: [UInt64] = []
        for i in 0..<Int(tensorCount) {
            let name = try r.string("tensor name #\(i)")
            let nDims = try r.u32("dimension count of \(name)")
            guard (1...4).contains(nDims) else { throw .tooManyDimensions(tensor: name, count: nDims) }
            var shape: [Int] = []
            for d in 0..<Int(nDims) {
                let dim = try r.u64("dimension \(d) of \(name)")
                guard dim >= 1, dim <= Self.maxDimension else { throw .badDimension(tensor: name, index: d, value: dim) }
                shape.append(Int(dim))
            }
            let rawType = try r.u32("type of \(name)")
            guard let type = GGMLType(rawValue: rawType) else { throw .unknownTensorType(tensor: name, rawType: rawType) }
            let offset = try r.u64("offset of \(name)")
            var count = 1
            for d in shape {
                let (c, o) = count.multipliedReportingOverflow(by: d)
                guard !o else { throw .elementCountOverflow(tensor: name) }
                count = c
            }
            guard shape[0] % type.blockSize == 0 else {
                throw .rowNotWholeBlocks(tensor: name, rowLength: shape[0], blockSize: type.blockSize, type: type)
            }
            guard let bytes = type.byteCount(forValues: count) else { throw .elementCountOverflow(tensor: name) }
            guard offset % UInt64(alignment) == 0 else { throw .misalignedTensor(tensor: name, offset: offset, alignment: alignment) }
            guard index.updateValue(infos.count, forKey: name) == nil else { throw .duplicateTensorName(name) }
            rawOffsets.append(offset)
            infos.append(GGUFTensorInfo(name: name, shape: shape, type: type, offset: 0, byteCount: bytes))
        }

        // The data section starts at the next multiple of the alignment after the header.
        let headerEnd = r.offset
        let dataOffset = (headerEnd + alignment - 1) / alignment * alignment
        let dataSize = max(0, file.bytes.count - dataOffset)
        if tensorCount > 0 && dataOffset > file.bytes.count {
            throw .truncated(offset: file.bytes.count, reading: "padding before the tensor data")
        }
        for i in infos.indices {
            let info = infos[i]
            let off = rawOffsets[i]
            guard off <= UInt64(dataSize), UInt64(info.byteCount) <= UInt64(dataSize) - off else {
                throw .tensorOutOfBounds(tensor: info.name, offset: off, size: info.byteCount, dataSize: dataSize)
            }
            infos[i] = GGUFTensorInfo(name: info.name, shape: info.shape, type: info.type, offset: Int(off), byteCount: info.byteCount)
        }
        // No two tensors may share bytes.
        let sorted = infos.filter { $0.byteCount > 0 }.sorted { $0.offset < $1.offset }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.offset + a.byteCount > b.offset {
            throw .overlappingTensors(a.name, b.name)
        }
        self.tensors = infos
        self.tensorIndex = index
        self.dataOffset = dataOffset
    }

    private static func checkCount(_ count: UInt64, field: String, minBytesEach: UInt64, remaining: Int, cap: UInt64) throws(GGUFError) {
        let limit = min(cap, UInt64(remaining) / minBytesEach)
        guard count <= limit else { throw .countTooLarge(field: field, count: count, limit: limit) }
    }

    // MARK: - Tensors

    public func tensor(named name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    public func requireTensor(_ name: String) throws(GGUFError) -> GGUFTensorInfo {
        guard let t = tensor(named: name) else { throw .missingTensor(name) }
        return t
    }

    /// The raw bytes of a tensor; valid while this object is alive.
    public func data(of tensor: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: file.bytes[(dataOffset + tensor.offset)..<(dataOffset + tensor.offset + tensor.byteCount)])
    }

    // MARK: - Typed metadata access: nil when absent, a typed error when present with the wrong type.

    public func string(_ key: String) throws(GGUFError) -> String? {
        guard let v = metadata[key] else { return nil }
        guard case let .string(s) = v else { throw .wrongMetadataType(key: key, expected: "string", actual: v.typeName) }
        return s
    }

    public func integer(_ key: String) throws(GGUFError) -> Int? {
        guard let v = metadata[key] else { return nil }
        if case .bool = v { throw .wrongMetadataType(key: key, expected: "integer", actual: v.typeName) }
        guard let i = v.integer else { throw .wrongMetadataType(key: key, expected: "integer", actual: v.typeName) }
        return i
    }

    public func float(_ key: String) throws(GGUFError) -> Double? {
        guard let v = metadata[key] else { return nil }
        if case .bool = v { throw .wrongMetadataType(key: key, expected: "float", actual: v.typeName) }
        guard let f = v.floatingPoint else { throw .wrongMetadataType(key: key, expected: "float", actual: v.typeName) }
        return f
    }

    public func bool(_ key: String) throws(GGUFError) -> Bool? {
        guard let v = metadata[key] else { return nil }
        guard case let .bool(b) = v else { throw .wrongMetadataType(key: key, expected: "bool", actual: v.typeName) }
        return b
    }

    public func stringArray(_ key: String) throws(GGUFError) -> [String]? {
        guard let v = metadata[key] else { return nil }
        guard case let .array(.string, items) = v else { throw .wrongMetadataType(key: key, expected: "array<string>", actual: v.typeName) }
        var out: [String] = []
        out.reserveCapacity(items.count)
        for case let .string(s) in items { out.append(s) }
        return out
    }

    public func integerArray(_ key: String) throws(GGUFError) -> [Int]? {
        guard let v = metadata[key] else { return nil }
        guard case let .array(element, items) = v, element != .bool, element.fixedSize != nil, element != .float32, element != .float64 else {
            throw .wrongMetadataType(key: key, expected: "array<integer>", actual: v.typeName)
        }
        var out: [Int] = []
        out.reserveCapacity(items.count)
        for item in items {
            guard let i = item.integer else { throw .wrongMetadataType(key: key, expected: "array<integer>", actual: v.typeName) }
            out.append(i)
        }
        return out
    }

    public func require<T>(_ key: String, _ get: (String) throws(GGUFError) -> T?) throws(GGUFError) -> T {
        guard let v = try get(key) else { throw .missingKey(key) }
        return v
    }
}

/// A bounds-checked little-endian reader over the header bytes.
struct ByteCursor {
    let buffer: UnsafeRawBufferPointer
    private(set) var offset = 0
    var remaining: Int { buffer.count - offset }

    init(_ buffer: UnsafeRawBufferPointer) { self.buffer = buffer }

    private mutating func take(_ n: Int, _ what: @autoclosure () -> String) throws(GGUFError) -> Int {
        guard n >= 0, n <= remaining else { throw .truncated(offset: offset, reading: what()) }
        defer { offset += n }
        return offset
    }

    mutating func bytes(_ n: Int, _ what: @autoclosure () -> String) throws(GGUFError) -> [UInt8] {
        let at = try take(n, what())
        return Array(buffer[at..<(at + n)])
    }

    mutating func load<T: FixedWidthInteger>(_ type: T.Type, _ what: @autoclosure () -> String) throws(GGUFError) -> T {
        let at = try take(MemoryLayout<T>.size, what())
        return T(littleEndian: buffer.loadUnaligned(fromByteOffset: at, as: T.self))
    }

    mutating func u32(_ what: @autoclosure () -> String) throws(GGUFError) -> UInt32 { try load(UInt32.self, what()) }
    mutating func u64(_ what: @autoclosure () -> String) throws(GGUFError) -> UInt64 { try load(UInt64.self, what()) }

    mutating func string(_ what: @autoclosure () -> String) throws(GGUFError) -> String {
        let length = try u64("length of \(what())")
        guard length <= UInt64(remaining) else { throw .stringTooLong(field: what(), length: length) }
        let at = try take(Int(length), what())
        let slice = UnsafeRawBufferPointer(rebasing: buffer[at..<(at + Int(length))])
        guard let s = String(validating: slice.bindMemory(to: UInt8.self), as: UTF8.self) else {
            throw .invalidUTF8(field: what())
        }
        return s
    }

    mutating func value(rawType: UInt32, key: String, depth: Int) throws(GGUFError) -> GGUFValue {
        guard let type = GGUFValueType(rawValue: rawType) else { throw .unknownValueType(key: key, rawType: rawType) }
        switch type {
        case .uint8: return .uint8(try load(UInt8.self, key))
        case .int8: return .int8(try load(Int8.self, key))
        case .uint16: return .uint16(try load(UInt16.self, key))
        case .int16: return .int16(try load(Int16.self, key))
        case .uint32: return .uint32(try load(UInt32.self, key))
        case .int32: return .int32(try load(Int32.self, key))
        case .uint64: return .uint64(try load(UInt64.self, key))
        case .int64: return .int64(try load(Int64.self, key))
        case .float32: return .float32(Float(bitPattern: try load(UInt32.self, key)))
        case .float64: return .float64(Double(bitPattern: try load(UInt64.self, key)))
        case .bool: return .bool(try load(UInt8.self, key) != 0)
        case .string: return .string(try string(key))
        case .array:
            guard depth < 2 else { throw .arrayNestingTooDeep(key: key) }
            let rawElement = try u32("element type of \(key)")
            guard let element = GGUFValueType(rawValue: rawElement) else { throw .unknownValueType(key: key, rawType: rawElement) }
            let count = try u64("element count of \(key)")
            // Strings take at least their 8-byte length, arrays their 12-byte header.
            let minEach = UInt64(element.fixedSize ?? (element == .string ? 8 : 12))
            guard count <= UInt64(remaining) / minEach else {
                throw .countTooLarge(field: "element count of \(key)", count: count, limit: UInt64(remaining) / minEach)
            }
            var items: [GGUFValue] = []
            items.reserveCapacity(Int(count))
            for _ in 0..<Int(count) {
                items.append(try value(rawType: rawElement, key: key, depth: depth + 1))
            }
            return .array(element, items)
        }
    }
}
