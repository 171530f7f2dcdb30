/// Portable matmul built on 4-wide Swift SIMD: NEON on aarch64, SSE on x86_64 (where it is only the
/// fallback for CPUs without AVX2+FMA). Same blocking as `MatmulAVX2`; see there for the reasoning.
///
/// The register tile is 3 rows x 4 tokens = 12 accumulators + 3 w + 1 x vectors, which fits the 16
/// SSE registers and leaves room among NEON's 32.
enum MatmulGeneric {
    typealias V = SIMD4<Float>

    static let kBlock = 512

    static func matmulBlock(
        _ w: UnsafePointer<Float>, rows: Int, cols: Int,
        _ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>,
        rowRange: Range<Int>, tokenRange: Range<Int>
    ) {
        let r0 = rowRange.lowerBound, r1 = rowRange.upperBound
        let t0 = tokenRange.lowerBound, t1 = tokenRange.upperBound
        let nk = (cols + kBlock - 1) / kBlock
        var k0 = 0
        for kb in 0..<nk {
            let k1 = kb == nk - 1 ? cols : min(cols, (cols * (kb + 1) / nk + 7) & ~7)
            let accumulate = kb > 0
            var t = t0
            while t + 4 <= t1 {
                var r = r0
                while r + 3 <= r1 {
                    tile3x4(w + r * cols, x + t * cols, ld: cols, k0, k1, y + t * rows + r, ldy: rows, accumulate)
                    r += 3
                }
                while r < r1 {
                    tile1x4(w + r * cols, x + t * cols, ld: cols, k0, k1, y + t * rows + r, ldy: rows, accumulate)
                    r += 1
                }
                t += 4
            }
            while t < t1 {
                var r = r0
                while r + 4 <= r1 {
                    tile4x1(w + r * cols, x + t * cols, ld: cols, k0, k1, y + t * rows + r, accumulate)
                    r += 4
                }
                while r < r1 {
                    tile1x1(w + r * cols, x + t * cols, k0, k1, y + t * rows + r, accumulate)
                    r += 1
                }
                t += 1
            }
            k0 = k1
        }
    }

    static func matvecBlock(
        _ w: UnsafePointer<Float>, cols: Int, _ x: UnsafePointer<Float>,
        into y: UnsafeMutablePointer<Float>, rowRange: Range<Int>
    ) {
        var r = rowRange.lowerBound
        let r1 = rowRange.upperBound
        while r + 4 <= r1 {
            tile4x1(w + r * cols, x, ld: cols, 0, cols, y + r, false)
            r += 4
        }
        while r < r1 {
            tile1x1(w + r * cols, x, 0, cols, y + r, false)
            r += 1
        }
    }

    // MARK: - micro-kernels

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> V {
        UnsafeRawPointer(p).loadUnaligned(as: V.self)
    }

    @inline(__always)
    static func hsum(_ v: V) -> Float {
        let h = v.lowHalf + v.highHalf
        return h[0] + h[1]
    }

    @inline(__always)
    static func put(_ y: UnsafeMutablePointer<Float>, _ v: Float, _ accumulate: Bool) {
        if accumulate { y.pointee += v } else { y.pointee = v }
    }

    @inline(__always)
    static func tile3x4(
        _ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, ld: Int, _ k0: Int, _ k1: Int,
        _ y: UnsafeMutablePointer<Float>, ldy: Int, _ accumulate: Bool
    ) {
        let wa = w + k0, wb = wa + ld, wc = wb + ld
        let xa = x + k0, xb = xa + ld, xc = xb + ld, xd = xc + ld
        var a0 = V.zero, a1 = V.zero, a2 = V.zero, a3 = V.zero
        var b0 = V.zero, b1 = V.zero, b2 = V.zero, b3 = V.zero
        var c0 = V.zero, c1 = V.zero, c2 = V.zero, c3 = V.zero
        let n = k1 - k0, nv = n & ~3
        var c = 0
        while c < nv {
            let va = load(wa + c), vb = load(wb + c), vc = load(wc + c)
            var xv = load(xa + c)
            a0 = madd(a0, va, xv); b0 = madd(b0, vb, xv); c0 = madd(c0, vc, xv)
            xv = load(xb + c)
            a1 = madd(a1, va, xv); b1 = madd(b1, vb, xv); c1 = madd(c1, vc, xv)
            xv = load(xc + c)
            a2 = madd(a2, va, xv); b2 = madd(b2, vb, xv); c2 = madd(c2, vc, xv)
            xv = load(xd + c)
            a3 = madd(a3, va, xv); b3 = madd(b3, vb, xv); c3 = madd(c3, vc, xv)
            c &+= 4
        }
        var s = (hsum(a0), hsum(a1), hsum(a2), hsum(a3))
        var u = (hsum(b0), hsum(b1), hsum(b2), hsum(b3))
        var v = (hsum(c0), hsum(c1), hsum(c2), hsum(c3))
        while c < n {
            let fa = wa[c], fb = wb[c], fc = wc[c]
            let g0 = xa[c], g1 = xb[c], g2 = xc[c], g3 = xd[c]
            s.0 += fa * g0; s.1 += fa * g1; s.2 += fa * g2; s.3 += fa * g3
            u.0 += fb * g0; u.1 += fb * g1; u.2 += fb * g2; u.3 += fb * g3
            v.0 += fc * g0; v.1 += fc * g1; v.2 += fc * g2; v.3 += fc * g3
            c &+= 1
        }
        put(y, s.0, accumulate); put(y + 1, u.0, accumulate); put(y + 2, v.0, accumulate)
        let y1 = y + ldy, y2 = y1 + ldy, y3 = y2 + ldy
        put(y1, s.1, accumulate); put(y1 + 1, u.1, accumulate); put(y1 + 2, v.1, accumulate)
        put(y2, s.2, accumulate); put(y2 + 1, u.2, accumulate); put(y2 + 2, v.2, accumulate)
        put(y3, s.3, accumulate); put(y3 + 1, u.3, accumulate); put(y3 + 2, v.3, accumulate)
    }

    @inline(__always)
    static func tile1x4(
        _ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, ld: Int, _ k0: Int, _ k1: Int,
        _ y: UnsafeMutablePointer<Float>, ldy: Int, _ accumulate: Bool
    ) {
        let wa = w + k0
        let xa = x + k0, xb = xa + ld, xc = xb + ld, xd = xc + ld
        var a0 = V.zero, a1 = V.zero, a2 = V.zero, a3 = V.zero
        let n = k1 - k0, nv = n & ~3
        var c = 0
        while c < nv {
            let va = load(wa + c)
            a0 = madd(a0, va, load(xa + c)); a1 = madd(a1, va, load(xb + c))
            a2 = madd(a2, va, load(xc + c)); a3 = madd(a3, va, load(xd + c))
            c &+= 4
        }
        var s = (hsum(a0), hsum(a1), hsum(a2), hsum(a3))
        while c < n {
            let f = wa[c]
            s.0 += f * xa[c]; s.1 += f * xb[c]; s.2 += f * xc[c]; s.3 += f * xd[c]
            c &+= 1
        }
        put(y, s.0, accumulate); put(y + ldy, s.1, accumulate)
        put(y + 2 * ldy, s.2, accumulate); put(y + 3 * ldy, s.3, accumulate)
    }

    /// 4 rows x 1 token, two accumulators per row; also the matvec tile.
    @inline(__always)
    static func tile4x1(
        _ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, ld: Int, _ k0: Int, _ k1: Int,
        _ y: UnsafeMutablePointer<Float>, _ accumulate: Bool
    ) {
        let wa = w + k0, wb = wa + ld, wc = wb + ld, wd = wc + ld
        let xa = x + k0
        var a0 = V.zero, a1 = V.zero, a2 = V.zero, a3 = V.zero
        var b0 = V.zero, b1 = V.zero, b2 = V.zero, b3 = V.zero
        let n = k1 - k0
        var c = 0
        while c + 8 <= n {
            let x0 = load(xa + c), x1 = load(xa + c + 4)
            a0 = madd(a0, load(wa + c), x0); b0 = madd(b0, load(wa + c + 4), x1)
            a1 = madd(a1, load(wb + c), x0); b1 = madd(b1, load(wb + c + 4), x1)
            a2 = madd(a2, load(wc + c), x0); b2 = madd(b2, load(wc + c + 4), x1)
            a3 = madd(a3, load(wd + c), x0); b3 = madd(b3, load(wd + c + 4), x1)
            c &+= 8
        }
        if c + 4 <= n {
            let x0 = load(xa + c)
            a0 = madd(a0, load(wa + c), x0); a1 = madd(a1, load(wb + c), x0)
            a2 = madd(a2, load(wc + c), x0); a3 = madd(a3, load(wd + c), x0)
            c &+= 4
        }
        var s = (hsum(a0 + b0), hsum(a1 + b1), hsum(a2 + b2), hsum(a3 + b3))
        while c < n {
            let g = xa[c]
            s.0 += wa[c] * g; s.1 += wb[c] * g; s.2 += wc[c] * g; s.3 += wd[c] * g
            c &+= 1
        }
        put(y, s.0, accumulate); put(y + 1, s.1, accumulate)
        put(y + 2, s.2, accumulate); put(y + 3, s.3, accumulate)
    }

    @inline(__always)
    static func tile1x1(
        _ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ k0: Int, _ k1: Int,
        _ y: UnsafeMutablePointer<Float>, _ accumulate: Bool
    ) {
        let wa = w + k0, xa = x + k0
        var a0 = V.zero, a1 = V.zero
        let n = k1 - k0
        var c = 0
        while c + 8 <= n {
            a0 = madd(a0, load(wa + c), load(xa + c))
            a1 = madd(a1, load(wa + c + 4), load(xa + c + 4))
            c &+= 8
        }
        if c + 4 <= n {
            a0 = madd(a0, load(wa + c), load(xa + c))
            c &+= 4
        }
        var s = hsum(a0 + a1)
        while c < n {
            s += wa[c] * xa[c]
            c &+= 1
        }
        put(y, s, accumulate)
    }
}

/// acc + a * b. Fused on aarch64, where every core has vector FMA. On the x86_64 baseline (SSE2)
/// `addingProduct` becomes a `fmaf` libcall per lane, so there it is a multiply and an add.
@inline(__always)
func madd<V: SIMD>(_ acc: V, _ a: V, _ b: V) -> V where V.Scalar: BinaryFloatingPoint {
    #if arch(arm64)
    return acc.addingProduct(a, b)
    #else
    return acc + a * b
    #endif
}
