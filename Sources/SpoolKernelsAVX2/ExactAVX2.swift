#if arch(x86_64)
import Glibc
import SpoolGGMLMath

/// The llama.cpp-exact kernels of `GGMLMath`, compiled here with FMA and F16C so that each fused
/// multiply-add is one instruction (the portable module calls libm's fmaf instead). Same results.
public enum ExactAVX2 {
    @inline(never)
    public static func swiglu(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<Float>) {
        GGMLMath.swiglu(gate, up, count: count, into: out, expf: { expf($0) })
    }

    /// Rotates `heads` heads of `headDim` floats (the first d of each) by one position's angles.
    @inline(never)
    public static func rotateHeads(_ x: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, d: Int,
                                   cs: UnsafePointer<Float>, sc: UnsafePointer<Float>) {
        for h in 0..<heads { GGMLMath.rotate(x + h * headDim, d, cs: cs, sc: sc) }
    }

    @inline(never)
    public static func attendHalf(query q: UnsafePointer<Float>, keys: UnsafePointer<UInt16>, values: UnsafePointer<UInt16>,
                                  stride: Int, count n: Int, dim: Int, scale: Float, singleToken: Bool,
                                  scores: UnsafeMutablePointer<Float>, lanes: UnsafeMutablePointer<Float>,
                                  into out: UnsafeMutablePointer<Float>) {
        GGMLMath.attendHalf(query: q, keys: keys, values: values, stride: stride, count: n, dim: dim, scale: scale, singleToken: singleToken,
                            scores: scores, lanes: lanes, into: out)
    }
}
#endif
