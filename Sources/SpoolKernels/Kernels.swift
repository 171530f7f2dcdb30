import Foundation

/// The kernels the forward pass calls. Each has a scalar twin in `Reference` and a test comparing them.
public enum Kernels {
    /// y[t, r] = sum_c w[r, c] * x[t, c]; w: (rows, cols), x: (tokens, cols), y: (tokens, rows).
    /// Rows are split across the pool's threads.
    public static func matmul(
        _ w: UnsafePointer<Float>, rows: Int, cols: Int,
        _ x: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>, pool: ThreadPool
    ) {
        pool.parallelRanges(rows, granule: 4) { range in
            matmulRows(w, rows: rows, cols: cols, x, tokens: tokens, into: y, rowRange: range)
        }
    }

    /// One thread's share of `matmul`: 4 rows x 4 tokens at a time, 8-wide vectors along `cols`.
    static func matmulRows(
        _ w: UnsafePointer<Float>, rows: Int, cols: Int,
        _ x: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>, rowRange: Range<Int>
    ) {
        let vecCols = cols & ~7
        var r = rowRange.lowerBound
        while r < rowRange.upperBound {
            let nr = min(4, rowRange.upperBound - r)
            var t = 0
            while t < tokens {
                let nt = min(4, tokens - t)
                var acc = [SIMD8<Float>](repeating: .zero, count: 16)
                acc.withUnsafeMutableBufferPointer { acc in
                    var c = 0
                    while c < vecCols {
                        for i in 0..<nr {
                            let wv = UnsafeRawPointer(w + (r + i) * cols + c).loadUnaligned(as: SIMD8<Float>.self)
                            for j in 0..<nt {
                                let xv = UnsafeRawPointer(x + (t + j) * cols + c).loadUnaligned(as: SIMD8<Float>.self)
                                acc[i * 4 + j] = acc[i * 4 + j].addingProduct(wv, xv)
                            }
                        }
                        c += 8
                    }
                    for i in 0..<nr {
                        for j in 0..<nt {
                            var s = acc[i * 4 + j].sum()
                            for cc in vecCols..<cols { s += w[(r + i) * cols + cc] * x[(t + j) * cols + cc] }
                            y[(t + j) * rows + r + i] = s
                        }
                    }
                }
                t += 4
            }
            r += 4
        }
    }

    public static func rmsNorm(
        _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, n: Int, tokens: Int, eps: Float,
        into out: UnsafeMutablePointer<Float>
    ) {
        for t in 0..<tokens {
            let row = x + t * n
            var ss: Float = 0
            for i in 0..<n { ss += row[i] * row[i] }
            let scale = 1 / (ss / Float(n) + eps).squareRoot()
            for i in 0..<n { out[t * n + i] = row[i] * scale * weight[i] }
        }
    }

    /// See `Reference.rope`. The angle table per position is computed once per call.
    public static func rope(
        _ x: UnsafeMutablePointer<Float>, tokens: Int, heads: Int, headDim: Int, ropeDims: Int,
        positions: UnsafePointer<Int32>, base: Float
    ) {
        let half = ropeDims / 2
        var invFreq = [Float](repeating: 0, count: half)
        for i in 0..<half { invFreq[i] = Float(pow(Double(base), -Double(2 * i) / Double(ropeDims))) }
        var cosT = [Float](repeating: 0, count: half), sinT = [Float](repeating: 0, count: half)
        for t in 0..<tokens {
            let pos = Double(positions[t])
            for i in 0..<half {
                let theta = pos * Double(invFreq[i])
                cosT[i] = Float(cos(theta))
                sinT[i] = Float(sin(theta))
            }
            for h in 0..<heads {
                let v = x + (t * heads + h) * headDim
                for i in 0..<half {
                    let a = v[2 * i], b = v[2 * i + 1]
                    v[2 * i] = a * cosT[i] - b * sinT[i]
                    v[2 * i + 1] = a * sinT[i] + b * cosT[i]
                }
            }
        }
    }

    public static func softmax(_ x: UnsafeMutablePointer<Float>, n: Int) {
        var m = -Float.infinity
        for i in 0..<n { m = max(m, x[i]) }
        var sum: Float = 0
        for i in 0..<n {
            let e = Foundation.exp(x[i] - m)
            x[i] = e
            sum += e
        }
        let inv = 1 / sum
        for i in 0..<n { x[i] *= inv }
    }

    public static func swiglu(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<Float>) {
        for i in 0..<count {
            let g = gate[i]
            out[i] = g / (1 + Foundation.exp(-g)) * up[i]
        }
    }
}
