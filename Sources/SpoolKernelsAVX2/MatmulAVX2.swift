#if arch(x86_64)

/// AVX2+FMA matmul: y[t, r] = sum_c w[r, c] * x[t, c], w (rows, cols), x (tokens, cols), y (tokens, rows).
///
/// This module is compiled with +avx2,+fma (see Package.swift). Nothing here may run unless cpuid
/// reported both; the dispatcher in SpoolKernels makes that check. Entry points are
/// `@inline(never)` so that cross-module optimization cannot copy their bodies into a module that
/// is compiled for the baseline ISA.
public enum MatmulAVX2 {
    typealias V = SIMD8<Float>

    /// Reduction (cols) block, in floats. One 4-token x tile plus one 3-row w tile is 7 x 2 KB,
    /// which stays in the 32 KB L1 while the 3-row w tiles of a row block stream from L2.
    static let kBlock = 512

    /// From this many tokens in a block on, repacking w into 16-row panels (`matmulPacked`) pays
    /// for itself; below it the dot-product tiles (`matmulDot`) read w in place.
    public static let packMinTokens = 40

    /// Computes y for rows in `rowRange` and tokens in `tokenRange`: one thread's share.
    @inline(never)
    public static func matmulBlock(
        _ w: UnsafePointer<Float>, rows: Int, cols: Int,
        _ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>,
        rowRange: Range<Int>, tokenRange: Range<Int>
    ) {
        if tokenRange.count >= packMinTokens {
            matmulPacked(w, rows: rows, cols: cols, x, into: y, rowRange: rowRange, tokenRange: tokenRange)
        } else {
            matmulDot(w, rows: rows, cols: cols, x, into: y, rowRange: rowRange, tokenRange: tokenRange)
        }
    }

    /// Dot-product form: every output is a dot product along cols, 8 lanes wide, reduced at the end.
    /// Register tile: 3 rows x 4 tokens = 12 ymm accumulators + 3 w vectors + 1 x vector = 16 registers.
    /// Loop order per reduction block: token tiles outer, row tiles inner, so the x tile stays in L1
    /// and the whole w row block (up to ~100 rows x 2 KB) in L2 across token tiles.
    @inline(never)
    public static func matmulDot(
        _ w: UnsafePointer<Float>, rows: Int, cols: Int,
        _ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>,
        rowRange: Range<Int>, tokenRange: Range<Int>
    ) {
        let r0 = rowRange.lowerBound, r1 = rowRange.upperBound
        let t0 = tokenRange.lowerBound, t1 = tokenRange.upperBound
        let nk = (cols + kBlock - 1) / kBlock
        var k0 = 0
        for kb in 0..<nk {
            // Even split of cols, block boundaries on multiples of 8 so only the last block has a tail.
            let k1 = kb == nk - 1 ? cols : min(cols, (cols * (kb + 1) / nk + 7) & ~7)
            let accumulate = kb > 0
            var t = t0
            // Two 4-token tiles per 3-row w tile: the second pass finds the w tile in L1.
            while t + 8 <= t1 {
                var r = r0
                while r + 3 <= r1 {
                    tile3x4(w + r * cols, x + t * cols, ld: cols, k0, k1, y + t * rows + r, ldy: rows, accumulate)
                    tile3x4(w + r * cols, x + (t + 4) * cols, ld: cols, k0, k1, y + (t + 4) * rows + r, ldy: rows, accumulate)
                    r += 3
                }
                while r < r1 {
                    tile1x4(w + r * cols, x + t * cols, ld: cols, k0, k1, y + t * rows + r, ldy: rows, accumulate)
                    tile1x4(w + r * cols, x + (t + 4) * cols, ld: cols, k0, k1, y + (t + 4) * rows + r, ldy: rows, accumulate)
                    r += 1
                }
                t += 8
            }
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

    /// One token: y[r] = w[r, :] . x for r in `rowRange`. Memory bound, so the goal is just to keep
    /// enough loads in flight: 4 rows x 2 accumulators each.
    @inline(never)
    public static func matvecBlock(
        _ w: UnsafePointer<Float>, cols: Int, _ x: UnsafePointer<Float>,
        into y: UnsafeMutablePointer<Float>, rowRange: Range<Int>
    ) {
        var r = rowRange.lowerBound
        let r1 = rowRange.upperBound
        while r + 4 <= r1 {
            matvec4(w + r * cols, ld: cols, x, cols, y + r)
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
        let q = h.lowHalf + h.highHalf
        return q[0] + q[1]
    }

    /// The four horizontal sums at once (fewer shuffles than four `hsum`s).
    @inline(__always)
    static func hsum4(_ a: V, _ b: V, _ c: V, _ d: V) -> SIMD4<Float> {
        let ab = V(lowHalf: a.lowHalf + a.highHalf, highHalf: b.lowHalf + b.highHalf)
        let cd = V(lowHalf: c.lowHalf + c.highHalf, highHalf: d.lowHalf + d.highHalf)
        let s = V(lowHalf: ab.evenHalf + ab.oddHalf, highHalf: cd.evenHalf + cd.oddHalf)
        return s.evenHalf + s.oddHalf
    }

    @inline(__always)
    static func put(_ y: UnsafeMutablePointer<Float>, _ v: Float, _ accumulate: Bool) {
        if accumulate { y.pointee += v } else { y.pointee = v }
    }

    /// 3 rows (w, w+ld, w+2ld) x 4 tokens (x, x+ld, ...), cols k0..<k1; y[j*ldy + i].
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
        let n = k1 - k0, nv = n & ~7
        var c = 0
        while c < nv {
            let va = load(wa + c), vb = load(wb + c), vc = load(wc + c)
            var xv = load(xa + c)
            a0 = a0.addingProduct(va, xv); b0 = b0.addingProduct(vb, xv); c0 = c0.addingProduct(vc, xv)
            xv = load(xb + c)
            a1 = a1.addingProduct(va, xv); b1 = b1.addingProduct(vb, xv); c1 = c1.addingProduct(vc, xv)
            xv = load(xc + c)
            a2 = a2.addingProduct(va, xv); b2 = b2.addingProduct(vb, xv); c2 = c2.addingProduct(vc, xv)
            xv = load(xd + c)
            a3 = a3.addingProduct(va, xv); b3 = b3.addingProduct(vb, xv); c3 = c3.addingProduct(vc, xv)
            c &+= 8
        }
        let s4 = hsum4(a0, a1, a2, a3), u4 = hsum4(b0, b1, b2, b3), v4 = hsum4(c0, c1, c2, c3)
        var s = (s4[0], s4[1], s4[2], s4[3])
        var u = (u4[0], u4[1], u4[2], u4[3])
        var v = (v4[0], v4[1], v4[2], v4[3])
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

    /// 1 row x 4 tokens (row-count remainder).
    @inline(__always)
    static func tile1x4(
        _ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, ld: Int, _ k0: Int, _ k1: Int,
        _ y: UnsafeMutablePointer<Float>, ldy: Int, _ accumulate: Bool
    ) {
        let wa = w + k0
        let xa = x + k0, xb = xa + ld, xc = xb + ld, xd = xc + ld
        var a0 = V.zero, a1 = V.zero, a2 = V.zero, a3 = V.zero
        let n = k1 - k0, nv = n & ~7
        var c = 0
        while c < nv {
            let va = load(wa + c)
            a0 = a0.addingProduct(va, load(xa + c)); a1 = a1.addingProduct(va, load(xb + c))
            a2 = a2.addingProduct(va, load(xc + c)); a3 = a3.addingProduct(va, load(xd + c))
            c &+= 8
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

    /// 4 rows x 1 token (token-count remainder); y[i].
    @inline(__always)
    static func tile4x1(
        _ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, ld: Int, _ k0: Int, _ k1: Int,
        _ y: UnsafeMutablePointer<Float>, _ accumulate: Bool
    ) {
        let wa = w + k0, wb = wa + ld, wc = wb + ld, wd = wc + ld
        let xa = x + k0
        var a0 = V.zero, a1 = V.zero, a2 = V.zero, a3 = V.zero
        let n = k1 - k0, nv = n & ~7
        var c = 0
        while c < nv {
            let xv = load(xa + c)
            a0 = a0.addingProduct(load(wa + c), xv); a1 = a1.addingProduct(load(wb + c), xv)
            a2 = a2.addingProduct(load(wc + c), xv); a3 = a3.addingProduct(load(wd + c), xv)
            c &+= 8
        }
        var s = (hsum(a0), hsum(a1), hsum(a2), hsum(a3))
        while c < n {
            let g = xa[c]
            s.0 += wa[c] * g; s.1 += wb[c] * g; s.2 += wc[c] * g; s.3 += wd[c] * g
            c &+= 1
        }
        put(y, s.0, accumulate); put(y + 1, s.1, accumulate)
        put(y + 2, s.2, accumulate); put(y + 3, s.3, accumulate)
    }

    /// 1 row x 1 token, two accumulators to halve the FMA dependency chain.
    @inline(__always)
    static func tile1x1(
        _ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ k0: Int, _ k1: Int,
        _ y: UnsafeMutablePointer<Float>, _ accumulate: Bool
    ) {
        let wa = w + k0, xa = x + k0
        var a0 = V.zero, a1 = V.zero
        let n = k1 - k0
        var c = 0
        while c + 16 <= n {
            a0 = a0.addingProduct(load(wa + c), load(xa + c))
            a1 = a1.addingProduct(load(wa + c + 8), load(xa + c + 8))
            c &+= 16
        }
        if c + 8 <= n {
            a0 = a0.addingProduct(load(wa + c), load(xa + c))
            c &+= 8
        }
        var s = hsum(a0 + a1)
        while c < n {
            s += wa[c] * xa[c]
            c &+= 1
        }
        put(y, s, accumulate)
    }

    /// Matvec tile: 4 rows x 1 token, 2 accumulators per row (8 independent FMA chains).
    @inline(__always)
    static func matvec4(
        _ w: UnsafePointer<Float>, ld: Int, _ x: UnsafePointer<Float>, _ n: Int, _ y: UnsafeMutablePointer<Float>
    ) {
        let wa = w, wb = wa + ld, wc = wb + ld, wd = wc + ld
        var a0 = V.zero, a1 = V.zero, a2 = V.zero, a3 = V.zero
        var b0 = V.zero, b1 = V.zero, b2 = V.zero, b3 = V.zero
        var c = 0
        while c + 16 <= n {
            let x0 = load(x + c), x1 = load(x + c + 8)
            a0 = a0.addingProduct(load(wa + c), x0); b0 = b0.addingProduct(load(wa + c + 8), x1)
            a1 = a1.addingProduct(load(wb + c), x0); b1 = b1.addingProduct(load(wb + c + 8), x1)
            a2 = a2.addingProduct(load(wc + c), x0); b2 = b2.addingProduct(load(wc + c + 8), x1)
            a3 = a3.addingProduct(load(wd + c), x0); b3 = b3.addingProduct(load(wd + c + 8), x1)
            c &+= 16
        }
        if c + 8 <= n {
            let x0 = load(x + c)
            a0 = a0.addingProduct(load(wa + c), x0); a1 = a1.addingProduct(load(wb + c), x0)
            a2 = a2.addingProduct(load(wc + c), x0); a3 = a3.addingProduct(load(wd + c), x0)
            c &+= 8
        }
        var s = (hsum(a0 + b0), hsum(a1 + b1), hsum(a2 + b2), hsum(a3 + b3))
        while c < n {
            let g = x[c]
            s.0 += wa[c] * g; s.1 += wb[c] * g; s.2 += wc[c] * g; s.3 += wd[c] * g
            c &+= 1
        }
        y[0] = s.0; y[1] = s.1; y[2] = s.2; y[3] = s.3
    }
}

#endif
