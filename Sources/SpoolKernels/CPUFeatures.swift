import CSpoolSys
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Which implementation of the kernels runs.
///
/// `generic` is portable Swift SIMD and is always available (on aarch64 it is the NEON path).
/// `avx2` needs an x86_64 CPU with AVX2 and FMA and an OS that saves YMM state.
/// `avx512vnni` adds AVX-512 F/BW/VL/DQ and VNNI (`vpdpbusd`) with the ZMM state saved; kernels
/// without an AVX-512 version run their AVX2 version at this level. Cases are in ascending order.
public enum KernelLevel: String, Sendable, CaseIterable, CustomStringConvertible {
    case generic
    case avx2
    case avx512vnni

    public var description: String { rawValue }

    /// Whether this machine can run the level.
    public var isSupported: Bool {
        switch self {
        case .generic: return true
        case .avx2: return Self.cpuHasAVX2FMA
        case .avx512vnni: return Self.cpuHasAVX512VNNI
        }
    }

    /// Whether kernels at this level may run AVX2 code (every x86 level above generic).
    @inline(__always)
    var usesAVX2: Bool { self != .generic }

    /// Every level this machine can run, generic first. Tests run each of them.
    public static var supported: [KernelLevel] { allCases.filter(\.isSupported) }

    /// The level the kernels use when none is passed: the best supported one, unless the environment
    /// asks otherwise. `SPOOL_KERNELS=generic|avx2|avx512vnni` picks a level (an unsupported request falls back
    /// to generic); `SPOOL_DISABLE_SIMD=1` is the same as `SPOOL_KERNELS=generic`. Read once.
    public static let selected: KernelLevel = select(
        kernels: environment("SPOOL_KERNELS"), disableSIMD: environment("SPOOL_DISABLE_SIMD"))

    /// `level` if this machine supports it, else generic, so a caller can never reach code the CPU
    /// cannot execute.
    @inline(__always)
    var resolved: KernelLevel { isSupported ? self : .generic }

    /// The choice `selected` makes from the two environment values (public for tests).
    public static func select(kernels: String?, disableSIMD: String?) -> KernelLevel {
        if let d = disableSIMD, !d.isEmpty, d != "0" { return .generic }
        if let name = kernels?.lowercased(), !name.isEmpty {
            return (KernelLevel(rawValue: name) ?? .generic).resolved
        }
        return allCases.last(where: \.isSupported) ?? .generic
    }

    private static let cpuHasAVX2FMA: Bool = spool_cpu_has_avx2_fma() != 0
    private static let cpuHasAVX512VNNI: Bool = spool_cpu_has_avx512_vnni() != 0

    private static func environment(_ name: String) -> String? {
        guard let p = getenv(name) else { return nil }
        return String(cString: p)
    }
}
