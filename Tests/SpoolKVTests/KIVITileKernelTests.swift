@testable import SpoolKV
import SpoolKernels
import SpoolTestSupport
import XCTest

/// Every KIVI tile kernel, at every path this machine runs (portable, AVX2, AVX-512), against its
/// scalar double reference under MAX_KV_KERNEL_REL_ERROR, relative to the magnitude of the terms.
final class KIVITileKernelTests: XCTestCase {
    func randomHalves(_ r: inout TestRandom, _ n: Int, _ lo: Float, _ hi: Float) -> [UInt16] {
        (0..<n).map { _ in Half.bits(r.float(lo, hi)) }
    }

    func testEveryKernelLevelHasItsPath() {
        // Each supported level runs its own tile kernels for this model's shape (G 32, head 64).
        XCTAssertEqual(KIVITiles.supportedPaths(group: 32, channels: 64).count, KernelLevel.supported.count)
    }

    func testKeyTileMatchesReference() {
        var r = TestRandom(seed: 31)
        // (group, channels, rotary pairs); rotary pairs get 4, 2 or no codes, other channels `bits`.
        for (group, channels, ropePairs, bits) in [(32, 64, 32, 2), (16, 64, 0, 8), (8, 40, 16, 2), (48, 64, 24, 4), (64, 64, 0, 2), (32, 64, 32, 8)] {
            let codes = (0..<4096).map { _ in UInt8(truncatingIfNeeded: r.next()) }
            var rowBits = [UInt8](repeating: UInt8(bits), count: channels)
            for i in 0..<ropePairs {
                let w: UInt8 = [4, 2, 0, UInt8(bits)][Int(r.next() % 4)]
                rowBits[2 * i] = w; rowBits[2 * i + 1] = w
            }
            // Rows anywhere in the buffer (any byte offset: the kernels load unaligned).
            let rowOffsets = (0..<channels).map { _ in Int32(r.next() % UInt64(4096 - group)) }
            let scales = randomHalves(&r, channels, 0, 0.5), zeros = randomHalves(&r, channels, -2, 2)
            let angles = (0..<(max(1, ropePairs) * group)).map { _ in r.float(-3.2, 3.2) }
            let cos = angles.map { Foundation.cos($0) }, sin = angles.map { Foundation.sin($0) }
            var ref = [Float](repeating: 0, count: channels * group)
            codes.withUnsafeBytes { c in
                let source = KIVITiles.KeySource(
                    codes: c.baseAddress!, rowOffsets: rowOffsets, rowBits: rowBits, scales: scales, zeros: zeros,
                    channels: channels, ropePairs: ropePairs, group: group, cos: cos, sin: sin)
                KIVITiles.keyTileReference(source, into: &ref)
                for path in KIVITiles.supportedPaths(group: group, channels: channels) {
                    var got = [Float](repeating: .nan, count: channels * group)
                    KIVITiles.keyTile(path, source, into: &got)
                    for row in 0..<channels {
                        // The channels a row mixes: a rotary pair, or one channel.
                        let mixed = row < 2 * ropePairs ? [2 * (row % ropePairs), 2 * (row % ropePairs) + 1] : [row]
                        let mag = mixed.reduce(Float(0)) { acc, ch in
                            acc + abs(Half.referenceFloat(scales[ch])) * Float(KIVIQuant.maxCode(bits: max(1, Int(rowBits[ch])))) + abs(Half.referenceFloat(zeros[ch]))
                        }
                        for m in 0..<group {
                            XCTAssertLessThanOrEqual(abs(got[row * group + m] - ref[row * group + m]), MAX_KV_KERNEL_REL_ERROR * mag,
                                                     "\(path) G \(group) row \(row) token \(m)")
                        }
                    }
                }
            }
        }
    }

    func testTileScoresMatchReference() {
        var r = TestRandom(seed: 32)
        for (group, channels) in [(32, 64), (8, 64), (24, 40), (48, 64), (64, 72), (16, 128)] {
            let q = r.floats(channels, -2, 2), tile = r.floats(channels * group, -5, 5)
            var ref = [Float](repeating: 0, count: group)
            KIVITiles.tileScoresReference(q, tile: tile, channels: channels, group: group, into: &ref)
            for path in KIVITiles.supportedPaths(group: group, channels: channels) {
                var got = [Float](repeating: .nan, count: group)
                KIVITiles.tileScores(path, q, tile: tile, channels: channels, group: group, into: &got)
                for m in 0..<group {
                    let mag = (0..<channels).reduce(Float(0)) { $0 + abs(q[$1] * tile[$1 * group + m]) }
                    XCTAssertLessThanOrEqual(abs(got[m] - ref[m]), MAX_KV_KERNEL_REL_ERROR * mag, "\(path) G \(group) C \(channels) token \(m)")
                }
            }
        }
    }

    func testValueTileMatchesReference() {
        var r = TestRandom(seed: 33)
        for bits in [2, 4, 8] {
            // (value group, kvDim, first channel of the head, channels); 24 makes 16-channel chunks span two groups.
            for (valueGroup, kvDim, firstChannel, channels) in [(32, 192, 64, 64), (8, 192, 128, 64), (16, 64, 0, 64), (64, 192, 128, 64), (24, 96, 48, 48), (32, 96, 0, 40)] {
                let tokens = 32, tokenBytes = kvDim * bits / 8, groups = kvDim / valueGroup
                let codes = (0..<(tokens * tokenBytes)).map { _ in UInt8(truncatingIfNeeded: r.next()) }
                let scales = randomHalves(&r, tokens * groups, 0, 0.5), zeros = randomHalves(&r, tokens * groups, -2, 2)
                var ref = [Float](repeating: 0, count: tokens * channels)
                codes.withUnsafeBytes { c in scales.withUnsafeBufferPointer { sb in zeros.withUnsafeBufferPointer { zb in
                    let source = KIVITiles.ValueSource(
                        codes: c.baseAddress! + firstChannel * bits / 8, tokenBytes: tokenBytes, bits: bits,
                        scales: sb.baseAddress! + firstChannel / valueGroup, zeros: zb.baseAddress! + firstChannel / valueGroup,
                        groupsPerToken: groups, firstChannel: firstChannel, channels: channels, valueGroup: valueGroup, tokens: tokens)
                    KIVITiles.valueTileReference(source, into: &ref)
                    for path in KIVITiles.supportedPaths(group: tokens, channels: channels) {
                        var got = [Float](repeating: .nan, count: tokens * channels)
                        KIVITiles.valueTile(path, source, into: &got)
                        for m in 0..<tokens {
                            for ch in 0..<channels {
                                let g = m * groups + (firstChannel + ch) / valueGroup
                                let mag = abs(Half.referenceFloat(scales[g])) * Float(KIVIQuant.maxCode(bits: bits)) + abs(Half.referenceFloat(zeros[g]))
                                XCTAssertLessThanOrEqual(abs(got[m * channels + ch] - ref[m * channels + ch]), MAX_KV_KERNEL_REL_ERROR * mag,
                                                         "\(path) bits \(bits) VG \(valueGroup) token \(m) channel \(ch)")
                            }
                        }
                    }
                } } }
            }
        }
    }

    func testRowsMixAndRowScoresMatchReference() {
        var r = TestRandom(seed: 34)
        for (count, channels) in [(1, 64), (7, 48), (32, 64), (37, 40), (33, 128), (0, 64)] {
            let w = r.floats(count, 0, 1), rows = r.floats(count * channels, -3, 3), q = r.floats(channels, -2, 2), start = r.floats(channels)
            var mixRef = start, scoreRef = [Float](repeating: 0, count: count)
            KIVITiles.rowsMixReference(w, rows: rows, count: count, channels: channels, into: &mixRef)
            KIVITiles.rowScoresReference(q, rows: rows, count: count, channels: channels, into: &scoreRef)
            for path in KIVITiles.supportedPaths(group: 32, channels: channels) {
                var mix = start, scores = [Float](repeating: .nan, count: count)
                KIVITiles.rowsMix(path, w, rows: rows, count: count, channels: channels, into: &mix)
                KIVITiles.rowScores(path, q, rows: rows, count: count, channels: channels, into: &scores)
                for ch in 0..<channels {
                    let mag = abs(start[ch]) + (0..<count).reduce(Float(0)) { $0 + abs(w[$1] * rows[$1 * channels + ch]) }
                    XCTAssertLessThanOrEqual(abs(mix[ch] - mixRef[ch]), MAX_KV_KERNEL_REL_ERROR * mag, "\(path) mix n \(count) channel \(ch)")
                }
                for m in 0..<count {
                    let mag = (0..<channels).reduce(Float(0)) { $0 + abs(q[$1] * rows[m * channels + $1]) }
                    XCTAssertLessThanOrEqual(abs(scores[m] - scoreRef[m]), MAX_KV_KERNEL_REL_ERROR * mag, "\(path) scores n \(count) row \(m)")
                }
            }
        }
    }

    func testHalfRowsAreExact() {
        var r = TestRandom(seed: 35)
        let stride = 200, count = 5, channels = 68
        // Any finite pattern (subnormals, infinities included), NaNs excluded.
        let halves = (0..<(count * stride)).map { _ -> UInt16 in
            var h = UInt16(truncatingIfNeeded: r.next())
            if h & 0x7c00 == 0x7c00 { h &= 0xfc00 }
            return h
        }
        for path in KIVITiles.supportedPaths(group: 32, channels: 64) {
            var got = [Float](repeating: .nan, count: count * channels)
            KIVITiles.halfRows(path, halves, stride: stride, count: count, channels: channels, into: &got)
            for m in 0..<count {
                for c in 0..<channels {
                    XCTAssertEqual(got[m * channels + c].bitPattern, Half.referenceFloat(halves[m * stride + c]).bitPattern, "\(path) row \(m) channel \(c)")
                }
            }
        }
    }
}
