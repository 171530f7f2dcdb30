#if arch(x86_64)
import _Builtin_intrinsics.intel

/// AVX2+FMA versions of the KIVI tile kernels (portable versions and scalar references:
/// `KIVITiles` in SpoolKV, which documents the tile layouts). Attention on a packed KIVI cache
/// works one group of G tokens of one KV head at a time: the group's codes become a small float
/// tile in L1 (keys channel-major, rotated to their offsets in the group; values token-major),
/// and every query head of the KV head then scores or mixes against the tile. Unpacking and
/// rotating is paid once per KV head, not once per query head.
///
/// Codes are read with per-lane variable shifts (`vpsrlvd`), so lanes hold exact code values.
/// Bit widths: 2, 4 and 8 (0: a row without codes, which is its zero point).
public enum KIVIAVX2 {
    @inline(__always)
    static func f16(_ p: UnsafePointer<UInt16>, _ i: Int) -> Float { Float(Float16(bitPattern: p[i])) }

    /// Codes 8 * chunk ..< 8 * chunk + 8 of a row, as floats.
    @inline(__always)
    static func codes8(_ row: UnsafeRawPointer, chunk: Int, bits: Int) -> __m256 {
        switch bits {
        case 2:
            let v = Int32(row.loadUnaligned(fromByteOffset: chunk * 2, as: UInt16.self))
            let x = _mm256_srlv_epi32(_mm256_set1_epi32(v), _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14))
            return _mm256_cvtepi32_ps(_mm256_and_si256(x, _mm256_set1_epi32(3)))
        case 4:
            let v = Int32(bitPattern: row.loadUnaligned(fromByteOffset: chunk * 4, as: UInt32.self))
            let x = _mm256_srlv_epi32(_mm256_set1_epi32(v), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28))
            return _mm256_cvtepi32_ps(_mm256_and_si256(x, _mm256_set1_epi32(15)))
        default:
            let v = Int64(bitPattern: row.loadUnaligned(fromByteOffset: chunk * 8, as: UInt64.self))
            return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(v)))
        }
    }

    /// One key tile: `channels` rows of `group` floats. Rows i and ropePairs + i are channels 2i and
    /// 2i + 1 (i < ropePairs), dequantized and rotated by the angle of their offset m in the group
    /// (cos/sin: (ropePairs, group) tables); rows from 2 * ropePairs on are the other channels in order.
    /// Channel c's codes start at codes + rowOffsets[c] with rowBits[c] bits (both channels of a
    /// rotary pair have the same width); its scale and zero are f16 at scales[c], zeros[c].
    @inline(never)
    public static func keyTile(
        codes: UnsafeRawPointer, rowOffsets: UnsafePointer<Int32>, rowBits: UnsafePointer<UInt8>,
        scales: UnsafePointer<UInt16>, zeros: UnsafePointer<UInt16>, channels: Int, ropePairs: Int, group: Int,
        cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, into tile: UnsafeMutablePointer<Float>
    ) {
        let chunks = group / 8
        for i in 0..<ropePairs {
            let a = 2 * i, b = a + 1, bits = Int(rowBits[a])
            let sa = _mm256_set1_ps(f16(scales, a)), za = _mm256_set1_ps(f16(zeros, a))
            let sb = _mm256_set1_ps(f16(scales, b)), zb = _mm256_set1_ps(f16(zeros, b))
            let ra = codes + Int(rowOffsets[a]), rb = codes + Int(rowOffsets[b])
            let outA = tile + i * group, outB = tile + (ropePairs + i) * group
            let cp = cos + i * group, sp = sin + i * group
            for k in 0..<chunks {
                let xa = bits == 0 ? za : _mm256_fmadd_ps(sa, codes8(ra, chunk: k, bits: bits), za)
                let xb = bits == 0 ? zb : _mm256_fmadd_ps(sb, codes8(rb, chunk: k, bits: bits), zb)
                let c = _mm256_loadu_ps(cp + 8 * k), s = _mm256_loadu_ps(sp + 8 * k)
                _mm256_storeu_ps(outA + 8 * k, _mm256_fmsub_ps(xa, c, _mm256_mul_ps(xb, s)))
                _mm256_storeu_ps(outB + 8 * k, _mm256_fmadd_ps(xa, s, _mm256_mul_ps(xb, c)))
            }
        }
        for ch in (2 * ropePairs)..<channels {
            let bits = Int(rowBits[ch])
            let s = _mm256_set1_ps(f16(scales, ch)), z = _mm256_set1_ps(f16(zeros, ch))
            let row = codes + Int(rowOffsets[ch]), out = tile + ch * group
            for k in 0..<chunks {
                _mm256_storeu_ps(out + 8 * k, bits == 0 ? z : _mm256_fmadd_ps(s, codes8(row, chunk: k, bits: bits), z))
            }
        }
    }

    /// scores[m] = sum_c q[c] * tile[c * group + m] for m < group: 4 chunks of 8 tokens with two
    /// channels at a time (8 independent FMA chains), then single chunks.
    @inline(never)
    public static func tileScores(
        _ q: UnsafePointer<Float>, tile: UnsafePointer<Float>, channels: Int, group: Int, into scores: UnsafeMutablePointer<Float>
    ) {
        let chunks = group / 8
        var k = 0
        while k + 4 <= chunks {
            var a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps()
            var b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps()
            var c = 0
            while c + 2 <= channels {
                let qa = _mm256_set1_ps(q[c]), qb = _mm256_set1_ps(q[c + 1])
                let ra = tile + c * group + 8 * k, rb = ra + group
                a0 = _mm256_fmadd_ps(qa, _mm256_loadu_ps(ra), a0)
                a1 = _mm256_fmadd_ps(qa, _mm256_loadu_ps(ra + 8), a1)
                a2 = _mm256_fmadd_ps(qa, _mm256_loadu_ps(ra + 16), a2)
                a3 = _mm256_fmadd_ps(qa, _mm256_loadu_ps(ra + 24), a3)
                b0 = _mm256_fmadd_ps(qb, _mm256_loadu_ps(rb), b0)
                b1 = _mm256_fmadd_ps(qb, _mm256_loadu_ps(rb + 8), b1)
                b2 = _mm256_fmadd_ps(qb, _mm256_loadu_ps(rb + 16), b2)
                b3 = _mm256_fmadd_ps(qb, _mm256_loadu_ps(rb + 24), b3)
                c += 2
            }
            if c < channels {
                let qa = _mm256_set1_ps(q[c]), ra = tile + c * group + 8 * k
                a0 = _mm256_fmadd_ps(qa, _mm256_loadu_ps(ra), a0)
                a1 = _mm256_fmadd_ps(qa, _mm256_loadu_ps(ra + 8), a1)
                a2 = _mm256_fmadd_ps(qa, _mm256_loadu_ps(ra + 16), a2)
                a3 = _mm256_fmadd_ps(qa, _mm256_loadu_ps(ra + 24), a3)
            }
            _mm256_storeu_ps(scores + 8 * k, _mm256_add_ps(a0, b0))
            _mm256_storeu_ps(scores + 8 * k + 8, _mm256_add_ps(a1, b1))
            _mm256_storeu_ps(scores + 8 * k + 16, _mm256_add_ps(a2, b2))
            _mm256_storeu_ps(scores + 8 * k + 24, _mm256_add_ps(a3, b3))
            k += 4
        }
        while k < chunks {
            var a = _mm256_setzero_ps(), b = _mm256_setzero_ps()
            var c = 0
            while c + 2 <= channels {
                a = _mm256_fmadd_ps(_mm256_set1_ps(q[c]), _mm256_loadu_ps(tile + c * group + 8 * k), a)
                b = _mm256_fmadd_ps(_mm256_set1_ps(q[c + 1]), _mm256_loadu_ps(tile + (c + 1) * group + 8 * k), b)
                c += 2
            }
            if c < channels { a = _mm256_fmadd_ps(_mm256_set1_ps(q[c]), _mm256_loadu_ps(tile + c * group + 8 * k), a) }
            _mm256_storeu_ps(scores + 8 * k, _mm256_add_ps(a, b))
            k += 1
        }
    }

    /// A value tile: tile[m * channels + c] = scale * code + zero of channel c of token m, for
    /// `tokens` tokens. Token m's codes start at codes + m * tokenBytes (channel c at bit c * bits);
    /// its scales and zeros at scales/zeros + m * groupsPerToken, the first being the group of
    /// channel 0; channel c is in group (firstChannel + c) / valueGroup - firstChannel / valueGroup.
    @inline(never)
    public static func valueTile(
        codes: UnsafeRawPointer, tokenBytes: Int, bits: Int, scales: UnsafePointer<UInt16>, zeros: UnsafePointer<UInt16>,
        groupsPerToken: Int, firstChannel: Int, channels: Int, valueGroup: Int, tokens: Int, into tile: UnsafeMutablePointer<Float>
    ) {
        let chunks = channels / 8, g0 = firstChannel / valueGroup
        for m in 0..<tokens {
            let row = codes + m * tokenBytes, out = tile + m * channels
            var g = -1
            var s = _mm256_setzero_ps(), z = _mm256_setzero_ps()
            for k in 0..<chunks {
                let gk = (firstChannel + 8 * k) / valueGroup - g0
                if gk != g {
                    g = gk
                    s = _mm256_set1_ps(f16(scales, m * groupsPerToken + g))
                    z = _mm256_set1_ps(f16(zeros, m * groupsPerToken + g))
                }
                _mm256_storeu_ps(out + 8 * k, _mm256_fmadd_ps(s, codes8(row, chunk: k, bits: bits), z))
            }
        }
    }

    /// out[c] += sum_m w[m] * rows[m * channels + c] for c < channels (channels % 8 == 0): 64
    /// channels (8 chains) at a time, then 8.
    @inline(never)
    public static func rowsMix(
        _ w: UnsafePointer<Float>, rows: UnsafePointer<Float>, count: Int, channels: Int, into out: UnsafeMutablePointer<Float>
    ) {
        var c = 0
        while c + 64 <= channels {
            var a0 = _mm256_loadu_ps(out + c), a1 = _mm256_loadu_ps(out + c + 8)
            var a2 = _mm256_loadu_ps(out + c + 16), a3 = _mm256_loadu_ps(out + c + 24)
            var a4 = _mm256_loadu_ps(out + c + 32), a5 = _mm256_loadu_ps(out + c + 40)
            var a6 = _mm256_loadu_ps(out + c + 48), a7 = _mm256_loadu_ps(out + c + 56)
            for m in 0..<count {
                let wm = _mm256_set1_ps(w[m]), r = rows + m * channels + c
                a0 = _mm256_fmadd_ps(wm, _mm256_loadu_ps(r), a0)
                a1 = _mm256_fmadd_ps(wm, _mm256_loadu_ps(r + 8), a1)
                a2 = _mm256_fmadd_ps(wm, _mm256_loadu_ps(r + 16), a2)
                a3 = _mm256_fmadd_ps(wm, _mm256_loadu_ps(r + 24), a3)
                a4 = _mm256_fmadd_ps(wm, _mm256_loadu_ps(r + 32), a4)
                a5 = _mm256_fmadd_ps(wm, _mm256_loadu_ps(r + 40), a5)
                a6 = _mm256_fmadd_ps(wm, _mm256_loadu_ps(r + 48), a6)
                a7 = _mm256_fmadd_ps(wm, _mm256_loadu_ps(r + 56), a7)
            }
            _mm256_storeu_ps(out + c, a0); _mm256_storeu_ps(out + c + 8, a1)
            _mm256_storeu_ps(out + c + 16, a2); _mm256_storeu_ps(out + c + 24, a3)
            _mm256_storeu_ps(out + c + 32, a4); _mm256_storeu_ps(out + c + 40, a5)
            _mm256_storeu_ps(out + c + 48, a6); _mm256_storeu_ps(out + c + 56, a7)
            c += 64
        }
        while c + 8 <= channels {
            var a = _mm256_loadu_ps(out + c)
            for m in 0..<count { a = _mm256_fmadd_ps(_mm256_set1_ps(w[m]), _mm256_loadu_ps(rows + m * channels + c), a) }
            _mm256_storeu_ps(out + c, a)
            c += 8
        }
    }

    /// scores[m] = sum_c q[c] * rows[m * channels + c] for m < count (channels % 8 == 0).
    @inline(never)
    public static func rowScores(
        _ q: UnsafePointer<Float>, rows: UnsafePointer<Float>, count: Int, channels: Int, into scores: UnsafeMutablePointer<Float>
    ) {
        for m in 0..<count {
            let r = rows + m * channels
            var a = _mm256_setzero_ps(), b = _mm256_setzero_ps()
            var c = 0
            while c + 16 <= channels {
                a = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), _mm256_loadu_ps(r + c), a)
                b = _mm256_fmadd_ps(_mm256_loadu_ps(q + c + 8), _mm256_loadu_ps(r + c + 8), b)
                c += 16
            }
            if c < channels { a = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), _mm256_loadu_ps(r + c), a) }
            let v = _mm256_add_ps(a, b)
            let h = v.lowHalf + v.highHalf
            scores[m] = (h[0] + h[2]) + (h[1] + h[3])
        }
    }

    /// Rows of f16 values (`count` rows of `channels`, `stride` halves apart) as dense float rows.
    @inline(never)
    public static func halfRows(
        _ src: UnsafePointer<UInt16>, stride: Int, count: Int, channels: Int, into out: UnsafeMutablePointer<Float>
    ) {
        for m in 0..<count {
            let r = UnsafeRawPointer(src + m * stride), o = out + m * channels
            var c = 0
            while c + 8 <= channels {
                _mm256_storeu_ps(o + c, _mm256_cvtph_ps(_mm_loadu_si128((r + 2 * c).assumingMemoryBound(to: __m128i.self))))
                c += 8
            }
            while c < channels { o[c] = f16(src + m * stride, c); c += 1 }
        }
    }
}
#endif
