#if arch(x86_64)
import _Builtin_intrinsics.intel

/// AVX-512 versions of the KIVI tile kernels whose work grows with the context (key tiles, tile
/// scores, value tiles, mixing); same layouts and results as `KIVIAVX2` (see there and
/// `KIVITiles` in SpoolKV). 16 tokens or channels per zmm: callers use these only when the group
/// and the head dimension are multiples of 16.
public enum KIVIAVX512 {
    @inline(__always)
    static func f16(_ p: UnsafePointer<UInt16>, _ i: Int) -> Float { Float(Float16(bitPattern: p[i])) }

    /// Codes 16 * chunk ..< 16 * chunk + 16 of a row, as floats.
    @inline(__always)
    static func codes16(_ row: UnsafeRawPointer, chunk: Int, bits: Int) -> __m512 {
        switch bits {
        case 2:
            let v = Int32(bitPattern: row.loadUnaligned(fromByteOffset: chunk * 4, as: UInt32.self))
            let x = _mm512_srlv_epi32(_mm512_set1_epi32(v), _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0))
            return _mm512_cvtepi32_ps(_mm512_and_si512(x, _mm512_set1_epi32(3)))
        case 4:
            // Lanes 0-7 take the low 32 bits, lanes 8-15 the high ones.
            let v = Int64(bitPattern: row.loadUnaligned(fromByteOffset: chunk * 8, as: UInt64.self))
            let w = _mm512_permutexvar_epi32(_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0), _mm512_set1_epi64(v))
            let x = _mm512_srlv_epi32(w, _mm512_set_epi32(28, 24, 20, 16, 12, 8, 4, 0, 28, 24, 20, 16, 12, 8, 4, 0))
            return _mm512_cvtepi32_ps(_mm512_and_si512(x, _mm512_set1_epi32(15)))
        default:
            return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((row + chunk * 16).assumingMemoryBound(to: __m128i.self))))
        }
    }

    /// `KIVIAVX2.keyTile` with 16 tokens per vector (group % 16 == 0).
    @inline(never)
    public static func keyTile(
        codes: UnsafeRawPointer, rowOffsets: UnsafePointer<Int32>, rowBits: UnsafePointer<UInt8>,
        scales: UnsafePointer<UInt16>, zeros: UnsafePointer<UInt16>, channels: Int, ropePairs: Int, group: Int,
        cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, into tile: UnsafeMutablePointer<Float>
    ) {
        let chunks = group / 16
        for i in 0..<ropePairs {
            let a = 2 * i, b = a + 1, bits = Int(rowBits[a])
            let sa = _mm512_set1_ps(f16(scales, a)), za = _mm512_set1_ps(f16(zeros, a))
            let sb = _mm512_set1_ps(f16(scales, b)), zb = _mm512_set1_ps(f16(zeros, b))
            let ra = codes + Int(rowOffsets[a]), rb = codes + Int(rowOffsets[b])
            let outA = tile + i * group, outB = tile + (ropePairs + i) * group
            let cp = cos + i * group, sp = sin + i * group
            for k in 0..<chunks {
                let xa = bits == 0 ? za : _mm512_fmadd_ps(sa, codes16(ra, chunk: k, bits: bits), za)
                let xb = bits == 0 ? zb : _mm512_fmadd_ps(sb, codes16(rb, chunk: k, bits: bits), zb)
                let c = _mm512_loadu_ps(cp + 16 * k), s = _mm512_loadu_ps(sp + 16 * k)
                _mm512_storeu_ps(outA + 16 * k, _mm512_fmsub_ps(xa, c, _mm512_mul_ps(xb, s)))
                _mm512_storeu_ps(outB + 16 * k, _mm512_fmadd_ps(xa, s, _mm512_mul_ps(xb, c)))
            }
        }
        for ch in (2 * ropePairs)..<channels {
            let bits = Int(rowBits[ch])
            let s = _mm512_set1_ps(f16(scales, ch)), z = _mm512_set1_ps(f16(zeros, ch))
            let row = codes + Int(rowOffsets[ch]), out = tile + ch * group
            for k in 0..<chunks {
                _mm512_storeu_ps(out + 16 * k, bits == 0 ? z : _mm512_fmadd_ps(s, codes16(row, chunk: k, bits: bits), z))
            }
        }
    }

    /// `KIVIAVX2.tileScores` with 16 tokens per vector: 2 chunks with 4 channels at a time (8
    /// chains), then single chunks with 4 channels at a time.
    @inline(never)
    public static func tileScores(
        _ q: UnsafePointer<Float>, tile: UnsafePointer<Float>, channels: Int, group: Int, into scores: UnsafeMutablePointer<Float>
    ) {
        let chunks = group / 16
        var k = 0
        while k + 2 <= chunks {
            var a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps()
            var c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps(), d0 = _mm512_setzero_ps(), d1 = _mm512_setzero_ps()
            var c = 0
            while c + 4 <= channels {
                let r = tile + c * group + 16 * k
                let qa = _mm512_set1_ps(q[c]), qb = _mm512_set1_ps(q[c + 1])
                let qc = _mm512_set1_ps(q[c + 2]), qd = _mm512_set1_ps(q[c + 3])
                a0 = _mm512_fmadd_ps(qa, _mm512_loadu_ps(r), a0)
                a1 = _mm512_fmadd_ps(qa, _mm512_loadu_ps(r + 16), a1)
                b0 = _mm512_fmadd_ps(qb, _mm512_loadu_ps(r + group), b0)
                b1 = _mm512_fmadd_ps(qb, _mm512_loadu_ps(r + group + 16), b1)
                c0 = _mm512_fmadd_ps(qc, _mm512_loadu_ps(r + 2 * group), c0)
                c1 = _mm512_fmadd_ps(qc, _mm512_loadu_ps(r + 2 * group + 16), c1)
                d0 = _mm512_fmadd_ps(qd, _mm512_loadu_ps(r + 3 * group), d0)
                d1 = _mm512_fmadd_ps(qd, _mm512_loadu_ps(r + 3 * group + 16), d1)
                c += 4
            }
            while c < channels {
                let r = tile + c * group + 16 * k, qa = _mm512_set1_ps(q[c])
                a0 = _mm512_fmadd_ps(qa, _mm512_loadu_ps(r), a0)
                a1 = _mm512_fmadd_ps(qa, _mm512_loadu_ps(r + 16), a1)
                c += 1
            }
            _mm512_storeu_ps(scores + 16 * k, _mm512_add_ps(_mm512_add_ps(a0, b0), _mm512_add_ps(c0, d0)))
            _mm512_storeu_ps(scores + 16 * k + 16, _mm512_add_ps(_mm512_add_ps(a1, b1), _mm512_add_ps(c1, d1)))
            k += 2
        }
        while k < chunks {
            var a = _mm512_setzero_ps(), b = _mm512_setzero_ps(), c2 = _mm512_setzero_ps(), d = _mm512_setzero_ps()
            var c = 0
            while c + 4 <= channels {
                let r = tile + c * group + 16 * k
                a = _mm512_fmadd_ps(_mm512_set1_ps(q[c]), _mm512_loadu_ps(r), a)
                b = _mm512_fmadd_ps(_mm512_set1_ps(q[c + 1]), _mm512_loadu_ps(r + group), b)
                c2 = _mm512_fmadd_ps(_mm512_set1_ps(q[c + 2]), _mm512_loadu_ps(r + 2 * group), c2)
                d = _mm512_fmadd_ps(_mm512_set1_ps(q[c + 3]), _mm512_loadu_ps(r + 3 * group), d)
                c += 4
            }
            while c < channels {
                a = _mm512_fmadd_ps(_mm512_set1_ps(q[c]), _mm512_loadu_ps(tile + c * group + 16 * k), a)
                c += 1
            }
            _mm512_storeu_ps(scores + 16 * k, _mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c2, d)))
            k += 1
        }
    }

    /// `KIVIAVX2.valueTile` with 16 channels per vector (channels % 16 == 0).
    @inline(never)
    public static func valueTile(
        codes: UnsafeRawPointer, tokenBytes: Int, bits: Int, scales: UnsafePointer<UInt16>, zeros: UnsafePointer<UInt16>,
        groupsPerToken: Int, firstChannel: Int, channels: Int, valueGroup: Int, tokens: Int, into tile: UnsafeMutablePointer<Float>
    ) {
        let chunks = channels / 16, g0 = firstChannel / valueGroup
        for m in 0..<tokens {
            let row = codes + m * tokenBytes, out = tile + m * channels
            for k in 0..<chunks {
                // A value group is a multiple of 8 channels, so a 16-channel chunk may span two.
                let gLo = (firstChannel + 16 * k) / valueGroup - g0, gHi = (firstChannel + 16 * k + 8) / valueGroup - g0
                var s = _mm512_set1_ps(f16(scales, m * groupsPerToken + gLo))
                var z = _mm512_set1_ps(f16(zeros, m * groupsPerToken + gLo))
                if gHi != gLo {
                    s = _mm512_mask_mov_ps(s, 0xff00, _mm512_set1_ps(f16(scales, m * groupsPerToken + gHi)))
                    z = _mm512_mask_mov_ps(z, 0xff00, _mm512_set1_ps(f16(zeros, m * groupsPerToken + gHi)))
                }
                _mm512_storeu_ps(out + 16 * k, _mm512_fmadd_ps(s, codes16(row, chunk: k, bits: bits), z))
            }
        }
    }

    /// `KIVIAVX2.rowsMix` with 16 channels per vector (channels % 16 == 0): 64 channels with even
    /// and odd rows in separate accumulators (8 chains), then 16.
    @inline(never)
    public static func rowsMix(
        _ w: UnsafePointer<Float>, rows: UnsafePointer<Float>, count: Int, channels: Int, into out: UnsafeMutablePointer<Float>
    ) {
        var c = 0
        while c + 64 <= channels {
            var a0 = _mm512_loadu_ps(out + c), a1 = _mm512_loadu_ps(out + c + 16)
            var a2 = _mm512_loadu_ps(out + c + 32), a3 = _mm512_loadu_ps(out + c + 48)
            var b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps()
            var m = 0
            while m + 2 <= count {
                let wa = _mm512_set1_ps(w[m]), wb = _mm512_set1_ps(w[m + 1])
                let ra = rows + m * channels + c, rb = ra + channels
                a0 = _mm512_fmadd_ps(wa, _mm512_loadu_ps(ra), a0)
                a1 = _mm512_fmadd_ps(wa, _mm512_loadu_ps(ra + 16), a1)
                a2 = _mm512_fmadd_ps(wa, _mm512_loadu_ps(ra + 32), a2)
                a3 = _mm512_fmadd_ps(wa, _mm512_loadu_ps(ra + 48), a3)
                b0 = _mm512_fmadd_ps(wb, _mm512_loadu_ps(rb), b0)
                b1 = _mm512_fmadd_ps(wb, _mm512_loadu_ps(rb + 16), b1)
                b2 = _mm512_fmadd_ps(wb, _mm512_loadu_ps(rb + 32), b2)
                b3 = _mm512_fmadd_ps(wb, _mm512_loadu_ps(rb + 48), b3)
                m += 2
            }
            if m < count {
                let wa = _mm512_set1_ps(w[m]), ra = rows + m * channels + c
                a0 = _mm512_fmadd_ps(wa, _mm512_loadu_ps(ra), a0)
                a1 = _mm512_fmadd_ps(wa, _mm512_loadu_ps(ra + 16), a1)
                a2 = _mm512_fmadd_ps(wa, _mm512_loadu_ps(ra + 32), a2)
                a3 = _mm512_fmadd_ps(wa, _mm512_loadu_ps(ra + 48), a3)
            }
            _mm512_storeu_ps(out + c, _mm512_add_ps(a0, b0))
            _mm512_storeu_ps(out + c + 16, _mm512_add_ps(a1, b1))
            _mm512_storeu_ps(out + c + 32, _mm512_add_ps(a2, b2))
            _mm512_storeu_ps(out + c + 48, _mm512_add_ps(a3, b3))
            c += 64
        }
        while c + 16 <= channels {
            var a = _mm512_loadu_ps(out + c)
            for m in 0..<count { a = _mm512_fmadd_ps(_mm512_set1_ps(w[m]), _mm512_loadu_ps(rows + m * channels + c), a) }
            _mm512_storeu_ps(out + c, a)
            c += 16
        }
    }
}
#endif
