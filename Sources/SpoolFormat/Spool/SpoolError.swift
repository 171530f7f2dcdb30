/// Everything that can be wrong with a .spool file. Each case names the field, extent or tensor.
public enum SpoolError: Error, Equatable, Sendable, CustomStringConvertible {
    case cannotOpen(path: String, errno: Int32)
    case cannotWrite(path: String, errno: Int32)
    case notASpoolFile(magic: [UInt8])
    case unsupportedVersion(UInt32)
    case truncated(fileLength: Int, needed: Int, reading: String)
    case headerTooLarge(length: UInt64, limit: Int)
    case invalidHeaderJSON(String)
    case versionMismatch(preamble: UInt32, header: Int)
    case unsupportedFeature(String)
    case misalignedExtent(extent: String, offset: Int, length: Int)
    case extentOutOfBounds(extent: String, offset: Int, length: Int, fileLength: Int)
    case extentBeforeData(extent: String, offset: Int, dataOffset: Int)
    case overlappingExtents(String, String)
    case fileLengthMismatch(expected: Int, actual: Int)
    case duplicateTensorName(String)
    case duplicateExtentName(String)
    case badShape(tensor: String, shape: [Int])
    case badEncoding(tensor: String, bits: Int, group: Int)
    case sizeMismatch(tensor: String, expected: Int, actual: Int)
    case tensorExtentOutOfRange(tensor: String, extent: Int, extentCount: Int)
    case misalignedTensor(tensor: String, offset: Int)
    case tensorOutsideExtent(tensor: String, extent: String)
    case overlappingTensors(String, String)
    case badChecksumField(String)
    case checksumMismatch(tensor: String, extent: String, expected: UInt32, actual: UInt32)
    case paddingChecksumMismatch(extent: String)
    case badTokenizer(String)
    case missingTensor(String)
    case badGridEncoding(tensor: String, grid: String)

    public var description: String {
        switch self {
        case let .cannotOpen(path, e): return "cannot open \(path) (errno \(e))"
        case let .cannotWrite(path, e): return "cannot write \(path) (errno \(e))"
        case let .notASpoolFile(m): return "not a .spool file (magic \(m.map { String($0, radix: 16) }.joined(separator: " ")))"
        case let .unsupportedVersion(v): return ".spool version \(v) is not supported (this build reads version \(SpoolFile.currentVersion))"
        case let .truncated(len, needed, what): return "file truncated: \(what) needs \(needed) bytes, the file has \(len)"
        case let .headerTooLarge(len, limit): return "header length \(len) exceeds the limit of \(limit) bytes"
        case let .invalidHeaderJSON(r): return "header is not valid JSON for this version: \(r)"
        case let .versionMismatch(p, h): return "preamble says version \(p) but the header says \(h)"
        case let .unsupportedFeature(f): return "unsupported feature: \(f)"
        case let .misalignedExtent(e, o, l): return "extent \(e) at \(o) length \(l) is not 4096-aligned"
        case let .extentOutOfBounds(e, o, l, n): return "extent \(e) (\(o) + \(l)) lies outside the file (\(n) bytes)"
        case let .extentBeforeData(e, o, d): return "extent \(e) at \(o) starts before the data section (\(d))"
        case let .overlappingExtents(a, b): return "extents \(a) and \(b) overlap"
        case let .fileLengthMismatch(e, a): return "file length \(a) does not match the layout (\(e) bytes): truncated or padded"
        case let .duplicateTensorName(n): return "duplicate tensor name \(n)"
        case let .duplicateExtentName(n): return "duplicate extent name \(n)"
        case let .badShape(t, s): return "tensor \(t) has invalid shape \(s)"
        case let .badEncoding(t, b, g): return "tensor \(t): bits \(b) with group \(g) is not a supported encoding"
        case let .sizeMismatch(t, e, a): return "tensor \(t) has length \(a), its shape and encoding need \(e)"
        case let .tensorExtentOutOfRange(t, e, n): return "tensor \(t) names extent \(e), the file has \(n)"
        case let .misalignedTensor(t, o): return "tensor \(t) at extent offset \(o) is not 64-byte aligned"
        case let .tensorOutsideExtent(t, e): return "tensor \(t) does not fit inside extent \(e)"
        case let .overlappingTensors(a, b): return "tensors \(a) and \(b) overlap"
        case let .badChecksumField(f): return "checksum field of \(f) is not eight hex digits"
        case let .checksumMismatch(t, e, x, a): return "tensor \(t) (extent \(e)) is damaged: CRC-32C \(CRC32C.hex(a)), expected \(CRC32C.hex(x))"
        case let .paddingChecksumMismatch(e): return "extent \(e) is damaged in its padding (tensor checksums match, extent checksum does not)"
        case let .badTokenizer(r): return "tokenizer in header: \(r)"
        case let .missingTensor(t): return "tensor \(t) is missing"
        case let .badGridEncoding(t, g): return "tensor \(t): grid encoding \"\(g)\" is not known (\"\(QuantLayout.compactGridName)\", or absent for float16)"
        }
    }
}
