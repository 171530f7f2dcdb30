import Foundation
import SpoolFormat
import SpoolKernels
import SpoolModel
@testable import SpoolQuant

/// Packs a GGUF Llama model into a .spool file the fast way, for tests of the .spool reading paths:
/// the packer's tensor plan and `SpoolWriter` (so the layout is the real one), but each group's
/// grid is its plain min/max (no clipping search, no error statistics), rows split across threads.
/// The weights are close enough to the model's for its greedy text to stay meaningful; the tests
/// compare a .spool against itself, resident and streamed.
enum QuickPack {
    static func pack(gguf path: String, to out: String, bits: Int = 4, group: Int = 64) throws {
        let gguf = try GGUFFile(path: path)
        let pool = ThreadPool(threads: 2)
        let spec = try QuantSpec(bits: bits, group: group)
        let packer = try Packer(gguf: gguf, options: PackOptions(spec: spec, method: .rtn), pool: pool, log: { _ in })
        let c = try LlamaConfiguration(gguf: gguf)
        let header = SpoolHeader(architecture: c.architecture, hyperparameters: c.spoolHyperparameters,
                                 tokenizer: try SpoolTokenizerInfo(gguf: gguf), chatTemplate: try gguf.string("tokenizer.chat_template"),
                                 quantization: SpoolQuantization(method: "rtn", bits: bits, group: group, source: (path as NSString).lastPathComponent))
        let plan = packer.plan()
        let writer = try SpoolWriter(path: out, header: header, plan: plan)
        for (i, extent) in plan.enumerated() {
            let data = try extent.tensors.map { t in try encode(gguf, t, pool: pool) }
            try writer.writeExtent(i, tensors: data)
        }
        try writer.finish()
    }

    static func encode(_ gguf: GGUFFile, _ t: SpoolTensor, pool: ThreadPool) throws -> [UInt8] {
        let w = try DenseWeight(gguf: gguf, tensor: try gguf.requireTensor(t.name))
        return try withExtendedLifetime(w) {
            let n = w.rows * w.cols
            if t.bits == QuantLayout.floatBits {
                var out = [UInt8](repeating: 0, count: n * 4)
                out.withUnsafeMutableBytes { b in
                    for i in 0..<n { b.storeBytes(of: w.pointer[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
                }
                return out
            }
            let spec = try QuantSpec(bits: t.bits, group: t.group)
            var q = QuantizedMatrix(rows: w.rows, cols: w.cols, spec: spec)
            let gpr = w.cols / spec.group, cols = w.cols
            q.q.withUnsafeMutableBufferPointer { qb in
                q.grids.withUnsafeMutableBufferPointer { gb in
                    let qp = qb.baseAddress!, gp = gb.baseAddress!
                    pool.parallelFor(w.rows) { r in
                        for g in 0..<gpr {
                            let base = w.pointer + r * cols + g * spec.group
                            var lo = Float.infinity, hi = -Float.infinity
                            for i in 0..<spec.group { lo = min(lo, base[i]); hi = max(hi, base[i]) }
                            let grid = GroupGrid.make(lo: lo, hi: hi, maxQ: spec.maxQ)
                            gp[r * gpr + g] = grid
                            for i in 0..<spec.group { qp[r * cols + g * spec.group + i] = UInt8(grid.quantize(base[i], maxQ: spec.maxQ)) }
                        }
                    }
                }
            }
            return q.packed()
        }
    }
}
