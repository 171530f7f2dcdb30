// swift-tools-version: 6.0
import PackageDescription

/// cc1-level target features for the AVX2 kernel module (see the comment at its target).
let avx2Flags: [String] = ["+avx2", "+fma", "+f16c"].flatMap { feature in
    ["-Xcc", "-Xclang", "-Xcc", "-target-feature", "-Xcc", "-Xclang", "-Xcc", feature]
}

let package = Package(
    name: "Spool",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "spool", targets: ["spool"]),
        .executable(name: "spool-pack", targets: ["spool-pack"]),
        .library(name: "SpoolRuntime", targets: ["SpoolRuntime"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .target(name: "SpoolFormat"),
        .target(name: "SpoolTokenizer", dependencies: ["SpoolFormat"]),
        // cpuid / xgetbv and a spin-wait hint, which Swift cannot express. Everything x86-specific in it
        // is behind `#if defined(__x86_64__)`, so it builds unchanged on aarch64.
        .target(name: "CSpoolSys"),
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
        .target(
            name: "SpoolKernelsAVX2",
            swiftSettings: [.unsafeFlags(avx2Flags)]
        ),
        .target(name: "SpoolKernels", dependencies: ["CSpoolSys", "SpoolKernelsAVX2"]),
        .target(name: "SpoolKV", dependencies: ["SpoolKernels"]),
        .target(name: "SpoolModel", dependencies: ["SpoolFormat", "SpoolKernels", "SpoolKV"]),
        .target(name: "SpoolQuant", dependencies: ["SpoolFormat", "SpoolKernels", "SpoolModel", "SpoolRuntime"]),
        .target(name: "SpoolRuntime", dependencies: ["SpoolFormat", "SpoolTokenizer", "SpoolModel", "SpoolKV", "SpoolKernels"]),
        .executableTarget(
            name: "spool",
            dependencies: [
                "SpoolRuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "spool-pack",
            dependencies: [
                "SpoolQuant", "SpoolRuntime", "SpoolTokenizer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Tools/SpoolPack"
        ),
        .target(name: "SpoolTestSupport"),
        .testTarget(name: "SpoolFormatTests", dependencies: ["SpoolFormat"]),
        .testTarget(name: "SpoolTokenizerTests", dependencies: ["SpoolTokenizer", "SpoolFormat", "SpoolTestSupport"]),
        .testTarget(name: "SpoolKernelsTests", dependencies: ["SpoolKernels", "SpoolKernelsAVX2"]),
        .testTarget(name: "SpoolModelTests", dependencies: ["SpoolModel", "SpoolFormat", "SpoolRuntime", "SpoolTestSupport"]),
        .testTarget(name: "SpoolQuantTests", dependencies: ["SpoolQuant", "SpoolFormat", "SpoolModel", "SpoolKernels", "SpoolRuntime", "SpoolTokenizer"]),
        .testTarget(name: "SpoolRuntimeTests", dependencies: ["SpoolRuntime", "SpoolTestSupport"]),
    ]
)
