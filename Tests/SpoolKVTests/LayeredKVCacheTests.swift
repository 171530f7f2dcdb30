@testable import SpoolKV
import SpoolKernels
import XCTest

final class LayeredKVCacheTests: XCTestCase {
    let pool = ThreadPool(threads: 2)

    func testEachLayerBehavesAsItsOwnStorage() throws {
        let data = AttentionData(geometry: smallGeometry, tokens: 120, seed: 41)
        var config = KVCacheConfiguration(bits: 2)
        config.layerBits = [0: 16]
        let layered = try config.makeCache(geometry: smallGeometry)
        XCTAssertTrue(layered is LayeredKVCache)
        var one = smallGeometry
        one.layers = 1
        let f16 = FloatKVCache(geometry: one, precision: .f16)
        let k2 = try KIVICache(geometry: one, configuration: .init(bits: 2))
        for (from, to) in [(0, 77), (77, 78), (78, 100)] {
            for layer in 0..<2 {
                let got = try storeAndAttend(layered, data, layer: layer, from: from, to: to, pool: pool)
                let want = try storeAndAttend(layer == 0 ? f16 : k2, data, from: from, to: to, pool: pool)
                XCTAssertEqual(got, want, "layer \(layer) tokens \(from)..<\(to)")
            }
            layered.commit(upTo: to); f16.commit(upTo: to); k2.commit(upTo: to)
            XCTAssertEqual(layered.count, to)
        }
        XCTAssertEqual(layered.bytesPerToken, f16.bytesPerToken + k2.bytesPerToken)
        layered.truncate(to: 50)
        k2.truncate(to: 50)
        XCTAssertEqual(layered.count, 50)
        XCTAssertEqual(try storeAndAttend(layered, data, layer: 1, from: 50, to: 60, pool: pool), try storeAndAttend(k2, data, from: 50, to: 60, pool: pool))
    }

    func testLayerBitsParsingAndValidation() throws {
        XCTAssertEqual(try KVCacheConfiguration.parseLayerBits("0-1:4,29:16"), [0: 4, 1: 4, 29: 16])
        XCTAssertEqual(try KVCacheConfiguration.parseLayerBits("3:8"), [3: 8])
        for bad in ["", "1", "a:4", "2-1:4", "1:x", "-1:4", "1:2:3"] {
            XCTAssertThrowsError(try KVCacheConfiguration.parseLayerBits(bad), bad)
        }
        var config = KVCacheConfiguration(bits: 2)
        config.layerBits = [1: 3]
        XCTAssertThrowsError(try config.makeCache(geometry: smallGeometry)) { XCTAssertEqual($0 as? KVConfigurationError, .unsupportedBits(3)) }
        config.layerBits = [2: 16]
        XCTAssertThrowsError(try config.makeCache(geometry: smallGeometry)) { XCTAssertEqual($0 as? KVConfigurationError, .badLayer(2)) }
        // Overrides equal to --kv-bits change nothing.
        config.layerBits = [1: 2]
        XCTAssertTrue(try config.makeCache(geometry: smallGeometry) is KIVICache)
    }
}
