import SpoolKernels
import SpoolTestSupport
import XCTest
#if arch(x86_64)
import SpoolKernelsAVX2
#endif

final class MatmulTests: XCTestCase {
    /// (rows, cols, tokens): cols off the 4/8 vector width, rows off the 3/4-row tiles and the
    /// 96-row chunk, tokens 1, 3, 5, 17 and across the 128-token chunk, cols across the 512 K block.
    static let shapes: [(Int, Int, Int)] = [
        (1, 1, 1), (1, 7, 1), (5, 13, 3), (7, 33, 5), (10, 64, 17), (13, 100, 4), (96, 576, 1),
        (97, 577, 2), (100, 1030, 5), (193, 96, 130), (3, 9, 8), (4, 16, 7), (50, 513, 17), (2, 1536, 3),
        (37, 1030, 41), (17, 5, 33), (1, 64, 40),
    ]

    func check(
        _ w: [Float], _ x: [Float], rows: Int, cols: Int, tokens: Int, _ y: [Float],
        _ label: String, file: StaticString = #filePath, line: UInt = #line
    ) {
        var ref = [Float](repeating: 0, count: rows * tokens)
        Reference.matmul(w, rows: rows, cols: cols, x, tokens: tokens, into: &ref)
        var worst: Float = 0
        for t in 0..<tokens {
            for r in 0..<rows {
                var mag: Float = 0
                for c in 0..<cols { mag += abs(w[r * cols + c] * x[t * cols + c]) }
                let err = abs(y[t * rows + r] - ref[t * rows + r]) / max(mag, .leastNormalMagnitude)
                worst = max(worst, err)
            }
        }
        XCTAssertLessThanOrEqual(worst, MAX_MATMUL_REL_ERROR, "\(label) rows \(rows) cols \(cols) tokens \(tokens)", file: file, line: line)
    }

    func testMatmulMatchesReferenceOnEveryLevelAndThreadCount() {
        var rng = TestRandom(seed: 1)
        let pools = [ThreadPool(threads: 1), ThreadPool(threads: 2), ThreadPool(threads: 3)]
        for (rows, cols, tokens) in Self.shapes {
            let w = rng.floats(rows * cols), x = rng.floats(tokens * cols)
            for level in testLevels {
                for pool in pools {
                    var y = [Float](repeating: .nan, count: rows * tokens)
                    Kernels.matmul(w, rows: rows, cols: cols, x, tokens: tokens, into: &y, pool: pool, level: level)
                    check(w, x, rows: rows, cols: cols, tokens: tokens, y, "\(level) threads \(pool.threadCount)")
                }
            }
        }
    }

    func testGenericLevelIsAlwaysSupportedAndExplicit() {
        XCTAssertTrue(KernelLevel.generic.isSupported)
        XCTAssertEqual(KernelLevel.supported.first, .generic)
        var rng = TestRandom(seed: 2)
        let (rows, cols, tokens) = (37, 201, 6)
        let w = rng.floats(rows * cols), x = rng.floats(tokens * cols)
        var y = [Float](repeating: .nan, count: rows * tokens)
        Kernels.matmul(w, rows: rows, cols: cols, x, tokens: tokens, into: &y, pool: ThreadPool(threads: 2), level: .generic)
        check(w, x, rows: rows, cols: cols, tokens: tokens, y, "generic")
    }

    /// The AVX2 module's entry points called directly, not through the dispatcher.
    func testAVX2BlocksDirectly() throws {
        #if arch(x86_64)
        try XCTSkipUnless(KernelLevel.avx2.isSupported, "CPU lacks AVX2+FMA")
        var rng = TestRandom(seed: 3)
        for (rows, cols, tokens) in Self.shapes {
            let w = rng.floats(rows * cols), x = rng.floats(tokens * cols)
            var y = [Float](repeating: .nan, count: rows * tokens)
            // Two uneven blocks per dimension, as threads would get them.
            let rs = rows / 2, ts = tokens / 2
            for rr in [0..<rs, rs..<rows] {
                for tr in [0..<ts, ts..<tokens] {
                    MatmulAVX2.matmulBlock(w, rows: rows, cols: cols, x, into: &y, rowRange: rr, tokenRange: tr)
                }
            }
            check(w, x, rows: rows, cols: cols, tokens: tokens, y, "avx2 block")
            // Both forms on every shape, whatever the block size would pick.
            y = [Float](repeating: .nan, count: rows * tokens)
            MatmulAVX2.matmulDot(w, rows: rows, cols: cols, x, into: &y, rowRange: 0..<rs, tokenRange: 0..<tokens)
            MatmulAVX2.matmulDot(w, rows: rows, cols: cols, x, into: &y, rowRange: rs..<rows, tokenRange: 0..<tokens)
            check(w, x, rows: rows, cols: cols, tokens: tokens, y, "avx2 dot")
            y = [Float](repeating: .nan, count: rows * tokens)
            MatmulAVX2.matmulPacked(w, rows: rows, cols: cols, x, into: &y, rowRange: 0..<rows, tokenRange: 0..<ts)
            MatmulAVX2.matmulPacked(w, rows: rows, cols: cols, x, into: &y, rowRange: 0..<rows, tokenRange: ts..<tokens)
            check(w, x, rows: rows, cols: cols, tokens: tokens, y, "avx2 packed")
            var v = [Float](repeating: .nan, count: rows)
            MatmulAVX2.matvecBlock(w, cols: cols, x, into: &v, rowRange: 0..<rs)
            MatmulAVX2.matvecBlock(w, cols: cols, x, into: &v, rowRange: rs..<rows)
            check(w, Array(x[0..<cols]), rows: rows, cols: cols, tokens: 1, v, "avx2 matvec")
        }
        #else
        throw XCTSkip("not x86_64")
        #endif
    }

    func testEmptyShapes() {
        let pool = ThreadPool(threads: 2)
        var y: [Float] = [5, 5]
        Kernels.matmul([], rows: 2, cols: 0, [], tokens: 1, into: &y, pool: pool)
        XCTAssertEqual(y, [0, 0])
        Kernels.matmul([], rows: 0, cols: 3, [1, 2, 3], tokens: 1, into: &y, pool: pool)
        Kernels.matmul([1, 2, 3], rows: 1, cols: 3, [], tokens: 0, into: &y, pool: pool)
        XCTAssertEqual(y, [0, 0])
    }

    func testSelectionFromEnvironmentValues() {
        XCTAssertEqual(KernelLevel.select(kernels: "generic", disableSIMD: nil), .generic)
        XCTAssertEqual(KernelLevel.select(kernels: nil, disableSIMD: "1"), .generic)
        XCTAssertEqual(KernelLevel.select(kernels: "avx2", disableSIMD: "1"), .generic)
        XCTAssertEqual(KernelLevel.select(kernels: "nonsense", disableSIMD: nil), .generic)
        XCTAssertEqual(KernelLevel.select(kernels: nil, disableSIMD: "0"), KernelLevel.supported.last)
        XCTAssertEqual(KernelLevel.select(kernels: "AVX2", disableSIMD: nil), KernelLevel.avx2.isSupported ? .avx2 : .generic)
        XCTAssertTrue(KernelLevel.selected.isSupported)
    }
}
