#if arch(x86_64)
import _Builtin_intrinsics.intel
import SpoolKernelsAVX2
import CSpoolSys

/// AVX-512 VNNI version of `PackedQuantGeneric.matmulBlock` for the .spool formats. It is the
/// q4_1 kernel of `QuantAVX512` (4 x 3 register tiles of `vpdpbusd`, block scales applied as
/// vectors) with another unpacking: a chunk of any bit width becomes 32 unsigned bytes (0 ... 255,
/// the unsigned side of vpdpbusd, whose int32 sums cannot overflow), each block gets the (d, m) of
/// its group, and the offset term is Σ_b m_g(b) s_x(b) as for q4_1.
extension QuantAVX512 {
    @inline(never)
    public static func matmulPacked(_ p: PackedMatmulArgs, rowRange: Range<Int>, tokenRange: Range<Int>) {
        if p.panels {
            // Interleaved 4-bit weights (whole panels; see `PanelMatvecAVX512.swift`).
            if tokenRange.count <= decodeMaxTokens {
                for t in tokenRange { matvecPanels4(p, rowRange: rowRange, t: t) }
            } else {
                matmulPackedPanels(p, rowRange: rowRange, tokenRange: tokenRange)
            }
            return
        }
        if p.bits == 4 && (p.cols / 32) % 2 == 0 && tokenRange.count <= decodeMaxTokens {
            for t in tokenRange { matvec4(p, rowRange: rowRange, t: t) }
            return
        }
        if tokenRange.count >= panelMinTokens {
            matmulPackedPanels(p, rowRange: rowRange, tokenRange: tokenRange)
            return
        }
        let a = QuantMatmulArgs(w: p.quants, rows: p.rows, cols: p.cols, qs: p.qs, d: p.d, s: p.s, y: p.y)
        tiled(a, rowRange: rowRange, tokenRange: tokenRange, q8: false) { tile, r0, nr in unpackPacked(p, tile, r0: r0, nr: nr) }
    }

    /// Up to this many tokens, 4-bit weights are multiplied straight from their packed bytes
    /// (`matvec4`) instead of through an unpacked tile that only one token would use.
    static let decodeMaxTokens = 3

    /// How many rows ahead `matvec4` prefetches (a multiple of its 4-row step: 16 rows of 576
    /// 4-bit weights are ~4.6 KB, a few hundred nanoseconds of streaming ahead).
    static let prefetchRows = 16

    /// From this many tokens on, the rows-in-lanes panels (`matmulPackedPanels`) are used.
    public static let panelMinTokens = 4

    /// One token, 4-bit weights (an even number of chunks per row): a pair of chunks (32 bytes; two
    /// groups, one group or half of one) is broadcast to both halves of a zmm, shifted by 0 in the low half and 4 in
    /// the high half and masked, giving the nibbles in the order [chunk 0 low, chunk 1 low,
    /// chunk 0 high, chunk 1 high] (16 values each). The token's activation bytes are permuted
    /// once to that order, so one `vpdpbusd` takes 64 weights with no shuffle per row; its 16
    /// int32 lanes are scaled by d_x of their block (a per-token vector) and by the group's d.
    /// The offset term is Σ_g m_g Σ_{b in g} s_x(b), a short scalar loop per row.
    @inline(__always)
    static func matvec4(_ a: PackedMatmulArgs, rowRange: Range<Int>, t: Int) {
        let nb = a.cols / 32, np = nb / 2, groups = a.cols / a.group, pairShift = a.group == 128 ? 1 : 0
        let rb = a.rowBytes
        // Scratch: permuted activations, their block scales, per-group sums, and the (d, m) of four
        // rows' groups as floats (8 * groups, padded to whole vectors).
        let sfCount = (8 * groups + 15) / 16 * 16
        withUnsafeTemporaryAllocation(byteCount: a.cols + np * 64 + groups * 4 + sfCount * 4 + 64, alignment: 64) { buf in
            let xp = buf.baseAddress!
            let dxv = (xp + a.cols).assumingMemoryBound(to: Float.self)
            let sg = dxv + np * 16
            let sf = sg + groups + (16 - groups % 16) % 16
            let qx = UnsafeRawPointer(a.qs + t * a.cols), dx = a.d + t * nb, sx = a.s + t * nb
            permuteActivations(qx, dx, pairs: np, into: xp, dxv)
            let bpg = a.group / 32
            for g in 0..<groups {
                var s: Float = 0
                for b in 0..<bpg { s += sx[g * bpg + b] }
                sg[g] = s
            }
            let shifts = _mm512_mask_blend_epi64(0xF0, _mm512_setzero_si512(), _mm512_set1_epi16(4))
            let low = _mm512_set1_epi8(0x0F)
            @inline(__always) func weights(_ row: UnsafeRawPointer, _ p: Int) -> __m512i {
                let v = _mm512_broadcast_i64x4(_mm256_loadu_si256((row + 32 * p).assumingMemoryBound(to: __m256i.self)))
                return _mm512_and_si512(_mm512_srlv_epi16(v, shifts), low)
            }
            // `g32` is a constant at each call site (the loops below are written out once per
            // case), so the group-size test is not evaluated per step.
            // `sc`: a row's (d, m) per group already widened to floats (`widen`), so a step
            // broadcasts its d straight from memory instead of converting one f16 per step.
            @inline(__always) func step(_ acc: __m512, _ row: UnsafeRawPointer, _ sc: UnsafePointer<Float>, _ p: Int,
                                        _ x: __m512i, _ d: __m512, _ g32: Bool) -> __m512 {
                let dot = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), weights(row, p), x))
                // Groups of 32: lanes 0-3 and 8-11 are chunk 0 (group 2p), 4-7 and 12-15 chunk 1.
                let dw = g32
                    ? _mm512_mask_blend_ps(0xF0F0, _mm512_set1_ps(sc[4 * p]), _mm512_set1_ps(sc[4 * p + 2]))
                    : _mm512_set1_ps(sc[2 * (p >> pairShift)])
                return _mm512_fmadd_ps(_mm512_mul_ps(dot, d), dw, acc)
            }
            /// Widens `halves` f16 values (rows' (d, m) pairs, contiguous) to floats at `sf`; the
            /// last vector's load is masked so nothing past the scales is read.
            @inline(__always) func widen(_ from: UnsafeRawPointer, halves: Int) {
                var i = 0
                while i < halves {
                    let n = min(16, halves - i)
                    let mask = __mmask16(truncatingIfNeeded: (1 << n) - 1)
                    let h = _mm256_maskz_loadu_epi16(mask, from + 2 * i)
                    _mm512_store_ps(sf + i, _mm512_cvtph_ps(h))
                    i += 16
                }
            }
            // Decode streams every weight byte once; the loop's arithmetic between loads keeps too
            // few cache-line misses in flight for the hardware prefetcher alone, so the rows
            // `prefetchRows` ahead are requested explicitly (one prefetch per 64-byte line).
            let end = rowRange.upperBound
            @inline(__always) func prefetch(_ r: Int) {
                let ahead = r + prefetchRows
                guard ahead < end else { return }
                let from = a.quants + ahead * rb
                var o = 0
                while o < 4 * rb {
                    spool_prefetch(from + o)
                    o += 64
                }
            }
            @inline(__always) func four(_ r: Int, _ g32: Bool) {
                let w0 = a.quants + r * rb, w1 = w0 + rb, w2 = w1 + rb, w3 = w2 + rb
                widen(a.scales + r * groups * 4, halves: 8 * groups)
                let s0 = UnsafePointer(sf), s1 = s0 + 2 * groups, s2 = s1 + 2 * groups, s3 = s2 + 2 * groups
                var c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps(), c2 = _mm512_setzero_ps(), c3 = _mm512_setzero_ps()
                for p in 0..<np {
                    let x = _mm512_load_si512(xp + 64 * p), d = _mm512_load_ps(dxv + 16 * p)
                    c0 = step(c0, w0, s0, p, x, d, g32)
                    c1 = step(c1, w1, s1, p, x, d, g32)
                    c2 = step(c2, w2, s2, p, x, d, g32)
                    c3 = step(c3, w3, s3, p, x, d, g32)
                }
                let y = a.y + t * a.rows
                y[r] = _mm512_reduce_add_ps(c0) + offset(s0)
                y[r + 1] = _mm512_reduce_add_ps(c1) + offset(s1)
                y[r + 2] = _mm512_reduce_add_ps(c2) + offset(s2)
                y[r + 3] = _mm512_reduce_add_ps(c3) + offset(s3)
            }
            @inline(__always) func offset(_ sc: UnsafePointer<Float>) -> Float {
                var m: Float = 0
                for g in 0..<groups { m += sc[2 * g + 1] * sg[g] }
                return m
            }
            let y = a.y + t * a.rows
            var r = rowRange.lowerBound
            if a.group == 32 {
                while r + 4 <= end {
                    prefetch(r)
                    four(r, true)
                    r += 4
                }
            } else {
                while r + 4 <= end {
                    prefetch(r)
                    four(r, false)
                    r += 4
                }
            }
            while r < end {
                let w0 = a.quants + r * rb
                widen(a.scales + r * groups * 4, halves: 2 * groups)
                let s0 = UnsafePointer(sf)
                var c0 = _mm512_setzero_ps()
                for p in 0..<np {
                    c0 = step(c0, w0, s0, p, _mm512_load_si512(xp + 64 * p), _mm512_load_ps(dxv + 16 * p), a.group == 32)
                }
                y[r] = _mm512_reduce_add_ps(c0) + offset(s0)
                r += 1
            }
        }
    }

    @inline(__always)
    static func unpackPacked(_ a: PackedMatmulArgs, _ tile: Tile, r0: Int, nr: Int) {
        let nb = a.cols / 32, rb = a.rowBytes, cb = 4 * a.bits, np = tile.np, groups = a.cols / a.group
        let shift = a.group == 32 ? 0 : (a.group == 64 ? 1 : 2)
        let wm = tile.aux.assumingMemoryBound(to: Float.self)
        for i in 0..<nr {
            let row = a.quants + (r0 + i) * rb, sc = a.scales + (r0 + i) * groups * 4
            for b in 0..<nb {
                let g = b >> shift
                _mm256_store_si256(OpaquePointer(tile.wq + i * np * 64 + b * 32), unpackChunk(row + b * cb, bits: a.bits))
                _mm256_store_ps(tile.dw + i * np * 16 + b * 8, _mm256_set1_ps(f16(sc, 4 * g)))
                wm[b * rowTile + i] = f16(sc, 4 * g + 2)
            }
        }
        // The offsets are block-major (see `QuantAVX512.Tile`): zero the rows past nr.
        for b in 0..<nb { for i in nr..<rowTile { wm[b * rowTile + i] = 0 } }
        zeroPadding(tile, nb: nb, nr: nr, auxIsPairs: false)
    }

    /// One chunk's 32 quants as 32 bytes in value order (as `PackedQuantAVX2.unpackChunk`; repeated
    /// here so that it inlines into this module's loops).
    @inline(__always)
    static func unpackChunk(_ p: UnsafeRawPointer, bits: Int) -> __m256i {
        switch bits {
        case 4:
            let b = _mm_loadu_si128(p.assumingMemoryBound(to: __m128i.self))
            let low = _mm_set1_epi8(0x0F)
            return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), low), _mm_and_si128(b, low))
        case 8:
            return _mm256_loadu_si256(p.assumingMemoryBound(to: __m256i.self))
        default:
            let v = _mm_loadl_epi64(p.assumingMemoryBound(to: __m128i.self))
            let three = _mm_set1_epi8(3)
            let a = _mm_and_si128(v, three), b = _mm_and_si128(_mm_srli_epi16(v, 2), three)
            let c = _mm_and_si128(_mm_srli_epi16(v, 4), three), d = _mm_and_si128(_mm_srli_epi16(v, 6), three)
            let low = _mm256_set_m128i(_mm_unpacklo_epi64(c, d), _mm_unpacklo_epi64(a, b))
            guard bits == 3 else { return low }
            // Bit i of the UInt32 at byte 8 is bit 2 of q[i]: a byte mask, 4 where it is set.
            let h = p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
            return _mm256_mask_add_epi8(low, h, low, _mm256_set1_epi8(4))
        }
    }
}
#endif
