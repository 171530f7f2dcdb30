import SpoolFormat

/// Group-wise asymmetric integer quantization: w ≈ d * q + m per group of `group` columns, with
/// q in 0...2^bits - 1 and (d, m) stored as float16 (see `QuantLayout` for the bytes).
public struct QuantSpec: Sendable, Equatable, CustomStringConvertible {
    public var bits: Int
    public var group: Int
    /// Groups store 8-bit (d, m) codes under per-row bounds (QuantLayout's compact grids) instead
    /// of float16 pairs: 16 bits per group instead of 32.
    public var compactGrid: Bool

    public init(bits: Int, group: Int, compactGrid: Bool = false) throws(QuantError) {
        guard QuantLayout.supportedBits.contains(bits) else { throw .unsupportedBits(bits) }
        guard QuantLayout.supportedGroups.contains(group) else { throw .unsupportedGroup(group) }
        self.bits = bits
        self.group = group
        self.compactGrid = compactGrid
    }

    /// For values already validated (a `QuantChoice`).
    init(validatedBits bits: Int, group: Int, compactGrid: Bool = false) {
        self.bits = bits
        self.group = group
        self.compactGrid = compactGrid
    }

    public var maxQ: Int { (1 << bits) - 1 }
    public var description: String { "\(bits)-bit/g\(group)\(compactGrid ? " compact grids" : "")" }
}

public enum QuantError: Error, Equatable, CustomStringConvertible {
    case unsupportedBits(Int)
    case unsupportedGroup(Int)
    case columnsNotWholeGroups(tensor: String, cols: Int, group: Int)
    case hessianNotPositiveDefinite(tensor: String)
    case badChoice(String)

    public var description: String {
        switch self {
        case let .unsupportedBits(b): return "unsupported bit width \(b) (supported: 2, 3, 4, 8)"
        case let .unsupportedGroup(g): return "unsupported group size \(g) (supported: 32, 64, 128)"
        case let .columnsNotWholeGroups(t, c, g): return "tensor \(t): \(c) columns is not a multiple of the group size \(g)"
        case let .hessianNotPositiveDefinite(t): return "tensor \(t): the Hessian stayed singular even with extra damping"
        case let .badChoice(s): return "'\(s)' is not BITS/GROUP (e.g. 3/64)"
        }
    }
}

/// The scale and offset of one group, already rounded to float16 so quantizing and dequantizing
/// agree with what the file stores.
public struct GroupGrid: Sendable {
    public var d: Float
    public var m: Float

    /// The grid for `values`: the min..max range, shrunk where that lowers the squared error (a
    /// small search over clipping ratios, as GPTQ's "mse" option and llama.cpp's quantizers do).
    /// `importance` (one non-negative weight per value, contiguous) weighs each value's squared
    /// error; GPTQ passes the Hessian diagonal, the mean x² of each input, so the grid favours
    /// the columns the layer's output depends on most (what llama.cpp's importance matrix does).
    public static func fit(_ values: UnsafePointer<Float>, count: Int, stride: Int = 1, maxQ: Int,
                           importance: UnsafePointer<Float>? = nil) -> GroupGrid {
        var lo = Float.infinity, hi = -Float.infinity
        for i in 0..<count { let v = values[i * stride]; lo = min(lo, v); hi = max(hi, v) }
        var best = make(lo: lo, hi: hi, maxQ: maxQ)
        guard hi > lo else { return best }
        var bestErr = best.error(values, count: count, stride: stride, maxQ: maxQ, importance: importance)
        // Shrink the range towards zero in small steps; keep the best.
        for step in 1...searchSteps {
            let p = 1 - Float(step) * searchShrink
            let g = make(lo: lo * p, hi: hi * p, maxQ: maxQ)
            let e = g.error(values, count: count, stride: stride, maxQ: maxQ, importance: importance)
            if e < bestErr { best = g; bestErr = e }
        }
        return best.refined(values, count: count, stride: stride, maxQ: maxQ, importance: importance, lo: lo, hi: hi, error: bestErr)
    }

    /// Least-squares refinement: with the levels q fixed, the (d, m) minimizing Σ (w - d q - m)² has
    /// a closed form; re-round, repeat. At 2 and 3 bits the best grid is often not min..max scaled,
    /// and this lowers the squared error further (llama.cpp's k-quant search does the same). A
    /// refined grid is kept only when its error is lower and its range still covers the group's
    /// span up to `maxClip` at each end, so a clipped value is never further than that from its level.
    func refined(_ values: UnsafePointer<Float>, count: Int, stride: Int, maxQ: Int, importance: UnsafePointer<Float>?,
                 lo: Float, hi: Float, error: Float) -> GroupGrid {
        var best = self, bestErr = error
        let span = hi - lo
        guard span > 0 else { return best }
        for _ in 0..<Self.refineSteps {
            // Weighted normal equations: n = Σa, sq = Σa q, sqq = Σa q², sw = Σa w, swq = Σa w q.
            var n: Float = 0, sq: Float = 0, sqq: Float = 0, sw: Float = 0, swq: Float = 0
            for i in 0..<count {
                let v = values[i * stride], q = Float(best.quantize(v, maxQ: maxQ)), a = importance?[i] ?? 1
                n += a; sq += a * q; sqq += a * q * q; sw += a * v; swq += a * v * q
            }
            let det = n * sqq - sq * sq
            guard det > 0 else { break }
            let d = (n * swq - sq * sw) / det
            let m = (sw - d * sq) / n
            guard d > 0 else { break }
            let g = GroupGrid(d: Float(Float16(d)), m: Float(Float16(m)))
            let top = g.m + Float(maxQ) * g.d
            guard g.d > 0, g.m <= lo + Self.maxClip * span, top >= hi - Self.maxClip * span else { break }
            let e = g.error(values, count: count, stride: stride, maxQ: maxQ, importance: importance)
            guard e < bestErr else { break }
            best = g
            bestErr = e
        }
        return best
    }

    static let searchSteps = 16
    static let searchShrink: Float = 0.025
    static let refineSteps = 3
    /// Largest part of the group's min..max span a grid may leave outside its range at either end
    /// (the shrink search goes to 1 - 16 * 0.025 = 60% of the range, i.e. 40% clipped at most).
    static let maxClip: Float = 0.4

    static func make(lo: Float, hi: Float, maxQ: Int) -> GroupGrid {
        let d = Float(Float16((hi - lo) / Float(maxQ)))
        let m = Float(Float16(lo))
        return GroupGrid(d: d, m: m)
    }

    @inline(__always)
    public func quantize(_ w: Float, maxQ: Int) -> Int {
        guard d > 0 else { return 0 }
        let q = ((w - m) / d).rounded()
        return Int(min(max(q, 0), Float(maxQ)))
    }

    @inline(__always)
    public func value(_ q: Int) -> Float { d * Float(q) + m }

    func error(_ values: UnsafePointer<Float>, count: Int, stride: Int, maxQ: Int, importance: UnsafePointer<Float>? = nil) -> Float {
        var e: Float = 0
        for i in 0..<count {
            let v = values[i * stride]
            let r = v - value(quantize(v, maxQ: maxQ))
            e += (importance?[i] ?? 1) * r * r
        }
        return e
    }
}

/// A quantized matrix: quants (rows, cols) one per byte plus one grid per (row, group). Kept
/// unpacked while quantizing; `packed()` produces the file bytes.
public struct QuantizedMatrix: Sendable {
    public let rows: Int
    public let cols: Int
    public let spec: QuantSpec
    public var q: [UInt8]            // (rows, cols)
    public var grids: [GroupGrid]    // (rows, cols / group)
    /// Compact grids only: (rows, (D, M) float16 bits) and (rows, cols / group, (d code, m code)).
    var rowBounds: [UInt16] = []
    var gridCodes: [UInt8] = []

    public init(rows: Int, cols: Int, spec: QuantSpec) {
        self.rows = rows
        self.cols = cols
        self.spec = spec
        q = [UInt8](repeating: 0, count: rows * cols)
        grids = [GroupGrid](repeating: GroupGrid(d: 0, m: 0), count: rows * (cols / spec.group))
    }

    public var groupsPerRow: Int { cols / spec.group }

    /// Compact grids: row r's bounds from its original weights `w` (cols values), recorded.
    mutating func startCompactRow(_ r: Int, _ w: UnsafePointer<Float>) -> CompactGridRow {
        if rowBounds.isEmpty {
            rowBounds = [UInt16](repeating: 0, count: 2 * rows)
            gridCodes = [UInt8](repeating: 0, count: 2 * rows * groupsPerRow)
        }
        let b = CompactGridRow(row: w, cols: cols, group: spec.group, maxQ: spec.maxQ)
        rowBounds[2 * r] = b.dBound.bitPattern
        rowBounds[2 * r + 1] = b.mBound.bitPattern
        return b
    }

    /// Records group i's codes; returns its grid.
    mutating func setCompact(_ i: Int, _ s: (grid: GroupGrid, d: UInt8, m: Int8)) -> GroupGrid {
        gridCodes[2 * i] = s.d
        gridCodes[2 * i + 1] = UInt8(bitPattern: s.m)
        return s.grid
    }

    /// Dequantized values (rows, cols).
    public func dequantized() -> [Float] {
        var out = [Float](repeating: 0, count: rows * cols)
        for r in 0..<rows {
            for c in 0..<cols {
                out[r * cols + c] = grids[r * groupsPerRow + c / spec.group].value(Int(q[r * cols + c]))
            }
        }
        return out
    }

    /// The tensor's bytes in the `QuantLayout` format.
    public func packed() -> [UInt8] {
        let size = QuantLayout.tensorBytes(shape: [rows, cols], bits: spec.bits, group: spec.group, compactGrid: spec.compactGrid)!
        var out = [UInt8](repeating: 0, count: size)
        let chunkBytes = QuantLayout.chunkBytes(bits: spec.bits)
        out.withUnsafeMutableBufferPointer { o in
            q.withUnsafeBufferPointer { qb in
                var p = 0
                for i in stride(from: 0, to: rows * cols, by: QuantLayout.chunk) {
                    QuantLayout.pack32(qb.baseAddress! + i, bits: spec.bits, into: o.baseAddress! + p)
                    p += chunkBytes
                }
            }
            if spec.compactGrid {
                QuantLayout.storeCompactGrids(bounds: rowBounds, codes: gridCodes, rows: rows, cols: cols, bits: spec.bits, into: o.baseAddress!)
                return
            }
            let s = QuantLayout.scaleOffset(rows: rows, cols: cols, bits: spec.bits)
            let raw = UnsafeMutableRawPointer(o.baseAddress! + s)
            for (i, g) in grids.enumerated() {
                raw.storeBytes(of: Float16(g.d).bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt16.self)
                raw.storeBytes(of: Float16(g.m).bitPattern.littleEndian, toByteOffset: 4 * i + 2, as: UInt16.self)
            }
        }
        return out
    }
}

/// Round-to-nearest: each group gets its own fitted grid, each value its nearest level.
public enum RTN {
    public static func quantize(_ w: UnsafePointer<Float>, rows: Int, cols: Int, spec: QuantSpec, name: String = "") throws(QuantError) -> QuantizedMatrix {
        guard cols % spec.group == 0 else { throw .columnsNotWholeGroups(tensor: name, cols: cols, group: spec.group) }
        var out = QuantizedMatrix(rows: rows, cols: cols, spec: spec)
        let gpr = cols / spec.group
        for r in 0..<rows {
            let compact = spec.compactGrid ? out.startCompactRow(r, w + r * cols) : nil
            for g in 0..<gpr {
                let base = w + r * cols + g * spec.group
                var grid = GroupGrid.fit(base, count: spec.group, maxQ: spec.maxQ)
                if let compact { grid = out.setCompact(r * gpr + g, compact.snap(grid, base, count: spec.group, maxQ: spec.maxQ, importance: nil)) }
                out.grids[r * gpr + g] = grid
                for i in 0..<spec.group {
                    out.q[r * cols + g * spec.group + i] = UInt8(grid.quantize(base[i], maxQ: spec.maxQ))
                }
            }
        }
        return out
    }
}
