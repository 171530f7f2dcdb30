#if arch(x86_64)
import _Builtin_intrinsics.intel
import SpoolKernelsAVX2

/// Decode (one token) on 4-bit weights in the interleaved layout (`PackedPanels` in
/// SpoolKernels): 16 rows in the 16 int32 lanes, so the float work of a 32-value block (one
/// convert and one FMA by the token's d_x) and of a group (the rows' d and m widened by one
/// `vcvtph2ps` each, two FMAs) is shared by 16 rows, and the result is stored as one vector with
/// no horizontal sum.
///
/// One 64-byte load holds dword j of a chunk for the 16 rows: masked, its low nibbles are
/// q[4j ..< 4j+4] of every row, shifted and masked its high nibbles q[16+4j ..< 16+4j+4]; the
/// token's 4 activation bytes at those k are broadcast to all lanes, and one `vpdpbusd` advances
/// 16 row sums by 4 values. A chunk is 4 loads and 8 `vpdpbusd` into two accumulators.
///
/// The arithmetic is that of `PackedPanels.referenceBlock` (exact integer sums per block), with
/// d_x applied per block before d_g per group.
extension QuantAVX512 {
    @inline(__always)
    static func matvecPanels4(_ a: PackedMatmulArgs, rowRange: Range<Int>, t: Int) {
        let nb = a.cols / 32, groups = a.cols / a.group, bpg = a.group / 32
        let panelQuantBytes = panelRows * a.rowBytes, panelScaleBytes = panelRows * groups * 4
        let qx = UnsafeRawPointer(a.qs + t * a.cols), dx = a.d + t * nb, sx = a.s + t * nb
        withUnsafeTemporaryAllocation(of: Float.self, capacity: groups) { sums in
            // Σ s_x over each group: the offset term is m_g of the 16 rows times this.
            let sg = sums.baseAddress!
            for g in 0..<groups {
                var s: Float = 0
                for b in 0..<bpg { s += sx[g &* bpg &+ b] }
                sg[g] = s
            }
            let low = _mm512_set1_epi8(0x0F)
            @inline(__always) func bcast(_ o: Int) -> __m512i {
                _mm512_set1_epi32(qx.loadUnaligned(fromByteOffset: o, as: Int32.self))
            }
            let y = a.y + t * a.rows
            var p = rowRange.lowerBound / panelRows
            let pEnd = (rowRange.upperBound + panelRows - 1) / panelRows
            while p < pEnd {
                let wq = a.quants + p &* panelQuantBytes, sc = a.scales + p &* panelScaleBytes
                var acc = _mm512_setzero_ps()
                var b = 0
                for g in 0..<groups {
                    var gacc = _mm512_setzero_ps()
                    for _ in 0..<bpg {
                        let w = wq + b &* 256, o = b &* 32
                        let v0 = _mm512_loadu_si512(w), v1 = _mm512_loadu_si512(w + 64)
                        let v2 = _mm512_loadu_si512(w + 128), v3 = _mm512_loadu_si512(w + 192)
                        var lo = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(v0, low), bcast(o))
                        var hi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(_mm512_srli_epi16(v0, 4), low), bcast(o &+ 16))
                        lo = _mm512_dpbusd_epi32(lo, _mm512_and_si512(v1, low), bcast(o &+ 4))
                        hi = _mm512_dpbusd_epi32(hi, _mm512_and_si512(_mm512_srli_epi16(v1, 4), low), bcast(o &+ 20))
                        lo = _mm512_dpbusd_epi32(lo, _mm512_and_si512(v2, low), bcast(o &+ 8))
                        hi = _mm512_dpbusd_epi32(hi, _mm512_and_si512(_mm512_srli_epi16(v2, 4), low), bcast(o &+ 24))
                        lo = _mm512_dpbusd_epi32(lo, _mm512_and_si512(v3, low), bcast(o &+ 12))
                        hi = _mm512_dpbusd_epi32(hi, _mm512_and_si512(_mm512_srli_epi16(v3, 4), low), bcast(o &+ 28))
                        gacc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(lo, hi)), _mm512_set1_ps(dx[b]), gacc)
                        b &+= 1
                    }
                    let dm = sc + g &* 64
                    let dw = _mm512_cvtph_ps(_mm256_loadu_si256(dm.assumingMemoryBound(to: __m256i.self)))
                    let mw = _mm512_cvtph_ps(_mm256_loadu_si256((dm + 32).assumingMemoryBound(to: __m256i.self)))
                    acc = _mm512_fmadd_ps(gacc, dw, acc)
                    acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(sg[g]), acc)
                }
                // Lanes of rows outside rowRange (a range that does not start or end on a panel) are not stored.
                let r0 = p &* panelRows
                let first = max(rowRange.lowerBound - r0, 0), last = min(rowRange.upperBound - r0, panelRows)
                let mask = __mmask16(truncatingIfNeeded: ((1 << last) - 1) & ~((1 << first) - 1))
                _mm512_mask_storeu_ps(y + r0, mask, acc)
                p &+= 1
            }
        }
    }

    /// The prefill panel (`matmulPackedPanels`' bytes, (cols / 4, 16, 4)) of an interleaved matrix's
    /// whole panel at r0: each 64-byte load gives two of its vectors (low and high nibbles), and
    /// the scales widen 16 at a time.
    @inline(__always)
    static func unpackInterleavedPanel(_ a: PackedMatmulArgs, wq: UnsafeMutableRawPointer, dg: UnsafeMutablePointer<Float>,
                                       mg: UnsafeMutablePointer<Float>, r0: Int) {
        let nb = a.cols / 32, groups = a.cols / a.group
        let src = a.quants + (r0 / panelRows) * panelRows * a.rowBytes
        let sc = a.scales + (r0 / panelRows) * panelRows * groups * 4
        let low = _mm512_set1_epi8(0x0F)
        for b in 0..<nb {
            for j in 0..<4 {
                let v = _mm512_loadu_si512(src + b * 256 + 64 * j)
                _mm512_storeu_si512(wq + b * 512 + 64 * j, _mm512_and_si512(v, low))
                _mm512_storeu_si512(wq + b * 512 + 64 * (4 + j), _mm512_and_si512(_mm512_srli_epi16(v, 4), low))
            }
        }
        for g in 0..<groups {
            _mm512_storeu_ps(dg + g * panelRows, _mm512_cvtph_ps(_mm256_loadu_si256((sc + g * 64).assumingMemoryBound(to: __m256i.self))))
            _mm512_storeu_ps(mg + g * panelRows, _mm512_cvtph_ps(_mm256_loadu_si256((sc + g * 64 + 32).assumingMemoryBound(to: __m256i.self))))
        }
    }
}
#endif
