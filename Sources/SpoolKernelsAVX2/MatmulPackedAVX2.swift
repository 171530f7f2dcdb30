#if arch(x86_64)

extension MatmulAVX2 {
    typealias Panel = UnsafeMutablePointer<Float>

    /// Rows per packed panel: two ymm vectors.
    static let panelRows = 16
    /// Tokens per register tile: 16 rows x 6 tokens = 12 accumulators + 2 w vectors + 1 broadcast.
    static let tileTokens = 6

    /// Outer-product form for many tokens. Each reduction block of the thread's rows is repacked
    /// into panels of 16 rows stored column by column (panel[k * 16 + i] = w[r + i, k]), so one k
    /// step is two aligned vector loads of w and six broadcasts of x, and the accumulators are
    /// whole 16-row stretches of y: no horizontal sums, and vector stores. The packed block (<= 96
    /// rows x 512 floats = 192 KB) stays in L2, the 6-token x tile in L1 across panels.
    ///
    /// The panel buffer is allocated per call: one allocation per (row block, token block) chunk is
    /// noise next to the ~0.1-1 ms of arithmetic it serves, and it keeps the kernel free of shared state.
    @inline(never)
    public static func matmulPacked(
        _ w: UnsafePointer<Float>, rows: Int, cols: Int,
        _ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>,
        rowRange: Range<Int>, tokenRange: Range<Int>
    ) {
        let r0 = rowRange.lowerBound, nr = rowRange.count
        let t0 = tokenRange.lowerBound, t1 = tokenRange.upperBound
        guard nr > 0, t1 > t0, cols > 0 else { return }
        let panels = (nr + panelRows - 1) / panelRows
        let nk = (cols + kBlock - 1) / kBlock
        let maxKC = min(cols, (cols + nk - 1) / nk + 8)
        let buffer = UnsafeMutableRawPointer.allocate(
            byteCount: panels * panelRows * maxKC * MemoryLayout<Float>.stride, alignment: 64
        ).bindMemory(to: Float.self, capacity: panels * panelRows * maxKC)
        defer { buffer.deallocate() }
        var k0 = 0
        for kb in 0..<nk {
            let k1 = kb == nk - 1 ? cols : min(cols, (cols * (kb + 1) / nk + 7) & ~7)
            let kc = k1 - k0
            for p in 0..<panels {
                pack(w + (r0 + p * panelRows) * cols + k0, ld: cols, rows: min(panelRows, nr - p * panelRows), kc: kc,
                     into: buffer + p * panelRows * kc)
            }
            var t = t0
            while t < t1 {
                let nt = min(tileTokens, t1 - t)
                for p in 0..<panels {
                    kernel16x6(
                        buffer + p * panelRows * kc, x + t * cols + k0, ld: cols, kc: kc, tokens: nt,
                        y + t * rows + r0 + p * panelRows, ldy: rows,
                        validRows: min(panelRows, nr - p * panelRows), accumulate: kb > 0)
                }
                t += tileTokens
            }
            k0 = k1
        }
    }

    /// panel[k * 16 + i] = w[i * ld + k] for i < rows, 0 for the padding rows.
    /// Full panels go through 8 x 8 register transposes (the scalar loop costs as much as a
    /// third of the arithmetic at 32 tokens); the k tail and partial panels element by element.
    @inline(__always)
    static func pack(_ w: UnsafePointer<Float>, ld: Int, rows: Int, kc: Int, into panel: Panel) {
        var k0 = 0
        if rows == panelRows {
            while k0 + 8 <= kc {
                transpose8x8(w + k0, ld: ld, into: panel + k0 * 16)
                transpose8x8(w + 8 * ld + k0, ld: ld, into: panel + k0 * 16 + 8)
                k0 &+= 8
            }
        }
        for i in 0..<panelRows {
            if i < rows {
                let src = w + i * ld
                var k = k0
                while k < kc {
                    panel[k &* 16 &+ i] = src[k]
                    k &+= 1
                }
            } else {
                var k = k0
                while k < kc {
                    panel[k &* 16 &+ i] = 0
                    k &+= 1
                }
            }
        }
    }

    /// Rows w[0..<8] x cols 0..<8 to out[k * 16 + i]: the usual unpack / shuffle / lane-swap
    /// transpose, written as lane selections that LLVM turns into vunpck*ps, vshufps and vperm2f128.
    @inline(__always)
    static func transpose8x8(_ w: UnsafePointer<Float>, ld: Int, into out: Panel) {
        @inline(__always) func row(_ i: Int) -> V { UnsafeRawPointer(w + i * ld).loadUnaligned(as: V.self) }
        @inline(__always) func lo(_ a: V, _ b: V) -> V { V(a[0], b[0], a[1], b[1], a[4], b[4], a[5], b[5]) }
        @inline(__always) func hi(_ a: V, _ b: V) -> V { V(a[2], b[2], a[3], b[3], a[6], b[6], a[7], b[7]) }
        @inline(__always) func pairLo(_ a: V, _ b: V) -> V { V(a[0], a[1], b[0], b[1], a[4], a[5], b[4], b[5]) }
        @inline(__always) func pairHi(_ a: V, _ b: V) -> V { V(a[2], a[3], b[2], b[3], a[6], a[7], b[6], b[7]) }
        @inline(__always) func put(_ v: V, _ k: Int) { UnsafeMutableRawPointer(out + k * 16).storeBytes(of: v, as: V.self) }
        let r0 = row(0), r1 = row(1), r2 = row(2), r3 = row(3), r4 = row(4), r5 = row(5), r6 = row(6), r7 = row(7)
        let t0 = lo(r0, r1), t1 = hi(r0, r1), t2 = lo(r2, r3), t3 = hi(r2, r3)
        let t4 = lo(r4, r5), t5 = hi(r4, r5), t6 = lo(r6, r7), t7 = hi(r6, r7)
        // u_j holds column j (rows 0-3) in its low half and column j + 4 in its high half.
        let u0 = pairLo(t0, t2), u1 = pairHi(t0, t2), u2 = pairLo(t1, t3), u3 = pairHi(t1, t3)
        let u4 = pairLo(t4, t6), u5 = pairHi(t4, t6), u6 = pairLo(t5, t7), u7 = pairHi(t5, t7)
        put(V(lowHalf: u0.lowHalf, highHalf: u4.lowHalf), 0)
        put(V(lowHalf: u1.lowHalf, highHalf: u5.lowHalf), 1)
        put(V(lowHalf: u2.lowHalf, highHalf: u6.lowHalf), 2)
        put(V(lowHalf: u3.lowHalf, highHalf: u7.lowHalf), 3)
        put(V(lowHalf: u0.highHalf, highHalf: u4.highHalf), 4)
        put(V(lowHalf: u1.highHalf, highHalf: u5.highHalf), 5)
        put(V(lowHalf: u2.highHalf, highHalf: u6.highHalf), 6)
        put(V(lowHalf: u3.highHalf, highHalf: u7.highHalf), 7)
    }

    /// y[j * ldy + i] (+)= sum_k panel[k * 16 + i] * x[j * ld + k], i < validRows, j < tokens (<= 6).
    /// Missing tokens reuse token 0's row (always valid memory); their sums are discarded.
    @inline(__always)
    static func kernel16x6(
        _ panel: UnsafePointer<Float>, _ x: UnsafePointer<Float>, ld: Int, kc: Int, tokens: Int,
        _ y: UnsafeMutablePointer<Float>, ldy: Int, validRows: Int, accumulate: Bool
    ) {
        let x0 = x
        let x1 = tokens > 1 ? x + ld : x, x2 = tokens > 2 ? x + 2 * ld : x
        let x3 = tokens > 3 ? x + 3 * ld : x, x4 = tokens > 4 ? x + 4 * ld : x
        let x5 = tokens > 5 ? x + 5 * ld : x
        var a0 = V.zero, a1 = V.zero, a2 = V.zero, a3 = V.zero, a4 = V.zero, a5 = V.zero
        var b0 = V.zero, b1 = V.zero, b2 = V.zero, b3 = V.zero, b4 = V.zero, b5 = V.zero
        var pp = panel
        var k = 0
        while k < kc {
            let w0 = UnsafeRawPointer(pp).load(as: V.self)
            let w1 = UnsafeRawPointer(pp + 8).load(as: V.self)
            var xb = V(repeating: x0[k])
            a0 = a0.addingProduct(w0, xb); b0 = b0.addingProduct(w1, xb)
            xb = V(repeating: x1[k])
            a1 = a1.addingProduct(w0, xb); b1 = b1.addingProduct(w1, xb)
            xb = V(repeating: x2[k])
            a2 = a2.addingProduct(w0, xb); b2 = b2.addingProduct(w1, xb)
            xb = V(repeating: x3[k])
            a3 = a3.addingProduct(w0, xb); b3 = b3.addingProduct(w1, xb)
            xb = V(repeating: x4[k])
            a4 = a4.addingProduct(w0, xb); b4 = b4.addingProduct(w1, xb)
            xb = V(repeating: x5[k])
            a5 = a5.addingProduct(w0, xb); b5 = b5.addingProduct(w1, xb)
            pp += 16
            k &+= 1
        }
        store(a0, b0, y, validRows, accumulate)
        if tokens > 1 { store(a1, b1, y + ldy, validRows, accumulate) }
        if tokens > 2 { store(a2, b2, y + 2 * ldy, validRows, accumulate) }
        if tokens > 3 { store(a3, b3, y + 3 * ldy, validRows, accumulate) }
        if tokens > 4 { store(a4, b4, y + 4 * ldy, validRows, accumulate) }
        if tokens > 5 { store(a5, b5, y + 5 * ldy, validRows, accumulate) }
    }

    /// Writes (or adds) 16 row results, or the first `validRows` of them.
    @inline(__always)
    static func store(_ lo: V, _ hi: V, _ y: UnsafeMutablePointer<Float>, _ validRows: Int, _ accumulate: Bool) {
        if validRows == 16 {
            let p = UnsafeMutableRawPointer(y)
            if accumulate {
                p.storeBytes(of: p.loadUnaligned(as: V.self) + lo, as: V.self)
                (p + 32).storeBytes(of: (p + 32).loadUnaligned(as: V.self) + hi, as: V.self)
            } else {
                p.storeBytes(of: lo, as: V.self)
                (p + 32).storeBytes(of: hi, as: V.self)
            }
            return
        }
        for i in 0..<validRows {
            let v = i < 8 ? lo[i] : hi[i - 8]
            if accumulate { y[i] += v } else { y[i] = v }
        }
    }
}

#endif
