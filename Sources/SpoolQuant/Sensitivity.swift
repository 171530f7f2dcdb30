import Foundation
import SpoolFormat
import SpoolKernels
import SpoolModel

/// How much each layer matrix hurts at each candidate width, measured once per model and
/// calibration set (saved as JSON, so one measurement serves any number of size budgets).
///
/// The unit is the noise a matrix adds to the model's final normed hidden state (what the LM head
/// reads), relative to that state: first E‖Δh‖² / E‖h‖² at the block's output when that matrix
/// alone is quantized (the next block reads the stream through an RMS norm, so this relative size
/// is what it sees), then times the block's measured propagation factor (how much of a relative
/// stream error at that block survives to the final norm). Summing over matrices assumes their
/// noises add independently; that, and the first-order scaling between widths, are the estimate's
/// assumptions.
public struct SensitivityTable: Codable, Sendable {
    public struct Entry: Codable, Sendable {
        public var name: String
        public var shape: [Int]
        /// "BITS/GROUP" -> relative residual-stream error.
        public var errors: [String: Double]
        /// Block output error per unit of the matrix's own output error tr(ΔW H ΔWᵀ), measured at
        /// `reference`: it converts one into the other for the other widths.
        public var gain: Double
        public var reference: String
        /// How the block's noise grows (> 1) or fades (< 1) on its way to the final norm, relative
        /// error out per relative error in, measured with the whole block at its reference widths;
        /// `errors` already include it (nil in tables measured without it).
        public var propagation: Double?
    }

    public var method: String
    public var calibrationTokens: Int
    public var entries: [Entry]

    public init(method: String, calibrationTokens: Int, entries: [Entry]) {
        self.method = method
        self.calibrationTokens = calibrationTokens
        self.entries = entries
    }

    public func encoded() throws -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .prettyPrinted]
        return try enc.encode(self)
    }

    public static func decode(_ data: Data) throws -> SensitivityTable {
        try JSONDecoder().decode(SensitivityTable.self, from: data)
    }

    /// Allocation items: every entry with each of `choices` it was measured at, costed in bytes as
    /// stored inside an extent (tensors are 64-byte aligned).
    public func items(choices: [QuantChoice]) throws -> [AllocationItem] {
        try entries.map { e in
            // A width whose group does not divide the tensor's rows (g128 on 576 columns) is not a candidate.
            let candidates = try choices.compactMap { c -> AllocationItem.Candidate? in
                guard let bytes = QuantLayout.tensorBytes(shape: e.shape, bits: c.bits, group: c.group, compactGrid: c.compact) else { return nil }
                // A compact width the table was not measured at takes its float16 twin's figure:
                // the codes' own rounding is then left out of the estimate (docs/QUANT.md).
                guard let err = e.errors[c.description] ?? (c.compact ? e.errors[c.plain.description] : nil) else { throw SensitivityError.notMeasured(tensor: e.name, choice: c.description) }
                return AllocationItem.Candidate(choice: c, bytes: QuantLayout.align(bytes, QuantLayout.tensorAlignment), error: err)
            }
            return AllocationItem(name: e.name, candidates: candidates)
        }
    }
}

public enum SensitivityError: Error, CustomStringConvertible {
    case notMeasured(tensor: String, choice: String)
    case noCalibration

    public var description: String {
        switch self {
        case let .notMeasured(t, c): return "the sensitivity table has no figure for \(t) at \(c): measure again with that width"
        case .noCalibration: return "measuring sensitivity needs calibration sequences"
        }
    }
}

extension Packer {
    /// Measures `SensitivityTable` for every layer matrix at every choice in `choices`.
    ///
    /// Per block, on the float model's hidden states: the Hessian of each matrix input (all
    /// calibration sequences), then each matrix quantized at each choice (GPTQ or RTN, as the pack
    /// would) and its output error tr(ΔW H ΔWᵀ). One block run per matrix, with that matrix alone
    /// quantized at the reference width and on the first `gainSequences` sequences, converts that
    /// into residual-stream error: the measured ratio scales the other widths (a first-order
    /// estimate, exact for ffn_down, whose output is added to the stream as is).
    public func measureSensitivity(calibration seqs: [[Int32]], choices: [QuantChoice], gainSequences: Int = 2,
                                   progress: (Int, Int, String) -> Void) throws -> SensitivityTable {
        guard !seqs.isEmpty else { throw SensitivityError.noCalibration }
        let c = configuration
        let embd = try floats("token_embd.weight")
        var hidden: [[Float]] = seqs.map { s in
            var x = [Float](repeating: 0, count: s.count * c.dim)
            x.withUnsafeMutableBufferPointer { xb in for (t, id) in s.enumerated() { embd.row(Int(id), into: xb.baseAddress! + t * c.dim) } }
            return x
        }
        let cache = LlamaModel.calibrationCache(c, tokens: seqs.map(\.count).max() ?? 1)
        let probe = Array(hidden.indices.prefix(max(1, gainSequences)))
        let probeTokens = probe.reduce(0) { $0 + seqs[$1].count }
        var entries: [SensitivityTable.Entry] = []
        // Per measured block: its relative stream error at the reference widths, and the probe
        // streams carrying that noise on through the later (float) blocks.
        var perturbed: [(layer: Int, local: Double, streams: [[Float]])] = []

        for li in 0..<c.layers {
            let t0 = Date()
            progress(li, c.layers, "blk.\(li)")
            let p = "blk.\(li)."
            let attnNorm = try vector(p + "attn_norm.weight")
            let ffnNorm = try vector(p + "ffn_norm.weight")
            var w: [String: DenseWeight] = [:]
            for s in Self.matrixStems { w[s] = try floats(p + s + ".weight") }
            func block(_ m: [String: DenseWeight]) -> LlamaLayer {
                LlamaLayer.make(attnNorm: attnNorm, wq: m["attn_q"]!, wk: m["attn_k"]!, wv: m["attn_v"]!, wo: m["attn_output"]!,
                                ffnNorm: ffnNorm, wGate: m["ffn_gate"]!, wUp: m["ffn_up"]!, wDown: m["ffn_down"]!)
            }
            var hessians: [LinearInput: HessianAccumulator] = [:]
            for input in LinearInput.allCases { hessians[input] = HessianAccumulator(cols: input == .ffnDown ? c.ffnDim : (input == .attentionOutput ? c.qDim : c.dim)) }
            let floatLayer = block(w)
            // The probe sequences' block inputs (probe is 0..<k), kept to rerun the block with one matrix quantized.
            let inputs = probe.map { hidden[$0] }
            // Earlier blocks' perturbed streams move one block on, through this float block.
            for k in perturbed.indices {
                for (j, sIdx) in probe.enumerated() {
                    try perturbed[k].streams[j].withUnsafeMutableBufferPointer { yb in
                        try floatLayer.runCalibration(yb.baseAddress!, tokens: seqs[sIdx].count, configuration: c, cache: cache, pool: pool) { _, _, _ in }
                    }
                }
            }
            for s in hidden.indices {
                let n = seqs[s].count
                try hidden[s].withUnsafeMutableBufferPointer { yb in
                    try floatLayer.runCalibration(yb.baseAddress!, tokens: n, configuration: c, cache: cache, pool: pool) { input, ptr, _ in
                        hessians[input]!.add(ptr, tokens: n, pool: pool)
                    }
                }
            }
            // hidden now holds the float block's output: the next block's input and the reference.
            var streamEnergy = 0.0
            for s in probe { for v in hidden[s] { streamEnergy += Double(v) * Double(v) } }
            streamEnergy /= Double(probeTokens)

            var factors: [LinearInput: GPTQ.Factor] = [:]
            var referenceWeights = w
            var line = String(format: "blk.%-2d", li)
            for stem in Self.matrixStems {
                let input = Self.linearInput(of: stem), name = p + stem + ".weight"
                let h = hessians[input]!.matrix
                let weight = w[stem]!
                if options.method == .gptq, factors[input] == nil {
                    factors[input] = try GPTQ.factor(hessian: h, cols: weight.cols, options: options.gptq, name: name)
                }
                var outputError: [QuantChoice: Double] = [:]
                var dequantized: [QuantChoice: [Float]] = [:]
                let choices = choices.filter { weight.cols % $0.group == 0 }
                for choice in choices {
                    let q: QuantizedMatrix
                    if let f = factors[input] {
                        q = try GPTQ.quantize(weight.pointer, rows: weight.rows, cols: weight.cols, factor: f, spec: choice.spec, options: options.gptq, pool: pool, name: name)
                    } else {
                        q = try RTN.quantize(weight.pointer, rows: weight.rows, cols: weight.cols, spec: choice.spec, name: name)
                    }
                    var dq = q.dequantized()
                    for i in 0..<dq.count { dq[i] = weight.pointer[i] - dq[i] }
                    outputError[choice] = dq.withUnsafeBufferPointer { hessianQuadratic($0.baseAddress!, rows: weight.rows, cols: weight.cols, hessian: h, pool: pool) }
                    for i in 0..<dq.count { dq[i] = weight.pointer[i] - dq[i] }
                    dequantized[choice] = dq
                }
                // Reference: 3/64 when measured (mid-range noise, where the first-order estimate
                // holds), else the noisiest choice; a width with zero error cannot calibrate a ratio.
                let reference = choices.first { $0.bits == 3 && $0.group == 64 && outputError[$0]! > 0 }
                    ?? choices.filter { outputError[$0]! > 0 }.max { outputError[$0]! < outputError[$1]! }
                var gain = 0.0
                if let reference {
                    referenceWeights[stem] = Self.dense(weight.rows, weight.cols, dequantized[reference]!)
                    var m = w
                    m[stem] = Self.dense(weight.rows, weight.cols, dequantized[reference]!)
                    let qLayer = block(m)
                    var noise = 0.0
                    for s in probe {
                        let n = seqs[s].count
                        var y = inputs[s]
                        try y.withUnsafeMutableBufferPointer { yb in
                            try qLayer.runCalibration(yb.baseAddress!, tokens: n, configuration: c, cache: cache, pool: pool) { _, _, _ in }
                        }
                        for i in 0..<y.count { let d = Double(y[i] - hidden[s][i]); noise += d * d }
                    }
                    gain = noise / Double(probeTokens) / outputError[reference]!
                }
                var errors: [String: Double] = [:]
                for choice in choices { errors[choice.description] = gain * outputError[choice]! / streamEnergy }
                entries.append(.init(name: name, shape: [weight.rows, weight.cols], errors: errors, gain: gain, reference: reference?.description ?? "-"))
                if let r = reference { line += String(format: " %@ %.1e", stem, errors[r.description]!) }
            }
            // The whole block at its reference widths starts a perturbed stream, followed to the
            // model's end to see how later blocks carry this block's noise.
            let qBlock = block(referenceWeights)
            var streams: [[Float]] = []
            var local = 0.0
            for (j, sIdx) in probe.enumerated() {
                var y = inputs[j]
                try y.withUnsafeMutableBufferPointer { yb in
                    try qBlock.runCalibration(yb.baseAddress!, tokens: seqs[sIdx].count, configuration: c, cache: cache, pool: pool) { _, _, _ in }
                }
                for i in 0..<y.count { let d = Double(y[i] - hidden[sIdx][i]); local += d * d }
                streams.append(y)
            }
            perturbed.append((layer: li, local: local / Double(probeTokens) / streamEnergy, streams: streams))
            log(line + String(format: "  (%.1fs, relative residual error at the reference width)", Date().timeIntervalSince(t0)))
        }
        // Propagation: relative error of the final normed hidden state per unit of relative
        // stream error where the noise entered. Each block's figures are scaled by its factor.
        let outputNorm = try vector("output_norm.weight")
        func normed(_ x: [Float], tokens n: Int) -> [Float] {
            var out = [Float](repeating: 0, count: x.count)
            x.withUnsafeBufferPointer { h in
                out.withUnsafeMutableBufferPointer { Kernels.rmsNorm(h.baseAddress!, weight: outputNorm, n: c.dim, tokens: n, eps: c.normEps, into: $0.baseAddress!) }
            }
            return out
        }
        let clean = probe.map { normed(hidden[$0], tokens: seqs[$0].count) }
        var cleanEnergy = 0.0
        for v in clean.joined() { cleanEnergy += Double(v) * Double(v) }
        var factorLine = "propagation to the output:"
        for p in perturbed {
            var noise = 0.0
            for (j, sIdx) in probe.enumerated() {
                let y = normed(p.streams[j], tokens: seqs[sIdx].count)
                for i in 0..<y.count { let d = Double(y[i] - clean[j][i]); noise += d * d }
            }
            let factor = p.local > 0 ? noise / cleanEnergy / p.local : 1
            factorLine += String(format: " %d:%.2f", p.layer, factor)
            for k in entries.indices where entries[k].name.hasPrefix("blk.\(p.layer).") {
                entries[k].propagation = factor
                for (key, v) in entries[k].errors { entries[k].errors[key] = v * factor }
            }
        }
        log(factorLine)
        progress(c.layers, c.layers, "done")
        return SensitivityTable(method: options.method.rawValue, calibrationTokens: seqs.reduce(0) { $0 + $1.count }, entries: entries)
    }
}
