package algo

import (
	"fmt"
	"math"

	"github.com/moerl/moerl/engine"
)

// The rollout/trainer mismatch dial (SPEC-RL.md, "Rollout vs training
// policy"). moerl's sampler and trainer agree bit for bit, so the rollout
// corrections (RolloutCorrection) and routing replay only matter when a
// mismatch is dialled in: rollouts from weights rounded to a lower
// precision while the trainer keeps fp32 (as an inference engine serving
// bf16 weights does, the setting of Yao et al.'s "Your efficient RL
// framework secretly brings you off-policy RL training" and of R3, arXiv
// 2510.11370), and/or rollouts from the policy of RolloutStaleness updates
// ago (as an asynchronous pipeline's are).

// RolloutPrecision names the precision the rollout's weights are rounded
// to before sampling; the trainer always computes with the fp32 weights.
type RolloutPrecision string

// The rollout precisions.
const (
	// PrecisionFP32 samples from the trainer's weights: no mismatch.
	PrecisionFP32 RolloutPrecision = "fp32"
	// PrecisionBF16 rounds each weight to bfloat16 (8 exponent bits, 8
	// significant bits), to nearest even.
	PrecisionBF16 RolloutPrecision = "bf16"
	// PrecisionFP16 rounds each weight to IEEE half precision (5 exponent
	// bits, 11 significant bits, subnormals below 2⁻¹⁴), to nearest even;
	// magnitudes from 65520 up become infinite.
	PrecisionFP16 RolloutPrecision = "fp16"
)

var precisions = newKind[func(float32) float32]("rollout_precision", string(PrecisionFP32))

func init() {
	precisions.register(
		part[func(float32) float32]{name: string(PrecisionFP32), doc: "the trainer's fp32 weights: no mismatch",
			fn: func(x float32) float32 { return x }},
		part[func(float32) float32]{name: string(PrecisionBF16), doc: "weights rounded to bfloat16 (round to nearest even), activations fp32",
			fn: RoundBF16},
		part[func(float32) float32]{name: string(PrecisionFP16), doc: "weights rounded to IEEE fp16 (round to nearest even), activations fp32",
			fn: RoundFP16},
	)
}

// MaxRolloutStaleness bounds RolloutStaleness: the trainer keeps that many
// copies of the weights (and checkpoints them).
const MaxRolloutStaleness = 64

// RoundWeights rounds w in place to the precision p names ("" is fp32).
func RoundWeights(p RolloutPrecision, w []float32) error {
	part, ok := precisions.get(string(p))
	if !ok {
		return fmt.Errorf("rollout_precision %q: want one of %v", p, precisions.names())
	}
	if p == "" || p == PrecisionFP32 {
		return nil
	}
	for i, x := range w {
		w[i] = part.fn(x)
	}
	return nil
}

// RoundBF16 is x rounded to the nearest bfloat16 (ties to even), as a
// float32; NaN stays NaN, a magnitude beyond bfloat16's largest finite
// value (about 3.39e38) becomes infinite. It is a Cast to BF16 and back,
// the rounding every backend's Cast applies.
func RoundBF16(x float32) float32 { return engine.BF16Float(engine.BF16Bits(x)) }

// RoundFP16 is x rounded to the nearest IEEE binary16 value (ties to even),
// as a float32: 11 significant bits for |x| ≥ 2⁻¹⁴, a spacing of 2⁻²⁴
// below, ±Inf from 65520 up; NaN stays NaN.
func RoundFP16(x float32) float32 {
	f := float64(x)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return x
	}
	a := math.Abs(f)
	if a >= 65520 {
		return float32(math.Copysign(math.Inf(1), f))
	}
	// The spacing of fp16 values around a: 2^(e−10) for a in [2^e, 2^(e+1)),
	// e ≥ −14, and 2⁻²⁴ among the subnormals.
	e := -14
	if a >= 0x1p-14 {
		_, exp := math.Frexp(a) // a = frac·2^exp, frac in [0.5, 1)
		e = exp - 1
	}
	q := math.Ldexp(1, e-10)
	return float32(math.Copysign(math.RoundToEven(a/q)*q, f)) // a/q and the product are exact in float64
}
