// spool-make-model: writes a Llama-shaped GGUF of any size with random Q4_0 weights, for I/O
// benchmarks (its text is meaningless, its bytes per token are real). The tokenizer metadata is
// copied from a real model so the tokenizer and chat template work. Tensor data is generated in
// 1 MiB pieces and streamed to disk: memory use does not grow with the model.
import ArgumentParser
import SpoolFormat

#if canImport(Glibc)
import Glibc
#endif

@main
struct MakeModel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spool-make-model",
        abstract: "Write a Llama-shaped GGUF with random Q4_0 (or Q4_1) weights (for I/O benchmarks only).")

    enum Preset: String, ExpressibleByArgument, CaseIterable {
        /// Llama-2-7B geometry.
        case llama7b = "7b"
        /// The default model's geometry (SmolLM2-135M).
        case smol135m = "135m"
    }

    @Option(name: .shortAndLong, help: "Output GGUF path.")
    var output: String

    @Option(help: "Geometry preset: \(Preset.allCases.map(\.rawValue).joined(separator: ", ")).")
    var preset: Preset = .llama7b

    @Option(help: "Override the preset's hidden size.") var dim: Int?
    @Option(help: "Override the preset's FFN size.") var ffn: Int?
    @Option(help: "Override the preset's layer count.") var layers: Int?
    @Option(help: "Override the preset's attention heads.") var heads: Int?
    @Option(help: "Override the preset's KV heads.") var kvHeads: Int?
    @Option(help: "Context length written to the metadata.") var context = 4096

    @Option(help: "GGUF to copy tokenizer metadata (and thus the vocabulary) from. Default: the default model (Tools/fetch-model.sh).")
    var tokenizerFrom: String?

    @Option(help: "Random seed.") var seed: UInt64 = 1

    enum Quant: String, ExpressibleByArgument, CaseIterable {
        /// What llama.cpp and the comparison use.
        case q4_0
        /// The default model's type: Spool's block kernels run it directly (no float copy).
        case q4_1
        var type: GGMLType { self == .q4_0 ? .q4_0 : .q4_1 }
    }

    @Option(help: "Weight block type: q4_0 (default; what llama.cpp benchmarks use) or q4_1.")
    var quant: Quant = .q4_0

    func run() throws {
        var (d, f, l, h, kv) = preset == .llama7b ? (4096, 11008, 32, 32, 32) : (576, 1536, 30, 9, 3)
        d = dim ?? d
        f = ffn ?? f
        l = layers ?? l
        h = heads ?? h
        kv = kvHeads ?? kv
        guard d > 0, f > 0, l > 0, h > 0, kv > 0, d % h == 0, h % kv == 0, d % 32 == 0, f % 32 == 0 else {
            throw ValidationError("shape dim \(d) ffn \(f) heads \(h) kv heads \(kv): dim and ffn must be multiples of 32, dim of heads, heads of kv heads")
        }
        let source = tokenizerFrom ?? defaultModelPath()
        let tokenizer = try GGUFFile(path: source)
        var metadata: [(String, GGUFValue)] = [
            ("general.architecture", .string("llama")),
            ("general.name", .string("spool random \(l)-layer dim-\(d) (benchmark only)")),
            ("general.file_type", .uint32(quant == .q4_0 ? 2 : 3)), // MOSTLY_Q4_0 / MOSTLY_Q4_1
        ]
        let vocab = try tokenizer.stringArray("tokenizer.ggml.tokens")?.count ?? 0
        guard vocab > 0 else { throw ValidationError("\(source) has no tokenizer.ggml.tokens") }
        let headDim = d / h
        metadata += [
            ("llama.context_length", .uint32(UInt32(context))),
            ("llama.embedding_length", .uint32(UInt32(d))),
            ("llama.feed_forward_length", .uint32(UInt32(f))),
            ("llama.block_count", .uint32(UInt32(l))),
            ("llama.attention.head_count", .uint32(UInt32(h))),
            ("llama.attention.head_count_kv", .uint32(UInt32(kv))),
            ("llama.rope.dimension_count", .uint32(UInt32(headDim))),
            ("llama.rope.freq_base", .float32(10000)),
            ("llama.attention.layer_norm_rms_epsilon", .float32(1e-5)),
            ("llama.vocab_size", .uint32(UInt32(vocab))),
        ]
        for key in tokenizer.metadataKeys where key.hasPrefix("tokenizer.") {
            metadata.append((key, tokenizer.metadata[key]!))
        }

        // ggml order: shape[0] is the input (row) length. Layer-major, like llama.cpp's converter.
        typealias Spec = GGUFStreamWriter.TensorSpec
        let wt = quant.type
        let kvDim = kv * headDim
        var specs = [Spec(name: "token_embd.weight", shape: [d, vocab], type: wt)]
        for i in 0..<l {
            let p = "blk.\(i)."
            specs += [
                Spec(name: p + "attn_norm.weight", shape: [d], type: .f32),
                Spec(name: p + "attn_q.weight", shape: [d, d], type: wt),
                Spec(name: p + "attn_k.weight", shape: [d, kvDim], type: wt),
                Spec(name: p + "attn_v.weight", shape: [d, kvDim], type: wt),
                Spec(name: p + "attn_output.weight", shape: [d, d], type: wt),
                Spec(name: p + "ffn_norm.weight", shape: [d], type: .f32),
                Spec(name: p + "ffn_gate.weight", shape: [d, f], type: wt),
                Spec(name: p + "ffn_up.weight", shape: [d, f], type: wt),
                Spec(name: p + "ffn_down.weight", shape: [f, d], type: wt),
            ]
        }
        specs += [Spec(name: "output_norm.weight", shape: [d], type: .f32),
                  Spec(name: "output.weight", shape: [d, vocab], type: wt)]

        let writer = try GGUFStreamWriter(path: output, metadata: metadata, tensors: specs)
        var rng = SplitMix(seed: seed)
        // Weights of a trained 7B model are around N(0, 0.02); a Q4_0 block holds (q - 8) * scale
        // for q in 0...15, so scales near 0.004 give that spread. A Q4_1 block holds
        // q * scale + min; min = -8 * scale centres it the same way.
        let scaleValues: [Float] = [0.0030, 0.0035, 0.0040, 0.0045, 0.0050]
        let scales = scaleValues.map { Float16($0).bitPattern }
        let mins = scaleValues.map { Float16(-8 * $0).bitPattern }
        let blockBytes = wt.typeSize // 18 (d, qs[16]) or 20 (d, m, qs[16])
        let blocksPerPiece = (1 << 20) / blockBytes
        var piece = [UInt8](repeating: 0, count: blocksPerPiece * blockBytes)
        let one = Float(1).bitPattern
        var total = 0
        for (spec, bytes) in zip(specs, writer.byteCounts) {
            total += bytes
            if spec.type == .f32 {
                // Norm weights: 1.0, as at initialization.
                var ones = [UInt8](); ones.reserveCapacity(bytes)
                for _ in 0..<(bytes / 4) { withUnsafeBytes(of: one.littleEndian) { ones += $0 } }
                try ones.withUnsafeBytes { try writer.write($0) }
                continue
            }
            var left = bytes / blockBytes
            while left > 0 {
                let n = min(left, blocksPerPiece)
                piece.withUnsafeMutableBytes { p in
                    for b in 0..<n {
                        let base = b * blockBytes
                        let k = Int(rng.next() >> 61) % scales.count
                        p.storeBytes(of: scales[k].littleEndian, toByteOffset: base, as: UInt16.self)
                        var q = base + 2
                        if blockBytes == 20 {
                            p.storeBytes(of: mins[k].littleEndian, toByteOffset: q, as: UInt16.self)
                            q += 2
                        }
                        p.storeBytes(of: rng.next(), toByteOffset: q, as: UInt64.self)
                        p.storeBytes(of: rng.next(), toByteOffset: q + 8, as: UInt64.self)
                    }
                }
                try piece.withUnsafeBytes { try writer.write(UnsafeRawBufferPointer(rebasing: $0[..<(n * blockBytes)])) }
                left -= n
            }
        }
        try writer.finish()
        let layerBytes = zip(specs, writer.byteCounts).filter { $0.0.name.hasPrefix("blk.0.") }.map(\.1).reduce(0, +)
        print("wrote \(output): \(l) layers, dim \(d), ffn \(f), heads \(h)/\(kv), vocab \(vocab); "
              + "\(total) bytes of tensors, \(layerBytes) bytes per layer")
    }

    func defaultModelPath() -> String {
        let home = getenv("HOME").map { String(cString: $0) } ?? "/root"
        return home + "/.cache/spool/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    }
}

/// SplitMix64: fast, seedable, good enough for random weights.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
}
