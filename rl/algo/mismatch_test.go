package algo

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestRounding: bf16 and fp16 rounding on known cases (ties to even,
// overflow, subnormals, NaN), and on random values a representable result
// no farther than half a spacing away.
func TestRounding(t *testing.T) {
	inf := float32(math.Inf(1))
	tests := []struct {
		name    string
		f       func(float32) float32
		in, out float32
	}{
		{"bf16 exact", RoundBF16, 1.5, 1.5},
		{"bf16 tie to even (down)", RoundBF16, 1 + 0x1p-8, 1},
		{"bf16 tie to even (up)", RoundBF16, 1 + 3*0x1p-8, 1 + 0x1p-6},
		{"bf16 below a tie", RoundBF16, 1 + 0x1p-8 - 0x1p-23, 1},
		{"bf16 negative", RoundBF16, -(1 + 3*0x1p-8), -(1 + 0x1p-6)},
		{"bf16 overflow", RoundBF16, math.MaxFloat32, inf},
		{"bf16 inf", RoundBF16, -inf, -inf},
		{"fp16 exact", RoundFP16, 0.333984375, 0.333984375},
		{"fp16 tie to even (down)", RoundFP16, 1 + 0x1p-11, 1},
		{"fp16 tie to even (up)", RoundFP16, 1 + 3*0x1p-11, 1 + 0x1p-9},
		{"fp16 largest", RoundFP16, 65504, 65504},
		{"fp16 below overflow", RoundFP16, 65519, 65504},
		{"fp16 overflow", RoundFP16, -65520, -inf},
		{"fp16 smallest subnormal", RoundFP16, 0x1p-24, 0x1p-24},
		{"fp16 subnormal tie to zero", RoundFP16, 0x1p-25, 0},
		{"fp16 subnormal tie to even", RoundFP16, 3 * 0x1p-25, 0x1p-23},
		{"fp16 smallest normal", RoundFP16, 0x1p-14 * (1 + 0x1p-10), 0x1p-14 * (1 + 0x1p-10)},
	}
	for _, tc := range tests {
		if got := tc.f(tc.in); math.Float32bits(got) != math.Float32bits(tc.out) {
			t.Errorf("%s: %v → %v, want %v", tc.name, tc.in, got, tc.out)
		}
	}
	for _, f := range []func(float32) float32{RoundBF16, RoundFP16} {
		if got := f(float32(math.NaN())); !math.IsNaN(float64(got)) {
			t.Errorf("NaN → %v", got)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		x := float32(rng.NormFloat64() * math.Pow(2, float64(rng.IntN(40)-30)))
		for _, c := range []struct {
			name     string
			f        func(float32) float32
			bits     int     // significant bits
			minExp   float64 // exponent of the smallest normal
			overflow float64
		}{{"bf16", RoundBF16, 8, -126, math.Inf(1)}, {"fp16", RoundFP16, 11, -14, 65520}} {
			r := float64(c.f(x))
			a := math.Abs(float64(x))
			if a >= c.overflow {
				continue
			}
			_, e := math.Frexp(a)
			spacing := math.Ldexp(1, max(e-1, int(c.minExp))-(c.bits-1))
			if math.Abs(r-float64(x)) > spacing/2 || math.Mod(r, spacing) != 0 {
				t.Fatalf("%s: %v → %v, spacing %g", c.name, x, r, spacing)
			}
		}
	}
}

// TestMismatchSettings: the dial's fields validate and set.
func TestMismatchSettings(t *testing.T) {
	c, _ := Preset("grpo")
	if c.RolloutPrecision != PrecisionFP32 || c.RolloutStaleness != 0 || c.RoutingReplay {
		t.Errorf("preset: rollout_precision %q, rollout_staleness %d, routing_replay %v; want fp32, 0, false", c.RolloutPrecision, c.RolloutStaleness, c.RoutingReplay)
	}
	for _, a := range []string{"rollout_precision=bf16", "rollout_staleness=2", "routing_replay=true"} {
		if err := c.Apply(a); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Validate(); err != nil || c.RolloutPrecision != PrecisionBF16 || c.RolloutStaleness != 2 || !c.RoutingReplay {
		t.Errorf("after the settings: %v, %+v", err, c)
	}
	if err := c.Set("rollout_precision", "int8"); err == nil {
		t.Error("rollout_precision int8 was accepted")
	}
	c.RolloutStaleness = MaxRolloutStaleness + 1
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "rollout_staleness") {
		t.Errorf("staleness %d: %v", c.RolloutStaleness, err)
	}
	c.RolloutStaleness, c.RolloutPrecision = 0, ""
	if err := c.Validate(); err != nil {
		t.Errorf("an empty rollout_precision (a config from before the field) does not validate: %v", err)
	}
	w := []float32{1 + 0x1p-8, 3}
	if err := RoundWeights("", w); err != nil || w[0] != 1+0x1p-8 {
		t.Errorf("fp32 rounding changed %v (%v)", w, err)
	}
	if err := RoundWeights(PrecisionBF16, w); err != nil || w[0] != 1 || w[1] != 3 {
		t.Errorf("bf16 rounding gave %v (%v)", w, err)
	}
	if err := RoundWeights("fp8", w); err == nil {
		t.Error("RoundWeights accepted fp8")
	}
}
