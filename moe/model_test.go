package moe

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/engine/cpu"
	"github.com/moerl/moerl/moe/tokenizer"
)

func tinyConfig(dense bool) Config {
	return Config{Vocab: 16, DModel: 16, Layers: 2, Heads: 2, Experts: 3, TopK: 2, ExpertHidden: 12,
		DenseFFN: dense, MaxSeq: 8, RopeTheta: 10000, NormEps: 1e-6, InitStd: 0.3, AuxLossCoef: 0.05}
}

func randomIDs(rng *rand.Rand, n, vocab int) []int32 {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(rng.IntN(vocab))
	}
	return ids
}

// TestModelGradient checks the whole model's backward against central
// finite differences of its forward along random directions in parameter
// space: the loss is Σ c_i·logp_i plus the load-balancing loss.
func TestModelGradient(t *testing.T) {
	critic := tinyConfig(false)
	critic.ValueHead = true
	for _, cfg := range []Config{tinyConfig(false), tinyConfig(true), critic} {
		be := cpu.New()
		m, err := New(cfg, be, 3)
		if err != nil {
			t.Fatal(err)
		}
		B, T := 2, 6
		rng := rand.New(rand.NewPCG(1, 1))
		ids, targets := randomIDs(rng, B*T, cfg.Vocab), randomIDs(rng, B*T, cfg.Vocab)
		c := make([]float32, B*T)
		for i := range c {
			c[i] = float32(rng.NormFloat64())
		}
		a := m.NewActs(B, T)
		loss := func() float64 {
			logp := m.Forward(a, ids, targets, ForwardOptions{})
			var l float64
			for i, v := range logp {
				l += float64(c[i]) * float64(v)
			}
			return l + cfg.AuxLossCoef*m.AuxLoss
		}
		m.ZeroGrad()
		loss()
		m.Backward(a, c)
		g := m.HostGrads()
		p0 := m.HostParams()
		for dir := range 3 {
			v := make([]float32, len(p0))
			for i := range v {
				v[i] = float32(rng.NormFloat64())
			}
			const eps = 1e-3
			at := func(s float32) float64 {
				p := slices.Clone(p0)
				for i := range p {
					p[i] += s * v[i]
				}
				be.Upload(m.Params, p)
				return loss()
			}
			fd := (at(eps) - at(-eps)) / (2 * eps)
			var an float64
			for i := range g {
				an += float64(g[i]) * float64(v[i])
			}
			if rel := math.Abs(fd-an) / math.Max(math.Abs(fd), 1e-3); rel > 2e-2 || math.IsNaN(an) {
				t.Errorf("dense=%v value=%v direction %d: analytic %.6g, finite differences %.6g (rel %.2g)", cfg.DenseFFN, cfg.ValueHead, dir, an, fd, rel)
			}
		}
		be.Upload(m.Params, p0)
	}
}

// TestGenerateOptions: a greedy run is reproducible, stop tokens end a
// sequence, and length limits hold per prompt.
func TestGenerateOptions(t *testing.T) {
	cfg := tinyConfig(false)
	cfg.MaxSeq = 16
	m, _ := New(cfg, cpu.New(), 2)
	prompts := [][]int32{{1, 3}, {1, 4, 5}}
	o := SampleOptions{Temperature: 1, MaxNewPer: []int{3, 6}}
	a, err := m.Generate(prompts, 2, o, engine.NewRNG(1, engine.StreamSample))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := m.Generate(prompts, 2, o, engine.NewRNG(1, engine.StreamSample))
	for i := range a {
		if !slices.Equal(a[i].Tokens, b[i].Tokens) {
			t.Errorf("sequence %d differs between runs with one seed: %v vs %v", i, a[i].Tokens, b[i].Tokens)
		}
		if want := o.MaxNewPer[a[i].Prompt]; len(a[i].Tokens) != want || !a[i].Truncated {
			t.Errorf("sequence %d: %d tokens (truncated %v), want %d and truncated", i, len(a[i].Tokens), a[i].Truncated, want)
		}
	}
	// Stopping on the token greedy decoding emits first ends every sequence there.
	g, _ := m.Generate(prompts, 1, SampleOptions{MaxNew: 5}, engine.NewRNG(1, engine.StreamSample))
	stop := []int32{g[0].Tokens[0]}
	s, _ := m.Generate(prompts[:1], 1, SampleOptions{MaxNew: 5, Stop: stop}, engine.NewRNG(1, engine.StreamSample))
	if len(s[0].Tokens) != 1 || !s[0].Stopped {
		t.Errorf("stop token: got %v (stopped %v), want one token and stopped", s[0].Tokens, s[0].Stopped)
	}
	if _, err := m.Generate([][]int32{{1, 99}}, 1, o, engine.NewRNG(1, 1)); err == nil {
		t.Error("a prompt token outside the vocabulary was accepted")
	}
}

// TestTrainCopy trains moe-micro on the toy copy corpus with a fixed seed
// to a stated loss.
func TestTrainCopy(t *testing.T) {
	if testing.Short() {
		t.Skip("trains for a few seconds")
	}
	cfg, _ := Preset("moe-micro")
	cfg.MaxSeq = 32
	tok := tokenizer.Default()
	docs, _ := Synthetic("copy", 2000, 1)
	corpus, err := EncodeCorpus(docs, tok)
	if err != nil {
		t.Fatal(err)
	}
	tc := DefaultTrain
	tc.Steps, tc.Batch, tc.SeqLen, tc.Warmup, tc.LR = 200, 32, 28, 20, 3e-3
	m, _ := New(cfg, cpu.New(), 1)
	a := m.NewActs(tc.Batch, tc.SeqLen)
	rng := engine.NewRNG(tc.Seed, engine.StreamData)
	var first, last float64
	for step := range tc.Steps {
		st, err := m.TrainStep(a, corpus.Batch(rng, tc.Batch, tc.SeqLen), tc, step)
		if err != nil {
			t.Fatal(err)
		}
		if step == 0 {
			first = st.Loss
		}
		last = st.Loss
	}
	// A line is "<bos>w=w<eos>": the word is random over 8 letters
	// (ln 8 ≈ 2.08 nats each) and its copy is determined, so an ideal model
	// scores about 1.0 nats/token and a unigram model about 2.2. At 200
	// steps (seed 1) the model is at 1.52, on its way down.
	const want = 1.6
	t.Logf("loss %.3f → %.3f", first, last)
	if last > want {
		t.Errorf("after %d steps loss is %.3f, want ≤ %.2f (started at %.3f)", tc.Steps, last, want, first)
	}
}

// TestResumeBitwise: a run checkpointed and resumed ends with exactly the
// weights of one that never stopped.
func TestResumeBitwise(t *testing.T) {
	cfg := tinyConfig(false)
	tok := tokenizer.Default()
	cfg.Vocab = tok.VocabSize()
	docs, _ := Synthetic("copy", 200, 2)
	corpus, _ := EncodeCorpus(docs, tok)
	tc := DefaultTrain
	tc.Steps, tc.Batch, tc.SeqLen, tc.Warmup = 8, 4, cfg.MaxSeq, 2
	train := func(m *Model, rng *engine.RNG, from, to int) {
		a := m.NewActs(tc.Batch, tc.SeqLen)
		for s := from; s < to; s++ {
			if _, err := m.TrainStep(a, corpus.Batch(rng, tc.Batch, tc.SeqLen), tc, s); err != nil {
				t.Fatal(err)
			}
		}
	}
	be := cpu.New()
	whole, _ := New(cfg, be, 7)
	train(whole, engine.NewRNG(tc.Seed, engine.StreamData), 0, tc.Steps)

	first, _ := New(cfg, be, 7)
	rng := engine.NewRNG(tc.Seed, engine.StreamData)
	train(first, rng, 0, 3)
	path := filepath.Join(t.TempDir(), "run.ck")
	st := RunState{Stage: "pretrain", Step: 3, RNG: map[string][]byte{"data": rng.State()}}
	if err := first.SaveCheckpoint(path, tok, st, true); err != nil {
		t.Fatal(err)
	}
	resumed, _, st2, err := LoadCheckpoint(path, be)
	if err != nil {
		t.Fatal(err)
	}
	rng2 := engine.NewRNG(0, 0)
	if err := rng2.SetState(st2.RNG["data"]); err != nil {
		t.Fatal(err)
	}
	train(resumed, rng2, st2.Step, tc.Steps)
	a, b := whole.HostParams(), resumed.HostParams()
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("parameter %d differs after resume: %v vs %v", i, a[i], b[i])
		}
	}
	if whole.OptStep != resumed.OptStep {
		t.Errorf("optimizer steps %d vs %d", whole.OptStep, resumed.OptStep)
	}
}

// TestActsListed: every tensor field of a workspace is on its one list of
// activations (so NewActs allocates it and Free frees it), exactly once,
// and a forward-only workspace leaves exactly the backward's scratch out.
func TestActsListed(t *testing.T) {
	m, err := New(tinyConfig(false), cpu.New(), 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, backward := range []bool{true, false} {
		a := m.newActs(2, 3, backward)
		listed := map[uintptr]int{} // by address: unexported fields cannot be read as values
		for _, x := range a.tensors() {
			listed[reflect.ValueOf(x).Pointer()]++
		}
		tensorType := reflect.TypeFor[*engine.Tensor]()
		var check func(v reflect.Value, path string)
		check = func(v reflect.Value, path string) {
			switch {
			case v.Type() == tensorType:
				isNil := v.IsNil()
				scratch := strings.HasPrefix(path, "Acts.d")
				// Views of a listed tensor (split): q, k, v of qkv, and
				// their gradients of dqkv.
				name := path[strings.LastIndex(path, ".")+1:]
				view := name == "q" || name == "k" || name == "v" || path == "Acts.dqp" || path == "Acts.dkp" || path == "Acts.dv"
				// A forward-only MoE workspace keeps no gate and up values:
				// only the backward reads them.
				gateUp := strings.HasPrefix(path, "Acts.layers") && (name == "g" || name == "u") && !backward
				switch {
				case gateUp && !isNil:
					t.Errorf("forward-only workspace allocates %s", path)
				case gateUp:
				case path == "Acts.w16": // the model's bf16 weights (Model.w16), which every workspace shares
				case view && isNil && (backward || !scratch):
					t.Errorf("backward=%v: the view %s is not set", backward, path)
				case view:
				case isNil && (backward || !scratch):
					t.Errorf("backward=%v: %s is not allocated", backward, path)
				case !isNil && !backward && scratch:
					t.Errorf("forward-only workspace allocates %s", path)
				case !isNil && listed[v.Pointer()] != 1:
					t.Errorf("backward=%v: %s is listed %d times", backward, path, listed[v.Pointer()])
				}
			case v.Kind() == reflect.Struct:
				for i := range v.NumField() {
					check(v.Field(i), path+"."+v.Type().Field(i).Name)
				}
			case v.Kind() == reflect.Slice:
				for i := range v.Len() {
					check(v.Index(i), fmt.Sprintf("%s[%d]", path, i))
				}
			}
		}
		check(reflect.ValueOf(a).Elem(), "Acts")
		a.Free(m.be)
	}
}

// TestGenerateReusesWorkspace: Generate keeps its workspace between calls,
// grows it for a larger call and reuses it for a smaller one, and every
// call gives the bits a model that never sampled before would give.
func TestGenerateReusesWorkspace(t *testing.T) {
	cfg := tinyConfig(false)
	cfg.MaxSeq = 16
	be := cpu.New()
	m, _ := New(cfg, be, 2)
	small, large := [][]int32{{1, 3}}, [][]int32{{1, 4, 5, 6}, {2}, {7, 7}}
	calls := []struct {
		prompts [][]int32
		G       int
	}{{small, 2}, {large, 3}, {small, 1}, {large, 3}}
	o := SampleOptions{Temperature: 1, MaxNew: 6}
	var pre *Acts
	for i, c := range calls {
		got, err := m.Generate(c.prompts, c.G, o, engine.NewRNG(uint64(i), engine.StreamSample))
		if err != nil {
			t.Fatal(err)
		}
		fresh, _ := New(cfg, be, 2)
		want, _ := fresh.Generate(c.prompts, c.G, o, engine.NewRNG(uint64(i), engine.StreamSample))
		for s := range want {
			if !slices.Equal(got[s].Tokens, want[s].Tokens) || !slices.Equal(got[s].LogProbs, want[s].LogProbs) {
				t.Errorf("call %d, sequence %d: %v, a fresh model samples %v", i, s, got[s].Tokens, want[s].Tokens)
			}
		}
		if i >= 2 && m.gen.pre != pre {
			t.Errorf("call %d reallocated the prefill workspace", i)
		}
		pre = m.gen.pre
	}
	m.FreeSampler()
	if m.gen != nil {
		t.Error("FreeSampler kept the workspace")
	}
}

// TestFrozenModel: a frozen model (Freeze, or LoadFrozen of a checkpoint
// with moments) computes the log-probs and samples of the trainable one
// bit for bit, holds no gradients or moments, and refuses to train or to
// save an optimizer it does not have, naming the op.
func TestFrozenModel(t *testing.T) {
	cfg := tinyConfig(false)
	tok := tokenizer.Default()
	cfg.Vocab = tok.VocabSize()
	be := cpu.New()
	m, _ := New(cfg, be, 5)
	docs := [][]int32{{1, 2, 3, 4, 5, 6, 7, 8, 9}, {9, 8, 7, 6, 5, 4, 3, 2, 1}}
	b := NewBatch(docs, cfg.MaxSeq, 0)
	tc := DefaultTrain
	tc.Batch, tc.SeqLen, tc.Steps = 2, cfg.MaxSeq, 2
	a := m.NewActs(2, cfg.MaxSeq)
	if _, err := m.TrainStep(a, b, tc, 0); err != nil { // moments worth saving
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "m.ck")
	if err := m.SaveCheckpoint(path, tok, RunState{Stage: "pretrain", Step: 1}, true); err != nil {
		t.Fatal(err)
	}
	run := func(m *Model) ([]float32, []Sequence) {
		acts := m.NewActs(2, cfg.MaxSeq)
		logp := slices.Clone(m.Forward(acts, b.IDs, b.Targets, ForwardOptions{}))
		seqs, err := m.Generate([][]int32{{1, 2}, {3}}, 2, SampleOptions{Temperature: 1, MaxNew: 4}, engine.NewRNG(1, engine.StreamSample))
		if err != nil {
			t.Fatal(err)
		}
		return logp, seqs
	}
	wantLogp, wantSeqs := run(m)
	loaded, _, _, err := LoadFrozen(path, be)
	if err != nil {
		t.Fatal(err)
	}
	m.Freeze()
	for name, f := range map[string]*Model{"Freeze": m, "LoadFrozen": loaded} {
		if !f.Frozen() || f.Grads != nil || f.M != nil || f.V != nil {
			t.Errorf("%s: frozen %v, grads %v, moments %v %v", name, f.Frozen(), f.Grads, f.M, f.V)
		}
		logp, seqs := run(f)
		if !slices.Equal(logp, wantLogp) || !reflect.DeepEqual(seqs, wantSeqs) {
			t.Errorf("%s: the frozen model computes other log-probs or samples", name)
		}
		for _, tc2 := range []struct {
			op   string
			call func()
		}{
			{"Backward", func() {
				acts := f.NewActs(2, cfg.MaxSeq)
				f.Forward(acts, b.IDs, b.Targets, ForwardOptions{})
				f.Backward(acts, make([]float32, acts.N))
			}},
			{"Step", func() { f.Step(1e-3, DefaultOpt) }},
			{"ResetOptimizer", f.ResetOptimizer},
			{"SaveCheckpoint with the optimizer", func() { f.SaveCheckpoint(path+".2", tok, RunState{}, true) }},
		} {
			func() {
				defer func() {
					if p := recover(); p == nil || !strings.Contains(fmt.Sprint(p), tc2.op+" on a frozen model") {
						t.Errorf("%s: %s panicked with %v", name, tc2.op, p)
					}
				}()
				tc2.call()
			}()
		}
		if err := f.SaveCheckpoint(path+".w", tok, RunState{Stage: "pretrain"}, false); err != nil {
			t.Errorf("%s: saving the weights alone: %v", name, err)
		}
	}
}

// TestSamplerWorkspaceShared: a forward-only workspace lays its later
// layers' activations over the first layer's, except what is read after
// the forward; a training workspace keeps every layer's.
func TestSamplerWorkspaceShared(t *testing.T) {
	cfg := tinyConfig(false)
	cfg.Layers = 3
	m, _ := New(cfg, cpu.New(), 1)
	for _, backward := range []bool{false, true} {
		a := m.newActs(2, 4, backward)
		l0 := &a.layers[0]
		for _, l := range []int{1, 2} {
			s := &a.layers[l]
			for _, c := range []struct {
				name       string
				got, first *engine.Tensor
				shared     bool
			}{
				{"h1", s.h1, l0.h1, true}, {"att", s.att, l0.att, true}, {"y", s.y, l0.y, true}, {"s", s.s, l0.s, true},
				{"offsets", s.offsets, l0.offsets, true}, {"qkv", s.qkv, l0.qkv, true}, {"kr", s.kr, l0.kr, true},
				{"experts", s.experts, l0.experts, false}, {"replay", s.replay, l0.replay, false},
			} {
				if want := c.shared && !backward; (c.got == c.first) != want {
					t.Errorf("backward=%v: layer %d's %s shared with layer 0's: %v, want %v", backward, l, c.name, c.got == c.first, want)
				}
			}
			if s.v.F == nil || (&s.v.F[0] == &l0.v.F[0]) != !backward {
				t.Errorf("backward=%v: layer %d's v is not a view of its qkv", backward, l)
			}
		}
		if a.x[1] == a.x[2] {
			t.Errorf("backward=%v: the layers' hidden states share a tensor", backward)
		}
	}
}
