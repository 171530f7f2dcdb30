#if arch(x86_64)
import _Builtin_intrinsics.intel
import SpoolKernelsAVX2

/// Rows-in-lanes matmul for the .spool formats (prefill): the same integer sums as
/// `PackedQuantGeneric.referenceBlock`, with the float work amortized over 16 rows.
///
/// A panel of 16 weight rows is unpacked once per call into bytes laid out (cols / 4, 16, 4): one
/// 64-byte vector holds 4 consecutive k of each of the 16 rows. A token's 4 activation bytes at k
/// are broadcast to the 16 lanes, so one `vpdpbusd` advances 16 (row, token) sums by 4 k, and a
/// 32-k block is 8 of them with no horizontal reduction. Tokens go 8 at a time (8 int32
/// accumulators and 8 float accumulators, 16 of the 32 zmm registers), so each weight vector
/// loaded is used 8 times.
///
/// Per (32-k block, token) the float work is one convert, one multiply (the rows' d by the
/// token's d_x) and one FMA, shared by 16 rows and 8 `vpdpbusd`; the offset term
/// Σ_g m_g · Σ_{b in g} s_x(b) is one FMA per (group, token). The old tile kernel (`matmulPacked`)
/// spent 3 float instructions per single `vpdpbusd` instead.
extension QuantAVX512 {
    /// Rows per panel: the 16 int32 lanes of a zmm.
    public static let panelRows = 16
    /// Tokens per pass over a panel (accumulator registers).
    static let panelTokens = 8

    /// y[t, r] for r in rowRange, t in tokenRange through 16-row panels. Row ranges that are a
    /// multiple of `panelRows` waste nothing; a shorter last panel is padded with zero rows.
    @inline(never)
    public static func matmulPackedPanels(_ a: PackedMatmulArgs, rowRange: Range<Int>, tokenRange: Range<Int>) {
        guard !rowRange.isEmpty, !tokenRange.isEmpty else { return }
        let nb = a.cols / 32, groups = a.cols / a.group
        let wqBytes = a.cols * panelRows, scaleBytes = groups * panelRows * 4
        // The offsets multiply Σ_{b in g} s_x(b): with groups of 32 that is s_x itself, otherwise
        // the sums are made once per call for all its tokens (not per panel).
        let bpg = a.group / 32, sumBytes = bpg == 1 ? 0 : tokenRange.count * groups * 4
        withUnsafeTemporaryAllocation(byteCount: wqBytes + 2 * scaleBytes + sumBytes, alignment: 64) { buf in
            let wq = buf.baseAddress!
            let dg = (wq + wqBytes).assumingMemoryBound(to: Float.self)   // (groups, 16) d per row
            let mg = dg + groups * panelRows                               // (groups, 16) m per row
            let sums = mg + groups * panelRows                             // (tokens, groups) Σ s_x per group
            let sg: UnsafePointer<Float>, sStride: Int
            if bpg == 1 {
                sg = a.s + tokenRange.lowerBound * nb
                sStride = nb
            } else {
                for t in 0..<tokenRange.count {
                    let sx = a.s + (tokenRange.lowerBound + t) * nb
                    for g in 0..<groups {
                        var acc: Float = 0
                        for b in 0..<bpg { acc += sx[g * bpg + b] }
                        sums[t * groups + g] = acc
                    }
                }
                sg = UnsafePointer(sums)
                sStride = groups
            }
            var r0 = rowRange.lowerBound
            while r0 < rowRange.upperBound {
                let nr = min(panelRows, rowRange.upperBound - r0)
                unpackPanel(a, wq: wq, dg: dg, mg: mg, r0: r0, nr: nr)
                var t0 = tokenRange.lowerBound
                while t0 < tokenRange.upperBound {
                    let nt = min(panelTokens, tokenRange.upperBound - t0)
                    let s = sg + (t0 - tokenRange.lowerBound) * sStride
                    panelTile(a, wq: wq, dg: dg, mg: mg, s: s, sStride: sStride, r0: r0, nr: nr, t0: t0, nt: nt, nb: nb)
                    t0 += nt
                }
                r0 += nr
            }
        }
    }

    /// Writes rows r0 ..< r0 + nr into the panel; rows nr ..< 16 become zeros (weights and scales),
    /// so their lanes compute 0 and are not stored.
    @inline(__always)
    static func unpackPanel(_ a: PackedMatmulArgs, wq: UnsafeMutableRawPointer, dg: UnsafeMutablePointer<Float>,
                            mg: UnsafeMutablePointer<Float>, r0: Int, nr: Int) {
        if a.panels {
            // Interleaved weights come in whole panels (the caller splits rows at panel bounds).
            unpackInterleavedPanel(a, wq: wq, dg: dg, mg: mg, r0: r0)
            return
        }
        let nb = a.cols / 32, rb = a.rowBytes, cb = 4 * a.bits, groups = a.cols / a.group
        if nr < panelRows {
            wq.initializeMemory(as: UInt8.self, repeating: 0, count: a.cols * panelRows)
            dg.initialize(repeating: 0, count: 2 * groups * panelRows)
        }
        withUnsafeTemporaryAllocation(byteCount: 32, alignment: 32) { tmp in
            let chunk = tmp.baseAddress!
            for i in 0..<nr {
                let row = a.quants + (r0 + i) * rb
                for b in 0..<nb {
                    _mm256_store_si256(OpaquePointer(chunk), unpackChunk(row + b * cb, bits: a.bits))
                    // Dword q of the chunk (k = 32b + 4q ..< +4) goes to lane i of vector 8b + q.
                    let dst = wq + b * 8 * 64 + i * 4
                    for q in 0..<8 {
                        dst.storeBytes(of: chunk.load(fromByteOffset: 4 * q, as: UInt32.self), toByteOffset: 64 * q, as: UInt32.self)
                    }
                }
                let sc = a.scales + (r0 + i) * groups * 4
                for g in 0..<groups {
                    dg[g * panelRows + i] = f16(sc, 4 * g)
                    mg[g * panelRows + i] = f16(sc, 4 * g + 2)
                }
            }
        }
    }

    /// Up to 8 tokens t0 ..< t0 + nt against one panel. Missing tokens (nt < 8) repeat the last
    /// one and are not stored. s: token t0's Σ s_x per group, the next token's `sStride` further.
    @inline(__always)
    static func panelTile(_ a: PackedMatmulArgs, wq: UnsafeMutableRawPointer, dg: UnsafeMutablePointer<Float>,
                          mg: UnsafeMutablePointer<Float>, s: UnsafePointer<Float>, sStride: Int,
                          r0: Int, nr: Int, t0: Int, nt: Int, nb: Int) {
        let cols = a.cols, bpg = a.group / 32
        // Wrapping arithmetic: the offsets are inside buffers the caller sized, and overflow
        // checks here are per (panel, 8 tokens).
        @inline(__always) func tok(_ k: Int) -> Int { t0 &+ min(k, nt &- 1) }
        @inline(__always) func xq(_ k: Int) -> UnsafeRawPointer { UnsafeRawPointer(a.qs) + tok(k) &* cols }
        @inline(__always) func xd(_ k: Int) -> UnsafePointer<Float> { a.d + tok(k) &* nb }
        let x0 = xq(0), x1 = xq(1), x2 = xq(2), x3 = xq(3), x4 = xq(4), x5 = xq(5), x6 = xq(6), x7 = xq(7)
        let d0 = xd(0), d1 = xd(1), d2 = xd(2), d3 = xd(3), d4 = xd(4), d5 = xd(5), d6 = xd(6), d7 = xd(7)
        @inline(__always) func bcast(_ x: UnsafeRawPointer, _ o: Int) -> __m512i {
            _mm512_set1_epi32(x.loadUnaligned(fromByteOffset: o, as: Int32.self))
        }
        @inline(__always) func sOf(_ k: Int, _ g: Int) -> __m512 { _mm512_set1_ps(s[min(k, nt &- 1) &* sStride &+ g]) }

        var f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps(), f2 = _mm512_setzero_ps(), f3 = _mm512_setzero_ps()
        var f4 = _mm512_setzero_ps(), f5 = _mm512_setzero_ps(), f6 = _mm512_setzero_ps(), f7 = _mm512_setzero_ps()
        var g = 0
        for b in 0..<nb {
            var i0 = _mm512_setzero_si512(), i1 = _mm512_setzero_si512(), i2 = _mm512_setzero_si512(), i3 = _mm512_setzero_si512()
            var i4 = _mm512_setzero_si512(), i5 = _mm512_setzero_si512(), i6 = _mm512_setzero_si512(), i7 = _mm512_setzero_si512()
            let wb = wq + b &* 512
            for q in 0..<8 {
                let w = _mm512_load_si512(wb + 64 &* q)
                let o = 32 &* b &+ 4 &* q
                i0 = _mm512_dpbusd_epi32(i0, w, bcast(x0, o))
                i1 = _mm512_dpbusd_epi32(i1, w, bcast(x1, o))
                i2 = _mm512_dpbusd_epi32(i2, w, bcast(x2, o))
                i3 = _mm512_dpbusd_epi32(i3, w, bcast(x3, o))
                i4 = _mm512_dpbusd_epi32(i4, w, bcast(x4, o))
                i5 = _mm512_dpbusd_epi32(i5, w, bcast(x5, o))
                i6 = _mm512_dpbusd_epi32(i6, w, bcast(x6, o))
                i7 = _mm512_dpbusd_epi32(i7, w, bcast(x7, o))
            }
            let dw = _mm512_load_ps(dg + g * panelRows)
            f0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0), _mm512_mul_ps(dw, _mm512_set1_ps(d0[b])), f0)
            f1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1), _mm512_mul_ps(dw, _mm512_set1_ps(d1[b])), f1)
            f2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i2), _mm512_mul_ps(dw, _mm512_set1_ps(d2[b])), f2)
            f3 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i3), _mm512_mul_ps(dw, _mm512_set1_ps(d3[b])), f3)
            f4 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i4), _mm512_mul_ps(dw, _mm512_set1_ps(d4[b])), f4)
            f5 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i5), _mm512_mul_ps(dw, _mm512_set1_ps(d5[b])), f5)
            f6 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i6), _mm512_mul_ps(dw, _mm512_set1_ps(d6[b])), f6)
            f7 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i7), _mm512_mul_ps(dw, _mm512_set1_ps(d7[b])), f7)
            if b & (bpg - 1) == bpg - 1 {   // bpg is 1, 2 or 4
                // Group g ends: + m_g(row) · Σ s_x over the group, per token.
                let mw = _mm512_load_ps(mg + g * panelRows)
                f0 = _mm512_fmadd_ps(mw, sOf(0, g), f0)
                f1 = _mm512_fmadd_ps(mw, sOf(1, g), f1)
                f2 = _mm512_fmadd_ps(mw, sOf(2, g), f2)
                f3 = _mm512_fmadd_ps(mw, sOf(3, g), f3)
                f4 = _mm512_fmadd_ps(mw, sOf(4, g), f4)
                f5 = _mm512_fmadd_ps(mw, sOf(5, g), f5)
                f6 = _mm512_fmadd_ps(mw, sOf(6, g), f6)
                f7 = _mm512_fmadd_ps(mw, sOf(7, g), f7)
                g += 1
            }
        }
        // y (tokens, rows): the 16 rows of token t are contiguous.
        let mask: __mmask16 = nr == panelRows ? 0xFFFF : __mmask16((1 << nr) - 1)
        @inline(__always) func store(_ k: Int, _ f: __m512) {
            guard k < nt else { return }
            _mm512_mask_storeu_ps(a.y + (t0 + k) * a.rows + r0, mask, f)
        }
        store(0, f0); store(1, f1); store(2, f2); store(3, f3)
        store(4, f4); store(5, f5); store(6, f6); store(7, f7)
    }
}
#endif
