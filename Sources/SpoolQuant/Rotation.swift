// Randomized Hadamard rotations for incoherence processing (QuaRot / QuIP# style).
//
// Q = diag(s) K / sqrt(n), with s a seeded vector of random signs and K a Hadamard matrix
// (entries ±1, K Kᵀ = n I) built as a Kronecker product of small factors: Sylvester's 2 x 2 for
// powers of two and Paley's construction (order q + 1, q a prime ≡ 3 mod 4) for the rest, so that
// widths like 576 = 12 · 12 · 4 work without a power of two. Applying Q to a vector of n costs
// n · Σ(factor orders) multiply-adds (28 per value for 576) instead of n for a dense matrix.

public enum RotationError: Error, Equatable, CustomStringConvertible {
    /// No product of Sylvester and Paley factors has this order.
    case noHadamard(width: Int, what: String)

    public var description: String {
        switch self {
        case let .noHadamard(n, what):
            return "--rotate: no Hadamard construction for \(what) width \(n) (needs 2^a times Paley orders q+1, q prime ≡ 3 mod 4)"
        }
    }
}

/// A ±1 Hadamard factor of one order, row-major.
struct HadamardFactor: Sendable {
    let order: Int
    let entries: [Float]   // (order, order)

    /// Sylvester's [[1, 1], [1, -1]].
    static let sylvester2 = HadamardFactor(order: 2, entries: [1, 1, 1, -1])

    /// Paley construction I for q prime, q ≡ 3 (mod 4): H = I + S of order q + 1 with
    /// S = [[0, 1ᵀ], [-1, J]], J the Jacobsthal matrix J[i][j] = χ(j - i) (χ the quadratic character
    /// of GF(q)). S is skew-symmetric with S Sᵀ = q I, so H Hᵀ = (q + 1) I.
    static func paley(q: Int) -> HadamardFactor {
        var isSquare = [Bool](repeating: false, count: q)
        for x in 1..<q { isSquare[(x * x) % q] = true }
        func chi(_ a: Int) -> Float {
            let r = ((a % q) + q) % q
            return r == 0 ? 0 : (isSquare[r] ? 1 : -1)
        }
        let n = q + 1
        var h = [Float](repeating: 0, count: n * n)
        for j in 1..<n { h[j] = 1; h[j * n] = -1 }
        for i in 1..<n { for j in 1..<n { h[i * n + j] = chi(j - i) } }
        for i in 0..<n { h[i * n + i] += 1 }
        return HadamardFactor(order: n, entries: h)
    }

    static func isPrime(_ q: Int) -> Bool {
        guard q >= 2 else { return false }
        var d = 2
        while d * d <= q { if q % d == 0 { return false }; d += 1 }
        return true
    }

    /// Factors whose Kronecker product is a Hadamard matrix of order n, or nil. Powers of two
    /// become Sylvester 2 x 2 factors; the rest must split into Paley orders. Of all such splits,
    /// the one with the least work per value (the sum of the factor orders) is taken.
    static func factors(order n: Int) -> [HadamardFactor]? {
        guard let orders = cheapestSplit(n) else { return nil }
        return orders.map { $0 == 2 ? sylvester2 : paley(q: $0 - 1) }
    }

    static func cheapestSplit(_ n: Int) -> [Int]? {
        if n == 1 { return [] }
        if n & (n - 1) == 0 { return Array(repeating: 2, count: n.trailingZeroBitCount) }
        var best: [Int]? = nil
        var p = 4
        while p <= n {
            let q = p - 1
            if n % p == 0, p & (p - 1) != 0, q % 4 == 3, isPrime(q), let rest = cheapestSplit(n / p) {
                let candidate = [p] + rest
                if best.map({ $0.reduce(0, +) > candidate.reduce(0, +) }) ?? true { best = candidate }
            }
            p += 4
        }
        return best
    }
}

/// x ↦ x Q for a randomized Hadamard Q of order n (row vectors), and its inverse x ↦ x Qᵀ.
public struct HadamardRotation: Sendable {
    public let width: Int
    let factors: [HadamardFactor]
    let signs: [Float]   // (width) ±1
    let scale: Float

    public init(width: Int, seed: UInt64, what: String) throws(RotationError) {
        guard width > 0, let f = HadamardFactor.factors(order: width) else { throw .noHadamard(width: width, what: what) }
        self.width = width
        factors = f
        var state = seed
        signs = (0..<width).map { _ in
            // SplitMix64: the sign is the top bit.
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            return z >> 63 == 0 ? 1 : -1
        }
        scale = 1 / Float(width).squareRoot()
    }

    /// x (width) ← x Q.
    public func rotate(_ x: UnsafeMutablePointer<Float>) {
        for i in 0..<width { x[i] *= signs[i] }
        applyK(x, transposed: false)
        for i in 0..<width { x[i] *= scale }
    }

    /// x (width) ← x Qᵀ, the inverse of `rotate`.
    public func rotateBack(_ x: UnsafeMutablePointer<Float>) {
        applyK(x, transposed: true)
        for i in 0..<width { x[i] *= scale * signs[i] }
    }

    /// Rotates every row of a (rows, width) row-major matrix: W ← W Q.
    public func rotateRows(_ w: UnsafeMutablePointer<Float>, rows: Int) {
        for r in 0..<rows { rotate(w + r * width) }
    }

    /// Rotates every column of a (width, cols) row-major matrix: W ← Qᵀ W (column c ↦ (cᵀ Q)ᵀ).
    public func rotateColumns(_ w: UnsafeMutablePointer<Float>, cols: Int) {
        var col = [Float](repeating: 0, count: width)
        col.withUnsafeMutableBufferPointer { cb in
            let c = cb.baseAddress!
            for j in 0..<cols {
                for i in 0..<width { c[i] = w[i * cols + j] }
                rotate(c)
                for i in 0..<width { w[i * cols + j] = c[i] }
            }
        }
    }

    /// Q as a dense (width, width) row-major matrix: row i is e_i Q.
    public func matrix() -> [Float] {
        var q = [Float](repeating: 0, count: width * width)
        q.withUnsafeMutableBufferPointer { b in
            for i in 0..<width {
                b[i * width + i] = 1
                rotate(b.baseAddress! + i * width)
            }
        }
        return q
    }

    /// x ← x K (or x Kᵀ), K = F1 ⊗ F2 ⊗ ...: one small contraction per factor along its axis of x
    /// seen as a (o1, o2, ...) tensor with the first factor outermost.
    private func applyK(_ x: UnsafeMutablePointer<Float>, transposed: Bool) {
        var tmp = [Float](repeating: 0, count: width)
        tmp.withUnsafeMutableBufferPointer { tb in
            let t = tb.baseAddress!
            var outer = 1
            for f in factors {
                let m = f.order
                let inner = width / (outer * m)
                f.entries.withUnsafeBufferPointer { e in
                    for o in 0..<outer {
                        let base = o * m * inner
                        for j in 0..<m {
                            let out = t + base + j * inner
                            for k in 0..<inner { out[k] = 0 }
                            for i in 0..<m {
                                let a = transposed ? e[j * m + i] : e[i * m + j]
                                let src = x + base + i * inner
                                for k in 0..<inner { out[k] += a * src[k] }
                            }
                        }
                    }
                }
                x.update(from: t, count: width)
                outer *= m
            }
        }
    }
}
