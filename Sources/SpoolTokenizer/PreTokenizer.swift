/// Splits text into words before BPE, reproducing the regular expressions llama.cpp uses for each
/// `tokenizer.ggml.pre` value. The expressions are matched by hand over Unicode scalars, as
/// llama.cpp does, rather than by a regex engine: the behaviour is then exact and linear in time.
///
/// - gpt2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
/// - smollm (also starcoder, refact, command-r, codeshell, exaone, minerva): first every `\p{N}` is
///   split off on its own, then each remaining piece is split with the gpt2 expression.
/// - llama3 (`llama-bpe`): `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
///   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
public enum PreTokenizer: String, Sendable, CaseIterable {
    case gpt2
    case smollm
    case llama3

    static let aliases: [String: PreTokenizer] = [
        "gpt2": .gpt2, "gpt-2": .gpt2, "mpt": .gpt2, "olmo": .gpt2, "jais": .gpt2, "default": .gpt2,
        "smollm": .smollm, "starcoder": .smollm, "refact": .smollm, "command-r": .smollm,
        "codeshell": .smollm, "exaone": .smollm, "minerva-7b": .smollm,
        "llama-bpe": .llama3, "llama3": .llama3, "llama-v3": .llama3, "dbrx": .llama3, "smaug-bpe": .llama3,
    ]

    public static var knownNames: [String] { aliases.keys.sorted() }

    public init?(name: String) {
        guard let p = PreTokenizer.aliases[name] else { return nil }
        self = p
    }

    /// The words of `text`, as ranges of its scalars.
    func split(_ text: [Unicode.Scalar]) -> [Range<Int>] {
        let classes = text.map(CharClass.init)
        var words: [Range<Int>] = []
        switch self {
        case .gpt2:
            PreTokenizer.splitGPT2(text, classes, 0..<text.count, into: &words)
        case .llama3:
            PreTokenizer.splitLlama3(text, classes, into: &words)
        case .smollm:
            var start = 0
            for i in 0..<text.count where classes[i] == .number {
                if start < i { PreTokenizer.splitGPT2(text, classes, start..<i, into: &words) }
                words.append(i..<(i + 1))
                start = i + 1
            }
            if start < text.count { PreTokenizer.splitGPT2(text, classes, start..<text.count, into: &words) }
        }
        return words
    }

    enum CharClass: UInt8 {
        case letter, number, whitespace, other

        init(_ s: Unicode.Scalar) {
            if s.properties.isWhitespace { self = .whitespace; return }
            switch s.properties.generalCategory {
            case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: self = .letter
            case .decimalNumber, .letterNumber, .otherNumber: self = .number
            default: self = .other
            }
        }
    }

    /// Length of a contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`) at i, or 0.
    static func contraction(_ t: [Unicode.Scalar], _ i: Int, end: Int, caseInsensitive: Bool) -> Int {
        guard t[i] == "'", i + 1 < end else { return 0 }
        func lower(_ s: Unicode.Scalar) -> Unicode.Scalar {
            caseInsensitive && s.value >= 65 && s.value <= 90 ? Unicode.Scalar(s.value + 32)! : s
        }
        let a = lower(t[i + 1])
        if a == "s" || a == "t" || a == "m" || a == "d" { return 2 }
        if i + 2 < end {
            let b = lower(t[i + 2])
            if (a == "r" && b == "e") || (a == "v" && b == "e") || (a == "l" && b == "l") { return 3 }
        }
        return 0
    }

    static func run(_ c: [CharClass], from i: Int, end: Int, while pred: (CharClass) -> Bool) -> Int {
        var j = i
        while j < end && pred(c[j]) { j += 1 }
        return j
    }

    static func splitGPT2(_ t: [Unicode.Scalar], _ c: [CharClass], _ range: Range<Int>, into words: inout [Range<Int>]) {
        var i = range.lowerBound
        let end = range.upperBound
        while i < end {
            let n = contraction(t, i, end: end, caseInsensitive: false)
            if n > 0 { words.append(i..<(i + n)); i += n; continue }
            // ` ?X+` for X in letter, number, other (not whitespace, letter or number).
            let lead = t[i] == " " && i + 1 < end ? 1 : 0
            let k = c[i + lead]
            if k != .whitespace {
                let j = run(c, from: i + lead, end: end) { $0 == k }
                words.append(i..<j); i = j; continue
            }
            // `\s+(?!\S)` then `\s+`.
            let j = run(c, from: i, end: end) { $0 == .whitespace }
            if j < end && j - i > 1 {
                words.append(i..<(j - 1)); i = j - 1
            } else {
                words.append(i..<j); i = j
            }
        }
    }

    static func splitLlama3(_ t: [Unicode.Scalar], _ c: [CharClass], into words: inout [Range<Int>]) {
        var i = 0
        let end = t.count
        func isNewline(_ s: Unicode.Scalar) -> Bool { s == "\r" || s == "\n" }
        while i < end {
            let n = contraction(t, i, end: end, caseInsensitive: true)
            if n > 0 { words.append(i..<(i + n)); i += n; continue }
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            if c[i] == .letter {
                let j = run(c, from: i, end: end) { $0 == .letter }
                words.append(i..<j); i = j; continue
            }
            if c[i] != .number && !isNewline(t[i]) && i + 1 < end && c[i + 1] == .letter {
                let j = run(c, from: i + 1, end: end) { $0 == .letter }
                words.append(i..<j); i = j; continue
            }
            // `\p{N}{1,3}`
            if c[i] == .number {
                var j = i
                while j < end && j - i < 3 && c[j] == .number { j += 1 }
                words.append(i..<j); i = j; continue
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            let lead = t[i] == " " && i + 1 < end ? 1 : 0
            if c[i + lead] == .other {
                var j = run(c, from: i + lead, end: end) { $0 == .other }
                while j < end && isNewline(t[j]) { j += 1 }
                words.append(i..<j); i = j; continue
            }
            // Whitespace: `\s*[\r\n]+`, then `\s+(?!\S)`, then `\s+`.
            let j = run(c, from: i, end: end) { $0 == .whitespace }
            if let lastNewline = (i..<j).last(where: { isNewline(t[$0]) }) {
                words.append(i..<(lastNewline + 1)); i = lastNewline + 1; continue
            }
            if j < end && j - i > 1 {
                words.append(i..<(j - 1)); i = j - 1
            } else {
                words.append(i..<j); i = j
            }
        }
    }
}
