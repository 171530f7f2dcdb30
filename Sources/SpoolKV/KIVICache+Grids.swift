/// Where a KIVI layer keeps its grids, the (scale, zero) of every key channel of a packed group
/// and of every value group of a token: as f16 pairs, or compact (`KIVIQuant.compactGrid`: two
/// signed bytes per grid and one f16 bound per block). Everything that reads a grid goes through
/// these functions, so both storages give the same f16 (scale, zero) to the code that encodes and
/// to every reader (kernels, scalar references, rewinds).
extension KIVICache {
    // MARK: keys

    /// Stores the grids of head h's channels in packed group gi, given each channel's range and
    /// code width (0: no codes; natural channel order within the head), and returns the f16 grids
    /// to encode the codes with.
    func setKeyGrids(_ l: Layer, group gi: Int, head h: Int, ranges: [(lo: Float, hi: Float)], bits: [Int]) -> [(scale: UInt16, zero: UInt16)] {
        let d = geometry.kvDim, hd = geometry.headDim, base = gi * d + h * hd
        guard layout.compactKeys else {
            return (0..<hd).map { c in
                let g = KIVIQuant.grid(lo: ranges[c].lo, hi: ranges[c].hi, bits: bits[c])
                l.keyScale[base + c] = g.scale
                l.keyZero[base + c] = g.zero
                return g
            }
        }
        var amax: Float = 0
        for r in ranges { amax = max(amax, abs(r.lo), abs(r.hi)) }
        let ref = KIVIQuant.reference(amax)
        l.keyRef[gi * layout.kvHeads + h] = ref
        return (0..<hd).map { c in
            let shift = KIVIQuant.shift(amax: max(abs(ranges[c].lo), abs(ranges[c].hi)), ref: ref)
            setKeyShift(l, base + c, shift)
            let e = KIVIQuant.compactLimits(lo: ranges[c].lo, hi: ranges[c].hi, ref: ref, shift: shift, bits: bits[c])
            l.keyLimits[2 * (base + c)] = e.lo
            l.keyLimits[2 * (base + c) + 1] = e.hi
            return KIVIQuant.compactGrid(lo: e.lo, hi: e.hi, ref: ref, shift: shift, bits: bits[c])
        }
    }

    /// The grid of channel c (of all kvDim) of packed key group gi, whose codes are `bits` wide.
    @inline(__always)
    func keyGrid(_ l: Layer, group gi: Int, channel c: Int, bits: Int) -> (scale: UInt16, zero: UInt16) {
        let i = gi * geometry.kvDim + c
        guard layout.compactKeys else { return (l.keyScale[i], l.keyZero[i]) }
        return KIVIQuant.compactGrid(lo: l.keyLimits[2 * i], hi: l.keyLimits[2 * i + 1],
                                     ref: l.keyRef[gi * layout.kvHeads + c / geometry.headDim], shift: keyShift(l, i), bits: bits)
    }

    /// The 4-bit shift of key grid i (= group * kvDim + channel): two per byte, low nibble first.
    @inline(__always)
    func keyShift(_ l: Layer, _ i: Int) -> Int { Int(l.keyShifts[i >> 1] >> UInt8(4 * (i & 1))) & 15 }

    @inline(__always)
    func setKeyShift(_ l: Layer, _ i: Int, _ s: Int) {
        let b = l.keyShifts[i >> 1], o = UInt8(4 * (i & 1))
        l.keyShifts[i >> 1] = b & ~(15 << o) | UInt8(s) << o
    }

    /// Head h's key grids of packed group gi as f16 arrays (headDim each) for the tile kernels:
    /// the stored arrays themselves, or compact grids decoded into `scratch` (2 * headDim).
    @inline(__always)
    func keyGrids(_ l: Layer, group gi: Int, head h: Int, bits: UnsafePointer<UInt8>,
                  scratch: UnsafeMutablePointer<UInt16>) -> (scales: UnsafePointer<UInt16>, zeros: UnsafePointer<UInt16>) {
        let hd = geometry.headDim, base = gi * geometry.kvDim + h * hd
        guard layout.compactKeys else { return (UnsafePointer(l.keyScale + base), UnsafePointer(l.keyZero + base)) }
        let ref = l.keyRef[gi * layout.kvHeads + h]
        for c in 0..<hd {
            let g = KIVIQuant.compactGrid(lo: l.keyLimits[2 * (base + c)], hi: l.keyLimits[2 * (base + c) + 1], ref: ref,
                                          shift: keyShift(l, base + c), bits: Int(bits[c]))
            scratch[c] = g.scale
            scratch[hd + c] = g.zero
        }
        return (UnsafePointer(scratch), UnsafePointer(scratch + hd))
    }

    // MARK: values

    /// Stores the grids of value group k of the G tokens of packed group gi, given each token's
    /// range, and returns the f16 grids to encode with.
    func setValueGrids(_ l: Layer, group gi: Int, valueGroup k: Int, ranges: [(lo: Float, hi: Float)]) -> [(scale: UInt16, zero: UInt16)] {
        let vgs = layout.valueGroups, bits = valueBits
        guard layout.compactValues else {
            return ranges.enumerated().map { t, r in
                let g = KIVIQuant.grid(lo: r.lo, hi: r.hi, bits: bits)
                let i = (gi * group + t) * vgs + k
                l.valueScale[i] = g.scale
                l.valueZero[i] = g.zero
                return g
            }
        }
        var amax: Float = 0
        for r in ranges { amax = max(amax, abs(r.lo), abs(r.hi)) }
        let ref = KIVIQuant.reference(amax)
        l.valueRef[gi * vgs + k] = ref
        return ranges.enumerated().map { t, r in
            let e = KIVIQuant.compactLimits(lo: r.lo, hi: r.hi, ref: ref, bits: bits)
            let i = (gi * group + t) * vgs + k
            l.valueLimits[2 * i] = e.lo
            l.valueLimits[2 * i + 1] = e.hi
            return KIVIQuant.compactGrid(lo: e.lo, hi: e.hi, ref: ref, bits: bits)
        }
    }

    /// The grid of value group k of packed token j (0 = token S).
    @inline(__always)
    func valueGrid(_ l: Layer, packedToken j: Int, valueGroup k: Int) -> (scale: UInt16, zero: UInt16) {
        let i = j * layout.valueGroups + k
        guard layout.compactValues else { return (l.valueScale[i], l.valueZero[i]) }
        return KIVIQuant.compactGrid(lo: l.valueLimits[2 * i], hi: l.valueLimits[2 * i + 1],
                                     ref: l.valueRef[(j / group) * layout.valueGroups + k], bits: valueBits)
    }

    /// The grids of value groups `ks` of the G tokens of packed group gi for the tile kernels, laid
    /// out (G, valueGroups) with pointers to group ks.lowerBound of the first token: the stored
    /// arrays, or compact grids decoded into `scratch` (2 * G * valueGroups).
    @inline(__always)
    func valueGrids(_ l: Layer, group gi: Int, valueGroups ks: Range<Int>,
                    scratch: UnsafeMutablePointer<UInt16>) -> (scales: UnsafePointer<UInt16>, zeros: UnsafePointer<UInt16>) {
        let vgs = layout.valueGroups, j0 = gi * group
        guard layout.compactValues else { return (UnsafePointer(l.valueScale + j0 * vgs + ks.lowerBound), UnsafePointer(l.valueZero + j0 * vgs + ks.lowerBound)) }
        let n = group * vgs, bits = valueBits
        for k in ks {
            let ref = l.valueRef[gi * vgs + k]
            for t in 0..<group {
                let i = (j0 + t) * vgs + k
                let g = KIVIQuant.compactGrid(lo: l.valueLimits[2 * i], hi: l.valueLimits[2 * i + 1], ref: ref, bits: bits)
                scratch[t * vgs + k] = g.scale
                scratch[n + t * vgs + k] = g.zero
            }
        }
        return (UnsafePointer(scratch + ks.lowerBound), UnsafePointer(scratch + n + ks.lowerBound))
    }
}
