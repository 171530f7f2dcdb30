import Foundation
import SpoolServer
import XCTest

/// Request validation on its own, without a model.
final class RequestParsingTests: XCTestCase {
    func parse(_ json: String, chat: Bool = true) -> Result<CompletionRequest, APIError> {
        Result { () throws(APIError) in try CompletionRequest(json: Data(json.utf8), chat: chat) }
    }

    func testFullChatRequest() throws {
        let r = try parse(#"{"messages":[{"role":"developer","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]}],"max_tokens":8,"temperature":0.5,"top_p":0.9,"seed":7,"stop":"END","stream":true,"stream_options":{"include_usage":true},"n":1}"#).get()
        XCTAssertEqual(r.input, .chat([.init(role: "system", content: "Be brief."), .init(role: "user", content: "Hi there")]))
        XCTAssertEqual(r.maxTokens, 8)
        XCTAssertEqual(r.sampling.temperature, 0.5)
        XCTAssertEqual(r.sampling.topP, 0.9)
        XCTAssertEqual(r.sampling.seed, 7)
        XCTAssertEqual(r.stop, ["END"])
        XCTAssertTrue(r.stream)
        XCTAssertTrue(r.includeUsage)
    }

    func testCompletionPromptForms() throws {
        XCTAssertEqual(try parse(#"{"prompt":"abc"}"#, chat: false).get().input, .text("abc"))
        XCTAssertEqual(try parse(#"{"prompt":["abc"]}"#, chat: false).get().input, .text("abc"))
        XCTAssertThrowsError(try parse(#"{"prompt":["a","b"]}"#, chat: false).get())
    }

    func testErrorsNameTheField() {
        let cases: [(String, String?)] = [
            (#"{"messages":[{"role":"user","content":"x"}],"max_tokens":0}"#, "max_tokens"),
            (#"{"messages":[{"role":"user","content":"x"}],"max_tokens":2.5}"#, "max_tokens"),
            (#"{"messages":[{"role":"user","content":"x"}],"top_p":0}"#, "top_p"),
            (#"{"messages":[{"role":"user","content":"x"}],"temperature":-1}"#, "temperature"),
            (#"{"messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}"#, "stop"),
            (#"{"messages":[{"role":"user"}]}"#, "messages[0].content"),
            (#"{"messages":[{"content":"x"}]}"#, "messages[0].role"),
            (#"{"messages":[{"role":"tool","content":"x"}]}"#, "messages[0].role"),
            (#"{"messages":[{"role":"user","content":"x"}],"stream_options":3}"#, "stream_options"),
            (#"{"messages":[{"role":"user","content":"x"}],"n":0}"#, "n"),
        ]
        for (json, param) in cases {
            switch parse(json) {
            case .success: XCTFail("accepted \(json)")
            case let .failure(e):
                XCTAssertEqual(e.status, 400, json)
                XCTAssertEqual(e.param, param, json)
            }
        }
    }

    func testErrorJSONShape() throws {
        let e = APIError(status: 400, message: "m", param: nil, code: nil)
        let obj = try JSONSerialization.jsonObject(with: e.json.encoded()) as? [String: [String: Any]]
        XCTAssertEqual(Set(obj?["error"]?.keys.map { $0 } ?? []), ["message", "type", "param", "code"])
        XCTAssertTrue(obj?["error"]?["param"] is NSNull)
    }
}
