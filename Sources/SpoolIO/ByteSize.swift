/// Byte counts as users write them: `512M`, `1.5G`, `64k`, `2GiB`, `123` (bytes). Suffixes are
/// binary (K = 1024, M = 1024², G = 1024³, T = 1024⁴), with an optional `i` and/or `B`.
public enum ByteSize {
    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public let text: String
        public var description: String {
            "cannot read \"\(text)\" as a size: write a number with an optional K, M, G or T suffix, e.g. 512M or 1.5G"
        }
    }

    public static func parse(_ text: String) throws(ParseError) -> Int {
        var s = Substring(text.trimmingWhitespace())
        if s.last == "B" || s.last == "b" { s = s.dropLast() }
        if s.last == "i" { s = s.dropLast() }
        var shift = 0
        if let unit = s.last?.uppercased(), let k = ["K": 10, "M": 20, "G": 30, "T": 40][unit] {
            shift = k
            s = s.dropLast()
        }
        guard !s.isEmpty, s.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
              let value = Double(s), value.isFinite, value >= 0 else { throw ParseError(text: text) }
        let bytes = (value * Double(1 << shift)).rounded()
        guard bytes < 9.0e18 else { throw ParseError(text: text) }
        return Int(bytes)
    }

    /// A short human form: "1.50 GiB", "512.0 MiB", "4.0 KiB", "100 B".
    public static func format(_ bytes: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(bytes)
        var u = 0
        while abs(v) >= 1024 && u < units.count - 1 {
            v /= 1024
            u += 1
        }
        if u == 0 { return "\(bytes) B" }
        let digits = v >= 100 ? 1 : 2
        var scaled = (v * pow10(digits)).rounded() / pow10(digits)
        if scaled == -0 { scaled = 0 }
        return "\(scaled) \(units[u])"
    }

    private static func pow10(_ n: Int) -> Double { n == 1 ? 10 : 100 }
}
