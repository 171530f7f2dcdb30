// The .spool group-quantized formats (SpoolFormat's `QuantLayout`, restated here because the
// kernels do not depend on SpoolFormat; a SpoolModel test checks that the two unpackings agree):
//
//   a (rows, cols) tensor: quants row-major, each row cols / 32 chunks of 4 * bits bytes; then,
//   row-major, one (d: f16, m: f16) pair per group of g values (g = 32, 64 or 128).
//   w[r, c] = d * q + m,  q unsigned, 0 ..< 2^bits.
//
// Inside a 32-value chunk:
//   8 bits: byte i = q[i]
//   4 bits: byte j (0..<16) = q[j] | q[j+16] << 4
//   2 bits: byte j (0..<8)  = q[j] | q[j+8] << 2 | q[j+16] << 4 | q[j+24] << 6
//   3 bits: the 2-bit layout of the low two bits (8 bytes), then a little-endian UInt32 whose bit i
//           is bit 2 of q[i]
//
// The integer kernels multiply these with 8-bit activations (`Q8Activations`, blocks of 32): a
// chunk is one activation block, so with q_x, d_x, s_x = d_x * Σ q_x of block b in group g,
//   y = Σ_b d_g d_x(b) Σ_j q_j q_x,j  +  m_g s_x(b).

/// Bits and group size of a packed .spool tensor.
public struct PackedQuantFormat: Sendable, Hashable, CustomStringConvertible {
    public let bits: Int
    public let group: Int

    public static let supportedBits = [2, 3, 4, 8]
    public static let supportedGroups = [32, 64, 128]

    /// nil when the combination has no kernel.
    public init?(bits: Int, group: Int) {
        guard Self.supportedBits.contains(bits), Self.supportedGroups.contains(group) else { return nil }
        self.bits = bits
        self.group = group
    }

    /// Bytes of one 32-value chunk.
    public var chunkBytes: Int { 4 * bits }
    /// Bytes of quants in one row of `cols` values.
    public func rowBytes(cols: Int) -> Int { cols / 32 * chunkBytes }

    public var description: String { "\(bits)-bit/g\(group)" }
}

/// One packed matrix: its quants, its (d, m) pairs and its shape.
public struct PackedQuantMatrix {
    // Pointers into memory the weight's owner keeps alive; only read.
    public let quants: UnsafeRawPointer
    public let scales: UnsafeRawPointer
    public let rows: Int
    public let cols: Int
    public let format: PackedQuantFormat
    /// true: the interleaved layout of `PackedPanels` (4-bit only), false: the row layout above.
    public let panels: Bool

    public init(quants: UnsafeRawPointer, scales: UnsafeRawPointer, rows: Int, cols: Int, format: PackedQuantFormat,
                panels: Bool = false) {
        self.quants = quants
        self.scales = scales
        self.rows = rows
        self.cols = cols
        self.format = format
        self.panels = panels
    }
}
