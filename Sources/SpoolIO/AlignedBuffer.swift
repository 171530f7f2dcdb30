#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The alignment O_DIRECT needs for buffer addresses, file offsets and lengths on the disks we
/// target (logical block size 512 or 4096: 4096 satisfies both), and the .spool extent alignment.
public let directIOAlignment = 4096

/// Page-aligned heap memory that reads land in. Owned by this object and freed with it.
///
/// The address is stored as an integer so the buffer can be handed to a pread worker thread:
/// ownership of the bytes passes with the read request (one writer between submit and
/// completion, ordered by the completion queue's lock), which is a protocol the compiler cannot
/// check for raw memory either way.
public final class AlignedBuffer: Sendable {
    private let address: UInt
    public let count: Int
    public let alignment: Int

    /// - Throws: `IOError.allocationFailed` when the memory cannot be had.
    public init(count: Int, alignment: Int = directIOAlignment) throws(IOError) {
        guard count >= 0, alignment > 0, alignment & (alignment - 1) == 0 else {
            throw .invalidRequest("aligned buffer of \(count) bytes with alignment \(alignment)")
        }
        var p: UnsafeMutableRawPointer?
        let rc = posix_memalign(&p, max(alignment, MemoryLayout<UnsafeRawPointer>.size), max(count, 1))
        guard rc == 0, let p else { throw .allocationFailed(bytes: count) }
        address = UInt(bitPattern: p)
        self.count = count
        self.alignment = alignment
    }

    deinit { free(UnsafeMutableRawPointer(bitPattern: address)) }

    public var base: UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: address)! }
    public var bytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: base, count: count) }
}

@inline(__always) func alignDown(_ x: Int, _ a: Int) -> Int { x & ~(a - 1) }
@inline(__always) func alignUp(_ x: Int, _ a: Int) -> Int { (x + a - 1) & ~(a - 1) }
