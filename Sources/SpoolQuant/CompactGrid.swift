import SpoolFormat

/// One row's compact grids (QuantLayout, tensor field `grid` = "i8"): float16 bounds (D, M) for
/// the row, and per group an 8-bit code for d (0...255, d = D * code / 255) and one for m
/// (-127...127, m = M * code / 127). The grids the quantizer uses are exactly the expanded codes,
/// so the file decodes to the values GPTQ compensated for.
struct CompactGridRow {
    let dBound: Float16
    let mBound: Float16

    /// Headroom over the row's own group ranges: GPTQ's error compensation moves later groups'
    /// weights past the original values, and a grid beyond the bound is clipped to it.
    static let slack: Float = 1.25

    /// Bounds from the row's original weights: the widest group's min-max step and the largest
    /// |value|, with `slack`.
    init(row w: UnsafePointer<Float>, cols: Int, group: Int, maxQ: Int) {
        var dMax: Float = 0, mMax: Float = 0
        for k in 0..<(cols / group) {
            var lo = Float.infinity, hi = -Float.infinity
            for i in 0..<group { let v = w[k * group + i]; lo = min(lo, v); hi = max(hi, v) }
            dMax = max(dMax, (hi - lo) / Float(maxQ))
            mMax = max(mMax, abs(lo), abs(hi))
        }
        dBound = Self.roundUp(dMax * Self.slack)
        mBound = Self.roundUp(mMax * Self.slack)
    }

    init(dBound: Float16, mBound: Float16) {
        self.dBound = dBound
        self.mBound = mBound
    }

    /// The smallest float16 >= x (x >= 0, finite).
    static func roundUp(_ x: Float) -> Float16 {
        let h = Float16(x)
        return Float(h) >= x ? h : h.nextUp
    }

    func grid(d: UInt8, m: Int8) -> GroupGrid {
        let (gd, gm) = QuantLayout.compactGrid(dBound: dBound, mBound: mBound, dCode: d, mCode: m)
        return GroupGrid(d: Float(gd), m: Float(gm))
    }

    /// The codes nearest `fitted`, then the best of them and their neighbours (±1 on each code) on
    /// `values` (error weighted by `importance`, as the fit was).
    func snap(_ fitted: GroupGrid, _ values: UnsafePointer<Float>, count: Int, maxQ: Int,
              importance: UnsafePointer<Float>?) -> (grid: GroupGrid, d: UInt8, m: Int8) {
        let d0 = dBound > 0 ? Int((fitted.d / Float(dBound) * 255).rounded()) : 0
        let m0 = mBound > 0 ? Int((fitted.m / Float(mBound) * 127).rounded()) : 0
        func codes(_ c: Int, _ range: ClosedRange<Int>) -> ClosedRange<Int> { range.clamp(c - 1)...range.clamp(c + 1) }
        var best = (grid: grid(d: 0, m: 0), d: UInt8(0), m: Int8(0))
        var bestError = Float.infinity
        // Ascending codes and a strict `<`: ties go to the lowest (d, m) codes.
        for dc in codes(d0, 0...255) {
            for mc in codes(m0, -127...127) {
                let g = grid(d: UInt8(dc), m: Int8(mc))
                let e = g.error(values, count: count, stride: 1, maxQ: maxQ, importance: importance)
                if e < bestError {
                    best = (g, UInt8(dc), Int8(mc))
                    bestError = e
                }
            }
        }
        return best
    }
}

extension ClosedRange where Bound == Int {
    func clamp(_ x: Int) -> Int { Swift.min(Swift.max(x, lowerBound), upperBound) }
}
