import Foundation
import SpoolFormat
@testable import SpoolTokenizer
import SpoolTestSupport
import XCTest

final class BPETokenizerTests: XCTestCase {
    // MARK: - Against llama.cpp on the default model

    struct GoldenTokenizer: Decodable {
        struct Case: Decodable { let text: String; let ids: [Int32] }
        let cases: [Case]
    }

    static let model: BPETokenizer? = {
        guard let path = try? TestAssets.modelPath(), let gguf = try? GGUFFile(path: path) else { return nil }
        return try? BPETokenizer(gguf: gguf)
    }()

    func tokenizer() throws -> BPETokenizer {
        if let t = BPETokenizerTests.model { return t }
        if TestAssets.modelRequired { XCTFail("model required but could not be loaded from \(TestAssets.defaultModelPath)") }
        throw XCTSkip("default model not present; run Tools/fetch-model.sh")
    }

    func testEveryGoldenCaseMatchesLlamaCpp() throws {
        let t = try tokenizer()
        let golden = try JSONDecoder().decode(GoldenTokenizer.self, from: TestAssets.golden("tokenizer-smollm2-135m-q4_1.json"))
        XCTAssertGreaterThanOrEqual(golden.cases.count, 48)
        var equal = 0
        for c in golden.cases {
            let ids = t.encode(c.text, addSpecial: false, parseSpecial: false)
            if ids == c.ids { equal += 1 } else { XCTFail("\(c.text.debugDescription): got \(ids), llama.cpp \(c.ids)") }
            // Byte-level BPE is lossless.
            XCTAssertEqual(t.decode(ids, renderSpecial: true), c.text)
        }
        print("tokenizer golden: \(equal)/\(golden.cases.count) equal")
    }

    func testSpecialTokensParseOnlyWhenAsked() throws {
        let t = try tokenizer()
        XCTAssertEqual(t.encode("<|im_start|>user\nhi<|im_end|>", addSpecial: false, parseSpecial: true), [1, 4093, 198, 6004, 2])
        XCTAssertGreaterThan(t.encode("<|im_start|>", addSpecial: false, parseSpecial: false).count, 1)
        XCTAssertTrue(t.isEndOfGeneration(2))
        XCTAssertFalse(t.addsBOS)
        XCTAssertEqual(t.decode([1, 4093], renderSpecial: false), "user")
        XCTAssertEqual(t.decode([1, 4093], renderSpecial: true), "<|im_start|>user")
    }

    func testDigitsAreSplitOneByOneForSmolLM() throws {
        let t = try tokenizer()
        let ids = t.encode("2024", addSpecial: false)
        XCTAssertEqual(ids.count, 4)
        XCTAssertEqual(ids.map { t.decode([$0]) }, ["2", "0", "2", "4"])
    }

    func testStreamingDecoderNeverSplitsACharacter() throws {
        let t = try tokenizer()
        let text = "emoji 🙂🚀👍🏽 日本語 naïve"
        let ids = t.encode(text, addSpecial: false)
        var d = StreamingDecoder(tokenizer: t)
        var out = ""
        for id in ids {
            let piece = d.append(id)
            XCTAssertFalse(piece.contains("\u{FFFD}"), "half a character emitted for token \(id)")
            out += piece
        }
        out += d.flush()
        XCTAssertEqual(out, text)
    }

    // MARK: - Algorithm on a hand-made vocabulary (no model needed)

    /// Byte-level spelling of raw text, for building vocabularies.
    func bl(_ s: String) -> String { ByteLevel.encode(Array(s.utf8)) }

    func tinyVocabulary(pre: PreTokenizer = .gpt2) -> TokenizerVocabulary {
        var tokens = (0..<256).map { ByteLevel.encode([UInt8($0)]) }
        var types = Array(repeating: TokenType.normal, count: 256)
        let merged = ["he", "ll", "hell", "hello", bl(" w"), bl(" wo"), "lo"]
        tokens += merged
        types += Array(repeating: .normal, count: merged.count)
        tokens += ["<|end|>", "<tool>"]
        types += [.control, .userDefined]
        let merges = ["h e", "l l", "he ll", "hell o", "\(bl(" ")) w", "\(bl(" w")) o", "l o"]
        return TokenizerVocabulary(tokens: tokens, types: types, merges: merges, preTokenizer: pre, eosID: 263)
    }

    func testMergesApplyInRankOrder() throws {
        let t = try BPETokenizer(tinyVocabulary())
        // "hello": h e l l o → he l l o → he ll o → hell o → hello (rank order, not left to right:
        // "l o" has a rank, but "l l" ranks first and consumes the l).
        XCTAssertEqual(t.encode("hello", addSpecial: false), [t.token("hello")!])
        // "llo": "l l" (rank 1) beats "l o" (rank 6).
        XCTAssertEqual(t.encode("llo", addSpecial: false), [t.token("ll")!, Int32(UInt8(ascii: "o"))])
        // " wo" merges through " w".
        XCTAssertEqual(t.encode(" wo", addSpecial: false), [t.token(bl(" wo"))!])
        // Unknown pairs stay as bytes.
        XCTAssertEqual(t.encode("xyz", addSpecial: false), [120, 121, 122])
    }

    func testControlTokensNeedParseSpecialButUserDefinedDoNot() throws {
        let t = try BPETokenizer(tinyVocabulary())
        let end = t.token("<|end|>")!, tool = t.token("<tool>")!
        XCTAssertEqual(t.encode("hello<|end|>", addSpecial: false, parseSpecial: true), [t.token("hello")!, end])
        XCTAssertFalse(t.encode("hello<|end|>", addSpecial: false, parseSpecial: false).contains(end))
        XCTAssertEqual(t.encode("<tool>hello", addSpecial: false, parseSpecial: false), [tool, t.token("hello")!])
        XCTAssertTrue(t.isEndOfGeneration(end))
    }

    func split(_ p: PreTokenizer, _ s: String) -> [String] {
        let scalars = Array(s.unicodeScalars)
        return p.split(scalars).map { r in
            var v = String.UnicodeScalarView()
            v.append(contentsOf: scalars[r])
            return String(v)
        }
    }

    func testGPT2PreTokenizer() {
        XCTAssertEqual(split(.gpt2, "Hello, world!"), ["Hello", ",", " world", "!"])
        XCTAssertEqual(split(.gpt2, "it's  two"), ["it", "'s", " ", " two"])
        XCTAssertEqual(split(.gpt2, "x 123 ?!"), ["x", " 123", " ?!"])
        XCTAssertEqual(split(.gpt2, "a\n\nb "), ["a", "\n", "\n", "b", " "])
        XCTAssertEqual(split(.gpt2, "I'M"), ["I", "'", "M"])
    }

    func testSmolLMSplitsEveryDigit() {
        XCTAssertEqual(split(.smollm, "abc 123"), ["abc", " ", "1", "2", "3"])
        XCTAssertEqual(split(.smollm, "v2.0"), ["v", "2", ".", "0"])
    }

    func testLlama3PreTokenizer() {
        XCTAssertEqual(split(.llama3, "Hello, world!"), ["Hello", ",", " world", "!"])
        XCTAssertEqual(split(.llama3, "12345 I'M"), ["123", "45", " I", "'M"])
        XCTAssertEqual(split(.llama3, "a\n\n  b"), ["a", "\n\n", " ", " b"])
        XCTAssertEqual(split(.llama3, "(x)\n"), ["(x", ")\n"])
    }

    func testBadVocabulariesGiveTypedErrors() {
        XCTAssertThrowsError(try BPETokenizer(TokenizerVocabulary(tokens: [], merges: []))) {
            XCTAssertEqual($0 as? TokenizerError, .emptyVocabulary)
        }
        XCTAssertThrowsError(try BPETokenizer(TokenizerVocabulary(tokens: ["a", "b"], merges: ["ab"]))) {
            XCTAssertEqual($0 as? TokenizerError, .malformedMerge(index: 0, text: "ab"))
        }
        XCTAssertThrowsError(try BPETokenizer(TokenizerVocabulary(tokens: ["a"], types: [.normal, .normal], merges: []))) {
            XCTAssertEqual($0 as? TokenizerError, .tokenTypeCountMismatch(tokens: 1, types: 2))
        }
        XCTAssertNil(PreTokenizer(name: "no-such-pre"))
    }

    func testMetadataErrorsAreTyped() throws {
        var w = GGUFWriter()
        w.set("tokenizer.ggml.model", .string("gpt2"))
        w.set("tokenizer.ggml.pre", .string("klingon"))
        w.set("tokenizer.ggml.tokens", .array(.string, [.string("a")]))
        let g = try GGUFFile(file: MappedFile(copying: w.serialize()))
        XCTAssertThrowsError(try TokenizerVocabulary(gguf: g)) { XCTAssertEqual($0 as? TokenizerError, .unknownPreTokenizer("klingon")) }

        var w2 = GGUFWriter()
        w2.set("tokenizer.ggml.model", .string("llama"))
        let g2 = try GGUFFile(file: MappedFile(copying: w2.serialize()))
        XCTAssertThrowsError(try TokenizerVocabulary(gguf: g2)) { XCTAssertEqual($0 as? TokenizerError, .unsupportedModel("llama")) }

        var w3 = GGUFWriter()
        w3.set("tokenizer.ggml.model", .string("gpt2"))
        w3.set("tokenizer.ggml.tokens", .array(.string, [.string("a")]))
        w3.set("tokenizer.ggml.bos_token_id", .uint32(7))
        let g3 = try GGUFFile(file: MappedFile(copying: w3.serialize()))
        XCTAssertThrowsError(try TokenizerVocabulary(gguf: g3)) {
            XCTAssertEqual($0 as? TokenizerError, .specialTokenOutOfRange(key: "tokenizer.ggml.bos_token_id", id: 7, vocabularySize: 1))
        }
    }

    func testIncompleteUTF8SuffixDetection() {
        XCTAssertEqual(StreamingDecoder.incompleteSuffixLength(Array("a".utf8)), 0)
        XCTAssertEqual(StreamingDecoder.incompleteSuffixLength([0x61, 0xF0, 0x9F]), 2)
        XCTAssertEqual(StreamingDecoder.incompleteSuffixLength([0xF0, 0x9F, 0x99, 0x82]), 0)
        XCTAssertEqual(StreamingDecoder.incompleteSuffixLength([0xE6]), 1)
        XCTAssertEqual(StreamingDecoder.incompleteSuffixLength([0x80]), 0)
    }
}
