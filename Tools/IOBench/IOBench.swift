// spool-io-bench: reads a file through LayerStreamer with each WeightReader backend (no compute),
// as a model's layers would stream, and prints the achieved read bandwidth. Before each run the
// file's pages are dropped from the page cache (POSIX_FADV_DONTNEED), so mmap reads from disk too.
import ArgumentParser
import SpoolIO

#if canImport(Glibc)
import Glibc
#endif

@main
struct IOBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spool-io-bench",
        abstract: "Read a file as streamed layers with each I/O backend and print the bandwidth.")

    @Argument(help: "File to read (e.g. a model made by spool-make-model).")
    var file: String

    @Option(help: "Backends to run, comma-separated (uring, pread, mmap).")
    var io = "uring,pread,mmap"

    @Option(help: "Layer size the file is cut into, e.g. 64M.")
    var layerSize = "64M"

    @Option(help: "Prefetch depth (layers in flight beyond the one being used).")
    var depth = 2

    @Option(help: "Chunk reads in flight (io_uring entries); the library default.")
    var queueDepth = WeightReaderOptions().queueDepth

    @Option(help: "Read size each layer is split into, e.g. 1M.")
    var chunk = "1M"

    @Option(help: "pread threads.")
    var threads = 4

    @Option(help: "Passes over the file.")
    var passes = 1

    @Option(help: "Memory budget for layer buffers, e.g. 1G: the planner keeps what fits resident and streams the rest.")
    var memBudget: String?

    @Option(help: "Simulated compute per layer in milliseconds (a sleep between acquire and release), to check that reads overlap compute.")
    var computeMs = 0.0

    func run() throws {
        let layer = try ByteSize.parse(layerSize)
        var options = WeightReaderOptions()
        options.queueDepth = queueDepth
        options.chunkSize = try ByteSize.parse(chunk)
        options.preadThreads = threads
        options.allowFallback = false
        for name in io.split(separator: ",") {
            guard let backend = IOBackend(rawValue: String(name)) else { throw ValidationError("unknown backend \(name)") }
            dropFromPageCache(file)
            let opened = try openWeightReader(path: file, backend: backend, options: options)
            let size = opened.reader.fileSize
            let layers = stride(from: 0, to: size, by: layer).map { [Extent(offset: $0, length: min(layer, size - $0))] }
            var resident: Set<Int> = []
            if let memBudget {
                let plan = try MemoryPlanner.plan(.init(fixed: [], layerBytes: layers.map(LayerStreamer.bufferBytes),
                                                        budget: try ByteSize.parse(memBudget), prefetchDepth: depth))
                resident = Set(plan.resident)
                print("plan: \(plan.resident.count) resident, \(plan.streamed.count) streamed, ring \(plan.ringSlots) x "
                      + "\(ByteSize.format(plan.slotBytes)), \(ByteSize.format(plan.totalBytes)) in all, "
                      + "\(ByteSize.format(plan.streamedBytesPerToken)) read per pass")
            }
            let streamer = try LayerStreamer(reader: opened.reader, layers: layers, resident: resident, prefetchDepth: depth)
            let start = now()
            let waitedBefore = streamer.stats.waitNanoseconds
            for _ in 0..<passes {
                for i in layers.indices {
                    _ = try streamer.acquire(i)
                    if computeMs > 0 { usleep(UInt32(computeMs * 1000)) }
                    streamer.release(i)
                }
            }
            let seconds = Double(now() - start) / 1e9
            let s = streamer.stats
            let mb = Double(s.streamedBytesRead) / 1e6
            print("\(backend)\tdirect=\(opened.reader.isDirect)\t\(Int(mb)) MB in \(fmt(seconds)) s\t\(Int(mb / seconds)) MB/s"
                  + "\twaiting \(fmt(100 * Double(s.waitNanoseconds - waitedBefore) / (seconds * 1e9)))%")
        }
    }

    func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    func fmt(_ x: Double) -> String { String(Int((x * 100).rounded()) / 100) + "." + String(format2(Int((x * 100).rounded()) % 100)) }
    func format2(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }

    func dropFromPageCache(_ path: String) {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return }
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        close(fd)
    }
}
