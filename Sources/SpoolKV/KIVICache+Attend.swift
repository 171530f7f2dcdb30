import SpoolKernels

extension KIVICache {
    public func attend(layer li: Int, start: Int, tokens: Int, queries: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        switch bits {
        case 2: attend(Code2.self, layer: li, start: start, tokens: tokens, queries: queries, output: output, pool: pool)
        case 4: attend(Code4.self, layer: li, start: start, tokens: tokens, queries: queries, output: output, pool: pool)
        default: attend(Code8.self, layer: li, start: start, tokens: tokens, queries: queries, output: output, pool: pool)
        }
    }

    /// Query t (position p = start + t) sees tokens 0..<packedCount(p + 1) through the packed store
    /// and the rest through f16 rows: the staging rows if this layer was the last one stored,
    /// otherwise the window. Scores of a packed group come from `KVKernels.keyGroupScores` with the
    /// channel scales folded into the query; the weighted value sum reads codes directly.
    func attend<W: CodeWidth>(
        _ width: W.Type, layer li: Int, start: Int, tokens: Int, queries: UnsafePointer<Float>,
        output: UnsafeMutablePointer<Float>, pool: ThreadPool
    ) {
        let g = geometry, l = layers[li], layout = layout
        let d = g.kvDim, hd = g.headDim, G = layout.group
        let heads = g.queryHeads, perKV = g.queryHeads / g.kvHeads
        let attnScale = 1 / Float(hd).squareRoot()
        let (fk, fv, floatBase) = floatRows(li)
        let stored = l.count
        let scoreCapacity = ((start + tokens + G - 1) / G) * G
        pool.parallelRanges(tokens * heads) { range in
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: max(1, scoreCapacity))
            let qa = UnsafeMutablePointer<Float>.allocate(capacity: hd)
            let qs = UnsafeMutablePointer<Float>.allocate(capacity: hd)
            defer { scores.deallocate(); qa.deallocate(); qs.deallocate() }
            for task in range {
                let t = task / heads, h = task % heads
                let kvh = h / perKV, head = kvh * hd
                let q = queries + (t * heads + h) * hd
                let out = output + (t * heads + h) * hd
                out.initialize(repeating: 0, count: hd)
                let n = min(start + t + 1, stored)
                guard n > 0 else { continue }
                let packedTokens = min(max(layout.packedCount(n), floatBase), n)
                for i in 0..<hd { qa[i] = q[i] * attnScale }

                // Keys.
                let keyGroups = (packedTokens + G - 1) / G
                for gi in 0..<keyGroups {
                    let ks = l.keyScale + gi * d + head, kz = l.keyZero + gi * d + head
                    var zacc = SIMD8<Float>.zero
                    var c = 0
                    while c < hd {
                        let qv = UnsafeRawPointer(qa + c).loadUnaligned(as: SIMD8<Float>.self)
                        UnsafeMutableRawPointer(qs + c).storeBytes(of: qv * Half.load8(ks + c), as: SIMD8<Float>.self)
                        zacc += qv * Half.load8(kz + c)
                        c += 8
                    }
                    KVKernels.keyGroupScores(W.self, qs: qs, qz: zacc.sum(), codes: l.keyCodes + (gi * d + head) * layout.keyRowBytes,
                                             rowBytes: layout.keyRowBytes, channels: hd, group: G, into: scores + gi * G)
                }
                for j in packedTokens..<n {
                    scores[j] = KVKernels.dotHalf(qa, fk + (j - floatBase) * d + head, hd)
                }
                Kernels.softmax(scores, n: n)

                // Values.
                KVKernels.valueAccumulate(W.self, weights: scores, tokens: packedTokens,
                                          codes: l.valueCodes + head * layout.bits / 8, tokenBytes: layout.valueTokenBytes,
                                          scales: l.valueScale + head / G, zeros: l.valueZero + head / G,
                                          groupsPerToken: layout.valueGroups, firstChannel: head, channels: hd, group: G, into: out)
                for j in packedTokens..<n {
                    KVKernels.axpyHalf(scores[j], fv + (j - floatBase) * d + head, out, hd)
                }
            }
        }
    }

    /// The f16 rows a layer's attention reads, and the position of their first token: the staging
    /// rows if `li` was the last layer stored in this pass, else the window.
    func floatRows(_ li: Int) -> (keys: UnsafePointer<UInt16>, values: UnsafePointer<UInt16>, first: Int) {
        if stagingLayer == li, let k = stagingKeys, let v = stagingValues { return (UnsafePointer(k), UnsafePointer(v), stagingBase) }
        let l = layers[li]
        return (UnsafePointer(l.windowKeys), UnsafePointer(l.windowValues), l.packed)
    }

    /// What the cache holds for token j of a layer as seen by a query that sees `visible` tokens
    /// (dequantized with the scalar reference if packed for it, the f16 row otherwise), for tests and
    /// error measurements. Valid right after `store` + before the next layer's `store`, or between passes.
    func seenKeyValue(layer li: Int, token j: Int, visible: Int) -> (key: [Float], value: [Float]) {
        let l = layers[li], d = geometry.kvDim, G = group
        let (fk, fv, floatBase) = floatRows(li)
        let packedTokens = min(max(packedCount(visible), floatBase), visible)
        if j >= packedTokens {
            let r = (j - floatBase) * d
            return ((0..<d).map { Half.referenceFloat(fk[r + $0]) }, (0..<d).map { Half.referenceFloat(fv[r + $0]) })
        }
        let gi = j / G, i = j % G
        let key = (0..<d).map { c in
            Half.referenceFloat(l.keyScale[gi * d + c]) * Float(KIVIQuant.code(l.keyCodes + (gi * d + c) * layout.keyRowBytes, index: i, bits: bits))
                + Half.referenceFloat(l.keyZero[gi * d + c])
        }
        let value = (0..<d).map { c in
            let vg = j * layout.valueGroups + c / G
            return Half.referenceFloat(l.valueScale[vg]) * Float(KIVIQuant.code(l.valueCodes + j * layout.valueTokenBytes, index: c, bits: bits))
                + Half.referenceFloat(l.valueZero[vg])
        }
        return (key, value)
    }
}
