/// The inner loops of attention over stored keys and values: f16 rows for the f16 cache and the
/// KIVI window, packed 2/4/8-bit groups for the KIVI store. Each SIMD loop has a scalar reference
/// below it (`…Reference`), compared in the tests under a named limit.
///
/// Written with portable SIMD8 types and no fused multiply-add: this module is compiled for the
/// baseline target, where `addingProduct` becomes one `fmaf` libcall per lane.
enum KVKernels {
    typealias V = SIMD8<Float>

    // MARK: f16 rows

    /// Reorders each full chunk of 8 values to (x0, x2, x4, x6, x1, x3, x5, x7), the lane order of
    /// `Half.load8Split`; a tail shorter than 8 stays as it is.
    @inline(__always)
    static func deinterleave(_ x: UnsafePointer<Float>, _ n: Int, into out: UnsafeMutablePointer<Float>) {
        var i = 0
        while i + 8 <= n {
            for k in 0..<4 { out[i + k] = x[i + 2 * k]; out[i + 4 + k] = x[i + 2 * k + 1] }
            i += 8
        }
        while i < n { out[i] = x[i]; i += 1 }
    }

    /// The inverse of `deinterleave`.
    @inline(__always)
    static func interleave(_ x: UnsafePointer<Float>, _ n: Int, into out: UnsafeMutablePointer<Float>) {
        var i = 0
        while i + 8 <= n {
            for k in 0..<4 { out[i + 2 * k] = x[i + k]; out[i + 2 * k + 1] = x[i + 4 + k] }
            i += 8
        }
        while i < n { out[i] = x[i]; i += 1 }
    }

    /// dot(a, half row b) over n values, with `a` in `deinterleave` order.
    @inline(__always)
    static func dotHalf(_ a: UnsafePointer<Float>, _ b: UnsafePointer<UInt16>, _ n: Int) -> Float {
        typealias V4 = SIMD4<Float>
        var acc0 = V4.zero, acc1 = V4.zero
        var i = 0
        while i + 8 <= n {
            let (even, odd) = Half.load8Split(b + i)
            acc0 += UnsafeRawPointer(a + i).loadUnaligned(as: V4.self) * even
            acc1 += UnsafeRawPointer(a + i + 4).loadUnaligned(as: V4.self) * odd
            i += 8
        }
        var s = (acc0 + acc1).sum()
        while i < n { s += a[i] * Half.float(b[i]); i += 1 }
        return s
    }

    /// out += w * half row x, with `out` in `deinterleave` order.
    @inline(__always)
    static func axpyHalf(_ w: Float, _ x: UnsafePointer<UInt16>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        typealias V4 = SIMD4<Float>
        var i = 0
        while i + 8 <= n {
            let (even, odd) = Half.load8Split(x + i)
            let o = UnsafeMutableRawPointer(out + i)
            o.storeBytes(of: o.loadUnaligned(as: V4.self) + w * even, as: V4.self)
            o.storeBytes(of: o.loadUnaligned(fromByteOffset: 16, as: V4.self) + w * odd, toByteOffset: 16, as: V4.self)
            i += 8
        }
        while i < n { out[i] += w * Half.float(x[i]); i += 1 }
    }

    /// Reference for `dotHalf`, with `a` in natural order.
    static func dotHalfReference(_ a: UnsafePointer<Float>, _ b: UnsafePointer<UInt16>, _ n: Int) -> Float {
        var s = 0.0
        for i in 0..<n { s += Double(a[i]) * Double(Half.referenceFloat(b[i])) }
        return Float(s)
    }

    // MARK: packed keys (KIVI: per channel over a group of tokens)

    /// Scores of one key group for one head: scores[i] = qz + sum_c qs[c] * code(c, i) for the
    /// `group` tokens i of the group, where channel c's codes for the group's tokens are `rowBytes`
    /// bytes at codes + c * rowBytes (token i at bit i * bits, little-endian). The caller folds the
    /// channel scales into `qs` (q[c] * scale[c]) and the zero points into `qz` (sum q[c] * zero[c]).
    static func keyGroupScores<W: CodeWidth>(
        _: W.Type, qs: UnsafePointer<Float>, qz: Float, codes: UnsafeRawPointer, rowBytes: Int,
        channels: Int, group: Int, into scores: UnsafeMutablePointer<Float>
    ) {
        var chunk = 0
        let chunks = group / 8
        // Four chunks of 8 tokens at a time: four independent accumulators.
        while chunk + 4 <= chunks {
            var a0 = V.zero, a1 = V.zero, a2 = V.zero, a3 = V.zero
            for c in 0..<channels {
                let row = codes + c * rowBytes
                let s = V(repeating: qs[c])
                a0 += s * W.unpack8(row, chunk: chunk)
                a1 += s * W.unpack8(row, chunk: chunk + 1)
                a2 += s * W.unpack8(row, chunk: chunk + 2)
                a3 += s * W.unpack8(row, chunk: chunk + 3)
            }
            let out = UnsafeMutableRawPointer(scores + chunk * 8)
            out.storeBytes(of: a0 * W.laneScale + qz, toByteOffset: 0, as: V.self)
            out.storeBytes(of: a1 * W.laneScale + qz, toByteOffset: 32, as: V.self)
            out.storeBytes(of: a2 * W.laneScale + qz, toByteOffset: 64, as: V.self)
            out.storeBytes(of: a3 * W.laneScale + qz, toByteOffset: 96, as: V.self)
            chunk += 4
        }
        while chunk < chunks {
            var a = V.zero
            for c in 0..<channels {
                a += V(repeating: qs[c]) * W.unpack8(codes + c * rowBytes, chunk: chunk)
            }
            UnsafeMutableRawPointer(scores + chunk * 8).storeBytes(of: a * W.laneScale + qz, as: V.self)
            chunk += 1
        }
    }

    static func keyGroupScoresReference(
        bits: Int, qs: UnsafePointer<Float>, qz: Float, codes: UnsafeRawPointer, rowBytes: Int,
        channels: Int, group: Int, into scores: UnsafeMutablePointer<Float>
    ) {
        for i in 0..<group {
            var s = Double(qz)
            for c in 0..<channels {
                s += Double(qs[c]) * Double(KIVIQuant.code(codes + c * rowBytes, index: i, bits: bits))
            }
            scores[i] = Float(s)
        }
    }

    // MARK: packed pre-RoPE keys

    /// Scores of one key group quantized before RoPE: score_i = k_i . R(p_i)^T q, i.e. the query is
    /// rotated back by each token's position instead of rotating every dequantized key. Lanes are
    /// 8 tokens; per rotary pair (a, b) = (2i, 2i + 1) and lane position p:
    ///   ra = q_a cos + q_b sin,  rb = q_b cos - q_a sin   (angle p * theta_i)
    /// and score += ra * (s_a code_a + z_a) + rb * (s_b code_b + z_b). Channels past `ropeDims`
    /// are not rotated. `cos`/`sin` are (pairs, positionStride) columns (`KeyRotation` passes its
    /// offset columns with the query already rotated back to the group start).
    static func rotatedKeyGroupScores<W: CodeWidth>(
        _: W.Type, query q: UnsafePointer<Float>, scales s: UnsafePointer<Float>, zeros z: UnsafePointer<Float>,
        codes: UnsafeRawPointer, rowBytes: Int, channels: Int, ropeDims: Int, group: Int,
        cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, positionStride: Int, firstPosition: Int,
        into scores: UnsafeMutablePointer<Float>
    ) {
        rotatedKeyGroupScores(
            W.self, W.self, query: q, scales: s, zeros: z, order: nil, highPairs: 0, zeroPairs: 0, codes: codes, highRowBytes: 0,
            rowBytes: rowBytes, channels: channels, ropeDims: ropeDims, group: group, cos: cos, sin: sin,
            positionStride: positionStride, firstPosition: firstPosition, into: scores)
    }

    /// The same with rotary pairs stored at two widths: pair order[k] (k-th in `order`, identity
    /// when nil) has code rows 2k and 2k + 1; rows of the first `highPairs` pairs are `highRowBytes`
    /// long with `Hi` codes, the rest `rowBytes` with `Lo` codes, and the channels past `ropeDims`
    /// follow as `Lo` rows in channel order. The last `zeroPairs` pairs of `order` have no rows and
    /// contribute only their zeros. Scales, zeros and the query stay in channel order.
    static func rotatedKeyGroupScores<Hi: CodeWidth, Lo: CodeWidth>(
        _: Hi.Type, _: Lo.Type, query q: UnsafePointer<Float>, scales s: UnsafePointer<Float>, zeros z: UnsafePointer<Float>,
        order: UnsafePointer<UInt8>?, highPairs: Int, zeroPairs: Int, codes: UnsafeRawPointer, highRowBytes: Int, rowBytes: Int,
        channels: Int, ropeDims: Int, group: Int,
        cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, positionStride: Int, firstPosition: Int,
        into scores: UnsafeMutablePointer<Float>
    ) {
        let pairs = ropeDims / 2, coded = pairs - zeroPairs
        let lowCodes = codes + 2 * highPairs * highRowBytes
        let tailCodes = lowCodes + 2 * (coded - highPairs) * rowBytes
        for chunk in 0..<(group / 8) {
            var hacc = V.zero, acc = V.zero, zacc = V.zero
            let p = firstPosition + chunk * 8
            for k in 0..<pairs {
                let i = order.map { Int($0[k]) } ?? k
                let a = 2 * i, b = a + 1
                let cv = UnsafeRawPointer(cos + i * positionStride + p).loadUnaligned(as: V.self)
                let sv = UnsafeRawPointer(sin + i * positionStride + p).loadUnaligned(as: V.self)
                let ra = q[a] * cv + q[b] * sv, rb = q[b] * cv - q[a] * sv
                if k >= coded {
                    // No codes: the key is its zero.
                } else if k < highPairs {
                    let row = codes + 2 * k * highRowBytes
                    hacc += ra * s[a] * Hi.unpack8(row, chunk: chunk) + rb * s[b] * Hi.unpack8(row + highRowBytes, chunk: chunk)
                } else {
                    let row = lowCodes + 2 * (k - highPairs) * rowBytes
                    acc += ra * s[a] * Lo.unpack8(row, chunk: chunk) + rb * s[b] * Lo.unpack8(row + rowBytes, chunk: chunk)
                }
                zacc += ra * z[a] + rb * z[b]
            }
            var zs: Float = 0
            for c in ropeDims..<channels {
                acc += V(repeating: q[c] * s[c]) * Lo.unpack8(tailCodes + (c - ropeDims) * rowBytes, chunk: chunk)
                zs += q[c] * z[c]
            }
            let total = acc * Lo.laneScale + (highPairs > 0 ? hacc * Hi.laneScale : V.zero) + zacc + zs
            UnsafeMutableRawPointer(scores + chunk * 8).storeBytes(of: total, as: V.self)
        }
    }

    // MARK: packed values (KIVI: per token over a group of channels)

    /// out[c] += sum_j w[j] * (scale[j, g(c)] * code(j, c) + zero[j, g(c)]) for the `channels`
    /// channels of one head, over `tokens` tokens. Token j's codes are at codes + j * tokenBytes
    /// (channel c at bit c * bits); its scales and zeros at scales/zeros + j * groupsPerToken, the
    /// first one being the group of channel 0. `firstChannel` is the head's offset within the token,
    /// so that g(c) = (firstChannel + c) / group - firstChannel / group.
    static func valueAccumulate<W: CodeWidth>(
        _: W.Type, weights: UnsafePointer<Float>, tokens: Int, codes: UnsafeRawPointer, tokenBytes: Int,
        scales: UnsafePointer<UInt16>, zeros: UnsafePointer<UInt16>, groupsPerToken: Int,
        firstChannel: Int, channels: Int, group: Int, into out: UnsafeMutablePointer<Float>
    ) {
        let chunks = channels / 8
        let g0 = firstChannel / group
        func groupOf(_ chunk: Int) -> Int { (firstChannel + chunk * 8) / group - g0 }
        var chunk = 0
        while chunk < chunks {
            let n = min(4, chunks - chunk)
            let gA = groupOf(chunk), gB = groupOf(chunk + min(1, n - 1))
            let gC = groupOf(chunk + min(2, n - 1)), gD = groupOf(chunk + min(3, n - 1))
            var a0 = V.zero, a1 = V.zero, a2 = V.zero, a3 = V.zero
            var z0: Float = 0, z1: Float = 0, z2: Float = 0, z3: Float = 0
            for j in 0..<tokens {
                let w = weights[j]
                let row = codes + j * tokenBytes
                let sp = scales + j * groupsPerToken, zp = zeros + j * groupsPerToken
                let sA = w * Half.float(sp[gA])
                a0 += V(repeating: sA) * W.unpack8(row, chunk: chunk)
                z0 += w * Half.float(zp[gA])
                if n == 4 {
                    // Groups are at least 8 channels, so consecutive chunks often share one.
                    let sB = gB == gA ? sA : w * Half.float(sp[gB])
                    let sC = gC == gB ? sB : w * Half.float(sp[gC])
                    let sD = gD == gC ? sC : w * Half.float(sp[gD])
                    a1 += V(repeating: sB) * W.unpack8(row, chunk: chunk + 1)
                    a2 += V(repeating: sC) * W.unpack8(row, chunk: chunk + 2)
                    a3 += V(repeating: sD) * W.unpack8(row, chunk: chunk + 3)
                    z1 += gB == gA ? 0 : w * Half.float(zp[gB])
                    z2 += gC == gB ? 0 : w * Half.float(zp[gC])
                    z3 += gD == gC ? 0 : w * Half.float(zp[gD])
                }
            }
            // The zero-point sums of chunks that share a group were folded into the first chunk
            // of that group; spread them back.
            let zB = gB == gA ? z0 : z1, zC = gC == gB ? zB : z2, zD = gD == gC ? zC : z3
            let o = UnsafeMutableRawPointer(out + chunk * 8)
            o.storeBytes(of: o.load(fromByteOffset: 0, as: V.self) + a0 * W.laneScale + z0, toByteOffset: 0, as: V.self)
            if n == 4 {
                o.storeBytes(of: o.load(fromByteOffset: 32, as: V.self) + a1 * W.laneScale + zB, toByteOffset: 32, as: V.self)
                o.storeBytes(of: o.load(fromByteOffset: 64, as: V.self) + a2 * W.laneScale + zC, toByteOffset: 64, as: V.self)
                o.storeBytes(of: o.load(fromByteOffset: 96, as: V.self) + a3 * W.laneScale + zD, toByteOffset: 96, as: V.self)
                chunk += 4
            } else {
                chunk += 1
            }
        }
    }

    static func valueAccumulateReference(
        bits: Int, weights: UnsafePointer<Float>, tokens: Int, codes: UnsafeRawPointer, tokenBytes: Int,
        scales: UnsafePointer<UInt16>, zeros: UnsafePointer<UInt16>, groupsPerToken: Int,
        firstChannel: Int, channels: Int, group: Int, into out: UnsafeMutablePointer<Float>
    ) {
        let g0 = firstChannel / group
        for c in 0..<channels {
            let g = (firstChannel + c) / group - g0
            var s = Double(out[c])
            for j in 0..<tokens {
                let code = Float(KIVIQuant.code(codes + j * tokenBytes, index: c, bits: bits))
                let x = Half.referenceFloat(scales[j * groupsPerToken + g]) * code + Half.referenceFloat(zeros[j * groupsPerToken + g])
                s += Double(weights[j]) * Double(x)
            }
            out[c] = Float(s)
        }
    }
}
