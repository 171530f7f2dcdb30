import SpoolKernels
#if arch(x86_64)
import SpoolKernelsAVX2
import SpoolKernelsAVX512
#endif

/// The inner loops of attention on a KIVI cache, one packed group of one KV head at a time.
///
/// A packed group's codes become a small float tile in L1, once per KV head, and each query head
/// that shares the KV head (3 per KV head in SmolLM2) scores or mixes against it; no float copy
/// of the cache exists beyond the tile. Tiles:
/// - key tile (channels, G), channel-major: row i and row ropePairs + i hold channels 2i and
///   2i + 1 (i < ropePairs) dequantized and, for a pre-RoPE cache, rotated by the angle of their
///   offset m in the group (cos/sin (ropePairs, G) tables); rows from 2 * ropePairs on are the
///   remaining channels in order. With ropePairs = 0 the tile is plain channel order (post-RoPE
///   caches). The query goes in the same order, rotated back by the group's start position
///   (`KeyRotation.queryAtGroupStart`): q . R(P + m) k = (R(-P) q) . (R(m) k).
/// - value tile (G, channels), token-major, mixed by the softmax weights.
/// The f16 rows (sink tokens and the residual window) become dense float rows the same way.
///
/// Every kernel has a portable version (SIMD8 without FMA; the NEON path on aarch64), AVX2 and
/// (for those that scale with the context) AVX-512 versions in SpoolKernelsAVX2/512, and a scalar
/// reference in double (`…Reference`) the tests compare them with under MAX_KV_KERNEL_REL_ERROR.
enum KIVITiles {
    typealias V = SIMD8<Float>

    /// Which implementation runs.
    enum Path: Sendable, CaseIterable { case portable, avx2, avx512 }

    /// The path for a kernel level and tile shape: AVX-512 needs groups and heads of 16s.
    static func path(_ level: KernelLevel, group: Int, channels: Int) -> Path {
        #if arch(x86_64)
        guard level.isSupported else { return .portable }
        switch level {
        case .avx512vnni where group % 16 == 0 && channels % 16 == 0: return .avx512
        case .avx2, .avx512vnni: return .avx2
        case .generic: return .portable
        }
        #else
        return .portable
        #endif
    }

    /// Every path this machine can run for the shape (tests run each).
    static func supportedPaths(group: Int, channels: Int) -> [Path] {
        Array(Set(KernelLevel.supported.map { path($0, group: group, channels: channels) })).sorted { "\($0)" < "\($1)" }
    }

    /// Where one head's key codes of one packed group are: see the type's comment for the tile.
    struct KeySource {
        var codes: UnsafeRawPointer
        /// Per channel: byte offset of its code row from `codes`, and its width (0: no codes).
        var rowOffsets: UnsafePointer<Int32>
        var rowBits: UnsafePointer<UInt8>
        /// Per channel, f16.
        var scales: UnsafePointer<UInt16>
        var zeros: UnsafePointer<UInt16>
        var channels: Int
        var ropePairs: Int
        var group: Int
        /// (ropePairs, group) offset angles; any valid pointer when ropePairs is 0.
        var cos: UnsafePointer<Float>
        var sin: UnsafePointer<Float>
    }

    /// Where `tokens` tokens of one head's value codes are (see `KIVIAVX2.valueTile`).
    struct ValueSource {
        var codes: UnsafeRawPointer
        var tokenBytes: Int
        var bits: Int
        var scales: UnsafePointer<UInt16>
        var zeros: UnsafePointer<UInt16>
        var groupsPerToken: Int
        var firstChannel: Int
        var channels: Int
        var valueGroup: Int
        var tokens: Int
    }

    // MARK: dispatch

    static func keyTile(_ path: Path, _ s: KeySource, into tile: UnsafeMutablePointer<Float>) {
        #if arch(x86_64)
        switch path {
        case .avx512:
            KIVIAVX512.keyTile(codes: s.codes, rowOffsets: s.rowOffsets, rowBits: s.rowBits, scales: s.scales, zeros: s.zeros,
                               channels: s.channels, ropePairs: s.ropePairs, group: s.group, cos: s.cos, sin: s.sin, into: tile)
            return
        case .avx2:
            KIVIAVX2.keyTile(codes: s.codes, rowOffsets: s.rowOffsets, rowBits: s.rowBits, scales: s.scales, zeros: s.zeros,
                             channels: s.channels, ropePairs: s.ropePairs, group: s.group, cos: s.cos, sin: s.sin, into: tile)
            return
        case .portable: break
        }
        #endif
        keyTilePortable(s, into: tile)
    }

    /// scores[m] = sum_c q[c] * tile[c * group + m], m < group.
    static func tileScores(_ path: Path, _ q: UnsafePointer<Float>, tile: UnsafePointer<Float>, channels: Int, group: Int,
                           into scores: UnsafeMutablePointer<Float>) {
        #if arch(x86_64)
        switch path {
        case .avx512: KIVIAVX512.tileScores(q, tile: tile, channels: channels, group: group, into: scores); return
        case .avx2: KIVIAVX2.tileScores(q, tile: tile, channels: channels, group: group, into: scores); return
        case .portable: break
        }
        #endif
        tileScoresPortable(q, tile: tile, channels: channels, group: group, into: scores)
    }

    static func valueTile(_ path: Path, _ s: ValueSource, into tile: UnsafeMutablePointer<Float>) {
        #if arch(x86_64)
        switch path {
        case .avx512:
            KIVIAVX512.valueTile(codes: s.codes, tokenBytes: s.tokenBytes, bits: s.bits, scales: s.scales, zeros: s.zeros,
                                 groupsPerToken: s.groupsPerToken, firstChannel: s.firstChannel, channels: s.channels,
                                 valueGroup: s.valueGroup, tokens: s.tokens, into: tile)
            return
        case .avx2:
            KIVIAVX2.valueTile(codes: s.codes, tokenBytes: s.tokenBytes, bits: s.bits, scales: s.scales, zeros: s.zeros,
                               groupsPerToken: s.groupsPerToken, firstChannel: s.firstChannel, channels: s.channels,
                               valueGroup: s.valueGroup, tokens: s.tokens, into: tile)
            return
        case .portable: break
        }
        #endif
        valueTilePortable(s, into: tile)
    }

    /// out[c] += sum_m w[m] * rows[m * channels + c].
    static func rowsMix(_ path: Path, _ w: UnsafePointer<Float>, rows: UnsafePointer<Float>, count: Int, channels: Int,
                        into out: UnsafeMutablePointer<Float>) {
        #if arch(x86_64)
        switch path {
        case .avx512: KIVIAVX512.rowsMix(w, rows: rows, count: count, channels: channels, into: out); return
        case .avx2: KIVIAVX2.rowsMix(w, rows: rows, count: count, channels: channels, into: out); return
        case .portable: break
        }
        #endif
        rowsMixPortable(w, rows: rows, count: count, channels: channels, into: out)
    }

    /// scores[m] = sum_c q[c] * rows[m * channels + c], m < count. (Few rows: AVX2 at both x86 levels.)
    static func rowScores(_ path: Path, _ q: UnsafePointer<Float>, rows: UnsafePointer<Float>, count: Int, channels: Int,
                          into scores: UnsafeMutablePointer<Float>) {
        #if arch(x86_64)
        if path != .portable { KIVIAVX2.rowScores(q, rows: rows, count: count, channels: channels, into: scores); return }
        #endif
        rowScoresPortable(q, rows: rows, count: count, channels: channels, into: scores)
    }

    /// `count` f16 rows of `channels`, `stride` halves apart, as dense float rows (exact).
    static func halfRows(_ path: Path, _ src: UnsafePointer<UInt16>, stride: Int, count: Int, channels: Int,
                         into out: UnsafeMutablePointer<Float>) {
        #if arch(x86_64)
        if path != .portable { KIVIAVX2.halfRows(src, stride: stride, count: count, channels: channels, into: out); return }
        #endif
        for m in 0..<count {
            let r = src + m * stride, o = out + m * channels
            var c = 0
            while c + 8 <= channels {
                let (even, odd) = Half.load8Split(r + c)
                for k in 0..<4 { o[c + 2 * k] = even[k]; o[c + 2 * k + 1] = odd[k] }
                c += 8
            }
            while c < channels { o[c] = Half.float(r[c]); c += 1 }
        }
    }

    // MARK: portable versions

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }

    @inline(__always)
    static func store(_ v: V, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self) }

    /// Codes 8 * chunk ..< 8 * chunk + 8 of a row, as exact floats (`CodeWidth` lanes times their scale).
    @inline(__always)
    static func codes8(_ row: UnsafeRawPointer, chunk: Int, bits: Int) -> V {
        switch bits {
        case 2: return Code2.unpack8(row, chunk: chunk) * Code2.laneScale
        case 4: return Code4.unpack8(row, chunk: chunk) * Code4.laneScale
        default: return Code8.unpack8(row, chunk: chunk) * Code8.laneScale
        }
    }

    static func keyTilePortable(_ s: KeySource, into tile: UnsafeMutablePointer<Float>) {
        let chunks = s.group / 8, g = s.group
        for i in 0..<s.ropePairs {
            let a = 2 * i, b = a + 1, bits = Int(s.rowBits[a])
            let sa = Half.float(s.scales[a]), za = V(repeating: Half.float(s.zeros[a]))
            let sb = Half.float(s.scales[b]), zb = V(repeating: Half.float(s.zeros[b]))
            let ra = s.codes + Int(s.rowOffsets[a]), rb = s.codes + Int(s.rowOffsets[b])
            for k in 0..<chunks {
                let xa = bits == 0 ? za : sa * codes8(ra, chunk: k, bits: bits) + za
                let xb = bits == 0 ? zb : sb * codes8(rb, chunk: k, bits: bits) + zb
                let c = load(s.cos + i * g + 8 * k), sn = load(s.sin + i * g + 8 * k)
                store(xa * c - xb * sn, tile + i * g + 8 * k)
                store(xa * sn + xb * c, tile + (s.ropePairs + i) * g + 8 * k)
            }
        }
        for ch in (2 * s.ropePairs)..<s.channels {
            let bits = Int(s.rowBits[ch]), sc = Half.float(s.scales[ch]), z = V(repeating: Half.float(s.zeros[ch]))
            let row = s.codes + Int(s.rowOffsets[ch])
            for k in 0..<chunks { store(bits == 0 ? z : sc * codes8(row, chunk: k, bits: bits) + z, tile + ch * g + 8 * k) }
        }
    }

    static func tileScoresPortable(_ q: UnsafePointer<Float>, tile: UnsafePointer<Float>, channels: Int, group: Int,
                                   into scores: UnsafeMutablePointer<Float>) {
        let chunks = group / 8
        var k = 0
        while k + 4 <= chunks {
            var a0 = V.zero, a1 = V.zero, a2 = V.zero, a3 = V.zero
            for c in 0..<channels {
                let qc = V(repeating: q[c]), r = tile + c * group + 8 * k
                a0 += qc * load(r); a1 += qc * load(r + 8); a2 += qc * load(r + 16); a3 += qc * load(r + 24)
            }
            store(a0, scores + 8 * k); store(a1, scores + 8 * k + 8); store(a2, scores + 8 * k + 16); store(a3, scores + 8 * k + 24)
            k += 4
        }
        while k < chunks {
            var a = V.zero
            for c in 0..<channels { a += V(repeating: q[c]) * load(tile + c * group + 8 * k) }
            store(a, scores + 8 * k)
            k += 1
        }
    }

    static func valueTilePortable(_ s: ValueSource, into tile: UnsafeMutablePointer<Float>) {
        let chunks = s.channels / 8, g0 = s.firstChannel / s.valueGroup
        for m in 0..<s.tokens {
            let row = s.codes + m * s.tokenBytes, out = tile + m * s.channels
            for k in 0..<chunks {
                let g = m * s.groupsPerToken + (s.firstChannel + 8 * k) / s.valueGroup - g0
                store(Half.float(s.scales[g]) * codes8(row, chunk: k, bits: s.bits) + Half.float(s.zeros[g]), out + 8 * k)
            }
        }
    }

    static func rowsMixPortable(_ w: UnsafePointer<Float>, rows: UnsafePointer<Float>, count: Int, channels: Int,
                                into out: UnsafeMutablePointer<Float>) {
        var c = 0
        while c + 32 <= channels {
            var a0 = load(out + c), a1 = load(out + c + 8), a2 = load(out + c + 16), a3 = load(out + c + 24)
            for m in 0..<count {
                let wm = V(repeating: w[m]), r = rows + m * channels + c
                a0 += wm * load(r); a1 += wm * load(r + 8); a2 += wm * load(r + 16); a3 += wm * load(r + 24)
            }
            store(a0, out + c); store(a1, out + c + 8); store(a2, out + c + 16); store(a3, out + c + 24)
            c += 32
        }
        while c + 8 <= channels {
            var a = load(out + c)
            for m in 0..<count { a += V(repeating: w[m]) * load(rows + m * channels + c) }
            store(a, out + c)
            c += 8
        }
    }

    static func rowScoresPortable(_ q: UnsafePointer<Float>, rows: UnsafePointer<Float>, count: Int, channels: Int,
                                  into scores: UnsafeMutablePointer<Float>) {
        for m in 0..<count {
            let r = rows + m * channels
            var a = V.zero
            var c = 0
            while c + 8 <= channels { a += load(q + c) * load(r + c); c += 8 }
            var s = a.sum()
            while c < channels { s += q[c] * r[c]; c += 1 }
            scores[m] = s
        }
    }

    // MARK: scalar references (double)

    /// Reference for `keyTile`: codes read one at a time, dequantized and rotated in double.
    static func keyTileReference(_ s: KeySource, into tile: UnsafeMutablePointer<Float>) {
        let g = s.group
        func x(_ c: Int, _ m: Int) -> Double {
            let bits = Int(s.rowBits[c])
            let code = bits == 0 ? 0 : KIVIQuant.code(s.codes + Int(s.rowOffsets[c]), index: m, bits: bits)
            return Double(Half.referenceFloat(s.scales[c])) * Double(code) + Double(Half.referenceFloat(s.zeros[c]))
        }
        for i in 0..<s.ropePairs {
            for m in 0..<g {
                let xa = x(2 * i, m), xb = x(2 * i + 1, m), c = Double(s.cos[i * g + m]), sn = Double(s.sin[i * g + m])
                tile[i * g + m] = Float(xa * c - xb * sn)
                tile[(s.ropePairs + i) * g + m] = Float(xa * sn + xb * c)
            }
        }
        for ch in (2 * s.ropePairs)..<s.channels { for m in 0..<g { tile[ch * g + m] = Float(x(ch, m)) } }
    }

    static func tileScoresReference(_ q: UnsafePointer<Float>, tile: UnsafePointer<Float>, channels: Int, group: Int,
                                    into scores: UnsafeMutablePointer<Float>) {
        for m in 0..<group {
            var s = 0.0
            for c in 0..<channels { s += Double(q[c]) * Double(tile[c * group + m]) }
            scores[m] = Float(s)
        }
    }

    static func valueTileReference(_ s: ValueSource, into tile: UnsafeMutablePointer<Float>) {
        let g0 = s.firstChannel / s.valueGroup
        for m in 0..<s.tokens {
            for c in 0..<s.channels {
                let g = m * s.groupsPerToken + (s.firstChannel + c) / s.valueGroup - g0
                let code = KIVIQuant.code(s.codes + m * s.tokenBytes, index: c, bits: s.bits)
                tile[m * s.channels + c] = Float(Double(Half.referenceFloat(s.scales[g])) * Double(code) + Double(Half.referenceFloat(s.zeros[g])))
            }
        }
    }

    static func rowsMixReference(_ w: UnsafePointer<Float>, rows: UnsafePointer<Float>, count: Int, channels: Int,
                                 into out: UnsafeMutablePointer<Float>) {
        for c in 0..<channels {
            var s = Double(out[c])
            for m in 0..<count { s += Double(w[m]) * Double(rows[m * channels + c]) }
            out[c] = Float(s)
        }
    }

    static func rowScoresReference(_ q: UnsafePointer<Float>, rows: UnsafePointer<Float>, count: Int, channels: Int,
                                   into scores: UnsafeMutablePointer<Float>) {
        for m in 0..<count {
            var s = 0.0
            for c in 0..<channels { s += Double(q[c]) * Double(rows[m * channels + c]) }
            scores[m] = Float(s)
        }
    }
}
