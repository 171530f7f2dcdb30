import Foundation
import Synchronization

/// cos/sin of every rotary angle for positions 0..<positions, laid out for pairwise rotation:
/// per position, `cos` holds (c0, c0, c1, c1, ...) and `sin` holds (-s0, s0, -s1, s1, ...) over
/// `ropeDims` floats, so rotating (a, b) pairs is v * cos + swapPairs(v) * sin.
public final class RopeTable: Sendable {
    public let ropeDims: Int
    public let base: Float
    public let positions: Int
    let cos: [Float]
    let sin: [Float]

    public init(ropeDims: Int, base: Float, positions: Int) {
        precondition(ropeDims >= 0 && ropeDims % 2 == 0, "ropeDims must be even")
        self.ropeDims = ropeDims
        self.base = base
        self.positions = max(0, positions)
        let n = self.positions * ropeDims
        let c = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        let s = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        defer { c.deallocate(); s.deallocate() }
        for p in 0..<self.positions {
            Self.fill(position: p, ropeDims: ropeDims, base: base, cos: c.baseAddress! + p * ropeDims, sin: s.baseAddress! + p * ropeDims)
        }
        cos = Array(c)
        sin = Array(s)
    }

    /// One position's row, computed in Double as `Reference.rope` does.
    static func fill(position: Int, ropeDims: Int, base: Float, cos c: UnsafeMutablePointer<Float>, sin s: UnsafeMutablePointer<Float>) {
        for i in stride(from: 0, to: ropeDims, by: 2) {
            let theta = Double(position) * pow(Double(base), -Double(i) / Double(ropeDims))
            let cv = Float(Foundation.cos(theta)), sv = Float(Foundation.sin(theta))
            c[i] = cv; c[i + 1] = cv
            s[i] = -sv; s[i + 1] = sv
        }
    }

    /// Process-wide tables for `Kernels.rope` callers that pass only (ropeDims, base): built once,
    /// regrown (doubling) when a larger position shows up.
    static func shared(ropeDims: Int, base: Float, covering maxPosition: Int) -> RopeTable {
        let key = Key(ropeDims: ropeDims, base: base.bitPattern)
        if let t = cache.withLock({ $0[key] }), t.positions > maxPosition { return t }
        // Built outside the lock: two threads may both build one; the larger wins.
        let old = cache.withLock { $0[key]?.positions } ?? 0
        let table = RopeTable(ropeDims: ropeDims, base: base, positions: max(maxPosition + 1, 2 * old, 4096))
        return cache.withLock { tables in
            if let t = tables[key], t.positions >= table.positions { return t }
            tables[key] = table
            return table
        }
    }

    private struct Key: Hashable {
        var ropeDims: Int
        var base: UInt32
    }

    private static let cache = Mutex<[Key: RopeTable]>([:])
}

/// Rotation of every head of every token, shared by all levels: it is a few multiply-adds per
/// element and memory bound, so an AVX2 copy would not pay for itself.
enum RopeGeneric {
    typealias V = SIMD8<Float>

    static func apply(
        _ x: UnsafeMutablePointer<Float>, tokens: Int, heads: Int, headDim: Int,
        positions: UnsafePointer<Int32>, table: RopeTable
    ) {
        let d = table.ropeDims
        precondition(d <= headDim, "ropeDims exceeds headDim")
        guard d > 0 else { return }
        // Only positions outside the table (negative ones) need a row computed here.
        var scratch: UnsafeMutablePointer<Float>? = nil
        defer { scratch?.deallocate() }
        table.cos.withUnsafeBufferPointer { cosT in
            table.sin.withUnsafeBufferPointer { sinT in
                for t in 0..<tokens {
                    let pos = Int(positions[t])
                    var c: UnsafePointer<Float>, s: UnsafePointer<Float>
                    if pos >= 0 && pos < table.positions {
                        c = cosT.baseAddress! + pos * d
                        s = sinT.baseAddress! + pos * d
                    } else {
                        if scratch == nil { scratch = .allocate(capacity: 2 * d) }
                        RopeTable.fill(position: pos, ropeDims: d, base: table.base, cos: scratch!, sin: scratch! + d)
                        c = UnsafePointer(scratch!)
                        s = UnsafePointer(scratch! + d)
                    }
                    for h in 0..<heads {
                        rotate(x + (t * heads + h) * headDim, d, c, s)
                    }
                }
            }
        }
    }

    @inline(__always)
    static func rotate(_ v: UnsafeMutablePointer<Float>, _ d: Int, _ c: UnsafePointer<Float>, _ s: UnsafePointer<Float>) {
        var i = 0
        while i + 8 <= d {
            let a = UnsafeRawPointer(v + i).loadUnaligned(as: V.self)
            let swapped = V(a[1], a[0], a[3], a[2], a[5], a[4], a[7], a[6])
            let cv = UnsafeRawPointer(c + i).loadUnaligned(as: V.self)
            let sv = UnsafeRawPointer(s + i).loadUnaligned(as: V.self)
            UnsafeMutableRawPointer(v + i).storeBytes(of: a * cv + swapped * sv, as: V.self)
            i &+= 8
        }
        while i < d {
            let a = v[i], b = v[i + 1]
            v[i] = a * c[i] + b * s[i]
            v[i + 1] = b * c[i + 1] + a * s[i + 1]
            i &+= 2
        }
    }
}
