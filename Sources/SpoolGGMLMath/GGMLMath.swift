// Arithmetic that reproduces llama.cpp's CPU backend (ggml-cpu, x86 AVX-512 build, non-flash
// attention) bit for bit: the same operations, in the same order, with the same roundings.
//
// Why: the default model is small enough that a one-ulp difference in an activation can flip an
// 8-bit rounding, and greedy decoding then follows a different branch at near-ties. Matching
// llama.cpp's arithmetic (checked tensor by tensor against llama-eval-callback dumps with
// `spool dump-tensors`, see docs/EXACTNESS.md) makes Spool's logits equal to llama.cpp's.
//
// Everything here is `@_alwaysEmitIntoClient @inline(__always)` so that it is compiled inside its caller's
// module: in SpoolKernelsAVX2 (built with FMA) `addingProduct` becomes one vfmadd; in the portable
// module it is a fused multiply-add too (a libm call on baseline x86, native on aarch64), so the
// results are identical at every level. Nothing here reassociates: SIMD lanes are the lanes ggml uses.

public enum GGMLMath {
    public typealias V16 = SIMD16<Float>

    /// ggml_v_expf (AVX-512 version): exp(x) by n = round(x / ln2) and a degree-5 polynomial in
    /// the reduced argument, scaled by 2^n. Max error about 1.5 ulp; |n| > 192 saturates to 0 / inf.
    @_transparent
    public static func exp(_ x: V16) -> V16 {
        let r = V16(repeating: 0x1.8p23)
        let z = r.addingProduct(x, V16(repeating: 0x1.715476p+0))
        let n = z - r
        let b = x.addingProduct(-n, V16(repeating: 0x1.62e4p-1)).addingProduct(-n, V16(repeating: 0x1.7f7d1cp-20))
        let u = b * b
        let p1 = V16(repeating: 0x1.573e2ep-5).addingProduct(V16(repeating: 0x1.0e4020p-7), b)
        let p2 = V16(repeating: 0x1.fffdb6p-2).addingProduct(V16(repeating: 0x1.555e66p-3), b)
        let p3 = V16(repeating: 1).addingProduct(V16(repeating: 0x1.ffffecp-1), b)
        let j = p3.addingProduct(p2.addingProduct(p1, u), u)
        // scalef(j, n) = j * 2^n with one rounding: n = n1 + n2 with both powers normal floats, and
        // j * 2^n1 exact (j is within [0.7, 1.5]), so only the second product rounds.
        let k = unsafeBitCast(z, to: SIMD16<Int32>.self) &- SIMD16<Int32>(repeating: Int32(bitPattern: r[0].bitPattern))
        let k1 = k.clamped(lowerBound: SIMD16(repeating: -100), upperBound: SIMD16(repeating: 100))
        let k2 = (k &- k1).clamped(lowerBound: SIMD16(repeating: -100), upperBound: SIMD16(repeating: 100))
        let e1 = unsafeBitCast((k1 &+ 127) &<< 23, to: V16.self)
        let e2 = unsafeBitCast((k2 &+ 127) &<< 23, to: V16.self)
        let res = (j * e1) * e2
        let big = (n .> V16(repeating: 192)) .| (n .< V16(repeating: -192))
        guard any(big) else { return res }
        let alt = V16(repeating: 0).replacing(with: .infinity, where: n .> 0)
        return res.replacing(with: alt, where: big)
    }

    /// ggml_v_silu: x / (1 + exp(0 - x)).
    @_alwaysEmitIntoClient @inline(__always)
    public static func silu(_ x: V16) -> V16 {
        x / (1 + exp(0 - x))
    }

    /// _mm512_reduce_add_ps as GCC expands it: halves, then quarters, then pairs.
    @_transparent
    public static func reduce(_ v: V16) -> Float {
        let t3 = v.highHalf + v.lowHalf
        let t6 = t3.highHalf + t3.lowHalf
        let t8 = t6.lowHalf + t6.highHalf
        return t8[0] + t8[1]
    }

    /// hsum_float_8: (x0 + x4) + (x2 + x6) + ((x1 + x5) + (x3 + x7)).
    @_transparent
    public static func reduce(_ v: SIMD8<Float>) -> Float {
        let a = v.highHalf + v.lowHalf
        let b = a.lowHalf + a.highHalf
        return b[0] + b[1]
    }

    /// ggml_vec_swiglu_f32: silu(gate) * up, 16 at a time; the tail as ggml_silu_f32 (x / (1 + expf(-x))).
    @_alwaysEmitIntoClient @inline(__always)
    public static func swiglu(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, count: Int,
                              into out: UnsafeMutablePointer<Float>, expf: (Float) -> Float) {
        var i = 0
        while i + 16 <= count {
            let g = UnsafeRawPointer(gate + i).loadUnaligned(as: V16.self)
            let u = UnsafeRawPointer(up + i).loadUnaligned(as: V16.self)
            UnsafeMutableRawPointer(out + i).storeBytes(of: silu(g) * u, as: V16.self)
            i &+= 16
        }
        while i < count {
            let g = gate[i]
            out[i] = g / (1 + expf(-g)) * up[i]
            i &+= 1
        }
    }

    /// The attention softmax of ggml_compute_forward_soft_max_f32 for one row of n scores, in place:
    /// w = s * scale, m = max(w), e = exp(w - m) 16 at a time with the sum of each 16 added in
    /// double, then e * Float(1 / sum). Scores past n are masked (-inf), as in llama.cpp's padded
    /// rows, so the last group of 16 is padded with zeros.
    @_transparent
    public static func softmax(_ s: UnsafeMutablePointer<Float>, n: Int, scale: Float) {
        var m = -Float.infinity
        for i in 0..<n {
            s[i] *= scale
            m = Swift.max(m, s[i])
        }
        var sum: Double = 0
        var i = 0
        while i < n {
            var w = V16(repeating: -.infinity)
            let c = Swift.min(16, n - i)
            for l in 0..<c { w[l] = s[i + l] }
            let e = exp(w - V16(repeating: m))
            for l in 0..<c { s[i + l] = e[l] }
            sum += Double(reduce(e))
            i &+= 16
        }
        let inv = Float(1.0 / sum)
        for i in 0..<n { s[i] *= inv }
    }

    /// f16 bits to float (exact). Compiled with F16C (SpoolKernelsAVX2) this is two vcvtph2ps;
    /// in the portable module it is a conversion call per value.
    @_transparent
    public static func float(_ h: SIMD16<UInt16>) -> V16 {
        var r = V16(repeating: 0)
        for l in 0..<16 { r[l] = Float(Float16(bitPattern: h[l])) }
        return r
    }

    /// Q·K for an f16 K cache as ggml's tinyBLAS computes it (the query rounded to f16 by the
    /// caller): lane l accumulates elements l, l + 16, ... with fused multiply-adds, then `reduce`.
    /// dim must be a multiple of 16.
    @_transparent
    public static func dotHalf(_ q: UnsafePointer<Float>, _ k: UnsafePointer<UInt16>, dim: Int) -> Float {
        var acc = V16(repeating: 0)
        var i = 0
        while i < dim {
            let kv = float(UnsafeRawPointer(k + i).loadUnaligned(as: SIMD16<UInt16>.self))
            acc = acc.addingProduct(UnsafeRawPointer(q + i).loadUnaligned(as: V16.self), kv)
            i &+= 16
        }
        return reduce(acc)
    }

    /// slot[j % slots][c] = fused chain over positions j of p[j] * v[j][c] (slots a power of two):
    /// the per-lane accumulators of both ggml orders, one row of dim floats per slot.
    @_transparent
    public static func accumulateSlots(_ p: UnsafePointer<Float>, n: Int, _ v: UnsafePointer<UInt16>, stride: Int, dim: Int,
                                       slots: Int, into lanes: UnsafeMutablePointer<Float>) {
        lanes.initialize(repeating: 0, count: slots * dim)
        for j in 0..<n {
            let w = V16(repeating: p[j])
            let acc = lanes + (j & (slots - 1)) * dim
            let row = v + j * stride
            var c = 0
            while c < dim {
                let a = UnsafeMutableRawPointer(acc + c)
                let x = float(UnsafeRawPointer(row + c).loadUnaligned(as: SIMD16<UInt16>.self))
                a.storeBytes(of: a.loadUnaligned(as: V16.self).addingProduct(x, w), as: V16.self)
                c &+= 16
            }
        }
    }

    /// softmax(p) · V for an f16 V cache, as tinyBLAS multiplies ggml's transposed V by the
    /// f16-rounded probabilities: out[c] = reduce over lanes L of the fused chain over positions
    /// j ≡ L (mod 16). `lanes` is scratch of 16 * dim floats; p holds n probabilities (already
    /// rounded to f16 values); v rows are `stride` halves apart.
    @_transparent
    public static func weightedSumHalf(_ p: UnsafePointer<Float>, n: Int, _ v: UnsafePointer<UInt16>, stride: Int, dim: Int,
                                       lanes: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        accumulateSlots(p, n: n, v, stride: stride, dim: dim, slots: 16, into: lanes)
        // Lane reduction in `reduce` order, 16 channels at a time.
        var c = 0
        while c < dim {
            let base = lanes + c
            @inline(__always) func lane(_ l: Int) -> V16 { UnsafeRawPointer(base + l * dim).loadUnaligned(as: V16.self) }
            let t0 = lane(8) + lane(0), t1 = lane(9) + lane(1), t2 = lane(10) + lane(2), t3 = lane(11) + lane(3)
            let t4 = lane(12) + lane(4), t5 = lane(13) + lane(5), t6 = lane(14) + lane(6), t7 = lane(15) + lane(7)
            let u0 = t4 + t0, u1 = t5 + t1, u2 = t6 + t2, u3 = t7 + t3
            let r = (u0 + u2) + (u1 + u3)
            UnsafeMutableRawPointer(out + c).storeBytes(of: r, as: V16.self)
            c &+= 16
        }
    }

    /// ggml_vec_dot_f16 (AVX-512), which llama.cpp uses instead of tinyBLAS when the batch has a
    /// single token: four 16-lane accumulators take elements 64i + 16j + l in turn (j = 0..<4),
    /// reduced as ((a0 + a2) + (a1 + a3)) and then `reduce`; elements past the last multiple of 64
    /// are added in double.
    @_transparent
    public static func dotHalfSingle(_ q: UnsafePointer<Float>, _ k: UnsafePointer<UInt16>, dim: Int) -> Float {
        var a0 = V16(repeating: 0), a1 = a0, a2 = a0, a3 = a0
        var i = 0
        @inline(__always) func x(_ o: Int) -> V16 { UnsafeRawPointer(q + o).loadUnaligned(as: V16.self) }
        @inline(__always) func y(_ o: Int) -> V16 { float(UnsafeRawPointer(k + o).loadUnaligned(as: SIMD16<UInt16>.self)) }
        while i + 64 <= dim {
            a0 = a0.addingProduct(x(i), y(i))
            a1 = a1.addingProduct(x(i + 16), y(i + 16))
            a2 = a2.addingProduct(x(i + 32), y(i + 32))
            a3 = a3.addingProduct(x(i + 48), y(i + 48))
            i &+= 64
        }
        var sum = Double(reduce((a0 + a2) + (a1 + a3)))
        while i < dim {
            sum += Double(q[i] * Float(Float16(bitPattern: k[i])))
            i &+= 1
        }
        return Float(sum)
    }

    /// softmax(p) · V with ggml_vec_dot_f16's order (single-token batches): position j goes to
    /// slot j % 64 (accumulator (j / 16) % 4, lane j % 16); slots are reduced as in `dotHalfSingle`.
    /// llama.cpp pads the positions to a multiple of 256 with zero probabilities, which add nothing,
    /// so they need no work here. `lanes` is scratch of 64 * dim floats.
    @_transparent
    public static func weightedSumHalfSingle(_ p: UnsafePointer<Float>, n: Int, _ v: UnsafePointer<UInt16>, stride: Int, dim: Int,
                                             lanes: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        accumulateSlots(p, n: n, v, stride: stride, dim: dim, slots: 64, into: lanes)
        // For channel c, lane l of accumulator a is slot 16a + l.
        for c in 0..<dim {
            @inline(__always) func acc(_ a: Int) -> V16 {
                var r = V16(repeating: 0)
                for l in 0..<16 { r[l] = lanes[(16 * a + l) * dim + c] }
                return r
            }
            out[c] = reduce((acc(0) + acc(2)) + (acc(1) + acc(3)))
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension GGMLMath {
    /// ggml_compute_forward_rms_norm_f32 followed by the weight multiply: the squares are rounded to
    /// float and summed in double, mean = Float(sum / n), scale = 1 / sqrtf(mean + eps), and
    /// out = (x * scale) * weight.
    @_alwaysEmitIntoClient @inline(__always)
    public static func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, n: Int, eps: Float,
                               into out: UnsafeMutablePointer<Float>) {
        var sum: Double = 0
        for i in 0..<n {
            let sq = x[i] * x[i]
            sum += Double(sq)
        }
        let mean = Float(sum / Double(n))
        let scale = 1 / (mean + eps).squareRoot()
        for i in 0..<n { out[i] = x[i] * scale * weight[i] }
    }

    /// ggml_rope_cache_init for one position with no scaling: theta starts at the position and is
    /// multiplied by base^(-2 / ropeDims) (powf) after each pair; cosf / sinf of it. Written as the
    /// rotation wants them: cs = (c0, s0, c1, s1, ...) and sc = (-s0, c0, -s1, c1, ...).
    @_alwaysEmitIntoClient
    public static func ropeAngles(position: Int, ropeDims: Int, base: Float,
                                  cs: UnsafeMutablePointer<Float>, sc: UnsafeMutablePointer<Float>) {
        let thetaScale = powf(base, -2 / Float(ropeDims))
        var theta = Float(position)
        for i in stride(from: 0, to: ropeDims, by: 2) {
            let c = cosf(theta), s = sinf(theta)
            cs[i] = c; cs[i + 1] = s
            sc[i] = -s; sc[i + 1] = c
            theta *= thetaScale
        }
    }

    /// rotate_pairs as compiled by GCC (the products contracted): x0' = fma(x0, c, -(x1 * s)),
    /// x1' = fma(x0, s, x1 * c), i.e. fma(evens duplicated, cs, odds duplicated * sc).
    @_alwaysEmitIntoClient @inline(__always)
    public static func rotate(_ v: UnsafeMutablePointer<Float>, _ d: Int, cs: UnsafePointer<Float>, sc: UnsafePointer<Float>) {
        var i = 0
        while i + 8 <= d {
            let a = UnsafeRawPointer(v + i).loadUnaligned(as: SIMD8<Float>.self)
            let ev = SIMD8<Float>(a[0], a[0], a[2], a[2], a[4], a[4], a[6], a[6])
            let od = SIMD8<Float>(a[1], a[1], a[3], a[3], a[5], a[5], a[7], a[7])
            let c = UnsafeRawPointer(cs + i).loadUnaligned(as: SIMD8<Float>.self)
            let s = UnsafeRawPointer(sc + i).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(v + i).storeBytes(of: (od * s).addingProduct(ev, c), as: SIMD8<Float>.self)
            i &+= 8
        }
        while i < d {
            let x0 = v[i], x1 = v[i + 1]
            v[i] = (x1 * sc[i]).addingProduct(x0, cs[i])
            v[i + 1] = (x1 * sc[i + 1]).addingProduct(x0, cs[i + 1])
            i &+= 2
        }
    }

    /// One query head over an f16 K/V cache, as llama.cpp's non-flash attention computes it:
    /// scores by `dotHalf` (q already rounded to f16 values), `softmax` with the 1/sqrt(d) scale,
    /// probabilities rounded to f16, then `weightedSumHalf`. ggml multiplies a batch of one token
    /// with its vec_dot instead of tinyBLAS, whose sums run in another order: `singleToken` picks
    /// the `...Single` versions.
    /// scores: n floats of scratch; lanes: 64 * dim floats of scratch.
    @_alwaysEmitIntoClient @inline(__always)
    public static func attendHalf(query q: UnsafePointer<Float>, keys: UnsafePointer<UInt16>, values: UnsafePointer<UInt16>,
                                  stride: Int, count n: Int, dim: Int, scale: Float, singleToken: Bool,
                                  scores: UnsafeMutablePointer<Float>, lanes: UnsafeMutablePointer<Float>,
                                  into out: UnsafeMutablePointer<Float>) {
        if singleToken {
            for j in 0..<n { scores[j] = dotHalfSingle(q, keys + j * stride, dim: dim) }
        } else {
            for j in 0..<n { scores[j] = dotHalf(q, keys + j * stride, dim: dim) }
        }
        softmax(scores, n: n, scale: scale)
        for j in 0..<n { scores[j] = Float(Float16(scores[j])) }
        if singleToken {
            weightedSumHalfSingle(scores, n: n, values, stride: stride, dim: dim, lanes: lanes, into: out)
        } else {
            weightedSumHalf(scores, n: n, values, stride: stride, dim: dim, lanes: lanes, into: out)
        }
    }
}
