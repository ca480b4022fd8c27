package cuda

// The GPU speed issue's first item: what a moe-tiny training step and a
// decode token cost the host. Each kernel launch costs about 5 µs from Go
// and each host sync a round trip, so at moe-tiny's sizes they, not the
// arithmetic, bound the step (docs/benchmarks.md, "GPU: launches, GEMMs and
// syncs"). The counts are taken on the fake driver, which sees every call
// the backend makes, and pinned: a change may lower them, never raise them.

import (
	"testing"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
)

// hostCost is what the backend asked of the driver over some work.
type hostCost struct {
	launches int // cuLaunchKernel
	gemms    int // cublasGemmEx and cublasGemmStridedBatchedEx
	syncs    int // cuStreamSynchronize: the host waits for the GPU
	d2h      int // cuMemcpyDtoHAsync (each is followed by a sync)
	h2d      int // cuMemcpyHtoDAsync (from pageable memory: staged before it returns)
	graphs   int // cuGraphLaunch: a recorded step replayed by one call
}

func costNow(f *fakeDriver, fb *fakeBlas) hostCost {
	f.mu.Lock()
	defer f.mu.Unlock()
	return hostCost{launches: len(f.launches), gemms: len(fb.computes), syncs: f.syncs, d2h: f.d2h, h2d: f.h2d,
		graphs: f.graphLaunches}
}

func (c hostCost) minus(d hostCost) hostCost {
	return hostCost{c.launches - d.launches, c.gemms - d.gemms, c.syncs - d.syncs, c.d2h - d.d2h, c.h2d - d.h2d,
		c.graphs - d.graphs}
}

// per divides a cost over n steps.
func (c hostCost) per(n int) hostCost {
	return hostCost{c.launches / n, c.gemms / n, c.syncs / n, c.d2h / n, c.h2d / n, c.graphs / n}
}

// times multiplies a cost by n.
func (c hostCost) times(n int) hostCost {
	return hostCost{c.launches * n, c.gemms * n, c.syncs * n, c.d2h * n, c.h2d * n, c.graphs * n}
}

// exceeds reports whether any count of c is above d's.
func (c hostCost) exceeds(d hostCost) bool {
	return c.launches > d.launches || c.gemms > d.gemms || c.syncs > d.syncs || c.d2h > d.d2h || c.h2d > d.h2d ||
		c.graphs > d.graphs
}

// Pinned counts, moe-tiny (4 layers, 8 experts, top-2), every expert
// receiving tokens, with CUDA graphs and with MOERL_CUDA_GRAPHS=0 (what
// the graphs hold). Lower them when a change lowers the counts.
var pinned = map[string]struct{ trainStep, decodeToken hostCost }{
	"graphs": {
		trainStep:   hostCost{launches: 3, gemms: 0, syncs: 3, d2h: 3, h2d: 5, graphs: 2},
		decodeToken: hostCost{launches: 0, gemms: 0, syncs: 2, d2h: 2, h2d: 5, graphs: 1},
	},
	"no graphs": {
		trainStep:   hostCost{launches: 185, gemms: 47, syncs: 3, d2h: 3, h2d: 5},
		decodeToken: hostCost{launches: 83, gemms: 13, syncs: 2, d2h: 2, h2d: 5},
	},
}

// TestHostCostPinned counts, on the fake driver with cuBLAS, the launches,
// GEMMs and host syncs of one moe-tiny training step and of one decode
// token, with CUDA graphs and without.
//
// The training step is Model.TrainStep's third: its forward and backward
// are graphs recorded by the second, holding the 182 launches and 47 GEMMs
// that MOERL_CUDA_GRAPHS=0 makes one by one (its head is the supervised
// one: log-probs and their gradient in one logprob_fused, no logprob_bwd
// and no memset of the logits' gradient); the gradient norm (2
// launches, and a sync for the clip and the finiteness check) and AdamW
// (1 launch for the whole model, clip scale included) stay outside, and
// the run loop's Sync and weight check add the other 2 syncs. The decode token is the difference between two Generate calls,
// per token: a decode step runs as one graph from its shape's third step
// on (the first runs directly, the second is recorded), so a token costs
// the host one graph launch, its inputs' uploads and the sampled tokens'
// download; the graph holds the 83 launches and 13 GEMMs that
// MOERL_CUDA_GRAPHS=0 makes one by one.
//
// The counts do not depend on the batch or the context, as long as every
// expert receives tokens, so a small batch stands for BENCH.md's 64×256.
func TestHostCostPinned(t *testing.T) {
	for _, mode := range []string{"graphs", "no graphs"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "no graphs" {
				t.Setenv("MOERL_CUDA_GRAPHS", "0")
			}
			step, tok := hostCosts(t)
			want := pinned[mode]
			for _, c := range []struct {
				what      string
				got, want hostCost
			}{{"train step", step, want.trainStep}, {"decode token", tok, want.decodeToken}} {
				if c.got.exceeds(c.want) {
					t.Errorf("a moe-tiny %s costs %+v, more than the pinned %+v", c.what, c.got, c.want)
				} else if c.got != c.want {
					t.Logf("a moe-tiny %s now costs %+v, less than the pinned %+v: lower the pin", c.what, c.got, c.want)
				}
			}
		})
	}
}

// hostCosts measures one moe-tiny training step and one decode token.
func hostCosts(t *testing.T) (step, tok hostCost) {
	b, f, fb := faultBackend(t)
	defer b.Close()
	cfg, _ := moe.Preset("moe-tiny")
	m, err := moe.New(cfg, b, 1)
	if err != nil {
		t.Fatal(err)
	}
	const B, T = 2, 16 // 64 (token, expert) slots over 8 experts
	docs := make([][]int32, B)
	for i := range docs {
		docs[i] = make([]int32, T)
		for j := range docs[i] {
			docs[i][j] = int32((i*T + j) % cfg.Vocab)
		}
	}
	batch := moe.NewBatch(docs, T, 0)
	acts := m.NewActs(B, T)
	defer acts.Free(b)
	tc := moe.DefaultTrain
	tc.Batch, tc.SeqLen, tc.Steps = B, T, 3
	var kernels map[string]int
	for i := range 3 { // the third: the first two run directly and record the forward and backward graphs
		before, l0 := costNow(f, fb), f.launched()
		if _, err := m.TrainStep(acts, batch, tc, i); err != nil {
			t.Fatal(err)
		}
		step, kernels = costNow(f, fb).minus(before), f.launched()
		for k, n := range l0 {
			if kernels[k] -= n; kernels[k] == 0 {
				delete(kernels, k)
			}
		}
	}
	t.Logf("moe-tiny train step, launches by kernel: %v", kernels)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}

	prompts := [][]int32{{1, 5, 6}, {1, 7, 8}, {1, 9}, {1, 10, 11, 12}} // 4 sequences, 8 slots
	gen := func(n int) hostCost {
		before := costNow(f, fb)
		if _, err := m.Generate(prompts, 1, moe.SampleOptions{Temperature: 1, MaxNew: n}, engine.NewRNG(1, engine.StreamSample)); err != nil {
			t.Fatal(err)
		}
		return costNow(f, fb).minus(before)
	}
	gen(2)
	const n1, n2 = 3, 7
	l1 := f.launched()
	c1 := gen(n1)
	l2 := f.launched()
	c2 := gen(n2)
	l3 := f.launched()
	d := c2.minus(c1)
	perToken := map[string]int{}
	for k := range l3 {
		if n := (l3[k] - l2[k]) - (l2[k] - l1[k]); n != 0 {
			perToken[k] = n / (n2 - n1)
		}
	}
	t.Logf("moe-tiny decode token, launches by kernel: %v", perToken)
	tok = d.per(n2 - n1)
	if d != tok.times(n2-n1) {
		t.Errorf("the decode tokens differ in cost: %+v over %d tokens", d, n2-n1)
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	t.Logf("moe-tiny train step: %+v", step)
	t.Logf("moe-tiny decode token: %+v", tok)
	return step, tok
}
