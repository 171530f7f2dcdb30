import Foundation
import SpoolIO
import XCTest
@testable import SpoolRuntime

final class DeviceProfileTests: XCTestCase {
    /// The repository's profiles/ directory (this file is Tests/SpoolRuntimeTests/...).
    let repoProfiles = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("profiles").path

    func testShippedProfilesAreValid() throws {
        for name in ["workstation", "numa-2socket", "sbc-8gb", "ci-2core"] {
            let p = try DeviceProfile.find(name, environment: ["SPOOL_PROFILES": repoProfiles], executablePath: nil, currentDirectory: "/nonexistent")
            XCTAssertEqual(p.name, name)
            XCTAssertEqual(p.problems(), [])
            _ = try p.memoryBudgetBytes()
            _ = try p.readerOptions()
        }
        let ci = try DeviceProfile.load(path: repoProfiles + "/ci-2core.json")
        XCTAssertEqual(ci.threads, 2)
        XCTAssertEqual(ci.ioBackend, .uring)
        XCTAssertEqual(try ci.memoryBudgetBytes(), 1 << 30)
        XCTAssertEqual(try ci.readerOptions().queueDepth, 256)
        let sbc = try DeviceProfile.load(path: repoProfiles + "/sbc-8gb.json")
        XCTAssertEqual(sbc.kvBits, 2)
        XCTAssertEqual(sbc.kvGroup, 32)
        XCTAssertEqual(sbc.kvResidual, 64)
        XCTAssertNil(ci.kvGroup)
        XCTAssertNil(ci.kvResidual)
    }

    func testLookupOrderAndNotFound() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spool-profiles-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var custom = try DeviceProfile.load(path: repoProfiles + "/ci-2core.json")
        custom.threads = 1
        try JSONEncoder().encode(custom).write(to: URL(fileURLWithPath: dir + "/ci-2core.json"))
        // SPOOL_PROFILES comes before the repository's profiles/.
        let env = ["SPOOL_PROFILES": dir + ":" + repoProfiles]
        XCTAssertEqual(try DeviceProfile.find("ci-2core", environment: env, executablePath: nil, currentDirectory: "/").threads, 1)
        XCTAssertEqual(try DeviceProfile.find("workstation", environment: env, executablePath: nil, currentDirectory: "/").name, "workstation")
        // Found from the executable's location (e.g. .build/release/spool inside the repository).
        let exe = repoProfiles + "/../.build/release/spool"
        XCTAssertEqual(try DeviceProfile.find("sbc-8gb", environment: [:], executablePath: exe, currentDirectory: "/").kvBits, 2)
        // A path.
        XCTAssertEqual(try DeviceProfile.find(dir + "/ci-2core.json", environment: [:]).threads, 1)
        XCTAssertThrowsError(try DeviceProfile.find("nope", environment: env, executablePath: nil, currentDirectory: "/")) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("nope") && text.contains("workstation"), text)
        }
    }

    func testInvalidProfilesNameEveryProblem() {
        let bad = """
        { "name": "x", "threads": -1, "numa": "none", "memoryBudget": "lots", "kvBits": 3, "turbo": true, "kvGroup": 12, "kvResidual": 2000,
          "io": { "backend": "aio", "prefetchDepth": 2, "queueDepth": 0, "chunkSize": "1000" } }
        """
        XCTAssertThrowsError(try DeviceProfile.decode(Data(bad.utf8), path: "bad.json")) { error in
            guard case let DeviceProfile.ProfileError.invalid(_, problems) = error else { return XCTFail("\(error)") }
            let text = problems.joined(separator: "\n")
            for needle in ["turbo", "threads", "aio", "queueDepth", "chunkSize", "memoryBudget", "kvBits", "kvGroup 12", "kvResidual 2000"] {
                XCTAssertTrue(text.contains(needle), "\(needle) not reported in: \(text)")
            }
        }
        let missing = #"{ "name": "x", "threads": 1, "numa": "none", "memoryBudget": "1G", "kvBits": 16 }"#
        XCTAssertThrowsError(try DeviceProfile.decode(Data(missing.utf8), path: "m.json")) { error in
            XCTAssertTrue("\(error)".contains("io"), "\(error)")
        }
        let badNuma = #"{ "name": "x", "threads": 1, "numa": "striped", "memoryBudget": "1G", "kvBits": 16, "io": { "backend": "pread", "prefetchDepth": 1, "queueDepth": 4 } }"#
        XCTAssertThrowsError(try DeviceProfile.decode(Data(badNuma.utf8), path: "n.json")) { error in
            XCTAssertTrue("\(error)".contains("numa"), "\(error)")
        }
        XCTAssertThrowsError(try DeviceProfile.decode(Data("[1]".utf8), path: "a.json"))
    }
}
