import Foundation
import SpoolRuntime

/// Where GPTQ's calibration tokens come from: a text file, or the model itself.
public enum CalibrationText {
    /// `total / length` windows spread evenly over the token stream, each starting with BOS when
    /// the model adds one (as the perplexity protocol does).
    public static func windows(of tokens: [Int32], bos: Int32?, total: Int, length: Int) -> [[Int32]] {
        let body = bos == nil ? length : length - 1
        guard tokens.count >= body else { return tokens.isEmpty ? [] : [(bos.map { [$0] } ?? []) + tokens] }
        let count = max(1, min(total / length, tokens.count / body))
        let stride = count > 1 ? (tokens.count - body) / (count - 1) : 0
        return (0..<count).map { i in
            let s = i * stride
            return (bos.map { [$0] } ?? []) + Array(tokens[s..<(s + body)])
        }
    }

    /// Sequences sampled from the float model itself, starting from BOS (temperature 1, top-k 0,
    /// so the text follows the model's own distribution): packing needs no dataset.
    public static func selfGenerated(engine: Engine, total: Int, length: Int, seed: UInt64, progress: (Int, Int) -> Void = { _, _ in }) throws -> [[Int32]] {
        let bos = engine.tokenizer.bosID ?? 0
        var params = SamplingParameters()
        params.temperature = 1.0
        params.topK = 0
        params.topP = 1.0
        params.minP = 0.0
        var out: [[Int32]] = []
        for i in 0..<max(1, total / length) {
            params.seed = seed &+ UInt64(i)
            let session = engine.makeSession(contextLength: length + 1)
            var seq: [Int32] = [bos]
            // Restart from BOS when the model ends a text early, until the sequence is full.
            while seq.count < length {
                session.reset()
                if seq.count > 1 { seq.append(bos) }
                let r = try session.generate(prompt: [bos], maxTokens: length - seq.count, sampling: params, stop: []) { _ in true }
                seq += r.tokens.prefix(length - seq.count)
                if r.tokens.isEmpty { break }
            }
            out.append(seq)
            progress(i + 1, max(1, total / length))
        }
        return out
    }
}
