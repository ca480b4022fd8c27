// Package paritytest is test support, imported only by tests: whole-model
// checks that a backend computes the model as the CPU backend (engine/cpu,
// the reference) does — the forward log-probs and every parameter's
// gradient, a training curve, sampling — and that sampling on a backend is
// exactly on-policy there. The CUDA backend's tests run it on a GPU, and on
// the kernel emulator where there is none; moe's tests run it on the CPU.
//
// It takes a *testing.T and reports through it, so it has no place in a
// program. It is internal to the module, and lives outside moe so that
// engine/cuda's tests can import it.
package paritytest

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/engine/cpu"
	"github.com/moerl/moerl/moe"
)

// SmallConfig is a model small enough for an emulator: 2 layers, d_model
// 32, 3 experts top-2, context 16.
func SmallConfig(dense bool) moe.Config {
	return moe.Config{Vocab: 57, DModel: 32, Layers: 2, Heads: 2, Experts: 3, TopK: 2, ExpertHidden: 24,
		DenseFFN: dense, MaxSeq: 16, RopeTheta: 10000, NormEps: 1e-6, InitStd: 0.1, AuxLossCoef: 0.01}
}

// RelErr is ‖a−b‖/‖b‖, +Inf when a holds a NaN.
func RelErr(a, b []float32) float64 {
	var d, n float64
	for i := range a {
		if math.IsNaN(float64(a[i])) {
			return math.Inf(1)
		}
		d += (float64(a[i]) - float64(b[i])) * (float64(a[i]) - float64(b[i]))
		n += float64(b[i]) * float64(b[i])
	}
	return math.Sqrt(d / math.Max(n, 1e-30))
}

// Model runs one forward and backward of cfg (and of its dense-FFN twin)
// on be and on the CPU from the same weights and tokens: log-probs within
// 1e-5 and every parameter's gradient within 1e-4, relative.
func Model(t *testing.T, be engine.Backend, cfg moe.Config) {
	t.Helper()
	for _, dense := range []bool{false, true} {
		c := cfg
		c.DenseFFN = dense
		mc, err := moe.New(c, cpu.New(), 3)
		if err != nil {
			t.Fatal(err)
		}
		mb, _ := moe.New(c, be, 3)
		B, T := 2, c.MaxSeq
		r := rand.New(rand.NewPCG(11, 12))
		ids, targets, dl := make([]int32, B*T), make([]int32, B*T), make([]float32, B*T)
		for i := range ids {
			ids[i], targets[i], dl[i] = int32(r.IntN(c.Vocab)), int32(r.IntN(c.Vocab)), float32(r.NormFloat64())
		}
		pass := func(m *moe.Model) ([]float32, []float32) {
			a := m.NewActs(B, T)
			defer a.Free(m.Backend())
			m.ZeroGrad()
			lp := slices.Clone(m.Forward(a, ids, targets, moe.ForwardOptions{Entropy: true}))
			m.Backward(a, dl)
			return lp, m.HostGrads()
		}
		lc, gc := pass(mc)
		lb, gb := pass(mb)
		if err := be.Sync(); err != nil {
			t.Fatal(err)
		}
		if e := RelErr(lb, lc); e > 1e-5 {
			t.Errorf("dense=%v: log-probs differ from the CPU's, rel. error %.2g (bound 1e-5)", dense, e)
		}
		for _, p := range mc.ParamList() {
			if e := RelErr(gb[p.Off:p.Off+p.Len()], gc[p.Off:p.Off+p.Len()]); e > 1e-4 {
				t.Errorf("dense=%v: gradient of %s differs, rel. error %.2g (bound 1e-4)", dense, p.Name, e)
			}
		}
	}
}

// Training trains cfg for steps steps on be and on the CPU from the same
// weights and batches (random token rows with right padding): the losses
// agree within relative tol at every step (float32 rounding compounds
// through the updates, so tol grows with the steps).
func Training(t *testing.T, be engine.Backend, cfg moe.Config, batch, steps int, tol float64) {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 7))
	var corpus moe.Corpus
	for range 256 {
		doc := make([]int32, 4+r.IntN(cfg.MaxSeq-3))
		for i := range doc {
			doc[i] = int32(r.IntN(cfg.Vocab))
		}
		corpus.Docs = append(corpus.Docs, doc)
	}
	tc := moe.DefaultTrain
	tc.Steps, tc.Batch, tc.SeqLen, tc.Warmup, tc.LR = steps, batch, cfg.MaxSeq, max(1, steps/10), 1e-3
	curve := func(be engine.Backend) []float64 {
		m, err := moe.New(cfg, be, 1)
		if err != nil {
			t.Fatal(err)
		}
		a := m.NewActs(tc.Batch, tc.SeqLen)
		defer a.Free(be)
		data := engine.NewRNG(tc.Seed, engine.StreamData)
		var out []float64
		for s := range tc.Steps {
			st, err := m.TrainStep(a, corpus.Batch(data, tc.Batch, tc.SeqLen), tc, s)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, st.Loss)
		}
		return out
	}
	lc, lb := curve(cpu.New()), curve(be)
	for s := range lc {
		if d := math.Abs(lb[s]-lc[s]) / lc[s]; !(d <= tol) {
			t.Errorf("step %d: loss %.6f on %s, %.6f on the CPU (rel. %.2g > %g)", s+1, lb[s], be.Name(), lc[s], d, tol)
		}
	}
	t.Logf("loss CPU %.4f → %.4f, %s %.4f → %.4f", lc[0], lc[len(lc)-1], be.Name(), lb[0], lb[len(lb)-1])
}

// Sampling samples from cfg on be twice with one seed: the same tokens both
// times, and log-probs within 1e-4 of what a CPU forward of the same
// weights gives those tokens.
func Sampling(t *testing.T, be engine.Backend, cfg moe.Config) {
	t.Helper()
	mb, err := moe.New(cfg, be, 6)
	if err != nil {
		t.Fatal(err)
	}
	mc, _ := moe.New(cfg, cpu.New(), 6)
	prompts := [][]int32{{1, 10, 11}, {1, 12}}
	o := moe.SampleOptions{Temperature: 1, MaxNew: cfg.MaxSeq - 4}
	s1, err := mb.Generate(prompts, 2, o, engine.NewRNG(3, engine.StreamSample))
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := mb.Generate(prompts, 2, o, engine.NewRNG(3, engine.StreamSample))
	for i := range s1 {
		if !slices.Equal(s1[i].Tokens, s2[i].Tokens) {
			t.Errorf("sequence %d differs between two runs with one seed", i)
		}
	}
	if gap := LogProbGap(mc, prompts, s1, 1); gap > 1e-4 {
		t.Errorf("log-probs recorded on %s differ from a CPU forward's by up to %g", be.Name(), gap)
	}
}

// LogProbGap is the largest |recorded − recomputed| log-prob of sampled
// tokens, recomputed by a training forward of m at temperature temp.
func LogProbGap(m *moe.Model, prompts [][]int32, seqs []moe.Sequence, temp float64) float64 {
	worst, _ := compareLogProbs(m, prompts, seqs, temp)
	return worst
}

// compareLogProbs recomputes the sampled tokens' log-probs with a training
// forward of m at temperature temp (one row per sequence, prompt and
// response, right-padded to MaxSeq) and returns the largest
// |recorded − recomputed| and how many tokens differ in any bit.
func compareLogProbs(m *moe.Model, prompts [][]int32, seqs []moe.Sequence, temp float64) (worst float64, differ int) {
	T := m.Cfg.MaxSeq
	a := m.NewActs(len(seqs), T)
	defer a.Free(m.Backend())
	ids, targets := make([]int32, len(seqs)*T), make([]int32, len(seqs)*T)
	for s, q := range seqs {
		full := append(slices.Clone(prompts[q.Prompt]), q.Tokens...)
		for i := 0; i+1 < len(full); i++ {
			ids[s*T+i], targets[s*T+i] = full[i], full[i+1]
		}
	}
	logp := m.Forward(a, ids, targets, moe.ForwardOptions{Temperature: temp})
	for s, q := range seqs {
		pl := len(prompts[q.Prompt])
		for j, lp := range q.LogProbs {
			re := logp[s*T+pl-1+j]
			worst = math.Max(worst, math.Abs(float64(lp-re)))
			if math.Float32bits(lp) != math.Float32bits(re) {
				differ++
			}
		}
	}
	return worst, differ
}

// OnPolicy samples from cfg on be, with the MoE layers and with a dense
// FFN, at several batch sizes, prompt lengths and temperatures, and
// recomputes every sampled token's log-prob with a training forward on be:
// each must be the same bits (the rollout-vs-trainer log-prob gap is
// exactly 0, where slime, for one, gates runs on a gap under 1e-6).
func OnPolicy(t *testing.T, be engine.Backend, cfg moe.Config) {
	t.Helper()
	long := make([]int32, cfg.MaxSeq/2)
	for i := range long {
		long[i] = int32((7*i + 3) % cfg.Vocab)
	}
	cases := []struct {
		name    string
		prompts [][]int32
		G       int
		o       moe.SampleOptions
	}{
		{"one sequence", [][]int32{{1}}, 1, moe.SampleOptions{Temperature: 1}},
		{"3 prompts × 3", [][]int32{{1, 5, 6}, long, {1, 9}}, 3, moe.SampleOptions{Temperature: 0.7, TopK: 5}},
		{"greedy", [][]int32{{1, 4}, {2}}, 2, moe.SampleOptions{}},
	}
	for _, dense := range []bool{false, true} {
		c := cfg
		c.DenseFFN = dense
		m, err := moe.New(c, be, 4)
		if err != nil {
			t.Fatal(err)
		}
		for i, tc := range cases {
			tc.o.MaxNew = c.MaxSeq
			seqs, err := m.Generate(tc.prompts, tc.G, tc.o, engine.NewRNG(uint64(i), engine.StreamSample))
			if err != nil {
				t.Fatal(err)
			}
			worst, differ := compareLogProbs(m, tc.prompts, seqs, tc.o.Temperature)
			n := 0
			for _, s := range seqs {
				n += len(s.Tokens)
			}
			if differ > 0 {
				t.Errorf("dense=%v, %s: %d of %d sampled log-probs differ from the trainer's on %s (by up to %.3g)",
					dense, tc.name, differ, n, be.Name(), worst)
			}
		}
		m.FreeSampler()
	}
}
