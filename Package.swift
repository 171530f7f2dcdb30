// swift-tools-version: 6.0
import PackageDescription

// Release builds of the numeric code must not pay for overflow traps inside hot loops; those
// loops use explicit wrapping arithmetic and unchecked pointers where it matters, so plain -O is kept.
let package = Package(
    name: "Spool",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "spool", targets: ["spool"]),
        .library(name: "SpoolRuntime", targets: ["SpoolRuntime"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .target(name: "SpoolFormat"),
        .target(name: "SpoolTokenizer", dependencies: ["SpoolFormat"]),
        .target(name: "SpoolKernels"),
        .target(name: "SpoolKV", dependencies: ["SpoolKernels"]),
        .target(name: "SpoolModel", dependencies: ["SpoolFormat", "SpoolKernels", "SpoolKV"]),
        .target(name: "SpoolRuntime", dependencies: ["SpoolFormat", "SpoolTokenizer", "SpoolModel", "SpoolKV", "SpoolKernels"]),
        .executableTarget(
            name: "spool",
            dependencies: [
                "SpoolRuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Locates the default model and the golden files for tests; not part of any product.
        .target(name: "SpoolTestSupport"),
        .testTarget(name: "SpoolFormatTests", dependencies: ["SpoolFormat"]),
        .testTarget(name: "SpoolTokenizerTests", dependencies: ["SpoolTokenizer", "SpoolFormat", "SpoolTestSupport"]),
        .testTarget(name: "SpoolKernelsTests", dependencies: ["SpoolKernels"]),
        .testTarget(name: "SpoolModelTests", dependencies: ["SpoolModel", "SpoolFormat", "SpoolRuntime", "SpoolTestSupport"]),
        .testTarget(name: "SpoolRuntimeTests", dependencies: ["SpoolRuntime", "SpoolTestSupport"]),
    ]
)
