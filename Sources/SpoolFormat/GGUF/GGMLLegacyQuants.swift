// The 32-value block formats (block_q4_0 ... block_q8_0 in ggml-common.h).
//
// The 4- and 5-bit types pack two values per byte of `qs`: the low nibble of qs[j] is value j and
// the high nibble is value j + 16. The 5-bit types keep each value's fifth bit in the 32-bit
// little-endian word `qh`: bit j belongs to value j.

/// block_q4_0: y = d * (q - 8), q in 0...15.
enum Q4_0Format: GGMLBlockFormat {
    static let type = GGMLType.q4_0
    static let valuesPerBlock = 32
    static let d = 0          // f16 scale
    static let qs = 2         // [16] 4-bit values
    static let bytesPerBlock = qs + 16

    @inline(__always)
    static func decodeBlock(_ b: GGMLBlockBytes, into y: UnsafeMutablePointer<Float>) {
        let scale = b.half(d)
        for j in 0 ..< 16 {
            let q = b[qs + j]
            y[j] = scale * Float(Int32(q & 0x0F) - 8)
            y[j + 16] = scale * Float(Int32(q >> 4) - 8)
        }
    }
}

/// block_q4_1: y = d * q + m, q in 0...15.
enum Q4_1Format: GGMLBlockFormat {
    static let type = GGMLType.q4_1
    static let valuesPerBlock = 32
    static let d = 0          // f16 scale
    static let m = 2          // f16 minimum (offset)
    static let qs = 4         // [16] 4-bit values
    static let bytesPerBlock = qs + 16

    @inline(__always)
    static func decodeBlock(_ b: GGMLBlockBytes, into y: UnsafeMutablePointer<Float>) {
        let scale = b.half(d), offset = b.half(m)
        for j in 0 ..< 16 {
            let q = b[qs + j]
            y[j] = scale * Float(q & 0x0F) + offset
            y[j + 16] = scale * Float(q >> 4) + offset
        }
    }
}

/// block_q5_0: y = d * (q - 16), q in 0...31 (4 low bits in qs, the fifth in qh).
enum Q5_0Format: GGMLBlockFormat {
    static let type = GGMLType.q5_0
    static let valuesPerBlock = 32
    static let d = 0          // f16 scale
    static let qh = 2         // u32 (unaligned): fifth bits, bit j for value j
    static let qs = 6         // [16] low 4 bits
    static let bytesPerBlock = qs + 16

    @inline(__always)
    static func decodeBlock(_ b: GGMLBlockBytes, into y: UnsafeMutablePointer<Float>) {
        let scale = b.half(d), high = b.uint32(qh)
        for j in 0 ..< 16 {
            let q = UInt32(b[qs + j])
            let lo = (q & 0x0F) | (((high >> UInt32(j)) & 1) << 4)
            let hi = (q >> 4) | (((high >> UInt32(j + 16)) & 1) << 4)
            y[j] = scale * Float(Int32(lo) - 16)
            y[j + 16] = scale * Float(Int32(hi) - 16)
        }
    }
}

/// block_q5_1: y = d * q + m, q in 0...31.
enum Q5_1Format: GGMLBlockFormat {
    static let type = GGMLType.q5_1
    static let valuesPerBlock = 32
    static let d = 0          // f16 scale
    static let m = 2          // f16 minimum (offset)
    static let qh = 4         // u32: fifth bits, bit j for value j
    static let qs = 8         // [16] low 4 bits
    static let bytesPerBlock = qs + 16

    @inline(__always)
    static func decodeBlock(_ b: GGMLBlockBytes, into y: UnsafeMutablePointer<Float>) {
        let scale = b.half(d), offset = b.half(m), high = b.uint32(qh)
        for j in 0 ..< 16 {
            let q = UInt32(b[qs + j])
            let lo = (q & 0x0F) | (((high >> UInt32(j)) & 1) << 4)
            let hi = (q >> 4) | (((high >> UInt32(j + 16)) & 1) << 4)
            y[j] = scale * Float(lo) + offset
            y[j + 16] = scale * Float(hi) + offset
        }
    }
}

/// block_q8_0: y = d * q, q a signed byte.
enum Q8_0Format: GGMLBlockFormat {
    static let type = GGMLType.q8_0
    static let valuesPerBlock = 32
    static let d = 0          // f16 scale
    static let qs = 2         // [32] int8 values
    static let bytesPerBlock = qs + 32

    @inline(__always)
    static func decodeBlock(_ b: GGMLBlockBytes, into y: UnsafeMutablePointer<Float>) {
        let scale = b.half(d)
        for j in 0 ..< 32 { y[j] = scale * Float(b.int8(qs + j)) }
    }
}
