// Decodes ggml tensor data (float and block-quantized types) to Float32.
//
// The structure follows ggml: each type is a `GGMLBlockFormat` that states its block layout once
// (field offsets and total size) and decodes one block; `GGMLDequantizer.format(for:)` is the
// dispatch table. The formats live in GGMLFloatFormats.swift, GGMLLegacyQuants.swift (32-value
// blocks) and GGMLKQuants.swift (256-value super-blocks).

/// One ggml block format: `valuesPerBlock` values stored in `bytesPerBlock` bytes.
protocol GGMLBlockFormat {
    static var type: GGMLType { get }
    static var valuesPerBlock: Int { get }
    static var bytesPerBlock: Int { get }
    /// Decodes the block at `b` into `y[0 ..< valuesPerBlock]`.
    static func decodeBlock(_ b: GGMLBlockBytes, into y: UnsafeMutablePointer<Float>)
    /// Decodes `blocks` consecutive blocks. A requirement (not only an extension method) so that
    /// each format's witness is the loop specialized for that format, with `decodeBlock` inlined,
    /// even though the dispatch table hands out existential metatypes.
    static func decodeBlocks(_ src: UnsafeRawPointer, blocks: Int, into y: UnsafeMutablePointer<Float>)
}

extension GGMLBlockFormat {
    static func decodeBlocks(_ src: UnsafeRawPointer, blocks: Int, into y: UnsafeMutablePointer<Float>) {
        var p = src, out = y
        for _ in 0 ..< blocks {
            decodeBlock(GGMLBlockBytes(p), into: out)
            p += bytesPerBlock
            out += valuesPerBlock
        }
    }
}

/// Little-endian reads from one block. A thin wrapper so the decoders read like the C structs.
struct GGMLBlockBytes {
    let base: UnsafeRawPointer
    @inline(__always) init(_ base: UnsafeRawPointer) { self.base = base }

    @inline(__always) subscript(_ i: Int) -> UInt8 { base.load(fromByteOffset: i, as: UInt8.self) }
    @inline(__always) func int8(_ i: Int) -> Int8 { Int8(bitPattern: self[i]) }
    @inline(__always) func uint16(_ i: Int) -> UInt16 { UInt16(littleEndian: base.loadUnaligned(fromByteOffset: i, as: UInt16.self)) }
    @inline(__always) func uint32(_ i: Int) -> UInt32 { UInt32(littleEndian: base.loadUnaligned(fromByteOffset: i, as: UInt32.self)) }
    /// An IEEE half-precision value (ggml_fp16_t) at byte `i`, widened to Float.
    @inline(__always) func half(_ i: Int) -> Float { halfToFloat(uint16(i)) }
}

/// IEEE 754 binary16 to binary32, exact for every input (subnormals, infinities, NaN payloads).
/// Written out rather than using `Float16`, which is not available on every platform Swift builds
/// for and on x86_64 Linux converts through a library call.
@inline(__always)
func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exponentAndMantissa = UInt32(h & 0x7FFF)
    if exponentAndMantissa >= 0x7C00 {
        // Infinity or NaN: all-ones exponent, mantissa (and so any NaN payload) kept.
        return Float(bitPattern: sign | 0x7F80_0000 | ((exponentAndMantissa & 0x3FF) << 13))
    }
    if exponentAndMantissa >= 0x0400 {
        // Normal: shift into place and rebias the exponent from 15 to 127.
        return Float(bitPattern: sign | ((exponentAndMantissa << 13) + ((127 - 15) << 23)))
    }
    // Zero or subnormal: the value is mantissa * 2^-24, exact in Float.
    let magnitude = Float(exponentAndMantissa) * 0x1p-24
    return Float(bitPattern: sign | magnitude.bitPattern)
}

public enum GGMLDequantizer {
    /// Decodes the first `count` values of ggml data of `type` from `s` into `y`, which must have
    /// room for `count` floats. `s` may be longer than needed.
    ///
    /// Throws `DequantizeError` when the type has no dequantizer, when `count` is not a whole
    /// number of blocks, or when `s` is too short; nothing is read or written in that case.
    public static func dequantize(_ type: GGMLType, from s: UnsafeRawBufferPointer, count: Int, into y: UnsafeMutablePointer<Float>) throws {
        guard let format = format(for: type) else { throw DequantizeError.unsupportedType(type) }
        let blockSize = format.valuesPerBlock
        guard count >= 0, count % blockSize == 0 else {
            throw DequantizeError.countNotWholeBlocks(type: type, count: count, blockSize: blockSize)
        }
        let blocks = count / blockSize
        let (needed, overflow) = blocks.multipliedReportingOverflow(by: format.bytesPerBlock)
        guard !overflow else { throw DequantizeError.byteCountOverflow(type: type, count: count) }
        guard s.count >= needed else {
            throw DequantizeError.sourceTooShort(type: type, count: count, needed: needed, available: s.count)
        }
        guard blocks > 0, let base = s.baseAddress else { return }
        format.decodeBlocks(base, blocks: blocks, into: y)
    }

    /// The dispatch table: the block format that decodes `type`, or nil when there is none.
    static func format(for type: GGMLType) -> (any GGMLBlockFormat.Type)? {
        switch type {
        case .f32: return F32Format.self
        case .f16: return F16Format.self
        case .bf16: return BF16Format.self
        case .q4_0: return Q4_0Format.self
        case .q4_1: return Q4_1Format.self
        case .q5_0: return Q5_0Format.self
        case .q5_1: return Q5_1Format.self
        case .q8_0: return Q8_0Format.self
        case .q2_K: return Q2_KFormat.self
        case .q3_K: return Q3_KFormat.self
        case .q4_K: return Q4_KFormat.self
        case .q5_K: return Q5_KFormat.self
        case .q6_K: return Q6_KFormat.self
        case .f64, .i8, .i16, .i32, .i64, .q8_1, .q8_K: return nil
        }
    }

    /// True when `dequantize` can decode `type`.
    public static func supports(_ type: GGMLType) -> Bool { format(for: type) != nil }
}
