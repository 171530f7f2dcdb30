import SpoolFormat
import SpoolModel

/// The packer's side of `--rotate`: the rotated embedding, the head matrix's extent, and the
/// header record. The per-block transform is one call in `pack` (LlamaRotation.layer).
extension Packer {
    /// The head matrix's default encoding: 8 bits (0.34 MiB for dim 576, against 1.27 MiB as
    /// float32); `--keep output_rotation=32` stores it in float.
    static let rotationHeadBits = 8

    func rotated(embedding e: DenseWeight) -> DenseWeight {
        rotation?.embedding(e) ?? e
    }

    /// The header with the rotation recorded (the writer then sets preamble flag bit 0).
    func recordingRotation(_ template: SpoolHeader) -> SpoolHeader {
        var h = template
        if let r = rotation { h.rotation = SpoolRotation(method: "hadamard", seed: r.seed, valueHeads: true) }
        return h
    }

    /// The extent holding M = Qᵀ diag(g_f) Q, only for a rotated model with a tied head.
    func rotationHeadPlan() -> SpoolExtentPlan? {
        guard rotation != nil, tied else { return nil }
        let dim = configuration.dim
        let bits = options.keep["output_rotation"] ?? Self.rotationHeadBits
        let t = SpoolTensor(name: SpoolRotation.headTensor, shape: [dim, dim], bits: bits,
                            group: bits == QuantLayout.floatBits ? 0 : options.group(for: SpoolRotation.headTensor, tied: tied),
                            compactGrid: bits != QuantLayout.floatBits && options.compact(for: SpoolRotation.headTensor))
        return SpoolExtentPlan(name: "output_rotation", layer: nil, tensors: [t])
    }

    func writeRotationHead(_ writer: SpoolWriter, plan: [SpoolExtentPlan], outputNorm: [Float]) throws {
        guard let r = rotation, let index = plan.firstIndex(where: { $0.name == "output_rotation" }) else { return }
        let dim = configuration.dim
        let m = Self.dense(dim, dim, r.headMatrix(outputNorm: outputNorm))
        let e = try encode(SpoolRotation.headTensor, m, bits: plan[index].tensors[0].bits, hessian: nil)
        try writer.writeExtent(index, tensors: [e.bytes])
        log(String(format: "%@: %d-bit, relative weight error %.2e", SpoolRotation.headTensor, plan[index].tensors[0].bits, e.error))
    }
}
