// The k-quant super-block formats (block_q2_K ... block_q6_K in ggml-common.h, QK_K = 256).
//
// A super-block of 256 values is split into sub-blocks (16 values for Q2_K/Q3_K/Q6_K, 32 for
// Q4_K/Q5_K), each with its own small integer scale (and for some types a minimum), which is
// multiplied by the super-block's f16 `d` (and `dmin`).
//
// Bit planes are interleaved in 128-value halves: the 2-bit types take value 32*j + l of a half
// from bits 2j...2j+1 of qs[l] (j = 0...3, l = 0...31); the 4-bit types take value l of a 64-value
// chunk from the low nibble of qs[l] and value 32 + l from the high nibble. High bits (Q3_K hmask,
// Q5_K qh) are planes of 32 bytes: bit k of byte l belongs to value 32*k + l.

/// block_q2_K: y = d * (scale & 15) * q - dmin * (scale >> 4), q in 0...3, one scale byte per
/// 16 values.
enum Q2_KFormat: GGMLBlockFormat {
    static let type = GGMLType.q2_K
    static let valuesPerBlock = 256
    static let scales = 0     // [16] low nibble: scale, high nibble: minimum, one per 16 values
    static let qs = 16        // [64] 2-bit values, four per byte
    static let d = 80         // f16 super-scale for the scales
    static let dmin = 82      // f16 super-scale for the minimums
    static let bytesPerBlock = dmin + 2

    @inline(__always)
    static func decodeBlock(_ b: GGMLBlockBytes, into y: UnsafeMutablePointer<Float>) {
        let dAll = b.half(d), minAll = b.half(dmin)
        for half in 0 ..< 2 {
            let q = qs + 32 * half
            for j in 0 ..< 4 {
                let shift = UInt8(2 * j)
                for part in 0 ..< 2 {              // two 16-value sub-blocks per bit plane
                    let sc = b[scales + 8 * half + 2 * j + part]
                    let dl = dAll * Float(sc & 0x0F), ml = minAll * Float(sc >> 4)
                    let out = y + 128 * half + 32 * j + 16 * part
                    for l in 0 ..< 16 {
                        out[l] = dl * Float((b[q + 16 * part + l] >> shift) & 3) - ml
                    }
                }
            }
        }
    }
}

/// block_q3_K: y = d * (scale - 32) * (q - 4 * (1 - h)), q in 0...3 from qs, h the bit from hmask;
/// sixteen 6-bit scales (one per 16 values) packed in 12 bytes.
enum Q3_KFormat: GGMLBlockFormat {
    static let type = GGMLType.q3_K
    static let valuesPerBlock = 256
    static let hmask = 0      // [32] high bits: bit k of byte l for value 32k + l; clear means subtract 4
    static let qs = 32        // [64] low 2 bits, four per byte
    static let scales = 96    // [12] 6-bit scales: low nibbles in bytes 0...7, top 2 bits in bytes 8...11
    static let d = 108        // f16 super-scale
    static let bytesPerBlock = d + 2

    /// Scale `i` (0...15) minus its bias of 32. Its low 4 bits are the low nibble of byte i
    /// (i < 8) or the high nibble of byte i - 8; its top 2 bits are bits 2*(i/4) of byte 8 + i%4.
    @inline(__always)
    static func scale(_ b: GGMLBlockBytes, _ i: Int) -> Int32 {
        let low = i < 8 ? b[scales + i] & 0x0F : b[scales + i - 8] >> 4
        let top = (b[scales + 8 + (i & 3)] >> UInt8(2 * (i >> 2))) & 3
        return Int32(low | (top << 4)) - 32
    }

    @inline(__always)
    static func decodeBlock(_ b: GGMLBlockBytes, into y: UnsafeMutablePointer<Float>) {
        let dAll = b.half(d)
        for half in 0 ..< 2 {
            let q = qs + 32 * half
            for j in 0 ..< 4 {
                let shift = UInt8(2 * j)
                let plane = UInt8(4 * half + j)     // hmask bit for these 32 values
                for part in 0 ..< 2 {
                    let dl = dAll * Float(scale(b, 8 * half + 2 * j + part))
                    let out = y + 128 * half + 32 * j + 16 * part
                    for l in 0 ..< 16 {
                        let k = 16 * part + l
                        let low = Int32((b[q + k] >> shift) & 3)
                        let high = Int32((b[hmask + k] >> plane) & 1)
                        out[l] = dl * Float(low - 4 + 4 * high)
                    }
                }
            }
        }
    }
}

/// The packed 6-bit (scale, min) pairs shared by Q4_K and Q5_K: eight pairs in 12 bytes. Pairs
/// 0...3 are the low 6 bits of bytes 0...3 (scale) and 4...7 (min); pairs 4...7 keep their low
/// nibbles in bytes 8...11 (scale low, min high) and their top 2 bits in the spare top bits of
/// bytes 0...3 (scale) and 4...7 (min).
@inline(__always)
func kQuantScaleMin(_ b: GGMLBlockBytes, at offset: Int, _ j: Int) -> (scale: UInt8, min: UInt8) {
    if j < 4 {
        return (b[offset + j] & 63, b[offset + j + 4] & 63)
    }
    let packed = b[offset + j + 4]
    return ((packed & 0x0F) | ((b[offset + j - 4] >> 6) << 4),
            (packed >> 4) | ((b[offset + j] >> 6) << 4))
}

/// block_q4_K: y = d * scale * q - dmin * min, q in 0...15, one (scale, min) per 32 values.
enum Q4_KFormat: GGMLBlockFormat {
    static let type = GGMLType.q4_K
    static let valuesPerBlock = 256
    static let d = 0          // f16 super-scale for the scales
    static let dmin = 2       // f16 super-scale for the minimums
    static let scales = 4     // [12] eight packed 6-bit (scale, min) pairs, see kQuantScaleMin
    static let qs = 16        // [128] 4-bit values: chunk c of 64 uses qs[32c ..< 32c+32], low then high nibbles
    static let bytesPerBlock = qs + 128

    @inline(__always)
    static func decodeBlock(_ b: GGMLBlockBytes, into y: UnsafeMutablePointer<Float>) {
        let dAll = b.half(d), minAll = b.half(dmin)
        for chunk in 0 ..< 4 {
            let (s0, m0) = kQuantScaleMin(b, at: scales, 2 * chunk)
            let (s1, m1) = kQuantScaleMin(b, at: scales, 2 * chunk + 1)
            let d0 = dAll * Float(s0), o0 = minAll * Float(m0)
            let d1 = dAll * Float(s1), o1 = minAll * Float(m1)
            let q = qs + 32 * chunk, out = y + 64 * chunk
            for l in 0 ..< 32 {
                let v = b[q + l]
                out[l] = d0 * Float(v & 0x0F) - o0
                out[l + 32] = d1 * Float(v >> 4) - o1
            }
        }
    }
}

/// block_q5_K: like Q4_K with a fifth bit per value from qh, q in 0...31.
enum Q5_KFormat: GGMLBlockFormat {
    static let type = GGMLType.q5_K
    static let valuesPerBlock = 256
    static let d = 0          // f16 super-scale for the scales
    static let dmin = 2       // f16 super-scale for the minimums
    static let scales = 4     // [12] eight packed 6-bit (scale, min) pairs, see kQuantScaleMin
    static let qh = 16        // [32] fifth bits: bit k of byte l for value 32k + l
    static let qs = 48        // [128] low 4 bits, laid out as in Q4_K
    static let bytesPerBlock = qs + 128

    @inline(__always)
    static func decodeBlock(_ b: GGMLBlockBytes, into y: UnsafeMutablePointer<Float>) {
        let dAll = b.half(d), minAll = b.half(dmin)
        for chunk in 0 ..< 4 {
            let (s0, m0) = kQuantScaleMin(b, at: scales, 2 * chunk)
            let (s1, m1) = kQuantScaleMin(b, at: scales, 2 * chunk + 1)
            let d0 = dAll * Float(s0), o0 = minAll * Float(m0)
            let d1 = dAll * Float(s1), o1 = minAll * Float(m1)
            let q = qs + 32 * chunk, out = y + 64 * chunk
            let bit0 = UInt8(2 * chunk), bit1 = UInt8(2 * chunk + 1)
            for l in 0 ..< 32 {
                let v = b[q + l], h = b[qh + l]
                out[l] = d0 * Float((v & 0x0F) | (((h >> bit0) & 1) << 4)) - o0
                out[l + 32] = d1 * Float((v >> 4) | (((h >> bit1) & 1) << 4)) - o1
            }
        }
    }
}

/// block_q6_K: y = d * scale * (q - 32), q in 0...63 (low 4 bits in ql, top 2 in qh), one signed
/// 8-bit scale per 16 values.
enum Q6_KFormat: GGMLBlockFormat {
    static let type = GGMLType.q6_K
    static let valuesPerBlock = 256
    static let ql = 0         // [128] low 4 bits: half h, value 32k + l (k = 0...3) in ql[64h + l + 32(k & 1)], nibble k >> 1
    static let qh = 128       // [64] top 2 bits: half h, value 32k + l in bits 2k...2k+1 of qh[32h + l]
    static let scales = 192   // [16] int8 scales, one per 16 values
    static let d = 208        // f16 super-scale
    static let bytesPerBlock = d + 2

    @inline(__always)
    static func decodeBlock(_ b: GGMLBlockBytes, into y: UnsafeMutablePointer<Float>) {
        let dAll = b.half(d)
        for half in 0 ..< 2 {
            let lo = ql + 64 * half, hi = qh + 32 * half, sc = scales + 8 * half
            let out = y + 128 * half
            for part in 0 ..< 2 {                  // l in 0..<16 or 16..<32: scale index changes
                let d0 = dAll * Float(b.int8(sc + part))
                let d1 = dAll * Float(b.int8(sc + part + 2))
                let d2 = dAll * Float(b.int8(sc + part + 4))
                let d3 = dAll * Float(b.int8(sc + part + 6))
                for l in 16 * part ..< 16 * part + 16 {
                    let a = b[lo + l], c = b[lo + l + 32], h = b[hi + l]
                    let q0 = Int32((a & 0x0F) | ((h & 3) << 4)) - 32
                    let q1 = Int32((c & 0x0F) | (((h >> 2) & 3) << 4)) - 32
                    let q2 = Int32((a >> 4) | (((h >> 4) & 3) << 4)) - 32
                    let q3 = Int32((c >> 4) | (((h >> 6) & 3) << 4)) - 32
                    out[l] = d0 * Float(q0)
                    out[l + 32] = d1 * Float(q1)
                    out[l + 64] = d2 * Float(q2)
                    out[l + 96] = d3 * Float(q3)
                }
            }
        }
    }
}
