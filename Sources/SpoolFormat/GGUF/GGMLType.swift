// The ggml tensor types a GGUF file can hold, with their block layouts.
//
// A quantized tensor is a sequence of blocks; each block encodes `blockSize` consecutive values in
// `typeSize` bytes. Row lengths must be a multiple of `blockSize`.

public enum GGMLType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 0
    case f16 = 1
    case q4_0 = 2
    case q4_1 = 3
    case q5_0 = 6
    case q5_1 = 7
    case q8_0 = 8
    case q8_1 = 9
    case q2_K = 10
    case q3_K = 11
    case q4_K = 12
    case q5_K = 13
    case q6_K = 14
    case q8_K = 15
    case i8 = 24
    case i16 = 25
    case i32 = 26
    case i64 = 27
    case f64 = 28
    case bf16 = 30

    /// Values per block.
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16, .f64, .i8, .i16, .i32, .i64: return 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q8_1: return 32
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K: return 256
        }
    }

    /// Bytes per block. Each value is the size of the C struct in ggml-common.h.
    public var typeSize: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .f64: return 8
        case .i8: return 1
        case .i16: return 2
        case .i32: return 4
        case .i64: return 8
        case .q4_0: return 2 + 16            // d, qs[16]
        case .q4_1: return 2 + 2 + 16        // d, m, qs[16]
        case .q5_0: return 2 + 4 + 16        // d, qh[4], qs[16]
        case .q5_1: return 2 + 2 + 4 + 16    // d, m, qh[4], qs[16]
        case .q8_0: return 2 + 32            // d, qs[32]
        case .q8_1: return 2 + 2 + 32        // d, s, qs[32]
        case .q2_K: return 16 + 64 + 2 + 2   // scales[16], qs[64], d, dmin
        case .q3_K: return 32 + 64 + 12 + 2  // hmask[32], qs[64], scales[12], d
        case .q4_K: return 2 + 2 + 12 + 128  // d, dmin, scales[12], qs[128]
        case .q5_K: return 2 + 2 + 12 + 32 + 128 // d, dmin, scales[12], qh[32], qs[128]
        case .q6_K: return 128 + 64 + 16 + 2 // ql[128], qh[64], scales[16], d
        case .q8_K: return 4 + 256 + 32      // d (f32), qs[256], bsums[16] (i16)
        }
    }

    public var description: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .bf16: return "BF16"
        case .f64: return "F64"
        case .i8: return "I8"
        case .i16: return "I16"
        case .i32: return "I32"
        case .i64: return "I64"
        case .q4_0: return "Q4_0"
        case .q4_1: return "Q4_1"
        case .q5_0: return "Q5_0"
        case .q5_1: return "Q5_1"
        case .q8_0: return "Q8_0"
        case .q8_1: return "Q8_1"
        case .q2_K: return "Q2_K"
        case .q3_K: return "Q3_K"
        case .q4_K: return "Q4_K"
        case .q5_K: return "Q5_K"
        case .q6_K: return "Q6_K"
        case .q8_K: return "Q8_K"
        }
    }

    /// Bytes needed for `count` values, or nil when `count` is not a whole number of blocks or the
    /// size overflows.
    public func byteCount(forValues count: Int) -> Int? {
        guard count >= 0, count % blockSize == 0 else { return nil }
        let (bytes, overflow) = (count / blockSize).multipliedReportingOverflow(by: typeSize)
        return overflow ? nil : bytes
    }
}
