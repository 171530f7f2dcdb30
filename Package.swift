// swift-tools-version: 6.0
import PackageDescription

// Only the finished modules are built from main for now: the GGUF reader and writer, the kernel
// references and the KV cache protocol. The forward pass, runtime and CLI are on the branch
// `wip-foundation` until the dequantizer and tokenizer land (issue 2).
let package = Package(
    name: "Spool",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "SpoolFormat", targets: ["SpoolFormat"]),
    ],
    targets: [
        .target(name: "SpoolFormat"),
        .target(name: "SpoolKernels"),
        .target(name: "SpoolKV", dependencies: ["SpoolKernels"]),
        .testTarget(name: "SpoolFormatTests", dependencies: ["SpoolFormat"]),
    ]
)
