import SpoolKernels

/// A cache whose layers are stored differently: each set of layers with the same storage is one
/// inner cache (f16 or KIVI, with the layers renumbered from 0), and calls go to the layer's cache.
/// Used for per-layer bit allocation (`KVCacheConfiguration.layerBits`): a few sensitive layers at
/// more bits, the rest at fewer.
public final class LayeredKVCache: KVCache {
    public let geometry: KVGeometry
    public private(set) var count = 0
    /// The inner caches, and for each model layer its cache and its index there.
    let caches: [KVCache]
    let route: [(cache: Int, layer: Int)]

    /// `configurations[l]` is layer l's storage, each already validated for `geometry`.
    init(geometry: KVGeometry, configurations: [KVCacheConfiguration]) {
        self.geometry = geometry
        var kinds: [KVCacheConfiguration] = []
        var members: [[Int]] = []
        var route: [(cache: Int, layer: Int)] = []
        for (l, c) in configurations.enumerated() {
            let k = kinds.firstIndex(of: c) ?? { kinds.append(c); members.append([]); return kinds.count - 1 }()
            route.append((k, members[k].count))
            members[k].append(l)
        }
        self.route = route
        caches = zip(kinds, members).map { c, layers in
            var g = geometry
            g.layers = layers.count
            switch c.bits {
            case 32: return FloatKVCache(geometry: g, precision: .f32)
            case 16: return FloatKVCache(geometry: g, precision: .f16)
            default: return KIVICache(validated: c, geometry: g)
            }
        }
    }

    public func store(layer: Int, start: Int, tokens: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>) throws {
        let r = route[layer]
        try caches[r.cache].store(layer: r.layer, start: start, tokens: tokens, keys: keys, values: values)
    }

    public func attend(layer: Int, start: Int, tokens: Int, queries: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let r = route[layer]
        caches[r.cache].attend(layer: r.layer, start: start, tokens: tokens, queries: queries, output: output, pool: pool)
    }

    public func commit(upTo count: Int) {
        for c in caches { c.commit(upTo: count) }
        self.count = min(max(0, count), geometry.capacity)
    }

    public func truncate(to count: Int) {
        for c in caches { c.truncate(to: count) }
        self.count = min(self.count, max(0, count))
    }

    public var bytesPerToken: Double { caches.reduce(0) { $0 + $1.bytesPerToken } }
    public var allocatedBytes: Int { caches.reduce(0) { $0 + $1.allocatedBytes } }
}
