/// The packed layout of a group-quantized tensor in a .spool file. Stated once here; the packer,
/// the reader's size checks and the kernels all use these definitions.
///
/// A quantized tensor has shape (rows, cols), cols a multiple of its group size g (32, 64 or 128).
/// Value w[r, c] ≈ d * q + m, q an unsigned `bits`-bit integer, (d, m) the float16 scale and
/// offset of its group (m = -d * zero: the zero point stored as a float, so it is not rounded).
///
/// Bytes: first the quants, row-major, each row `cols * bits / 8` bytes, made of 32-value chunks
/// (`4 * bits` bytes each); then zero padding to a 64-byte boundary; then, row-major, one
/// (d: f16, m: f16) pair per group (4 bytes), so (rows, cols / g, 2) float16 values.
///
/// Inside a 32-value chunk holding q[0..<32]:
/// - 8 bits: byte i = q[i]                                                           (32 bytes)
/// - 4 bits: byte j (0..<16) = q[j] | q[j+16] << 4                                  (16 bytes)
/// - 2 bits: byte j (0..<8)  = q[j] | q[j+8] << 2 | q[j+16] << 4 | q[j+24] << 6        (8 bytes)
/// - 3 bits: bytes 0..<8 hold the low two bits of each q in the 2-bit layout; bytes 8..<12 are a
///           little-endian UInt32 whose bit i is bit 2 of q[i]                       (12 bytes)
/// So every layout unpacks with shifts and masks of whole vectors (no value straddles a byte).
///
/// Compact grids (tensor field `grid` = "i8"): after the quants and the padding, per row two
/// float16 bounds (D, M) (4 bytes), then per (row, group) an unsigned 8-bit d code and a signed
/// 8-bit m code (2 bytes); (d, m) = `compactGrid(D, M, codes)`. 16 bits per group instead of 32.
public enum QuantLayout {
    public static let supportedBits: Set<Int> = [2, 3, 4, 8]
    public static let supportedGroups: Set<Int> = [32, 64, 128]
    /// Bits value that marks a float32 tensor (stored as little-endian floats, no group).
    public static let floatBits = 32
    /// Values per packing chunk.
    public static let chunk = 32
    /// Alignment of the scale block inside a tensor, and of every tensor inside its extent.
    public static let tensorAlignment = 64

    public static func chunkBytes(bits: Int) -> Int { 4 * bits }

    /// Bytes of quants in one row.
    public static func rowBytes(cols: Int, bits: Int) -> Int { cols / chunk * chunkBytes(bits: bits) }

    /// Offset of the (d, m) block from the tensor's start.
    public static func scaleOffset(rows: Int, cols: Int, bits: Int) -> Int {
        align(rows * rowBytes(cols: cols, bits: bits), tensorAlignment)
    }

    /// The tensor field `grid` of a tensor whose groups store 8-bit (d, m) codes (see `compactGrid`).
    public static let compactGridName = "i8"

    /// Total bytes of a tensor; nil when the sizes overflow or the combination is not valid.
    /// `compactGrid`: the (d, m) block is replaced by per-row bounds and per-group 8-bit codes.
    public static func tensorBytes(shape: [Int], bits: Int, group: Int, compactGrid: Bool) -> Int? {
        guard compactGrid else { return tensorBytes(shape: shape, bits: bits, group: group) }
        guard bits != floatBits, let plain = tensorBytes(shape: shape, bits: bits, group: group) else { return nil }
        let rows = shape.count == 2 ? shape[0] : 1, cols = shape[shape.count - 1]
        // Same quants; the 4-byte (d, m) pairs become 2 bytes of codes, plus 4 bytes of bounds per row.
        return plain - rows * (cols / group) * 2 + rows * 4
    }

    /// A compact-grid group's (d, m) as float16: d = D * dCode / 255, m = M * mCode / 127, D and M
    /// its row's float16 bounds. The packer quantizes against exactly these values, and the loader
    /// expands the codes with this same function, so both see the same grid.
    @inline(__always)
    public static func compactGrid(dBound: Float16, mBound: Float16, dCode: UInt8, mCode: Int8) -> (d: Float16, m: Float16) {
        (Float16(Float(dBound) * Float(dCode) / 255), Float16(Float(mBound) * Float(mCode) / 127))
    }

    /// Writes a compact-grid tensor's bounds ((D, M) float16 bits per row) and codes ((d, m) per
    /// group) after its quants; `expandCompactGrids` reads them back.
    public static func storeCompactGrids(bounds: [UInt16], codes: [UInt8], rows: Int, cols: Int, bits: Int, into tensor: UnsafeMutableRawPointer) {
        let b = tensor + scaleOffset(rows: rows, cols: cols, bits: bits)
        for (i, v) in bounds.enumerated() { b.storeBytes(of: v.littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
        for (i, c) in codes.enumerated() { b.storeBytes(of: c, toByteOffset: 4 * rows + i, as: UInt8.self) }
    }

    /// Expands a compact-grid tensor's bounds and codes (at `scaleOffset` of `tensor`) into the
    /// plain layout's (rows, cols / group, (d, m) float16) block at `scales`.
    public static func expandCompactGrids(tensor: UnsafeRawPointer, rows: Int, cols: Int, bits: Int, group: Int, into scales: UnsafeMutableRawPointer) {
        let groups = cols / group
        let bounds = tensor + scaleOffset(rows: rows, cols: cols, bits: bits)
        let codes = bounds + 4 * rows
        for r in 0..<rows {
            let dBound = Float16(bitPattern: UInt16(littleEndian: bounds.loadUnaligned(fromByteOffset: 4 * r, as: UInt16.self)))
            let mBound = Float16(bitPattern: UInt16(littleEndian: bounds.loadUnaligned(fromByteOffset: 4 * r + 2, as: UInt16.self)))
            for k in 0..<groups {
                let i = r * groups + k
                let (d, m) = compactGrid(dBound: dBound, mBound: mBound, dCode: codes.load(fromByteOffset: 2 * i, as: UInt8.self),
                                         mCode: codes.load(fromByteOffset: 2 * i + 1, as: Int8.self))
                scales.storeBytes(of: d.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt16.self)
                scales.storeBytes(of: m.bitPattern.littleEndian, toByteOffset: 4 * i + 2, as: UInt16.self)
            }
        }
    }

    /// Total bytes of a tensor; nil when the sizes overflow or the combination is not valid.
    public static func tensorBytes(shape: [Int], bits: Int, group: Int) -> Int? {
        guard (1...2).contains(shape.count), shape.allSatisfy({ $0 > 0 && $0 <= 1 << 31 }) else { return nil }
        let rows = shape.count == 2 ? shape[0] : 1, cols = shape[shape.count - 1]
        let (n, overflow) = rows.multipliedReportingOverflow(by: cols)
        guard !overflow, n <= 1 << 40 else { return nil }
        if bits == floatBits { return group == 0 ? n * 4 : nil }
        guard supportedBits.contains(bits), supportedGroups.contains(group), cols % group == 0 else { return nil }
        return scaleOffset(rows: rows, cols: cols, bits: bits) + rows * (cols / group) * 4
    }

    @inline(__always)
    public static func align(_ x: Int, _ a: Int) -> Int { (x + a - 1) / a * a }

    /// Packs 32 quants (each < 2^bits) into `chunkBytes(bits)` bytes.
    public static func pack32(_ q: UnsafePointer<UInt8>, bits: Int, into p: UnsafeMutablePointer<UInt8>) {
        switch bits {
        case 8:
            p.update(from: q, count: 32)
        case 4:
            for j in 0..<16 { p[j] = q[j] | q[j + 16] << 4 }
        case 2:
            for j in 0..<8 { p[j] = q[j] | q[j + 8] << 2 | q[j + 16] << 4 | q[j + 24] << 6 }
        case 3:
            for j in 0..<8 { p[j] = (q[j] & 3) | (q[j + 8] & 3) << 2 | (q[j + 16] & 3) << 4 | (q[j + 24] & 3) << 6 }
            var hi: UInt32 = 0
            for i in 0..<32 { hi |= UInt32(q[i] >> 2) << UInt32(i) }
            for k in 0..<4 { p[8 + k] = UInt8(truncatingIfNeeded: hi >> UInt32(8 * k)) }
        default:
            break
        }
    }

    /// Unpacks one chunk into 32 quants; the scalar reference for every kernel's unpacking.
    public static func unpack32(_ p: UnsafePointer<UInt8>, bits: Int, into q: UnsafeMutablePointer<UInt8>) {
        switch bits {
        case 8:
            q.update(from: p, count: 32)
        case 4:
            for j in 0..<16 { q[j] = p[j] & 15; q[j + 16] = p[j] >> 4 }
        case 2:
            for j in 0..<8 { for k in 0..<4 { q[j + 8 * k] = (p[j] >> UInt8(2 * k)) & 3 } }
        case 3:
            for j in 0..<8 { for k in 0..<4 { q[j + 8 * k] = (p[j] >> UInt8(2 * k)) & 3 } }
            for i in 0..<32 { q[i] |= ((p[8 + i / 8] >> UInt8(i % 8)) & 1) << 2 }
        default:
            break
        }
    }
}
