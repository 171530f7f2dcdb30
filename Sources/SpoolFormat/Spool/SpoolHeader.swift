/// The JSON header of a .spool file (see docs/FORMAT.md). Keys are snake_case in the file.

public struct SpoolHyperparameters: Codable, Sendable, Equatable {
    public var layers: Int
    public var dim: Int
    public var ffnDim: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var ropeDims: Int
    public var ropeBase: Float
    public var normEps: Float
    public var vocabSize: Int
    public var contextLength: Int

    public init(layers: Int, dim: Int, ffnDim: Int, heads: Int, kvHeads: Int, headDim: Int, ropeDims: Int,
                ropeBase: Float, normEps: Float, vocabSize: Int, contextLength: Int) {
        self.layers = layers
        self.dim = dim
        self.ffnDim = ffnDim
        self.heads = heads
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.ropeDims = ropeDims
        self.ropeBase = ropeBase
        self.normEps = normEps
        self.vocabSize = vocabSize
        self.contextLength = contextLength
    }
}

/// Everything the byte-level BPE tokenizer needs, copied from the source model.
public struct SpoolTokenizerInfo: Codable, Sendable, Equatable {
    /// Tokenizer family; "gpt2" (byte-level BPE) is the only one so far.
    public var model: String
    /// Pre-tokenizer name as llama.cpp spells it (`tokenizer.ggml.pre`), e.g. "smollm".
    public var pre: String?
    public var tokens: [String]
    /// llama.cpp token types (1 normal, 3 control, 4 user-defined, 6 byte ...), one per token.
    public var tokenTypes: [Int]
    /// "left right" merge rules in rank order.
    public var merges: [String]
    public var bosId: Int?
    public var eosId: Int?
    public var eotId: Int?
    public var unknownId: Int?
    public var paddingId: Int?
    public var addBos: Bool
    public var addEos: Bool

    public init(model: String, pre: String?, tokens: [String], tokenTypes: [Int], merges: [String],
                bosId: Int?, eosId: Int?, eotId: Int?, unknownId: Int?, paddingId: Int?, addBos: Bool, addEos: Bool) {
        self.model = model
        self.pre = pre
        self.tokens = tokens
        self.tokenTypes = tokenTypes
        self.merges = merges
        self.bosId = bosId
        self.eosId = eosId
        self.eotId = eotId
        self.unknownId = unknownId
        self.paddingId = paddingId
        self.addBos = addBos
        self.addEos = addEos
    }
}

/// How the weights were quantized (informational; each tensor states its own bits and group).
public struct SpoolQuantization: Codable, Sendable, Equatable {
    /// "rtn" or "gptq".
    public var method: String
    /// Default bits of the layer weights.
    public var bits: Int
    public var group: Int
    /// Per-tensor overrides as given to the packer, e.g. {"embed": 8}.
    public var overrides: [String: Int]
    /// Where calibration text came from: a file name, or "self-generated".
    public var calibration: String?
    public var calibrationTokens: Int?
    public var actOrder: Bool
    /// GPTQ damping, as a fraction of the mean Hessian diagonal.
    public var damping: Double?
    /// The source file the packer read.
    public var source: String?
    /// Group-size overrides as given to the packer, e.g. {"embed": 64} (absent: none).
    public var groupOverrides: [String: Int]?
    /// GPTQ damping of the LM head when it differs from `damping`.
    public var headDamping: Double?
    /// GPTQ options that are off by default; absent when off (files packed before they existed
    /// did not record them, and were packed with them off).
    public var refitRounds: Int?
    public var trueSequential: Bool?
    /// false when the grids were fitted on plain squared error (`--unweighted-grid`).
    public var weightedGrid: Bool?
    /// The file-size budget (`--max-size`, bytes) the per-tensor widths were allocated under.
    public var maxSize: Int?

    public init(method: String, bits: Int, group: Int, overrides: [String: Int] = [:], calibration: String? = nil,
                calibrationTokens: Int? = nil, actOrder: Bool = false, damping: Double? = nil, source: String? = nil) {
        self.method = method
        self.bits = bits
        self.group = group
        self.overrides = overrides
        self.calibration = calibration
        self.calibrationTokens = calibrationTokens
        self.actOrder = actOrder
        self.damping = damping
        self.source = source
    }
}

/// One contiguous, 4 KiB-aligned run of the data section: a transformer block, or one non-layer tensor.
public struct SpoolExtent: Codable, Sendable, Equatable {
    /// "blk.N" for layer N; otherwise the tensor's stem ("token_embd", "output_norm", "output", "exit.N").
    public var name: String
    /// The transformer block this extent holds, if any.
    public var layer: Int?
    /// Absolute file offset; a multiple of 4096.
    public var offset: Int
    /// Bytes, a multiple of 4096 (zero padding at the end is part of the extent and its checksum).
    public var length: Int
    /// CRC-32C of all `length` bytes, as eight hex digits.
    public var crc32c: String
}

public struct SpoolTensor: Codable, Sendable, Equatable {
    /// llama.cpp's tensor name, e.g. "blk.3.ffn_down.weight".
    public var name: String
    /// [rows, cols] (rows = outputs, row-major) or [n] for a vector.
    public var shape: [Int]
    /// 2, 3, 4, 8 (see QuantLayout) or 32 (float32).
    public var bits: Int
    /// Values per (scale, offset) group; 0 for float32.
    public var group: Int
    /// Index into `extents`.
    public var extent: Int
    /// Offset from the start of the extent (multiple of 64), so a tensor is a view into a buffer that
    /// holds its extent.
    public var offset: Int
    public var length: Int
    /// CRC-32C of the tensor's `length` bytes: it names the damaged tensor when its extent fails.
    public var crc32c: String
    /// "i8": the groups' (d, m) are 8-bit codes under per-row bounds (see QuantLayout); absent: float16 pairs.
    public var grid: String?

    public init(name: String, shape: [Int], bits: Int, group: Int, extent: Int = 0, offset: Int = 0, length: Int = 0, crc32c: String = "00000000",
                compactGrid: Bool = false) {
        grid = compactGrid ? QuantLayout.compactGridName : nil
        self.name = name
        self.shape = shape
        self.bits = bits
        self.group = group
        self.extent = extent
        self.offset = offset
        self.length = length
        self.crc32c = crc32c
    }

    public var rows: Int { shape.count == 2 ? shape[0] : 1 }
    public var cols: Int { shape.last ?? 0 }
    public var compactGrid: Bool { grid == QuantLayout.compactGridName }
}

/// Reserved for the early-exit issue: a (dim, dim) float32 adapter applied to the hidden state after
/// `afterLayer` before the shared final norm and LM head. The tensor lives in its own extent.
public struct SpoolExitAdapter: Codable, Sendable, Equatable {
    public var afterLayer: Int
    public var tensor: String
}

/// The packer's incoherence rotation (`spool-pack --rotate`, see docs/ROTATION.md). The weights
/// compute the same function as the source's once the runtime applies `output_rotation.weight`
/// (dim, dim) to the normalized hidden state before a tied LM head; untied heads have it folded in.
/// Preamble flag bit 0 (`SpoolFile.rotatedFlag`) is set exactly when this is present, so readers
/// that predate it refuse the file instead of computing wrong logits.
public struct SpoolRotation: Codable, Sendable, Equatable {
    /// "hadamard": randomized Hadamard matrices (seeded signs).
    public var method: String
    public var seed: UInt64
    /// Whether attn_v / attn_output also carry a per-head rotation (offline only, nothing to apply).
    public var valueHeads: Bool

    public init(method: String, seed: UInt64, valueHeads: Bool) {
        self.method = method
        self.seed = seed
        self.valueHeads = valueHeads
    }

    /// The (dim, dim) matrix a rotated file with a tied LM head must hold.
    public static let headTensor = "output_rotation.weight"
}

public struct SpoolHeader: Codable, Sendable, Equatable {
    /// Must equal the preamble's version.
    public var formatVersion: Int
    /// "llama".
    public var architecture: String
    public var hyperparameters: SpoolHyperparameters
    public var tokenizer: SpoolTokenizerInfo
    public var chatTemplate: String?
    public var quantization: SpoolQuantization
    /// "separate": ffn_gate / ffn_up / ffn_down are ordinary tensors (version 1). "bundled" is
    /// reserved (see FORMAT.md) and refused by this reader.
    public var ffnLayout: String
    /// Reserved with "bundled": per layer, the original index of each stored neuron (hot first).
    public var neuronOrder: [[Int]]?
    public var exitAdapters: [SpoolExitAdapter]?
    /// Present when the packer rotated the weights (preamble flag bit 0).
    public var rotation: SpoolRotation?
    public var extents: [SpoolExtent]
    public var tensors: [SpoolTensor]

    public init(architecture: String, hyperparameters: SpoolHyperparameters, tokenizer: SpoolTokenizerInfo,
                chatTemplate: String?, quantization: SpoolQuantization) {
        formatVersion = SpoolFile.currentVersion
        self.architecture = architecture
        self.hyperparameters = hyperparameters
        self.tokenizer = tokenizer
        self.chatTemplate = chatTemplate
        self.quantization = quantization
        ffnLayout = "separate"
        neuronOrder = nil
        exitAdapters = nil
        rotation = nil
        extents = []
        tensors = []
    }
}
