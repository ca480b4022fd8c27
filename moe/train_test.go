package moe

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/moerl/moerl/engine/cpu"
)

// TestGradientAhead: a Forward given dL/dout (ForwardOptions.DLogp) and a
// Backward given nil produce bit for bit the outputs, the losses and the
// gradients of a plain Forward and a Backward given the same dL/dout, with
// every head and loss term that Forward and Backward support — TrainStep's
// CPU results depend on it.
func TestGradientAhead(t *testing.T) {
	const B, T = 2, 6
	rng := rand.New(rand.NewPCG(4, 4))
	base := tinyConfig(false)
	ids, targets := randomIDs(rng, B*T, base.Vocab), randomIDs(rng, B*T, base.Vocab)
	c, d := make([]float32, B*T), make([]float32, B*T)
	for i := range c {
		c[i], d[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
	}
	c[0], c[B*T-1] = 0, 0 // masked tokens, as TrainStep's padding
	z := base
	z.RouterZLossCoef = 0.5
	critic := base
	critic.ValueHead = true
	replay := replayOf(rng, base.Layers, B*T, base.Experts, base.TopK, 4)
	for _, gc := range []gradCase{
		{name: "moe", cfg: base},
		{name: "dense", cfg: tinyConfig(true)},
		{name: "value head", cfg: critic},
		{name: "z-loss", cfg: z},
		{name: "entropy at T 0.7", cfg: base, o: ForwardOptions{Temperature: 0.7}, entropy: true},
		{name: "routing replay, z-loss, entropy at T 1.3", cfg: z, o: ForwardOptions{Replay: replay, Temperature: 1.3}, entropy: true},
	} {
		t.Run(gc.name, func(t *testing.T) {
			m, err := New(gc.cfg, cpu.New(), 3)
			if err != nil {
				t.Fatal(err)
			}
			a := m.NewActs(B, T)
			var dent []float32
			if gc.entropy {
				dent = d
			}
			o := gc.o
			o.Entropy = gc.entropy
			step := func(o ForwardOptions, dlogp []float32) (out, ent, grads []float32, aux, zl float64) {
				m.ZeroGrad()
				out = slices.Clone(m.Forward(a, ids, targets, o))
				ent = slices.Clone(a.Entropy())
				aux, zl = m.AuxLoss, m.ZLoss
				m.BackwardEntropy(a, dlogp, dent)
				return out, ent, m.HostGrads(), aux, zl
			}
			out0, ent0, g0, aux0, z0 := step(o, c)
			ahead := o
			ahead.DLogp = c
			out1, ent1, g1, aux1, z1 := step(ahead, nil)
			for _, p := range []struct {
				name      string
				got, want []float32
			}{{"outputs", out1, out0}, {"entropies", ent1, ent0}, {"gradients", g1, g0}} {
				if i := firstBitDiff(p.got, p.want); i >= 0 {
					t.Errorf("%s[%d] = %v with the gradient ahead, %v without", p.name, i, p.got[i], p.want[i])
				}
			}
			if aux1 != aux0 || z1 != z0 {
				t.Errorf("aux and z-losses %v, %v with the gradient ahead, %v, %v without", aux1, z1, aux0, z0)
			}
		})
	}

	m, _ := New(base, cpu.New(), 3)
	a := m.NewActs(B, T)
	for _, tc := range []struct {
		want string
		run  func()
	}{
		{"exactly one", func() { m.Forward(a, ids, targets, ForwardOptions{}); m.Backward(a, nil) }},
		{"exactly one", func() { m.Forward(a, ids, targets, ForwardOptions{DLogp: c}); m.Backward(a, c) }},
		{"11 DLogp values for 12 tokens", func() { m.Forward(a, ids, targets, ForwardOptions{DLogp: c[1:]}) }},
		{"forward-only workspace", func() { m.Forward(m.newActs(B, T, false), ids, targets, ForwardOptions{DLogp: c}) }},
	} {
		func() {
			defer func() {
				if msg, _ := recover().(string); !strings.Contains(msg, tc.want) {
					t.Errorf("panic %q, want one mentioning %q", msg, tc.want)
				}
			}()
			tc.run()
		}()
	}
}

// firstBitDiff is the first index where a and b differ in their bits (or
// in length), or −1.
func firstBitDiff(a, b []float32) int {
	for i := range max(len(a), len(b)) {
		if i >= len(a) || i >= len(b) || math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}
