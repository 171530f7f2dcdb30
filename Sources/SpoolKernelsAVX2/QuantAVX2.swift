#if arch(x86_64)
import _Builtin_intrinsics.intel
import SpoolGGMLMath

/// Pointers and sizes of one integer matmul: W (rows, cols) as blocks, x quantized (tokens, cols)
/// with per-block d and s (see SpoolKernels' `Q8Activations`), y (tokens, rows).
public struct QuantMatmulArgs {
    public var w: UnsafeRawPointer
    public var rows: Int
    public var cols: Int
    public var qs: UnsafePointer<Int8>
    public var d: UnsafePointer<Float>
    public var s: UnsafePointer<Float>
    public var y: UnsafeMutablePointer<Float>

    public init(w: UnsafeRawPointer, rows: Int, cols: Int, qs: UnsafePointer<Int8>, d: UnsafePointer<Float>,
                s: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        self.w = w; self.rows = rows; self.cols = cols; self.qs = qs; self.d = d; self.s = s; self.y = y
    }
}

/// AVX2 versions of `QuantGeneric` (same results: integer sums are exact, only the order of the
/// float additions across blocks differs).
///
/// Inner step for one weight block and one activation block: `vpmaddubsw` multiplies the 32
/// unsigned weight bytes with the 32 signed activation bytes and adds neighbours into 16 int16
/// (no saturation: |15 * 127 * 2| and |127 * 127 * 2| are below 32767), `vpmaddwd` with ones
/// sums pairs into 8 int32, which are converted and scaled into a float accumulator by one FMA.
public enum QuantAVX2 {
    static let rowTile = 4

    @inline(__always)
    static func hsum(_ v: __m256) -> Float {
        GGMLMath.reduce(unsafeBitCast(v, to: SIMD8<Float>.self))
    }

    @inline(__always)
    static func f16(_ p: UnsafeRawPointer, _ o: Int) -> Float {
        Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: o, as: UInt16.self)))
    }

    /// Quantizes rows of x to 8 bits per block of 32 (round to nearest even).
    @inline(never)
    public static func quantizeRows(
        _ x: UnsafePointer<Float>, cols: Int, qs: UnsafeMutablePointer<Int8>, d: UnsafeMutablePointer<Float>,
        s: UnsafeMutablePointer<Float>, rows: Range<Int>
    ) {
        let nb = cols / 32
        let signMask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF))
        for t in rows {
            for b in 0..<nb {
                let src = x + t * cols + b * 32
                let v0 = _mm256_loadu_ps(src), v1 = _mm256_loadu_ps(src + 8)
                let v2 = _mm256_loadu_ps(src + 16), v3 = _mm256_loadu_ps(src + 24)
                let m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, signMask), _mm256_and_ps(v1, signMask)),
                                      _mm256_max_ps(_mm256_and_ps(v2, signMask), _mm256_and_ps(v3, signMask)))
                // Lane by lane rather than SIMD.max(): that stdlib generic would be specialized here
                // into a weak symbol compiled for AVX2 (see the note in ElementwiseAVX2).
                var amax = m[0]
                for i in 1..<8 where m[i] > amax { amax = m[i] }
                let dv = amax / 127
                let id = _mm256_set1_ps(amax != 0 ? 127 / amax : 0)
                // cvtps rounds with MXCSR's default mode, to nearest even; pack 32 int32 -> 32 int8.
                let i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, id))
                let i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, id))
                let i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, id))
                let i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, id))
                let sum = unsafeBitCast(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)), to: SIMD8<Int32>.self).wrappedSum()
                let p01 = _mm256_packs_epi32(i0, i1), p23 = _mm256_packs_epi32(i2, i3)
                var p = _mm256_packs_epi16(p01, p23)
                // packs interleaves 128-bit lanes: restore element order.
                p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
                _mm256_storeu_si256(UnsafeMutableRawPointer(qs + t * cols + b * 32).assumingMemoryBound(to: __m256i_u.self), p)
                d[t * nb + b] = Float(Float16(dv))
                s[t * nb + b] = Float(Float16(Float(sum) * dv))
            }
        }
    }

    @inline(__always)
    static func load256(_ p: UnsafeRawPointer) -> __m256i {
        _mm256_loadu_si256(p.assumingMemoryBound(to: __m256i.self))
    }

    /// 32 nibbles of a q4_1 block as 32 bytes in weight order (low nibbles, then high nibbles).
    @inline(__always)
    static func unpackNibbles(_ p: UnsafeRawPointer) -> __m256i {
        let b = _mm_loadu_si128(p.assumingMemoryBound(to: __m128i.self))
        let lo = _mm_and_si128(b, _mm_set1_epi8(0x0F))
        let hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0F))
        return _mm256_set_m128i(hi, lo)
    }

    /// 8 int32 partial sums of u8 · s8 over 32 bytes.
    @inline(__always)
    static func dotU8S8(_ u: __m256i, _ s: __m256i) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
    }

    /// q4_1 weights: the rows of a tile are unpacked once into a stack buffer of bytes (32 per
    /// block) with their scales, then every token of the range runs over the tile from L1.
    @inline(never)
    public static func matmulQ4_1(_ a: QuantMatmulArgs, rowRange: Range<Int>, tokenRange: Range<Int>) {
        let nb = a.cols / 32, rb = nb * 20
        withUnsafeTemporaryAllocation(byteCount: rowTile * a.cols + 2 * rowTile * nb * 4, alignment: 64) { buf in
            let wq = buf.baseAddress!
            let wd = (wq + rowTile * a.cols).assumingMemoryBound(to: Float.self)
            let wm = wd + rowTile * nb
            var r0 = rowRange.lowerBound
            while r0 < rowRange.upperBound {
                let nr = min(rowTile, rowRange.upperBound - r0)
                for i in 0..<nr {
                    let row = a.w + (r0 + i) * rb
                    for b in 0..<nb {
                        let blk = row + b * 20
                        wd[i * nb + b] = f16(blk, 0)
                        wm[i * nb + b] = f16(blk, 2)
                        _mm256_store_si256(OpaquePointer(wq + (i * nb + b) * 32), unpackNibbles(blk + 4))
                    }
                }
                for t in tokenRange {
                    let qx = UnsafeRawPointer(a.qs + t * a.cols), dx = a.d + t * nb, sx = a.s + t * nb
                    if nr == rowTile {
                        var acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps()
                        var acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps()
                        var m0: Float = 0, m1: Float = 0, m2: Float = 0, m3: Float = 0
                        for b in 0..<nb {
                            let q = load256(qx + b * 32)
                            let db = dx[b], sb = sx[b]
                            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(wd[b] * db), dotU8S8(load256(wq + b * 32), q), acc0)
                            acc1 = _mm256_fmadd_ps(_mm256_set1_ps(wd[nb + b] * db), dotU8S8(load256(wq + (nb + b) * 32), q), acc1)
                            acc2 = _mm256_fmadd_ps(_mm256_set1_ps(wd[2 * nb + b] * db), dotU8S8(load256(wq + (2 * nb + b) * 32), q), acc2)
                            acc3 = _mm256_fmadd_ps(_mm256_set1_ps(wd[3 * nb + b] * db), dotU8S8(load256(wq + (3 * nb + b) * 32), q), acc3)
                            m0 = m0.addingProduct(wm[b], sb); m1 = m1.addingProduct(wm[nb + b], sb)
                            m2 = m2.addingProduct(wm[2 * nb + b], sb); m3 = m3.addingProduct(wm[3 * nb + b], sb)
                        }
                        let y = a.y + t * a.rows + r0
                        y[0] = hsum(acc0) + m0; y[1] = hsum(acc1) + m1; y[2] = hsum(acc2) + m2; y[3] = hsum(acc3) + m3
                    } else {
                        for i in 0..<nr {
                            var acc = _mm256_setzero_ps()
                            var m: Float = 0
                            for b in 0..<nb {
                                acc = _mm256_fmadd_ps(_mm256_set1_ps(wd[i * nb + b] * dx[b]),
                                                      dotU8S8(load256(wq + (i * nb + b) * 32), load256(qx + b * 32)), acc)
                                m = m.addingProduct(wm[i * nb + b], sx[b])
                            }
                            a.y[t * a.rows + r0 + i] = hsum(acc) + m
                        }
                    }
                }
                r0 += nr
            }
        }
    }

    /// One q8_0 block against one activation block: signed x signed via |w| and sign(x, w).
    @inline(__always)
    static func dotQ8(_ blk: UnsafeRawPointer, _ q: __m256i) -> __m256 {
        let w = load256(blk + 2)
        return dotU8S8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(q, w))
    }

    /// q8_0 weights are read in place (no unpacking needed), 4 rows per pass over a token's blocks.
    @inline(never)
    public static func matmulQ8_0(_ a: QuantMatmulArgs, rowRange: Range<Int>, tokenRange: Range<Int>) {
        let nb = a.cols / 32, rb = nb * 34
        for t in tokenRange {
            let qx = UnsafeRawPointer(a.qs + t * a.cols), dx = a.d + t * nb
            var r = rowRange.lowerBound
            while r + rowTile <= rowRange.upperBound {
                let w0 = a.w + r * rb, w1 = w0 + rb, w2 = w1 + rb, w3 = w2 + rb
                var acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps()
                var acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps()
                for b in 0..<nb {
                    let q = load256(qx + b * 32), db = dx[b], o = b * 34
                    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16(w0, o) * db), dotQ8(w0 + o, q), acc0)
                    acc1 = _mm256_fmadd_ps(_mm256_set1_ps(f16(w1, o) * db), dotQ8(w1 + o, q), acc1)
                    acc2 = _mm256_fmadd_ps(_mm256_set1_ps(f16(w2, o) * db), dotQ8(w2 + o, q), acc2)
                    acc3 = _mm256_fmadd_ps(_mm256_set1_ps(f16(w3, o) * db), dotQ8(w3 + o, q), acc3)
                }
                let y = a.y + t * a.rows + r
                y[0] = hsum(acc0); y[1] = hsum(acc1); y[2] = hsum(acc2); y[3] = hsum(acc3)
                r += rowTile
            }
            while r < rowRange.upperBound {
                let w0 = a.w + r * rb
                var acc = _mm256_setzero_ps()
                for b in 0..<nb {
                    let o = b * 34
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(w0, o) * dx[b]), dotQ8(w0 + o, load256(qx + b * 32)), acc)
                }
                a.y[t * a.rows + r] = hsum(acc)
                r += 1
            }
        }
    }
}
#endif
