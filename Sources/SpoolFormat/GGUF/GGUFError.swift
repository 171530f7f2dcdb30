/// Everything that can be wrong with a GGUF file. Each case names the field or tensor at fault.
public enum GGUFError: Error, Equatable, Sendable, CustomStringConvertible {
    case cannotOpen(path: String, errno: Int32)
    case notAGGUFFile(magic: [UInt8])
    case bigEndianNotSupported
    case unsupportedVersion(UInt32)
    case truncated(offset: Int, reading: String)
    case countTooLarge(field: String, count: UInt64, limit: UInt64)
    case stringTooLong(field: String, length: UInt64)
    case invalidUTF8(field: String)
    case unknownValueType(key: String, rawType: UInt32)
    case arrayNestingTooDeep(key: String)
    case duplicateKey(String)
    case missingKey(String)
    case wrongMetadataType(key: String, expected: String, actual: String)
    case badAlignment(UInt64)
    case tooManyDimensions(tensor: String, count: UInt32)
    case badDimension(tensor: String, index: Int, value: UInt64)
    case unknownTensorType(tensor: String, rawType: UInt32)
    case elementCountOverflow(tensor: String)
    case rowNotWholeBlocks(tensor: String, rowLength: Int, blockSize: Int, type: GGMLType)
    case misalignedTensor(tensor: String, offset: UInt64, alignment: Int)
    case tensorOutOfBounds(tensor: String, offset: UInt64, size: Int, dataSize: Int)
    case overlappingTensors(String, String)
    case duplicateTensorName(String)
    case missingTensor(String)
    case tensorShapeMismatch(tensor: String, expected: [Int], actual: [Int])

    public var description: String {
        switch self {
        case let .cannotOpen(path, errno): return "cannot open \(path): errno \(errno)"
        case let .notAGGUFFile(magic): return "not a GGUF file (magic bytes \(magic))"
        case .bigEndianNotSupported: return "big-endian GGUF files are not supported"
        case let .unsupportedVersion(v): return "unsupported GGUF version \(v) (supported: 2, 3)"
        case let .truncated(offset, what): return "file truncated at byte \(offset) while reading \(what)"
        case let .countTooLarge(field, count, limit): return "\(field) is \(count), above the limit \(limit) this file can hold"
        case let .stringTooLong(field, length): return "string \(field) claims \(length) bytes, more than the file holds"
        case let .invalidUTF8(field): return "\(field) is not valid UTF-8"
        case let .unknownValueType(key, raw): return "metadata \(key) has unknown value type \(raw)"
        case let .arrayNestingTooDeep(key): return "metadata \(key) nests arrays too deeply"
        case let .duplicateKey(key): return "metadata key \(key) appears twice"
        case let .missingKey(key): return "required metadata key \(key) is missing"
        case let .wrongMetadataType(key, expected, actual): return "metadata \(key) has type \(actual), expected \(expected)"
        case let .badAlignment(a): return "general.alignment \(a) is not a non-zero power of two"
        case let .tooManyDimensions(t, n): return "tensor \(t) has \(n) dimensions (must be 1...4)"
        case let .badDimension(t, i, v): return "tensor \(t) dimension \(i) is \(v) (must be 1...2^40)"
        case let .unknownTensorType(t, raw): return "tensor \(t) has unknown ggml type \(raw)"
        case let .elementCountOverflow(t): return "tensor \(t): element count or byte size overflows"
        case let .rowNotWholeBlocks(t, n, b, type): return "tensor \(t): row length \(n) is not a multiple of the \(type) block size \(b)"
        case let .misalignedTensor(t, off, a): return "tensor \(t): offset \(off) is not aligned to \(a)"
        case let .tensorOutOfBounds(t, off, size, data): return "tensor \(t): bytes \(off)..<\(off + UInt64(size)) lie outside the \(data)-byte data section"
        case let .overlappingTensors(a, b): return "tensors \(a) and \(b) overlap"
        case let .duplicateTensorName(t): return "tensor name \(t) appears twice"
        case let .missingTensor(t): return "required tensor \(t) is missing"
        case let .tensorShapeMismatch(t, e, a): return "tensor \(t) has shape \(a), expected \(e)"
        }
    }
}
