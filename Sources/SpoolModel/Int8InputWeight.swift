import SpoolKernels

/// A weight whose `apply` first quantizes x to 8 bits per block (`Q8Activations`) and then runs an
/// integer kernel. Weights that read the same input (attention q/k/v, feed-forward gate/up) and
/// share one activation buffer need that quantization only once: see `applyShared`.
public protocol Int8InputWeight: LinearWeight {
    /// The buffer `apply` quantizes into.
    var activations: Q8Activations { get }
    /// y (x.tokens, rows) from activations already quantized (x.cols == cols).
    func apply(quantized x: Q8Activations, into y: UnsafeMutablePointer<Float>, pool: ThreadPool)
    /// Rows `rows` of y from quantized activations, on the calling thread (one task of a
    /// parallel loop that may serve several weights at once).
    func applyRows(_ rows: Range<Int>, quantized x: Q8Activations, into y: UnsafeMutablePointer<Float>)
    /// Rows per task of a parallel loop over this weight's rows for `tokens` tokens.
    func rowsPerTask(tokens: Int, threads: Int) -> Int
    /// false when `apply` multiplies float activations instead (a reference mode), so that
    /// `applyShared` must not quantize for it.
    var takesInt8Activations: Bool { get }
}

extension Int8InputWeight {
    public var takesInt8Activations: Bool { true }
    public func rowsPerTask(tokens: Int, threads: Int) -> Int { Kernels.rowsPerChunk(rows, threads: threads) }
}

/// y_i = x · W_iᵀ for weights reading the same x. When they all take 8-bit activations from the
/// same buffer, x is quantized once for all of them; otherwise each applies on its own.
public func applyShared(_ weights: [LinearWeight], _ x: UnsafePointer<Float>, tokens: Int,
                        into outputs: [UnsafeMutablePointer<Float>], pool: ThreadPool) {
    if let first = weights.first as? Int8InputWeight, first.takesInt8Activations,
       weights.allSatisfy({ ($0 as? Int8InputWeight)?.activations === first.activations && $0.cols == first.cols }) {
        let a = first.activations
        Kernels.quantizeActivations(x, tokens: tokens, cols: first.cols, into: a, pool: pool)
        // One parallel loop over the row blocks of all the weights: one dispatch and one barrier
        // instead of one per weight (decode runs ~250 of them per token).
        var tasks: [(weight: Int8InputWeight, y: UnsafeMutablePointer<Float>, rows: Range<Int>)] = []
        for (w, y) in zip(weights, outputs) {
            guard let w = w as? Int8InputWeight else { continue }   // all are, checked above
            let per = w.rowsPerTask(tokens: tokens, threads: pool.threadCount)
            for r in stride(from: 0, to: w.rows, by: per) { tasks.append((w, y, r..<min(w.rows, r + per))) }
        }
        pool.parallelFor(tasks.count) { i in tasks[i].weight.applyRows(tasks[i].rows, quantized: a, into: tasks[i].y) }
        return
    }
    for (w, y) in zip(weights, outputs) { w.apply(x, tokens: tokens, into: y, pool: pool) }
}
