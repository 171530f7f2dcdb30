import SpoolTokenizer
import XCTest

final class ChatTemplateTests: XCTestCase {
    /// SmolLM2's template, as stored in its GGUF metadata.
    let smolLM = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

    func testSmolLMTemplateIsChatMLWithDefaultSystemPrompt() throws {
        let t = try XCTUnwrap(ChatTemplate.detect(jinja: smolLM))
        XCTAssertEqual(t.family, .chatml)
        XCTAssertEqual(t.defaultSystemPrompt, "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        // The first golden prompt is exactly this rendering.
        XCTAssertEqual(try t.render([ChatMessage(role: "user", content: "What is the capital of France?")]),
                       "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
        XCTAssertEqual(try t.render([ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: false),
                       "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")
    }

    func testFamiliesAreDetected() {
        XCTAssertEqual(ChatTemplate.detect(jinja: "{{ '<|start_header_id|>' + role }}")?.family, .llama3)
        XCTAssertEqual(ChatTemplate.detect(jinja: "{{ '<start_of_turn>' + role }}")?.family, .gemma)
        XCTAssertEqual(ChatTemplate.detect(jinja: "{{ '[INST] ' + content + ' [/INST]' }}")?.family, .mistral)
        XCTAssertNil(ChatTemplate.detect(jinja: "{{ content }}"))
        XCTAssertNil(ChatTemplate.detect(jinja: "{{ '<|im_start|>' + m.role }}")?.defaultSystemPrompt)
    }

    func testRenderings() throws {
        let conv = [ChatMessage(role: "system", content: "S"), ChatMessage(role: "user", content: "U"), ChatMessage(role: "assistant", content: "A"), ChatMessage(role: "user", content: "V")]
        XCTAssertEqual(try ChatTemplate(family: .llama3).render(conv),
                       "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nV<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
        XCTAssertEqual(try ChatTemplate(family: .gemma).render(conv),
                       "<start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n<start_of_turn>user\nV<end_of_turn>\n<start_of_turn>model\n")
        XCTAssertEqual(try ChatTemplate(family: .mistral).render(conv), "[INST] S\n\nU [/INST] A</s>[INST] V [/INST]")
    }

    func testErrorsNameTheProblem() {
        XCTAssertThrowsError(try ChatTemplate(named: "jinja-x")) { XCTAssertEqual($0 as? ChatTemplateError, .unknownTemplateName("jinja-x")) }
        XCTAssertThrowsError(try ChatTemplate(family: .chatml).render([ChatMessage(role: "robot", content: "x")])) {
            XCTAssertEqual($0 as? ChatTemplateError, .unknownRole("robot"))
        }
        XCTAssertEqual(try ChatTemplate(named: "ChatML").family, .chatml)
    }
}
