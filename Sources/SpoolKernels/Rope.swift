import Foundation
import Synchronization

import SpoolGGMLMath
#if arch(x86_64)
import SpoolKernelsAVX2
#endif

/// cos/sin of every rotary angle for positions 0..<positions, computed as llama.cpp computes them
/// (`GGMLMath.ropeAngles`) and laid out for `GGMLMath.rotate`: per position, `cs` holds
/// (c0, s0, c1, s1, ...) and `sc` holds (-s0, c0, -s1, c1, ...) over `ropeDims` floats.
public final class RopeTable: Sendable {
    public let ropeDims: Int
    public let base: Float
    public let positions: Int
    let cs: [Float]
    let sc: [Float]

    public init(ropeDims: Int, base: Float, positions: Int) {
        precondition(ropeDims >= 0 && ropeDims % 2 == 0, "ropeDims must be even")
        self.ropeDims = ropeDims
        self.base = base
        self.positions = max(0, positions)
        let n = self.positions * ropeDims
        let c = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(n, 1))
        let s = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(n, 1))
        defer { c.deallocate(); s.deallocate() }
        for p in 0..<self.positions {
            GGMLMath.ropeAngles(position: p, ropeDims: ropeDims, base: base, cs: c.baseAddress! + p * ropeDims, sc: s.baseAddress! + p * ropeDims)
        }
        cs = Array(c.prefix(n))
        sc = Array(s.prefix(n))
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

/// Rotation of every head of every token with llama.cpp's arithmetic (`GGMLMath.rotate`); the
/// AVX2 level runs the same code compiled with FMA.
enum RopeGeneric {
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
        let level = KernelLevel.selected.resolved
        table.cs.withUnsafeBufferPointer { csT in
            table.sc.withUnsafeBufferPointer { scT in
                for t in 0..<tokens {
                    let pos = Int(positions[t])
                    var c: UnsafePointer<Float>, s: UnsafePointer<Float>
                    if pos >= 0 && pos < table.positions {
                        c = csT.baseAddress! + pos * d
                        s = scT.baseAddress! + pos * d
                    } else {
                        if scratch == nil { scratch = .allocate(capacity: 2 * d) }
                        GGMLMath.ropeAngles(position: pos, ropeDims: d, base: table.base, cs: scratch!, sc: scratch! + d)
                        c = UnsafePointer(scratch!)
                        s = UnsafePointer(scratch! + d)
                    }
                    let row = x + t * heads * headDim
                    #if arch(x86_64)
                    if level.usesAVX2 {
                        ExactAVX2.rotateHeads(row, heads: heads, headDim: headDim, d: d, cs: c, sc: s)
                        continue
                    }
                    #endif
                    for h in 0..<heads { GGMLMath.rotate(row + h * headDim, d, cs: c, sc: s) }
                }
            }
        }
    }
}
