import Foundation

/// Scalar reference kernels. Every fast kernel in this module is tested against the function of the
/// same name here. They favour clarity over speed.
public enum Reference {
    /// y[t, r] = sum_c w[r, c] * x[t, c]
    /// w: (rows, cols) row-major; x: (tokens, cols); y: (tokens, rows).
    public static func matmul(
        _ w: UnsafePointer<Float>, rows: Int, cols: Int,
        _ x: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>
    ) {
        for t in 0..<tokens {
            for r in 0..<rows {
                var acc: Double = 0
                for c in 0..<cols { acc += Double(w[r * cols + c]) * Double(x[t * cols + c]) }
                y[t * rows + r] = Float(acc)
            }
        }
    }

    /// out = x / sqrt(mean(x^2) + eps) * weight, for each of `tokens` rows of length n.
    public static func rmsNorm(
        _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, n: Int, tokens: Int, eps: Float,
        into out: UnsafeMutablePointer<Float>
    ) {
        for t in 0..<tokens {
            var ss: Double = 0
            for i in 0..<n { ss += Double(x[t * n + i]) * Double(x[t * n + i]) }
            let scale = Float(1 / (ss / Double(n) + Double(eps)).squareRoot())
            for i in 0..<n { out[t * n + i] = x[t * n + i] * scale * weight[i] }
        }
    }

    /// Rotary position embedding, "normal" (GPT-J / llama.cpp LLAMA_ROPE_TYPE_NORM) variant:
    /// rotates adjacent pairs (x[2i], x[2i+1]) of the first `ropeDims` of each head by
    /// pos * base^(-2i / ropeDims). x: (tokens, heads, headDim).
    public static func rope(
        _ x: UnsafeMutablePointer<Float>, tokens: Int, heads: Int, headDim: Int, ropeDims: Int,
        positions: UnsafePointer<Int32>, base: Float
    ) {
        for t in 0..<tokens {
            let pos = Double(positions[t])
            for h in 0..<heads {
                let v = x + (t * heads + h) * headDim
                for i in stride(from: 0, to: ropeDims, by: 2) {
                    let theta = pos * pow(Double(base), -Double(i) / Double(ropeDims))
                    let c = Float(cos(theta)), s = Float(sin(theta))
                    let a = v[i], b = v[i + 1]
                    v[i] = a * c - b * s
                    v[i + 1] = a * s + b * c
                }
            }
        }
    }

    /// In-place softmax over n values.
    public static func softmax(_ x: UnsafeMutablePointer<Float>, n: Int) {
        var m = -Float.infinity
        for i in 0..<n { m = max(m, x[i]) }
        var sum: Double = 0
        for i in 0..<n {
            x[i] = Foundation.exp(x[i] - m)
            sum += Double(x[i])
        }
        let inv = Float(1 / sum)
        for i in 0..<n { x[i] *= inv }
    }

    /// out = silu(gate) * up, elementwise.
    public static func swiglu(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<Float>) {
        for i in 0..<count {
            let g = gate[i]
            out[i] = g / (1 + Foundation.exp(-g)) * up[i]
        }
    }

    /// scores[j] = scale * sum_i q[i] * rows[j * stride + i], for j < count.
    public static func dotRows(
        _ q: UnsafePointer<Float>, _ rows: UnsafePointer<Float>, stride: Int, count: Int, dim: Int, scale: Float,
        into scores: UnsafeMutablePointer<Float>
    ) {
        for j in 0..<count {
            var acc: Double = 0
            for i in 0..<dim { acc += Double(q[i]) * Double(rows[j * stride + i]) }
            scores[j] = Float(acc * Double(scale))
        }
    }

    /// out[i] = sum_j weights[j] * rows[j * stride + i], for i < dim.
    public static func weightedSum(
        _ weights: UnsafePointer<Float>, _ rows: UnsafePointer<Float>, stride: Int, count: Int, dim: Int,
        into out: UnsafeMutablePointer<Float>
    ) {
        for i in 0..<dim {
            var acc: Double = 0
            for j in 0..<count { acc += Double(weights[j]) * Double(rows[j * stride + i]) }
            out[i] = Float(acc)
        }
    }
}
