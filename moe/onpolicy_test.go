package moe

import (
	"fmt"
	"math"
	"reflect"
	"runtime"
	"slices"
	"testing"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/engine/cpu"
	"github.com/moerl/moerl/engine/cuda"
)

// onPolicyCase is one sampling run whose every token is recomputed.
type onPolicyCase struct {
	name    string
	cfg     Config
	prompts [][]int32
	G       int
	o       SampleOptions
}

func onPolicyCases() []onPolicyCase {
	base := Config{Vocab: 40, DModel: 16, Layers: 2, Heads: 2, Experts: 4, TopK: 2, ExpertHidden: 12,
		MaxSeq: 24, RopeTheta: 10000, NormEps: 1e-6, InitStd: 0.3}
	dense := base
	dense.DenseFFN = true
	// Past 256 keys a query's attention sums its values in two blocks.
	long := base
	long.MaxSeq = 300
	prompt := func(n int) []int32 {
		p := make([]int32, n)
		for i := range p {
			p[i] = int32((5*i + 1) % base.Vocab)
		}
		return p
	}
	three := [][]int32{prompt(3), prompt(1), prompt(9)}
	return []onPolicyCase{
		{"moe/one sequence", base, [][]int32{prompt(2)}, 1, SampleOptions{Temperature: 1, MaxNew: 20}},
		{"moe/3 prompts × 4", base, three, 4, SampleOptions{Temperature: 1, MaxNew: 14, Stop: []int32{2}}},
		{"moe/T 0.7 top-k top-p", base, three, 2, SampleOptions{Temperature: 0.7, TopK: 6, TopP: 0.9, MaxNew: 14}},
		{"moe/greedy", base, three, 1, SampleOptions{MaxNew: 14}},
		{"moe/T 1.5, 8 prompts", base, [][]int32{prompt(1), prompt(2), prompt(3), prompt(4), prompt(5), prompt(6), prompt(7), prompt(8)}, 2,
			SampleOptions{Temperature: 1.5, MaxNewPer: []int{3, 9, 1, 14, 5, 5, 12, 2}}},
		{"dense/3 prompts × 3", dense, three, 3, SampleOptions{Temperature: 1, MaxNew: 14}},
		{"dense/T 0.5", dense, three, 2, SampleOptions{Temperature: 0.5, MaxNew: 14}},
		// Sequences that stop early are compacted out of the decode batch
		// (several times here); the rest must not notice.
		{"moe/33 sequences, early stops", base, three, 11, SampleOptions{Temperature: 1, MaxNew: 20, Stop: []int32{2, 3, 5, 7}}},
		{"moe/past 256 keys", long, [][]int32{prompt(262), prompt(40)}, 2, SampleOptions{Temperature: 1, MaxNew: 12}},
	}
}

// TestOnPolicyExact: what the sampler computes is bitwise what a training
// forward on prompt + response computes — every layer's hidden state,
// every router choice and the recorded log-prob of every token — over
// batch sizes, prompt lengths, temperatures, MoE and dense layers, at any
// GOMAXPROCS. The rollout-vs-trainer log-prob gap is exactly 0.
func TestOnPolicyExact(t *testing.T) {
	for _, c := range onPolicyCases() {
		t.Run(c.name, func(t *testing.T) { checkOnPolicy(t, cpu.New(), c) })
	}
}

// TestCUDAOnPolicyExact is TestOnPolicyExact on the GPU, with cuBLAS (TF32
// off) and with the fallback GEMM kernel.
func TestCUDAOnPolicyExact(t *testing.T) {
	// cuBLAS in float32, and our own kernels (MOERL_CUBLAS=off) in float32,
	// TF32 and bf16: whether cuBLAS picks the same summation order for a
	// decode step's few rows as for a training forward's many is for the
	// card to say; our kernels sum each output in an order of its own row.
	for _, mode := range []string{"cublas", "fallback", "fallback-tf32", "fallback-bf16"} {
		t.Run(mode, func(t *testing.T) {
			if mode != "cublas" {
				t.Setenv("MOERL_CUBLAS", "off")
			}
			be, err := cuda.New()
			if err != nil {
				t.Skip(err.Error()) // "CUDA unavailable: ..."
			}
			defer be.Close()
			p := map[string]cuda.GEMMPrecision{"fallback-tf32": cuda.GEMMTF32, "fallback-bf16": cuda.GEMMBF16}[mode]
			if err := be.SetGEMMPrecision(p); err != nil {
				t.Fatal(err)
			}
			for _, c := range onPolicyCases() {
				t.Run(c.name, func(t *testing.T) {
					checkOnPolicy(t, be, c)
					if err := be.Sync(); err != nil {
						t.Fatal(err)
					}
				})
			}
		})
	}
}

func checkOnPolicy(t *testing.T, be engine.Backend, c onPolicyCase) {
	m, err := New(c.cfg, be, 7)
	if err != nil {
		t.Fatal(err)
	}
	defer m.FreeSampler()
	L := c.cfg.Layers
	rng := func() *engine.RNG { return engine.NewRNG(5, engine.StreamSample) }
	seqs, err := m.Generate(c.prompts, c.G, c.o, rng())
	if err != nil {
		t.Fatal(err)
	}
	S, T := len(seqs), 0
	for _, s := range seqs {
		T = max(T, len(c.prompts[s.Prompt])+len(s.Tokens))
	}
	if be.Name() == "cpu" {
		// The same tokens and bits with other thread counts.
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
		for _, procs := range []int{1, 3} {
			runtime.GOMAXPROCS(procs)
			again, err := m.Generate(c.prompts, c.G, c.o, rng())
			if err != nil {
				t.Fatal(err)
			}
			for s := range seqs {
				if !slices.Equal(again[s].Tokens, seqs[s].Tokens) || firstDiff(again[s].LogProbs, seqs[s].LogProbs) >= 0 {
					t.Fatalf("GOMAXPROCS=%d: sequence %d differs", procs, s)
				}
			}
		}
	}

	// The trainer's view: every sequence, prompt and response, one row.
	ids, targets := make([]int32, S*T), make([]int32, S*T)
	for s, q := range seqs {
		full := append(slices.Clone(c.prompts[q.Prompt]), q.Tokens...)
		for i := 0; i+1 < len(full); i++ {
			ids[s*T+i], targets[s*T+i] = full[i], full[i+1]
		}
	}
	fwd := m.NewActs(S, T)
	defer fwd.Free(be)
	logp := m.Forward(fwd, ids, targets, ForwardOptions{Temperature: c.o.Temperature})
	n, differ, gap := 0, 0, 0.0
	for s, q := range seqs {
		pl := len(c.prompts[q.Prompt])
		for j, lp := range q.LogProbs {
			n++
			if re := logp[s*T+pl-1+j]; math.Float32bits(lp) != math.Float32bits(re) {
				if differ++; differ <= 3 {
					t.Errorf("sequence %d token %d: sampled with log-prob %v, the trainer computes %v", s, j, lp, re)
				}
				gap = math.Max(gap, math.Abs(float64(lp-re)))
			}
		}
	}
	if differ > 0 {
		t.Fatalf("%d of %d log-probs differ, by up to %.3g", differ, n, gap)
	}
	t.Logf("%d sequences, %d tokens: every log-prob equal", S, n)
	want := download(be, fwd, L)
	logp = slices.Clone(logp)
	checkRecordedRouting(t, be, c, m, seqs, rng, ids, targets, T, want, logp)

	// The sampler's view, replayed with the sampled tokens through the
	// pieces Generate is made of: the prefill, then one decode step per token.
	sh, _, err := m.plan(c.prompts, c.G, c.o)
	if err != nil {
		t.Fatal(err)
	}
	w := m.sampler(sh)
	m.prefill(w, c.prompts, func(p0, n int, a *Acts) {
		pre := download(be, a, L)
		for s := p0 * c.G; s < (p0+n)*c.G; s++ {
			p := s / c.G
			for i := range c.prompts[p] {
				want.check(t, pre, s*T+i, (p-p0)*sh.Tp+i, fmt.Sprintf("sequence %d, prompt position %d", s, i))
			}
		}
	})
	tok := make([]int32, S)
	for j := 0; ; j++ {
		more := false
		for s, q := range seqs {
			tok[s] = 0 // a finished sequence's row is computed and ignored
			if j+1 < len(q.Tokens) {
				tok[s], more = q.Tokens[j], true
			}
		}
		if !more {
			break
		}
		m.decode(w, tok)
		dec := download(be, w.dec, L)
		for s, q := range seqs {
			if j+1 < len(q.Tokens) {
				at := len(c.prompts[q.Prompt]) + j
				want.check(t, dec, s*T+at, s, fmt.Sprintf("sequence %d, decode step %d (position %d)", s, j, at))
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}
}

// hidden is a workspace's hidden states (x[0..L]) and router choices,
// downloaded.
type hidden struct {
	x       [][]float32
	experts [][]int32
	d, k    int
	dense   bool
}

func download(be engine.Backend, a *Acts, L int) hidden {
	c := a.cfg
	h := hidden{d: c.DModel, k: c.K(), dense: c.DenseFFN}
	for l := range L + 1 {
		x := make([]float32, a.N*c.DModel)
		be.Download(x, a.x[l])
		h.x = append(h.x, x)
	}
	for l := range L {
		e := make([]int32, a.N*c.K())
		be.DownloadI32(e, a.layers[l].experts)
		h.experts = append(h.experts, e)
	}
	return h
}

// check compares row r of h with row g of got, naming what differs.
func (h hidden) check(t *testing.T, got hidden, r, g int, where string) {
	t.Helper()
	for l := range h.x {
		if i := firstDiff(got.x[l][g*h.d:(g+1)*h.d], h.x[l][r*h.d:(r+1)*h.d]); i >= 0 {
			t.Errorf("%s: hidden state after layer %d differs at element %d: %v, trainer %v", where, l, i, got.x[l][g*h.d+i], h.x[l][r*h.d+i])
			return
		}
	}
	if h.dense {
		return
	}
	for l := range h.experts {
		if !slices.Equal(got.experts[l][g*h.k:(g+1)*h.k], h.experts[l][r*h.k:(r+1)*h.k]) {
			t.Errorf("%s: layer %d routes to experts %v, trainer %v", where, l, got.experts[l][g*h.k:(g+1)*h.k], h.experts[l][r*h.k:(r+1)*h.k])
		}
	}
}

// firstDiff is the first index where a and b hold different float32 bit
// patterns, or -1.
func firstDiff(a, b []float32) int {
	for i := range min(len(a), len(b)) {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

// TestBlockStepsSameSamples: decoding in blocks of several steps per host
// visit gives every sequence the tokens, log-probs, stop flags and router
// choices of one step at a time, and leaves the sampling stream where one
// step at a time leaves it — across compactions (33 sequences stopping
// early), the end of every sequence inside a block, and per-prompt caps.
func TestBlockStepsSameSamples(t *testing.T) {
	cases := onPolicyCases()
	// Every sequence ends on a stop token, the last one inside a block.
	allStop := cases[1]
	allStop.name, allStop.o.MaxNew, allStop.o.Stop = "moe/every sequence stops", 40, []int32{0, 1, 2, 3, 4, 5, 6, 7}
	for _, c := range append(cases, allStop) {
		sameSamples(t, c, "BlockSteps", []int{1, 2, 3, 8, 64}, func(o *SampleOptions, k int) { o.BlockSteps = k })
	}
}

// TestPrefillChunksSameSamples: prefilling the prompts in chunks, down to
// one prompt a chunk, gives the samples (router choices included) and the
// end state of the sampling stream of one prefill pass over them all.
func TestPrefillChunksSameSamples(t *testing.T) {
	for _, c := range onPolicyCases() {
		sameSamples(t, c, "PrefillTokens", []int{1 << 20, 1, 2 * c.cfg.MaxSeq, 0}, func(o *SampleOptions, n int) {
			o.PrefillTokens, o.RecordRouting = n, !c.cfg.DenseFFN
		})
	}
}

// sameSamples samples case c once per value of a setting, in a subtest of
// c's name, and fails where the samples or the sampling stream's end state
// differ from the first value's.
func sameSamples(t *testing.T, c onPolicyCase, setting string, values []int, set func(*SampleOptions, int)) {
	t.Run(c.name, func(t *testing.T) {
		m, err := New(c.cfg, cpu.New(), 7)
		if err != nil {
			t.Fatal(err)
		}
		defer m.FreeSampler()
		var want []Sequence
		var wantNext uint64
		for i, v := range values {
			o := c.o
			set(&o, v)
			rng := engine.NewRNG(5, engine.StreamSample)
			got, err := m.Generate(c.prompts, c.G, o, rng)
			if err != nil {
				t.Fatal(err)
			}
			next := rng.Uint64()
			if i == 0 {
				want, wantNext = got, next
				continue
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s %d: the samples differ from %s %d's", setting, v, setting, values[0])
			}
			if next != wantNext {
				t.Errorf("%s %d: the sampling stream is left elsewhere than %s %d leaves it", setting, v, setting, values[0])
			}
		}
	})
}
