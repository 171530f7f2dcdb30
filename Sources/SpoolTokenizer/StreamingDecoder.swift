/// Turns a stream of token ids into text without ever emitting half a UTF-8 character: bytes of an
/// incomplete sequence are held back until the next token completes it (or `flush` gives up on it).
public struct StreamingDecoder {
    let tokenizer: BPETokenizer
    let renderSpecial: Bool
    var pending: [UInt8] = []

    public init(tokenizer: BPETokenizer, renderSpecial: Bool = false) {
        self.tokenizer = tokenizer
        self.renderSpecial = renderSpecial
    }

    /// The text that became complete with this token (possibly empty).
    public mutating func append(_ id: Int32) -> String {
        pending.append(contentsOf: tokenizer.bytes(of: id, renderSpecial: renderSpecial))
        let keep = StreamingDecoder.incompleteSuffixLength(pending)
        let ready = pending.count - keep
        guard ready > 0 else { return "" }
        let text = String(decoding: pending[..<ready], as: UTF8.self)
        pending.removeFirst(ready)
        return text
    }

    /// Whatever is still held back, with U+FFFD for an unfinished sequence.
    public mutating func flush() -> String {
        defer { pending.removeAll() }
        return pending.isEmpty ? "" : String(decoding: pending, as: UTF8.self)
    }

    /// Length of a trailing UTF-8 sequence that has a valid lead byte but lacks continuation bytes.
    static func incompleteSuffixLength(_ b: [UInt8]) -> Int {
        var i = b.count - 1
        var continuation = 0
        while i >= 0 && continuation < 3 && b[i] & 0xC0 == 0x80 {
            continuation += 1
            i -= 1
        }
        guard i >= 0 else { return 0 }
        let lead = b[i]
        let needed: Int
        switch lead {
        case 0xC2...0xDF: needed = 1
        case 0xE0...0xEF: needed = 2
        case 0xF0...0xF4: needed = 3
        default: return 0
        }
        return continuation < needed ? continuation + 1 : 0
    }
}
