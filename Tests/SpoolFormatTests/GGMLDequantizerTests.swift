import Foundation
import SpoolTestSupport
import XCTest
@testable import SpoolFormat

/// Every dequantizer against blocks whose bytes the test writes and whose values the test works out
/// from the format's definition (ggml-common.h / ggml-quants.c), never from the code under test.
///
/// Each type has (a) a hand-built block with a few values worked out by hand in comments (signs,
/// extremes, the packed scale fields) and (b) pseudo-random blocks checked value by value against
/// a reference written here per value, from the definition, rather than loop by loop like the
/// decoders.
final class GGMLDequantizerTests: XCTestCase {
    // MARK: helpers

    /// f16 bit patterns used as scales, with their values.
    enum H {
        static let one: UInt16 = 0x3C00, two: UInt16 = 0x4000, minusTwo: UInt16 = 0xC000
        static let half: UInt16 = 0x3800, minusHalf: UInt16 = 0xB800
        static let quarter: UInt16 = 0x3400, minusQuarter: UInt16 = 0xB400
        static let eighth: UInt16 = 0x3000, minusEighth: UInt16 = 0xB000
        static let minusOneAndHalf: UInt16 = 0xBE00
        static let max: UInt16 = 0x7BFF          // 65504, the largest finite half
        static let minusMax: UInt16 = 0xFBFF
    }

    /// The value of an f16 bit pattern, from the IEEE definition: (-1)^s * 2^(e-15) * (1 + m/1024),
    /// or 2^-14 * m/1024 when e == 0. Only finite patterns are used as scales here.
    static func halfValue(_ h: UInt16) -> Float {
        let s: Float = h & 0x8000 != 0 ? -1 : 1
        let e = Int((h >> 10) & 0x1F), m = Float(h & 0x3FF)
        if e == 0 { return s * Float(sign: .plus, exponent: -14, significand: m / 1024) }
        return s * Float(sign: .plus, exponent: e - 15, significand: 1 + m / 1024)
    }

    static func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
    static func le32(_ v: UInt32) -> [UInt8] { (0 ..< 4).map { UInt8((v >> (8 * UInt32($0))) & 0xFF) } }
    static func put(_ bytes: [UInt8], at offset: Int, in block: inout [UInt8]) {
        block.replaceSubrange(offset ..< offset + bytes.count, with: bytes)
    }

    /// A reproducible byte stream (64-bit LCG, top byte).
    struct Bytes {
        var state: UInt64
        mutating func next() -> UInt8 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(state >> 56)
        }
        mutating func take(_ n: Int) -> [UInt8] { (0 ..< n).map { _ in next() } }
    }

    func decode(_ type: GGMLType, _ bytes: [UInt8], count: Int) throws -> [Float] {
        var out = [Float](repeating: .nan, count: max(count, 1))
        try bytes.withUnsafeBytes { src in
            try out.withUnsafeMutableBufferPointer { y in
                try GGMLDequantizer.dequantize(type, from: src, count: count, into: y.baseAddress!)
            }
        }
        return Array(out.prefix(count))
    }

    func assertValues(_ actual: [Float], _ expected: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, what, file: file, line: line)
        var failures = 0
        for i in 0 ..< min(actual.count, expected.count) {
            let a = actual[i], e = expected[i]
            let ok = a == e || (a.isNaN && e.isNaN) || abs(a - e) <= 1e-6 * max(1, abs(e))
            if !ok {
                failures += 1
                if failures <= 5 { XCTFail("\(what): value \(i) is \(a), expected \(e)", file: file, line: line) }
            }
        }
    }

    /// Checks `spots` (index: value worked out by hand), then every value against `reference`, then
    /// that two different blocks decode correctly side by side (the block stride).
    func checkType(_ type: GGMLType, handBlock: [UInt8], spots: [Int: Float], randomBlock: (inout Bytes) -> [UInt8],
                   reference: ([UInt8], Int) -> Float, file: StaticString = #filePath, line: UInt = #line) throws {
        let n = type.blockSize
        XCTAssertEqual(handBlock.count, type.typeSize, "\(type) hand block size", file: file, line: line)
        let got = try decode(type, handBlock, count: n)
        for (i, v) in spots.sorted(by: { $0.key < $1.key }) {
            XCTAssertEqual(got[i], v, "\(type) hand block value \(i)", file: file, line: line)
        }
        assertValues(got, (0 ..< n).map { reference(handBlock, $0) }, "\(type) hand block", file: file, line: line)

        var rng = Bytes(state: UInt64(type.rawValue) &+ 12345)
        var blocks: [[UInt8]] = [handBlock]
        for _ in 0 ..< 3 { blocks.append(randomBlock(&rng)) }
        let all = try decode(type, blocks.flatMap { $0 }, count: n * blocks.count)
        let expected = blocks.flatMap { b in (0 ..< n).map { reference(b, $0) } }
        assertValues(all, expected, "\(type) four blocks", file: file, line: line)
        XCTAssertFalse(all.contains { $0.isNaN }, "\(type) produced NaN from finite scales", file: file, line: line)
    }

    /// A random block whose f16 fields at `halfOffsets` hold finite scales (random exponents 2^-8...2^7,
    /// random sign), the rest random bytes.
    static func randomBlock(_ size: Int, halfOffsets: [Int], _ rng: inout Bytes) -> [UInt8] {
        var b = rng.take(size)
        for o in halfOffsets {
            let exponent = UInt16(7 + rng.next() % 16)               // biased 7...22: 2^-8 ... 2^7
            let bits = (UInt16(rng.next() & 0x80) << 8) | (exponent << 10) | (UInt16(rng.next()) << 2 & 0x3FF)
            put(le16(bits), at: o, in: &b)
        }
        return b
    }

    // MARK: layout and dispatch

    func testBlockLayoutsMatchGGMLTypeSizes() {
        let supported: [GGMLType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K]
        for type in GGMLType.allCases {
            guard let format = GGMLDequantizer.format(for: type) else {
                XCTAssertFalse(supported.contains(type), "\(type) must have a dequantizer")
                XCTAssertFalse(GGMLDequantizer.supports(type))
                continue
            }
            XCTAssertTrue(supported.contains(type), "\(type) is not on the list")
            XCTAssertTrue(format.type == type, "\(type) dispatches to the format of \(format.type)")
            XCTAssertEqual(format.bytesPerBlock, type.typeSize, "\(type) block bytes")
            XCTAssertEqual(format.valuesPerBlock, type.blockSize, "\(type) block values")
        }
        // The sizes of the C structs in ggml-common.h, stated independently of GGMLType.
        let cSizes: [GGMLType: Int] = [.q4_0: 18, .q4_1: 20, .q5_0: 22, .q5_1: 24, .q8_0: 34,
                                       .q2_K: 84, .q3_K: 110, .q4_K: 144, .q5_K: 176, .q6_K: 210]
        for (type, size) in cSizes { XCTAssertEqual(GGMLDequantizer.format(for: type)?.bytesPerBlock, size, "\(type)") }
    }

    // MARK: floats

    func testHalfToFloatMatchesTheDefinition() {
        XCTAssertEqual(halfToFloat(0x0000).bitPattern, Float(0).bitPattern)
        XCTAssertEqual(halfToFloat(0x8000).bitPattern, (-Float(0)).bitPattern)
        XCTAssertEqual(halfToFloat(0x3C00), 1)
        XCTAssertEqual(halfToFloat(0xC000), -2)
        XCTAssertEqual(halfToFloat(0x3555), 0x1.554p-2)      // 0.333251953125
        XCTAssertEqual(halfToFloat(0x7BFF), 65504)
        XCTAssertEqual(halfToFloat(0x0001), 0x1p-24)         // smallest subnormal
        XCTAssertEqual(halfToFloat(0x83FF), -1023 * 0x1p-24) // largest subnormal, negative
        XCTAssertEqual(halfToFloat(0x0400), 0x1p-14)         // smallest normal
        XCTAssertEqual(halfToFloat(0x7C00), .infinity)
        XCTAssertEqual(halfToFloat(0xFC00), -.infinity)
        XCTAssertTrue(halfToFloat(0x7E00).isNaN)
        XCTAssertTrue(halfToFloat(0xFC01).isNaN)
        for h in [H.one, H.two, H.minusTwo, H.half, H.minusHalf, H.quarter, H.minusQuarter, H.eighth,
                  H.minusEighth, H.minusOneAndHalf, H.max, H.minusMax] {
            XCTAssertEqual(halfToFloat(h), Self.halfValue(h), "f16 0x\(String(h, radix: 16))")
        }
    }

    #if !(os(macOS) && arch(x86_64))
    /// All 65536 patterns against the platform's own binary16 conversion.
    func testHalfToFloatAgreesWithFloat16Everywhere() {
        var mismatches = 0
        for bits in 0 ... UInt16.max {
            let mine = halfToFloat(bits), theirs = Float(Float16(bitPattern: bits))
            if theirs.isNaN ? !mine.isNaN : mine.bitPattern != theirs.bitPattern { mismatches += 1 }
        }
        XCTAssertEqual(mismatches, 0)
    }
    #endif

    func testF32() throws {
        let values: [Float] = [1.5, -0.0, .infinity, -3.4e38, Float(bitPattern: 1), -7.25]
        let bytes = values.flatMap { Self.le32($0.bitPattern) }
        let got = try decode(.f32, bytes, count: values.count)
        XCTAssertEqual(got.map(\.bitPattern), values.map(\.bitPattern))
        XCTAssertTrue(try decode(.f32, Self.le32(0x7FC0_0001), count: 1)[0].isNaN)
    }

    func testF16() throws {
        let patterns: [UInt16] = [0x3C00, 0xC000, 0x8000, 0x7BFF, 0xFBFF, 0x0001, 0x03FF, 0x7C00, 0xFC00, 0x3555]
        let expected: [Float] = [1, -2, -0.0, 65504, -65504, 0x1p-24, 1023 * 0x1p-24, .infinity, -.infinity, 0x1.554p-2]
        let got = try decode(.f16, patterns.flatMap(Self.le16), count: patterns.count)
        XCTAssertEqual(got.map(\.bitPattern), expected.map(\.bitPattern))
        XCTAssertTrue(try decode(.f16, Self.le16(0x7E00), count: 1)[0].isNaN)
    }

    func testBF16() throws {
        // bf16 is the top half of a binary32: 0x3F80 -> 0x3F800000 = 1.0, and so on.
        let patterns: [UInt16] = [0x3F80, 0xC040, 0x8000, 0x7F7F, 0x0001, 0x7F80, 0xFF80, 0x3E20]
        let expected: [Float] = [1, -3, -0.0, Float(bitPattern: 0x7F7F_0000), Float(bitPattern: 0x0001_0000), .infinity, -.infinity, 0.15625]
        let got = try decode(.bf16, patterns.flatMap(Self.le16), count: patterns.count)
        XCTAssertEqual(got.map(\.bitPattern), expected.map(\.bitPattern))
        XCTAssertEqual(got[3], 3.3895314e38)
        XCTAssertTrue(try decode(.bf16, Self.le16(0x7FC1), count: 1)[0].isNaN)
    }

    // MARK: 32-value blocks

    /// Value v of a 32-value block's packed nibbles: low nibble of qs[v] for v < 16, else the high
    /// nibble of qs[v - 16].
    static func nibble32(_ b: [UInt8], qs: Int, _ v: Int) -> Int {
        v < 16 ? Int(b[qs + v] & 0x0F) : Int(b[qs + v - 16] >> 4)
    }

    /// Bit v of the little-endian u32 at `offset`.
    static func bit32(_ b: [UInt8], at offset: Int, _ v: Int) -> Int { Int(b[offset + v / 8] >> UInt8(v % 8)) & 1 }

    func testQ4_0() throws {
        // d = -0.5; qs[j] = j | (15 - j) << 4, so value j is j and value j + 16 is 15 - j.
        var b = Self.le16(H.minusHalf)
        b += (0 ..< 16).map { UInt8($0) | UInt8(15 - $0) << 4 }
        let reference = { (b: [UInt8], v: Int) -> Float in
            Self.halfValue(UInt16(b[0]) | UInt16(b[1]) << 8) * Float(Self.nibble32(b, qs: 2, v) - 8)
        }
        try checkType(.q4_0, handBlock: b,
                      spots: [0: 4, 8: 0, 15: -3.5, 16: -3.5, 31: 4], // -0.5*(0-8), -0.5*(8-8), -0.5*(15-8), -0.5*(15-8), -0.5*(0-8)
                      randomBlock: { Self.randomBlock(18, halfOffsets: [0], &$0) }, reference: reference)
        // The largest scale with the extreme codes: 65504 * -8 and 65504 * 7.
        var e = Self.le16(H.max) + [UInt8](repeating: 0xF0, count: 16)
        let got = try decode(.q4_0, e, count: 32)
        XCTAssertEqual(got[0], -524032)
        XCTAssertEqual(got[16], 458528)
        e[0] = 0; e[1] = 0x7C                           // d = +inf: inf * 7, inf * -8, never a crash
        XCTAssertEqual(try decode(.q4_0, e, count: 32)[16], .infinity)
    }

    func testQ4_1() throws {
        // d = 0.25, m = -1.5; qs[j] = 0xF0 | (j & 0xF).
        var b = Self.le16(H.quarter) + Self.le16(H.minusOneAndHalf)
        b += (0 ..< 16).map { 0xF0 | UInt8($0) }
        let reference = { (b: [UInt8], v: Int) -> Float in
            let d = Self.halfValue(UInt16(b[0]) | UInt16(b[1]) << 8), m = Self.halfValue(UInt16(b[2]) | UInt16(b[3]) << 8)
            return d * Float(Self.nibble32(b, qs: 4, v)) + m
        }
        try checkType(.q4_1, handBlock: b,
                      spots: [0: -1.5, 5: -0.25, 15: 2.25, 16: 2.25, 31: 2.25], // 0.25*q - 1.5 for q = 0, 5, 15, 15, 15
                      randomBlock: { Self.randomBlock(20, halfOffsets: [0, 2], &$0) }, reference: reference)
    }

    func testQ5_0() throws {
        // d = 0.5; qh = 0x8000_0001: value 0 and value 31 have their fifth bit set.
        var b = Self.le16(H.half) + Self.le32(0x8000_0001) + [UInt8](repeating: 0, count: 16)
        b[6 + 0] = 0x0F    // value 0: 15 | 16 = 31; value 16: 0
        b[6 + 15] = 0xA0   // value 15: 0; value 31: 10 | 16 = 26
        b[6 + 3] = 0x7E    // value 3: 14; value 19: 7
        let reference = { (b: [UInt8], v: Int) -> Float in
            let q = Self.nibble32(b, qs: 6, v) | Self.bit32(b, at: 2, v) << 4
            return Self.halfValue(UInt16(b[0]) | UInt16(b[1]) << 8) * Float(q - 16)
        }
        try checkType(.q5_0, handBlock: b,
                      spots: [0: 7.5, 16: -8, 15: -8, 31: 5, 3: -1, 19: -4.5], // 0.5*(31-16), 0.5*(0-16), ..., 0.5*(26-16), 0.5*(14-16), 0.5*(7-16)
                      randomBlock: { Self.randomBlock(22, halfOffsets: [0], &$0) }, reference: reference)
    }

    func testQ5_1() throws {
        // d = -0.25, m = 2; qh = 0x0001_0000: only value 16 has its fifth bit set.
        var b = Self.le16(H.minusQuarter) + Self.le16(H.two) + Self.le32(0x0001_0000) + [UInt8](repeating: 0xFF, count: 16)
        b[8 + 0] = 0x3C    // value 0: 12; value 16: 3 | 16 = 19
        let reference = { (b: [UInt8], v: Int) -> Float in
            let d = Self.halfValue(UInt16(b[0]) | UInt16(b[1]) << 8), m = Self.halfValue(UInt16(b[2]) | UInt16(b[3]) << 8)
            return d * Float(Self.nibble32(b, qs: 8, v) | Self.bit32(b, at: 4, v) << 4) + m
        }
        try checkType(.q5_1, handBlock: b,
                      spots: [0: -1, 16: -2.75, 1: -1.75, 17: -1.75], // -0.25*12+2, -0.25*19+2, -0.25*15+2 (no fifth bit)
                      randomBlock: { Self.randomBlock(24, halfOffsets: [0, 2], &$0) }, reference: reference)
    }

    func testQ8_0() throws {
        // d = -0.125; signed bytes.
        var b = Self.le16(H.minusEighth) + [UInt8](repeating: 0, count: 32)
        b[2 + 0] = 0x80; b[2 + 1] = 0x7F; b[2 + 2] = 0xFF; b[2 + 31] = 0x08
        let reference = { (b: [UInt8], v: Int) -> Float in
            Self.halfValue(UInt16(b[0]) | UInt16(b[1]) << 8) * Float(Int8(bitPattern: b[2 + v]))
        }
        try checkType(.q8_0, handBlock: b,
                      spots: [0: 16, 1: -15.875, 2: 0.125, 3: -0, 31: -1], // -0.125 * (-128, 127, -1, 0, 8)
                      randomBlock: { Self.randomBlock(34, halfOffsets: [0], &$0) }, reference: reference)
    }

    // MARK: k-quants

    /// For the 2-bit planes of Q2_K/Q3_K: value v of a super-block is bits 2j...2j+1 of
    /// qs[32 * (v / 128) + v % 32], with j = (v % 128) / 32.
    static func crumb(_ b: [UInt8], qs: Int, _ v: Int) -> Int {
        Int(b[qs + 32 * (v / 128) + v % 32] >> UInt8(2 * ((v % 128) / 32))) & 3
    }

    /// For the 4-bit planes of Q4_K/Q5_K: value v is the low nibble of qs[32c + r] when r < 32, else
    /// the high nibble of qs[32c + r - 32], with c = v / 64 and r = v % 64.
    static func nibble256(_ b: [UInt8], qs: Int, _ v: Int) -> Int {
        let c = v / 64, r = v % 64
        return r < 32 ? Int(b[qs + 32 * c + r] & 0x0F) : Int(b[qs + 32 * c + r - 32] >> 4)
    }

    static func half(_ b: [UInt8], _ o: Int) -> Float { halfValue(UInt16(b[o]) | UInt16(b[o + 1]) << 8) }

    func testQ2_K() throws {
        // scales at 0, qs at 16, d at 80 (0.5), dmin at 82 (0.25).
        var b = [UInt8](repeating: 0, count: 84)
        Self.put(Self.le16(H.half), at: 80, in: &b)
        Self.put(Self.le16(H.quarter), at: 82, in: &b)
        b[0] = 0xF3        // sub-block 0: scale 3, min 15
        b[2] = 0x11        // sub-block 2: scale 1, min 1
        b[15] = 0x2F       // sub-block 15: scale 15, min 2
        b[16 + 0] = 0xE4   // qs[0] = 0b11_10_01_00: value 0 -> 0, value 32 -> 1, value 64 -> 2, value 96 -> 3
        b[16 + 63] = 0xC0  // qs[63] top bits: value 255 -> 3
        let reference = { (b: [UInt8], v: Int) -> Float in
            let sc = b[v / 16]
            return Self.half(b, 80) * Float(sc & 0x0F) * Float(Self.crumb(b, qs: 16, v)) - Self.half(b, 82) * Float(sc >> 4)
        }
        try checkType(.q2_K, handBlock: b,
                      spots: [0: -3.75,   // 0.5*3*0 - 0.25*15
                              32: 0.25,   // 0.5*1*1 - 0.25*1
                              255: 22,    // 0.5*15*3 - 0.25*2
                              64: 0],     // sub-block 4 has scale 0, min 0
                      randomBlock: { Self.randomBlock(84, halfOffsets: [80, 82], &$0) }, reference: reference)
    }

    /// Packs sixteen 6-bit Q3_K scales as the quantizer does: low nibbles in bytes 0...7 (scales
    /// 8...15 in the high nibbles), top 2 bits of scale i at bit 2*(i/4) of byte 8 + i%4.
    static func packQ3Scales(_ s: [Int]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 12)
        for (i, v) in s.enumerated() {
            if i < 8 { out[i] |= UInt8(v & 0x0F) } else { out[i - 8] |= UInt8(v & 0x0F) << 4 }
            out[8 + i % 4] |= UInt8(v >> 4) << UInt8(2 * (i / 4))
        }
        return out
    }

    func testQ3_K() throws {
        // hmask at 0, qs at 32, scales at 96, d at 108 (-2). The scales cover 0, 63 and values whose
        // top bits land in every 2-bit field of bytes 8...11.
        let scales = [0, 63, 32, 31, 1, 62, 48, 15, 16, 47, 33, 5, 60, 3, 40, 20]
        var b = [UInt8](repeating: 0, count: 110)
        Self.put(Self.packQ3Scales(scales), at: 96, in: &b)
        Self.put(Self.le16(H.minusTwo), at: 108, in: &b)
        b[32 + 0] = 0x03; b[0] = 0x01      // value 0: q 3, high bit set -> 3
        b[32 + 63] = 0x40; b[31] = 0x00    // value 255: q 1 (bits 6-7 of qs[63]), high bit 7 of hmask[31] clear -> 1 - 4
        b[31] |= 0x40                      // value 223 (plane 6, byte 31): high bit set -> q 0
        let reference = { (b: [UInt8], v: Int) -> Float in
            let high = Int(b[v % 32] >> UInt8(v / 32)) & 1
            let q = Self.crumb(b, qs: 32, v) - (high == 1 ? 0 : 4)
            return Self.half(b, 108) * Float(scales[v / 16] - 32) * Float(q)
        }
        try checkType(.q3_K, handBlock: b,
                      spots: [0: 192,      // -2 * (0 - 32) * 3
                              16: 248,     // -2 * (63 - 32) * (0 - 4)
                              200: 224,    // -2 * (60 - 32) * (0 - 4)
                              223: 0,      // high bit set, q 0
                              255: -72],   // -2 * (20 - 32) * (1 - 4)
                      randomBlock: { rng in
                          var r = Self.randomBlock(110, halfOffsets: [108], &rng)
                          Self.put(Self.packQ3Scales(scales), at: 96, in: &r)   // the reference knows these scales
                          return r
                      }, reference: reference)
        // The random blocks above share one scale set; check a fully random scale field too, by the
        // unpacking rule stated directly: low nibble from byte i (or i-8, high nibble), top bits from byte 8 + i%4.
        var rng = Bytes(state: 99)
        let r = Self.randomBlock(110, halfOffsets: [108], &rng)
        let got = try decode(.q3_K, r, count: 256)
        for v in 0 ..< 256 {
            let i = v / 16
            let low = i < 8 ? Int(r[96 + i] & 0x0F) : Int(r[96 + i - 8] >> 4)
            let top = Int(r[96 + 8 + i % 4] >> UInt8(2 * (i / 4))) & 3
            let high = Int(r[v % 32] >> UInt8(v / 32)) & 1
            let expected = Self.half(r, 108) * Float((low | top << 4) - 32) * Float(Self.crumb(r, qs: 32, v) - 4 + 4 * high)
            XCTAssertEqual(got[v], expected, "Q3_K random scales, value \(v)")
        }
    }

    /// Packs eight 6-bit (scale, min) pairs as the Q4_K/Q5_K quantizer does: pairs 0...3 in the low 6
    /// bits of bytes 0...3 (scales) and 4...7 (mins); pairs 4...7 as nibbles in bytes 8...11 (scale
    /// low, min high) with their top 2 bits in bits 6-7 of bytes j-4 (scale) and j (min).
    static func packK4Scales(_ sc: [Int], _ mn: [Int]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 12)
        for j in 0 ..< 8 {
            if j < 4 {
                out[j] |= UInt8(sc[j]); out[j + 4] |= UInt8(mn[j])
            } else {
                out[j + 4] = UInt8(sc[j] & 0x0F) | UInt8(mn[j] & 0x0F) << 4
                out[j - 4] |= UInt8(sc[j] >> 4) << 6
                out[j] |= UInt8(mn[j] >> 4) << 6
            }
        }
        return out
    }

    func testQ4_K() throws {
        // d at 0 (0.5), dmin at 2 (0.25), scales at 4, qs at 16. Pairs 4...7 have top bits set
        // (33, 48, 63; mins 44, 63, 16) so the bits borrowed from bytes 0...7 matter.
        let sc = [1, 63, 0, 17, 33, 48, 63, 5], mn = [2, 0, 63, 9, 44, 63, 16, 1]
        var b = Self.le16(H.half) + Self.le16(H.quarter) + Self.packK4Scales(sc, mn) + [UInt8](repeating: 0, count: 128)
        b[16 + 0] = 0xF7      // value 0: 7 (sub-block 0); value 32: 15 (sub-block 1)
        b[16 + 64 + 5] = 0x0C // value 133: 12 (sub-block 4)
        b[16 + 127] = 0xA0    // value 255: 10 (sub-block 7)
        let reference = { (b: [UInt8], v: Int) -> Float in
            Self.half(b, 0) * Float(sc[v / 32] * Self.nibble256(b, qs: 16, v)) - Self.half(b, 2) * Float(mn[v / 32])
        }
        try checkType(.q4_K, handBlock: b,
                      spots: [0: 3,        // 0.5*1*7 - 0.25*2
                              32: 472.5,   // 0.5*63*15 - 0.25*0
                              64: -15.75,  // 0.5*0*0 - 0.25*63
                              133: 187,    // 0.5*33*12 - 0.25*44
                              255: 24.75], // 0.5*5*10 - 0.25*1
                      randomBlock: { rng in
                          var r = Self.randomBlock(144, halfOffsets: [0, 2], &rng)
                          Self.put(Self.packK4Scales(sc, mn), at: 4, in: &r)
                          return r
                      }, reference: reference)
        try checkRandomK4Scales(.q4_K, size: 144, qh: nil, qs: 16)
    }

    func testQ5_K() throws {
        // d at 0 (-0.5, a negative super-scale), dmin at 2 (0.125), scales at 4, qh at 16, qs at 48.
        let sc = [10, 63, 7, 0, 40, 17, 32, 50], mn = [4, 63, 1, 0, 20, 48, 0, 60]
        var b = Self.le16(H.minusHalf) + Self.le16(H.eighth) + Self.packK4Scales(sc, mn) + [UInt8](repeating: 0, count: 32 + 128)
        b[48 + 0] = 0x21; b[16 + 0] = 0x03   // value 0: 1 | 16 = 17; value 32: 2 | 16 = 18
        b[48 + 127] = 0xF0; b[16 + 31] = 0x80 // value 255: 15 | 16 = 31
        b[48 + 72] = 0x09                     // value 136 (chunk 2, r = 8: low nibble of qs[72], sub-block 4): 9, no fifth bit
        let reference = { (b: [UInt8], v: Int) -> Float in
            let q = Self.nibble256(b, qs: 48, v) | (Int(b[16 + v % 32] >> UInt8(v / 32)) & 1) << 4
            return Self.half(b, 0) * Float(sc[v / 32] * q) - Self.half(b, 2) * Float(mn[v / 32])
        }
        try checkType(.q5_K, handBlock: b,
                      spots: [0: -85.5,      // -0.5*10*17 - 0.125*4
                              32: -574.875,  // -0.5*63*18 - 0.125*63
                              136: -182.5,   // -0.5*40*9 - 0.125*20
                              255: -782.5],  // -0.5*50*31 - 0.125*60
                      randomBlock: { rng in
                          var r = Self.randomBlock(176, halfOffsets: [0, 2], &rng)
                          Self.put(Self.packK4Scales(sc, mn), at: 4, in: &r)
                          return r
                      }, reference: reference)
        try checkRandomK4Scales(.q5_K, size: 176, qh: 16, qs: 48)
    }

    /// Q4_K/Q5_K with a fully random scale field, unpacked here by the rule stated directly.
    func checkRandomK4Scales(_ type: GGMLType, size: Int, qh: Int?, qs: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        var rng = Bytes(state: 7 &+ UInt64(type.rawValue))
        let r = Self.randomBlock(size, halfOffsets: [0, 2], &rng)
        let got = try decode(type, r, count: 256)
        let s = Array(r[4 ..< 16])
        for v in 0 ..< 256 {
            let j = v / 32
            let scale = j < 4 ? Int(s[j] & 63) : Int(s[j + 4] & 0x0F) | Int(s[j - 4] >> 6) << 4
            let minimum = j < 4 ? Int(s[j + 4] & 63) : Int(s[j + 4] >> 4) | Int(s[j] >> 6) << 4
            var q = Self.nibble256(r, qs: qs, v)
            if let qh { q |= (Int(r[qh + v % 32] >> UInt8(v / 32)) & 1) << 4 }
            let expected = Self.half(r, 0) * Float(scale * q) - Self.half(r, 2) * Float(minimum)
            XCTAssertEqual(got[v], expected, "\(type) random scales, value \(v)", file: file, line: line)
        }
    }

    func testQ6_K() throws {
        // ql at 0, qh at 128, signed scales at 192, d at 208 (0.25).
        let scales: [Int8] = [-128, 127, -1, 0, 1, -64, 63, 5, -5, 100, -100, 2, -2, 7, -7, 64]
        var b = [UInt8](repeating: 0, count: 210)
        Self.put(scales.map { UInt8(bitPattern: $0) }, at: 192, in: &b)
        Self.put(Self.le16(H.quarter), at: 208, in: &b)
        b[0] = 0x0F; b[128 + 0] = 0x03     // value 0: 15 | 3 << 4 = 63; value 32 (ql[32] low, qh bits 2-3): 0; value 64 (ql[0] high, bits 4-5): 0
        b[16] = 0x01; b[128 + 16] = 0x02   // value 16: 1 | 2 << 4 = 33
        b[127] = 0x50; b[128 + 63] = 0x80  // value 255 (ql[64+63] high nibble, qh[32+31] bits 6-7): 5 | 2 << 4 = 37
        let reference = { (b: [UInt8], v: Int) -> Float in
            let half = v / 128, r = v % 128, k = r / 32, l = r % 32
            let lowByte = b[64 * half + l + 32 * (k & 1)]
            let low = k < 2 ? Int(lowByte & 0x0F) : Int(lowByte >> 4)
            let top = Int(b[128 + 32 * half + l] >> UInt8(2 * k)) & 3
            return Self.half(b, 208) * Float(Int(Int8(bitPattern: b[192 + v / 16])) * ((low | top << 4) - 32))
        }
        try checkType(.q6_K, handBlock: b,
                      spots: [0: -992,    // 0.25 * -128 * (63 - 32)
                              16: 31.75,  // 0.25 * 127 * (33 - 32)
                              32: 8,      // 0.25 * -1 * (0 - 32)
                              64: -8,     // 0.25 * 1 * (0 - 32)
                              255: 80],   // 0.25 * 64 * (37 - 32)
                      randomBlock: { Self.randomBlock(210, halfOffsets: [208], &$0) }, reference: reference)
    }

    // MARK: errors

    func assertDequantizeError(_ type: GGMLType, bytes: Int, count: Int, _ expected: DequantizeError, file: StaticString = #filePath, line: UInt = #line) {
        let src = [UInt8](repeating: 0x11, count: bytes)
        var out = [Float](repeating: 42, count: 1024)
        do {
            try src.withUnsafeBytes { s in
                try out.withUnsafeMutableBufferPointer { try GGMLDequantizer.dequantize(type, from: s, count: count, into: $0.baseAddress!) }
            }
            XCTFail("expected \(expected)", file: file, line: line)
        } catch let e as DequantizeError {
            XCTAssertEqual(e, expected, file: file, line: line)
            XCTAssertFalse(e.description.isEmpty)
        } catch {
            XCTFail("untyped error \(error)", file: file, line: line)
        }
        XCTAssertTrue(out.allSatisfy { $0 == 42 }, "output written despite the error", file: file, line: line)
    }

    func testCountNotWholeBlocks() {
        assertDequantizeError(.q4_0, bytes: 100, count: 33, .countNotWholeBlocks(type: .q4_0, count: 33, blockSize: 32))
        assertDequantizeError(.q6_K, bytes: 1000, count: 255, .countNotWholeBlocks(type: .q6_K, count: 255, blockSize: 256))
        assertDequantizeError(.q8_0, bytes: 100, count: -32, .countNotWholeBlocks(type: .q8_0, count: -32, blockSize: 32))
        assertDequantizeError(.f32, bytes: 100, count: -1, .countNotWholeBlocks(type: .f32, count: -1, blockSize: 1))
    }

    func testSourceTooShortForEveryType() {
        for type in GGMLType.allCases where GGMLDequantizer.supports(type) {
            let n = type.blockSize * 2, needed = type.typeSize * 2
            assertDequantizeError(type, bytes: needed - 1, count: n, .sourceTooShort(type: type, count: n, needed: needed, available: needed - 1))
            assertDequantizeError(type, bytes: 0, count: n, .sourceTooShort(type: type, count: n, needed: needed, available: 0))
        }
    }

    func testByteCountOverflow() {
        // Q8_0 stores 32 values in 34 bytes, so the largest whole-block count needs more than Int.max bytes.
        let count = Int.max - Int.max % 32
        assertDequantizeError(.q8_0, bytes: 10, count: count, .byteCountOverflow(type: .q8_0, count: count))
        assertDequantizeError(.f32, bytes: 10, count: Int.max, .byteCountOverflow(type: .f32, count: Int.max))
    }

    func testUnsupportedTypes() {
        for type in [GGMLType.q8_1, .q8_K, .f64, .i8, .i16, .i32, .i64] {
            assertDequantizeError(type, bytes: 4096, count: 256, .unsupportedType(type))
        }
    }

    func testZeroCountAndLongerSource() throws {
        XCTAssertEqual(try decode(.q4_K, [], count: 0), [])
        // A source longer than needed is fine: only the first block is read.
        var b = Self.le16(H.one) + [UInt8](repeating: 0x01, count: 32)
        b += [UInt8](repeating: 0xFF, count: 7)
        XCTAssertEqual(try decode(.q8_0, b, count: 32), [Float](repeating: 1, count: 32))
    }

    // MARK: the default model

    /// Decodes every Q4_1 and Q8_0 tensor of the default model: finite values, plausible spread, and
    /// every value equal to the per-value definition.
    func testDefaultModelTensorsDecodePlausibly() throws {
        guard let path = try TestAssets.modelPath() else { throw XCTSkip("default model not present; run Tools/fetch-model.sh") }
        let gguf = try GGUFFile(path: path)
        var seen: [GGMLType: (tensors: Int, values: Int, seconds: Double)] = [:]
        var stdRange = (low: Double.infinity, high: 0.0), largestMean = 0.0
        for t in gguf.tensors where t.type == .q4_1 || t.type == .q8_0 {
            let n = t.elementCount
            let y = UnsafeMutablePointer<Float>.allocate(capacity: n)
            defer { y.deallocate() }
            let data = gguf.data(of: t)
            let start = DispatchTime.now().uptimeNanoseconds
            try GGMLDequantizer.dequantize(t.type, from: data, count: n, into: y)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9

            var sum = 0.0, sumSquares = 0.0, nonFinite = 0
            for i in 0 ..< n {
                let v = Double(y[i])
                if !v.isFinite { nonFinite += 1; continue }
                sum += v; sumSquares += v * v
            }
            let mean = sum / Double(n), std = (sumSquares / Double(n) - mean * mean).squareRoot()
            XCTAssertEqual(nonFinite, 0, "\(t.name): non-finite values")
            XCTAssertLessThan(abs(mean), 0.05, "\(t.name) (\(t.type)) mean \(mean)")
            XCTAssertTrue(std > 0.005 && std < 1.0, "\(t.name) (\(t.type)) std \(std)")
            stdRange = (min(stdRange.low, std), max(stdRange.high, std))
            largestMean = max(largestMean, abs(mean))

            // Every value against the per-value definition, read straight from the file's bytes.
            let raw = data.baseAddress!, size = t.type.typeSize
            func half(_ o: Int) -> Float { Self.halfValue(UInt16(raw.load(fromByteOffset: o, as: UInt8.self)) | UInt16(raw.load(fromByteOffset: o + 1, as: UInt8.self)) << 8) }
            var wrong = 0
            for blk in 0 ..< n / 32 {
                let o = blk * size, d = half(o)
                for v in 0 ..< 32 {
                    let expected: Float
                    if t.type == .q8_0 {
                        expected = d * Float(Int8(bitPattern: raw.load(fromByteOffset: o + 2 + v, as: UInt8.self)))
                    } else {
                        let byte = raw.load(fromByteOffset: o + 4 + v % 16, as: UInt8.self)
                        expected = d * Float(v < 16 ? byte & 0x0F : byte >> 4) + half(o + 2)
                    }
                    if y[blk * 32 + v] != expected { wrong += 1 }
                }
            }
            XCTAssertEqual(wrong, 0, "\(t.name): values differing from the definition")
            let s = seen[t.type] ?? (0, 0, 0)
            seen[t.type] = (s.tensors + 1, s.values + n, s.seconds + seconds)
        }
        XCTAssertGreaterThan(seen[.q4_1]?.tensors ?? 0, 0, "the default model has Q4_1 tensors")
        print("per-tensor std \(String(format: "%.4f", stdRange.low))...\(String(format: "%.4f", stdRange.high)), largest |mean| \(String(format: "%.5f", largestMean))")
        for (type, s) in seen.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            print("dequantized \(s.tensors) \(type) tensors, \(s.values) values in \(String(format: "%.3f", s.seconds)) s (\(String(format: "%.0f", Double(s.values) / s.seconds / 1e6)) M values/s)")
        }
    }
}
