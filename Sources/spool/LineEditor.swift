import CEditLine
import Foundation
import Synchronization

/// Set by SIGINT; the REPL checks it between tokens (to stop a reply) and after reading a line.
let interrupted = Atomic<Bool>(false)

/// Line editing and persistent history through libedit's readline interface.
///
/// Ctrl-C: the SIGINT handler only sets `interrupted`. At the prompt our getc hook notices the flag
/// and reports end of input, readline returns nil, and the caller sees the flag and treats it as
/// "clear the line" rather than Ctrl-D.
enum LineEditor {
    static func setUp(historyFile: String?) {
        installInterruptHandler()
        spool_editline_configure { stream in
            // SIGINT may land on any of the process's threads (the async runtime's, the kernel pool's),
            // so a blocked read here is not reliably interrupted: wait in short polls and look at the flag.
            let fd = fileno(stream)
            var byte: UInt8 = 0
            while true {
                if interrupted.load(ordering: .relaxed) { return EOF }
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = poll(&p, 1, 100)
                if ready == 0 || (ready < 0 && errno == EINTR) { continue }
                let n = Glibc.read(fd, &byte, 1)
                if n < 0, errno == EINTR { continue }
                guard n == 1 else { return EOF }
                // Should the terminal deliver Ctrl-C as a byte rather than a signal, treat it the same.
                if byte == 0x03 {
                    interrupted.store(true, ordering: .relaxed)
                    return EOF
                }
                return Int32(byte)
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
        action.sa_flags = 0
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
