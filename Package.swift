// swift-tools-version: 6.0
import PackageDescription

/// cc1-level target features for the AVX2 kernel module (see the comment at its target).
let avx2Flags: [String] = ["+avx2", "+fma", "+f16c"].flatMap { feature in
    ["-Xcc", "-Xclang", "-Xcc", "-target-feature", "-Xcc", "-Xclang", "-Xcc", feature]
}

/// The same for the AVX-512 VNNI kernel module.
let avx512Flags: [String] = ["+avx512f", "+avx512bw", "+avx512vl", "+avx512vnni", "+avx512dq", "+avx2", "+fma", "+f16c"]
    .flatMap { feature in ["-Xcc", "-Xclang", "-Xcc", "-target-feature", "-Xcc", "-Xclang", "-Xcc", feature] }

let package = Package(
    name: "Spool",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "spool", targets: ["spool"]),
        .executable(name: "spool-pack", targets: ["spool-pack"]),
        .library(name: "SpoolRuntime", targets: ["SpoolRuntime"]),
        .executable(name: "spool-make-model", targets: ["spool-make-model"]),
        .executable(name: "spool-io-bench", targets: ["spool-io-bench"]),
        .library(name: "SpoolServer", targets: ["SpoolServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
    ],
    targets: [
        // CRC-32C by the CPU instruction (SSE4.2 / ARMv8 CRC), picked at run time; C because Swift
        // cannot enable a target feature for one function.
        .target(name: "CSpoolCRC"),
        .target(name: "SpoolFormat", dependencies: ["CSpoolCRC"]),
        .target(name: "SpoolTokenizer", dependencies: ["SpoolFormat"]),
        // cpuid / xgetbv and a spin-wait hint, which Swift cannot express. Everything x86-specific in it
        // is behind `#if defined(__x86_64__)`, so it builds unchanged on aarch64.
        .target(name: "CSpoolSys", dependencies: [.target(name: "CLibURing", condition: .when(platforms: [.linux]))]),
        // liburing for the io_uring weight reader: header and `-luring` only; CSpoolSys wraps its
        // static inline helpers (see Sources/CLibURing/shim.h).
        .systemLibrary(name: "CLibURing", pkgConfig: "liburing", providers: [.apt(["liburing-dev"])]),
        // Weight I/O: the WeightReader backends (io_uring, pread, mmap), the layer streamer and the
        // memory-budget planner.
        .target(name: "SpoolIO", dependencies: ["CSpoolSys"]),
        // The AVX2+FMA kernels. These flags turn on the LLVM target features for this module only
        // (Swift takes its codegen target features from the Clang importer's target options; plain
        // `-Xcc -mavx2` works too but is a hard error when compiling for aarch64, whereas a cc1
        // `-target-feature` the target does not know is only a warning there: "'+avx2' is not a
        // recognized feature for this target (ignoring feature)"). SwiftPM cannot condition
        // settings on the architecture, and a manifest check of the host architecture would be wrong
        // for cross builds, so the flags are passed everywhere and every source file of the target is
        // wrapped in `#if arch(x86_64)`: on aarch64 the module is empty and the warning is the only
        // effect. Nothing in this module may run before `KernelLevel` has checked cpuid.
        // (unsafeFlags are allowed because Spool is always the root package.)
        // Arithmetic that reproduces llama.cpp's CPU results (inlinable: compiled in each caller's module).
        .target(name: "SpoolGGMLMath"),
        .target(
            name: "SpoolKernelsAVX2",
            dependencies: ["SpoolGGMLMath"],
            swiftSettings: [.unsafeFlags(avx2Flags)]
        ),
        // The AVX-512 VNNI kernels: same arrangement as SpoolKernelsAVX2 (every file in `#if arch(x86_64)`,
        // nothing runs before `KernelLevel` has checked cpuid and XCR0).
        .target(
            name: "SpoolKernelsAVX512",
            dependencies: ["SpoolKernelsAVX2", "CSpoolSys"],
            swiftSettings: [.unsafeFlags(avx512Flags)]
        ),
        // libnuma for NUMA topology and node-local allocation (apt: libnuma-dev; Linux only).
        .systemLibrary(name: "CNuma", providers: [.apt(["libnuma-dev"])]),
        .target(
            name: "SpoolKernels",
            dependencies: [
                "CSpoolSys", "SpoolGGMLMath", "SpoolKernelsAVX2", "SpoolKernelsAVX512",
                .target(name: "CNuma", condition: .when(platforms: [.linux])),
            ]),
        .target(name: "SpoolKV", dependencies: ["SpoolKernels", "SpoolKernelsAVX2", "SpoolKernelsAVX512"]),
        .target(name: "SpoolModel", dependencies: ["SpoolFormat", "SpoolKernels", "SpoolKV"]),
        .target(name: "SpoolQuant", dependencies: ["SpoolFormat", "SpoolKernels", "SpoolModel", "SpoolRuntime"]),
        .target(name: "SpoolRuntime", dependencies: ["SpoolFormat", "SpoolTokenizer", "SpoolModel", "SpoolKV", "SpoolKernels", "SpoolIO"]),
        // The OpenAI-compatible HTTP server (spool serve): a Hummingbird front over one compute thread.
        .target(
            name: "SpoolServer",
            dependencies: [
                "SpoolRuntime", "SpoolTokenizer",
                .product(name: "Hummingbird", package: "hummingbird"),
            ]
        ),
        // libedit (Debian: libedit-dev) for the chat REPL's line editing and history.
        .systemLibrary(name: "CEditLine", pkgConfig: "libedit", providers: [.apt(["libedit-dev"])]),
        .executableTarget(
            name: "spool",
            dependencies: [
                "SpoolRuntime", "SpoolIO", "SpoolKV",
                "SpoolServer",
                "CEditLine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Writes a Llama-shaped GGUF of any size with random Q4_0 weights (I/O benchmarks only).
        .executableTarget(
            name: "spool-make-model",
            dependencies: ["SpoolFormat", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Tools/MakeModel"
        ),
        // Reads a file as streamed layers with each I/O backend and prints the bandwidth.
        .executableTarget(
            name: "spool-io-bench",
            dependencies: ["SpoolIO", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Tools/IOBench"
        ),
        .executableTarget(
            name: "spool-pack",
            dependencies: [
                "SpoolQuant", "SpoolRuntime", "SpoolTokenizer", "SpoolIO",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Tools/SpoolPack"
        ),
        .target(name: "SpoolTestSupport"),
        .testTarget(name: "SpoolFormatTests", dependencies: ["SpoolFormat", "SpoolTestSupport"]),
        .testTarget(name: "SpoolTokenizerTests", dependencies: ["SpoolTokenizer", "SpoolFormat", "SpoolTestSupport"]),
        .testTarget(name: "SpoolKernelsTests", dependencies: ["SpoolKernels", "SpoolGGMLMath", "SpoolKernelsAVX2", "SpoolKernelsAVX512", "SpoolTestSupport"]),
        .testTarget(name: "SpoolModelTests", dependencies: ["SpoolModel", "SpoolFormat", "SpoolRuntime", "SpoolTestSupport"]),
        .testTarget(name: "SpoolRuntimeTests", dependencies: ["SpoolRuntime", "SpoolIO", "SpoolKV", "SpoolModel", "SpoolTestSupport", "SpoolQuant", "SpoolFormat", "SpoolKernels"]),
        .testTarget(name: "SpoolKVTests", dependencies: ["SpoolKV", "SpoolKernels", "SpoolTestSupport"]),
        .testTarget(name: "SpoolIOTests", dependencies: ["SpoolIO"]),
        .testTarget(name: "SpoolServerTests", dependencies: ["SpoolServer", "SpoolRuntime", "SpoolTestSupport"]),
        .testTarget(name: "SpoolQuantTests", dependencies: ["SpoolQuant", "SpoolFormat", "SpoolModel", "SpoolKernels", "SpoolRuntime", "SpoolTokenizer"]),
    ]
)
