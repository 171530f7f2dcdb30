import SpoolFormat

/// Dot products of one packed row with float activations: Σ_g d_g · Σ_{i∈g} q_i x_i + m_g · Σ_{i∈g} x_i.
/// The group sums of x are computed once per token (`groupSums`), so the inner loop is only q · x.
/// `reference` is the scalar definition (through `QuantLayout.unpack32`); `simd` unpacks 32 values
/// with vector shifts and masks in portable Swift SIMD. Tests compare them (MAX_PACKED_DOT_ERROR).
public enum PackedDot {
    /// Σ x over each group of `group` values: (cols / group).
    public static func groupSums(_ x: UnsafePointer<Float>, cols: Int, group: Int, into s: UnsafeMutablePointer<Float>) {
        for g in 0..<(cols / group) {
            var acc: Float = 0
            for i in 0..<group { acc += x[g * group + i] }
            s[g] = acc
        }
    }

    @inline(__always)
    static func grid(_ scales: UnsafeRawPointer, _ i: Int) -> (d: Float, m: Float) {
        let d = Float16(bitPattern: UInt16(littleEndian: scales.loadUnaligned(fromByteOffset: 4 * i, as: UInt16.self)))
        let m = Float16(bitPattern: UInt16(littleEndian: scales.loadUnaligned(fromByteOffset: 4 * i + 2, as: UInt16.self)))
        return (Float(d), Float(m))
    }

    /// Scalar reference. `quants` and `scales` point at row r's quants and (d, m) pairs.
    public static func reference(quants: UnsafePointer<UInt8>, scales: UnsafeRawPointer, bits: Int, group: Int, cols: Int,
                                 x: UnsafePointer<Float>, xSums: UnsafePointer<Float>) -> Float {
        var q = [UInt8](repeating: 0, count: 32)
        var acc: Float = 0
        let chunkBytes = QuantLayout.chunkBytes(bits: bits)
        for g in 0..<(cols / group) {
            var qx: Float = 0
            for c in 0..<(group / 32) {
                let start = g * group + c * 32
                q.withUnsafeMutableBufferPointer { QuantLayout.unpack32(quants + start / 32 * chunkBytes, bits: bits, into: $0.baseAddress!) }
                for i in 0..<32 { qx += Float(q[i]) * x[start + i] }
            }
            let (d, m) = grid(scales, g)
            acc += d * qx + m * xSums[g]
        }
        return acc
    }

    public static func simd(quants: UnsafePointer<UInt8>, scales: UnsafeRawPointer, bits: Int, group: Int, cols: Int,
                            x: UnsafePointer<Float>, xSums: UnsafePointer<Float>) -> Float {
        let chunksPerGroup = group / 32
        let chunkBytes = QuantLayout.chunkBytes(bits: bits)
        let xr = UnsafeRawPointer(x), qr = UnsafeRawPointer(quants)
        var acc: Float = 0
        var chunk = 0
        for g in 0..<(cols / group) {
            var qx = SIMD16<Float>()
            for _ in 0..<chunksPerGroup {
                let (lo, hi) = unpack(qr + chunk * chunkBytes, bits: bits)
                qx += lo * xr.loadUnaligned(fromByteOffset: 128 * chunk, as: SIMD16<Float>.self)
                qx += hi * xr.loadUnaligned(fromByteOffset: 128 * chunk + 64, as: SIMD16<Float>.self)
                chunk += 1
            }
            let (d, m) = grid(scales, g)
            acc += d * qx.sum() + m * xSums[g]
        }
        return acc
    }

    static let bitIndex16 = SIMD16<UInt32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)

    /// The 32 quants of one chunk as floats: values 0..<16 and 16..<32.
    @inline(__always)
    static func unpack(_ p: UnsafeRawPointer, bits: Int) -> (SIMD16<Float>, SIMD16<Float>) {
        switch bits {
        case 4:
            let b = p.loadUnaligned(as: SIMD16<UInt8>.self)
            return (SIMD16<Float>(b & 15), SIMD16<Float>(b &>> 4))
        case 8:
            return (SIMD16<Float>(p.loadUnaligned(as: SIMD16<UInt8>.self)),
                    SIMD16<Float>(p.loadUnaligned(fromByteOffset: 16, as: SIMD16<UInt8>.self)))
        case 2, 3:
            let b = p.loadUnaligned(as: SIMD8<UInt8>.self)
            var lo = SIMD16<Float>(SIMD16<UInt8>(lowHalf: b & 3, highHalf: (b &>> 2) & 3))
            var hi = SIMD16<Float>(SIMD16<UInt8>(lowHalf: (b &>> 4) & 3, highHalf: b &>> 6))
            if bits == 3 {
                let h = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
                let l16 = (SIMD16<UInt32>(repeating: h & 0xFFFF) &>> bitIndex16) & 1
                let h16 = (SIMD16<UInt32>(repeating: h >> 16) &>> bitIndex16) & 1
                lo += 4 * SIMD16<Float>(l16)
                hi += 4 * SIMD16<Float>(h16)
            }
            return (lo, hi)
        default:
            return (SIMD16<Float>(), SIMD16<Float>())
        }
    }

    /// Decodes one row to floats (scalar; used for embedding lookups and the batched path's tiles).
    public static func decodeRow(quants: UnsafePointer<UInt8>, scales: UnsafeRawPointer, bits: Int, group: Int, cols: Int,
                                 into out: UnsafeMutablePointer<Float>) {
        let chunkBytes = QuantLayout.chunkBytes(bits: bits)
        let qr = UnsafeRawPointer(quants)
        let raw = UnsafeMutableRawPointer(out)
        for chunk in 0..<(cols / 32) {
            let (d, m) = grid(scales, chunk * 32 / group)
            let (lo, hi) = unpack(qr + chunk * chunkBytes, bits: bits)
            raw.storeBytes(of: lo * d + m, toByteOffset: 128 * chunk, as: SIMD16<Float>.self)
            raw.storeBytes(of: hi * d + m, toByteOffset: 128 * chunk + 64, as: SIMD16<Float>.self)
        }
    }
}
