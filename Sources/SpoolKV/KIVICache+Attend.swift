import Foundation
import SpoolKernels

/// Attention on the packed cache.
///
/// Query t (position p = start + t) sees the sink tokens 0..<S as f16 rows, tokens
/// S..<windowStart(p + 1) through the packed store and the rest through f16 rows (the staging rows
/// if this layer was the last one stored, otherwise the window): exactly what token-by-token
/// decoding would see (`queryView`).
///
/// Work is split by KV head, so that each packed group becomes a float tile once for all the query
/// heads that share it (`KIVITiles`), and a query's keys are split into parts of
/// `groupsPerPart` packed groups, each with its own softmax maximum and sum, merged in part order
/// at the end (as flash-decoding does). Two schedules, which give bit-identical results because
/// a query's parts and their merging depend only on the query:
/// - a few tokens (decode): one task per (token, KV head, part), so that both threads share one
///   decode step at depth (3 KV heads alone would split 2:1); parts are merged after the tasks;
/// - a batch: one task per (KV head, block of queries), which goes through the parts in order and
///   reuses each group's tile for every query of the block that sees the group packed.
extension KIVICache {
    /// Packed groups per part: 8 groups of 32 = 256 tokens.
    static let groupsPerPart = 8

    /// What one query sees in one layer: tokens 0..<n, of which 0..<sinkEnd from the sink rows,
    /// sinkEnd..<frozen packed (`groups` groups) and frozen..<n from f16 rows. Part p of its keys
    /// holds packed groups p * groupsPerPart ..< (p + 1) * groupsPerPart, part 0 also the sink
    /// tokens, the last part also the f16 rows.
    struct QueryView {
        var n = 0, sinkEnd = 0, frozen = 0, groups = 0, parts = 0
    }

    func queryView(position p: Int, stored: Int, floatBase: Int) -> QueryView {
        let n = min(p + 1, stored)
        guard n > 0 else { return QueryView() }
        let frozen = min(max(layout.windowStart(n), floatBase), n)
        let sinkEnd = min(sink, frozen)
        let groups = (frozen - sinkEnd) / group
        return QueryView(n: n, sinkEnd: sinkEnd, frozen: frozen, groups: groups,
                         parts: max(1, (groups + Self.groupsPerPart - 1) / Self.groupsPerPart))
    }

    /// What one layer's attention reads, fixed for the call.
    struct AttendContext {
        let layer: Layer
        let layerIndex: Int
        let level: KernelLevel
        let path: KIVITiles.Path
        let start: Int
        let queries: UnsafePointer<Float>
        let floatKeys: UnsafePointer<UInt16>, floatValues: UnsafePointer<UInt16>, floatBase: Int
        let stored: Int
        let scale: Float
    }

    /// Scratch of one thread's tasks, for blocks of up to `block` queries; per (query, head)
    /// slots are indexed lt * perKV + hh (query lt of the block, head hh of the KV head).
    final class AttendScratch {
        let block: Int, perKV: Int, hd: Int, partCapacity: Int, floatCapacity: Int
        /// (block, perKV, partCapacity): one part's scores, then its softmax weights.
        let scores: UnsafeMutablePointer<Float>
        /// (block, perKV, hd): one part's unnormalized output; (block, perKV): its max and sum.
        let partOut: UnsafeMutablePointer<Float>
        /// (block, perKV, hd): with Hadamard-rotated values, the part's packed values mixed while
        /// still rotated (rotated back once per query head and part, not once per token).
        let rotatedOut: UnsafeMutablePointer<Float>
        let partMax: UnsafeMutablePointer<Float>, partSum: UnsafeMutablePointer<Float>
        /// Merged parts so far (block schedule): max, sum, output.
        let mergedMax: UnsafeMutablePointer<Float>, mergedSum: UnsafeMutablePointer<Float>, merged: UnsafeMutablePointer<Float>
        /// (block, perKV, hd): the scaled queries in channel order and in key tile order.
        let naturalQ: UnsafeMutablePointer<Float>, tileQ: UnsafeMutablePointer<Float>
        /// hd: a tile-order query rotated back to a group start.
        let groupQ: UnsafeMutablePointer<Float>
        let keyTile: UnsafeMutablePointer<Float>, valueTile: UnsafeMutablePointer<Float>
        let rowOffsets: UnsafeMutablePointer<Int32>, rowBits: UnsafeMutablePointer<UInt8>
        /// Compact grids decoded for one key tile (2, hd) and one value tile (2, G, valueGroups).
        let keyGrids: UnsafeMutablePointer<UInt16>, valueGrids: UnsafeMutablePointer<UInt16>
        /// The sink rows and the block's f16 rows of one KV head as floats (S, hd) and (floatCapacity, hd).
        let sinkKeys: UnsafeMutablePointer<Float>, sinkValues: UnsafeMutablePointer<Float>
        let floatKeys: UnsafeMutablePointer<Float>, floatValues: UnsafeMutablePointer<Float>
        var sinkHead = -1, sinkCount = 0
        var floatHead = -1, floatFirst = 0, floatCount = 0
        /// Per query of the block: its view, and where its packed and f16-row scores start in the part.
        let views: UnsafeMutablePointer<QueryView>
        let packedOffset: UnsafeMutablePointer<Int>, floatOffset: UnsafeMutablePointer<Int>, partLength: UnsafeMutablePointer<Int>
        var count = 0

        init(_ cache: KIVICache, block: Int) {
            let l = cache.layout, g = cache.geometry
            self.block = block
            perKV = g.queryHeads / g.kvHeads
            hd = g.headDim
            let slots = block * perKV
            // A query sees at most R tokens through f16 rows (windowStart(n) >= n - R).
            partCapacity = l.sink + KIVICache.groupsPerPart * l.group + l.residual
            floatCapacity = block + l.residual
            scores = .allocate(capacity: slots * partCapacity)
            partOut = .allocate(capacity: slots * hd)
            rotatedOut = .allocate(capacity: slots * hd)
            partMax = .allocate(capacity: slots); partSum = .allocate(capacity: slots)
            mergedMax = .allocate(capacity: slots); mergedSum = .allocate(capacity: slots)
            merged = .allocate(capacity: slots * hd)
            naturalQ = .allocate(capacity: slots * hd); tileQ = .allocate(capacity: slots * hd)
            groupQ = .allocate(capacity: hd)
            keyTile = .allocate(capacity: hd * l.group); valueTile = .allocate(capacity: hd * l.group)
            rowOffsets = .allocate(capacity: hd); rowBits = .allocate(capacity: hd)
            keyGrids = .allocate(capacity: 2 * hd); valueGrids = .allocate(capacity: 2 * l.group * l.valueGroups)
            sinkKeys = .allocate(capacity: max(1, l.sink * hd)); sinkValues = .allocate(capacity: max(1, l.sink * hd))
            floatKeys = .allocate(capacity: floatCapacity * hd); floatValues = .allocate(capacity: floatCapacity * hd)
            views = .allocate(capacity: block)
            packedOffset = .allocate(capacity: block); floatOffset = .allocate(capacity: block); partLength = .allocate(capacity: block)
            // Without a pair split every group has the same row layout.
            if l.orderedPairs == 0 { l.keyRows(high: 0, zero: 0, offsets: rowOffsets, bits: rowBits) }
        }

        deinit {
            scores.deallocate(); partOut.deallocate(); rotatedOut.deallocate(); partMax.deallocate(); partSum.deallocate()
            mergedMax.deallocate(); mergedSum.deallocate(); merged.deallocate()
            naturalQ.deallocate(); tileQ.deallocate(); groupQ.deallocate(); keyTile.deallocate(); valueTile.deallocate()
            rowOffsets.deallocate(); rowBits.deallocate(); keyGrids.deallocate(); valueGrids.deallocate(); sinkKeys.deallocate(); sinkValues.deallocate()
            floatKeys.deallocate(); floatValues.deallocate(); views.deallocate()
            packedOffset.deallocate(); floatOffset.deallocate(); partLength.deallocate()
        }

        @inline(__always) func slot(_ lt: Int, _ hh: Int) -> Int { lt * perKV + hh }
    }

    public func attend(layer li: Int, start: Int, tokens: Int, queries: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        guard tokens > 0 else { return }
        let g = geometry, hd = g.headDim, heads = g.queryHeads, kvHeads = g.kvHeads, perKV = heads / kvHeads
        // Groups this layer's store left for the queries to weigh, then the queries' energy.
        if stagingLayer == li { packPending(start: start, tokens: tokens, queries: queries) } else { packPending() }
        if layout.queryWeightedPairs {
            for t in 0..<tokens { addQueryEnergy(queries + t * heads * hd, into: &layers[li].queryEnergy) }
        }
        let (fk, fv, floatBase) = floatRows(li)
        let ctx = AttendContext(
            layer: layers[li], layerIndex: li, level: kernelLevel, path: KIVITiles.path(kernelLevel, group: group, channels: hd),
            start: start, queries: queries, floatKeys: fk, floatValues: fv, floatBase: floatBase, stored: layers[li].count,
            scale: 1 / Float(hd).squareRoot())
        let maxParts = queryView(position: start + tokens - 1, stored: ctx.stored, floatBase: floatBase).parts
        if tokens * kvHeads < 2 * pool.threadCount && maxParts > 1 {
            // One task per (token, KV head, part); results (max, sum, output) merged afterwards.
            let stride = hd + 2
            let results = UnsafeMutablePointer<Float>.allocate(capacity: tokens * heads * maxParts * stride)
            defer { results.deallocate() }
            pool.parallelRanges(tokens * kvHeads * maxParts) { range in
                let s = AttendScratch(self, block: 1)
                for task in range {
                    let p = task % maxParts, kvh = (task / maxParts) % kvHeads, t = task / (maxParts * kvHeads)
                    prepare(ctx, s, kvh: kvh, queries: t..<(t + 1))
                    guard p < s.views[0].parts else { continue }
                    attendPart(ctx, s, kvh: kvh, part: p)
                    for hh in 0..<perKV {
                        let r = results + ((t * heads + kvh * perKV + hh) * maxParts + p) * stride
                        r[0] = s.partMax[hh]; r[1] = s.partSum[hh]
                        (r + 2).update(from: s.partOut + hh * hd, count: hd)
                    }
                }
            }
            for t in 0..<tokens {
                let parts = queryView(position: start + t, stored: ctx.stored, floatBase: floatBase).parts
                for h in 0..<heads {
                    let out = output + (t * heads + h) * hd
                    let r = results + (t * heads + h) * maxParts * stride
                    guard parts > 0 else { out.initialize(repeating: 0, count: hd); continue }
                    var m = r[0], l = r[1]
                    out.update(from: r + 2, count: hd)
                    for p in 1..<max(1, parts) {
                        let q = r + p * stride
                        Self.merge(&m, &l, out, m: q[0], l: q[1], o: q + 2, count: hd)
                    }
                    Self.finish(out, sum: l, count: hd)
                }
            }
            return
        }
        // One task per (KV head, block of queries), going through the parts in order.
        let block = min(16, max(1, tokens / 4))
        let blocks = (tokens + block - 1) / block
        pool.parallelRanges(blocks * kvHeads) { range in
            let s = AttendScratch(self, block: block)
            for task in range {
                let kvh = task % kvHeads, b = task / kvHeads
                let t0 = b * block, t1 = min(tokens, t0 + block)
                prepare(ctx, s, kvh: kvh, queries: t0..<t1)
                var parts = 0
                for lt in 0..<s.count { parts = max(parts, s.views[lt].parts) }
                for p in 0..<parts {
                    attendPart(ctx, s, kvh: kvh, part: p)
                    for lt in 0..<s.count where p < s.views[lt].parts {
                        for hh in 0..<perKV {
                            let k = s.slot(lt, hh)
                            if p == 0 {
                                s.mergedMax[k] = s.partMax[k]; s.mergedSum[k] = s.partSum[k]
                                (s.merged + k * hd).update(from: s.partOut + k * hd, count: hd)
                            } else {
                                Self.merge(&s.mergedMax[k], &s.mergedSum[k], s.merged + k * hd, m: s.partMax[k], l: s.partSum[k], o: s.partOut + k * hd, count: hd)
                            }
                        }
                    }
                }
                for lt in 0..<s.count {
                    for hh in 0..<perKV {
                        let k = s.slot(lt, hh), out = output + ((t0 + lt) * heads + kvh * perKV + hh) * hd
                        if s.views[lt].parts == 0 { out.initialize(repeating: 0, count: hd); continue }
                        out.update(from: s.merged + k * hd, count: hd)
                        Self.finish(out, sum: s.mergedSum[k], count: hd)
                    }
                }
            }
        }
    }

    /// Adds a part (max m, sum l, unnormalized output o) to the merged parts (M, L, O).
    @inline(__always)
    static func merge(_ M: inout Float, _ L: inout Float, _ O: UnsafeMutablePointer<Float>, m: Float, l: Float, o: UnsafePointer<Float>, count: Int) {
        let top = Swift.max(M, m)
        let a = Foundation.exp(M - top), b = Foundation.exp(m - top)
        L = a * L + b * l
        for i in 0..<count { O[i] = a * O[i] + b * o[i] }
        M = top
    }

    @inline(__always)
    static func finish(_ out: UnsafeMutablePointer<Float>, sum: Float, count: Int) {
        let inv = 1 / sum
        for i in 0..<count { out[i] *= inv }
    }

    /// Loads queries `ts` of KV head kvh into the scratch: their views and scaled queries.
    func prepare(_ ctx: AttendContext, _ s: AttendScratch, kvh: Int, queries ts: Range<Int>) {
        let g = geometry, hd = g.headDim, heads = g.queryHeads
        s.count = ts.count
        let pairs = rotation?.pairs ?? 0
        for (lt, t) in ts.enumerated() {
            s.views[lt] = queryView(position: ctx.start + t, stored: ctx.stored, floatBase: ctx.floatBase)
            for hh in 0..<s.perKV {
                let q = ctx.queries + (t * heads + kvh * s.perKV + hh) * hd
                let nq = s.naturalQ + s.slot(lt, hh) * hd, tq = s.tileQ + s.slot(lt, hh) * hd
                for c in 0..<hd { nq[c] = q[c] * ctx.scale }
                for i in 0..<pairs { tq[i] = nq[2 * i]; tq[pairs + i] = nq[2 * i + 1] }
                for c in (2 * pairs)..<hd { tq[c] = nq[c] }
            }
        }
    }

    /// Part p of the keys of every query of the block that has one: scores, softmax (max, sum),
    /// and the weighted values, into the scratch's part slots.
    func attendPart(_ ctx: AttendContext, _ s: AttendScratch, kvh: Int, part p: Int) {
        let l = ctx.layer, layout = layout, path = ctx.path
        let hd = s.hd, G = group, d = geometry.kvDim, perKV = s.perKV, cap = s.partCapacity
        let gLo = p * Self.groupsPerPart
        var gHi = gLo
        for lt in 0..<s.count where p < s.views[lt].parts { gHi = max(gHi, min(s.views[lt].groups, gLo + Self.groupsPerPart)) }

        // Keys: sink rows, packed groups (one tile per group for every query that sees it packed), f16 rows.
        for lt in 0..<s.count where p < s.views[lt].parts {
            let v = s.views[lt]
            var offset = 0
            if p == 0 && v.sinkEnd > 0 {
                loadSinks(ctx, s, kvh: kvh)
                for hh in 0..<perKV {
                    let k = s.slot(lt, hh)
                    KIVITiles.rowScores(path, s.naturalQ + k * hd, rows: s.sinkKeys, count: v.sinkEnd, channels: hd, into: s.scores + k * cap)
                }
                offset = v.sinkEnd
            }
            s.packedOffset[lt] = offset
            s.partLength[lt] = offset + max(0, min(v.groups, gLo + Self.groupsPerPart) - gLo) * G
        }
        let ropePairs = rotation?.pairs ?? 0
        for gi in gLo..<gHi {
            if layout.orderedPairs > 0 {
                let masks = l.keyMasks + 2 * (gi * layout.kvHeads + kvh)
                layout.keyRows(high: masks[0], zero: masks[1], offsets: s.rowOffsets, bits: s.rowBits)
            }
            let grids = keyGrids(l, group: gi, head: kvh, bits: s.rowBits, scratch: s.keyGrids)
            let source = KIVITiles.KeySource(
                codes: l.keyCodes + layout.keyBlock(group: gi, head: kvh), rowOffsets: s.rowOffsets, rowBits: s.rowBits,
                scales: grids.scales, zeros: grids.zeros, channels: hd, ropePairs: ropePairs,
                group: G, cos: rotation?.offsetCos ?? s.keyTile, sin: rotation?.offsetSin ?? s.keyTile)
            KIVITiles.keyTile(path, source, into: s.keyTile)
            for lt in 0..<s.count where s.views[lt].groups > gi {
                for hh in 0..<perKV {
                    let k = s.slot(lt, hh)
                    var q = UnsafePointer(s.tileQ + k * hd)
                    if let rotation {
                        rotation.queryAtGroupStart(q, channels: hd, group: gi, into: s.groupQ)
                        q = UnsafePointer(s.groupQ)
                    }
                    KIVITiles.tileScores(path, q, tile: s.keyTile, channels: hd, group: G,
                                         into: s.scores + k * cap + s.packedOffset[lt] + (gi - gLo) * G)
                }
            }
        }
        for lt in 0..<s.count where p < s.views[lt].parts {
            let v = s.views[lt]
            s.floatOffset[lt] = s.partLength[lt]
            guard p == v.parts - 1 && v.n > v.frozen else { continue }
            loadFloatRows(ctx, s, kvh: kvh)
            for hh in 0..<perKV {
                let k = s.slot(lt, hh)
                KIVITiles.rowScores(path, s.naturalQ + k * hd, rows: s.floatKeys + (v.frozen - s.floatFirst) * hd, count: v.n - v.frozen,
                                    channels: hd, into: s.scores + k * cap + s.floatOffset[lt])
            }
            s.partLength[lt] += v.n - v.frozen
        }

        // Softmax of the part without normalizing: weights exp(x - max), their sum kept for merging.
        for lt in 0..<s.count where p < s.views[lt].parts {
            let n = s.partLength[lt]
            for hh in 0..<perKV {
                let k = s.slot(lt, hh), x = s.scores + k * cap
                var m = -Float.infinity
                for i in 0..<n { m = max(m, x[i]) }
                for i in 0..<n { x[i] -= m }
                Kernels.exp(x, count: n, into: x, level: ctx.level)
                var sum: Float = 0
                for i in 0..<n { sum += x[i] }
                s.partMax[k] = m
                s.partSum[k] = sum
                (s.partOut + k * hd).initialize(repeating: 0, count: hd)
                if valueHadamard { (s.rotatedOut + k * hd).initialize(repeating: 0, count: hd) }
            }
        }

        // Values, in the same order as the keys.
        for lt in 0..<s.count where p == 0 && p < s.views[lt].parts && s.views[lt].sinkEnd > 0 {
            for hh in 0..<perKV {
                let k = s.slot(lt, hh)
                KIVITiles.rowsMix(path, s.scores + k * cap, rows: s.sinkValues, count: s.views[lt].sinkEnd, channels: hd, into: s.partOut + k * hd)
            }
        }
        for gi in gLo..<gHi {
            let j0 = gi * G
            let grids = valueGrids(l, group: gi, valueGroups: (kvh * hd / layout.valueGroup)..<((kvh * hd + hd - 1) / layout.valueGroup + 1),
                                   scratch: s.valueGrids)
            let source = KIVITiles.ValueSource(
                codes: l.valueCodes + j0 * layout.valueTokenBytes + kvh * hd * layout.valueBits / 8, tokenBytes: layout.valueTokenBytes,
                bits: layout.valueBits, scales: grids.scales, zeros: grids.zeros, groupsPerToken: layout.valueGroups,
                firstChannel: kvh * hd, channels: hd, valueGroup: layout.valueGroup, tokens: G)
            KIVITiles.valueTile(path, source, into: s.valueTile)
            // Rotated values: H is linear, so sum_m w_m H v_m = H sum_m w_m v_m: mix the rotated
            // tile and rotate the sum back once below.
            let mixed = valueHadamard ? s.rotatedOut : s.partOut
            for lt in 0..<s.count where s.views[lt].groups > gi {
                for hh in 0..<perKV {
                    let k = s.slot(lt, hh)
                    KIVITiles.rowsMix(path, s.scores + k * cap + s.packedOffset[lt] + (gi - gLo) * G, rows: s.valueTile, count: G,
                                      channels: hd, into: mixed + k * hd)
                }
            }
        }
        if valueHadamard && gHi > gLo {
            for lt in 0..<s.count where s.views[lt].groups > gLo {
                for hh in 0..<perKV {
                    let k = s.slot(lt, hh), r = s.rotatedOut + k * hd, o = s.partOut + k * hd
                    Self.hadamard(r, hd)
                    for c in 0..<hd { o[c] += r[c] }
                }
            }
        }
        for lt in 0..<s.count where p < s.views[lt].parts {
            let v = s.views[lt]
            guard p == v.parts - 1 && v.n > v.frozen else { continue }
            for hh in 0..<perKV {
                let k = s.slot(lt, hh)
                KIVITiles.rowsMix(path, s.scores + k * cap + s.floatOffset[lt], rows: s.floatValues + (v.frozen - s.floatFirst) * hd,
                                  count: v.n - v.frozen, channels: hd, into: s.partOut + k * hd)
            }
        }
    }

    /// The sink rows of KV head kvh as floats (once per head per scratch).
    func loadSinks(_ ctx: AttendContext, _ s: AttendScratch, kvh: Int) {
        let n = min(sink, ctx.stored)
        guard s.sinkHead != kvh || s.sinkCount != n else { return }
        let d = geometry.kvDim, hd = s.hd
        KIVITiles.halfRows(ctx.path, ctx.layer.sinkKeys + kvh * hd, stride: d, count: n, channels: hd, into: s.sinkKeys)
        KIVITiles.halfRows(ctx.path, ctx.layer.sinkValues + kvh * hd, stride: d, count: n, channels: hd, into: s.sinkValues)
        s.sinkHead = kvh
        s.sinkCount = n
    }

    /// The f16 rows the block's queries see (from the first one's `frozen` to the last one's n)
    /// of KV head kvh as floats.
    func loadFloatRows(_ ctx: AttendContext, _ s: AttendScratch, kvh: Int) {
        let first = s.views[0].frozen, count = s.views[s.count - 1].n - first
        guard s.floatHead != kvh || s.floatFirst != first || s.floatCount != count else { return }
        let d = geometry.kvDim, hd = s.hd
        let offset = (first - ctx.floatBase) * d + kvh * hd
        KIVITiles.halfRows(ctx.path, ctx.floatKeys + offset, stride: d, count: count, channels: hd, into: s.floatKeys)
        KIVITiles.halfRows(ctx.path, ctx.floatValues + offset, stride: d, count: count, channels: hd, into: s.floatValues)
        s.floatHead = kvh
        s.floatFirst = first
        s.floatCount = count
    }

    /// Reference for `KVKernels.rotatedKeyGroupScores` as attention calls it: decode each pre-RoPE
    /// key of packed group gi, head h with scalar code reads, rotate it to its position by the RoPE
    /// definition in Double (pair (2i, 2i + 1), angle p * base^(-2i / ropeDims); not the cache's
    /// `KeyRotation` tables), and dot it with q in Double.
    func preRoPEGroupScoresReference(_ l: Layer, group gi: Int, head h: Int, query q: UnsafePointer<Float>) -> [Float] {
        let hd = geometry.headDim, d = geometry.kvDim, G = group, rd = geometry.ropeDims
        var x = [Double](repeating: 0, count: hd)
        return (0..<G).map { i in
            for c in 0..<hd {
                let (row, bits) = keyCodeRow(l, group: gi, channel: h * hd + c)
                let grid = keyGrid(l, group: gi, channel: h * hd + c, bits: bits)
                x[c] = Double(Half.referenceFloat(grid.scale)) * Double(bits == 0 ? 0 : KIVIQuant.code(row, index: i, bits: bits))
                    + Double(Half.referenceFloat(grid.zero))
            }
            let p = Double(sink + gi * G + i)
            for k in 0..<(rd / 2) {
                let theta = p * Foundation.pow(Double(geometry.ropeBase), -Double(2 * k) / Double(rd))
                let a = x[2 * k], b = x[2 * k + 1]
                x[2 * k] = a * Foundation.cos(theta) - b * Foundation.sin(theta)
                x[2 * k + 1] = a * Foundation.sin(theta) + b * Foundation.cos(theta)
            }
            var s = 0.0
            for c in 0..<hd { s += Double(q[c]) * x[c] }
            return Float(s)
        }
    }

    /// The f16 rows a layer's attention reads, and the position of their first token: the staging
    /// rows if `li` was the last layer stored in this pass, else the window.
    func floatRows(_ li: Int) -> (keys: UnsafePointer<UInt16>, values: UnsafePointer<UInt16>, first: Int) {
        if stagingLayer == li, let k = stagingKeys, let v = stagingValues { return (UnsafePointer(k), UnsafePointer(v), stagingBase) }
        let l = layers[li]
        return (UnsafePointer(l.windowKeys), UnsafePointer(l.windowValues), l.windowStart)
    }

    /// What the cache holds for token j of a layer as seen by a query that sees `visible` tokens
    /// (dequantized with the scalar reference if packed for it, the f16 row otherwise), for tests and
    /// error measurements. Valid right after `store` + before the next layer's `store`, or between passes.
    func seenKeyValue(layer li: Int, token j: Int, visible: Int) -> (key: [Float], value: [Float]) {
        let l = layers[li], d = geometry.kvDim
        let (fk, fv, floatBase) = floatRows(li)
        let frozen = min(max(windowStart(visible), floatBase), visible)
        func row(_ k: UnsafePointer<UInt16>, _ v: UnsafePointer<UInt16>) -> ([Float], [Float]) {
            ((0..<d).map { Half.referenceFloat(k[$0]) }, (0..<d).map { Half.referenceFloat(v[$0]) })
        }
        if j < min(sink, frozen) { return row(l.sinkKeys + j * d, l.sinkValues + j * d) }
        if j >= frozen { return row(fk + (j - floatBase) * d, fv + (j - floatBase) * d) }
        let p = j - sink
        let key = packedKey(l, token: j)
        var value = (0..<d).map { c in
            let grid = valueGrid(l, packedToken: p, valueGroup: c / layout.valueGroup)
            return Half.referenceFloat(grid.scale) * Float(KIVIQuant.code(l.valueCodes + p * layout.valueTokenBytes, index: c, bits: valueBits))
                + Half.referenceFloat(grid.zero)
        }
        if valueHadamard {
            value.withUnsafeMutableBufferPointer { x in
                for h in 0..<geometry.kvHeads { Self.hadamard(x.baseAddress! + h * geometry.headDim, geometry.headDim) }
            }
        }
        return (key, value)
    }
}
