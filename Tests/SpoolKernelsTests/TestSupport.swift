import SpoolKernels
import XCTest

/// Error limits, named so a change to one is a visible decision.
///
/// Matmul: |y - ref| / sum_c |w[r,c] x[t,c]| (error relative to the magnitude of the terms, which
/// is what float accumulation in any order can promise; ~K * 2^-24 worst case, far less in practice).
let MAX_MATMUL_REL_ERROR: Float = 1e-5
/// Polynomial exp vs Foundation.exp, relative, over [-87, 88].
let MAX_EXP_REL_ERROR: Float = 5e-7
/// softmax outputs vs the double-summed reference, relative to the largest output.
let MAX_SOFTMAX_REL_ERROR: Float = 2e-6
/// rmsNorm outputs, relative to the largest output of the row.
let MAX_RMSNORM_REL_ERROR: Float = 2e-6
/// swiglu outputs, relative to max(|out|, |up| * 1e-3) (silu's own scale near zero).
let MAX_SWIGLU_REL_ERROR: Float = 2e-6
/// rope outputs, relative to the largest |x| of the head, at position 0.
let MAX_ROPE_REL_ERROR: Float = 1e-6
/// Angles are computed as llama.cpp computes them, theta_{i+1} = theta_i * base^(-2/d) in float,
/// so the angle of pair i carries up to (i + 1) roundings of 2^-24 relative: at most ~33 * 6e-8 * pos
/// radians for d <= 64, and the rotated values twice that relative to |x|. A wrong rotation is off
/// by O(1) already at positions 1 and 7.
let MAX_ROPE_ANGLE_ERROR_PER_POSITION: Float = 4e-6

/// The levels to test: every one this machine supports (generic always).
var testLevels: [KernelLevel] { KernelLevel.supported }
