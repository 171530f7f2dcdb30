import ArgumentParser
import Foundation
import SpoolFormat
import SpoolIO
import SpoolKernels
import SpoolModel
import SpoolQuant
import SpoolRuntime
import SpoolTokenizer

/// spool-pack: GGUF in, .spool out (group-quantized with RTN or GPTQ, layer-aligned, checksummed).
@main
struct SpoolPack: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spool-pack",
        abstract: "Quantize a GGUF Llama model into a .spool file (RTN or GPTQ, 2/3/4/8 bits).")

    @Argument(help: "Source model (.gguf).")
    var input: String

    @Option(name: .shortAndLong, help: "Output .spool file.")
    var output: String

    @Option(help: "Bits of the layer weights: 2, 3, 4 or 8.")
    var bits = 4

    @Option(help: "Values per scale/offset group: 32, 64 or 128.")
    var group = 64

    @Option(help: "rtn or gptq.")
    var method = "gptq"

    @Option(help: "Calibration text file (default: text the model generates itself).")
    var calib: String?

    @Option(name: .customLong("calib-tokens"), help: "Calibration tokens in total.")
    var calibTokens = 8192

    @Option(name: .customLong("seq-len"), help: "Tokens per calibration sequence.")
    var seqLen = 512

    @Option(help: "Per-tensor bits and optional group, e.g. embed=8,output=8,ffn_down=4/32 (embed, output, or a tensor-name substring; 32 = float).")
    var keep: String?

    @Flag(name: .customLong("act-order"), help: "GPTQ: quantize columns in order of decreasing Hessian diagonal.")
    var actOrder = false

    @Flag(name: .customLong("unweighted-grid"), help: "GPTQ: fit group grids on plain squared error, not weighted by the Hessian diagonal.")
    var unweightedGrid = false

    @Flag(help: "Rotate the weights by randomized Hadamard matrices before calibration and quantization (QuaRot R1 + R2; docs/ROTATION.md). The head matrix is 8-bit unless --keep output_rotation=32.")
    var rotate = false

    @Option(name: .customLong("rotate-seed"), help: "Seed of the rotation's random signs.")
    var rotateSeed: UInt64 = 1

    @Flag(name: .customLong("true-sequential"), help: "GPTQ: take each matrix's Hessian from its block with the matrices before it already quantized (q/k/v, then attn_output, gate/up, ffn_down).")
    var trueSequential = false

    @Option(name: .customLong("refit-rounds"), help: "GPTQ: rounds of the full-Hessian grid refit after the codes are fixed (0: none; 2: refit, re-run GPTQ on the refitted grids, refit again).")
    var refitRounds = 0

    @Flag(name: .customLong("compact-grids"), help: "Store each group's scale and offset as 8-bit codes under per-row float16 bounds (16 bits per group instead of 32) for every tensor whose width --max-size does not choose; --alloc-choices items take a 'c' suffix for the same (e.g. 3/32c). Expanded to float16 at load.")
    var compactGrids = false

    @Option(help: "GPTQ damping as a fraction of the mean Hessian diagonal.")
    var damp: Float = 0.01

    @Option(name: .customLong("head-damp"), help: "GPTQ damping of the LM head only (default: --damp). A tied head is also the input embedding; more damping favours its plain weight error.")
    var headDamp: Float?

    @Option(name: .shortAndLong, help: "Worker threads (default: all cores).")
    var threads: Int?

    @Option(help: "Seed for self-generated calibration text.")
    var seed: UInt64 = 1234

    @OptionGroup var allocation: AllocationOptions

    func validate() throws {
        guard PackMethod(rawValue: method) != nil else { throw ValidationError("--method must be rtn or gptq") }
        do { _ = try QuantSpec(bits: bits, group: group) } catch { throw ValidationError(error.description) }
        if calibTokens < 1 { throw ValidationError("--calib-tokens must be positive") }
        if seqLen < 8 { throw ValidationError("--seq-len must be at least 8") }
        if !(damp >= 0 && damp.isFinite) { throw ValidationError("--damp must be a non-negative number") }
        if !(0...4).contains(refitRounds) { throw ValidationError("--refit-rounds must be 0...4") }
        if let headDamp, !(headDamp >= 0 && headDamp.isFinite) { throw ValidationError("--head-damp must be a non-negative number") }
        _ = try parseKeep()
        try allocation.validate()
    }

    /// NAME=BITS or NAME=BITS/GROUP items.
    func parseKeep() throws -> (bits: [String: Int], groups: [String: Int]) {
        guard let keep, !keep.isEmpty else { return ([:], [:]) }
        var bits: [String: Int] = [:], groups: [String: Int] = [:]
        for item in keep.split(separator: ",") {
            let kv = item.split(separator: "=")
            let spec = kv.count == 2 ? kv[1].split(separator: "/") : []
            guard (1...2).contains(spec.count), let b = Int(spec[0]), b == QuantLayout.floatBits || QuantLayout.supportedBits.contains(b) else {
                throw ValidationError("--keep item '\(item)' must be NAME=BITS or NAME=BITS/GROUP with BITS in 2, 3, 4, 8 or 32")
            }
            bits[String(kv[0])] = b
            if spec.count == 2 {
                guard let g = Int(spec[1]), QuantLayout.supportedGroups.contains(g) else {
                    throw ValidationError("--keep item '\(item)': group must be 32, 64 or 128")
                }
                groups[String(kv[0])] = g
            }
        }
        return (bits, groups)
    }

    func run() throws {
        let t0 = Date()
        let gguf = try GGUFFile(path: input)
        let pool = ThreadPool(threads: threads ?? ProcessInfo.processInfo.activeProcessorCount)
        let tokenizerInfo = try SpoolTokenizerInfo(gguf: gguf)
        let tokenizer = try BPETokenizer(TokenizerVocabulary(spool: tokenizerInfo))
        let m = PackMethod(rawValue: method)!
        let keepItems = try parseKeep()
        var options = PackOptions(spec: try QuantSpec(bits: bits, group: group), method: m, keep: keepItems.bits,
                                  gptq: GPTQOptions(damping: damp, actOrder: actOrder, weightedGrid: !unweightedGrid, refitRounds: refitRounds), sequenceLength: seqLen)
        options.keepGroup = keepItems.groups
        options.rotationSeed = rotate ? rotateSeed : nil
        options.headDamping = headDamp
        options.trueSequential = trueSequential
        options.compactGrids = compactGrids
        var packer = try Packer(gguf: gguf, options: options, pool: pool, log: { line in
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + line + "\n").utf8))
        })
        let configuration = try LlamaConfiguration(gguf: gguf)

        var sequences: [[Int32]] = []
        var source = "none"
        if m == .gptq || allocation.maxSize != nil {
            if let calib {
                guard let data = FileManager.default.contents(atPath: calib) else { throw ValidationError("cannot read \(calib)") }
                sequences = CalibrationText.windows(of: tokenizer.encode(String(decoding: data, as: UTF8.self), addSpecial: false, parseSpecial: false),
                                                bos: tokenizer.addsBOS ? tokenizer.bosID : nil, total: calibTokens, length: seqLen)
                source = (calib as NSString).lastPathComponent
            } else {
                stderrLine("no --calib file: sampling calibration text from the float model")
                let engine = try Engine(path: input, options: EngineOptions(threads: pool.threadCount))
                sequences = try CalibrationText.selfGenerated(engine: engine, total: calibTokens, length: seqLen, seed: seed) { done, total in
                    FileHandle.standardError.write(Data("\r\u{1B}[Kcalibration text: \(done)/\(total) sequences".utf8))
                }
                source = "self-generated"
            }
            stderrLine("calibration: \(sequences.count) sequences, \(sequences.reduce(0) { $0 + $1.count }) tokens from \(source)")
        }
        var quant = SpoolQuantization(method: method, bits: bits, group: group, overrides: keepItems.bits, calibration: m == .gptq ? source : nil,
                                      calibrationTokens: m == .gptq ? sequences.reduce(0) { $0 + $1.count } : nil,
                                      actOrder: actOrder, damping: m == .gptq ? Double(damp) : nil,
                                      source: (input as NSString).lastPathComponent)
        if !keepItems.groups.isEmpty { quant.groupOverrides = keepItems.groups }
        if m == .gptq {
            if let headDamp { quant.headDamping = Double(headDamp) }
            if refitRounds > 0 { quant.refitRounds = refitRounds }
            if trueSequential { quant.trueSequential = true }
            if unweightedGrid { quant.weightedGrid = false }
        }
        quant.maxSize = try allocation.maxSize.map { try ByteSize.parse($0) }
        let header = SpoolHeader(architecture: configuration.architecture, hyperparameters: configuration.spoolHyperparameters,
                                 tokenizer: tokenizerInfo, chatTemplate: try gguf.string("tokenizer.chat_template"), quantization: quant)
        if allocation.maxSize != nil {
            guard let widths = try allocation.run(packer: packer, options: options, calibration: sequences, header: header, pool: pool) else { return }
            // The tensor directory records each tensor's width; the header's overrides stay as given.
            options.perTensor = widths
            packer = try Packer(gguf: gguf, options: options, pool: pool, log: { line in
                FileHandle.standardError.write(Data(("\r\u{1B}[K" + line + "\n").utf8))
            })
        }
        let bar = ProgressBar(start: Date())
        _ = try packer.pack(to: output, header: header, calibration: sequences) { done, total, what in bar.draw(done, total, what) }
        let size = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        stderrLine(String(format: "wrote %@: %.2f MiB in %.1f s", output, Double(size) / 1048576, Date().timeIntervalSince(t0)))
    }
}

func stderrLine(_ s: String) {
    FileHandle.standardError.write(Data(("\r\u{1B}[K" + s + "\n").utf8))
}

/// A one-line progress bar with ETA on stderr.
struct ProgressBar {
    let start: Date

    func draw(_ done: Int, _ total: Int, _ what: String) {
        let width = 30
        let filled = total > 0 ? width * done / total : 0
        let elapsed = Date().timeIntervalSince(start)
        let eta = done > 0 ? elapsed / Double(done) * Double(total - done) : 0
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        FileHandle.standardError.write(Data(String(format: "\r\u{1B}[K[%@] %d/%d %@  elapsed %.0fs  ETA %.0fs", bar, done, total, what, elapsed, eta).utf8))
        if done == total { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
