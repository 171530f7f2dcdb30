/// The bytes of one acquired layer: one buffer per sub-extent, in the order the layer lists them.
/// Valid until the layer is released (streamed layers) or for the streamer's life (resident ones).
public struct LayerView {
    public let layer: Int
    public let parts: [UnsafeRawBufferPointer]
    public let isResident: Bool
}

/// Counters for `spool bench`: bytes per token, achieved bandwidth, and time compute waited on I/O.
public struct StreamStats: Sendable, Equatable {
    /// Bytes transferred from the file (aligned spans), resident loads included.
    public var bytesRead = 0
    /// Of those, bytes read for streamed layers (what each pass over the model costs).
    public var streamedBytesRead = 0
    /// Layer loads issued (a multi-part layer counts once).
    public var layerReads = 0
    public var acquires = 0
    /// Time the caller spent inside acquire and release: blocked on its layer's read, and issuing
    /// prefetches (a submission can block when the device queue is full). Compute is stalled for
    /// all of it.
    public var waitNanoseconds: UInt64 = 0
    /// Time at least one read was outstanding, as observed by the streamer (completions are seen
    /// when it waits, so this can run long when compute is slower than the disk).
    public var ioBusyNanoseconds: UInt64 = 0

    /// Bytes per second over the time reads were outstanding.
    public var achievedBandwidth: Double {
        ioBusyNanoseconds == 0 ? 0 : Double(bytesRead) / (Double(ioBusyNanoseconds) / 1e9)
    }

    /// Fraction of `elapsedNanoseconds` (the caller's wall time) spent waiting on I/O.
    public func waitFraction(elapsedNanoseconds: UInt64) -> Double {
        elapsedNanoseconds == 0 ? 0 : Double(waitNanoseconds) / Double(elapsedNanoseconds)
    }
}

/// Streams transformer layers through a ring of aligned buffers: `acquire(i)` returns layer i once
/// its read completed, with reads for the next `prefetchDepth` streamed layers (cyclically: after
/// the last layer come the first ones of the next token) in flight; `release(i)` when compute on
/// it is done. Layers marked resident are read (and verified) once at start and kept.
///
/// A layer is a list of extents (one for a whole .spool block; several for partial-layer reads such
/// as hot/cold neuron bundles). Each extent is verified on its first read with the callback.
/// One thread drives a streamer. After an I/O error the streamer is failed and every later acquire
/// rethrows that error: weights are never handed out half-read.
public final class LayerStreamer {
    public typealias Verify = (_ layer: Int, _ part: Int, _ bytes: UnsafeRawBufferPointer) throws -> Void

    enum SlotState: Equatable { case empty, loading(partsLeft: Int), ready, inUse }

    struct Slot {
        let buffer: AlignedBuffer
        var layer: Int?
        var state: SlotState = .empty
    }

    public let reader: any WeightReader
    public let layers: [[Extent]]
    public let resident: Set<Int>
    public let prefetchDepth: Int
    /// Bytes of each ring buffer, and how many there are.
    public let slotBytes: Int
    public var slotCount: Int { slots.count }
    /// Bytes held by resident layers' buffers.
    public let residentBytes: Int
    /// The counters so far; `ioBusyNanoseconds` includes a busy interval still open (while layers
    /// stream with reads always in flight, the interval closes only when the queue drains, which
    /// may never happen: without it the busy time stayed near 0 and bandwidth came out absurd).
    public var stats: StreamStats {
        var s = recorded
        if let since = busySince { s.ioBusyNanoseconds += monotonicNanoseconds() - since }
        return s
    }
    private var recorded = StreamStats()

    private let verify: Verify?
    private let streamed: [Int]
    private var slots: [Slot] = []
    private var residentViews: [Int: [UnsafeRawBufferPointer]] = [:]
    private var residentBuffers: [AlignedBuffer] = []
    private var verified: Set<Int> = [] // layer * partStride + part
    private let partStride: Int
    /// Outstanding read id -> (slot, part).
    private var pending: [Int: (slot: Int, part: Int)] = [:]
    private var partViews: [[UnsafeRawBufferPointer?]] = []
    private var nextReadID = 0
    private var busySince: UInt64?
    private var failure: IOError?
    private var lastAcquired: Int?

    /// - Parameters:
    ///   - slots: ring size; default `prefetchDepth + 1` (one layer computing, d in flight), at most
    ///     the number of streamed layers.
    public init(reader: any WeightReader, layers: [[Extent]], resident: Set<Int> = [], prefetchDepth: Int,
                slots slotCountOverride: Int? = nil, verify: Verify? = nil) throws(IOError) {
        guard prefetchDepth >= 0 else { throw .invalidRequest("prefetch depth \(prefetchDepth)") }
        for (i, parts) in layers.enumerated() where parts.isEmpty {
            throw .invalidRequest("layer \(i) has no extents")
        }
        for r in resident where !layers.indices.contains(r) {
            throw .invalidRequest("resident layer \(r) of \(layers.count)")
        }
        self.reader = reader
        self.layers = layers
        self.resident = resident
        self.prefetchDepth = prefetchDepth
        self.verify = verify
        partStride = layers.map(\.count).max() ?? 1
        streamed = layers.indices.filter { !resident.contains($0) }
        slotBytes = streamed.map { Self.bufferBytes(layers[$0]) }.max() ?? 0
        residentBytes = resident.map { Self.bufferBytes(layers[$0]) }.reduce(0, +)
        if !streamed.isEmpty {
            let count = min(slotCountOverride ?? (prefetchDepth + 1), streamed.count)
            guard count >= 1 else { throw .invalidRequest("ring of \(count) buffers") }
            for _ in 0..<count { slots.append(Slot(buffer: try AlignedBuffer(count: slotBytes))) }
            partViews = Array(repeating: Array(repeating: nil, count: partStride), count: count)
            try reader.register(buffers: slots.map(\.buffer))
        }
        try loadResident()
    }

    deinit {
        // Reads still in flight write into the ring: let them land before the buffers go.
        while reader.inFlight > 0 {
            do { _ = try reader.waitNext() } catch { if case .nothingInFlight = error { break } }
        }
    }

    /// Buffer bytes a layer needs: its extents' aligned spans, packed back to back.
    public static func bufferBytes(_ parts: [Extent]) -> Int { parts.map(\.bufferBytes).reduce(0, +) }

    public func acquire(_ layer: Int) throws(IOError) -> LayerView {
        let entered = monotonicNanoseconds()
        defer { recorded.waitNanoseconds += monotonicNanoseconds() - entered }
        if let failure { throw failure }
        guard layers.indices.contains(layer) else { throw .invalidRequest("layer \(layer) of \(layers.count)") }
        recorded.acquires += 1
        if let views = residentViews[layer] {
            return LayerView(layer: layer, parts: views, isResident: true)
        }
        var slot = slots.firstIndex { $0.layer == layer }
        if let s = slot, slots[s].state == .inUse { throw .invalidRequest("layer \(layer) acquired twice without release") }
        if slot == nil {
            guard let free = victim(protecting: [layer]) else {
                throw .invalidRequest("no free buffer for layer \(layer): all \(slots.count) are acquired; release layers first")
            }
            try startRead(layer, into: free)
            slot = free
        }
        let s = slot!
        lastAcquired = layer
        try prefetch(after: layer)
        while slots[s].state != .ready { try reapOne() }
        slots[s].state = .inUse
        return LayerView(layer: layer, parts: partViews[s][0..<layers[layer].count].map { $0! }, isResident: false)
    }

    /// Compute on `layer` is done; its buffer may be reused (its bytes stay valid until then, so a
    /// re-acquire before reuse costs no read).
    public func release(_ layer: Int) {
        guard let s = slots.firstIndex(where: { $0.layer == layer && $0.state == .inUse }) else { return }
        let entered = monotonicNanoseconds()
        defer { recorded.waitNanoseconds += monotonicNanoseconds() - entered }
        slots[s].state = .ready
        guard failure == nil else { return }
        // Refill the device queue before the next compute; an error here is kept and thrown by the
        // next acquire.
        do {
            if let last = lastAcquired { try prefetch(after: last) }
            try reader.progress()
        } catch {
            fail(error)
        }
    }

    // MARK: - internals

    private func loadResident() throws(IOError) {
        var requests: [ReadRequest] = []
        var where_: [Int: (layer: Int, part: Int)] = [:]
        for layer in resident.sorted() {
            let buffer = try AlignedBuffer(count: Self.bufferBytes(layers[layer]))
            residentBuffers.append(buffer)
            residentViews[layer] = []
            var offset = 0
            for (p, e) in layers[layer].enumerated() {
                let id = requests.count
                requests.append(ReadRequest(id: id, extent: e, buffer: buffer, bufferOffset: offset, verify: verifier(layer, p)))
                where_[id] = (layer, p)
                offset += e.bufferBytes
            }
        }
        guard !requests.isEmpty else { return }
        // Keep the reader's queue bounded: a handful of extents in flight at a time.
        var views: [Int: [Int: UnsafeRawBufferPointer]] = [:]
        var next = 0, done = 0
        let start = monotonicNanoseconds()
        while done < requests.count {
            while next < requests.count && next - done < 8 {
                try reader.submit(requests[next])
                next += 1
            }
            let c = try reader.waitNext()
            let (layer, part) = where_[c.id]!
            views[layer, default: [:]][part] = c.bytes
            verified.insert(layer * partStride + part)
            recorded.bytesRead += c.deviceBytes
            done += 1
        }
        recorded.ioBusyNanoseconds += monotonicNanoseconds() - start
        recorded.layerReads += resident.count
        for (layer, parts) in views { residentViews[layer] = (0..<parts.count).map { parts[$0]! } }
    }

    private func verifier(_ layer: Int, _ part: Int) -> ((UnsafeRawBufferPointer) throws -> Void)? {
        guard let verify, !verified.contains(layer * partStride + part) else { return nil }
        return { bytes in try verify(layer, part, bytes) }
    }

    /// The next `prefetchDepth` streamed layers after `layer`, wrapping around.
    private func window(after layer: Int) -> [Int] {
        guard !streamed.isEmpty, prefetchDepth > 0 else { return [] }
        let start = streamed.firstIndex { $0 > layer } ?? 0
        var out: [Int] = []
        for k in 0..<min(prefetchDepth, streamed.count) {
            let l = streamed[(start + k) % streamed.count]
            if l != layer { out.append(l) }
        }
        return out
    }

    private func prefetch(after layer: Int) throws(IOError) {
        let upcoming = window(after: layer)
        for l in upcoming where !slots.contains(where: { $0.layer == l }) {
            guard let s = victim(protecting: Set(upcoming).union([layer])) else { return }
            try startRead(l, into: s)
        }
    }

    /// A slot that can be overwritten: not acquired, not loading, and not holding a layer about to
    /// be used. Empty slots first.
    private func victim(protecting keep: Set<Int>) -> Int? {
        var best: Int?
        for (i, s) in slots.enumerated() {
            switch s.state {
            case .empty: return i
            case .ready where !keep.contains(s.layer!): if best == nil { best = i }
            default: continue
            }
        }
        return best
    }

    private func startRead(_ layer: Int, into s: Int) throws(IOError) {
        slots[s].layer = layer
        slots[s].state = .loading(partsLeft: layers[layer].count)
        var offset = 0
        if busySince == nil { busySince = monotonicNanoseconds() }
        for (p, e) in layers[layer].enumerated() {
            let id = nextReadID
            nextReadID += 1
            pending[id] = (s, p)
            do {
                try reader.submit(ReadRequest(id: id, extent: e, buffer: slots[s].buffer, bufferOffset: offset, verify: verifier(layer, p)))
            } catch {
                fail(error)
                throw error
            }
            offset += e.bufferBytes
        }
        recorded.layerReads += 1
    }

    private func reapOne() throws(IOError) {
        let c: ReadCompletion
        do { c = try reader.waitNext() } catch {
            fail(error)
            throw error
        }
        guard let (s, p) = pending.removeValue(forKey: c.id) else { return }
        if pending.isEmpty, let since = busySince {
            recorded.ioBusyNanoseconds += monotonicNanoseconds() - since
            busySince = nil
        }
        recorded.bytesRead += c.deviceBytes
        recorded.streamedBytesRead += c.deviceBytes
        let layer = slots[s].layer!
        verified.insert(layer * partStride + p)
        partViews[s][p] = c.bytes
        if case let .loading(left) = slots[s].state {
            slots[s].state = left == 1 ? .ready : .loading(partsLeft: left - 1)
        }
    }

    private func fail(_ error: IOError) {
        failure = error
    }
}
