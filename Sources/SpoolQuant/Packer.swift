import Foundation
import SpoolFormat
import SpoolKernels
import SpoolModel

public enum PackMethod: String, Sendable, CaseIterable {
    case rtn, gptq
}

public struct PackOptions: Sendable {
    public var spec: QuantSpec
    public var method: PackMethod
    /// Bits per tensor overriding `spec.bits`: "embed" (token_embd), "output" (the LM head; the
    /// embedding too when they are tied), or any substring of a tensor name ("ffn_down", "attn_v").
    public var keep: [String: Int]
    /// Group size overrides, keyed like `keep` (e.g. the embedding at 4 bits in groups of 32).
    public var keepGroup: [String: Int] = [:]
    /// Exact widths by full tensor name (what `BitAllocator` chose); they take precedence over
    /// `keep` and `keepGroup`.
    public var perTensor: [String: QuantChoice] = [:]
    public var gptq: GPTQOptions
    /// Tokens per calibration sequence.
    public var sequenceLength: Int
    /// Seed of the incoherence rotation (`--rotate`, see LlamaRotation); nil: weights as in the source.
    public var rotationSeed: UInt64? = nil
    /// GPTQ damping of the LM head alone (nil: `gptq.damping`). When the head is tied, the same rows
    /// are also the input embedding, whose lookups want plain weight accuracy rather than accuracy
    /// on the head's input directions: more damping moves the head's GPTQ towards that (λ → ∞ is
    /// round-to-nearest). See docs/QUANT.md for why one uniform λ is the right form.
    public var headDamping: Float? = nil
    /// GPTQ's "true sequential" order inside a block: q/k/v are quantized first, then attn_output's
    /// Hessian is taken from the block run with the quantized q/k/v, and so on through gate/up and
    /// ffn_down, so each matrix is calibrated on the inputs it will see. Off: every Hessian of a
    /// block comes from the float block (one pass instead of four).
    public var trueSequential = false
    /// Compact grids (8-bit (d, m) codes, QuantLayout) for every quantized tensor whose width
    /// `perTensor` does not state; `perTensor` entries say so themselves ("3/32c").
    public var compactGrids = false

    /// The GPTQ options of the LM head.
    var headGPTQ: GPTQOptions {
        var o = gptq
        if let headDamping { o.damping = headDamping }
        return o
    }

    public init(spec: QuantSpec, method: PackMethod, keep: [String: Int] = [:], gptq: GPTQOptions = GPTQOptions(), sequenceLength: Int = 512) {
        self.spec = spec
        self.method = method
        self.keep = keep
        self.gptq = gptq
        self.sequenceLength = sequenceLength
    }

    static func matches(_ key: String, _ name: String, tied: Bool) -> Bool {
        switch key {
        case "embed": return name.hasPrefix("token_embd")
        case "output": return name.hasPrefix("output.") || (tied && name.hasPrefix("token_embd"))
        default: return name.contains(key)
        }
    }

    /// Bits for tensor `name` (`tied`: the embedding doubles as the LM head); the largest override wins.
    func bits(for name: String, tied: Bool) -> Int {
        if let c = perTensor[name] { return c.bits }
        return keep.filter { Self.matches($0.key, name, tied: tied) }.map(\.value).max() ?? spec.bits
    }

    /// Whether tensor `name` stores compact grids.
    func compact(for name: String) -> Bool {
        perTensor[name]?.compact ?? compactGrids
    }

    /// Group size for tensor `name`; the smallest override wins.
    func group(for name: String, tied: Bool) -> Int {
        if let c = perTensor[name] { return c.group }
        return keepGroup.filter { Self.matches($0.key, name, tied: tied) }.map(\.value).min() ?? spec.group
    }
}

/// Per-layer result for the summary.
public struct LayerReport: Sendable {
    public var layer: Int
    /// ‖ΔW x‖² / ‖W x‖² per matrix on the calibration inputs (weight-space relative error for RTN).
    public var matrixErrors: [(String, Double)]
    /// ‖block_q(x) - block_f(x)‖ / ‖block_f(x) - x‖ on the calibration sequences (GPTQ only).
    public var blockError: Double?
    public var seconds: Double
}

/// Packs a GGUF Llama model into a .spool file, one transformer block at a time.
///
/// Memory stays bounded by one block's float weights, its Hessians, and the calibration hidden
/// states (tokens x dim, twice): the source file is memory-mapped and each block's weights are
/// decoded only while that block is quantized.
public final class Packer {
    let gguf: GGUFFile
    let configuration: LlamaConfiguration
    let options: PackOptions
    let pool: ThreadPool
    let log: (String) -> Void
    let tied: Bool
    /// Applied to the float weights as each is loaded, before calibration and quantization.
    let rotation: LlamaRotation?

    public init(gguf: GGUFFile, options: PackOptions, pool: ThreadPool, log: @escaping (String) -> Void) throws {
        self.gguf = gguf
        let configuration = try LlamaConfiguration(gguf: gguf)
        self.configuration = configuration
        self.options = options
        self.pool = pool
        self.log = log
        tied = gguf.tensor(named: "output.weight") == nil
        rotation = try options.rotationSeed.map { seed throws(RotationError) in try LlamaRotation(configuration: configuration, seed: seed) }
    }

    static let layerTensors = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]

    /// The quantized matrices of a block, in file order.
    static let matrixStems = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]

    /// The activation a matrix multiplies (matrices with the same input share one Hessian).
    static func linearInput(of stem: String) -> LinearInput {
        switch stem {
        case "attn_q", "attn_k", "attn_v": return .attention
        case "attn_output": return .attentionOutput
        case "ffn_gate", "ffn_up": return .ffn
        default: return .ffnDown
        }
    }

    func shape(_ stem: String) -> [Int] {
        let c = configuration
        switch stem {
        case "attn_norm", "ffn_norm": return [c.dim]
        case "attn_q": return [c.qDim, c.dim]
        case "attn_k", "attn_v": return [c.kvDim, c.dim]
        case "attn_output": return [c.dim, c.qDim]
        case "ffn_gate", "ffn_up": return [c.ffnDim, c.dim]
        default: return [c.dim, c.ffnDim]  // ffn_down
        }
    }

    func plannedTensor(_ name: String, _ shape: [Int]) -> SpoolTensor {
        if shape.count == 1 { return SpoolTensor(name: name, shape: shape, bits: QuantLayout.floatBits, group: 0) }
        let bits = options.bits(for: name, tied: tied)
        guard bits != QuantLayout.floatBits else { return SpoolTensor(name: name, shape: shape, bits: bits, group: 0) }
        return SpoolTensor(name: name, shape: shape, bits: bits, group: options.group(for: name, tied: tied), compactGrid: options.compact(for: name))
    }

    public func plan() -> [SpoolExtentPlan] {
        let c = configuration
        var plan = [SpoolExtentPlan(name: "token_embd", layer: nil, tensors: [plannedTensor("token_embd.weight", [c.vocabSize, c.dim])])]
        for i in 0..<c.layers {
            plan.append(SpoolExtentPlan(name: "blk.\(i)", layer: i, tensors: Self.layerTensors.map { plannedTensor("blk.\(i).\($0).weight", shape($0)) }))
        }
        plan.append(SpoolExtentPlan(name: "output_norm", layer: nil, tensors: [plannedTensor("output_norm.weight", [c.dim])]))
        if !tied {
            plan.append(SpoolExtentPlan(name: "output", layer: nil, tensors: [plannedTensor("output.weight", [c.vocabSize, c.dim])]))
        }
        if let r = rotationHeadPlan() { plan.append(r) }
        return plan
    }

    /// Decodes one GGUF tensor to float32 (the source may be any type the dequantizer knows).
    func floats(_ name: String) throws -> DenseWeight {
        let t = try gguf.requireTensor(name)
        return try DenseWeight(gguf: gguf, tensor: t)
    }

    /// A float vector (norm weights), copied out while its decoded tensor is alive.
    func vector(_ name: String) throws -> [Float] {
        let w = try floats(name)
        return withExtendedLifetime(w) { Array(UnsafeBufferPointer(start: w.pointer, count: w.rows * w.cols)) }
    }

    func encode(_ name: String, _ w: DenseWeight, bits: Int, hessian: [Float]?, factor: GPTQ.Factor? = nil) throws -> (bytes: [UInt8], dequantized: [Float], error: Double) {
        if bits == QuantLayout.floatBits {
            let n = w.rows * w.cols
            var out = [UInt8](repeating: 0, count: n * 4)
            out.withUnsafeMutableBytes { b in
                for i in 0..<n { b.storeBytes(of: w.pointer[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
            }
            return (out, Array(UnsafeBufferPointer(start: w.pointer, count: n)), 0)
        }
        let spec = try QuantSpec(bits: bits, group: options.group(for: name, tied: tied), compactGrid: options.compact(for: name))
        let q: QuantizedMatrix
        if let factor, options.method == .gptq {
            q = try GPTQ.quantize(w.pointer, rows: w.rows, cols: w.cols, factor: factor, spec: spec, options: options.gptq, pool: pool, name: name)
        } else {
            q = try RTN.quantize(w.pointer, rows: w.rows, cols: w.cols, spec: spec, name: name)
        }
        let dq = q.dequantized()
        let err: Double
        if let hessian {
            err = relativeOutputError(original: w.pointer, quantized: dq, rows: w.rows, cols: w.cols, hessian: hessian, pool: pool)
        } else {
            var num = 0.0, den = 0.0
            for i in 0..<dq.count { let d = Double(w.pointer[i] - dq[i]); num += d * d; den += Double(w.pointer[i] * w.pointer[i]) }
            err = den > 0 ? num / den : 0
        }
        return (q.packed(), dq, err)
    }

    static func dense(_ rows: Int, _ cols: Int, _ values: [Float]) -> DenseWeight {
        DenseWeight(rows: rows, cols: cols, copying: values)
    }

    /// Packs the model. `calibration` holds token sequences (GPTQ only; RTN ignores it).
    public func pack(to path: String, header template: SpoolHeader, calibration: [[Int32]], progress: (Int, Int, String) -> Void) throws -> [LayerReport] {
        let c = configuration
        let plan = plan()
        let writer = try SpoolWriter(path: path, header: recordingRotation(template), plan: plan)
        var reports: [LayerReport] = []
        let totalSteps = c.layers + 2
        var step = 0

        // Token embedding. With GPTQ it is quantized last when it doubles as the LM head (tied):
        // the final hidden states give the head's Hessian. Otherwise round-to-nearest, now.
        let gptq = options.method == .gptq && !calibration.isEmpty
        progress(step, totalSteps, "token_embd")
        let embd = try rotated(embedding: floats("token_embd.weight"))
        let embBits = plan[0].tensors[0].bits
        if !(gptq && tied) {
            let e = try encode("token_embd.weight", embd, bits: embBits, hessian: nil)
            try writer.writeExtent(0, tensors: [e.bytes])
            log(String(format: "token_embd: %d-bit, relative weight error %.2e", embBits, e.error))
        }
        step += 1

        // Hidden states of every calibration sequence at the current layer's input.
        let seqs = gptq ? calibration : []
        var hidden: [[Float]] = seqs.map { s in
            var x = [Float](repeating: 0, count: s.count * c.dim)
            x.withUnsafeMutableBufferPointer { xb in for (t, id) in s.enumerated() { embd.row(Int(id), into: xb.baseAddress! + t * c.dim) } }
            return x
        }
        let maxLen = seqs.map(\.count).max() ?? 1
        let cache = LlamaModel.calibrationCache(c, tokens: maxLen)

        for li in 0..<c.layers {
            let t0 = Date()
            progress(step, totalSteps, "blk.\(li)")
            let p = "blk.\(li)."
            var attnNorm = try vector(p + "attn_norm.weight")
            var ffnNorm = try vector(p + "ffn_norm.weight")
            let stems = Self.matrixStems
            var w: [String: DenseWeight] = [:]
            for s in stems { w[s] = try floats(p + s + ".weight") }
            if let r = rotation { (attnNorm, ffnNorm, w) = r.layer(attnNorm: attnNorm, ffnNorm: ffnNorm, weights: w) }
            let floatLayer = LlamaLayer.make(attnNorm: attnNorm, wq: w["attn_q"]!, wk: w["attn_k"]!, wv: w["attn_v"]!, wo: w["attn_output"]!,
                                             ffnNorm: ffnNorm, wGate: w["ffn_gate"]!, wUp: w["ffn_up"]!, wDown: w["ffn_down"]!)
            // Pass 1 (GPTQ): float block on the current hidden states; accumulate each input's Hessian.
            var hessians: [LinearInput: HessianAccumulator] = [:]
            var floatOut: [[Float]] = []
            /// Runs `layer` on every sequence's quantized-path input and adds the inputs in `wanted`
            /// to their Hessians. A full run (`stopAfter` nil) is pass 1: it records the float
            /// block's outputs.
            func accumulate(_ layer: LlamaLayer, wanted: Set<LinearInput>, stopAfter: LinearInput?) throws {
                for s in hidden.indices {
                    let n = seqs[s].count
                    var y = hidden[s]
                    try y.withUnsafeMutableBufferPointer { yb in
                        try layer.runCalibration(yb.baseAddress!, tokens: n, configuration: c, cache: cache, pool: pool, stopAfter: stopAfter) { inp, ptr, _ in
                            guard wanted.contains(inp) else { return }
                            hessians[inp]!.add(ptr, tokens: n, pool: pool)
                        }
                    }
                    if stopAfter == nil { floatOut.append(y) }
                }
            }
            if gptq {
                for input in LinearInput.allCases {
                    let cols = input == .ffnDown ? c.ffnDim : (input == .attentionOutput ? c.qDim : c.dim)
                    hessians[input] = HessianAccumulator(cols: cols)
                }
                // True sequential: only q/k/v's input is final now; the rest come from the partly
                // quantized block below.
                try accumulate(floatLayer, wanted: options.trueSequential ? [.attention] : Set(LinearInput.allCases), stopAfter: nil)
            }
            func input(of stem: String) -> LinearInput { Self.linearInput(of: stem) }
            var bytes: [String: [UInt8]] = [:]
            var quantized: [String: DenseWeight] = [:]
            var errors: [(String, Double)] = []
            var factors: [LinearInput: GPTQ.Factor] = [:]
            for s in stems {
                let name = p + s + ".weight"
                let bits = options.bits(for: name, tied: tied)
                if gptq && options.trueSequential && hessians[input(of: s)]?.samples == 0 {
                    // This input's distribution with every matrix before it already quantized.
                    let stage = LlamaLayer.make(attnNorm: attnNorm, wq: quantized["attn_q"] ?? w["attn_q"]!, wk: quantized["attn_k"] ?? w["attn_k"]!,
                                                wv: quantized["attn_v"] ?? w["attn_v"]!, wo: quantized["attn_output"] ?? w["attn_output"]!,
                                                ffnNorm: ffnNorm, wGate: quantized["ffn_gate"] ?? w["ffn_gate"]!, wUp: quantized["ffn_up"] ?? w["ffn_up"]!,
                                                wDown: w["ffn_down"]!)
                    try accumulate(stage, wanted: [input(of: s)], stopAfter: input(of: s))
                }
                let hessian = hessians[input(of: s)]?.matrix
                if let hessian, factors[input(of: s)] == nil, bits != QuantLayout.floatBits {
                    factors[input(of: s)] = try GPTQ.factor(hessian: hessian, cols: w[s]!.cols, options: options.gptq, name: name)
                }
                let r = try encode(name, w[s]!, bits: bits, hessian: hessian, factor: factors[input(of: s)])
                bytes[s] = r.bytes
                quantized[s] = Self.dense(w[s]!.rows, w[s]!.cols, r.dequantized)
                errors.append((s, r.error))
            }
            w = [:]
            hessians = [:]
            let normBytes: ([Float]) -> [UInt8] = { v in v.flatMap { f in withUnsafeBytes(of: f.bitPattern.littleEndian) { Array($0) } } }
            try writer.writeExtent(1 + li, tensors: [normBytes(attnNorm), bytes["attn_q"]!, bytes["attn_k"]!, bytes["attn_v"]!, bytes["attn_output"]!,
                                                     normBytes(ffnNorm), bytes["ffn_gate"]!, bytes["ffn_up"]!, bytes["ffn_down"]!])
            // Pass 2: the quantized block produces the next layer's inputs, so later layers are
            // calibrated on what they will really see.
            var blockError: Double? = nil
            if gptq {
                let qLayer = LlamaLayer.make(attnNorm: attnNorm, wq: quantized["attn_q"]!, wk: quantized["attn_k"]!, wv: quantized["attn_v"]!,
                                             wo: quantized["attn_output"]!, ffnNorm: ffnNorm, wGate: quantized["ffn_gate"]!,
                                             wUp: quantized["ffn_up"]!, wDown: quantized["ffn_down"]!)
                var num = 0.0, den = 0.0
                for s in hidden.indices {
                    let n = seqs[s].count
                    let x0 = hidden[s]
                    try hidden[s].withUnsafeMutableBufferPointer { xb in
                        try qLayer.runCalibration(xb.baseAddress!, tokens: n, configuration: c, cache: cache, pool: pool) { _, _, _ in }
                    }
                    for i in 0..<hidden[s].count {
                        let d = Double(hidden[s][i] - floatOut[s][i]), r = Double(floatOut[s][i] - x0[i])
                        num += d * d
                        den += r * r
                    }
                }
                blockError = den > 0 ? (num / den).squareRoot() : 0
            }
            let report = LayerReport(layer: li, matrixErrors: errors, blockError: blockError, seconds: Date().timeIntervalSince(t0))
            reports.append(report)
            log(Self.describe(report))
            step += 1
        }
        progress(step, totalSteps, "output")
        let sourceOutputNorm = try vector("output_norm.weight")
        // Rotated: the gain lives in the head (untied) or in the head matrix (tied).
        let outputNorm = rotation == nil ? sourceOutputNorm : [Float](repeating: 1, count: c.dim)
        let onBytes = outputNorm.flatMap { f in withUnsafeBytes(of: f.bitPattern.littleEndian) { Array($0) } }
        try writer.writeExtent(1 + c.layers, tensors: [onBytes])
        // The LM head's input: the final hidden states after the output norm.
        var headHessian: [Float]? = nil
        if gptq {
            let acc = HessianAccumulator(cols: c.dim)
            for s in hidden.indices {
                let n = seqs[s].count
                var normed = [Float](repeating: 0, count: n * c.dim)
                hidden[s].withUnsafeBufferPointer { h in
                    normed.withUnsafeMutableBufferPointer { Kernels.rmsNorm(h.baseAddress!, weight: outputNorm, n: c.dim, tokens: n, eps: c.normEps, into: $0.baseAddress!) }
                }
                if let r = rotation, tied {
                    normed.withUnsafeMutableBufferPointer { b in for t in 0..<n { r.applyHeadMatrix(b.baseAddress! + t * c.dim, outputNorm: sourceOutputNorm) } }
                }
                acc.add(normed, tokens: n, pool: pool)
            }
            headHessian = acc.matrix
        }
        hidden = []
        func head(_ name: String, _ w: DenseWeight, bits: Int) throws -> [UInt8] {
            let factor = try headHessian.map { try GPTQ.factor(hessian: $0, cols: c.dim, options: options.headGPTQ, name: name) }
            let r = try encode(name, w, bits: bits, hessian: headHessian, factor: bits == QuantLayout.floatBits ? nil : factor)
            log(String(format: "%@: %d-bit%@, relative %@ error %.2e", name, bits, headHessian == nil ? "" : " GPTQ as LM head",
                       headHessian == nil ? "weight" : "output", r.error))
            return r.bytes
        }
        if tied {
            if gptq { try writer.writeExtent(0, tensors: [try head("token_embd.weight", embd, bits: embBits)]) }
        } else {
            let out = try rotation.map { $0.untiedHead(try floats("output.weight"), outputNorm: sourceOutputNorm) } ?? floats("output.weight")
            try writer.writeExtent(2 + c.layers, tensors: [try head("output.weight", out, bits: plan[2 + c.layers].tensors[0].bits)])
        }
        try writeRotationHead(writer, plan: plan, outputNorm: sourceOutputNorm)
        try writer.finish()
        progress(totalSteps, totalSteps, "done")
        return reports
    }

    static func describe(_ r: LayerReport) -> String {
        var s = String(format: "blk.%-2d %5.1fs", r.layer, r.seconds)
        if let b = r.blockError { s += String(format: "  block err %.4f |", b) }
        for (name, e) in r.matrixErrors { s += String(format: " %@ %.2e", name, e) }
        return s
    }
}
