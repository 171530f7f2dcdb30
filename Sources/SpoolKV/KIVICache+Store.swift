import SpoolKernels

extension KIVICache {
    public func store(layer li: Int, start: Int, tokens: Int, keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>) throws {
        guard start >= 0, tokens >= 0, start + tokens <= geometry.capacity else {
            throw KVCacheError.contextFull(needed: start + tokens, capacity: geometry.capacity)
        }
        let l = layers[li]
        guard start <= l.count else { throw KVCacheError.gap(layer: li, start: start, stored: l.count) }
        packPending()
        if start == 0 { l.resetQueryEnergy() }
        if start < l.count { rewind(li, to: start) }
        let d = geometry.kvDim
        let p0 = l.windowStart, end = start + tokens
        reserveStaging(tokens: end - p0)
        guard let sk = stagingKeys, let sv = stagingValues else { return }
        // Staging: the window (tokens p0..<start) followed by the new tokens, all in f16.
        let w = start - p0
        sk.update(from: l.windowKeys, count: w * d)
        sv.update(from: l.windowValues, count: w * d)
        Half.store(k, count: tokens * d, into: sk + w * d)
        Half.store(v, count: tokens * d, into: sv + w * d)
        // Sink tokens never enter the window; packed groups start at S.
        if p0 < sink {
            let n = min(end, sink) - p0
            (l.sinkKeys + p0 * d).update(from: sk, count: n * d)
            (l.sinkValues + p0 * d).update(from: sv, count: n * d)
        }
        let p1 = windowStart(end)
        var first = max(p0, sink)
        while first < p1 {
            // With query-weighted pairs the group waits for this layer's attention, which knows
            // the batch's queries (`packPending`); its f16 rows stay in staging until then.
            if layout.queryWeightedPairs { pendingGroups.append(first) } else {
                pack(l, group: (first - sink) / group, keys: sk + (first - p0) * d, values: sv + (first - p0) * d)
            }
            first += group
        }
        l.windowKeys.update(from: sk + (p1 - p0) * d, count: (end - p1) * d)
        l.windowValues.update(from: sv + (p1 - p0) * d, count: (end - p1) * d)
        l.windowStart = p1
        l.count = end
        stagingLayer = li
        stagingBase = p0
    }

    public func commit(upTo count: Int) {
        packPending()
        self.count = min(max(0, count), geometry.capacity)
        stagingLayer = -1
        // A prefill batch grew the staging rows; give them back so that between passes the cache
        // holds only the packed store and the windows.
        if stagingCapacity > 2 * residual { releaseStaging() }
    }

    public func truncate(to count: Int) {
        packPending()
        let n = max(0, count)
        if n == 0 { for l in layers { l.resetQueryEnergy() } }
        for li in layers.indices where layers[li].count > n { rewind(li, to: n) }
        self.count = min(self.count, n)
        stagingLayer = -1
    }

    /// Makes layer `li` hold exactly tokens 0..<n (n <= its count), as if only they had been stored:
    /// windowStart(n) tokens in the sink and packed, the rest in the window. Tokens of a packed group that fall back
    /// into the window come back dequantized.
    func rewind(_ li: Int, to n: Int) {
        let l = layers[li]
        if stagingLayer == li { stagingLayer = -1 }
        let p0 = l.windowStart, p1 = windowStart(n)
        if p1 < p0 {
            let d = geometry.kvDim
            // Window tokens p0..<n move from slot j - p0 to slot j - p1 (an overlapping move).
            let kept = max(0, n - p0) * d
            UnsafeMutableRawPointer(l.windowKeys + (p0 - p1) * d).copyMemory(from: l.windowKeys, byteCount: kept * 2)
            UnsafeMutableRawPointer(l.windowValues + (p0 - p1) * d).copyMemory(from: l.windowValues, byteCount: kept * 2)
            for j in p1..<min(n, p0) {
                dequantize(l, token: j, keys: l.windowKeys + (j - p1) * d, values: l.windowValues + (j - p1) * d)
            }
        }
        l.windowStart = p1
        l.count = n
    }

    /// Packs the groups `store` left pending (`layout.queryWeightedPairs`), in order. Attention
    /// passes its batch's queries: group gi is then weighted by the energy of every query before
    /// position S + R + gi * G, the token whose store flushes it, which is exactly what the layer
    /// had seen when token-by-token decoding flushed the group; so batches and single tokens pack
    /// the same bits. Called without a batch (a store, commit or truncate that no attention
    /// preceded) it packs with the energy seen so far.
    func packPending(start: Int = 0, tokens: Int = 0, queries: UnsafePointer<Float>? = nil) {
        guard !pendingGroups.isEmpty else { return }
        defer { pendingGroups.removeAll(keepingCapacity: true) }
        guard stagingLayer >= 0, let sk = stagingKeys, let sv = stagingValues else { return }
        let l = layers[stagingLayer], d = geometry.kvDim
        let n = layout.kvHeads * layout.orderedPairs
        var energy = l.queryEnergy
        var t = 0
        for first in pendingGroups {
            let gi = (first - sink) / group, flush = sink + residual + gi * group
            if let queries {
                while t < tokens && start + t < flush { addQueryEnergy(queries + t * geometry.queryHeads * geometry.headDim, into: &energy); t += 1 }
            }
            energy.withUnsafeBufferPointer { e in
                pack(l, group: gi, keys: sk + (first - stagingBase) * d, values: sv + (first - stagingBase) * d, energy: n > 0 ? e.baseAddress : nil)
            }
        }
    }

    /// Adds one token's query energy per KV head and rotary pair, summed over the query heads
    /// that share the KV head: |q_pair|^2, which RoPE leaves unchanged.
    @inline(__always)
    func addQueryEnergy(_ q: UnsafePointer<Float>, into energy: inout [Double]) {
        let np = layout.orderedPairs, hd = geometry.headDim, perKV = geometry.queryHeads / geometry.kvHeads
        guard np > 0 else { return }
        for h in 0..<geometry.queryHeads {
            let kvh = h / perKV, row = q + h * hd
            for i in 0..<np { energy[kvh * np + i] += Double(row[2 * i] * row[2 * i] + row[2 * i + 1] * row[2 * i + 1]) }
        }
    }

    /// Quantizes G tokens (rows of kvDim f16 keys and values) as packed group `gi` (tokens S + gi * G...).
    /// `energy` (kvHeads, pairs): query energy per rotary pair, which weighs the pairs' widths
    /// when choosing the 4-bit and the dropped ones (nil or all zero: widths alone).
    func pack(_ l: Layer, group gi: Int, keys: UnsafePointer<UInt16>, values: UnsafePointer<UInt16>, energy: UnsafePointer<Double>? = nil) {
        let d = geometry.kvDim, g = group
        // Pre-RoPE keys: rotate the group's keys back by their positions first.
        var unrotated: [Float] = []
        if let rotation {
            unrotated = (0..<(g * d)).map { Half.float(keys[$0]) }
            unrotated.withUnsafeMutableBufferPointer { x in
                for t in 0..<g {
                    for h in 0..<geometry.kvHeads { rotation.rotate(x.baseAddress! + t * d + h * geometry.headDim, group: gi, offset: t, sign: -1) }
                }
            }
        }
        let hd = geometry.headDim, np = layout.orderedPairs
        @inline(__always) func key(_ t: Int, _ c: Int) -> Float { rotation == nil ? Half.float(keys[t * d + c]) : unrotated[t * d + c] }
        var rowChannel = Array(0..<hd)
        for h in 0..<geometry.kvHeads {
            let block = l.keyCodes + layout.keyBlock(group: gi, head: h)
            if np > 0 {
                // The widest pairs of this head and group get the high-precision rows, the narrowest none.
                let width = (0..<(2 * np)).map { c in
                    var lo = Float.infinity, hi = -Float.infinity
                    for t in 0..<g { let x = key(t, h * hd + c); lo = min(lo, x); hi = max(hi, x) }
                    return hi - lo
                }
                var spread: [Float] = (0..<np).map { i in width[2 * i] * width[2 * i] + width[2 * i + 1] * width[2 * i + 1] }
                if let energy, (0..<np).contains(where: { energy[h * np + $0] > 0 }) {
                    // A pair's rounding error reaches the scores scaled by the queries it meets.
                    for i in 0..<np { spread[i] *= Float(Self.queryWeight(energy[h * np + i])) }
                }
                let byWidth = (0..<np).sorted { spread[$0] != spread[$1] ? spread[$0] > spread[$1] : $0 < $1 }
                let high = byWidth.prefix(layout.keyHighPairs), zero = byWidth.suffix(layout.keyZeroPairs)
                let masks = l.keyMasks + 2 * (gi * geometry.kvHeads + h)
                masks[0] = high.reduce(UInt64(0)) { $0 | 1 << UInt64($1) }
                masks[1] = zero.reduce(UInt64(0)) { $0 | 1 << UInt64($1) }
                var order = [UInt8](repeating: 0, count: np)
                layout.pairOrder(high: masks[0], zero: masks[1], into: &order)
                for (k, pair) in order.enumerated() {
                    rowChannel[2 * k] = 2 * Int(pair)
                    rowChannel[2 * k + 1] = 2 * Int(pair) + 1
                }
            }
            // Ranges and widths per channel (natural order), then the grids, then the codes.
            var ranges = [(lo: Float, hi: Float)](repeating: (0, 0), count: hd), widths = [Int](repeating: 0, count: hd)
            var offsets = [Int](repeating: 0, count: hd)
            for r in 0..<hd {
                let cc = rowChannel[r], c = h * hd + cc
                let (offset, bits) = layout.keyRow(r)
                ranges[cc] = KIVIQuant.range(n: g, bits: bits, clipSteps: configuration.resolvedKeyClip) { key($0, c) }
                widths[cc] = bits
                offsets[cc] = offset
            }
            let grids = setKeyGrids(l, group: gi, head: h, ranges: ranges, bits: widths)
            for cc in 0..<hd where widths[cc] > 0 {
                let c = h * hd + cc
                KIVIQuant.encode(n: g, bits: widths[cc], codes: block + offsets[cc], scale: grids[cc].scale, zero: grids[cc].zero) { key($0, c) }
            }
        }
        // Values: every token of the group (Hadamard-rotated per head when `valueHadamard`), then
        // per value group the G tokens' ranges, grids and codes.
        let vg = layout.valueGroup, groupBytes = vg * valueBits / 8
        var rows = [Float](repeating: 0, count: g * d)
        rows.withUnsafeMutableBufferPointer { x in
            for t in 0..<g {
                for c in 0..<d { x[t * d + c] = Half.float(values[t * d + c]) }
                if valueHadamard {
                    for h in 0..<geometry.kvHeads { Self.hadamard(x.baseAddress! + t * d + h * geometry.headDim, geometry.headDim) }
                }
            }
        }
        for k in 0..<layout.valueGroups {
            let ranges = (0..<g).map { t in
                KIVIQuant.range(n: vg, bits: valueBits, clipSteps: configuration.resolvedValueClip) { rows[t * d + k * vg + $0] }
            }
            let grids = setValueGrids(l, group: gi, valueGroup: k, ranges: ranges)
            for t in 0..<g {
                let j = gi * g + t
                KIVIQuant.encode(n: vg, bits: valueBits, codes: l.valueCodes + j * layout.valueTokenBytes + k * groupBytes,
                                 scale: grids[t].scale, zero: grids[t].zero) { rows[t * d + k * vg + $0] }
            }
        }
    }

    /// The key and value packed token `token` (>= S) stands for, as f16 rows.
    func dequantize(_ l: Layer, token: Int, keys: UnsafeMutablePointer<UInt16>, values: UnsafeMutablePointer<UInt16>) {
        let d = geometry.kvDim
        let j = token - sink
        let key = packedKey(l, token: token)
        var value = (0..<d).map { c in
            let grid = valueGrid(l, packedToken: j, valueGroup: c / layout.valueGroup)
            return KIVIQuant.dequantize(l.valueCodes + j * layout.valueTokenBytes, index: c, bits: valueBits,
                                        scale: grid.scale, zero: grid.zero)
        }
        if valueHadamard {
            value.withUnsafeMutableBufferPointer { x in
                for h in 0..<geometry.kvHeads { Self.hadamard(x.baseAddress! + h * geometry.headDim, geometry.headDim) }
            }
        }
        for c in 0..<d {
            keys[c] = Half.bits(key[c])
            values[c] = Half.bits(value[c])
        }
    }

    /// x = H x / sqrt(n) in place (n a power of 2): the orthonormal Walsh-Hadamard transform, its own inverse.
    static func hadamard(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
        var h = 1
        while h < n {
            var i = 0
            while i < n {
                for k in i..<(i + h) {
                    let a = x[k], b = x[k + h]
                    x[k] = a + b
                    x[k + h] = a - b
                }
                i += 2 * h
            }
            h *= 2
        }
        let s = 1 / Float(n).squareRoot()
        for i in 0..<n { x[i] *= s }
    }

    /// The post-RoPE key packed token `token` stands for (scalar decode; rewinds and tests).
    func packedKey(_ l: Layer, token: Int) -> [Float] {
        let d = geometry.kvDim, g = group
        let gi = (token - sink) / g, i = (token - sink) % g
        var key = (0..<d).map { c in
            let (row, bits) = keyCodeRow(l, group: gi, channel: c)
            let grid = keyGrid(l, group: gi, channel: c, bits: bits)
            return Half.referenceFloat(grid.scale) * Float(bits == 0 ? 0 : KIVIQuant.code(row, index: i, bits: bits))
                + Half.referenceFloat(grid.zero)
        }
        if let rotation {
            key.withUnsafeMutableBufferPointer { x in
                for h in 0..<geometry.kvHeads { rotation.rotate(x.baseAddress! + h * geometry.headDim, group: gi, offset: i, sign: 1) }
            }
        }
        return key
    }

    /// Where channel c (of all kvDim) of packed key group gi has its codes, and their width.
    func keyCodeRow(_ l: Layer, group gi: Int, channel c: Int) -> (UnsafeRawPointer, Int) {
        let hd = geometry.headDim, h = c / hd, cc = c % hd, np = layout.orderedPairs
        var r = cc
        if cc < 2 * np {
            var order = [UInt8](repeating: 0, count: np)
            layout.pairOrder(l.keyMasks, group: gi, head: h, into: &order)
            let k = (0..<np).first { Int(order[$0]) == cc / 2 } ?? 0
            r = 2 * k + cc % 2
        }
        let (offset, bits) = layout.keyRow(r)
        return (UnsafeRawPointer(l.keyCodes + layout.keyBlock(group: gi, head: h) + offset), bits)
    }

    func reserveStaging(tokens: Int) {
        let need = max(tokens, residual + 1)
        guard need > stagingCapacity else { return }
        releaseStaging()
        stagingKeys = .allocate(capacity: need * geometry.kvDim)
        stagingValues = .allocate(capacity: need * geometry.kvDim)
        stagingCapacity = need
    }

    func releaseStaging() {
        stagingKeys?.deallocate()
        stagingValues?.deallocate()
        stagingKeys = nil
        stagingValues = nil
        stagingCapacity = 0
    }
}
