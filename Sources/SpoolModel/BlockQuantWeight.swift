import SpoolFormat
import SpoolKernels

/// A weight matrix used in place from its GGUF blocks (q4_1, q8_0): activations are quantized to
/// 8 bits per block of 32 and multiplied with the blocks by integer kernels, as llama.cpp does, so
/// nothing is expanded to floats and the weights stay in the file's mapping (no copy, no RSS until
/// touched).
public final class BlockQuantWeight: Int8InputWeight {
    public let rows: Int
    public let cols: Int
    public let format: WeightBlockFormat
    let data: UnsafeRawPointer            // (rows, cols / 32) blocks
    let owner: AnyObject                  // keeps the mapping alive
    public let activations: Q8Activations // shared by the model's weights: one forward pass at a time

    public init(format: WeightBlockFormat, rows: Int, cols: Int, data: UnsafeRawBufferPointer, owner: AnyObject,
                activations: Q8Activations, name: String) throws(ModelError) {
        guard cols % WeightBlockFormat.blockSize == 0, data.count >= rows * format.rowBytes(cols: cols), let base = data.baseAddress else {
            throw .format(.tensorShapeMismatch(tensor: name, expected: [cols, rows], actual: [data.count]))
        }
        self.format = format
        self.rows = rows
        self.cols = cols
        self.data = base
        self.owner = owner
        self.activations = activations
    }

    /// The block format for a GGUF tensor type, if the integer kernels handle it.
    public static func format(for type: GGMLType) -> WeightBlockFormat? {
        switch type {
        case .q4_1: return .q4_1
        case .q8_0: return .q8_0
        default: return nil
        }
    }

    public var byteCount: Int { rows * format.rowBytes(cols: cols) }

    public func apply(_ x: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        Kernels.quantizeActivations(x, tokens: tokens, cols: cols, into: activations, pool: pool)
        apply(quantized: activations, into: y, pool: pool)
    }

    public func apply(quantized x: Q8Activations, into y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        Kernels.quantMatmul(format, data, rows: rows, cols: cols, x, into: y, pool: pool)
    }

    public func applyRows(_ rows: Range<Int>, quantized x: Q8Activations, into y: UnsafeMutablePointer<Float>) {
        Kernels.quantMatmulBlock(format, data, rows: self.rows, cols: cols, x, into: y, rowRange: rows,
                                 tokenRange: 0..<x.tokens, level: KernelLevel.selected)
    }

    public func row(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        let rb = format.rowBytes(cols: cols)
        let type: GGMLType = format == .q4_1 ? .q4_1 : .q8_0
        // The row's bytes were checked at init, so dequantizing cannot fail.
        try? GGMLDequantizer.dequantize(type, from: UnsafeRawBufferPointer(start: data + r * rb, count: rb), count: cols, into: out)
    }
}
