#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Page-level hints for read-only file mappings.
enum PageAdvice {
    /// Drops the whole pages inside `bytes` from the process (MADV_DONTNEED). For a private,
    /// never-written file mapping this only frees residency: the next read of those pages faults
    /// the file's bytes in again, so nothing is lost. Partial pages at either end are kept
    /// (they may hold neighbouring tensors). Failure is harmless and ignored.
    static func dontNeed(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard page > 0 else { return }
        let start = (Int(bitPattern: base) + page - 1) / page * page
        let end = (Int(bitPattern: base) + bytes.count) / page * page
        guard end > start, let p = UnsafeMutableRawPointer(bitPattern: start) else { return }
        _ = madvise(p, end - start, Int32(MADV_DONTNEED))
    }
}
