import SpoolFormat
import Synchronization

/// Byte-level BPE (GPT-2 style) as llama.cpp applies it: special tokens are cut out first, the rest
/// is split into words by the pre-tokenizer, each word is spelled as byte-level characters and
/// merged pair by pair, lowest merge rank first (leftmost on ties).
public final class BPETokenizer: Sendable {
    public let vocabulary: TokenizerVocabulary
    /// Token text → id.
    let ids: [String: Int32]
    /// (left id << 32 | right id) → (rank, merged id).
    let merges: [UInt64: (rank: Int32, result: Int32)]
    /// The token of each single byte, or -1 when the vocabulary lacks it.
    let byteTokens: [Int32]
    /// Raw bytes each token decodes to (specials: their text).
    let pieces: [[UInt8]]
    /// Special tokens as UTF-8, longest first, with whether they are matched without `parseSpecial`.
    let specials: [(id: Int32, bytes: [UInt8], always: Bool)]
    let endOfGeneration: Set<Int32>
    /// Word → ids, so that repeated words skip the merge loop.
    private let cache = Mutex<[String: [Int32]]>([:])

    public var vocabularySize: Int { vocabulary.tokens.count }
    public var bosID: Int32? { vocabulary.bosID }
    public var eosID: Int32? { vocabulary.eosID }
    public var addsBOS: Bool { vocabulary.addBOS }

    public convenience init(gguf: GGUFFile) throws(TokenizerError) {
        try self.init(TokenizerVocabulary(gguf: gguf))
    }

    public init(_ vocabulary: TokenizerVocabulary) throws(TokenizerError) {
        guard !vocabulary.tokens.isEmpty else { throw .emptyVocabulary }
        guard vocabulary.types.count == vocabulary.tokens.count else {
            throw .tokenTypeCountMismatch(tokens: vocabulary.tokens.count, types: vocabulary.types.count)
        }
        self.vocabulary = vocabulary
        var ids: [String: Int32] = [:]
        ids.reserveCapacity(vocabulary.tokens.count)
        for (i, t) in vocabulary.tokens.enumerated() where ids[t] == nil { ids[t] = Int32(i) }
        self.ids = ids

        var merges: [UInt64: (rank: Int32, result: Int32)] = [:]
        merges.reserveCapacity(vocabulary.merges.count)
        for (rank, line) in vocabulary.merges.enumerated() {
            // The separator is the first space after the first character (a token may be " " itself
            // only in its byte-level spelling "Ġ", so a plain space is always the separator).
            let scalars = Array(line.unicodeScalars)
            guard scalars.count >= 3, let sep = scalars.dropFirst().firstIndex(of: " ") else {
                throw .malformedMerge(index: rank, text: line)
            }
            var left = String.UnicodeScalarView(), right = String.UnicodeScalarView()
            left.append(contentsOf: scalars[..<sep])
            right.append(contentsOf: scalars[(sep + 1)...])
            guard !right.isEmpty else { throw .malformedMerge(index: rank, text: line) }
            guard let l = ids[String(left)], let r = ids[String(right)], let m = ids[String(left) + String(right)] else { continue }
            let key = UInt64(UInt32(l)) << 32 | UInt64(UInt32(r))
            if merges[key] == nil { merges[key] = (Int32(rank), m) }
        }
        self.merges = merges

        byteTokens = (0..<256).map { b in ids[ByteLevel.encode([UInt8(b)])] ?? -1 }

        var pieces: [[UInt8]] = []
        var specials: [(id: Int32, bytes: [UInt8], always: Bool)] = []
        pieces.reserveCapacity(vocabulary.tokens.count)
        for (i, t) in vocabulary.tokens.enumerated() {
            switch vocabulary.types[i] {
            case .control, .userDefined, .unknown:
                pieces.append(Array(t.utf8))
                if !t.isEmpty { specials.append((Int32(i), Array(t.utf8), vocabulary.types[i] == .userDefined)) }
            case .byte:
                // SentencePiece-style "<0xAB>".
                if t.utf8.count == 6, t.hasPrefix("<0x"), let v = UInt8(t.dropFirst(3).prefix(2), radix: 16) {
                    pieces.append([v])
                } else {
                    pieces.append(Array(t.utf8))
                }
            default:
                pieces.append(ByteLevel.decode(t) ?? Array(t.utf8))
            }
        }
        self.pieces = pieces
        self.specials = specials.sorted { $0.bytes.count > $1.bytes.count || ($0.bytes.count == $1.bytes.count && $0.id < $1.id) }

        // End of generation: EOS, EOT, and the control tokens llama.cpp also treats as such by name.
        var eog = Set<Int32>()
        for id in [vocabulary.eosID, vocabulary.eotID].compactMap({ $0 }) { eog.insert(id) }
        let eogNames: Set<String> = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>", "</s>"]
        for (i, t) in vocabulary.tokens.enumerated() where vocabulary.types[i] == .control && eogNames.contains(t) {
            eog.insert(Int32(i))
        }
        endOfGeneration = eog
    }

    public func isEndOfGeneration(_ id: Int32) -> Bool { endOfGeneration.contains(id) }

    public func isSpecial(_ id: Int32) -> Bool {
        guard id >= 0 && Int(id) < vocabulary.types.count else { return false }
        return vocabulary.types[Int(id)] == .control
    }

    // MARK: - Encoding

    /// Token ids of `text`. `addSpecial` adds BOS/EOS as the model's metadata asks; `parseSpecial`
    /// turns control-token text such as `<|im_start|>` into the token instead of spelling it out.
    public func encode(_ text: String, addSpecial: Bool = true, parseSpecial: Bool = false) -> [Int32] {
        var out: [Int32] = []
        if addSpecial && vocabulary.addBOS, let bos = vocabulary.bosID { out.append(bos) }
        for fragment in partition(Array(text.utf8), parseSpecial: parseSpecial) {
            switch fragment {
            case let .special(id): out.append(id)
            case let .text(bytes): encodeText(bytes, into: &out)
            }
        }
        if addSpecial && vocabulary.addEOS, let eos = vocabulary.eosID { out.append(eos) }
        return out
    }

    enum Fragment { case text([UInt8]), special(Int32) }

    /// Cuts special tokens out of the text, longest token first, as llama.cpp does.
    func partition(_ bytes: [UInt8], parseSpecial: Bool) -> [Fragment] {
        var fragments: [Fragment] = [.text(bytes)]
        for special in specials where parseSpecial || special.always {
            var next: [Fragment] = []
            for f in fragments {
                guard case let .text(b) = f, b.count >= special.bytes.count else { next.append(f); continue }
                var start = 0, i = 0
                let needle = special.bytes
                while i + needle.count <= b.count {
                    if b[i] == needle[0] && b[i..<(i + needle.count)].elementsEqual(needle) {
                        if start < i { next.append(.text(Array(b[start..<i]))) }
                        next.append(.special(special.id))
                        i += needle.count
                        start = i
                    } else {
                        i += 1
                    }
                }
                if start < b.count { next.append(.text(Array(b[start...]))) }
            }
            fragments = next
        }
        return fragments
    }

    func encodeText(_ bytes: [UInt8], into out: inout [Int32]) {
        // Invalid UTF-8 cannot come from a Swift String; decoding repairs it anyway.
        let scalars = Array(String(decoding: bytes, as: UTF8.self).unicodeScalars)
        for word in vocabulary.preTokenizer.split(scalars) {
            var view = String.UnicodeScalarView()
            view.append(contentsOf: scalars[word])
            let w = String(view)
            if let cached = cache.withLock({ $0[w] }) { out.append(contentsOf: cached); continue }
            let ids = encodeWord(Array(w.utf8))
            cache.withLock { c in
                if c.count > 100_000 { c.removeAll(keepingCapacity: true) }
                c[w] = ids
            }
            out.append(contentsOf: ids)
        }
    }

    /// BPE on one word: start from one symbol per byte, repeatedly merge the adjacent pair with the
    /// lowest rank (leftmost first) until no pair has a merge. A heap keeps this O(n log n).
    func encodeWord(_ bytes: [UInt8]) -> [Int32] {
        let n = bytes.count
        if n == 0 { return [] }
        var symbol = bytes.map { byteTokens[Int($0)] }
        var prev = Array(-1..<(n - 1)), next = Array(1...n)
        var alive = [Bool](repeating: true, count: n)
        var heap = PairHeap()
        func push(_ i: Int) {
            let j = next[i]
            guard j < n, symbol[i] >= 0, symbol[j] >= 0 else { return }
            if let m = merges[UInt64(UInt32(symbol[i])) << 32 | UInt64(UInt32(symbol[j]))] {
                heap.push(.init(rank: m.rank, left: Int32(i), leftSymbol: symbol[i], rightSymbol: symbol[j]))
            }
        }
        for i in 0..<(n - 1) { push(i) }
        while let top = heap.pop() {
            let i = Int(top.left)
            guard alive[i], symbol[i] == top.leftSymbol else { continue }
            let j = next[i]
            guard j < n, alive[j], symbol[j] == top.rightSymbol,
                  let m = merges[UInt64(UInt32(symbol[i])) << 32 | UInt64(UInt32(symbol[j]))] else { continue }
            symbol[i] = m.result
            alive[j] = false
            next[i] = next[j]
            if next[j] < n { prev[next[j]] = i }
            if prev[i] >= 0 { push(prev[i]) }
            push(i)
        }
        var out: [Int32] = []
        var i = 0
        while i < n {
            if symbol[i] >= 0 {
                out.append(symbol[i])
            } else if let unk = vocabulary.unknownID {
                out.append(unk)
            }
            i = next[i]
        }
        return out
    }

    // MARK: - Decoding

    /// Raw bytes of one token. Control tokens render as their text only when `renderSpecial`.
    public func bytes(of id: Int32, renderSpecial: Bool = false) -> [UInt8] {
        guard id >= 0 && Int(id) < pieces.count else { return [] }
        if vocabulary.types[Int(id)] == .control && !renderSpecial { return [] }
        return pieces[Int(id)]
    }

    /// The text of `ids`. Bytes that do not form valid UTF-8 become U+FFFD.
    public func decode(_ ids: [Int32], renderSpecial: Bool = false) -> String {
        var out: [UInt8] = []
        for id in ids { out.append(contentsOf: bytes(of: id, renderSpecial: renderSpecial)) }
        return String(decoding: out, as: UTF8.self)
    }

    public func token(_ text: String) -> Int32? { ids[text] }
}

struct PairHeap {
    struct Entry {
        var rank: Int32
        var left: Int32
        var leftSymbol: Int32
        var rightSymbol: Int32
        func before(_ o: Entry) -> Bool { rank != o.rank ? rank < o.rank : left < o.left }
    }
    var items: [Entry] = []

    mutating func push(_ e: Entry) {
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard items[i].before(items[p]) else { break }
            items.swapAt(i, p)
            i = p
        }
    }

    mutating func pop() -> Entry? {
        guard let first = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count && items[l].before(items[m]) { m = l }
                if r < items.count && items[r].before(items[m]) { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return first
    }
}
