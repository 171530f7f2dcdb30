import SpoolGGMLMath

// Scalar reference and portable versions of the 8-bit activation kernels. The x86 versions in
// SpoolKernelsAVX2 / SpoolKernelsAVX512 must agree with these (integer sums exactly, float results
// to MAX_QDOT_REL_ERROR in the tests).

@inline(__always)
func loadF16(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
}

@inline(__always)
func roundF16(_ x: Float) -> Float { Float(Float16(x)) }

public enum QuantGeneric {
    /// Quantizes `tokens` rows of `cols` floats (cols a multiple of 32) into `out` rows.
    /// Rounding is to nearest, ties to even, as ggml's x86 code does.
    public static func quantizeRows(_ x: UnsafePointer<Float>, tokens: Int, cols: Int, into out: Q8Activations, rows: Range<Int>) {
        let nb = cols / 32
        for t in rows {
            for b in 0..<nb {
                let src = x + t * cols + b * 32
                var amax: Float = 0
                for j in 0..<32 { amax = max(amax, abs(src[j])) }
                let d = amax / 127
                let id: Float = amax != 0 ? 127 / amax : 0
                let q = out.qs + t * cols + b * 32
                var sum: Int32 = 0
                for j in 0..<32 {
                    let v = Int8((src[j] * id).rounded(.toNearestOrEven))
                    q[j] = v
                    sum += Int32(v)
                }
                out.d[t * nb + b] = roundF16(d)
                out.s[t * nb + b] = roundF16(Float(sum) * d)
            }
        }
    }

    /// Dot product of one weight row (raw blocks) with one quantized activation row, in the order
    /// of ggml's x86 vec_dot_q4_1_q8_1 / vec_dot_q8_0_q8_0: 8 float lanes, lane l holding the
    /// integer dot of elements 4l..<4l+4 of each block, each block added as
    /// fma(d_w * d_x, lane, acc); the q4_1 offsets as a separate fused chain m_w * s_x; then
    /// `GGMLMath.reduce(acc) + offsets`.
    public static func dotRow(_ format: WeightBlockFormat, _ w: UnsafeRawPointer, _ qx: UnsafePointer<Int8>,
                              _ dx: UnsafePointer<Float>, _ sx: UnsafePointer<Float>, blocks: Int) -> Float {
        var acc = SIMD8<Float>(repeating: 0)
        var offsets: Float = 0
        var lanes = SIMD8<Float>(repeating: 0)
        switch format {
        case .q4_1:
            for b in 0..<blocks {
                let blk = w + b * 20
                let d = loadF16(blk, 0), m = loadF16(blk, 2)
                let q = qx + b * 32
                for l in 0..<8 {
                    var isum: Int32 = 0
                    for e in (4 * l)..<(4 * l + 4) {
                        let byte = blk.load(fromByteOffset: 4 + (e & 15), as: UInt8.self)
                        let nibble = e < 16 ? byte & 0x0F : byte >> 4
                        isum += Int32(nibble) * Int32(q[e])
                    }
                    lanes[l] = Float(isum)
                }
                acc = acc.addingProduct(SIMD8(repeating: d * dx[b]), lanes)
                offsets = offsets.addingProduct(m, sx[b])
            }
        case .q8_0:
            for b in 0..<blocks {
                let blk = w + b * 34
                let d = loadF16(blk, 0)
                let q = qx + b * 32
                for l in 0..<8 {
                    var isum: Int32 = 0
                    for e in (4 * l)..<(4 * l + 4) { isum += Int32(blk.load(fromByteOffset: 2 + e, as: Int8.self)) * Int32(q[e]) }
                    lanes[l] = Float(isum)
                }
                acc = acc.addingProduct(SIMD8(repeating: d * dx[b]), lanes)
            }
        }
        return GGMLMath.reduce(acc) + offsets
    }

    /// y[t, r] for r in rowRange, t in tokenRange.
    public static func matmulBlock(_ format: WeightBlockFormat, _ w: UnsafeRawPointer, rows: Int, cols: Int,
                                   _ x: Q8Activations, into y: UnsafeMutablePointer<Float>,
                                   rowRange: Range<Int>, tokenRange: Range<Int>) {
        let nb = cols / 32, rb = format.rowBytes(cols: cols)
        for t in tokenRange {
            for r in rowRange {
                y[t * rows + r] = dotRow(format, w + r * rb, x.qs + t * cols, x.d + t * nb, x.s + t * nb, blocks: nb)
            }
        }
    }
}
