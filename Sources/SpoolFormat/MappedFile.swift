#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only memory map of a whole file. The bytes stay valid for the lifetime of the object.
public final class MappedFile {
    public let path: String
    public let bytes: UnsafeRawBufferPointer

    public init(path: String) throws(GGUFError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .cannotOpen(path: path, errno: errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .cannotOpen(path: path, errno: errno) }
        let size = Int(st.st_size)
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else { throw .cannotOpen(path: path, errno: errno) }
        bytes = UnsafeRawBufferPointer(start: p, count: size)
    }

    /// Wraps bytes already in memory (tests, in-memory files). The copy is owned by this object.
    public init(copying data: [UInt8], name: String = "<memory>") {
        path = name
        let p = UnsafeMutableRawBufferPointer.allocate(byteCount: max(data.count, 1), alignment: 64)
        data.withUnsafeBytes { src in
            if let base = src.baseAddress { p.baseAddress!.copyMemory(from: base, byteCount: data.count) }
        }
        bytes = UnsafeRawBufferPointer(start: p.baseAddress, count: data.count)
        ownsHeap = true
    }

    private var ownsHeap = false

    /// true when the bytes are a mapping of the file (`init(path:)`), false for a heap copy.
    public var isFileMapping: Bool { !ownsHeap && bytes.baseAddress != nil }

    deinit {
        guard let base = bytes.baseAddress else {
            return
        }
        if ownsHeap {
            UnsafeMutableRawPointer(mutating: base).deallocate()
        } else {
            munmap(UnsafeMutableRawPointer(mutating: base), bytes.count)
        }
    }
}
