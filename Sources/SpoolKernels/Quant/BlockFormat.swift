// Weight block formats the integer kernels multiply in place, and the 8-bit activation blocks they
// multiply them with. Layouts are those of ggml (ggml-common.h), so GGUF tensor data is used as it
// lies in the file: no repacking, no copy.
//
//   q4_1 block (20 bytes, 32 weights):  d: f16 | m: f16 | qs: 16 bytes
//        weight j      = d * (qs[j] & 0x0F) + m      for j in 0..<16
//        weight j + 16 = d * (qs[j] >> 4)   + m
//   q8_0 block (34 bytes, 32 weights):  d: f16 | qs: 32 x int8
//        weight j      = d * qs[j]
//
// Activations are quantized per row in blocks of 32 (ggml's q8_1 / q8_0): q = round(x * 127 / amax)
// with d = amax / 127 stored at f16 precision, and s = d * sum(q) (also f16), which the offset `m`
// of an asymmetric weight block multiplies.

/// A weight block format with an integer kernel.
public enum WeightBlockFormat: Sendable, CaseIterable, CustomStringConvertible {
    case q4_1
    case q8_0

    /// Weights per block.
    public static let blockSize = 32

    /// Bytes per block.
    public var blockBytes: Int {
        switch self {
        case .q4_1: return 20
        case .q8_0: return 34
        }
    }

    /// Bytes of one row of `cols` weights (cols a multiple of 32).
    public func rowBytes(cols: Int) -> Int { cols / Self.blockSize * blockBytes }

    public var description: String {
        switch self {
        case .q4_1: return "q4_1"
        case .q8_0: return "q8_0"
        }
    }
}

/// A batch of activation rows quantized to 8 bits in blocks of 32.
public final class Q8Activations {
    public private(set) var tokens = 0
    public private(set) var cols = 0
    private var capacity = 0
    private var blockCapacity = 0
    /// (tokens, cols) quantized values.
    public private(set) var qs = UnsafeMutablePointer<Int8>.allocate(capacity: 64)
    /// (tokens, cols / 32) block scales, f16-rounded.
    public private(set) var d = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    /// (tokens, cols / 32) d * sum(q) per block, f16-rounded.
    public private(set) var s = UnsafeMutablePointer<Float>.allocate(capacity: 1)

    public init() {}

    deinit {
        qs.deallocate()
        d.deallocate()
        s.deallocate()
    }

    public var blocksPerRow: Int { cols / WeightBlockFormat.blockSize }

    /// Makes room for (tokens, cols); cols must be a multiple of 32.
    func reserve(tokens: Int, cols: Int) {
        self.tokens = tokens
        self.cols = cols
        let n = tokens * cols, nb = n / WeightBlockFormat.blockSize
        if n > capacity {
            qs.deallocate()
            // 64-byte alignment keeps a block's 32 values inside one cache line.
            qs = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 64).bindMemory(to: Int8.self, capacity: n)
            capacity = n
        }
        if nb > blockCapacity {
            d.deallocate()
            s.deallocate()
            d = .allocate(capacity: nb)
            s = .allocate(capacity: nb)
            blockCapacity = nb
        }
    }
}
