import Foundation
import SpoolFormat
import SpoolKernels
import SpoolModel
@testable import SpoolQuant
import SpoolRuntime
import XCTest

/// Largest |logit difference| between a float .spool packed with --rotate and its float GGUF source,
/// relative to the largest |logit|: the rotation is exact in real arithmetic, so only float32
/// rounding of the rotated weights and of the reordered sums remains.
let MAX_ROTATED_FLOAT_LOGIT_REL_DIFF: Float = 1e-4

final class RotationTests: XCTestCase {
    func testHadamardRotationIsOrthogonalForNonPowerOfTwoWidths() throws {
        for width in [64, 576, 12, 20] {
            let r = try HadamardRotation(width: width, seed: 3, what: "test")
            let q = r.matrix()
            var worst: Float = 0
            for i in 0..<width {
                for j in 0..<width {
                    var s: Float = 0
                    for k in 0..<width { s += q[i * width + k] * q[j * width + k] }
                    worst = max(worst, abs(s - (i == j ? 1 : 0)))
                }
            }
            XCTAssertLessThan(worst, 1e-5, "Q Qᵀ = I at width \(width)")
            // Every entry is ±1/sqrt(n): a Hadamard matrix, not just any orthogonal one.
            XCTAssertTrue(q.allSatisfy { abs(abs($0) * Float(width).squareRoot() - 1) < 1e-5 }, "width \(width)")
            var x = (0..<width).map { Float($0 % 7) - 3 }
            let x0 = x
            x.withUnsafeMutableBufferPointer { r.rotate($0.baseAddress!); r.rotateBack($0.baseAddress!) }
            XCTAssertLessThan(zip(x, x0).map { abs($0 - $1) }.max()!, 1e-5)
        }
        XCTAssertEqual(HadamardFactor.factors(order: 576)?.map(\.order).filter { $0 > 2 }, [12, 12])
        XCTAssertEqual(HadamardFactor.factors(order: 960)?.map(\.order).filter { $0 > 2 }, [12, 20])
        XCTAssertThrowsError(try HadamardRotation(width: 90, seed: 1, what: "residual")) { e in
            XCTAssertEqual(e as? RotationError, .noHadamard(width: 90, what: "residual"))
        }
        // Different seeds, different signs.
        XCTAssertNotEqual(try HadamardRotation(width: 64, seed: 1, what: "").matrix(), try HadamardRotation(width: 64, seed: 2, what: "").matrix())
    }

    /// Packs with RTN (no calibration), optionally rotated.
    func pack(_ gguf: String, bits: Int, keep: [String: Int] = [:], rotationSeed: UInt64? = nil) throws -> String {
        let out = NSTemporaryDirectory() + "rot-\(UUID().uuidString).spool"
        let file = try GGUFFile(path: gguf)
        var options = PackOptions(spec: try QuantSpec(bits: bits, group: 64), method: .rtn, keep: keep)
        options.rotationSeed = rotationSeed
        let packer = try Packer(gguf: file, options: options, pool: ThreadPool(threads: 2), log: { _ in })
        let c = try LlamaConfiguration(gguf: file)
        let header = SpoolHeader(architecture: "llama", hyperparameters: c.spoolHyperparameters, tokenizer: try SpoolTokenizerInfo(gguf: file),
                                 chatTemplate: nil, quantization: SpoolQuantization(method: "rtn", bits: bits, group: 64))
        _ = try packer.pack(to: out, header: header, calibration: []) { _, _, _ in }
        return out
    }

    func logits(_ path: String) throws -> [Float] {
        let engine = try Engine(path: path, options: EngineOptions(threads: 2))
        let cache = engine.model.makeCache(capacity: 64)
        return try engine.model.forward(tokens, start: 0, cache: cache, logits: .all, pool: engine.pool).values
    }
    let tokens: [Int32] = [256] + Array("Rotate me, please! 0123456789".utf8).map { Int32($0) }

    func relativeDiff(_ a: [Float], _ b: [Float]) -> Float {
        zip(a, b).map { abs($0 - $1) }.max()! / a.map(abs).max()!
    }

    /// The rotated float model computes the original function, untied and tied head alike.
    func testRotatedFloatPackMatchesSource() throws {
        for tied in [false, true] {
            let gguf = try PackEndToEndTests.tinyGGUF(tied: tied)
            defer { try? FileManager.default.removeItem(atPath: gguf) }
            let keep = ["blk.": 32, "embed": 32, "output": 32, "output_rotation": 32]
            let rotated = try pack(gguf, bits: 8, keep: keep, rotationSeed: 11)
            let plain = try pack(gguf, bits: 8, keep: keep)
            defer { for p in [rotated, plain] { try? FileManager.default.removeItem(atPath: p) } }
            let f = try SpoolFile(path: rotated)
            XCTAssertNotNil(f.header.rotation)
            XCTAssertEqual(f.tensor(named: SpoolRotation.headTensor) != nil, tied, "head matrix only for a tied head")
            // The weights really changed (the norms are ones, the embedding is rotated).
            let norm = try f.data(of: f.requireTensor("blk.0.attn_norm.weight"))
            XCTAssertEqual(norm.load(as: UInt32.self), Float(1).bitPattern)

            let source = try logits(gguf)
            let r = try logits(rotated)
            let p = try logits(plain)
            XCTAssertLessThan(relativeDiff(source, p), 1e-6, "unrotated float pack, tied \(tied)")
            XCTAssertLessThan(relativeDiff(source, r), MAX_ROTATED_FLOAT_LOGIT_REL_DIFF, "rotated float pack, tied \(tied)")
        }
    }

    /// 8-bit packs with and without --rotate both stay within the 8-bit bound of the source (tied
    /// head: the 8-bit head matrix is in the path).
    func testRotated8BitPackIsCloseToUnrotated() throws {
        let gguf = try PackEndToEndTests.tinyGGUF(tied: true)
        defer { try? FileManager.default.removeItem(atPath: gguf) }
        let rotated = try pack(gguf, bits: 8, rotationSeed: 5)
        let plain = try pack(gguf, bits: 8)
        defer { for p in [rotated, plain] { try? FileManager.default.removeItem(atPath: p) } }
        XCTAssertEqual(try SpoolFile(path: rotated).tensor(named: SpoolRotation.headTensor)?.bits, 8)
        let source = try logits(gguf)
        let r = try logits(rotated)
        let p = try logits(plain)
        XCTAssertLessThan(relativeDiff(source, p), MAX_8BIT_LOGIT_REL_DIFF)
        XCTAssertLessThan(relativeDiff(source, r), MAX_8BIT_LOGIT_REL_DIFF)
        XCTAssertLessThan(relativeDiff(p, r), MAX_8BIT_LOGIT_REL_DIFF)
    }
}
