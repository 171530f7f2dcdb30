#if arch(x86_64)
import _Builtin_intrinsics.intel

/// Pointers and sizes of one packed-format integer matmul (see SpoolKernels' `PackedQuantGeneric`):
/// W (rows, cols) as .spool quants and (d, m) f16 pairs per group, x quantized (tokens, cols) with
/// per-block d and s, y (tokens, rows).
public struct PackedMatmulArgs {
    public var quants: UnsafeRawPointer
    public var scales: UnsafeRawPointer
    public var rows: Int
    public var cols: Int
    public var bits: Int
    public var group: Int
    public var qs: UnsafePointer<Int8>
    public var d: UnsafePointer<Float>
    public var s: UnsafePointer<Float>
    public var y: UnsafeMutablePointer<Float>
    /// The weights are in the interleaved layout of `PackedPanels` (read only by the AVX-512 kernels).
    public var panels: Bool

    public init(quants: UnsafeRawPointer, scales: UnsafeRawPointer, rows: Int, cols: Int, bits: Int, group: Int,
                qs: UnsafePointer<Int8>, d: UnsafePointer<Float>, s: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                panels: Bool = false) {
        self.quants = quants; self.scales = scales; self.rows = rows; self.cols = cols; self.bits = bits
        self.group = group; self.qs = qs; self.d = d; self.s = s; self.y = y; self.panels = panels
    }

    public var rowBytes: Int { cols / 32 * 4 * bits }
}

/// AVX2 version of `PackedQuantGeneric.matmulBlock`: same integer sums per block.
///
/// A tile of 4 rows is unpacked once to bytes (32 per block) with d and m per block, then every
/// token runs over it from L1 with `vpmaddubsw` (unsigned weights x signed activations) and
/// `vpmaddwd`. 8-bit weights would overflow vpmaddubsw's int16 pair sums (255 * 127 * 2), so they
/// are widened to int16 with the activations and multiplied by `vpmaddwd` alone (exact; a
/// q - 128 form with the sign trick would need Σ q_x exactly, which the f16 s_x does not give).
public enum PackedQuantAVX2 {
    static let rowTile = 4

    /// One chunk's 32 quants as 32 bytes in value order.
    @inline(__always)
    public static func unpackChunk(_ p: UnsafeRawPointer, bits: Int) -> __m256i {
        switch bits {
        case 4:
            return QuantAVX2.unpackNibbles(p)
        case 8:
            return QuantAVX2.load256(p)
        default:
            let v = _mm_loadl_epi64(p.assumingMemoryBound(to: __m128i.self))
            let three = _mm_set1_epi8(3)
            let a = _mm_and_si128(v, three), b = _mm_and_si128(_mm_srli_epi16(v, 2), three)
            let c = _mm_and_si128(_mm_srli_epi16(v, 4), three), d = _mm_and_si128(_mm_srli_epi16(v, 6), three)
            let low = _mm256_set_m128i(_mm_unpacklo_epi64(c, d), _mm_unpacklo_epi64(a, b))
            guard bits == 3 else { return low }
            // Bit i of the UInt32 at byte 8 is bit 2 of q[i]: spread byte k of it over values
            // 8k ..< 8k + 8, test one bit per byte, and add 4 where it is set.
            let h = p.loadUnaligned(fromByteOffset: 8, as: Int32.self)
            let spread = _mm256_shuffle_epi8(
                _mm256_set1_epi32(h),
                _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3))
            let bit = _mm256_set1_epi64x(Int64(bitPattern: 0x8040_2010_0804_0201))   // 1, 2, 4 ... 128 per byte
            let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit)
            return _mm256_or_si256(low, _mm256_and_si256(set, _mm256_set1_epi8(4)))
        }
    }

    @inline(never)
    public static func matmul(_ a: PackedMatmulArgs, rowRange: Range<Int>, tokenRange: Range<Int>) {
        let nb = a.cols / 32, rb = a.rowBytes, cb = 4 * a.bits, groups = a.cols / a.group
        let blocksPerGroupShift = a.group == 32 ? 0 : (a.group == 64 ? 1 : 2)
        let wide = a.bits == 8
        withUnsafeTemporaryAllocation(byteCount: rowTile * a.cols + 2 * rowTile * nb * 4, alignment: 64) { buf in
            let wq = buf.baseAddress!
            let wd = (wq + rowTile * a.cols).assumingMemoryBound(to: Float.self)
            let wm = wd + rowTile * nb
            var r0 = rowRange.lowerBound
            while r0 < rowRange.upperBound {
                let nr = min(rowTile, rowRange.upperBound - r0)
                for i in 0..<nr {
                    let row = a.quants + (r0 + i) * rb
                    let sc = a.scales + (r0 + i) * groups * 4
                    for b in 0..<nb {
                        let g = b >> blocksPerGroupShift
                        let d = QuantAVX2.f16(sc, 4 * g), m = QuantAVX2.f16(sc, 4 * g + 2)
                        wd[i * nb + b] = d
                        wm[i * nb + b] = m
                        _mm256_store_si256(OpaquePointer(wq + (i * nb + b) * 32), unpackChunk(row + b * cb, bits: a.bits))
                    }
                }
                for t in tokenRange {
                    let qx = UnsafeRawPointer(a.qs + t * a.cols), dx = a.d + t * nb, sx = a.s + t * nb
                    if nr == rowTile {
                        var acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps()
                        var acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps()
                        var m0: Float = 0, m1: Float = 0, m2: Float = 0, m3: Float = 0
                        for b in 0..<nb {
                            let q = QuantAVX2.load256(qx + b * 32)
                            let db = dx[b], sb = sx[b]
                            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(wd[b] * db), dot(wq + b * 32, q, qx + b * 32, wide), acc0)
                            acc1 = _mm256_fmadd_ps(_mm256_set1_ps(wd[nb + b] * db), dot(wq + (nb + b) * 32, q, qx + b * 32, wide), acc1)
                            acc2 = _mm256_fmadd_ps(_mm256_set1_ps(wd[2 * nb + b] * db), dot(wq + (2 * nb + b) * 32, q, qx + b * 32, wide), acc2)
                            acc3 = _mm256_fmadd_ps(_mm256_set1_ps(wd[3 * nb + b] * db), dot(wq + (3 * nb + b) * 32, q, qx + b * 32, wide), acc3)
                            m0 += wm[b] * sb; m1 += wm[nb + b] * sb; m2 += wm[2 * nb + b] * sb; m3 += wm[3 * nb + b] * sb
                        }
                        let y = a.y + t * a.rows + r0
                        y[0] = QuantAVX2.hsum(acc0) + m0; y[1] = QuantAVX2.hsum(acc1) + m1
                        y[2] = QuantAVX2.hsum(acc2) + m2; y[3] = QuantAVX2.hsum(acc3) + m3
                    } else {
                        for i in 0..<nr {
                            var acc = _mm256_setzero_ps()
                            var m: Float = 0
                            for b in 0..<nb {
                                acc = _mm256_fmadd_ps(_mm256_set1_ps(wd[i * nb + b] * dx[b]),
                                                      dot(wq + (i * nb + b) * 32, QuantAVX2.load256(qx + b * 32), qx + b * 32, wide), acc)
                                m += wm[i * nb + b] * sx[b]
                            }
                            a.y[t * a.rows + r0 + i] = QuantAVX2.hsum(acc) + m
                        }
                    }
                }
                r0 += nr
            }
        }
    }

    /// 8 int32 partial sums of a tile block with an activation block (q, also at qp), as floats.
    @inline(__always)
    static func dot(_ w: UnsafeMutableRawPointer, _ q: __m256i, _ qp: UnsafeRawPointer, _ wide: Bool) -> __m256 {
        if wide {
            let w0 = _mm256_cvtepu8_epi16(_mm_load_si128(UnsafeRawPointer(w).assumingMemoryBound(to: __m128i.self)))
            let w1 = _mm256_cvtepu8_epi16(_mm_load_si128(UnsafeRawPointer(w + 16).assumingMemoryBound(to: __m128i.self)))
            let x0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(qp.assumingMemoryBound(to: __m128i.self)))
            let x1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((qp + 16).assumingMemoryBound(to: __m128i.self)))
            return _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1)))
        }
        return QuantAVX2.dotU8S8(_mm256_load_si256(OpaquePointer(w)), q)
    }
}
#endif
