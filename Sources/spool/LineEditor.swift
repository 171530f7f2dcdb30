import CEditLine
import Foundation
import Synchronization

/// Set by SIGINT; the REPL checks it between tokens (to stop a reply) and after reading a line.
let interrupted = Atomic<Bool>(false)

/// Line editing and persistent history through libedit's readline interface.
///
/// Ctrl-C: the SIGINT handler only sets `interrupted`. It is installed without SA_RESTART, so a
/// read blocked at the prompt fails with EINTR; our getc hook then reports end of input, readline
/// returns nil, and the caller sees the flag and treats it as "clear the line" rather than Ctrl-D.
enum LineEditor {
    static func setUp(historyFile: String?) {
        installInterruptHandler()
        spool_editline_configure { stream in
            var byte: UInt8 = 0
            while true {
                let n = Glibc.read(fileno(stream), &byte, 1)
                if n == 1 { return Int32(byte) }
                if n < 0, errno == EINTR {
                    if interrupted.load(ordering: .relaxed) { return EOF }
                    continue
                }
                return EOF
            }
        }
        using_history()
        stifle_history(1000)
        if let historyFile { _ = read_history(historyFile) }
    }

    static func installInterruptHandler() {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in interrupted.store(true, ordering: .relaxed) }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0  // no SA_RESTART: see the type's comment
        sigaction(SIGINT, &action, nil)
    }

    enum Input {
        case line(String)
        case interrupted
        case endOfInput
    }

    static func read(prompt: String) -> Input {
        interrupted.store(false, ordering: .relaxed)
        guard let p = readline(prompt) else {
            return interrupted.exchange(false, ordering: .relaxed) ? .interrupted : .endOfInput
        }
        defer { free(p) }
        return .line(String(cString: p))
    }

    static func remember(_ line: String, historyFile: String?) {
        guard !line.trimmingCharacters(in: .whitespaces).isEmpty else { return }
        add_history(line)
        if let historyFile { _ = write_history(historyFile) }
    }

    /// $XDG_STATE_HOME/spool/history, else ~/.local/state/spool/history; nil if the folder cannot be made.
    static func defaultHistoryFile() -> String? {
        let env = ProcessInfo.processInfo.environment
        let base = env["XDG_STATE_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? (NSHomeDirectory() + "/.local/state")
        let dir = base + "/spool"
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            return nil
        }
        return dir + "/history"
    }
}
