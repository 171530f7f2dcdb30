#if arch(x86_64)
import _Builtin_intrinsics.intel
import SpoolKernelsAVX2
import SpoolGGMLMath

/// AVX-512 VNNI versions of the integer matmul (`QuantGeneric.matmulBlock`): same integer sums and
/// the same float operations in the same order (ggml's: per (row, token) 8 float lanes, one fused
/// multiply-add per block, the q4_1 offsets as their own fused chain), so results are identical.
///
/// Shape of the work: a tile of 4 weight rows is unpacked once into a small buffer laid out for
/// `vpdpbusd` (32 bytes per block, two blocks per 512-bit vector), then tokens pass over it 3 at a
/// time. For every pair of blocks, each of the 4 weight vectors meets each of the 3 activation
/// vectors (12 `vpdpbusd`, every load reused 3-4 times from registers); an int32 lane holds a
/// partial sum of one block, so the block scales are applied as vectors: lanes 0-7 carry
/// d_w(b) * d_x(b) and lanes 8-15 d_w(b+1) * d_x(b+1), precomputed per row as "d repeated 8 times".
/// The two halves are then added into one 8-lane accumulator, block b before block b+1.
///
/// vpdpbusd multiplies unsigned by signed bytes:
/// - q4_1: the nibbles (0...15) are the unsigned side, the activations the signed side; the
///   offset term sum_b m(b) * s_x(b) is a short float dot product per (row, token) over blocks.
/// - q8_0: both are signed, so the activations are made unsigned by x + 128 (xor 0x80) and the
///   extra 128 * sum(w) is cancelled exactly in the integer domain: the accumulator starts from a
///   per-row vector of -128 * (sum of the 4 weights of each lane), precomputed at unpack time.
public enum QuantAVX512 {
    static let rowTile = 4
    /// Tokens per pass over a row tile: 128 activation rows of 1536 bytes stay in L2 while the
    /// tiles of a chunk's rows go by, and unpacking a tile is repeated only every 128 tokens.
    static let tokenBlock = 128

    struct Acc4 {
        var a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps()
        /// q4_1: sum over blocks of m_w * s_x, one lane per row.
        var offsets = SIMD4<Float>(repeating: 0)
    }

    /// The unpacked row tile. Every row has `np` pairs of blocks (an odd last block is padded
    /// with a zero block, whose scale is 0).
    struct Tile {
        var wq: UnsafeMutableRawPointer       // (rowTile, np * 64) bytes: weights, 32 per block
        var dw: UnsafeMutablePointer<Float>   // (rowTile, np * 16): d of each block, repeated 8 times
        var aux: UnsafeMutableRawPointer      // q8_0: (rowTile, np * 16) int32 start values;
                                              // q4_1: (nc, rowTile) floats m per block, zero-padded
        var np: Int
        var nc: Int                           // blocks rounded up to a multiple of 16
    }

    @inline(never)
    public static func matmulQ4_1(_ a: QuantMatmulArgs, rowRange: Range<Int>, tokenRange: Range<Int>) {
        if tokenRange.count <= matvecMaxTokens && (a.cols / 32) % 2 == 0 {
            for t in tokenRange { matvecQ4_1(a, rowRange: rowRange, t: t) }
            return
        }
        matmul(a, rowRange: rowRange, tokenRange: tokenRange, q8: false)
    }

    @inline(never)
    public static func matmulQ8_0(_ a: QuantMatmulArgs, rowRange: Range<Int>, tokenRange: Range<Int>) {
        matmul(a, rowRange: rowRange, tokenRange: tokenRange, q8: true)
    }

    @inline(__always)
    static func matmul(_ a: QuantMatmulArgs, rowRange: Range<Int>, tokenRange: Range<Int>, q8: Bool) {
        tiled(a, rowRange: rowRange, tokenRange: tokenRange, q8: q8) { tile, r0, nr in
            if q8 { unpackQ8_0(a, tile, r0: r0, nr: nr) } else { unpackQ4_1(a, tile, r0: r0, nr: nr) }
        }
    }

    /// The tile driver shared by the GGUF kernels and the .spool one (`matmulPacked`): blocks of
    /// `tokenBlock` tokens, and for each `rowTile` rows `unpack` fills the tile once, then 3-token
    /// and 1-token register tiles run over it. `q8`: q8_0 tiles (their aux is pair-sized).
    @inline(__always)
    static func tiled(_ a: QuantMatmulArgs, rowRange: Range<Int>, tokenRange: Range<Int>, q8: Bool,
                      unpack: (_ tile: Tile, _ r0: Int, _ nr: Int) -> Void) {
        let nb = a.cols / 32, np = (nb + 1) / 2, nc = (nb + 15) / 16 * 16
        let pairBytes = rowTile * np * 64
        let auxBytes = q8 ? pairBytes : rowTile * nc * 4
        withUnsafeTemporaryAllocation(byteCount: 2 * pairBytes + auxBytes, alignment: 64) { buf in
            let base = buf.baseAddress!
            let tile = Tile(
                wq: base, dw: (base + pairBytes).assumingMemoryBound(to: Float.self), aux: base + 2 * pairBytes,
                np: np, nc: nc)
            var t0 = tokenRange.lowerBound
            while t0 < tokenRange.upperBound {
                let t1 = min(t0 + tokenBlock, tokenRange.upperBound)
                var r0 = rowRange.lowerBound
                while r0 < rowRange.upperBound {
                    let nr = min(rowTile, rowRange.upperBound - r0)
                    unpack(tile, r0, nr)
                    var t = t0
                    while t + 3 <= t1 {
                        tile3(a, tile, r0: r0, nr: nr, t: t, q8: q8)
                        t += 3
                    }
                    while t < t1 {
                        tile1(a, tile, r0: r0, nr: nr, t: t, q8: q8)
                        t += 1
                    }
                    r0 += nr
                }
                t0 = t1
            }
        }
    }

    // MARK: unpacking

    @inline(__always)
    static func f16(_ p: UnsafeRawPointer, _ o: Int) -> Float {
        Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: o, as: UInt16.self)))
    }

    /// Zeroes what `nr` rows and `nb` blocks leave unused: the pad block of an odd row and the
    /// rows past `nr`, so that they add exactly 0.
    @inline(__always)
    static func zeroPadding(_ tile: Tile, nb: Int, nr: Int, auxIsPairs: Bool) {
        let np = tile.np
        if nb & 1 == 1 {
            for i in 0..<nr {
                (tile.wq + i * np * 64 + nb * 32).initializeMemory(as: UInt8.self, repeating: 0, count: 32)
                (tile.dw + i * np * 16 + nb * 8).initialize(repeating: 0, count: 8)
                if auxIsPairs { (tile.aux + (i * np * 16 + nb * 8) * 4).initializeMemory(as: Int32.self, repeating: 0, count: 8) }
            }
        }
        if nr < rowTile {
            let rest = rowTile - nr
            (tile.wq + nr * np * 64).initializeMemory(as: UInt8.self, repeating: 0, count: rest * np * 64)
            (tile.dw + nr * np * 16).initialize(repeating: 0, count: rest * np * 16)
            // (q4_1's offsets are block-major; `unpackQ4_1` zeroes their unused rows itself.)
            if auxIsPairs { (tile.aux + nr * np * 64).initializeMemory(as: UInt8.self, repeating: 0, count: rest * np * 64) }
        }
    }

    @inline(__always)
    static func unpackQ4_1(_ a: QuantMatmulArgs, _ tile: Tile, r0: Int, nr: Int) {
        let nb = a.cols / 32, rb = nb * 20, np = tile.np
        let wm = tile.aux.assumingMemoryBound(to: Float.self)
        let low = _mm_set1_epi8(0x0F)
        for i in 0..<nr {
            let row = a.w + (r0 + i) * rb
            for b in 0..<nb {
                let blk = row + b * 20
                let bytes = _mm_loadu_si128((blk + 4).assumingMemoryBound(to: __m128i.self))
                let lo = _mm_and_si128(bytes, low), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), low)
                _mm256_store_si256(OpaquePointer(tile.wq + i * np * 64 + b * 32), _mm256_set_m128i(hi, lo))
                _mm256_store_ps(tile.dw + i * np * 16 + b * 8, _mm256_set1_ps(f16(blk, 0)))
                wm[b * rowTile + i] = f16(blk, 2)
            }
        }
        for b in 0..<nb { for i in nr..<rowTile { wm[b * rowTile + i] = 0 } }
        zeroPadding(tile, nb: nb, nr: nr, auxIsPairs: false)
    }

    @inline(__always)
    static func unpackQ8_0(_ a: QuantMatmulArgs, _ tile: Tile, r0: Int, nr: Int) {
        let nb = a.cols / 32, rb = nb * 34, np = tile.np
        let ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1)
        for i in 0..<nr {
            let row = a.w + (r0 + i) * rb
            for b in 0..<nb {
                let blk = row + b * 34
                let w = _mm256_loadu_si256((blk + 2).assumingMemoryBound(to: __m256i.self))
                _mm256_store_si256(OpaquePointer(tile.wq + i * np * 64 + b * 32), w)
                _mm256_store_ps(tile.dw + i * np * 16 + b * 8, _mm256_set1_ps(f16(blk, 0)))
                // -128 * (sum of the 4 weights feeding each int32 lane)
                // (the 256-bit vpdpbusd is a macro Swift cannot import; maddubs/madd give the same sums)
                let sum4 = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, w), ones16)
                let corr = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum4, 7))
                _mm256_store_si256(OpaquePointer(tile.aux + (i * np * 16 + b * 8) * 4), corr)
            }
        }
        zeroPadding(tile, nb: nb, nr: nr, auxIsPairs: true)
    }

    // MARK: tiles

    /// Activation bytes of pair `p` of a token (q8_0: made unsigned). The last pair of an odd row
    /// loads only its 32 bytes (the padded weight block is zero, so the others would not matter,
    /// but they may lie past the buffer).
    @inline(__always)
    static func loadX(_ qx: UnsafeRawPointer, p: Int, nb: Int, q8: Bool) -> __m512i {
        let x = 2 * p + 1 < nb ? _mm512_loadu_si512(qx + p * 64) : _mm512_maskz_loadu_epi8(0xFFFF_FFFF, qx + p * 64)
        return q8 ? _mm512_xor_si512(x, _mm512_set1_epi8(-128)) : x
    }

    /// d_x of the two blocks of pair `p`, 8 lanes each.
    @inline(__always)
    static func loadDX(_ dx: UnsafePointer<Float>, p: Int, nb: Int) -> __m512 {
        let d1: Float = 2 * p + 1 < nb ? dx[2 * p + 1] : 0
        return _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(dx[2 * p]), _mm512_set1_ps(d1))
    }

    /// acc = fma(d_w * d_x, float(dot), acc) for block 2p, then for block 2p + 1.
    @inline(__always)
    static func rowStep(_ acc: __m256, _ tile: Tile, i: Int, p: Int, x: __m512i, dx: __m512, q8: Bool) -> __m256 {
        let o = i * tile.np * 64 + p * 64
        let w = _mm512_load_si512(tile.wq + o)
        let dot = q8
            ? _mm512_dpbusd_epi32(_mm512_load_si512(tile.aux + o), x, w)
            : _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, x)
        let scale = _mm512_mul_ps(_mm512_load_ps(tile.dw + i * tile.np * 16 + p * 16), dx)
        let f = _mm512_cvtepi32_ps(dot)
        let first = _mm256_fmadd_ps(_mm512_castps512_ps256(scale), _mm512_castps512_ps256(f), acc)
        return _mm256_fmadd_ps(high(scale), high(f), first)
    }

    @inline(__always)
    static func pairStep(_ acc: inout Acc4, _ tile: Tile, p: Int, x: __m512i, dx: __m512, q8: Bool) {
        acc.a0 = rowStep(acc.a0, tile, i: 0, p: p, x: x, dx: dx, q8: q8)
        acc.a1 = rowStep(acc.a1, tile, i: 1, p: p, x: x, dx: dx, q8: q8)
        acc.a2 = rowStep(acc.a2, tile, i: 2, p: p, x: x, dx: dx, q8: q8)
        acc.a3 = rowStep(acc.a3, tile, i: 3, p: p, x: x, dx: dx, q8: q8)
    }

    /// q4_1 only: offsets = fma(m(b), s_x(b), offsets) block after block, the 4 rows side by side.
    @inline(__always)
    static func offsetTerm(_ acc: inout Acc4, _ tile: Tile, sx: UnsafePointer<Float>, nb: Int) {
        let wm = UnsafePointer<Float>(tile.aux.assumingMemoryBound(to: Float.self))
        var o = acc.offsets
        for b in 0..<nb {
            o = o.addingProduct(UnsafeRawPointer(wm + b * rowTile).loadUnaligned(as: SIMD4<Float>.self), SIMD4(repeating: sx[b]))
        }
        acc.offsets = o
    }

    @inline(__always)
    static func lanes(_ v: __m256) -> SIMD8<Float> { unsafeBitCast(v, to: SIMD8<Float>.self) }

    /// Lanes 8-15 (`_mm512_extractf32x8_ps` is a macro Swift cannot import; this is one vextract).
    @inline(__always)
    static func high(_ v: __m512) -> __m256 { unsafeBitCast(unsafeBitCast(v, to: SIMD16<Float>.self).highHalf, to: __m256.self) }

    @inline(__always)
    static func store(_ acc: Acc4, _ a: QuantMatmulArgs, r0: Int, nr: Int, t: Int) {
        let y = a.y + t * a.rows + r0
        let o = acc.offsets
        y[0] = GGMLMath.reduce(lanes(acc.a0)) + o[0]
        if nr > 1 { y[1] = GGMLMath.reduce(lanes(acc.a1)) + o[1] }
        if nr > 2 { y[2] = GGMLMath.reduce(lanes(acc.a2)) + o[2] }
        if nr > 3 { y[3] = GGMLMath.reduce(lanes(acc.a3)) + o[3] }
    }

    /// 4 rows x 3 tokens: 12 accumulators leave room for the weights, scales and activations
    /// (a 4 x 4 tile spilled accumulators to the stack and was ~4% slower).
    @inline(__always)
    static func tile3(_ a: QuantMatmulArgs, _ tile: Tile, r0: Int, nr: Int, t: Int, q8: Bool) {
        let nb = a.cols / 32
        let q0 = UnsafeRawPointer(a.qs + t * a.cols), q1 = q0 + a.cols, q2 = q1 + a.cols
        let d0 = a.d + t * nb, d1 = d0 + nb, d2 = d1 + nb
        var c0 = Acc4(), c1 = Acc4(), c2 = Acc4()
        for p in 0..<tile.np {
            pairStep(&c0, tile, p: p, x: loadX(q0, p: p, nb: nb, q8: q8), dx: loadDX(d0, p: p, nb: nb), q8: q8)
            pairStep(&c1, tile, p: p, x: loadX(q1, p: p, nb: nb, q8: q8), dx: loadDX(d1, p: p, nb: nb), q8: q8)
            pairStep(&c2, tile, p: p, x: loadX(q2, p: p, nb: nb, q8: q8), dx: loadDX(d2, p: p, nb: nb), q8: q8)
        }
        if !q8 {
            let s0 = a.s + t * nb
            offsetTerm(&c0, tile, sx: s0, nb: nb)
            offsetTerm(&c1, tile, sx: s0 + nb, nb: nb)
            offsetTerm(&c2, tile, sx: s0 + 2 * nb, nb: nb)
        }
        store(c0, a, r0: r0, nr: nr, t: t)
        store(c1, a, r0: r0, nr: nr, t: t + 1)
        store(c2, a, r0: r0, nr: nr, t: t + 2)
    }

    /// 4 rows x 1 token (token tails, and decode).
    @inline(__always)
    static func tile1(_ a: QuantMatmulArgs, _ tile: Tile, r0: Int, nr: Int, t: Int, q8: Bool) {
        let nb = a.cols / 32
        let q0 = UnsafeRawPointer(a.qs + t * a.cols), d0 = a.d + t * nb
        var c0 = Acc4()
        for p in 0..<tile.np {
            pairStep(&c0, tile, p: p, x: loadX(q0, p: p, nb: nb, q8: q8), dx: loadDX(d0, p: p, nb: nb), q8: q8)
        }
        if !q8 { offsetTerm(&c0, tile, sx: a.s + t * nb, nb: nb) }
        store(c0, a, r0: r0, nr: nr, t: t)
    }
}
#endif
