import Foundation
import SpoolKernels

extension KIVICache {
    public func attend(layer li: Int, start: Int, tokens: Int, queries: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        switch keyBits {
        case 2: attend(Code2.self, layer: li, start: start, tokens: tokens, queries: queries, output: output, pool: pool)
        case 4: attend(Code4.self, layer: li, start: start, tokens: tokens, queries: queries, output: output, pool: pool)
        default: attend(Code8.self, layer: li, start: start, tokens: tokens, queries: queries, output: output, pool: pool)
        }
    }

    func attend<K: CodeWidth>(
        _ keys: K.Type, layer li: Int, start: Int, tokens: Int, queries: UnsafePointer<Float>,
        output: UnsafeMutablePointer<Float>, pool: ThreadPool
    ) {
        switch valueBits {
        case 2: attend(K.self, Code2.self, layer: li, start: start, tokens: tokens, queries: queries, output: output, pool: pool)
        case 4: attend(K.self, Code4.self, layer: li, start: start, tokens: tokens, queries: queries, output: output, pool: pool)
        default: attend(K.self, Code8.self, layer: li, start: start, tokens: tokens, queries: queries, output: output, pool: pool)
        }
    }

    /// Query t (position p = start + t) sees the sink tokens 0..<S and tokens S..<windowStart(p + 1)
    /// through the packed store, and the rest through f16 rows: the staging rows if this layer was
    /// the last one stored, otherwise the window. Scores of a packed group come from
    /// `KVKernels.keyGroupScores` with the channel scales folded into the query; the weighted value
    /// sum reads codes directly.
    func attend<K: CodeWidth, V: CodeWidth>(
        _ keys: K.Type, _ values: V.Type, layer li: Int, start: Int, tokens: Int, queries: UnsafePointer<Float>,
        output: UnsafeMutablePointer<Float>, pool: ThreadPool
    ) {
        let g = geometry, l = layers[li], layout = layout
        let d = g.kvDim, hd = g.headDim, G = layout.group, S = layout.sink
        let heads = g.queryHeads, perKV = g.queryHeads / g.kvHeads
        let attnScale = 1 / Float(hd).squareRoot()
        let (fk, fv, floatBase) = floatRows(li)
        let stored = l.count
        let scoreCapacity = S + ((start + tokens + G - 1) / G + 1) * G
        pool.parallelRanges(tokens * heads) { range in
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: scoreCapacity)
            let qa = UnsafeMutablePointer<Float>.allocate(capacity: hd)
            let qs = UnsafeMutablePointer<Float>.allocate(capacity: hd)
            let rotated = UnsafeMutablePointer<Float>.allocate(capacity: rotation == nil ? 1 : 3 * hd)
            let order = UnsafeMutablePointer<UInt8>.allocate(capacity: max(1, layout.orderedPairs))
            defer { scores.deallocate(); qa.deallocate(); qs.deallocate(); rotated.deallocate(); order.deallocate() }
            for task in range {
                let t = task / heads, h = task % heads
                let kvh = h / perKV, head = kvh * hd
                let q = queries + (t * heads + h) * hd
                let out = output + (t * heads + h) * hd
                out.initialize(repeating: 0, count: hd)
                let n = min(start + t + 1, stored)
                guard n > 0 else { continue }
                // Tokens 0..<sinkEnd from the sink, sinkEnd..<frozen packed, frozen..<n in f16 rows.
                let frozen = min(max(layout.windowStart(n), floatBase), n)
                let sinkEnd = min(S, frozen)
                let packedTokens = frozen - sinkEnd
                for i in 0..<hd { qs[i] = q[i] * attnScale }
                // qa: the scaled query in the lane order of the f16 row kernels.
                KVKernels.deinterleave(qs, hd, into: qa)

                // Keys.
                for j in 0..<sinkEnd { scores[j] = KVKernels.dotHalf(qa, l.sinkKeys + j * d + head, hd) }
                let keyGroups = (packedTokens + G - 1) / G
                if let rot = self.rotation {
                    let zs = rotated, ss = rotated + hd, qg = rotated + 2 * hd
                    rot.offsetCos.withUnsafeBufferPointer { cp in
                        rot.offsetSin.withUnsafeBufferPointer { sp in
                            for gi in 0..<keyGroups {
                                for c in 0..<hd {
                                    ss[c] = Half.float(l.keyScale[gi * d + head + c])
                                    zs[c] = Half.float(l.keyZero[gi * d + head + c])
                                }
                                rot.queryAtGroupStart(qs, channels: hd, group: gi, into: qg)
                                if layout.orderedPairs > 0 { layout.pairOrder(l.keyMasks, group: gi, head: kvh, into: order) }
                                KVKernels.rotatedKeyGroupScores(
                                    Code4.self, K.self, query: qg, scales: ss, zeros: zs,
                                    order: layout.orderedPairs > 0 ? UnsafePointer(order) : nil,
                                    highPairs: layout.keyHighPairs, zeroPairs: layout.keyZeroPairs, codes: l.keyCodes + layout.keyBlock(group: gi, head: kvh),
                                    highRowBytes: layout.keyHighRowBytes, rowBytes: layout.keyRowBytes, channels: hd,
                                    ropeDims: rot.ropeDims, group: G, cos: cp.baseAddress!, sin: sp.baseAddress!, positionStride: G,
                                    firstPosition: 0, into: scores + sinkEnd + gi * G)
                            }
                        }
                    }
                }
                for gi in 0..<(rotation == nil ? keyGroups : 0) {
                    let ks = l.keyScale + gi * d + head, kz = l.keyZero + gi * d + head
                    // Fold the channel scales and zero points into the query.
                    var qz: Float = 0
                    for c in 0..<hd {
                        let qc = q[c] * attnScale
                        qs[c] = qc * Half.float(ks[c])
                        qz += qc * Half.float(kz[c])
                    }
                    KVKernels.keyGroupScores(K.self, qs: qs, qz: qz, codes: l.keyCodes + layout.keyBlock(group: gi, head: kvh),
                                             rowBytes: layout.keyRowBytes, channels: hd, group: G, into: scores + sinkEnd + gi * G)
                }
                for j in frozen..<n {
                    scores[j] = KVKernels.dotHalf(qa, fk + (j - floatBase) * d + head, hd)
                }
                Kernels.softmax(scores, n: n)

                // Values: f16 rows into qs (deinterleaved, reused as scratch), packed ones into out.
                qs.initialize(repeating: 0, count: hd)
                for j in 0..<sinkEnd { KVKernels.axpyHalf(scores[j], l.sinkValues + j * d + head, qs, hd) }
                for j in frozen..<n { KVKernels.axpyHalf(scores[j], fv + (j - floatBase) * d + head, qs, hd) }
                KVKernels.interleave(qs, hd, into: qa)
                for i in 0..<hd { out[i] = qa[i] }
                KVKernels.valueAccumulate(V.self, weights: scores + sinkEnd, tokens: packedTokens,
                                          codes: l.valueCodes + head * layout.valueBits / 8, tokenBytes: layout.valueTokenBytes,
                                          scales: l.valueScale + head / layout.valueGroup, zeros: l.valueZero + head / layout.valueGroup,
                                          groupsPerToken: layout.valueGroups, firstChannel: head, channels: hd, group: layout.valueGroup, into: out)
            }
        }
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
                x[c] = Double(Half.referenceFloat(l.keyScale[gi * d + h * hd + c])) * Double(bits == 0 ? 0 : KIVIQuant.code(row, index: i, bits: bits))
                    + Double(Half.referenceFloat(l.keyZero[gi * d + h * hd + c]))
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
        let value = (0..<d).map { c in
            let vg = p * layout.valueGroups + c / layout.valueGroup
            return Half.referenceFloat(l.valueScale[vg]) * Float(KIVIQuant.code(l.valueCodes + p * layout.valueTokenBytes, index: c, bits: valueBits))
                + Half.referenceFloat(l.valueZero[vg])
        }
        return (key, value)
    }
}
