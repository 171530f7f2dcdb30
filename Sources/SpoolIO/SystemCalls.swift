import CSpoolSys

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The syscalls the weight readers make, behind a protocol so tests can inject failures
/// (EPERM at io_uring setup, short reads, EINTR). Each method is one raw call: it throws the
/// errno it got, including EINTR and EAGAIN; retrying is the reader's job, so that the retry
/// logic itself is what the tests exercise.
public protocol SystemCalls: Sendable {
    func open(_ path: String, flags: Int32) throws(Errno) -> Int32
    func close(_ fd: Int32)
    func fileSize(_ fd: Int32) throws(Errno) -> Int
    /// One pread(2): the number of bytes read (0 at end of file).
    func pread(_ fd: Int32, into buffer: UnsafeMutableRawPointer, count: Int, offset: Int) throws(Errno) -> Int
    /// io_uring_setup with `entries` submission slots; with `asyncSubmission`, reads are queued
    /// with IOSQE_ASYNC (see WeightReaderOptions.uringAsyncSubmission).
    func makeURing(entries: Int, asyncSubmission: Bool) throws(Errno) -> any URingQueue
    /// /proc/sys/kernel/io_uring_disabled (0 allowed, 1 restricted to a group, 2 disabled), or nil
    /// when the file does not exist (older kernels, non-Linux).
    func ioURingDisabledSetting() -> Int?
    /// Whether a seccomp filter is installed on this process ("Seccomp: 2" in /proc/self/status).
    func seccompFilterActive() -> Bool
}

/// One completed io_uring request: the user data it was submitted with and its result (bytes
/// read, or a negative errno).
public struct URingCompletion: Sendable, Equatable {
    public var userData: UInt64
    public var result: Int32
    public init(userData: UInt64, result: Int32) {
        self.userData = userData
        self.result = result
    }
}

/// An io_uring submission/completion queue pair. Used by one thread at a time.
public protocol URingQueue: AnyObject {
    /// Registers fixed buffers; reads into them may then pass their index to `prepareRead`.
    func registerBuffers(_ buffers: [UnsafeMutableRawBufferPointer]) throws(Errno)
    /// Queues a read. Throws EBUSY when the submission queue is full.
    func prepareRead(fd: Int32, into buffer: UnsafeMutableRawPointer, count: Int, offset: Int,
                     userData: UInt64, fixedBufferIndex: Int?) throws(Errno)
    /// Hands queued reads to the kernel; returns how many were submitted.
    func submit() throws(Errno) -> Int
    /// Blocks for one completion (may throw EINTR).
    func waitCompletion() throws(Errno) -> URingCompletion
    /// A completion if one is ready, without blocking.
    func peekCompletion() throws(Errno) -> URingCompletion?
}

/// The real thing: libc and liburing (through the CSpoolSys shims).
public struct LinuxSystemCalls: SystemCalls {
    public init() {}

    public func open(_ path: String, flags: Int32) throws(Errno) -> Int32 {
        let fd = posixOpen(path, flags | O_CLOEXEC)
        if fd < 0 { throw Errno.current }
        return fd
    }

    public func close(_ fd: Int32) { posixClose(fd) }

    public func fileSize(_ fd: Int32) throws(Errno) -> Int {
        var st = stat()
        if fstat(fd, &st) != 0 { throw Errno.current }
        return Int(st.st_size)
    }

    public func pread(_ fd: Int32, into buffer: UnsafeMutableRawPointer, count: Int, offset: Int) throws(Errno) -> Int {
        let n = posixPread(fd, buffer, count, offset)
        if n < 0 { throw Errno.current }
        return n
    }

    public func makeURing(entries: Int, asyncSubmission: Bool) throws(Errno) -> any URingQueue {
        try LiburingQueue(entries: entries, asyncSubmission: asyncSubmission)
    }

    public func ioURingDisabledSetting() -> Int? {
        guard let text = readSmallFile("/proc/sys/kernel/io_uring_disabled") else { return nil }
        return Int(text.trimmingWhitespace())
    }

    public func seccompFilterActive() -> Bool {
        guard let text = readSmallFile("/proc/self/status") else { return false }
        for line in text.split(separator: "\n") where line.hasPrefix("Seccomp:") {
            return line.dropFirst("Seccomp:".count).trimmingWhitespace() == "2"
        }
        return false
    }
}

/// liburing through the CSpoolSys shims.
final class LiburingQueue: URingQueue {
    private let ring: OpaquePointer

    init(entries: Int, asyncSubmission: Bool) throws(Errno) {
        var error: Int32 = 0
        guard let r = spool_uring_create(UInt32(clamping: entries), &error) else { throw Errno(error) }
        ring = r
        spool_uring_set_async(r, asyncSubmission ? 1 : 0)
    }

    deinit { spool_uring_destroy(ring) }

    func registerBuffers(_ buffers: [UnsafeMutableRawBufferPointer]) throws(Errno) {
        var bases: [UnsafeMutableRawPointer?] = buffers.map { $0.baseAddress }
        var lengths: [Int] = buffers.map { $0.count }
        let rc = spool_uring_register_buffers(ring, &bases, &lengths, UInt32(buffers.count))
        if rc < 0 { throw Errno(-rc) }
    }

    func prepareRead(fd: Int32, into buffer: UnsafeMutableRawPointer, count: Int, offset: Int,
                     userData: UInt64, fixedBufferIndex: Int?) throws(Errno) {
        let rc = spool_uring_prep_read(ring, fd, buffer, UInt32(count), UInt64(offset), userData,
                                       Int32(fixedBufferIndex ?? -1))
        if rc < 0 { throw Errno(-rc) }
    }

    func submit() throws(Errno) -> Int {
        let rc = spool_uring_submit(ring)
        if rc < 0 { throw Errno(-rc) }
        return Int(rc)
    }

    func waitCompletion() throws(Errno) -> URingCompletion {
        var userData: UInt64 = 0
        var result: Int32 = 0
        let rc = spool_uring_wait(ring, &userData, &result)
        if rc < 0 { throw Errno(-rc) }
        return URingCompletion(userData: userData, result: result)
    }

    func peekCompletion() throws(Errno) -> URingCompletion? {
        var userData: UInt64 = 0
        var result: Int32 = 0
        let rc = spool_uring_peek(ring, &userData, &result)
        if rc == -EAGAIN { return nil }
        if rc < 0 { throw Errno(-rc) }
        return URingCompletion(userData: userData, result: result)
    }
}

/// Reads a small text file (procfs) whole; nil if it cannot be opened.
func readSmallFile(_ path: String) -> String? {
    let fd = posixOpen(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { posixClose(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while bytes.count < 1 << 20 {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        bytes += chunk[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        let scalars = unicodeScalars.drop { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        var s = String(String.UnicodeScalarView(scalars))
        while let last = s.last, last == " " || last == "\t" || last == "\n" || last == "\r" { s.removeLast() }
        return s
    }
}

// Free functions so the SystemCalls methods of the same name can reach libc unqualified (the C
// module is Glibc, Musl or Darwin depending on the platform).
func posixOpen(_ path: String, _ flags: Int32) -> Int32 { open(path, flags) }
func posixClose(_ fd: Int32) { _ = close(fd) }
func posixPread(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, _ offset: Int) -> Int {
    pread(fd, buffer, count, off_t(offset))
}
