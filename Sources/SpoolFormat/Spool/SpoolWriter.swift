import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What goes into one extent, in order.
public struct SpoolExtentPlan: Sendable {
    public var name: String
    public var layer: Int?
    /// Tensors with name, shape, bits and group set; offsets and lengths are computed.
    public var tensors: [SpoolTensor]

    public init(name: String, layer: Int?, tensors: [SpoolTensor]) {
        self.name = name
        self.layer = layer
        self.tensors = tensors
    }
}

/// Writes a .spool file extent by extent, in any order, without holding more than one extent.
///
/// The layout is fixed up front from the plan (all sizes follow from shapes and encodings), so the
/// data can be written before the checksums are known; checksums are fixed-width hex in the JSON,
/// so `finish` rewrites the header in place at the same length. The file is written under
/// `path + ".partial"` and renamed on success: a crash never leaves a plausible-looking file.
public final class SpoolWriter {
    public let path: String
    private let tmpPath: String
    private var header: SpoolHeader
    private let fd: Int32
    private var written: [Bool]
    private let headerLength: Int

    public init(path: String, header template: SpoolHeader, plan: [SpoolExtentPlan]) throws(SpoolError) {
        self.path = path
        tmpPath = path + ".partial"
        let (h, json) = try Self.layout(template, plan: plan)
        header = h
        headerLength = json.count
        fd = open(tmpPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .cannotWrite(path: tmpPath, errno: errno) }
        written = Array(repeating: false, count: plan.count)
    }

    /// The directory laid out for `plan` behind `template`'s header (offsets and lengths final,
    /// checksums zero), and its JSON. Every size follows from shapes and encodings, so the layout
    /// is known before any data is written.
    static func layout(_ template: SpoolHeader, plan: [SpoolExtentPlan]) throws(SpoolError) -> (SpoolHeader, Data) {
        var h = template
        h.formatVersion = SpoolFile.currentVersion
        // Lay out at a guessed data offset, then redo until the header fits in front of it.
        var dataOffset = SpoolFile.extentAlignment
        var json: Data
        var rounds = 0
        repeat {
            h.extents = []
            h.tensors = []
            var offset = dataOffset
            for (ei, e) in plan.enumerated() {
                var inExtent = 0
                for var t in e.tensors {
                    guard let size = QuantLayout.tensorBytes(shape: t.shape, bits: t.bits, group: t.group, compactGrid: t.compactGrid) else {
                        throw .badEncoding(tensor: t.name, bits: t.bits, group: t.group)
                    }
                    t.extent = ei
                    t.offset = inExtent
                    t.length = size
                    t.crc32c = CRC32C.hex(0)
                    h.tensors.append(t)
                    inExtent = QuantLayout.align(inExtent + size, QuantLayout.tensorAlignment)
                }
                let length = QuantLayout.align(max(inExtent, 1), SpoolFile.extentAlignment)
                h.extents.append(SpoolExtent(name: e.name, layer: e.layer, offset: offset, length: length, crc32c: CRC32C.hex(0)))
                offset += length
            }
            json = try Self.encode(h)
            let needed = QuantLayout.align(SpoolFile.preambleSize + json.count, SpoolFile.extentAlignment)
            if needed == dataOffset { break }
            dataOffset = needed
            rounds += 1
        } while rounds < 8
        return (h, json)
    }

    /// The length of the file `SpoolWriter` would write for this header and plan (what a size
    /// budget is checked against before packing).
    public static func fileSize(header template: SpoolHeader, plan: [SpoolExtentPlan]) throws(SpoolError) -> Int {
        let (h, json) = try layout(template, plan: plan)
        return h.extents.map { $0.offset + $0.length }.max() ?? QuantLayout.align(SpoolFile.preambleSize + json.count, SpoolFile.extentAlignment)
    }

    deinit {
        close(fd)
    }

    static func encode(_ h: SpoolHeader) throws(SpoolError) -> Data {
        let enc = JSONEncoder()
        enc.keyEncodingStrategy = .convertToSnakeCase
        enc.outputFormatting = [.sortedKeys]
        do { return try enc.encode(h) } catch { throw .invalidHeaderJSON("\(error)") }
    }

    /// The laid-out directory (offsets and lengths final, checksums not yet).
    public var layout: SpoolHeader { header }

    /// Writes extent `index`; `tensors` holds each planned tensor's bytes in plan order.
    public func writeExtent(_ index: Int, tensors data: [[UInt8]]) throws(SpoolError) {
        let e = header.extents[index]
        let ts = header.tensors.indices.filter { header.tensors[$0].extent == index }
        guard ts.count == data.count else { throw .sizeMismatch(tensor: "extent \(e.name)", expected: ts.count, actual: data.count) }
        var buffer = [UInt8](repeating: 0, count: e.length)
        for (k, ti) in ts.enumerated() {
            let t = header.tensors[ti]
            guard data[k].count == t.length else { throw .sizeMismatch(tensor: t.name, expected: t.length, actual: data[k].count) }
            buffer.replaceSubrange(t.offset..<(t.offset + t.length), with: data[k])
            header.tensors[ti].crc32c = CRC32C.hex(CRC32C.checksum(data[k]))
        }
        header.extents[index].crc32c = CRC32C.hex(CRC32C.checksum(buffer))
        try pwriteAll(buffer, at: e.offset)
        written[index] = true
    }

    /// Writes the preamble and final header and renames the file into place.
    public func finish() throws(SpoolError) {
        if let missing = written.firstIndex(of: false) { throw .missingTensor("extent \(header.extents[missing].name) was never written") }
        let json = try Self.encode(header)
        guard json.count == headerLength else { throw .invalidHeaderJSON("header changed length while patching checksums") }
        var pre = SpoolFile.magic
        withUnsafeBytes(of: UInt32(SpoolFile.currentVersion).littleEndian) { pre += $0 }
        withUnsafeBytes(of: SpoolFile.flags(for: header).littleEndian) { pre += $0 }
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { pre += $0 }
        try pwriteAll(pre + Array(json), at: 0)
        let end = header.extents.map { $0.offset + $0.length }.max() ?? QuantLayout.align(SpoolFile.preambleSize + json.count, SpoolFile.extentAlignment)
        guard ftruncate(fd, off_t(end)) == 0, fsync(fd) == 0 else { throw .cannotWrite(path: tmpPath, errno: errno) }
        guard rename(tmpPath, path) == 0 else { throw .cannotWrite(path: path, errno: errno) }
    }

    private func pwriteAll(_ bytes: [UInt8], at offset: Int) throws(SpoolError) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { b in pwrite(fd, b.baseAddress! + done, bytes.count - done, off_t(offset + done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .cannotWrite(path: tmpPath, errno: errno)
            }
            done += n
        }
    }
}
