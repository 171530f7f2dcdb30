import ArgumentParser
import Foundation
import SpoolRuntime
import SpoolTokenizer

struct Chat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Chat with a model: line editing, history, slash commands (/help). Piped stdin: one turn per line, plain replies.")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var sampling: SamplingOptions

    @Option(name: .long, help: "System prompt.")
    var system: String?

    @Option(name: .customLong("chat-template"), help: "Chat template family: chatml, llama3, gemma or mistral (default: from the model).")
    var chatTemplate: String?

    @Option(name: [.customShort("n"), .customLong("max-tokens")], help: "Most tokens in one reply.")
    var maxTokens: Int = 1024

    @Flag(name: .customLong("no-history"), help: "Do not read or write the history file.")
    var noHistory = false

    func validate() throws {
        if maxTokens < 1 { throw ValidationError("--max-tokens must be at least 1") }
    }

    func run() async throws {
        let engine = try modelOptions.loadEngine()
        let (template, warning) = try ChatTemplate.resolve(name: chatTemplate, metadata: engine.chatTemplate)
        if let warning { printErr("warning: \(warning)") }
        let chat = ChatSession(engine: engine, session: engine.makeSession(contextLength: modelOptions.contextSize), template: template,
                               system: system, sampling: sampling.parameters, maxReplyTokens: maxTokens)
        let interactive = isatty(STDIN_FILENO) == 1
        let repl = Repl(chat: chat, interactive: interactive, historyFile: interactive && !noHistory ? LineEditor.defaultHistoryFile() : nil)
        if interactive {
            printErr("spool chat: \(URL(fileURLWithPath: engine.path).lastPathComponent), template \(template.family.rawValue), context \(chat.session.contextLength) tokens. /help for commands, Ctrl-D to quit.")
        }
        repl.run()
    }
}

/// The REPL's loop: reading, dispatching commands, streaming replies. All model work goes through
/// ChatSession; this only reads and prints.
struct Repl {
    let chat: ChatSession
    let interactive: Bool
    let historyFile: String?
    let out = FileHandle.standardOutput
    let startIO = ProcessIO.current()

    func run() {
        if interactive { LineEditor.setUp(historyFile: historyFile) }
        while let text = readTurn() {
            if text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { continue }
            do {
                if let command = try ChatCommand.parse(text) {
                    if command == .exit { return }
                    try perform(command)
                } else {
                    reply(to: text)
                }
            } catch {
                printErr("error: \(error)")
            }
        }
    }

    /// One turn of input, joining lines that end in a backslash; nil at end of input.
    func readTurn() -> String? {
        var lines: [String] = []
        while true {
            let line: String
            if interactive {
                switch LineEditor.read(prompt: lines.isEmpty ? "> " : "... ") {
                case let .line(l): line = l
                case .interrupted:
                    // Ctrl-C at the prompt clears what was typed, keeps the session.
                    print("^C")
                    lines.removeAll()
                    continue
                case .endOfInput:
                    if interactive { print() }
                    return nil
                }
                LineEditor.remember(line, historyFile: historyFile)
            } else {
                guard let l = readLine(strippingNewline: true) else { return lines.isEmpty ? nil : lines.joined(separator: "\n") }
                line = l
            }
            if line.hasSuffix("\\") {
                lines.append(String(line.dropLast()))
                continue
            }
            lines.append(line)
            return lines.joined(separator: "\n")
        }
    }

    func reply(to text: String) {
        interrupted.store(false, ordering: .relaxed)
        do {
            let result = try chat.send(text, onDropped: { n in
                printErr("[context full: dropped the \(n) oldest messages to make room; the system prompt is kept]")
            }, onText: { piece in
                out.write(Data(piece.utf8))
                return !interrupted.load(ordering: .relaxed)
            })
            switch result.finishReason {
            case .cancelled: out.write(Data(" [stopped]".utf8))
            case .contextFull: printErr("\n[context full: the reply was cut; the oldest turns will be dropped next turn]")
            case .length: printErr("\n[reply reached --max-tokens \(chat.maxReplyTokens)]")
            case .stop: break
            }
            out.write(Data("\n".utf8))
        } catch {
            printErr("\nerror: \(error)")
        }
        interrupted.store(false, ordering: .relaxed)
    }

    func perform(_ command: ChatCommand) throws {
        switch command {
        case .help: printErr(ChatCommand.helpText)
        case .exit: return
        case .reset:
            chat.reset()
            printErr("[conversation cleared]")
        case let .system(text):
            chat.setSystem(text)
            chat.reset()
            printErr(text == nil ? "[system prompt removed; new conversation]" : "[system prompt set; new conversation]")
        case .stats: printErr(stats())
        case let .set(key, value):
            try chat.set(key: key, value: value)
            printErr("[\(key) = \(value)]")
        case let .save(path):
            try chat.conversation.json().write(to: URL(fileURLWithPath: path))
            printErr("[saved \(chat.conversation.turns.count) messages to \(path)]")
        case let .load(path):
            guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read \(path)") }
            try chat.load(try Conversation(json: data))
            printErr("[loaded \(chat.conversation.turns.count) messages from \(path)]")
        }
    }

    func stats() -> String {
        var lines: [String] = []
        if let s = chat.lastStats {
            lines.append(String(format: "last turn: prompt %d tokens, %d reused from the cache, %d prefilled in %.3f s (%.1f tok/s); %d generated in %.2f s (%.1f tok/s)",
                                s.promptTokens, s.reusedTokens, s.promptTokens - s.reusedTokens, s.prefillSeconds, s.prefillTokensPerSecond,
                                s.generatedTokens, s.decodeSeconds, s.decodeTokensPerSecond))
        } else {
            lines.append("no turn yet")
        }
        let session = chat.session
        lines.append(String(format: "context: %d of %d tokens used (%.0f%%)", session.tokens.count, session.contextLength,
                            100 * Double(session.tokens.count) / Double(session.contextLength)))
        lines.append(String(format: "KV cache: %.1f MiB allocated, %.1f KiB per token, %.1f MiB in use",
                            Double(session.cache.allocatedBytes) / 1048576, session.cache.bytesPerToken / 1024,
                            session.cache.bytesPerToken * Double(session.tokens.count) / 1048576))
        if let now = ProcessIO.current(), let start = startIO {
            lines.append(String(format: "bytes read from storage since start: %.1f MiB (read calls: %.1f MiB); weights in memory: %.1f MiB",
                                Double(now.readBytes - start.readBytes) / 1048576, Double(now.readChars - start.readChars) / 1048576,
                                Double(chat.engine.model.weightBytes) / 1048576))
        }
        lines.append(String(format: "sampling: temperature %.2f, top_k %d, top_p %.2f, min_p %.2f, repeat_penalty %.2f; max_tokens %d",
                            chat.sampling.temperature, chat.sampling.topK, chat.sampling.topP, chat.sampling.minP, chat.sampling.repeatPenalty,
                            chat.maxReplyTokens))
        return lines.joined(separator: "\n")
    }
}
