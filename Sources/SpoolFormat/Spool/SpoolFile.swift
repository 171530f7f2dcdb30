import Foundation

/// A validated, memory-mapped .spool file.
///
/// Opening checks everything that can be checked without reading the data: the preamble, the header
/// length cap, the JSON, every extent (aligned, inside the file, non-overlapping, the file length
/// equal to the end of the last extent) and every tensor (shape, encoding, size, alignment, inside
/// its extent, non-overlapping). Checksums are verified on the first read of each extent
/// (`data(of:)`, `verifyExtent`), so a damaged file is refused with the tensor named.
public final class SpoolFile {
    public static let magic: [UInt8] = Array("SPOOL".utf8) + [0x00, 0x0D, 0x0A]
    public static let currentVersion = 1
    /// magic (8) + version u32 + flags u32 + header length u64, all little-endian.
    public static let preambleSize = 24
    /// Preamble flag bit 0: the header has a `rotation` a reader must honour (see SpoolRotation).
    public static let rotatedFlag: UInt32 = 1
    /// Preamble flag bit 1: some tensor stores compact grids (`grid` = "i8"). Readers that predate
    /// them refuse the file by this flag, not by a length check that a 2-group row would pass.
    public static let compactGridFlag: UInt32 = 2
    static let knownFlags = rotatedFlag | compactGridFlag

    /// The preamble flags a header needs.
    public static func flags(for header: SpoolHeader) -> UInt32 {
        (header.rotation == nil ? 0 : rotatedFlag) | (header.tensors.contains { $0.grid != nil } ? compactGridFlag : 0)
    }
    /// Extents start and end on this boundary, so O_DIRECT can read them.
    public static let extentAlignment = 4096
    /// A header longer than this is refused before it is read (a 150k-token vocabulary is ~10 MiB).
    public static let maxHeaderLength = 64 << 20

    public let file: MappedFile
    public let version: UInt32
    public let header: SpoolHeader
    /// Where the data section starts: the preamble and header rounded up to 4096.
    public let dataOffset: Int
    private let tensorIndex: [String: Int]
    private var verified: [Bool]

    public convenience init(path: String) throws(SpoolError) {
        let f: MappedFile
        do { f = try MappedFile(path: path) } catch {
            if case let .cannotOpen(p, e) = error { throw .cannotOpen(path: p, errno: e) }
            throw .cannotOpen(path: path, errno: 0)
        }
        try self.init(file: f)
    }

    public init(file: MappedFile) throws(SpoolError) {
        self.file = file
        let b = file.bytes
        guard b.count >= Self.preambleSize else {
            throw .truncated(fileLength: b.count, needed: Self.preambleSize, reading: "preamble")
        }
        let magic = Array(b[0..<8])
        guard magic == Self.magic else { throw .notASpoolFile(magic: magic) }
        version = b.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian
        guard version == UInt32(Self.currentVersion) else { throw .unsupportedVersion(version) }
        let flags = b.loadUnaligned(fromByteOffset: 12, as: UInt32.self).littleEndian
        guard flags & ~Self.knownFlags == 0 else { throw .unsupportedFeature("preamble flags \(flags)") }
        let headerLength = b.loadUnaligned(fromByteOffset: 16, as: UInt64.self).littleEndian
        guard headerLength <= UInt64(Self.maxHeaderLength) else {
            throw .headerTooLarge(length: headerLength, limit: Self.maxHeaderLength)
        }
        let hl = Int(headerLength)
        guard b.count >= Self.preambleSize + hl else {
            throw .truncated(fileLength: b.count, needed: Self.preambleSize + hl, reading: "header")
        }
        let json = Data(b[Self.preambleSize..<(Self.preambleSize + hl)])
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let header: SpoolHeader
        do {
            header = try decoder.decode(SpoolHeader.self, from: json)
        } catch {
            throw .invalidHeaderJSON(Self.describe(error))
        }
        guard header.formatVersion == Int(version) else { throw .versionMismatch(preamble: version, header: header.formatVersion) }
        guard (flags & Self.rotatedFlag != 0) == (header.rotation != nil) else {
            throw .unsupportedFeature(header.rotation == nil ? "preamble flag 1 (rotated) but the header has no rotation"
                                                              : "a rotation in the header but preamble flag 1 (rotated) is clear")
        }
        guard flags & Self.compactGridFlag == Self.flags(for: header) & Self.compactGridFlag else {
            throw .unsupportedFeature(flags & Self.compactGridFlag != 0 ? "preamble flag 2 (compact grids) but no tensor has a grid field"
                                                                       : "a tensor with a grid field but preamble flag 2 (compact grids) is clear")
        }
        self.header = header
        dataOffset = QuantLayout.align(Self.preambleSize + hl, Self.extentAlignment)
        tensorIndex = try Self.validate(header, dataOffset: dataOffset, fileLength: b.count)
        verified = Array(repeating: false, count: header.extents.count)
    }

    private static func describe(_ error: Error) -> String {
        switch error {
        case let DecodingError.keyNotFound(key, ctx):
            return "missing key \((ctx.codingPath + [key]).map(\.stringValue).joined(separator: "."))"
        case let DecodingError.typeMismatch(_, ctx), let DecodingError.valueNotFound(_, ctx):
            return "wrong type at \(ctx.codingPath.map(\.stringValue).joined(separator: ".")): \(ctx.debugDescription)"
        case let DecodingError.dataCorrupted(ctx):
            return "corrupted at \(ctx.codingPath.map(\.stringValue).joined(separator: ".")): \(ctx.debugDescription)"
        default:
            return "\(error)"
        }
    }

    /// Structural checks; returns name -> index of the tensors.
    static func validate(_ h: SpoolHeader, dataOffset: Int, fileLength: Int) throws(SpoolError) -> [String: Int] {
        guard h.ffnLayout == "separate" else { throw .unsupportedFeature("ffn_layout \(h.ffnLayout) (version 1 reads \"separate\")") }
        guard h.neuronOrder == nil else { throw .unsupportedFeature("neuron_order needs ffn_layout \"bundled\"") }
        try validateTokenizer(h.tokenizer)
        // Extents: aligned, inside the file, in order and disjoint, the last one ending the file.
        var extentNames = Set<String>()
        var sorted: [(offset: Int, end: Int, name: String)] = []
        for e in h.extents {
            guard extentNames.insert(e.name).inserted else { throw .duplicateExtentName(e.name) }
            guard CRC32C.parse(e.crc32c) != nil else { throw .badChecksumField("extent \(e.name)") }
            guard e.offset >= 0, e.length > 0, e.offset % extentAlignment == 0, e.length % extentAlignment == 0 else {
                throw .misalignedExtent(extent: e.name, offset: e.offset, length: e.length)
            }
            guard e.offset >= dataOffset else { throw .extentBeforeData(extent: e.name, offset: e.offset, dataOffset: dataOffset) }
            let (end, overflow) = e.offset.addingReportingOverflow(e.length)
            guard !overflow, end <= fileLength else {
                throw .extentOutOfBounds(extent: e.name, offset: e.offset, length: e.length, fileLength: fileLength)
            }
            sorted.append((e.offset, end, e.name))
        }
        sorted.sort { $0.offset < $1.offset }
        for i in sorted.indices.dropFirst() where sorted[i].offset < sorted[i - 1].end {
            throw .overlappingExtents(sorted[i - 1].name, sorted[i].name)
        }
        let expectedLength = sorted.last?.end ?? dataOffset
        guard expectedLength == fileLength else { throw .fileLengthMismatch(expected: expectedLength, actual: fileLength) }

        // Tensors: encoding and size, inside their extent, disjoint.
        var index: [String: Int] = [:]
        var perExtent = [[(offset: Int, end: Int, name: String)]](repeating: [], count: h.extents.count)
        for (i, t) in h.tensors.enumerated() {
            guard index[t.name] == nil else { throw .duplicateTensorName(t.name) }
            index[t.name] = i
            guard (1...2).contains(t.shape.count), t.shape.allSatisfy({ $0 > 0 && $0 <= 1 << 31 }) else {
                throw .badShape(tensor: t.name, shape: t.shape)
            }
            if let g = t.grid, g != QuantLayout.compactGridName { throw .badGridEncoding(tensor: t.name, grid: g) }
            guard let size = QuantLayout.tensorBytes(shape: t.shape, bits: t.bits, group: t.group, compactGrid: t.compactGrid) else {
                throw .badEncoding(tensor: t.name, bits: t.bits, group: t.group)
            }
            guard size == t.length else { throw .sizeMismatch(tensor: t.name, expected: size, actual: t.length) }
            guard CRC32C.parse(t.crc32c) != nil else { throw .badChecksumField("tensor \(t.name)") }
            guard (0..<h.extents.count).contains(t.extent) else {
                throw .tensorExtentOutOfRange(tensor: t.name, extent: t.extent, extentCount: h.extents.count)
            }
            guard t.offset >= 0, t.offset % QuantLayout.tensorAlignment == 0 else { throw .misalignedTensor(tensor: t.name, offset: t.offset) }
            let e = h.extents[t.extent]
            guard t.offset <= e.length, t.length <= e.length - t.offset else {
                throw .tensorOutsideExtent(tensor: t.name, extent: e.name)
            }
            perExtent[t.extent].append((t.offset, t.offset + t.length, t.name))
        }
        for var list in perExtent {
            list.sort { $0.offset < $1.offset }
            for i in list.indices.dropFirst() where list[i].offset < list[i - 1].end {
                throw .overlappingTensors(list[i - 1].name, list[i].name)
            }
        }
        try validateRotation(h, index: index)
        for a in h.exitAdapters ?? [] {
            guard let i = index[a.tensor] else { throw .missingTensor(a.tensor) }
            let d = h.hyperparameters.dim
            guard h.tensors[i].shape == [d, d] else { throw .badShape(tensor: a.tensor, shape: h.tensors[i].shape) }
        }
        return index
    }

    /// A rotated file with a tied LM head needs its (dim, dim) head matrix; an unrotated one must
    /// not carry one (the runtime would apply it).
    static func validateRotation(_ h: SpoolHeader, index: [String: Int]) throws(SpoolError) {
        let name = SpoolRotation.headTensor
        guard let r = h.rotation else {
            if index[name] != nil { throw .unsupportedFeature("\(name) in a file without a rotation") }
            return
        }
        guard r.method == "hadamard" else { throw .unsupportedFeature("rotation method \(r.method)") }
        if let i = index[name] {
            let d = h.hyperparameters.dim
            guard h.tensors[i].shape == [d, d] else { throw .badShape(tensor: name, shape: h.tensors[i].shape) }
        } else if index["output.weight"] == nil {
            throw .missingTensor("\(name) (a rotated file with a tied LM head needs it)")
        }
    }

    static func validateTokenizer(_ t: SpoolTokenizerInfo) throws(SpoolError) {
        guard !t.tokens.isEmpty else { throw .badTokenizer("no tokens") }
        guard t.tokenTypes.count == t.tokens.count else {
            throw .badTokenizer("\(t.tokenTypes.count) token types for \(t.tokens.count) tokens")
        }
        for (key, id) in [("bos_id", t.bosId), ("eos_id", t.eosId), ("eot_id", t.eotId), ("unknown_id", t.unknownId), ("padding_id", t.paddingId)] {
            if let id, !(0..<t.tokens.count).contains(id) { throw .badTokenizer("\(key) \(id) is outside the vocabulary (0..<\(t.tokens.count))") }
        }
    }

    // MARK: - Access

    public func tensor(named name: String) -> SpoolTensor? {
        tensorIndex[name].map { header.tensors[$0] }
    }

    public func requireTensor(_ name: String) throws(SpoolError) -> SpoolTensor {
        guard let t = tensor(named: name) else { throw .missingTensor(name) }
        return t
    }

    /// The (offset, length) extent of transformer block `layer`: one O_DIRECT read brings it in.
    public func layerExtent(_ layer: Int) -> SpoolExtent? {
        header.extents.first { $0.layer == layer }
    }

    /// Tensors stored in extent `i`, with offsets relative to the extent's start.
    public func tensors(inExtent i: Int) -> [SpoolTensor] {
        header.tensors.filter { $0.extent == i }
    }

    public func extentBytes(_ i: Int) -> UnsafeRawBufferPointer {
        let e = header.extents[i]
        return UnsafeRawBufferPointer(rebasing: file.bytes[e.offset..<(e.offset + e.length)])
    }

    /// The bytes of a tensor, after verifying its extent's checksum the first time the extent is read.
    public func data(of t: SpoolTensor) throws(SpoolError) -> UnsafeRawBufferPointer {
        try verifyExtent(t.extent)
        let e = header.extents[t.extent]
        let start = e.offset + t.offset
        return UnsafeRawBufferPointer(rebasing: file.bytes[start..<(start + t.length)])
    }

    public func verifyExtent(_ i: Int) throws(SpoolError) {
        if verified[i] { return }
        try Self.checkExtent(header.extents[i], tensors: tensors(inExtent: i), bytes: extentBytes(i))
        verified[i] = true
    }

    public func verifyAll() throws(SpoolError) {
        for i in header.extents.indices { try verifyExtent(i) }
    }

    /// Checks a buffer that holds extent `extent` (e.g. one the streaming reader filled): on a
    /// mismatch the per-tensor checksums name the damaged tensor.
    public static func checkExtent(_ extent: SpoolExtent, tensors: [SpoolTensor], bytes: UnsafeRawBufferPointer) throws(SpoolError) {
        guard bytes.count == extent.length else {
            throw .truncated(fileLength: bytes.count, needed: extent.length, reading: "extent \(extent.name)")
        }
        guard let expected = CRC32C.parse(extent.crc32c) else { throw .badChecksumField("extent \(extent.name)") }
        if CRC32C.checksum(bytes) == expected { return }
        for t in tensors {
            guard let want = CRC32C.parse(t.crc32c) else { throw .badChecksumField("tensor \(t.name)") }
            let got = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[t.offset..<(t.offset + t.length)]))
            if got != want { throw .checksumMismatch(tensor: t.name, extent: extent.name, expected: want, actual: got) }
        }
        throw .paddingChecksumMismatch(extent: extent.name)
    }

    /// True when the first bytes of `path` are the .spool magic.
    public static func hasMagic(path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        let d = (try? h.read(upToCount: 8)) ?? Data()
        return Array(d) == magic
    }
}
