// The unquantized ggml types: one value per "block".

/// GGML_TYPE_F32: IEEE binary32, little-endian.
enum F32Format: GGMLBlockFormat {
    static let type = GGMLType.f32
    static let valuesPerBlock = 1
    static let bytesPerBlock = 4

    @inline(__always)
    static func decodeBlock(_ b: GGMLBlockBytes, into y: UnsafeMutablePointer<Float>) {
        y[0] = Float(bitPattern: b.uint32(0))
    }

    /// A plain copy: the file's bytes already are little-endian floats, like the host's.
    static func decodeBlocks(_ src: UnsafeRawPointer, blocks: Int, into y: UnsafeMutablePointer<Float>) {
        #if _endian(little)
        UnsafeMutableRawPointer(y).copyMemory(from: src, byteCount: blocks * bytesPerBlock)
        #else
        for i in 0 ..< blocks { decodeBlock(GGMLBlockBytes(src + i * bytesPerBlock), into: y + i) }
        #endif
    }
}

/// GGML_TYPE_F16: IEEE binary16 (ggml_fp16_t).
enum F16Format: GGMLBlockFormat {
    static let type = GGMLType.f16
    static let valuesPerBlock = 1
    static let bytesPerBlock = 2

    @inline(__always)
    static func decodeBlock(_ b: GGMLBlockBytes, into y: UnsafeMutablePointer<Float>) {
        y[0] = b.half(0)
    }
}

/// GGML_TYPE_BF16: the top 16 bits of a binary32, so widening is a shift.
enum BF16Format: GGMLBlockFormat {
    static let type = GGMLType.bf16
    static let valuesPerBlock = 1
    static let bytesPerBlock = 2

    @inline(__always)
    static func decodeBlock(_ b: GGMLBlockBytes, into y: UnsafeMutablePointer<Float>) {
        y[0] = Float(bitPattern: UInt32(b.uint16(0)) << 16)
    }
}
