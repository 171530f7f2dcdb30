import Foundation
import SpoolFormat
import SpoolKernels
import SpoolModel
@testable import SpoolQuant
import XCTest

/// `PackOptions.headDamping` (`spool-pack --head-damp`): GPTQ damping of the LM head alone.
final class HeadDampingTests: XCTestCase {
    typealias LCG = PackedWeightTests.LCG

    static func plainError(_ w: [Float], _ q: [Float]) -> Double {
        zip(w, q).reduce(0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
    }

    /// The trade damping makes: little damping minimizes the error on the calibration inputs
    /// (what the head's logits see), much damping the plain weight error (what an embedding
    /// lookup sees). Both directions must hold, by a clear margin, on correlated inputs.
    func testDampingTradesOutputErrorForWeightError() throws {
        let pool = ThreadPool(threads: 2)
        let (w, _, acc, rows, cols, _) = GPTQTests.correlatedProblem(seed: 21, pool: pool)
        for bits in [3, 4] {
            let spec = try QuantSpec(bits: bits, group: 64)
            func run(_ damping: Float) throws -> (output: Double, weight: Double) {
                let q = try GPTQ.quantize(w, rows: rows, cols: cols, hessian: acc.matrix, spec: spec,
                                          options: GPTQOptions(damping: damping), pool: pool).dequantized()
                return (relativeOutputError(original: w, quantized: q, rows: rows, cols: cols, hessian: acc.matrix), Self.plainError(w, q))
            }
            let low = try run(0.01), high = try run(100)
            XCTAssertLessThan(low.output, 0.8 * high.output, "bits \(bits): output error, damping 0.01 vs 100")
            XCTAssertLessThan(high.weight, 0.8 * low.weight, "bits \(bits): weight error, damping 100 vs 0.01")
            // λ → ∞ approaches round-to-nearest's plain error (RTN fits its grids on exactly that).
            let rtn = Self.plainError(w, try RTN.quantize(w, rows: rows, cols: cols, spec: spec).dequantized())
            XCTAssertLessThan(high.weight, 1.1 * rtn, "bits \(bits): damping 100 vs RTN weight error")
        }
    }

    /// Packs the tiny tied model with GPTQ at 4 bits and the given head damping; returns the path.
    func pack(_ gguf: String, headDamping: Float?) throws -> String {
        let out = NSTemporaryDirectory() + "tiny-hd-\(UUID().uuidString).spool"
        let file = try GGUFFile(path: gguf)
        var options = PackOptions(spec: try QuantSpec(bits: 4, group: 64), method: .gptq)
        options.headDamping = headDamping
        let packer = try Packer(gguf: file, options: options, pool: ThreadPool(threads: 2), log: { _ in })
        let c = try LlamaConfiguration(gguf: file)
        let header = SpoolHeader(architecture: "llama", hyperparameters: c.spoolHyperparameters, tokenizer: try SpoolTokenizerInfo(gguf: file),
                                 chatTemplate: nil, quantization: SpoolQuantization(method: "gptq", bits: 4, group: 64))
        let calib = (0..<24).map { PackEndToEndTests.randomSequence(seed: UInt64(5 + $0)) }
        _ = try packer.pack(to: out, header: header, calibration: calib) { _, _, _ in }
        return out
    }

    /// The option reaches the tied head and nothing else: every layer tensor is byte-identical,
    /// the embedding differs, and with heavy head damping the stored embedding is closer to the
    /// source's in plain weight error (what its lookups read).
    func testHeadDampingChangesOnlyTheTiedHead() throws {
        let gguf = try PackEndToEndTests.tinyGGUF(tied: true)
        let base = try pack(gguf, headDamping: nil), damped = try pack(gguf, headDamping: 100)
        defer { for p in [gguf, base, damped] { try? FileManager.default.removeItem(atPath: p) } }
        let a = try SpoolFile(path: base), b = try SpoolFile(path: damped)
        for t in a.header.tensors where t.name != "token_embd.weight" {
            let tb = try XCTUnwrap(b.tensor(named: t.name))
            XCTAssertEqual(Array(try a.data(of: t)), Array(try b.data(of: tb)), t.name)
        }
        let source = try GGUFFile(path: gguf)
        let e = try DenseWeight(gguf: source, tensor: try source.requireTensor("token_embd.weight"))
        let w = withExtendedLifetime(e) { Array(UnsafeBufferPointer(start: e.pointer, count: e.rows * e.cols)) }
        func stored(_ f: SpoolFile) throws -> [Float] {
            let t = try XCTUnwrap(f.tensor(named: "token_embd.weight"))
            let pw = try PackedWeight(rows: e.rows, cols: e.cols, bits: t.bits, group: t.group, bytes: try f.data(of: t), owner: f, name: t.name)
            var out = [Float](repeating: 0, count: e.rows * e.cols)
            out.withUnsafeMutableBufferPointer { o in for r in 0..<e.rows { pw.row(r, into: o.baseAddress! + r * e.cols) } }
            return out
        }
        let qa = try stored(a), qb = try stored(b)
        XCTAssertNotEqual(qa, qb)
        XCTAssertLessThan(Self.plainError(w, qb), Self.plainError(w, qa))
    }
}
