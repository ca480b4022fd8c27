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
	d2d      int // cuMemcpyDtoDAsync (Copy): a host call like a launch, and a pass over memory
	memsets  int // cuMemsetD32Async, cuMemsetD16Async (Zero)
}

func costNow(f *fakeDriver, fb *fakeBlas) hostCost {
	f.mu.Lock()
	defer f.mu.Unlock()
	return hostCost{launches: len(f.launches), gemms: len(fb.computes), syncs: f.syncs, d2h: f.d2h, h2d: f.h2d,
		graphs: f.graphLaunches, d2d: f.d2d, memsets: f.memsets}
}

func (c hostCost) minus(d hostCost) hostCost {
	return hostCost{c.launches - d.launches, c.gemms - d.gemms, c.syncs - d.syncs, c.d2h - d.d2h, c.h2d - d.h2d,
		c.graphs - d.graphs, c.d2d - d.d2d, c.memsets - d.memsets}
}

// exceeds reports whether any count of c is above d's.
func (c hostCost) exceeds(d hostCost) bool {
	return c.launches > d.launches || c.gemms > d.gemms || c.syncs > d.syncs || c.d2h > d.d2h || c.h2d > d.h2d ||
		c.graphs > d.graphs || c.d2d > d.d2d || c.memsets > d.memsets
}

// Pinned counts, moe-tiny (4 layers, 8 experts, top-2), every expert
// receiving tokens, with CUDA graphs and with MOERL_CUDA_GRAPHS=0 (what
// the graphs hold). Lower them when a change lowers the counts.
var pinned = map[string]struct{ trainStep, decodeBlock hostCost }{
	"graphs": {
		trainStep:   hostCost{launches: 3, gemms: 0, syncs: 3, d2h: 3, h2d: 5, graphs: 2, memsets: 1},
		decodeBlock: hostCost{launches: 0, gemms: 0, syncs: 2, d2h: 2, h2d: 5, graphs: 1},
	},
	"no graphs": {
		trainStep:   hostCost{launches: 181, gemms: 47, syncs: 3, d2h: 3, h2d: 5, d2d: 4, memsets: 38},
		decodeBlock: hostCost{launches: 8 * 79, gemms: 8 * 13, syncs: 2, d2h: 2, h2d: 5, d2d: 8 * 4},
	},
}

// TestHostCostPinned counts, on the fake driver with cuBLAS, the launches,
// GEMMs, device copies and memsets, and host syncs of one moe-tiny training
// step and of one block of moe.DefaultBlockSteps (8) decode tokens, with
// CUDA graphs and without.
//
// The training step is Model.TrainStep's third: its forward and backward
// are graphs recorded by the second, holding the 178 launches, 47 GEMMs, 4
// copies and 37 memsets that MOERL_CUDA_GRAPHS=0 makes one by one (its
// head is the supervised one: log-probs and their gradient in one
// logprob_fused, no logprob_bwd and no memset of the logits' gradient);
// zeroing the gradients (a memset), their norm (2 launches) and AdamW (1
// launch for the whole model, clip scale included) stay outside. The 3
// syncs are the 3 copies back: the log-probs (the loss), the experts'
// load (the load-balancing loss) and the gradient norm (the clip and the
// finiteness check).
//
// Generate runs its decode steps 8 to a block, laid out by the host ahead
// (positions, cache slots and lengths, uniforms) and recorded as one
// graph, so 8 tokens cost the host one graph launch, those inputs'
// uploads and one download each of the tokens and their log-probs; the
// graph holds the 8 × 79 launches, 8 × 13 GEMMs and 8 × 4 copies that
// MOERL_CUDA_GRAPHS=0 makes one by one (the steps read and write the
// block's buffers in place, without copies of their own).
//
// The counts do not depend on the batch or the context, as long as every
// expert receives tokens, so a small batch stands for BENCH.md's 64×256.
func TestHostCostPinned(t *testing.T) {
	for _, mode := range []string{"graphs", "no graphs"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "no graphs" {
				t.Setenv("MOERL_CUDA_GRAPHS", "0")
			}
			step, blk := hostCosts(t)
			want := pinned[mode]
			for _, c := range []struct {
				what      string
				got, want hostCost
			}{{"train step", step, want.trainStep}, {"block of 8 decode tokens", blk, want.decodeBlock}} {
				if c.got.exceeds(c.want) {
					t.Errorf("a moe-tiny %s costs %+v, more than the pinned %+v", c.what, c.got, c.want)
				} else if c.got != c.want {
					t.Logf("a moe-tiny %s now costs %+v, less than the pinned %+v: lower the pin", c.what, c.got, c.want)
				}
			}
		})
	}
}

// hostCosts measures one moe-tiny training step and one block of
// moe.DefaultBlockSteps decode tokens.
func hostCosts(t *testing.T) (step, blk hostCost) {
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

	// A block of decode steps is the difference between two Generate
	// calls one block apart: 1 + 8 and 1 + 16 tokens (the first token
	// comes from the prefill). A block's graph is keyed by the cache
	// length too, which differs between the two: the calls before them
	// record both (the first block of a key runs directly, the second is
	// recorded).
	prompts := [][]int32{{1, 5, 6}, {1, 7, 8}, {1, 9}, {1, 10, 11, 12}} // 4 sequences, 8 slots
	gen := func(n int) hostCost {
		before := costNow(f, fb)
		if _, err := m.Generate(prompts, 1, moe.SampleOptions{Temperature: 1, MaxNew: n}, engine.NewRNG(1, engine.StreamSample)); err != nil {
			t.Fatal(err)
		}
		return costNow(f, fb).minus(before)
	}
	const k = moe.DefaultBlockSteps
	gen(1 + 2*k) // first: it grows the cache, which closes the graphs of the old one
	gen(1 + k)
	gen(1 + k)
	l1 := f.launched()
	c1 := gen(1 + k)
	l2 := f.launched()
	c2 := gen(1 + 2*k)
	l3 := f.launched()
	blk = c2.minus(c1)
	perBlock := map[string]int{}
	for name := range l3 {
		if n := (l3[name] - l2[name]) - (l2[name] - l1[name]); n != 0 {
			perBlock[name] = n
		}
	}
	t.Logf("moe-tiny block of %d decode tokens, launches by kernel: %v", k, perBlock)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	t.Logf("moe-tiny train step: %+v", step)
	t.Logf("moe-tiny block of %d decode tokens: %+v", k, blk)
	return step, blk
}
