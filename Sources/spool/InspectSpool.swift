import ArgumentParser
import Foundation
import SpoolFormat

/// `spool inspect` for .spool files: header summary, extents, bits per tensor, sizes, checksums.
enum InspectSpool {
    static func run(path: String, listTensors: Bool) throws {
        let f = try SpoolFile(path: path)
        let h = f.header
        let q = h.quantization
        let p = h.hyperparameters
        print(".spool v\(f.version), header \(f.dataOffset) B (data at \(f.dataOffset)), \(h.extents.count) extents, \(h.tensors.count) tensors, \(f.file.bytes.count) B (\(String(format: "%.2f", Double(f.file.bytes.count) / 1048576)) MiB)")
        print("  architecture \(h.architecture): \(p.layers) layers, dim \(p.dim), ffn \(p.ffnDim), heads \(p.heads)/\(p.kvHeads) kv, head dim \(p.headDim), vocab \(p.vocabSize), context \(p.contextLength)")
        print("  tokenizer \(h.tokenizer.model)/\(h.tokenizer.pre ?? "default"): \(h.tokenizer.tokens.count) tokens, \(h.tokenizer.merges.count) merges, bos \(h.tokenizer.bosId.map(String.init) ?? "-"), eos \(h.tokenizer.eosId.map(String.init) ?? "-"), chat template \(h.chatTemplate == nil ? "no" : "yes")")
        var method = "  quantization: \(q.method) \(q.bits)-bit group \(q.group)"
        if !q.overrides.isEmpty { method += ", overrides " + q.overrides.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",") }
        if let c = q.calibration { method += ", calibration \(c) (\(q.calibrationTokens ?? 0) tokens)" }
        if let g = q.groupOverrides, !g.isEmpty { method += ", group overrides " + g.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",") }
        // Damping comes from a Float option: %g prints 0.01 rather than its double expansion.
        if let d = q.damping { method += String(format: ", damping %g", d) }
        if let d = q.headDamping { method += String(format: ", head damping %g", d) }
        if q.actOrder { method += ", act-order" }
        if let r = q.refitRounds { method += ", grid refit \(r) round\(r == 1 ? "" : "s")" }
        if q.trueSequential == true { method += ", true-sequential" }
        if q.weightedGrid == false { method += ", unweighted grids" }
        if let m = q.maxSize { method += String(format: ", max size %.2f MiB", Double(m) / 1048576) }
        if let r = h.rotation { method += ", rotated (\(r.method), seed \(r.seed)\(r.valueHeads ? ", value heads" : ""))" }
        print(method)
        print("  ffn layout \(h.ffnLayout), exit adapters \(h.exitAdapters?.count ?? 0)")
        var bad = 0
        var byBits: [Int: (Int, Int, Int)] = [:]  // bits -> (tensors, params, bytes)
        for (i, e) in h.extents.enumerated() {
            var status = "ok"
            do { try f.verifyExtent(i) } catch {
                status = "DAMAGED: \(error)"
                bad += 1
            }
            print(String(format: "  extent %-12@ @%-10d %9d B  crc32c %@  %@", e.name, e.offset, e.length, e.crc32c, status))
            for t in f.tensors(inExtent: i) {
                let n = t.shape.reduce(1, *)
                let v = byBits[t.bits, default: (0, 0, 0)]
                byBits[t.bits] = (v.0 + 1, v.1 + n, v.2 + t.length)
                if listTensors {
                    let enc = t.bits == QuantLayout.floatBits ? "f32" : "q\(t.bits)/g\(t.group)\(t.compactGrid ? "c" : "")"
                    print(String(format: "    %-28@ %-12@ %-7@ +%-8d %9d B  %.3f bits/weight", t.name, "\(t.shape)", enc, t.offset, t.length, Double(8 * t.length) / Double(n)))
                }
            }
        }
        for (bits, v) in byBits.sorted(by: { $0.key < $1.key }) {
            let enc = bits == QuantLayout.floatBits ? "f32" : "\(bits)-bit"
            print(String(format: "  %@: %d tensors, %d weights, %.2f MiB, %.3f bits/weight", enc, v.0, v.1, Double(v.2) / 1048576, Double(8 * v.2) / Double(v.1)))
        }
        print(bad == 0 ? "  checksums: all \(h.extents.count) extents ok" : "  checksums: \(bad) of \(h.extents.count) extents DAMAGED")
        if bad > 0 { throw ExitCode.failure }
    }
}
