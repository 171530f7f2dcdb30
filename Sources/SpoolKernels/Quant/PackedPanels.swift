// The interleaved ("panel") layout of 4-bit .spool weights, built at load time for the
// rows-in-lanes kernels (llama.cpp does the same at load for Q4_0 on some CPUs: its "repacked"
// buffer types). The file keeps the row layout of `PackedQuant.swift`; only memory changes.
//
// Rows go 16 at a time (a panel: the 16 int32 lanes of a zmm). For panel P (rows 16P ..< 16P+16):
//
//   quants, at P * 16 * rowBytes:  chunk c (32 values, 16 bytes per row) at c * 256; inside it,
//       dword j (0..<4, bytes 4j ..< 4j+4 of the row's chunk) of row 16P + i at j * 64 + i * 4.
//       One 64-byte load is then dword j of all 16 rows: its low nibbles are q[4j ..< 4j+4] and
//       its high nibbles q[16+4j ..< 16+4j+4] of every row.
//   scales, at P * 16 * groups * 4: group g at g * 64: the 16 rows' d (f16), then their 16 m.
//
// The sizes are those of the row layout, so a panel matrix replaces a row one byte for byte.

public enum PackedPanels {
    /// Rows per panel.
    public static let rows = 16

    /// Whether a matrix can be interleaved: 4-bit, whole panels, whole chunks.
    public static func supports(rows: Int, cols: Int, format: PackedQuantFormat) -> Bool {
        format.bits == 4 && rows > 0 && rows % Self.rows == 0 && cols > 0 && cols % 32 == 0
    }

    /// Byte offset of dword j of chunk c of row r in the panel quants.
    @inline(__always)
    static func quantOffset(row r: Int, chunk c: Int, dword j: Int, rowBytes: Int) -> Int {
        (r / rows) * rows * rowBytes + c * 256 + j * 64 + (r % rows) * 4
    }

    /// Byte offset of row r's d for group g in the panel scales (its m is 32 bytes further).
    @inline(__always)
    static func scaleOffset(row r: Int, group g: Int, groups: Int) -> Int {
        (r / rows) * rows * groups * 4 + g * 64 + (r % rows) * 2
    }

    /// Writes the panel layout of a row-layout matrix into `toQuants` / `toScales` (each as large as
    /// its source; they must not overlap it). `supports` must hold.
    public static func interleave(_ m: PackedQuantMatrix, toQuants: UnsafeMutableRawPointer, toScales: UnsafeMutableRawPointer) {
        let rowBytes = m.format.rowBytes(cols: m.cols), groups = m.cols / m.format.group
        for r in 0..<m.rows {
            let src = m.quants + r * rowBytes
            for c in 0..<(m.cols / 32) {
                for j in 0..<4 {
                    toQuants.storeBytes(of: src.loadUnaligned(fromByteOffset: c * 16 + j * 4, as: UInt32.self),
                                        toByteOffset: quantOffset(row: r, chunk: c, dword: j, rowBytes: rowBytes), as: UInt32.self)
                }
            }
            let sc = m.scales + r * groups * 4
            for g in 0..<groups {
                let o = scaleOffset(row: r, group: g, groups: groups)
                toScales.storeBytes(of: sc.loadUnaligned(fromByteOffset: 4 * g, as: UInt16.self), toByteOffset: o, as: UInt16.self)
                toScales.storeBytes(of: sc.loadUnaligned(fromByteOffset: 4 * g + 2, as: UInt16.self), toByteOffset: o + 32, as: UInt16.self)
            }
        }
    }

    /// Row r of a panel matrix back in the row layout: its rowBytes quants and its (d, m) pairs.
    public static func gatherRow(_ m: PackedQuantMatrix, _ r: Int, toQuants: UnsafeMutableRawPointer, toScales: UnsafeMutableRawPointer) {
        let rowBytes = m.format.rowBytes(cols: m.cols), groups = m.cols / m.format.group
        for c in 0..<(m.cols / 32) {
            for j in 0..<4 {
                toQuants.storeBytes(of: m.quants.loadUnaligned(fromByteOffset: quantOffset(row: r, chunk: c, dword: j, rowBytes: rowBytes), as: UInt32.self),
                                    toByteOffset: c * 16 + j * 4, as: UInt32.self)
            }
        }
        for g in 0..<groups {
            let o = scaleOffset(row: r, group: g, groups: groups)
            toScales.storeBytes(of: m.scales.loadUnaligned(fromByteOffset: o, as: UInt16.self), toByteOffset: 4 * g, as: UInt16.self)
            toScales.storeBytes(of: m.scales.loadUnaligned(fromByteOffset: o + 32, as: UInt16.self), toByteOffset: 4 * g + 2, as: UInt16.self)
        }
    }

    /// Rows `rowRange` of a panel matrix as a row-layout matrix of `rowRange.count` rows, for the
    /// kernels that only read the row layout (the generic and AVX2 levels).
    public static func withRowLayout<R>(_ m: PackedQuantMatrix, rows rowRange: Range<Int>, _ body: (PackedQuantMatrix) -> R) -> R {
        let rowBytes = m.format.rowBytes(cols: m.cols), scaleBytes = m.cols / m.format.group * 4
        return withUnsafeTemporaryAllocation(byteCount: max(1, rowRange.count * (rowBytes + scaleBytes)), alignment: 64) { buf in
            let q = buf.baseAddress!, s = q + rowRange.count * rowBytes
            for (i, r) in rowRange.enumerated() { gatherRow(m, r, toQuants: q + i * rowBytes, toScales: s + i * scaleBytes) }
            return body(PackedQuantMatrix(quants: UnsafeRawPointer(q), scales: UnsafeRawPointer(s), rows: rowRange.count,
                                          cols: m.cols, format: m.format))
        }
    }

    /// Scalar reference of the panel matvec: y[t, r] for r in rowRange, t in tokenRange, reading
    /// the panel layout directly (the integer sums of `PackedQuantGeneric.dotRow`).
    public static func referenceBlock(_ m: PackedQuantMatrix, _ x: Q8Activations, into y: UnsafeMutablePointer<Float>,
                                      rowRange: Range<Int>, tokenRange: Range<Int>) {
        let rowBytes = m.format.rowBytes(cols: m.cols), groups = m.cols / m.format.group, nb = m.cols / 32
        for t in tokenRange {
            let qx = x.qs + t * m.cols, dx = x.d + t * nb, sx = x.s + t * nb
            for r in rowRange {
                var sum: Float = 0
                for c in 0..<nb {
                    var isum: Int32 = 0
                    for j in 0..<4 {
                        let w = m.quants.loadUnaligned(fromByteOffset: quantOffset(row: r, chunk: c, dword: j, rowBytes: rowBytes), as: UInt32.self)
                        for k in 0..<4 {
                            let byte = Int32((w >> UInt32(8 * k)) & 0xFF)
                            isum += (byte & 15) * Int32(qx[c * 32 + 4 * j + k]) + (byte >> 4) * Int32(qx[c * 32 + 16 + 4 * j + k])
                        }
                    }
                    let o = scaleOffset(row: r, group: c * 32 / m.format.group, groups: groups)
                    let d = loadF16(m.scales, o), mw = loadF16(m.scales, o + 32)
                    sum += d * dx[c] * Float(isum) + mw * sx[c]
                }
                y[t * m.rows + r] = sum
            }
        }
    }
}
