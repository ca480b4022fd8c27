package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/engine/cpu"
	"github.com/moerl/moerl/internal/paritytest"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl"
)

// routingCases are the op cases of the kernels in kernels/routing.cu, in
// the harness of cuda_test.go.
func routingCases() []opCase {
	const tokens = 150
	var cases []opCase
	for _, e := range []struct{ nE, k int }{{8, 2}, {64, 8}, {33, 1}} {
		n, rk := tokens*e.nE, tokens*e.k
		cases = append(cases, opCase{name: fmt.Sprintf("RouterReplay/%d,%d", e.nE, e.k), tol: tolElementwise,
			args: []argSpec{{name: "logits", n: n, role: in, gen: scaled(2)}, {name: "replay", i32: true, n: rk, role: in},
				spec("weights", rk, out), {name: "experts", i32: true, n: rk, role: out}, spec("probs", n, out)},
			prep: func(_ engine.Backend, h map[string]*engine.Tensor) {
				// Distinct random experts per row; every fourth row keeps
				// the router's own choice.
				r := rand.New(rand.NewPCG(uint64(e.nE), uint64(e.k)))
				rep := h["replay"].I
				for row := range tokens {
					perm := r.Perm(e.nE)
					for j := range e.k {
						rep[row*e.k+j] = int32(perm[j])
						if row%4 == 3 {
							rep[row*e.k+j] = -1
						}
					}
				}
			},
			run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
				be.RouterTopK(t["weights"], t["experts"], t["probs"], t["logits"], tokens, e.nE, e.k)
				be.RouterReplay(t["weights"], t["experts"], t["probs"], t["replay"], tokens, e.nE, e.k)
				return nil
			}})
	}
	for _, v := range []int{200, 32000} {
		lr := 64
		cases = append(cases, opCase{name: fmt.Sprintf("EntropyBackward/vocab=%d", v), tol: tolElementwise,
			args: []argSpec{{name: "logits", n: lr * v, role: in, gen: scaled(4)}, {name: "targets", i32: true, n: lr, role: in, gen: uniformInt(0, v)},
				spec("lse", lr, in), spec("ent", lr, in), spec("dent", lr, in), spec("dlogits", lr*v, acc)},
			prep: func(ref engine.Backend, h map[string]*engine.Tensor) {
				ref.TokenLogProbs(engine.HostF32(lr), h["lse"], h["logits"], h["targets"], lr, v)
				ref.Entropy(h["ent"], h["logits"], h["lse"], lr, v)
				h["dent"].F[5] = 0 // a skipped row
			},
			run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
				be.EntropyBackward(t["dlogits"], t["dent"], t["logits"], t["lse"], t["ent"], lr, v)
				return nil
			}})
	}
	return cases
}

// replayOwnChoice: replaying the experts RouterTopK chose rewrites the
// same weights bit for bit on be (what keeps an on-policy run on-policy
// with routing replay on), and a bad replayed id is reported by Sync.
func replayOwnChoice(t *testing.T, be engine.Backend) {
	const rows, nE, k = 100, 16, 4
	r := rand.New(rand.NewPCG(3, 4))
	host := make([]float32, rows*nE)
	for i := range host {
		host[i] = float32(2 * r.NormFloat64())
	}
	logits, probs := be.NewF32(rows*nE), be.NewF32(rows*nE)
	w, ex := be.NewF32(rows*k), be.NewI32(rows*k)
	defer func() {
		for _, x := range []*engine.Tensor{logits, probs, w, ex} {
			be.Free(x)
		}
	}()
	be.Upload(logits, host)
	be.RouterTopK(w, ex, probs, logits, rows, nE, k)
	want, own := make([]float32, rows*k), make([]int32, rows*k)
	be.Download(want, w)
	be.DownloadI32(own, ex)
	rep := be.NewI32(rows * k)
	defer be.Free(rep)
	be.UploadI32(rep, own)
	be.Upload(w, make([]float32, rows*k)) // the replay must write every weight
	be.RouterReplay(w, ex, probs, rep, rows, nE, k)
	got := make([]float32, rows*k)
	be.Download(got, w)
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("weight %d: replaying the router's own choice gives %v, RouterTopK %v", i, got[i], want[i])
		}
	}
	if be.Name() != "cuda" {
		return
	}
	own[k] = own[k+1] // row 1 names one expert twice
	be.UploadI32(rep, own)
	be.RouterReplay(w, ex, probs, rep, rows, nE, k)
	if err := be.Sync(); err == nil {
		t.Error("a replay naming an expert twice was not reported")
	}
}

// TestRoutingOps runs the routing kernels on the GPU against the CPU.
func TestRoutingOps(t *testing.T) {
	be := gpuBackend(t)
	for i, c := range routingCases() {
		t.Run(c.name, func(t *testing.T) { checkCase(t, be, c, uint64(2000+i)) })
	}
	t.Run("replay own choice", func(t *testing.T) { replayOwnChoice(t, be) })
	t.Run("model", func(t *testing.T) { routingModelParity(t, be) })
}

// TestRoutingOnEmulator is TestRoutingOps on the kernel emulator
// (make kernels-emu-gotest).
func TestRoutingOnEmulator(t *testing.T) {
	if os.Getenv("MOERL_EMU_LIB") == "" {
		t.Skip("MOERL_EMU_LIB is not set; make kernels-emu-gotest runs this test")
	}
	be := emulatedBackend(t)
	for i, c := range routingCases() {
		t.Run(c.name, func(t *testing.T) { checkCase(t, be, c, uint64(2000+i)) })
	}
	t.Run("replay own choice", func(t *testing.T) { replayOwnChoice(t, be) })
	t.Run("model", func(t *testing.T) { routingModelParity(t, emulatedBackend(t)) })
}

// routingModelParity runs one forward and backward of a small MoE model on
// be and on the CPU from the same weights and tokens, with the rollout's
// routing replayed (a random replay, some tokens left to the router), the
// router z-loss on and an entropy gradient: log-probs within 1e-5 and
// every parameter's gradient within 1e-4, relative. Then one GRPO step of
// the RL trainer with routing replay, the entropy bonus and a bf16
// rollout runs on be with finite numbers and a nonzero, finite gap.
func routingModelParity(t *testing.T, be engine.Backend) {
	cfg := paritytest.SmallConfig(false)
	cfg.RouterZLossCoef = 0.01
	B, T := 2, cfg.MaxSeq
	N, K := B*T, cfg.TopK
	r := rand.New(rand.NewPCG(21, 22))
	ids, targets, dl, dh := make([]int32, N), make([]int32, N), make([]float32, N), make([]float32, N)
	for i := range ids {
		ids[i], targets[i], dl[i], dh[i] = int32(r.IntN(cfg.Vocab)), int32(r.IntN(cfg.Vocab)), float32(r.NormFloat64()), float32(r.NormFloat64())
	}
	replay := make([]int32, cfg.Layers*N*K)
	for i := 0; i < len(replay); i += K {
		for j, e := range r.Perm(cfg.Experts)[:K] {
			replay[i+j] = int32(e)
			if (i/K)%5 == 4 {
				replay[i+j] = -1
			}
		}
	}
	pass := func(m *moe.Model) ([]float32, []float32, float64) {
		a := m.NewActs(B, T)
		defer a.Free(m.Backend())
		m.ZeroGrad()
		lp := slices.Clone(m.Forward(a, ids, targets, moe.ForwardOptions{Entropy: true, Temperature: 0.8, Replay: replay}))
		m.BackwardEntropy(a, dl, dh)
		return lp, m.HostGrads(), m.ZLoss
	}
	mc, err := moe.New(cfg, cpu.New(), 3)
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := moe.New(cfg, be, 3)
	lc, gc, zc := pass(mc)
	lb, gb, zb := pass(mb)
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
	if e := paritytest.RelErr(lb, lc); e > 1e-5 {
		t.Errorf("replayed log-probs differ from the CPU's, rel. error %.2g (bound 1e-5)", e)
	}
	if math.Abs(zb-zc) > 1e-5*zc {
		t.Errorf("z-loss %v, CPU %v", zb, zc)
	}
	for _, p := range mc.ParamList() {
		if e := paritytest.RelErr(gb[p.Off:p.Off+p.Len()], gc[p.Off:p.Off+p.Len()]); e > 1e-4 {
			t.Errorf("gradient of %s differs from the CPU's, rel. error %.2g (bound 1e-4)", p.Name, e)
		}
	}

	cfg.MaxSeq = 24
	rc, _ := rl.DefaultConfig("grpo")
	rc.Steps, rc.Prompts, rc.MaxNew, rc.Difficulties = 1, 2, 6, []int{2}
	rc.Algo.GroupSize, rc.Algo.MiniBatches = 2, 1
	for _, a := range []string{"routing_replay=true", "entropy_coef=0.01", "rollout_precision=bf16", "rollout_correction=token-tis"} {
		if err := rc.Algo.Apply(a); err != nil {
			t.Fatal(err)
		}
	}
	policy, _ := moe.New(cfg, be, 1)
	ref, _ := moe.New(cfg, be, 1)
	tr, err := rl.NewTrainer(rc, policy, ref, tokenizer.Default())
	if err != nil {
		t.Fatal(err)
	}
	st, err := tr.TrainStep()
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]float64{"loss": st.Loss, "grad norm": st.GradNorm, "logp_gap": st.LogpGap, "rollout_ess": st.RolloutESS,
		"routing_disagreement": st.RoutingDisagreement, "expert_load_entropy": st.ExpertLoadEntropy, "router_margin": st.RouterMargin} {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			t.Errorf("RL step: %s is %v", name, v)
		}
	}
	if !(st.LogpGap > 0) || st.Updates != 1 {
		t.Errorf("RL step with a bf16 rollout: gap %v, %d updates", st.LogpGap, st.Updates)
	}
}
