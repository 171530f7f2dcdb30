/// GGUF metadata value types, numbered as in the GGUF specification.
public enum GGUFValueType: UInt32, Sendable, CustomStringConvertible {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, bool = 7
    case string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12

    /// Bytes one value of this type occupies; strings and arrays have a variable size.
    var fixedSize: Int? {
        switch self {
        case .uint8, .int8, .bool: return 1
        case .uint16, .int16: return 2
        case .uint32, .int32, .float32: return 4
        case .uint64, .int64, .float64: return 8
        case .string, .array: return nil
        }
    }

    public var description: String {
        switch self {
        case .uint8: "u8"; case .int8: "i8"; case .uint16: "u16"; case .int16: "i16"
        case .uint32: "u32"; case .int32: "i32"; case .float32: "f32"; case .bool: "bool"
        case .string: "string"; case .array: "array"; case .uint64: "u64"; case .int64: "i64"; case .float64: "f64"
        }
    }
}

/// One metadata value. Arrays keep their element type so an empty array is still typed.
public indirect enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case uint64(UInt64), int64(Int64), float32(Float), float64(Double), bool(Bool), string(String)
    case array(GGUFValueType, [GGUFValue])

    public var type: GGUFValueType {
        switch self {
        case .uint8: .uint8; case .int8: .int8; case .uint16: .uint16; case .int16: .int16
        case .uint32: .uint32; case .int32: .int32; case .uint64: .uint64; case .int64: .int64
        case .float32: .float32; case .float64: .float64; case .bool: .bool; case .string: .string
        case .array: .array
        }
    }

    /// The value as an integer, for any integer type (and bool); nil for other types.
    public var integer: Int? {
        switch self {
        case let .uint8(v): Int(v); case let .int8(v): Int(v); case let .uint16(v): Int(v)
        case let .int16(v): Int(v); case let .uint32(v): Int(v); case let .int32(v): Int(v)
        case let .uint64(v): Int(exactly: v); case let .int64(v): Int(v)
        default: nil
        }
    }

    /// The value as a floating-point number, for float and integer types.
    public var floatingPoint: Double? {
        switch self {
        case let .float32(v): Double(v); case let .float64(v): v
        default: integer.map(Double.init)
        }
    }

    var typeName: String {
        if case let .array(element, _) = self { return "array<\(element)>" }
        return type.description
    }
}
