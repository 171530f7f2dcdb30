/// Portable elementwise kernels on 8-wide Swift SIMD (two NEON or SSE registers per vector).
/// The AVX2 twins live in SpoolKernelsAVX2/ElementwiseAVX2.swift; keep the two in step.
enum ElementwiseGeneric {
    typealias V = SIMD8<Float>

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> V {
        UnsafeRawPointer(p).loadUnaligned(as: V.self)
    }

    @inline(__always)
    static func store(_ v: V, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self)
    }

    @inline(__always)
    static func hsum(_ v: V) -> Float {
        let h = v.lowHalf + v.highHalf
        let q = h.lowHalf + h.highHalf
        return q[0] + q[1]
    }

    @inline(__always)
    static func vmax(_ a: V, _ b: V) -> V { a.replacing(with: b, where: a .< b) }

    @inline(__always)
    static func vmin(_ a: V, _ b: V) -> V { a.replacing(with: b, where: b .< a) }

    @inline(__always)
    static func hmax(_ v: V) -> Float {
        let h = v.lowHalf.replacing(with: v.highHalf, where: v.lowHalf .< v.highHalf)
        let q = h.lowHalf.replacing(with: h.highHalf, where: h.lowHalf .< h.highHalf)
        return Swift.max(q[0], q[1])
    }

    /// exp(x) by range reduction x = n ln2 + r, |r| <= ln2/2, and Cephes' expf polynomial.
    /// Relative error within a few ulp for x in [-87.33, 88.37]; below that the result is 0 (the true
    /// value is subnormal), above it saturates at exp(88.37) (~2.4e38).
    @inline(__always)
    static func exp(_ x: V) -> V {
        let lo: Float = -87.33654, hi: Float = 88.37626
        let xc = vmin(vmax(x, V(repeating: lo)), V(repeating: hi))
        // Round to nearest with the 1.5 * 2^23 trick (SSE2 has no roundps); the low mantissa bits of
        // t then hold n as an integer.
        let magic = V(repeating: 12582912)
        let t = madd(magic, xc, V(repeating: 1.44269504088896341))
        let n = t - magic
        // ln 2 split in two so that n * C1 is exact.
        var r = madd(xc, n, V(repeating: -0.693359375))
        r = madd(r, n, V(repeating: 2.12194440e-4))
        var p = V(repeating: 1.9875691500e-4)
        p = madd(V(repeating: 1.3981999507e-3), p, r)
        p = madd(V(repeating: 8.3334519073e-3), p, r)
        p = madd(V(repeating: 4.1665795894e-2), p, r)
        p = madd(V(repeating: 1.6666665459e-1), p, r)
        p = madd(V(repeating: 5.0000001201e-1), p, r)
        let e = madd(r + 1, p, r * r)
        // 2^n from n's bits: (n + 127) << 23.
        let bits = (unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
        let scaled = e * unsafeBitCast(bits, to: V.self)
        return scaled.replacing(with: 0, where: x .< lo)
    }

    static func exp(_ x: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<Float>) {
        var i = 0
        while i + 8 <= count {
            store(exp(load(x + i)), out + i)
            i &+= 8
        }
        while i < count {
            out[i] = exp(V(repeating: x[i]))[0]
            i &+= 1
        }
    }

    static func rmsNorm(
        _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, n: Int, tokens: Int, eps: Float,
        into out: UnsafeMutablePointer<Float>
    ) {
        for t in 0..<tokens {
            let row = x + t * n, dst = out + t * n
            var a0 = V.zero, a1 = V.zero
            var i = 0
            while i + 16 <= n {
                let u = load(row + i), v = load(row + i + 8)
                a0 = madd(a0, u, u)
                a1 = madd(a1, v, v)
                i &+= 16
            }
            if i + 8 <= n {
                let u = load(row + i)
                a0 = madd(a0, u, u)
                i &+= 8
            }
            var ss = hsum(a0 + a1)
            while i < n {
                ss += row[i] * row[i]
                i &+= 1
            }
            let scale = 1 / (ss / Float(n) + eps).squareRoot()
            let sv = V(repeating: scale)
            i = 0
            while i + 8 <= n {
                store(load(row + i) * sv * load(weight + i), dst + i)
                i &+= 8
            }
            while i < n {
                dst[i] = row[i] * scale * weight[i]
                i &+= 1
            }
        }
    }

    static func softmax(_ x: UnsafeMutablePointer<Float>, n: Int) {
        guard n > 0 else { return }
        var mv = V(repeating: -.infinity)
        var i = 0
        while i + 8 <= n {
            mv = vmax(mv, load(x + i))
            i &+= 8
        }
        var m = hmax(mv)
        while i < n {
            m = Swift.max(m, x[i])
            i &+= 1
        }
        let mm = V(repeating: m)
        var sv = V.zero
        i = 0
        while i + 8 <= n {
            let e = exp(load(x + i) - mm)
            store(e, x + i)
            sv += e
            i &+= 8
        }
        var sum = hsum(sv)
        while i < n {
            let e = exp(V(repeating: x[i] - m))[0]
            x[i] = e
            sum += e
            i &+= 1
        }
        let inv = 1 / sum
        let iv = V(repeating: inv)
        i = 0
        while i + 8 <= n {
            store(load(x + i) * iv, x + i)
            i &+= 8
        }
        while i < n {
            x[i] *= inv
            i &+= 1
        }
    }

    static func swiglu(
        _ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<Float>
    ) {
        var i = 0
        while i + 8 <= count {
            let g = load(gate + i)
            store(g / (1 + exp(-g)) * load(up + i), out + i)
            i &+= 8
        }
        while i < count {
            let g = gate[i]
            out[i] = g / (1 + exp(V(repeating: -g))[0]) * up[i]
            i &+= 1
        }
    }
}
