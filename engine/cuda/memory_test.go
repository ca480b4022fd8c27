package cuda

// Peak device memory, the last of BENCH.md's targets (moerl's peak no more
// than the PyTorch peer's on the same workload). The fake driver runs the
// backend's real allocator, so its peak of bytes in use is what the card's
// would be, less what cuBLAS and the CUDA context hold outside it; and it
// is an exact count, the same on every machine, so it can be pinned as the
// launch counts are (counts_test.go): a change may lower it, never raise it
// without saying so here.

import (
	"fmt"
	"testing"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
)

// peakWorkload is a workload whose peak memory is counted: two training
// steps of B×T tokens (the model, its gradients and AdamW moments, and the
// training workspace), or one Generate call of P prompts of L tokens and
// New new tokens each (B = 0) on the frozen model, as moerl bench runs
// it; each on a fresh model of the preset.
type peakWorkload struct {
	preset    string
	prec      GEMMPrecision
	B, T      int
	P, L, New int
}

func (w peakWorkload) String() string {
	if w.B > 0 {
		return fmt.Sprintf("%s train %d×%d %v", w.preset, w.B, w.T, w.prec)
	}
	return fmt.Sprintf("%s generate %d × (%d + %d) %v", w.preset, w.P, w.L, w.New, w.prec)
}

// peakBytes counts w's peak device memory on the fake driver, computing
// nothing (faultBackend's fake runs no kernel and no GEMM).
func peakBytes(t testing.TB, w peakWorkload) int64 {
	t.Helper()
	b, _, _ := faultBackend(t)
	defer b.Close()
	if err := b.SetGEMMPrecision(w.prec); err != nil {
		t.Fatal(err)
	}
	cfg, err := moe.Preset(w.preset)
	if err != nil {
		t.Fatal(err)
	}
	m, err := moe.New(cfg, b, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	if w.B > 0 {
		docs := make([][]int32, w.B)
		for i := range docs {
			docs[i] = make([]int32, w.T)
			for j := range docs[i] {
				docs[i][j] = int32((i + j) % cfg.Vocab)
			}
		}
		batch := moe.NewBatch(docs, w.T, 0)
		acts := m.NewActs(w.B, w.T)
		defer acts.Free(b)
		tc := moe.DefaultTrain
		tc.Batch, tc.SeqLen, tc.Steps = w.B, w.T, 2
		for i := range 2 {
			if _, err := m.TrainStep(acts, batch, tc, i); err != nil {
				t.Fatal(err)
			}
		}
	} else {
		m.Freeze()
		b.ResetPeak() // the count starts from the frozen model, as a loaded one would
		prompts := make([][]int32, w.P)
		for i := range prompts {
			prompts[i] = make([]int32, w.L)
			for j := range prompts[i] {
				prompts[i][j] = int32(1 + (i+j)%(cfg.Vocab-1))
			}
		}
		o := moe.SampleOptions{Temperature: 1, MaxNew: w.New}
		if _, err := m.Generate(prompts, 1, o, engine.NewRNG(1, engine.StreamSample)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	return b.MemStats().Peak
}

// pinnedPeak is the peak, in bytes, of small moe-tiny workloads, counted on
// 2026-12-01 after benchmarks.md's change 17. Lower a pin when a change
// lowers its count; raise one only with the change's reason in
// benchmarks.md.
var pinnedPeak = []struct {
	w    peakWorkload
	peak int64
}{
	{peakWorkload{preset: "moe-tiny", prec: GEMMTF32, B: 4, T: 256}, 395081216},
	{peakWorkload{preset: "moe-tiny", prec: GEMMBF16, B: 4, T: 256}, 394032640},
	{peakWorkload{preset: "moe-tiny", prec: GEMMTF32, P: 32, L: 32, New: 128}, 165175296},
	{peakWorkload{preset: "moe-tiny", prec: GEMMBF16, P: 32, L: 32, New: 128}, 192372736},
}

// TestPeakMemoryPinned counts the peak device memory of a moe-tiny
// training step and Generate call in TF32 and bf16 mode, on the fake
// driver, and fails where one rose above its pin.
func TestPeakMemoryPinned(t *testing.T) {
	for _, c := range pinnedPeak {
		t.Run(c.w.String(), func(t *testing.T) {
			got := peakBytes(t, c.w)
			switch {
			case got > c.peak:
				t.Errorf("peak %d bytes, more than the pinned %d", got, c.peak)
			case got < c.peak:
				t.Logf("peak %d bytes, less than the pinned %d: lower the pin", got, c.peak)
			default:
				t.Logf("peak %d bytes (%.3f GB)", got, float64(got)/1e9)
			}
		})
	}
}

// BenchmarkPeakMemory counts the peak device memory of BENCH.md's GPU
// workloads on the fake driver and reports it as peak-GB (one iteration
// is the count; the time is the fake's, not a card's): moe-tiny training
// 64×256 and Generate 256 × (32 + 128), moe-small training at 4×512 and
// 8×512 (BENCH.md's 32×512 is linear in tokens from those two, and would
// need the fake to hold it in host memory) and its Generate, each in TF32
// and bf16 mode. docs/benchmarks.md, "Peak memory", records them.
//
//	go test -run '^$' -bench PeakMemory -benchtime 1x ./engine/cuda
func BenchmarkPeakMemory(b *testing.B) {
	var ws []peakWorkload
	for _, p := range []GEMMPrecision{GEMMTF32, GEMMBF16} {
		ws = append(ws,
			peakWorkload{preset: "moe-tiny", prec: p, B: 64, T: 256},
			peakWorkload{preset: "moe-tiny", prec: p, P: 256, L: 32, New: 128},
			peakWorkload{preset: "moe-small", prec: p, B: 4, T: 512},
			peakWorkload{preset: "moe-small", prec: p, B: 8, T: 512},
			peakWorkload{preset: "moe-small", prec: p, P: 256, L: 32, New: 128})
	}
	for _, w := range ws {
		b.Run(w.String(), func(b *testing.B) {
			var peak int64
			for range b.N {
				peak = peakBytes(b, w)
			}
			b.ReportMetric(float64(peak)/1e9, "peak-GB")
		})
	}
}
