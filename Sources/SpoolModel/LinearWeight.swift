import SpoolFormat
import SpoolKernels

/// A weight matrix of shape (rows = outputs, cols = inputs) that can multiply a batch of activations.
/// Quantized formats implement this protocol too, so the forward pass never needs to know how the
/// bytes are stored.
public protocol LinearWeight: AnyObject {
    var rows: Int { get }
    var cols: Int { get }
    /// y (tokens, rows) = x (tokens, cols) · Wᵀ
    func apply(_ x: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>, pool: ThreadPool)
    /// Copies row `r` as floats (embedding lookup).
    func row(_ r: Int, into out: UnsafeMutablePointer<Float>)
    /// Bytes the weights occupy in memory.
    var byteCount: Int { get }
}

/// Float32 weights, row-major.
public final class DenseWeight: LinearWeight {
    public let rows: Int
    public let cols: Int
    let values: UnsafeMutablePointer<Float>

    public init(rows: Int, cols: Int) {
        self.rows = rows
        self.cols = cols
        values = .allocate(capacity: max(1, rows * cols))
        values.initialize(repeating: 0, count: rows * cols)
    }

    /// Decodes a GGUF tensor (ggml shape [cols, rows]) into float32.
    public convenience init(gguf: GGUFFile, tensor: GGUFTensorInfo) throws(ModelError) {
        guard tensor.shape.count <= 2 else {
            throw .format(.tensorShapeMismatch(tensor: tensor.name, expected: [tensor.shape[0], tensor.elementCount / tensor.shape[0]], actual: tensor.shape))
        }
        self.init(rows: tensor.shape.count == 2 ? tensor.shape[1] : 1, cols: tensor.shape[0])
        try load(tensor, from: gguf.data(of: tensor))
    }

    /// Fills the weights from a tensor's bytes (rows * cols values of its type).
    public func load(_ tensor: GGUFTensorInfo, from bytes: UnsafeRawBufferPointer) throws(ModelError) {
        guard tensor.elementCount == rows * cols else {
            throw .format(.tensorShapeMismatch(tensor: tensor.name, expected: [cols, rows], actual: tensor.shape))
        }
        do {
            try GGMLDequantizer.dequantize(tensor.type, from: bytes, count: rows * cols, into: values)
        } catch let e as DequantizeError {
            if case .unsupportedType = e { throw .unsupportedTensorType(tensor: tensor.name, type: tensor.type) }
            throw .invalidTensorData(tensor: tensor.name, reason: e.description)
        } catch {
            throw .invalidTensorData(tensor: tensor.name, reason: "\(error)")
        }
    }

    deinit { values.deallocate() }

    public var byteCount: Int { rows * cols * MemoryLayout<Float>.size }

    public func apply(_ x: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        Kernels.matmul(values, rows: rows, cols: cols, x, tokens: tokens, into: y, pool: pool)
    }

    public func row(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        out.update(from: values + r * cols, count: cols)
    }

    public var pointer: UnsafePointer<Float> { UnsafePointer(values) }
}

