// Scalar reference and portable SIMD versions of the packed-format integer kernels. The x86
// versions (SpoolKernelsAVX2 / SpoolKernelsAVX512 `PackedQuant*`) compute the same integer sums;
// tests compare every level with `reference` under MAX_PACKED_QDOT_REL_ERROR.

public enum PackedQuantGeneric {
    /// Unpacks one 32-value chunk to q[0..<32]: the definition every SIMD unpacking must match.
    public static func unpack32(_ p: UnsafeRawPointer, bits: Int, into q: UnsafeMutablePointer<UInt8>) {
        let b = p.assumingMemoryBound(to: UInt8.self)
        switch bits {
        case 8:
            for i in 0..<32 { q[i] = b[i] }
        case 4:
            for j in 0..<16 { q[j] = b[j] & 15; q[j + 16] = b[j] >> 4 }
        case 2, 3:
            for j in 0..<8 { for k in 0..<4 { q[j + 8 * k] = (b[j] >> UInt8(2 * k)) & 3 } }
            if bits == 3 {
                for i in 0..<32 { q[i] |= ((b[8 + i / 8] >> UInt8(i % 8)) & 1) << 2 }
            }
        default:
            for i in 0..<32 { q[i] = 0 }
        }
    }

    /// (d, m) of group g of row r.
    @inline(__always)
    static func scale(_ m: PackedQuantMatrix, row: Int, group g: Int) -> (d: Float, m: Float) {
        let p = m.scales + (row * (m.cols / m.format.group) + g) * 4
        return (loadF16(p, 0), loadF16(p, 2))
    }

    /// Scalar reference: y = Σ_b d_g(b) d_x(b) Σ_j q_j q_x,j + m_g(b) s_x(b) for one row and one
    /// quantized activation row.
    public static func dotRow(_ m: PackedQuantMatrix, row: Int, _ qx: UnsafePointer<Int8>, _ dx: UnsafePointer<Float>,
                              _ sx: UnsafePointer<Float>) -> Float {
        let f = m.format, nb = m.cols / 32
        let rowQuants = m.quants + row * f.rowBytes(cols: m.cols)
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { buf in
            let q = buf.baseAddress!
            var sum: Float = 0
            for b in 0..<nb {
                unpack32(rowQuants + b * f.chunkBytes, bits: f.bits, into: q)
                var isum: Int32 = 0
                for j in 0..<32 { isum += Int32(q[j]) * Int32(qx[b * 32 + j]) }
                let (d, mw) = scale(m, row: row, group: b * 32 / f.group)
                sum += d * dx[b] * Float(isum) + mw * sx[b]
            }
            return sum
        }
    }

    /// y[t, r] = dotRow for r in rowRange, t in tokenRange.
    public static func referenceBlock(_ m: PackedQuantMatrix, _ x: Q8Activations, into y: UnsafeMutablePointer<Float>,
                                      rowRange: Range<Int>, tokenRange: Range<Int>) {
        let nb = m.cols / 32
        for t in tokenRange {
            for r in rowRange {
                y[t * m.rows + r] = dotRow(m, row: r, x.qs + t * m.cols, x.d + t * nb, x.s + t * nb)
            }
        }
    }

    static let rowTile = 4

    /// Portable SIMD (the aarch64 path): a tile of rows is unpacked once into bytes with vector
    /// shifts and masks, with d and m per block; then each token's blocks meet the tile with 32-lane
    /// integer products (|q * q_x| <= 255 * 128 fits Int16) summed in Int32.
    public static func matmulBlock(_ m: PackedQuantMatrix, _ x: Q8Activations, into y: UnsafeMutablePointer<Float>,
                                   rowRange: Range<Int>, tokenRange: Range<Int>) {
        let f = m.format, nb = m.cols / 32, rb = f.rowBytes(cols: m.cols)
        let tileBytes = rowTile * m.cols + 2 * rowTile * nb * 4
        withUnsafeTemporaryAllocation(byteCount: tileBytes, alignment: 64) { buf in
            let wq = buf.baseAddress!
            let wd = (wq + rowTile * m.cols).assumingMemoryBound(to: Float.self)
            let wm = wd + rowTile * nb
            var r0 = rowRange.lowerBound
            while r0 < rowRange.upperBound {
                let nr = min(rowTile, rowRange.upperBound - r0)
                for i in 0..<nr {
                    let rowQuants = m.quants + (r0 + i) * rb
                    for b in 0..<nb {
                        let (lo, hi) = unpackSIMD(rowQuants + b * f.chunkBytes, bits: f.bits)
                        (wq + (i * nb + b) * 32).storeBytes(of: lo, as: SIMD16<UInt8>.self)
                        (wq + (i * nb + b) * 32 + 16).storeBytes(of: hi, as: SIMD16<UInt8>.self)
                        let (d, mw) = scale(m, row: r0 + i, group: b * 32 / f.group)
                        wd[i * nb + b] = d
                        wm[i * nb + b] = mw
                    }
                }
                for t in tokenRange {
                    let qx = UnsafeRawPointer(x.qs + t * m.cols), dx = x.d + t * nb, sx = x.s + t * nb
                    for i in 0..<nr {
                        var acc: Float = 0
                        for b in 0..<nb {
                            let w = SIMD32<Int16>(truncatingIfNeeded: (wq + (i * nb + b) * 32).load(as: SIMD32<UInt8>.self))
                            let q = SIMD32<Int16>(truncatingIfNeeded: qx.loadUnaligned(fromByteOffset: b * 32, as: SIMD32<Int8>.self))
                            let p = w &* q
                            let isum = (SIMD16<Int32>(truncatingIfNeeded: p.lowHalf) &+ SIMD16<Int32>(truncatingIfNeeded: p.highHalf)).wrappedSum()
                            acc += wd[i * nb + b] * dx[b] * Float(isum) + wm[i * nb + b] * sx[b]
                        }
                        y[t * m.rows + r0 + i] = acc
                    }
                }
                r0 += nr
            }
        }
    }

    /// The 32 quants of one chunk as two vectors (values 0..<16, 16..<32).
    @inline(__always)
    static func unpackSIMD(_ p: UnsafeRawPointer, bits: Int) -> (SIMD16<UInt8>, SIMD16<UInt8>) {
        switch bits {
        case 4:
            let b = p.loadUnaligned(as: SIMD16<UInt8>.self)
            return (b & 15, b &>> 4)
        case 8:
            return (p.loadUnaligned(as: SIMD16<UInt8>.self), p.loadUnaligned(fromByteOffset: 16, as: SIMD16<UInt8>.self))
        case 2, 3:
            let b = p.loadUnaligned(as: SIMD8<UInt8>.self)
            var lo = SIMD16<UInt8>(lowHalf: b & 3, highHalf: (b &>> 2) & 3)
            var hi = SIMD16<UInt8>(lowHalf: (b &>> 4) & 3, highHalf: b &>> 6)
            if bits == 3 {
                let h = p.loadUnaligned(fromByteOffset: 8, as: SIMD4<UInt8>.self)
                let l16 = SIMD16<UInt8>(lowHalf: SIMD8(repeating: h[0]), highHalf: SIMD8(repeating: h[1]))
                let h16 = SIMD16<UInt8>(lowHalf: SIMD8(repeating: h[2]), highHalf: SIMD8(repeating: h[3]))
                lo |= ((l16 &>> bitIndex) & 1) &<< 2
                hi |= ((h16 &>> bitIndex) & 1) &<< 2
            }
            return (lo, hi)
        default:
            return (SIMD16<UInt8>(), SIMD16<UInt8>())
        }
    }

    static let bitIndex = SIMD16<UInt8>(0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7)
}
