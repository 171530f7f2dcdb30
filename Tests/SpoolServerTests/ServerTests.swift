import Foundation
import SpoolRuntime
import SpoolServer
import SpoolTestSupport
import XCTest

struct RunningServer: Sendable {
    let port: Int
    let scheduler: GenerationScheduler
}

/// One server for the whole test class (loading the model takes a moment): the default model, a
/// 256-token context, one slot and a queue of one, an API key, and a 64 KiB body limit.
enum TestServer {
    static let apiKey = "test-key"
    static let context = 256
    static let bodyLimit = 64 << 10

    static let shared = Task<RunningServer?, any Error> {
        guard let path = try TestAssets.modelPath() else { return nil }
        let scheduler = try await GenerationScheduler.start(
            modelPath: path, options: EngineOptions(threads: 2), contextLength: context, limits: SchedulerLimits(slots: 1, queue: 1))
        var config = ServerConfiguration()
        config.port = 0
        config.apiKey = apiKey
        config.maxBodyBytes = bodyLimit
        let (ports, found) = AsyncStream<Int>.makeStream()
        let app = OpenAIServer(scheduler: scheduler, configuration: config).application { port in found.yield(port) }
        Task.detached { try await app.run() }
        var it = ports.makeAsyncIterator()
        guard let port = await it.next(), port > 0 else { throw HTTPTestError.malformed("the server reported no port") }
        return RunningServer(port: port, scheduler: scheduler)
    }
}

final class ServerTests: XCTestCase {
    func server() async throws -> RunningServer {
        guard let s = try await TestServer.shared.value else { throw XCTSkip("default model absent; run Tools/fetch-model.sh") }
        return s
    }

    func request(_ method: String, _ path: String, json: String? = nil, auth: Bool = true) async throws -> HTTPTestResponse {
        let s = try await server()
        let c = try LoopbackConnection(port: s.port)
        try c.send(method: method, path: path, body: json.map { Data($0.utf8) },
                   headers: auth ? ["Authorization": "Bearer \(TestServer.apiKey)"] : [:])
        return try c.readResponse()
    }

    func chat(_ content: String, extra: String = "") -> String {
        #"{"messages":[{"role":"user","content":"\#(content)"}],"temperature":0,"max_tokens":4\#(extra)}"#
    }

    /// Waits until the scheduler has no running or queued work (or fails after `seconds`).
    func waitIdle(seconds: Double = 10, file: StaticString = #filePath, line: UInt = #line) async throws {
        let s = try await server()
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let c = s.scheduler.counts
            if c.busy == 0 && c.queued == 0 { return }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        XCTFail("the scheduler is still busy after \(seconds) s: \(s.scheduler.counts)", file: file, line: line)
    }

    func testHealthAndModels() async throws {
        let h = try await request("GET", "/health", auth: false)
        XCTAssertEqual(h.status, 200)
        XCTAssertEqual(h.json?["status"] as? String, "ok")
        XCTAssertEqual(h.json?["slots"] as? Int, 1)
        let m = try await request("GET", "/v1/models")
        XCTAssertEqual(m.status, 200)
        let data = m.json?["data"] as? [[String: Any]]
        XCTAssertEqual(data?.count, 1)
        XCTAssertEqual(data?.first?["context_length"] as? Int, TestServer.context)
    }

    func testChatCompletionStreamingMatchesNonStreaming() async throws {
        let plain = try await request("POST", "/v1/chat/completions", json: chat("Name a colour."))
        XCTAssertEqual(plain.status, 200, plain.text)
        let choice = (plain.json?["choices"] as? [[String: Any]])?.first
        let content = (choice?["message"] as? [String: Any])?["content"] as? String
        XCTAssertNotNil(content)
        XCTAssertFalse(content?.isEmpty ?? true)
        let usage = plain.json?["usage"] as? [String: Int]
        XCTAssertGreaterThan(usage?["prompt_tokens"] ?? 0, 5)
        XCTAssertLessThanOrEqual(usage?["completion_tokens"] ?? 99, 4)
        XCTAssertEqual(usage?["total_tokens"], (usage?["prompt_tokens"] ?? 0) + (usage?["completion_tokens"] ?? 0))

        let streamed = try await request("POST", "/v1/chat/completions",
                                         json: chat("Name a colour.", extra: #","stream":true,"stream_options":{"include_usage":true}"#))
        XCTAssertEqual(streamed.status, 200)
        XCTAssertEqual(streamed.headers["content-type"], "text/event-stream")
        let events = streamed.events
        XCTAssertEqual(events.last, "[DONE]")
        let chunks = events.dropLast().compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        XCTAssertEqual(chunks.count, events.count - 1, "every event before [DONE] is a JSON object")
        var text = ""
        var finish: String?
        for c in chunks {
            guard let ch = (c["choices"] as? [[String: Any]])?.first else { continue }
            text += ((ch["delta"] as? [String: Any])?["content"] as? String) ?? ""
            if let f = ch["finish_reason"] as? String { finish = f }
        }
        XCTAssertEqual(text, content, "greedy streaming and non-streaming replies agree")
        XCTAssertEqual(finish, choice?["finish_reason"] as? String)
        XCTAssertEqual((chunks.last?["usage"] as? [String: Int])?["completion_tokens"], usage?["completion_tokens"])
        try await waitIdle()
    }

    func testCompletionsWithStopString() async throws {
        let free = try await request("POST", "/v1/completions", json: #"{"prompt":"1, 2, 3,","max_tokens":6,"temperature":0}"#)
        XCTAssertEqual(free.status, 200, free.text)
        let freeText = ((free.json?["choices"] as? [[String: Any]])?.first?["text"] as? String) ?? ""
        XCTAssertTrue(freeText.contains("4"), freeText)
        let stopped = try await request("POST", "/v1/completions", json: #"{"prompt":"1, 2, 3,","max_tokens":12,"temperature":0,"stop":["5"]}"#)
        let choice = (stopped.json?["choices"] as? [[String: Any]])?.first
        XCTAssertEqual(choice?["finish_reason"] as? String, "stop")
        let text = choice?["text"] as? String ?? "?"
        XCTAssertFalse(text.contains("5"), text)
        XCTAssertTrue(freeText.hasPrefix(text), "\(text) is a prefix of \(freeText)")
    }

    /// Every bad request gets a 4xx with an OpenAI-style error object, and the server keeps serving.
    func testBadRequestsGetOpenAIErrors() async throws {
        let long = String(repeating: "word ", count: 400)
        let cases: [(String, String, Int, String?)] = [
            ("/v1/chat/completions", "{not json", 400, nil),
            ("/v1/chat/completions", "[1, 2]", 400, nil),
            ("/v1/chat/completions", #"{"messages":"hello"}"#, 400, "messages"),
            ("/v1/chat/completions", #"{"messages":[]}"#, 400, "messages"),
            ("/v1/chat/completions", #"{"model":"x"}"#, 400, "messages"),
            ("/v1/chat/completions", #"{"messages":[{"role":"wizard","content":"hi"}]}"#, 400, "messages[0].role"),
            ("/v1/chat/completions", #"{"messages":[{"role":"user","content":42}]}"#, 400, "messages[0].content"),
            ("/v1/chat/completions", chat("hi", extra: #","max_tokens":-1"#).replacingOccurrences(of: #""max_tokens":4,"#, with: ""), 400, "max_tokens"),
            ("/v1/chat/completions", chat("hi").replacingOccurrences(of: #""max_tokens":4"#, with: #""max_tokens":1000000000"#), 400, "max_tokens"),
            ("/v1/chat/completions", chat("hi").replacingOccurrences(of: #""max_tokens":4"#, with: #""max_tokens":1e300"#), 400, "max_tokens"),
            ("/v1/chat/completions", chat("hi").replacingOccurrences(of: #""max_tokens":4"#, with: #""max_tokens":"ten""#), 400, "max_tokens"),
            ("/v1/chat/completions", chat("hi", extra: #","n":2"#), 400, "n"),
            ("/v1/chat/completions", #"{"messages":[{"role":"user","content":"hi"}],"temperature":"hot"}"#, 400, "temperature"),
            ("/v1/chat/completions", chat("hi", extra: #","stream":"yes""#), 400, "stream"),
            ("/v1/chat/completions", chat("hi", extra: #","stop":[1]"#), 400, "stop"),
            ("/v1/chat/completions", chat(long), 400, "messages"),
            ("/v1/completions", #"{"prompt":""}"#, 400, "prompt"),
            ("/v1/completions", #"{"prompt":7}"#, 400, "prompt"),
        ]
        for (path, body, status, param) in cases {
            let r = try await request("POST", path, json: body)
            XCTAssertEqual(r.status, status, "\(body.prefix(80)): \(r.text)")
            let e = r.errorObject
            XCTAssertNotNil(e?["message"] as? String, body)
            XCTAssertEqual(e?["type"] as? String, "invalid_request_error", body)
            XCTAssertTrue(e?.keys.contains("code") ?? false)
            XCTAssertEqual(r.headers["connection"], "close", "clients must not reuse a connection the server is closing")
            if let param { XCTAssertEqual(e?["param"] as? String, param, "\(body.prefix(80)): \(r.text)") }
        }
        let tooLong = try await request("POST", "/v1/chat/completions", json: chat(long))
        XCTAssertEqual(tooLong.errorObject?["code"] as? String, "context_length_exceeded")
        XCTAssertTrue((tooLong.errorObject?["message"] as? String ?? "").contains("\(TestServer.context)"), "the error names the context size")

        let ok = try await request("POST", "/v1/chat/completions", json: chat("Hello"))
        XCTAssertEqual(ok.status, 200, ok.text)
    }

    func testOversizedBodyIs413() async throws {
        let big = #"{"prompt":""# + String(repeating: "a", count: TestServer.bodyLimit + 10) + #""}"#
        let r = try await request("POST", "/v1/completions", json: big)
        XCTAssertEqual(r.status, 413)
        XCTAssertNotNil(r.errorObject?["message"])
        let ok = try await request("POST", "/v1/completions", json: #"{"prompt":"Hi","max_tokens":2}"#)
        XCTAssertEqual(ok.status, 200)
    }

    func testAPIKeyIsChecked() async throws {
        let none = try await request("POST", "/v1/chat/completions", json: chat("Hi"), auth: false)
        XCTAssertEqual(none.status, 401)
        XCTAssertEqual(none.errorObject?["code"] as? String, "invalid_api_key")
        let s = try await server()
        let c = try LoopbackConnection(port: s.port)
        try c.send(method: "GET", path: "/v1/models", headers: ["Authorization": "Bearer wrong"])
        XCTAssertEqual(try c.readResponse().status, 401)
        let unknown = try await request("GET", "/v2/nothing")
        XCTAssertEqual(unknown.status, 404)
        XCTAssertNotNil(unknown.errorObject?["message"])
    }

    /// A long generation whose client hangs up is cancelled and its slot freed, streaming or not.
    func testDisconnectCancelsGeneration() async throws {
        let s = try await server()
        for stream in [true, false] {
            let c = try LoopbackConnection(port: s.port)
            try c.send(method: "POST", path: "/v1/completions",
                       body: Data(#"{"prompt":"1, 2, 3,","max_tokens":200,"temperature":0,"stream":\#(stream)}"#.utf8),
                       headers: ["Authorization": "Bearer \(TestServer.apiKey)"])
            if stream {
                _ = try c.read(until: "data: ")
            } else {
                let deadline = Date().addingTimeInterval(10)
                while s.scheduler.counts.busy == 0, Date() < deadline { try await Task.sleep(nanoseconds: 10_000_000) }
            }
            XCTAssertEqual(s.scheduler.counts.busy, 1, "the request is running (stream: \(stream))")
            shutdown(c.fd, Int32(SHUT_RDWR))
            // 200 tokens take seconds at this model's speed; the slot must come free well before.
            try await waitIdle(seconds: 3)
        }
        let ok = try await request("POST", "/v1/completions", json: #"{"prompt":"Hi","max_tokens":2}"#)
        XCTAssertEqual(ok.status, 200)
    }

    /// One slot and a queue of one: a third concurrent request gets 503, and the queued one is
    /// dropped cleanly when its client leaves.
    func testQueueFullGets503() async throws {
        let s = try await server()
        let body = Data(#"{"prompt":"1, 2, 3,","max_tokens":200,"temperature":0,"stream":true}"#.utf8)
        let auth = ["Authorization": "Bearer \(TestServer.apiKey)"]
        let running = try LoopbackConnection(port: s.port)
        try running.send(method: "POST", path: "/v1/completions", body: body, headers: auth)
        _ = try running.read(until: "data: ")
        let queued = try LoopbackConnection(port: s.port)
        try queued.send(method: "POST", path: "/v1/completions", body: body, headers: auth)
        let deadline = Date().addingTimeInterval(10)
        while s.scheduler.counts.queued == 0, Date() < deadline { try await Task.sleep(nanoseconds: 10_000_000) }
        let counts = s.scheduler.counts
        XCTAssertEqual([counts.slots, counts.busy, counts.queued], [1, 1, 1])
        let refused = try await request("POST", "/v1/completions", json: #"{"prompt":"Hi","max_tokens":2}"#)
        XCTAssertEqual(refused.status, 503)
        XCTAssertEqual(refused.errorObject?["code"] as? String, "server_busy")
        shutdown(queued.fd, Int32(SHUT_RDWR))
        shutdown(running.fd, Int32(SHUT_RDWR))
        try await waitIdle(seconds: 3)
        let ok = try await request("POST", "/v1/completions", json: #"{"prompt":"Hi","max_tokens":2}"#)
        XCTAssertEqual(ok.status, 200)
    }
}
