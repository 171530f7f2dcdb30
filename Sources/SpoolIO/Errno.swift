#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A POSIX error number, thrown by the typed syscall layer (in the style of swift-system's
/// `Errno`, kept local so SpoolIO needs no package dependency).
public struct Errno: Error, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(_ rawValue: Int32) { self.rawValue = rawValue }

    public static let interrupted = Errno(EINTR)
    public static let wouldBlock = Errno(EAGAIN)
    public static let permissionDenied = Errno(EPERM)
    public static let noFunction = Errno(ENOSYS)
    public static let invalidArgument = Errno(EINVAL)
    public static let ioError = Errno(EIO)
    public static let busy = Errno(EBUSY)
    public static let noMemory = Errno(ENOMEM)

    /// The errno of the calling thread, right after a failed libc call.
    public static var current: Errno { Errno(errno) }

    /// Symbolic name and message, e.g. "EPERM (Operation not permitted)".
    public var description: String {
        let message = String(cString: strerror(rawValue))
        if let name = Errno.names[rawValue] { return "\(name) (\(message))" }
        return "errno \(rawValue) (\(message))"
    }

    private static let names: [Int32: String] = [
        EPERM: "EPERM", ENOENT: "ENOENT", EINTR: "EINTR", EIO: "EIO", EBADF: "EBADF", EAGAIN: "EAGAIN",
        ENOMEM: "ENOMEM", EACCES: "EACCES", EFAULT: "EFAULT", EBUSY: "EBUSY", EINVAL: "EINVAL",
        ENOSYS: "ENOSYS", EOPNOTSUPP: "EOPNOTSUPP", EISDIR: "EISDIR", EMFILE: "EMFILE", ENFILE: "ENFILE",
        ENXIO: "ENXIO", ENODEV: "ENODEV", ECANCELED: "ECANCELED",
    ]
}

/// Runs `body` again for as long as it fails with EINTR (a signal arrived mid-call; the call did
/// nothing and is safe to repeat).
@inline(__always)
func retryOnInterrupt<T>(_ body: () throws(Errno) -> T) throws(Errno) -> T {
    while true {
        do { return try body() } catch where error == .interrupted { continue }
    }
}
