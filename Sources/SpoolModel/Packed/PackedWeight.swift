import SpoolFormat
import SpoolKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A group-quantized matrix used in place from a .spool tensor (see `QuantLayout`): the kernels
/// read the packed bytes directly and never decode the whole matrix.
///
/// `apply` quantizes the activations to 8 bits per block of 32 and runs the integer kernels
/// (`Kernels.packedMatmul`: AVX-512 VNNI, AVX2 or portable), as `BlockQuantWeight` does for GGUF.
/// The float-activation paths stay as `applyFloat` (a reference for tests):
/// - few tokens: one packed dot product per (token, row), rows split across threads;
/// - many tokens: each task decodes a small block of rows (`tileRows`) into a stack buffer and runs
///   the float matmul kernel on it.
public final class PackedWeight: Int8InputWeight {
    public let rows: Int
    public let cols: Int
    public let bits: Int
    public let group: Int
    let quants: UnsafePointer<UInt8>     // (rows, cols * bits / 8)
    let scales: UnsafeRawPointer         // (rows, cols / group, (d, m) float16)
    let rowBytes: Int
    /// Keeps the memory behind the pointers alive (the mapped file, or an owned buffer).
    private let owner: AnyObject
    let format: PackedQuantFormat
    /// The bytes are in the interleaved layout of `PackedPanels` (built at load, see `init`), in
    /// `interleaved`, which this weight owns.
    public let panels: Bool
    private let interleaved: UnsafeMutableRawBufferPointer?
    /// Compact grids expanded to float16 (d, m) pairs (row layout only; the panels copy holds its own).
    private let expandedScales: UnsafeMutableRawBufferPointer?
    /// The 8-bit activation buffer; a model passes one to all its weights (one forward pass runs at
    /// a time), so that it is allocated once and weights sharing an input quantize it once.
    public let activations: Q8Activations

    /// From this many tokens on, the tile path is used.
    static let tileMinTokens = 8
    static let tileRows = 48

    /// - Parameters:
    ///   - interleave: copy 4-bit weights into the `PackedPanels` layout when the matrix allows it
    ///     (the AVX-512 kernels read 16 rows per vector from it; other levels gather rows back).
    ///   - releaseSource: with `interleave`, tell the kernel the source bytes' whole pages are no
    ///     longer needed (`madvise`), so that a file mapping does not stay resident beside the
    ///     copy. Only for bytes that are a read-only file mapping: a later read faults them in again.
    ///   - compactGrid: the bytes hold compact grids (QuantLayout): they are expanded into float16
    ///     (d, m) pairs in memory this weight owns, which the kernels read; the quants stay in place.
    public init(rows: Int, cols: Int, bits: Int, group: Int, bytes: UnsafeRawBufferPointer, owner: AnyObject, name: String,
                activations: Q8Activations? = nil, interleave: Bool = false, releaseSource: Bool = false, compactGrid: Bool = false) throws(ModelError) {
        guard let size = QuantLayout.tensorBytes(shape: [rows, cols], bits: bits, group: group, compactGrid: compactGrid), bits != QuantLayout.floatBits,
              let plainSize = QuantLayout.tensorBytes(shape: [rows, cols], bits: bits, group: group),
              let format = PackedQuantFormat(bits: bits, group: group) else {
            throw .spool(.badEncoding(tensor: name, bits: bits, group: group))
        }
        self.format = format
        self.activations = activations ?? Q8Activations()
        guard bytes.count == size, let base = bytes.baseAddress else { throw .spool(.sizeMismatch(tensor: name, expected: size, actual: bytes.count)) }
        self.rows = rows
        self.cols = cols
        self.bits = bits
        self.group = group
        self.owner = owner
        rowBytes = QuantLayout.rowBytes(cols: cols, bits: bits)
        let scaleOffset = QuantLayout.scaleOffset(rows: rows, cols: cols, bits: bits)
        let scaleBytes = rows * (cols / group) * 4
        var expanded: UnsafeMutableRawBufferPointer? = nil
        if compactGrid {
            let e = UnsafeMutableRawBufferPointer.allocate(byteCount: scaleBytes, alignment: 64)
            QuantLayout.expandCompactGrids(tensor: base, rows: rows, cols: cols, bits: bits, group: group, into: e.baseAddress!)
            expanded = e
        }
        let sourceScales = expanded.map { UnsafeRawPointer($0.baseAddress!) } ?? base + scaleOffset
        if interleave && PackedPanels.supports(rows: rows, cols: cols, format: format) {
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: plainSize, alignment: 64)
            let source = PackedQuantMatrix(quants: base, scales: sourceScales, rows: rows, cols: cols, format: format)
            PackedPanels.interleave(source, toQuants: copy.baseAddress!, toScales: copy.baseAddress! + scaleOffset)
            if releaseSource { PageAdvice.dontNeed(bytes) }
            expanded?.deallocate()
            expandedScales = nil
            interleaved = copy
            panels = true
            quants = UnsafePointer(copy.baseAddress!.assumingMemoryBound(to: UInt8.self))
            scales = UnsafeRawPointer(copy.baseAddress! + scaleOffset)
        } else {
            expandedScales = expanded
            interleaved = nil
            panels = false
            quants = base.assumingMemoryBound(to: UInt8.self)
            scales = sourceScales
        }
    }

    deinit {
        interleaved?.deallocate()
        expandedScales?.deallocate()
    }

    public var byteCount: Int { rows * rowBytes + rows * (cols / group) * 4 }

    /// Row r's quants and (d, m) pairs in the row layout: in place, or gathered from the panels
    /// into a temporary buffer.
    @inline(__always)
    func withRow<R>(_ r: Int, _ body: (UnsafePointer<UInt8>, UnsafeRawPointer) -> R) -> R {
        guard panels else { return body(quants + r * rowBytes, scales + r * (cols / group) * 4) }
        let scaleBytes = cols / group * 4
        return withUnsafeTemporaryAllocation(byteCount: rowBytes + scaleBytes, alignment: 16) { buf in
            PackedPanels.gatherRow(matrix, r, toQuants: buf.baseAddress!, toScales: buf.baseAddress! + rowBytes)
            return body(UnsafePointer(buf.baseAddress!.assumingMemoryBound(to: UInt8.self)), UnsafeRawPointer(buf.baseAddress! + rowBytes))
        }
    }

    public func row(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        withRow(r) { q, sc in PackedDot.decodeRow(quants: q, scales: sc, bits: bits, group: group, cols: cols, into: out) }
    }

    /// The packed bytes as the integer kernels take them.
    public var matrix: PackedQuantMatrix {
        PackedQuantMatrix(quants: UnsafeRawPointer(quants), scales: scales, rows: rows, cols: cols, format: format, panels: panels)
    }

    /// `SPOOL_PACKED_REFERENCE=1` in the environment: every packed weight multiplies float
    /// activations (`applyFloat`) instead of 8-bit ones, so that perplexity of the integer kernels
    /// can be compared with the float-activation reference on the same file.
    public static let floatReference: Bool = {
        guard let v = getenv("SPOOL_PACKED_REFERENCE") else { return false }
        let s = String(cString: v)
        return !s.isEmpty && s != "0"
    }()

    public var takesInt8Activations: Bool { !Self.floatReference }

    /// Whether a .spool model's 4-bit weights are interleaved at load (`PackedPanels`):
    /// when the AVX-512 VNNI kernels are selected and the float reference is off. `SPOOL_PANELS=0`
    /// keeps the file's row layout (to compare the two).
    public static let interleaveAtLoad: Bool = {
        if floatReference || KernelLevel.selected != .avx512vnni { return false }
        guard let v = getenv("SPOOL_PANELS") else { return true }
        return String(cString: v) != "0"
    }()

    public func apply(_ x: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        guard rows > 0, tokens > 0 else { return }
        if Self.floatReference {
            applyFloat(x, tokens: tokens, into: y, pool: pool)
            return
        }
        Kernels.quantizeActivations(x, tokens: tokens, cols: cols, into: activations, pool: pool)
        apply(quantized: activations, into: y, pool: pool)
    }

    public func apply(quantized x: Q8Activations, into y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        Kernels.packedMatmul(matrix, x, into: y, pool: pool)
    }

    public func applyRows(_ rows: Range<Int>, quantized x: Q8Activations, into y: UnsafeMutablePointer<Float>) {
        Kernels.packedMatmulBlock(matrix, x, into: y, rowRange: rows, tokenRange: 0..<x.tokens, level: KernelLevel.selected)
    }

    public func rowsPerTask(tokens: Int, threads: Int) -> Int {
        Kernels.packedRowsPerChunk(rows, tokens: tokens, threads: threads, panels: panels)
    }

    /// y through the float-activation kernels (packed dot, or decoded row tiles for many tokens).
    public func applyFloat(_ x: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        guard rows > 0, tokens > 0 else { return }
        if tokens >= Self.tileMinTokens {
            applyTiled(x, tokens: tokens, into: y, pool: pool)
        } else {
            applyDot(x, tokens: tokens, into: y, pool: pool)
        }
    }

    /// y[t, r] through `PackedDot.simd`, or `PackedDot.reference` when `reference` is set (tests).
    public func applyDot(_ x: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>, pool: ThreadPool, reference: Bool = false) {
        let groups = cols / group
        var sums = [Float](repeating: 0, count: tokens * groups)
        sums.withUnsafeMutableBufferPointer { s in
            for t in 0..<tokens { PackedDot.groupSums(x + t * cols, cols: cols, group: group, into: s.baseAddress! + t * groups) }
        }
        let perChunk = max(16, rows / (pool.threadCount * 4))
        let chunks = (rows + perChunk - 1) / perChunk
        sums.withUnsafeBufferPointer { s in
            let sp = s.baseAddress!
            pool.parallelFor(chunks) { c in
                for r in (c * perChunk)..<min(rows, (c + 1) * perChunk) {
                    withRow(r) { q, sc in
                        for t in 0..<tokens {
                            y[t * rows + r] = reference
                                ? PackedDot.reference(quants: q, scales: sc, bits: bits, group: group, cols: cols, x: x + t * cols, xSums: sp + t * groups)
                                : PackedDot.simd(quants: q, scales: sc, bits: bits, group: group, cols: cols, x: x + t * cols, xSums: sp + t * groups)
                        }
                    }
                }
            }
        }
    }

    func applyTiled(_ x: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let tr = Self.tileRows
        let tiles = (rows + tr - 1) / tr
        pool.parallelFor(tiles) { i in
            let r0 = i * tr, r1 = min(rows, r0 + tr)
            withUnsafeTemporaryAllocation(of: Float.self, capacity: tr * cols) { tile in
                let t = tile.baseAddress!
                for r in r0..<r1 { row(r, into: t + (r - r0) * cols) }
                Kernels.matmulRows(t, rowRange: r0..<r1, rows: rows, cols: cols, x, tokens: tokens, into: y)
            }
        }
    }
}
