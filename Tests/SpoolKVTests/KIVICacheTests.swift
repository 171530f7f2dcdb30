@testable import SpoolKV
import SpoolKernels
import XCTest

final class KIVICacheTests: XCTestCase {
    let pool = ThreadPool(threads: 2)

    func kivi(bits: Int, group: Int = 32, residual: Int = 32, sink: Int = 0, geometry: KVGeometry = smallGeometry) throws -> KIVICache {
        var c = KVCacheConfiguration(bits: bits, group: group, residual: residual, sink: sink)
        c.keysBeforeRoPE = false
        return try KIVICache(geometry: geometry, configuration: c)
    }

    /// Every attention output of `outputs` (queries from..<to) against double-precision attention
    /// over exactly what the cache holds for that query.
    func checkAgainstHeldData(_ cache: KIVICache, _ data: AttentionData, from: Int, to: Int, outputs: [Float], file: StaticString = #filePath, line: UInt = #line) {
        let g = data.geometry, hd = g.headDim
        for t in from..<to {
            let visible = t + 1
            let rows = (0..<visible).map { cache.seenKeyValue(layer: 0, token: $0, visible: visible) }
            let maxV = rows.flatMap(\.value).map(abs).max()!
            for h in 0..<g.queryHeads {
                let q = data.queries[((t * g.queryHeads + h) * hd)..<((t * g.queryHeads + h + 1) * hd)]
                let ref = referenceAttention(query: q, head: h, geometry: g, visible: visible) { rows[$0] }
                for i in 0..<hd {
                    let got = outputs[((t - from) * g.queryHeads + h) * hd + i]
                    XCTAssertLessThanOrEqual(abs(Double(got) - ref[i]), Double(MAX_ATTENTION_REF_ERROR * maxV),
                                             "query \(t) head \(h) channel \(i)", file: file, line: line)
                }
            }
        }
    }

    func testPackedAttentionMatchesReferenceOverHeldData() throws {
        let data = AttentionData(geometry: smallGeometry, tokens: 150, seed: 10)
        for level in KernelLevel.supported {
        for (bits, sink) in [(2, 0), (4, 0), (8, 0), (2, 4)] {
            let cache = try kivi(bits: bits, sink: sink)
            cache.kernelLevel = level
            // A prefill ending mid-group, then a few decode steps across a group boundary.
            let out = try storeAndAttend(cache, data, from: 0, to: 77, pool: pool)
            checkAgainstHeldData(cache, data, from: 0, to: 77, outputs: out)
            cache.commit(upTo: 77)
            for t in 77..<100 {
                let o = try storeAndAttend(cache, data, from: t, to: t + 1, pool: pool)
                cache.commit(upTo: t + 1)
                if t % 7 == 0 || t == 96 || t == 97 { checkAgainstHeldData(cache, data, from: t, to: t + 1, outputs: o) }
            }
        }
        }
    }

    /// Decode at depth splits a query's keys into parts across threads (one task per token, KV head
    /// and part) and merges them; a batch goes through the same parts in one task. Both must give
    /// the same bits, and match attention over the held data.
    func testDecodeSplitIntoPartsMatchesBatchAndReference() throws {
        var g = smallGeometry
        g.ropeDims = 64
        g.capacity = 512
        let data = AttentionData(geometry: g, tokens: 400, seed: 17)
        // The 2-bit default rotates values (mixed rotated, rotated back once per part); also without.
        var plain = KVCacheConfiguration(bits: 2)
        plain.valueHadamard = false
        for (level, config) in KernelLevel.supported.map({ ($0, KVCacheConfiguration(bits: 2)) }) + [(.selected, plain)] {
            let batch = try KIVICache(geometry: g, configuration: config)
            let stepwise = try KIVICache(geometry: g, configuration: config)
            XCTAssertEqual(stepwise.valueHadamard, config.valueHadamard != false)
            batch.kernelLevel = level
            stepwise.kernelLevel = level
            let all = try storeAndAttend(batch, data, from: 0, to: 380, pool: pool)
            try storeAndAttend(stepwise, data, from: 0, to: 300, pool: pool)
            stepwise.commit(upTo: 300)
            let qd = g.queryHeads * g.headDim
            for t in 300..<380 {
                let o = try storeAndAttend(stepwise, data, from: t, to: t + 1, pool: pool)
                stepwise.commit(upTo: t + 1)
                XCTAssertEqual(o, Array(all[(t * qd)..<((t + 1) * qd)]), "\(level) token \(t)")
                if t == 379 { checkAgainstHeldData(stepwise, data, from: t, to: t + 1, outputs: o) }
            }
            // The last queries do see more than one part.
            XCTAssertGreaterThan(stepwise.queryView(position: 379, stored: 380, floatBase: stepwise.layers[0].windowStart).parts, 1)
        }
    }

    func testPreRoPEKeysAttendOverWhatTheCacheHolds() throws {
        var g = smallGeometry
        g.ropeDims = 64
        g.capacity = 512
        let data = AttentionData(geometry: g, tokens: 500, seed: 16)
        var config = KVCacheConfiguration(bits: 2, group: 32, residual: 32, sink: 4)
        config.keysBeforeRoPE = true
        let cache = try KIVICache(geometry: g, configuration: config)
        XCTAssertNotNil(cache.rotation)
        try storeAndAttend(cache, data, from: 0, to: 400, pool: pool)
        cache.truncate(to: 300)
        let out = try storeAndAttend(cache, data, from: 300, to: 490, pool: pool)
        checkAgainstHeldData(cache, data, from: 480, to: 490, outputs: out.suffix(10 * 9 * 64).map { $0 })
        // The SIMD pre-RoPE kernel against its scalar reference (dequantize, rotate, dot), per group and head.
        checkPreRoPEKernel(cache, query: Array(data.queries[0..<64]), groups: (490 - 4 - 32) / 32)
        // Un-rotating, quantizing and re-rotating keeps keys within the 2-bit error of post-RoPE
        // quantization: compare the held keys with the stored ones.
        config.keysBeforeRoPE = false
        let post = try KIVICache(geometry: g, configuration: config)
        try storeAndAttend(post, data, from: 0, to: 90, pool: pool)
        var errPre = 0.0, errPost = 0.0
        for j in 4..<36 {
            let exact = data.keys[(j * g.kvDim)..<((j + 1) * g.kvDim)]
            let a = cache.seenKeyValue(layer: 0, token: j, visible: 90).key, b = post.seenKeyValue(layer: 0, token: j, visible: 90).key
            for (c, x) in exact.enumerated() { errPre += Double((a[c] - x) * (a[c] - x)); errPost += Double((b[c] - x) * (b[c] - x)) }
        }
        // Random keys have no RoPE structure, so neither should be much worse than the other.
        XCTAssertLessThan(errPre, 2 * errPost)
        XCTAssertLessThan(errPost, 2 * errPre)
    }

    /// The pre-RoPE key path as attention runs it (key tile rotated by offsets, query rotated back
    /// to the group start, tile scores), at every kernel path, against
    /// `preRoPEGroupScoresReference` for every head of the first `groups` packed groups of layer 0.
    func checkPreRoPEKernel(_ cache: KIVICache, query q: [Float], groups: Int, file: StaticString = #filePath, line: UInt = #line) {
        let l = cache.layers[0], layout = cache.layout, rot = cache.rotation!, d = layout.kvDim, hd = layout.headDim, pairs = rot.pairs
        // The query in tile order: pair i's channels at i and pairs + i.
        let tileQ = (0..<hd).map { c in c < pairs ? q[2 * c] : c < 2 * pairs ? q[2 * (c - pairs) + 1] : q[c] }
        var offsets = [Int32](repeating: 0, count: hd), bits = [UInt8](repeating: 0, count: hd)
        for gi in 0..<groups {
            for h in 0..<layout.kvHeads {
                let ref = cache.preRoPEGroupScoresReference(l, group: gi, head: h, query: q)
                let masks = l.keyMasks + 2 * (gi * layout.kvHeads + h)
                layout.keyRows(high: masks[0], zero: masks[1], offsets: &offsets, bits: &bits)
                var scratch = [UInt16](repeating: 0, count: 2 * hd)
                let grids = bits.withUnsafeBufferPointer { cache.keyGrids(l, group: gi, head: h, bits: $0.baseAddress!, scratch: &scratch) }
                let source = KIVITiles.KeySource(
                    codes: l.keyCodes + layout.keyBlock(group: gi, head: h), rowOffsets: offsets, rowBits: bits,
                    scales: grids.scales, zeros: grids.zeros, channels: hd, ropePairs: pairs,
                    group: layout.group, cos: rot.offsetCos, sin: rot.offsetSin)
                var qg = [Float](repeating: 0, count: hd)
                rot.queryAtGroupStart(tileQ, channels: hd, group: gi, into: &qg)
                let mag = (0..<hd).reduce(Float(0)) { acc, c in
                    let grid = cache.keyGrid(l, group: gi, channel: h * hd + c, bits: Int(bits[c]))
                    return acc + abs(q[c]) * (abs(Half.referenceFloat(grid.scale)) * 15 + abs(Half.referenceFloat(grid.zero)))
                }
                _ = d
                for path in KIVITiles.supportedPaths(group: layout.group, channels: hd) {
                    var tile = [Float](repeating: .nan, count: hd * layout.group), got = [Float](repeating: .nan, count: layout.group)
                    KIVITiles.keyTile(path, source, into: &tile)
                    KIVITiles.tileScores(path, qg, tile: tile, channels: hd, group: layout.group, into: &got)
                    for i in 0..<layout.group {
                        XCTAssertLessThanOrEqual(abs(got[i] - ref[i]), MAX_KV_KERNEL_REL_ERROR * mag, "\(path) group \(gi) head \(h) token \(i)", file: file, line: line)
                    }
                }
            }
        }
    }

    func testKeyPairSplitKeepsWidestPairsAtFourBitsAndDropsNarrowest() throws {
        for compact in [false, true] { try checkKeyPairSplit(compactGrids: compact) }
    }

    func checkKeyPairSplit(compactGrids: Bool) throws {
        var g = smallGeometry
        g.ropeDims = 64
        g.capacity = 256
        let data = AttentionData(geometry: g, tokens: 200, seed: 21)
        var config = KVCacheConfiguration(bits: 2, group: 32, residual: 32, sink: 4)
        config.keysBeforeRoPE = true
        config.keyOutlierPairs = 4
        config.keyDroppedPairs = 6
        config.keyClip = 0
        config.compactGrids = compactGrids
        let cache = try KIVICache(geometry: g, configuration: config)
        XCTAssertEqual(cache.layout.compactKeys, compactGrids)
        // 8 channels at 4 bits, 12 without codes, 44 at 2 bits, 32 tokens.
        XCTAssertEqual(cache.layout.keyHeadBytes, 8 * 16 + 44 * 8)
        try storeAndAttend(cache, data, from: 0, to: 150, pool: pool)
        checkPreRoPEKernel(cache, query: Array(data.queries[0..<64]), groups: 3)
        let out = try storeAndAttend(cache, data, from: 150, to: 180, pool: pool)
        checkAgainstHeldData(cache, data, from: 150, to: 180, outputs: out)
        // Each head's order is a permutation of its 32 pairs whose first 4 have the widest ranges.
        let l = cache.layers[0]
        for gi in 0..<3 {
            for h in 0..<3 {
                var bytes = [UInt8](repeating: 0, count: 32)
                cache.layout.pairOrder(l.keyMasks, group: gi, head: h, into: &bytes)
                let order = bytes.map(Int.init)
                XCTAssertEqual(l.keyMasks[2 * (gi * 3 + h)].nonzeroBitCount, 4)
                XCTAssertEqual(l.keyMasks[2 * (gi * 3 + h) + 1].nonzeroBitCount, 6)
                XCTAssertEqual(l.keyMasks[2 * (gi * 3 + h)] & l.keyMasks[2 * (gi * 3 + h) + 1], 0)
                // Pairs without codes are their zero alone.
                for pair in order.suffix(6) {
                    XCTAssertEqual(cache.keyCodeRow(l, group: gi, channel: h * 64 + 2 * pair).1, 0)
                    if !compactGrids { XCTAssertEqual(l.keyScale[gi * 192 + h * 64 + 2 * pair], 0) }
                }
                XCTAssertEqual(Set(order), Set(0..<32))
                func width(_ pair: Int) -> Float {
                    (0..<2).reduce(Float(0)) { acc, e in
                        let c = h * 64 + 2 * pair + e
                        let bits = order.prefix(4).contains(pair) ? 4 : 2
                        let s = Half.referenceFloat(cache.keyGrid(l, group: gi, channel: c, bits: bits).scale)
                        let w = s * Float(KIVIQuant.maxCode(bits: bits))
                        return acc + w * w
                    }
                }
                let narrowestHigh = order.prefix(4).map(width).min()!, widestLow = order[4..<26].map(width).max()!
                // Widths as the stored grids see them (f16, or compact ends rounded outwards by up
                // to 2/127 of the head's bound): allow their rounding.
                XCTAssertGreaterThanOrEqual(narrowestHigh, widestLow * (compactGrids ? 0.9 : 0.99), "group \(gi) head \(h)")
            }
        }
    }

    func testAttentionCloseToFloatCache() throws {
        let g = KVGeometry(layers: 1, kvHeads: 3, queryHeads: 9, headDim: 64, capacity: 512)
        let data = AttentionData(geometry: g, tokens: 400, seed: 11)
        let exact = FloatKVCache(geometry: g, precision: .f32)
        let ref = try storeAndAttend(exact, data, from: 0, to: 400, pool: pool)
        for bits in [16, 8, 4, 2] {
            let cache = try KVCacheConfiguration(bits: bits, group: 32, residual: 32).makeCache(geometry: g)
            let out = try storeAndAttend(cache, data, from: 0, to: 400, pool: pool)
            // Score the queries that see mostly packed tokens.
            let tail = 300 * g.queryHeads * g.headDim
            let err = rmsRelative(Array(out[tail...]), Array(ref[tail...]))
            XCTAssertLessThanOrEqual(err, MAX_ATTENTION_RMS_ERROR[bits]!, "bits \(bits)")
            print("KV \(bits) bits: attention RMS error relative to f32 \(err)")
        }
    }

    /// Tokens from..<to stored, attended and committed one at a time, as decoding does.
    func tokenByToken(_ cache: KIVICache, _ data: AttentionData, from: Int, to: Int) throws -> [Float] {
        var out: [Float] = []
        for t in from..<to {
            out += try storeAndAttend(cache, data, from: t, to: t + 1, pool: pool)
            cache.commit(upTo: t + 1)
        }
        return out
    }

    func testBatchAndTokenByTokenGiveIdenticalResults() throws {
        let data = AttentionData(geometry: smallGeometry, tokens: 130, seed: 12)
        for (group, residual, sink) in [(32, 32, 0), (32, 64, 0), (16, 40, 0), (32, 32, 4), (16, 32, 1)] {
            let batch = try kivi(bits: 2, group: group, residual: residual, sink: sink)
            let stepwise = try kivi(bits: 2, group: group, residual: residual, sink: sink)
            let a = try storeAndAttend(batch, data, from: 0, to: 101, pool: pool)
            batch.commit(upTo: 101)
            let b = try tokenByToken(stepwise, data, from: 0, to: 101)
            XCTAssertEqual(a, b, "G \(group) R \(residual) S \(sink)")
            // And the next decode step agrees too, after a prompt that ended mid-group.
            XCTAssertEqual(try storeAndAttend(batch, data, from: 101, to: 102, pool: pool), try storeAndAttend(stepwise, data, from: 101, to: 102, pool: pool))
        }
    }

    /// Query-weighted pair choice packs a group only when the layer's attention has the batch's
    /// queries, weighing it by the queries before the token whose store flushed it: one batch, two
    /// batches and token-by-token decoding must pack the same bits and attend the same.
    func testQueryWeightedPairsGiveIdenticalResultsInBatchesAndTokenByToken() throws {
        var g = smallGeometry
        g.ropeDims = 64
        let data = AttentionData(geometry: g, tokens: 200, seed: 17)
        func cache(residual: Int, sink: Int) throws -> KIVICache {
            let c = try KIVICache(geometry: g, configuration: KVCacheConfiguration(bits: 2, group: 32, residual: residual, sink: sink))
            XCTAssertTrue(c.layout.queryWeightedPairs)
            return c
        }
        for (residual, sink) in [(32, 0), (64, 4), (40, 1)] {
            let batch = try cache(residual: residual, sink: sink), split = try cache(residual: residual, sink: sink)
            let stepwise = try cache(residual: residual, sink: sink)
            let a = try storeAndAttend(batch, data, from: 0, to: 171, pool: pool)
            batch.commit(upTo: 171)
            var b = try storeAndAttend(split, data, from: 0, to: 77, pool: pool)
            split.commit(upTo: 77)
            b += try storeAndAttend(split, data, from: 77, to: 171, pool: pool)
            split.commit(upTo: 171)
            let c = try tokenByToken(stepwise, data, from: 0, to: 171)
            XCTAssertEqual(a, b, "R \(residual) S \(sink)")
            XCTAssertEqual(a, c, "R \(residual) S \(sink)")
            let groups = (batch.layers[0].windowStart - min(sink, 171)) / 32
            XCTAssertGreaterThan(groups, 2)
            for x in [split, stepwise] {
                XCTAssertEqual(Array(UnsafeBufferPointer(start: x.layers[0].keyMasks, count: groups * 6)),
                               Array(UnsafeBufferPointer(start: batch.layers[0].keyMasks, count: groups * 6)), "R \(residual) S \(sink)")
                XCTAssertEqual(x.layers[0].queryEnergy, batch.layers[0].queryEnergy)
            }
            // The next decode step attends over exactly what the cache holds.
            let next = try storeAndAttend(batch, data, from: 171, to: 172, pool: pool)
            checkAgainstHeldData(batch, data, from: 171, to: 172, outputs: next)
        }
    }

    /// A narrow rotary pair that the queries weigh heavily gets 4-bit codes once the layer has seen
    /// such queries; chosen by width alone it has no codes at all.
    func testQueryWeightedPairsFollowQueryEnergy() throws {
        var g = smallGeometry
        g.ropeDims = 64
        var data = AttentionData(geometry: g, tokens: 160, seed: 18)
        let pair = 5
        for t in 0..<160 {
            for e in 0..<2 {
                for h in 0..<3 {
                    let i: Int = t * 192 + h * 64 + 2 * pair + e
                    data.keys[i] *= 0.1
                }
                for h in 0..<9 {
                    let i: Int = (t * 9 + h) * 64 + 2 * pair + e
                    data.queries[i] *= 1000
                }
            }
        }
        for weighted in [false, true] {
            var config = KVCacheConfiguration(bits: 2, group: 32, residual: 32, sink: 0)
            config.queryWeightedPairs = weighted
            let cache = try KIVICache(geometry: g, configuration: config)
            try storeAndAttend(cache, data, from: 0, to: 150, pool: pool)
            cache.commit(upTo: 150)
            let l = cache.layers[0]
            for gi in 0..<3 {
                for h in 0..<3 {
                    let bit: UInt64 = 1 << UInt64(pair), m = 2 * (gi * 3 + h)
                    let high = l.keyMasks[m] & bit != 0
                    let dropped = l.keyMasks[m + 1] & bit != 0
                    XCTAssertEqual(high, weighted, "weighted \(weighted) group \(gi) head \(h)")
                    XCTAssertEqual(dropped, !weighted, "weighted \(weighted) group \(gi) head \(h)")
                }
            }
        }
    }

    func testWindowFlushesOneGroupAtATime() throws {
        let data = AttentionData(geometry: smallGeometry, tokens: 200, seed: 13)
        let cases: [(sink: Int, counts: [Int], windowStarts: [Int])] = [
            (0, [1, 63, 64, 65, 95, 96, 97, 128, 129, 160, 161], [0, 0, 0, 32, 32, 32, 64, 64, 96, 96, 128]),
            (4, [1, 3, 4, 5, 67, 68, 69, 100, 101, 133], [1, 3, 4, 4, 4, 4, 36, 36, 68, 100]),
        ]
        for (sink, counts, windowStarts) in cases {
            let cache = try kivi(bits: 2, group: 32, residual: 64, sink: sink)
            var got: [Int] = []
            for c in counts {
                try storeAndAttend(cache, data, from: cache.layers[0].count, to: c, pool: pool)
                cache.commit(upTo: c)
                let ws = cache.layers[0].windowStart
                got.append(ws)
                XCTAssertLessThanOrEqual(c - ws, 64, "window over R at \(c)")
            }
            XCTAssertEqual(got, windowStarts, "sink \(sink)")
        }
    }

    func testTruncateIntoPackedRegionAndRegrow() throws {
        let data = AttentionData(geometry: smallGeometry, tokens: 200, seed: 14)
        // (sink, window start at 100 tokens, window start at 40, first token restored from a group)
        for (sink, at100, at40) in [(0, 96, 32), (4, 68, 36)] {
            let cache = try kivi(bits: 2, group: 32, residual: 32, sink: sink)
            try storeAndAttend(cache, data, from: 0, to: 100, pool: pool)
            cache.commit(upTo: 100)
            XCTAssertEqual(cache.layers[0].windowStart, at100)
            let before = (0..<100).map { cache.seenKeyValue(layer: 0, token: $0, visible: 100) }
            cache.truncate(to: 40)
            XCTAssertEqual(cache.count, 40)
            XCTAssertEqual(cache.layers[0].windowStart, at40)
            // Sink and group 0 stay as they were; tokens at40..<40 came back from the next packed
            // group as f16 copies of their dequantized values.
            for j in 0..<40 {
                let now = cache.seenKeyValue(layer: 0, token: j, visible: 40)
                let want: (key: [Float], value: [Float]) = j < at40 ? before[j] : (before[j].key.map { Float(Float16($0)) }, before[j].value.map { Float(Float16($0)) })
                XCTAssertEqual(now.key, want.key, "token \(j)")
                XCTAssertEqual(now.value, want.value, "token \(j)")
            }
            // Regrow past the old length: attention is exact over what the cache holds.
            let out = try storeAndAttend(cache, data, from: 40, to: 110, pool: pool)
            checkAgainstHeldData(cache, data, from: 40, to: 110, outputs: out)
            cache.commit(upTo: 110)
            // A store at an earlier position rewinds the layer the same way.
            let again = try storeAndAttend(cache, data, from: 70, to: 90, pool: pool)
            checkAgainstHeldData(cache, data, from: 70, to: 90, outputs: again)
            // Truncating to 0 gives a cache that behaves like a fresh one.
            cache.truncate(to: 0)
            let fresh = try kivi(bits: 2, group: 32, residual: 32, sink: sink)
            XCTAssertEqual(try storeAndAttend(cache, data, from: 0, to: 77, pool: pool), try storeAndAttend(fresh, data, from: 0, to: 77, pool: pool))
        }
    }

    func testStoreErrors() throws {
        let data = AttentionData(geometry: smallGeometry, tokens: 300, seed: 15)
        let cache = try kivi(bits: 4)
        XCTAssertThrowsError(try storeAndAttend(cache, data, from: 10, to: 20, pool: pool)) {
            XCTAssertEqual($0 as? KVCacheError, .gap(layer: 0, start: 10, stored: 0))
        }
        XCTAssertThrowsError(try storeAndAttend(cache, data, from: 0, to: 257, pool: pool)) {
            XCTAssertEqual($0 as? KVCacheError, .contextFull(needed: 257, capacity: 256))
        }
    }

    func testConfigurationValidation() {
        func check(_ c: KVCacheConfiguration, _ e: KVConfigurationError) {
            XCTAssertThrowsError(try c.validate(kvHeads: 3, headDim: 64)) { XCTAssertEqual($0 as? KVConfigurationError, e) }
        }
        check(.init(bits: 3), .unsupportedBits(3))
        check(.init(bits: 2, group: 12), .badGroup(12))
        check(.init(bits: 2, group: 128), .groupDoesNotDivideKVDim(group: 128, kvDim: 192))
        check(.init(bits: 2, group: 32, residual: 16), .badResidual(16, group: 32))
        check(.init(bits: 2, sink: -1), .badSink(-1))
        var c = KVCacheConfiguration(bits: 2)
        c.valueGroup = 12
        check(c, .badGroup(12))
        c.valueGroup = 128
        check(c, .groupDoesNotDivideKVDim(group: 128, kvDim: 192))
        c.valueGroup = nil
        c.keyOutlierPairs = 33
        check(c, .badOutlierPairs(33, headDim: 64))
        c.keyOutlierPairs = 20
        c.keyDroppedPairs = 13
        check(c, .badOutlierPairs(13, headDim: 64))
        c.keyDroppedPairs = nil
        c.keyOutlierPairs = nil
        c.keyClip = 9
        check(c, .badClip(9))
        // The 2-bit default (compact grids) groups values over G channels; with f16 grids over 2G
        // only where that divides the width.
        XCTAssertEqual(KVCacheConfiguration(bits: 2).resolvedValueGroup(kvDim: 192), 32)
        var f16Grids = KVCacheConfiguration(bits: 2)
        f16Grids.compactGrids = false
        XCTAssertEqual(f16Grids.resolvedValueGroup(kvDim: 192), 64)
        XCTAssertEqual(f16Grids.resolvedValueGroup(kvDim: 96), 32)
        XCTAssertEqual(KVCacheConfiguration(bits: 4).resolvedValueGroup(kvDim: 192), 32)
        XCTAssertNoThrow(try KVCacheConfiguration(bits: 2, group: 64, residual: 64).validate(kvHeads: 3, headDim: 64))
        XCTAssertNoThrow(try KVCacheConfiguration(bits: 16, group: 5).validate(kvHeads: 3, headDim: 64))
    }

    func testValueHadamardDefaultsOnForTwoBitValuesOnly() {
        XCTAssertTrue(KVCacheConfiguration(bits: 2).resolvedValueHadamard)
        XCTAssertFalse(KVCacheConfiguration(bits: 4).resolvedValueHadamard)
        XCTAssertFalse(KVCacheConfiguration(bits: 2, valueBits: 8).resolvedValueHadamard)
        XCTAssertTrue(KVCacheConfiguration(bits: 4, valueBits: 2).resolvedValueHadamard)
        var off = KVCacheConfiguration(bits: 2)
        off.valueHadamard = false
        XCTAssertFalse(off.resolvedValueHadamard)
    }

    func testMemoryAtContext2048() throws {
        let g = KVGeometry(layers: 30, kvHeads: 3, queryHeads: 9, headDim: 64, capacity: 2048)
        let f16 = FloatKVCache(geometry: g, precision: .f16)
        var config = KVCacheConfiguration(bits: 2, group: 32, residual: 32, sink: 0)
        config.valueGroup = 32
        config.compactGrids = false
        let k2 = try KIVICache(geometry: g, configuration: config)
        XCTAssertEqual(f16.allocatedBytes, 2048 * 23040)
        // 2-bit codes plus f16 scale and zero per 32: 3 bits per element.
        XCTAssertEqual(k2.bytesPerToken, 30 * 144)
        // Packed store for 2016 tokens plus a 32-token f16 window.
        XCTAssertEqual(k2.allocatedBytes, 2016 * 30 * 144 + 32 * 23040)
        // Compact grids, per layer and packed group of 32 tokens: keys 2 bytes and a 4-bit shift per
        // channel plus an f16 bound per head (384 + 96 + 6 bytes); values 2 bytes per token and
        // group of 32 channels plus an f16 bound per group (32 * 2 * 6 + 12 bytes).
        config.compactGrids = true
        let c2 = try KIVICache(geometry: g, configuration: config)
        let perGroup = 30 * (2 * 192 * 32 * 2 / 8 + 486 + 396)
        XCTAssertEqual(c2.bytesPerToken, Double(perGroup) / 32)
        XCTAssertEqual(c2.allocatedBytes, 2016 / 32 * perGroup + 32 * 23040)
    }

    /// The memory target: the default 2-bit cache for this model at context 2048, with every
    /// table it keeps and the staging rows a decode step holds, is at most 0.2x of an f16 cache.
    func testDefaultTwoBitCacheAtContext2048IsAtMostOneFifthOfF16() throws {
        let g = KVGeometry(layers: 30, kvHeads: 3, queryHeads: 9, headDim: 64, capacity: 2048, ropeDims: 64, ropeBase: 100_000)
        let f16 = FloatKVCache(geometry: g, precision: .f16)
        let k2 = try KIVICache(geometry: g, configuration: .init(bits: 2))
        XCTAssertNotNil(k2.rotation)
        let decodeStaging = 2 * (k2.residual + 1) * g.kvDim * 2
        let ratio = Double(k2.allocatedBytes + decodeStaging) / Double(f16.allocatedBytes)
        print("KV 2 bits at context 2048: \(ratio)x of f16")
        XCTAssertLessThanOrEqual(ratio, 0.2)
    }
}
