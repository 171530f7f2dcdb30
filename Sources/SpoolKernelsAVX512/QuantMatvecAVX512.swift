#if arch(x86_64)
import _Builtin_intrinsics.intel
import SpoolKernelsAVX2
import SpoolGGMLMath

/// Decode (1-3 tokens) for q4_1: the weights are multiplied straight from their blocks instead of
/// through the unpacked tile of `matmul`, which only pays off when many tokens reuse it.
///
/// Same arrangement as `matvec4` for the .spool 4-bit format: the 16 nibble bytes of two blocks
/// (b, b + 1) are joined into 32 bytes, broadcast to both halves of a zmm, shifted by 0 / 4 and
/// masked, giving [block b low, block b+1 low, block b high, block b+1 high] nibbles; the token's
/// activation bytes are permuted once to that order. ggml's arithmetic is kept exactly (see
/// `QuantAVX512`): the block scales d_w * d_x (lanes 0-3 and 8-11: block b, 4-7 and 12-15: block
/// b + 1) and the int32 sums are permuted back to [block b lanes 0-7 | block b+1 lanes 0-7] and
/// added into one 8-lane accumulator with two fused multiply-adds, block b first; the offset term
/// is the fused chain m_b * s_x(b), block after block.
extension QuantAVX512 {
    static let matvecMaxTokens = 3

    @inline(__always)
    static func matvecQ4_1(_ a: QuantMatmulArgs, rowRange: Range<Int>, t: Int) {
        let nb = a.cols / 32, np = nb / 2, rb = nb * 20
        withUnsafeTemporaryAllocation(byteCount: a.cols + np * 64, alignment: 64) { buf in
            let xp = buf.baseAddress!
            let dxv = (xp + a.cols).assumingMemoryBound(to: Float.self)
            let qx = UnsafeRawPointer(a.qs + t * a.cols), dx = a.d + t * nb, sx = a.s + t * nb
            permuteActivations(qx, dx, pairs: np, into: xp, dxv)
            let shifts = _mm512_mask_blend_epi64(0xF0, _mm512_setzero_si512(), _mm512_set1_epi16(4))
            let low = _mm512_set1_epi8(0x0F)
            let order = unsafeBitCast(SIMD16<Int32>(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15), to: __m512i.self)
            @inline(__always) func step(_ acc: __m256, _ macc: Float, _ row: UnsafeRawPointer, _ p: Int,
                                        _ x: __m512i, _ d: __m512) -> (__m256, Float) {
                let b0 = row + 40 * p, b1 = b0 + 20
                let v = _mm256_set_m128i(_mm_loadu_si128((b1 + 4).assumingMemoryBound(to: __m128i.self)),
                                         _mm_loadu_si128((b0 + 4).assumingMemoryBound(to: __m128i.self)))
                let w = _mm512_and_si512(_mm512_srlv_epi16(_mm512_broadcast_i64x4(v), shifts), low)
                let dot = _mm512_permutexvar_ps(order, _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), w, x)))
                let dw = _mm512_mask_blend_ps(0xF0F0, _mm512_set1_ps(f16(b0, 0)), _mm512_set1_ps(f16(b1, 0)))
                let scale = _mm512_permutexvar_ps(order, _mm512_mul_ps(dw, d))
                let first = _mm256_fmadd_ps(_mm512_castps512_ps256(scale), _mm512_castps512_ps256(dot), acc)
                let m = macc.addingProduct(f16(b0, 2), sx[2 * p]).addingProduct(f16(b1, 2), sx[2 * p + 1])
                return (_mm256_fmadd_ps(high(scale), high(dot), first), m)
            }
            let y = a.y + t * a.rows
            var r = rowRange.lowerBound
            while r + 2 <= rowRange.upperBound {
                let w0 = a.w + r * rb, w1 = w0 + rb
                var c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps()
                var m0: Float = 0, m1: Float = 0
                for p in 0..<np {
                    let x = _mm512_load_si512(xp + 64 * p), d = _mm512_load_ps(dxv + 16 * p)
                    (c0, m0) = step(c0, m0, w0, p, x, d)
                    (c1, m1) = step(c1, m1, w1, p, x, d)
                }
                y[r] = GGMLMath.reduce(lanes(c0)) + m0
                y[r + 1] = GGMLMath.reduce(lanes(c1)) + m1
                r += 2
            }
            if r < rowRange.upperBound {
                var c0 = _mm256_setzero_ps()
                var m0: Float = 0
                for p in 0..<np {
                    (c0, m0) = step(c0, m0, a.w + r * rb, p, _mm512_load_si512(xp + 64 * p), _mm512_load_ps(dxv + 16 * p))
                }
                y[r] = GGMLMath.reduce(lanes(c0)) + m0
            }
        }
    }

    /// Activation bytes of each pair of blocks in the order [b 0-15, b+1 0-15, b 16-31, b+1 16-31]
    /// (the order the nibble expansion produces), and d_x per int32 lane of that order.
    @inline(__always)
    static func permuteActivations(_ qx: UnsafeRawPointer, _ dx: UnsafePointer<Float>, pairs: Int,
                                   into xp: UnsafeMutableRawPointer, _ dxv: UnsafeMutablePointer<Float>) {
        for p in 0..<pairs {
            let src = qx + 64 * p, dst = xp + 64 * p
            dst.storeBytes(of: src.loadUnaligned(as: SIMD16<UInt8>.self), as: SIMD16<UInt8>.self)
            (dst + 16).storeBytes(of: src.loadUnaligned(fromByteOffset: 32, as: SIMD16<UInt8>.self), as: SIMD16<UInt8>.self)
            (dst + 32).storeBytes(of: src.loadUnaligned(fromByteOffset: 16, as: SIMD16<UInt8>.self), as: SIMD16<UInt8>.self)
            (dst + 48).storeBytes(of: src.loadUnaligned(fromByteOffset: 48, as: SIMD16<UInt8>.self), as: SIMD16<UInt8>.self)
            _mm512_store_ps(dxv + 16 * p, _mm512_mask_blend_ps(0xF0F0, _mm512_set1_ps(dx[2 * p]), _mm512_set1_ps(dx[2 * p + 1])))
        }
    }
}
#endif
