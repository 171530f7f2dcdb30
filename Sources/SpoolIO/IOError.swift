/// What can go wrong reading weights. Every case names the file region involved, so a failed read
/// mid-generation surfaces as a message a user can act on, never as garbage weights.
public enum IOError: Error, CustomStringConvertible {
    case cannotOpen(path: String, Errno)
    case read(path: String, offset: Int, length: Int, Errno)
    /// The file ended before the extent did (a truncated file or a wrong offset).
    case unexpectedEndOfFile(path: String, offset: Int, expected: Int, got: Int)
    case extentOutsideFile(path: String, extent: Extent, fileSize: Int)
    /// The destination buffer cannot hold the extent's aligned span at the given offset.
    case bufferTooSmall(extent: Extent, needed: Int, available: Int)
    /// The caller's verify callback (e.g. a CRC32C check) rejected the extent's bytes.
    case verificationFailed(path: String, extent: Extent, underlying: any Error)
    case uringSetup(Errno)
    case uringSubmit(Errno)
    case allocationFailed(bytes: Int)
    case invalidRequest(String)
    /// `wait` was called with no read in flight.
    case nothingInFlight

    public var description: String {
        switch self {
        case let .cannotOpen(path, e): return "cannot open \(path): \(e)"
        case let .read(path, offset, length, e):
            return "read of \(length) bytes at offset \(offset) of \(path) failed: \(e)"
        case let .unexpectedEndOfFile(path, offset, expected, got):
            return "\(path) ended early: wanted \(expected) bytes at offset \(offset), got \(got)"
        case let .extentOutsideFile(path, extent, size):
            return "extent \(extent) lies outside \(path) (\(size) bytes)"
        case let .bufferTooSmall(extent, needed, available):
            return "buffer too small for extent \(extent): needs \(needed) bytes, has \(available)"
        case let .verificationFailed(path, extent, underlying):
            return "extent \(extent) of \(path) failed verification: \(underlying)"
        case let .uringSetup(e): return "io_uring setup failed: \(e)"
        case let .uringSubmit(e): return "io_uring submit failed: \(e)"
        case let .allocationFailed(bytes): return "cannot allocate \(bytes) bytes of aligned memory"
        case let .invalidRequest(what): return "invalid read request: \(what)"
        case .nothingInFlight: return "waited for a read with none in flight"
        }
    }
}
