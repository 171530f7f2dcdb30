import SpoolFormat

public enum ModelError: Error, Equatable, CustomStringConvertible {
    case unsupportedArchitecture(String)
    case invalidHyperparameter(key: String, value: String, reason: String)
    case unsupportedTensorType(tensor: String, type: GGMLType)
    case format(GGUFError)
    case invalidTensorData(tensor: String, reason: String)
    case spool(SpoolError)

    public var description: String {
        switch self {
        case let .unsupportedArchitecture(a): return "unsupported architecture '\(a)' (supported: \(ModelRegistry.architectures.sorted().joined(separator: ", ")))"
        case let .invalidHyperparameter(key, value, reason): return "invalid hyperparameter \(key) = \(value): \(reason)"
        case let .unsupportedTensorType(t, type): return "tensor \(t) has type \(type), which this build cannot decode"
        case let .format(e): return e.description
        case let .invalidTensorData(t, reason): return "tensor \(t): \(reason)"
        case let .spool(e): return e.description
        }
    }
}

public enum ForwardError: Error, Equatable, CustomStringConvertible {
    case tokenOutOfRange(id: Int32, vocabSize: Int)
    case contextFull(needed: Int, capacity: Int)
    case emptyInput
    case noLayerSource

    public var description: String {
        switch self {
        case let .tokenOutOfRange(id, n): return "token id \(id) is outside the vocabulary (0..<\(n))"
        case let .contextFull(needed, capacity): return "context full: \(needed) tokens needed, the context holds \(capacity)"
        case .emptyInput: return "no tokens to process"
        case .noLayerSource: return "the model was loaded without its layers and no layer source (streaming) is attached"
        }
    }
}
