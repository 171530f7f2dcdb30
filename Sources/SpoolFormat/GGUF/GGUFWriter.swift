/// Builds GGUF v3 files in memory: used by tests (valid and deliberately broken files) and by
/// tools that make synthetic models.
public struct GGUFWriter {
    public struct Tensor {
        public var name: String
        public var shape: [Int]
        public var type: GGMLType
        public var data: [UInt8]
        public init(name: String, shape: [Int], type: GGMLType, data: [UInt8]) {
            self.name = name
            self.shape = shape
            self.type = type
            self.data = data
        }
    }

    public var metadata: [(String, GGUFValue)] = []
    public var tensors: [Tensor] = []
    public var alignment = GGUFFile.defaultAlignment

    public init() {}

    public mutating func set(_ key: String, _ value: GGUFValue) {
        metadata.removeAll { $0.0 == key }
        metadata.append((key, value))
    }

    public mutating func add(_ name: String, shape: [Int], type: GGMLType, data: [UInt8]) {
        tensors.append(Tensor(name: name, shape: shape, type: type, data: data))
    }

    /// Convenience for float32 tensors.
    public mutating func add(_ name: String, shape: [Int], floats: [Float]) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(floats.count * 4)
        for f in floats { withUnsafeBytes(of: f.bitPattern.littleEndian) { bytes += $0 } }
        add(name, shape: shape, type: .f32, data: bytes)
    }

    /// Byte offset of each tensor's info record in the serialized header, for tests that corrupt it.
    public private(set) var tensorInfoOffsets: [Int] = []

    public mutating func serialize() -> [UInt8] {
        var out: [UInt8] = []
        tensorInfoOffsets = GGUFStreamWriter.encodeHeader(
            into: &out, metadata: metadata,
            tensors: tensors.map { GGUFStreamWriter.TensorSpec(name: $0.name, shape: $0.shape, type: $0.type) },
            byteCounts: tensors.map(\.data.count), alignment: alignment)
        let dataStart = out.count
        var offset = 0
        for t in tensors {
            while out.count < dataStart + offset { out.append(0) }
            out += t.data
            offset = (offset + t.data.count + alignment - 1) / alignment * alignment
        }
        return out
    }
}
