/// Why a run of ggml values could not be decoded to float. Thrown by `GGMLDequantizer` before it
/// reads a byte, so a bad request never reads out of bounds.
public enum DequantizeError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `count` is negative or not a whole number of the type's blocks.
    case countNotWholeBlocks(type: GGMLType, count: Int, blockSize: Int)
    /// `count` values need more bytes than an Int can hold.
    case byteCountOverflow(type: GGMLType, count: Int)
    /// The source buffer holds fewer bytes than `count` values need.
    case sourceTooShort(type: GGMLType, count: Int, needed: Int, available: Int)
    /// No dequantizer exists for this type (integer types, F64, Q8_1, Q8_K).
    case unsupportedType(GGMLType)

    public var description: String {
        switch self {
        case let .countNotWholeBlocks(type, count, blockSize):
            return "cannot dequantize \(count) \(type) values: the count must be a non-negative multiple of the block size \(blockSize)"
        case let .byteCountOverflow(type, count):
            return "cannot dequantize \(count) \(type) values: their byte size overflows"
        case let .sourceTooShort(type, count, needed, available):
            return "cannot dequantize \(count) \(type) values: they need \(needed) bytes, the source holds \(available)"
        case let .unsupportedType(type):
            return "no dequantizer for ggml type \(type)"
        }
    }
}
