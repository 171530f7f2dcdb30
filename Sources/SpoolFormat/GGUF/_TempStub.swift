// TEMPORARY local stub, not committed: replaced by the dequant branch.
public enum GGMLDequantizer {
    public static func dequantize(_ type: GGMLType, from s: UnsafeRawBufferPointer, count: Int, into y: UnsafeMutablePointer<Float>) throws {
        func h(_ o: Int) -> Float { Float(Float16(bitPattern: s.loadUnaligned(fromByteOffset: o, as: UInt16.self))) }
        switch type {
        case .f32: for i in 0..<count { y[i] = s.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
        case .q8_0:
            for b in 0..<(count / 32) { let o = b * 34; let d = h(o); for j in 0..<32 { y[b * 32 + j] = d * Float(Int8(bitPattern: s[o + 2 + j])) } }
        case .q4_1:
            for b in 0..<(count / 32) { let o = b * 20; let d = h(o), m = h(o + 2)
                for j in 0..<16 { let q = s[o + 4 + j]; y[b * 32 + j] = d * Float(q & 15) + m; y[b * 32 + j + 16] = d * Float(q >> 4) + m } }
        default: throw GGUFError.missingKey("stub")
        }
    }
}
