package moe

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/engine/cpu"
)

// gradCase is a loss on the model's outputs whose backward is checked
// against finite differences of its forward.
type gradCase struct {
	name    string
	cfg     Config
	o       ForwardOptions
	entropy bool // the loss has a term Σ d_i·H_i, backpropagated with BackwardEntropy
	ahead   bool // c goes to the forward (ForwardOptions.DLogp), not to the backward
}

// checkModelGradient compares the backward of Σ c_i·logp_i (+ Σ d_i·H_i)
// + AuxLossCoef·AuxLoss + RouterZLossCoef·ZLoss with central differences
// along random directions in parameter space.
func checkModelGradient(t *testing.T, gc gradCase, B, T int, ids, targets []int32) {
	t.Helper()
	cfg := gc.cfg
	be := cpu.New()
	m, err := New(cfg, be, 3)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(2, 2))
	c, d := make([]float32, B*T), make([]float32, B*T)
	for i := range c {
		c[i], d[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
	}
	o := gc.o
	o.Entropy = gc.entropy
	dlogp := c
	if gc.ahead {
		o.DLogp, dlogp = c, nil
	}
	a := m.NewActs(B, T)
	loss := func() float64 {
		logp := m.Forward(a, ids, targets, o)
		var l float64
		for i, v := range logp {
			l += float64(c[i]) * float64(v)
		}
		if gc.entropy {
			for i, h := range a.Entropy() {
				l += float64(d[i]) * float64(h)
			}
		}
		return l + cfg.AuxLossCoef*m.AuxLoss + cfg.RouterZLossCoef*m.ZLoss
	}
	m.ZeroGrad()
	loss()
	if gc.entropy {
		m.BackwardEntropy(a, dlogp, d)
	} else {
		m.Backward(a, dlogp)
	}
	g := m.HostGrads()
	p0 := m.HostParams()
	defer be.Upload(m.Params, p0)
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
			t.Errorf("%s direction %d: analytic %.6g, finite differences %.6g (rel %.2g)", gc.name, dir, an, fd, rel)
		} else {
			t.Logf("%s direction %d: analytic %.6g, finite differences %.6g (rel %.2g)", gc.name, dir, an, fd, rel)
		}
	}
}

// replayOf draws, for every layer and token, k distinct experts of e to
// replay, leaving the tokens in skip to the router (−1).
func replayOf(rng *rand.Rand, layers, n, e, k int, skip ...int) []int32 {
	r := make([]int32, layers*n*k)
	for l := range layers {
		for t := range n {
			row := r[(l*n+t)*k : (l*n+t+1)*k]
			if slices.Contains(skip, t) {
				for j := range row {
					row[j] = -1
				}
				continue
			}
			for j, x := range rng.Perm(e)[:k] {
				row[j] = int32(x)
			}
		}
	}
	return r
}

// TestRoutingGradients: the router z-loss, the entropy term and routing
// replay each backpropagate their exact gradient.
func TestRoutingGradients(t *testing.T) {
	const B, T = 2, 6
	rng := rand.New(rand.NewPCG(1, 1))
	base := tinyConfig(false)
	ids, targets := randomIDs(rng, B*T, base.Vocab), randomIDs(rng, B*T, base.Vocab)
	z := base
	z.RouterZLossCoef = 0.5
	zOnly := z
	zOnly.AuxLossCoef, zOnly.RouterZLossCoef = 0, 5 // the z-loss's term well above the float32 noise of the rest
	dense := tinyConfig(true)
	replay := replayOf(rng, base.Layers, B*T, base.Experts, base.TopK, 4)
	for _, gc := range []gradCase{
		{name: "z-loss", cfg: zOnly},
		{name: "z-loss and load balancing", cfg: z},
		{name: "entropy", cfg: base, entropy: true},
		{name: "entropy at T 0.7", cfg: base, o: ForwardOptions{Temperature: 0.7}, entropy: true},
		{name: "entropy, dense", cfg: dense, entropy: true},
		{name: "routing replay", cfg: base, o: ForwardOptions{Replay: replay}},
		{name: "routing replay, z-loss, entropy at T 1.3", cfg: z, o: ForwardOptions{Replay: replay, Temperature: 1.3}, entropy: true},
		{name: "gradient ahead, z-loss, entropy at T 0.7", cfg: z, o: ForwardOptions{Temperature: 0.7}, entropy: true, ahead: true},
	} {
		t.Run(gc.name, func(t *testing.T) { checkModelGradient(t, gc, B, T, ids, targets) })
	}
}

// TestZLossValue: ZLoss is Σ_layers mean_tokens (log Σ_e exp z_e)² of the
// router logits, and it is 0 (not computed) with its coefficient 0.
func TestZLossValue(t *testing.T) {
	cfg := tinyConfig(false)
	cfg.RouterZLossCoef = 1
	m, _ := New(cfg, cpu.New(), 4)
	rng := rand.New(rand.NewPCG(3, 3))
	const B, T = 2, 5
	ids, targets := randomIDs(rng, B*T, cfg.Vocab), randomIDs(rng, B*T, cfg.Vocab)
	a := m.NewActs(B, T)
	m.Forward(a, ids, targets, ForwardOptions{})
	var want float64
	for l := range cfg.Layers {
		z := make([]float32, B*T*cfg.Experts)
		m.be.Download(z, a.layers[l].rlogits)
		var s float64
		for n := range B * T {
			var sum float64
			for _, v := range z[n*cfg.Experts : (n+1)*cfg.Experts] {
				sum += math.Exp(float64(v))
			}
			s += math.Log(sum) * math.Log(sum)
		}
		want += s / float64(B*T)
	}
	if math.Abs(m.ZLoss-want) > 1e-9*want || !(want > 0) {
		t.Errorf("z-loss %v, want %v", m.ZLoss, want)
	}
	m.Cfg.RouterZLossCoef = 0
	m.Forward(a, ids, targets, ForwardOptions{})
	if m.ZLoss != 0 {
		t.Errorf("z-loss %v with its coefficient 0", m.ZLoss)
	}
	bad := cfg
	bad.RouterZLossCoef = -1
	if bad.Validate() == nil {
		t.Error("a negative router_z_loss_coef was accepted")
	}
}

// TestMeasureRouting on a hand-built forward: the load, its entropy and
// maximum, the margin, and the disagreement with recorded sets (order
// within a set does not count).
func TestMeasureRouting(t *testing.T) {
	cfg := tinyConfig(false) // 3 experts, top 2, 2 layers
	cfg.Layers = 1
	m, _ := New(cfg, cpu.New(), 5)
	a := m.NewActs(1, 2)
	// Two tokens: probabilities (0.5, 0.3, 0.2) and (0.1, 0.6, 0.3); the
	// forward used experts {0, 1} and {1, 2}.
	m.be.Upload(a.layers[0].probs, []float32{0.5, 0.3, 0.2, 0.1, 0.6, 0.3})
	m.be.UploadI32(a.layers[0].experts, []int32{0, 1, 1, 2})
	st, err := m.MeasureRouting(a, []int{0, 1}, [][]int32{{1, 0}, {1, 0}})
	if err != nil {
		t.Fatal(err)
	}
	load := []float64{0.25, 0.5, 0.25}
	var h float64
	for _, q := range load {
		h -= q * math.Log(q)
	}
	want := RoutingStats{Disagreement: 0.5, Compared: 2, LoadEntropy: h, LoadMax: 0.5, Margin: ((0.3 - 0.2) + (0.3 - 0.1)) / 2}
	if st.Compared != want.Compared || math.Abs(st.Disagreement-want.Disagreement) > 1e-12 || math.Abs(st.LoadEntropy-want.LoadEntropy) > 1e-12 ||
		math.Abs(st.LoadMax-want.LoadMax) > 1e-12 || math.Abs(st.Margin-want.Margin) > 1e-7 {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	if _, err := m.MeasureRouting(a, []int{0, 1}, [][]int32{{1}, nil}); err == nil {
		t.Error("a recorded choice of the wrong length was accepted")
	}
	if st, _ := m.MeasureRouting(a, []int{0}, nil); st.Compared != 0 || st.Disagreement != 0 {
		t.Errorf("without records: %+v", st)
	}
}

// recordedReplay lays out the recorded routing of sequences for a forward
// over rows of T tokens (prompt + response, as the trainer lays them out):
// ForwardOptions.Replay, −1 on the padding.
func recordedReplay(cfg Config, seqs []Sequence, T int) []int32 {
	L, K := cfg.Layers, cfg.TopK
	N := len(seqs) * T
	r := make([]int32, L*N*K)
	for i := range r {
		r[i] = -1
	}
	for s, q := range seqs {
		for p := range len(q.Routing) / (L * K) {
			for l := range L {
				copy(r[(l*N+s*T+p)*K:(l*N+s*T+p+1)*K], q.Routing[(p*L+l)*K:(p*L+l+1)*K])
			}
		}
	}
	return r
}

// checkRecordedRouting: recording the routing changes nothing that is
// sampled; the recorded experts are the ones the training forward chooses
// at every position; and a forward replaying them is the same forward,
// bit for bit.
func checkRecordedRouting(t *testing.T, be engine.Backend, c onPolicyCase, m *Model, seqs []Sequence, rng func() *engine.RNG,
	ids, targets []int32, T int, want hidden, logp []float32) {
	t.Helper()
	o := c.o
	o.RecordRouting = true
	rec, err := m.Generate(c.prompts, c.G, o, rng())
	if err != nil {
		t.Fatal(err)
	}
	L, K := c.cfg.Layers, c.cfg.K()
	for s, q := range rec {
		if !slices.Equal(q.Tokens, seqs[s].Tokens) || firstDiff(q.LogProbs, seqs[s].LogProbs) >= 0 {
			t.Fatalf("sequence %d: recording the routing changed what was sampled", s)
		}
		if c.cfg.DenseFFN {
			if q.Routing != nil {
				t.Fatalf("dense model recorded routing")
			}
			continue
		}
		n := len(c.prompts[q.Prompt]) + len(q.Tokens) - 1
		if len(q.Routing) != n*L*K {
			t.Fatalf("sequence %d: %d recorded ids, want %d positions × %d layers × %d", s, len(q.Routing), n, L, K)
		}
		for p := range n {
			for l := range L {
				if got, w := q.Routing[(p*L+l)*K:(p*L+l+1)*K], want.experts[l][(s*T+p)*K:(s*T+p+1)*K]; !slices.Equal(got, w) {
					t.Fatalf("sequence %d position %d layer %d: recorded experts %v, the trainer's %v", s, p, l, got, w)
				}
			}
		}
	}
	if c.cfg.DenseFFN {
		return
	}
	fwd := m.NewActs(len(rec), T)
	defer fwd.Free(be)
	again := m.Forward(fwd, ids, targets, ForwardOptions{Temperature: c.o.Temperature, Replay: recordedReplay(c.cfg, rec, T)})
	if i := firstDiff(again, logp); i >= 0 {
		t.Fatalf("replaying the recorded routing: log-prob %d is %v, %v without replay", i, again[i], logp[i])
	}
	got := download(be, fwd, L)
	for r := range len(rec) * T {
		want.check(t, got, r, r, "replayed forward")
	}
	if t.Failed() {
		t.FailNow()
	}
}

// TestReplayRoutes: a forward with a replay routes every replayed token to
// the experts given (the others as the router chooses), which changes its
// log-probs, and the next forward without one routes by the router again.
func TestReplayRoutes(t *testing.T) {
	cfg := tinyConfig(false)
	m, _ := New(cfg, cpu.New(), 6)
	rng := rand.New(rand.NewPCG(4, 4))
	const B, T = 2, 5
	N, K := B*T, cfg.TopK
	ids, targets := randomIDs(rng, N, cfg.Vocab), randomIDs(rng, N, cfg.Vocab)
	a := m.NewActs(B, T)
	own := slices.Clone(m.Forward(a, ids, targets, ForwardOptions{}))
	ownExperts := download(m.be, a, cfg.Layers).experts
	replay := replayOf(rng, cfg.Layers, N, cfg.Experts, K, 3)
	replayed := slices.Clone(m.Forward(a, ids, targets, ForwardOptions{Replay: replay}))
	got := download(m.be, a, cfg.Layers).experts
	for l := range cfg.Layers {
		for n := range N {
			want := replay[(l*N+n)*K : (l*N+n+1)*K]
			if n == 3 {
				want = ownExperts[l][n*K : (n+1)*K]
			}
			if !slices.Equal(got[l][n*K:(n+1)*K], want) {
				t.Errorf("layer %d token %d: experts %v, want %v", l, n, got[l][n*K:(n+1)*K], want)
			}
		}
	}
	if firstDiff(own, replayed) < 0 {
		t.Error("replaying other experts left every log-prob as it was")
	}
	if again := m.Forward(a, ids, targets, ForwardOptions{}); firstDiff(again, own) >= 0 {
		t.Error("a forward after a replayed one still replays")
	}
}
