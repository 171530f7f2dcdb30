import CSpoolCRC
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every .spool extent.
/// `update` uses the CPU's CRC-32C instruction where there is one (x86_64 SSE4.2, AArch64 CRC;
/// CSpoolCRC), several times faster than the portable table-driven `updatePortable`, which is the
/// reference and the fallback (also taken with `SPOOL_DISABLE_SIMD=1` or `SPOOL_KERNELS=generic`).
public enum CRC32C {
    /// Whether `update` runs the CPU instruction. Read once.
    public static let usesHardware: Bool = {
        if let v = getenv("SPOOL_DISABLE_SIMD").map({ String(cString: $0) }), !v.isEmpty, v != "0" { return false }
        if let v = getenv("SPOOL_KERNELS").map({ String(cString: $0) }), v == "generic" { return false }
        return spool_crc32c_hw_available() != 0
    }()

    /// tables[k][b]: the CRC of byte b followed by k zero bytes.
    static let tables: [[UInt32]] = {
        var t = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for b in 0..<256 {
            var c = UInt32(b)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            t[0][b] = c
        }
        for k in 1..<8 {
            for b in 0..<256 { t[k][b] = (t[k - 1][b] >> 8) ^ t[0][Int(t[k - 1][b] & 0xFF)] }
        }
        return t
    }()

    /// Continues `crc` (0 to start) over `bytes`.
    public static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard usesHardware, let base = bytes.baseAddress, bytes.count > 0 else { return updatePortable(crc, bytes) }
        return ~spool_crc32c_hw(~crc, base, bytes.count)
    }

    /// The table-driven ("slicing-by-8") version: eight bytes per step, no CPU-specific instructions.
    public static func updatePortable(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var c = ~crc
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        let n = bytes.count
        var i = 0
        tables.withUnsafeBufferPointer { tb in
            let t0 = tb[0], t1 = tb[1], t2 = tb[2], t3 = tb[3], t4 = tb[4], t5 = tb[5], t6 = tb[6], t7 = tb[7]
            while i + 8 <= n {
                let lo = base.loadUnaligned(fromByteOffset: i, as: UInt32.self).littleEndian ^ c
                let hi = base.loadUnaligned(fromByteOffset: i + 4, as: UInt32.self).littleEndian
                c = t7[Int(lo & 0xFF)] ^ t6[Int((lo >> 8) & 0xFF)] ^ t5[Int((lo >> 16) & 0xFF)] ^ t4[Int(lo >> 24)]
                    ^ t3[Int(hi & 0xFF)] ^ t2[Int((hi >> 8) & 0xFF)] ^ t1[Int((hi >> 16) & 0xFF)] ^ t0[Int(hi >> 24)]
                i += 8
            }
            while i < n {
                c = (c >> 8) ^ t0[Int((c ^ UInt32(base.load(fromByteOffset: i, as: UInt8.self))) & 0xFF)]
                i += 1
            }
        }
        return ~c
    }

    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 { update(0, bytes) }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { checksum($0) } }

    /// The header's spelling of a checksum: eight lowercase hex digits (fixed width, so the writer can
    /// patch checksums into an already laid-out header without changing its length).
    public static func hex(_ c: UInt32) -> String {
        let s = String(c, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }

    public static func parse(_ s: String) -> UInt32? {
        guard s.utf8.count == 8 else { return nil }
        return UInt32(s, radix: 16)
    }
}
