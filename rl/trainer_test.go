package rl

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/moerl/moerl/engine/cpu"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl/algo"
	"github.com/moerl/moerl/rl/reward"
	"github.com/moerl/moerl/rl/task"
)

func tinyModel(t *testing.T) (*moe.Model, *moe.Model, *tokenizer.Tokenizer) {
	t.Helper()
	tok := tokenizer.Default()
	cfg := moe.Config{Vocab: tok.VocabSize(), DModel: 32, Layers: 1, Heads: 2, Experts: 3, TopK: 2, ExpertHidden: 32,
		MaxSeq: 48, RopeTheta: 10000, NormEps: 1e-6, InitStd: 0.05, AuxLossCoef: 0.01}
	be := cpu.New()
	p, err := moe.New(cfg, be, 1)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := moe.New(cfg, be, 1)
	return p, r, tok
}

func tinyRL(t *testing.T, preset string) Config {
	t.Helper()
	c, err := DefaultConfig(preset)
	if err != nil {
		t.Fatal(err)
	}
	c.Steps, c.Prompts, c.MaxNew, c.Difficulties = 3, 3, 12, []int{2}
	if c.Algo.GroupSize < 2 {
		c.Prompts = 6
	}
	c.Algo.GroupSize = min(c.Algo.GroupSize, 4)
	c.Algo.MaxTries = 2
	c.Algo.MiniBatches = min(c.Algo.MiniBatches, c.Prompts) // at least one group per mini-batch
	return c
}

// TestEveryPresetSteps runs each preset for a step on an untrained model:
// the loop runs, the stats are finite, and the log-probs the trainer
// recomputes equal the ones recorded while sampling (ratio 1 before the
// first update) to float rounding.
func TestEveryPresetSteps(t *testing.T) {
	for _, preset := range algo.Presets() {
		t.Run(preset, func(t *testing.T) {
			p, r, tok := tinyModel(t)
			tr, err := NewTrainer(tinyRL(t, preset), p, r, tok)
			if err != nil {
				t.Fatal(err)
			}
			st, err := tr.TrainStep()
			if err != nil {
				t.Fatal(err)
			}
			if st.Groups > 0 && st.LogpGap > 1e-4 {
				t.Errorf("rollout and trainer log-probs differ by %g on average", st.LogpGap)
			}
			for name, v := range map[string]float64{"loss": st.Loss, "entropy": st.Entropy, "kl": st.KLRef, "grad": st.GradNorm,
				"logp_gap_max": st.LogpGapMax, "rollout_kl": st.RolloutKL, "rollout_ess": st.RolloutESS, "rollout_masked_frac": st.RolloutMaskedFrac,
				"routing_disagreement": st.RoutingDisagreement, "expert_load_entropy": st.ExpertLoadEntropy, "expert_load_max": st.ExpertLoadMax, "router_margin": st.RouterMargin} {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					t.Errorf("%s is %v", name, v)
				}
			}
			if st.Groups > 0 && (st.RoutingDisagreement != 0 || !(st.ExpertLoadMax > 0) || !(st.ExpertLoadEntropy > 0)) {
				t.Errorf("routing: disagreement %v (want 0), load max %v, load entropy %v", st.RoutingDisagreement, st.ExpertLoadMax, st.ExpertLoadEntropy)
			}
			if st.Groups > 0 && st.KLRef > 1e-6 {
				t.Errorf("KL to the reference before any update is %g, want 0", st.KLRef)
			}
			if (tr.Critic != nil) != tr.Cfg.Algo.Critic {
				t.Errorf("critic present %v, preset wants %v", tr.Critic != nil, tr.Cfg.Algo.Critic)
			}
		})
	}
}

// TestRLResumeBitwise: four steps in one go equal two steps, a checkpoint,
// and two more steps after restoring it — for GRPO, for PPO's critic, and
// for a rollout two steps stale in bf16 with routing replay, whose stale
// weights are saved beside the checkpoint (and removed once no longer
// needed).
func TestRLResumeBitwise(t *testing.T) {
	for _, tc := range []struct {
		name, preset string
		sets         []string
	}{
		{"grpo", "grpo", nil},
		{"ppo", "ppo", nil},
		{"grpo, stale bf16 rollout, replay", "grpo", []string{"rollout_staleness=2", "rollout_precision=bf16", "routing_replay=true", "rollout_correction=token-tis"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tinyRL(t, tc.preset)
			for _, a := range tc.sets {
				if err := cfg.Algo.Apply(a); err != nil {
					t.Fatal(err)
				}
			}
			signal := func(_, i int) bool { return i%3 == 0 } // the same verdicts after the resume
			p, r, tok := tinyModel(t)
			whole, err := NewTrainer(cfg, p, r, tok)
			if err != nil {
				t.Fatal(err)
			}
			oracle(whole, signal)
			for range 4 {
				if _, err := whole.TrainStep(); err != nil {
					t.Fatal(err)
				}
			}
			p2, r2, _ := tinyModel(t)
			first, _ := NewTrainer(cfg, p2, r2, tok)
			oracle(first, signal)
			for range 2 {
				if _, err := first.TrainStep(); err != nil {
					t.Fatal(err)
				}
			}
			dir := t.TempDir()
			pp, cp := filepath.Join(dir, "policy.ck"), filepath.Join(dir, "critic.ck")
			if err := first.Save(pp, cp, "base.ck"); err != nil {
				t.Fatal(err)
			}
			be := cpu.New()
			pol, _, st, err := moe.LoadCheckpoint(pp, be)
			if err != nil {
				t.Fatal(err)
			}
			var critic *moe.Model
			if cfg.Algo.Critic {
				if critic, _, _, err = moe.LoadCheckpoint(cp, be); err != nil {
					t.Fatal(err)
				}
			}
			_, r3, _ := tinyModel(t)
			resumed, _ := NewTrainer(cfg, pol, r3, tok)
			if err := resumed.Restore(st, critic); err != nil {
				t.Fatal(err)
			}
			oracle(resumed, signal)
			for range 2 {
				if _, err := resumed.TrainStep(); err != nil {
					t.Fatal(err)
				}
			}
			if k := cfg.Algo.RolloutStaleness; k > 0 {
				// Saved again after step 4: the weights after steps 2 and 3
				// are kept, those after 0 and 1 removed.
				if err := resumed.Save(pp, cp, "base.ck"); err != nil {
					t.Fatal(err)
				}
				for step := range 4 {
					_, err := os.Stat(stalePath(pp, step))
					if exists := err == nil; exists != (step >= 4-k) {
						t.Errorf("weights after step %d saved: %v, want %v", step, exists, step >= 4-k)
					}
				}
			}
			a, b := whole.Policy.HostParams(), resumed.Policy.HostParams()
			for i := range a {
				if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
					t.Fatalf("policy parameter %d differs after resume: %v vs %v", i, a[i], b[i])
				}
			}
			if cfg.Algo.Critic {
				a, b := whole.Critic.HostParams(), resumed.Critic.HostParams()
				for i := range a {
					if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
						t.Fatalf("critic parameter %d differs after resume", i)
					}
				}
			}
		})
	}
}

// oracle replaces the trainer's verifier: the policy still samples (its
// sequences and log-probs are real), but response i of sampling round
// `round` (0-based over the trainer's life) is correct when correct says
// so. An untrained tiny model never answers correctly; this gives its
// groups a learning signal.
func oracle(tr *Trainer, correct func(round, i int) bool) {
	round := 0
	tr.sample = func(problems []task.Problem) (*Rollout, error) {
		r, err := Sample(tr.RolloutModel(), tr.Tok, problems, tr.Cfg.Algo.GroupSize, tr.SampleOptions(), tr.scheme, tr.SampleRNG)
		if err != nil {
			return nil, err
		}
		for i := range r.Results {
			ok := correct(round, i)
			r.Results[i] = reward.Result{Correct: ok, WellFormed: true, Reward: tr.scheme.Wrong}
			if ok {
				r.Results[i].Reward = tr.scheme.Correct
			}
		}
		round++
		return r, nil
	}
}

func newTrainer(t *testing.T, cfg Config) *Trainer {
	t.Helper()
	p, r, tok := tinyModel(t)
	tr, err := NewTrainer(cfg, p, r, tok)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func sameParams(a, b []float32) bool {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return len(a) == len(b)
}

// TestDynamicSamplingOnCorrectness is the case seen on a hard bin: no
// response is correct, overlong shaping makes the shaped rewards of some
// groups differ, and those groups used to be kept. They are dropped now,
// and the step reports the short batch.
func TestDynamicSamplingOnCorrectness(t *testing.T) {
	cfg := tinyRL(t, "dapo")
	tr := newTrainer(t, cfg)
	st, err := tr.TrainStep()
	if err != nil {
		t.Fatal(err)
	}
	if st.Accuracy != 0 || st.ZeroStdGroups >= 1 {
		t.Fatalf("test setup: want no correct answer and some groups with differing shaped rewards, got accuracy %v, zero_std_groups %v",
			st.Accuracy, st.ZeroStdGroups)
	}
	if st.Groups != 0 || st.Updates != 0 {
		t.Errorf("kept %d groups (%d updates) with no correct answer", st.Groups, st.Updates)
	}
	if !st.ShortBatch || st.GroupsWanted != cfg.Prompts || st.Tries != cfg.Algo.MaxTries {
		t.Errorf("short_batch %v, groups_wanted %d, tries %d; want true, %d, %d", st.ShortBatch, st.GroupsWanted, st.Tries, cfg.Prompts, cfg.Algo.MaxTries)
	}
	if want := cfg.Algo.MaxTries * cfg.Prompts * cfg.Algo.GroupSize; st.Sampled != want {
		t.Errorf("sampled %d responses, want %d", st.Sampled, want)
	}
}

// TestSampledAndKeptMetrics: under dynamic sampling, accuracy and
// reward_mean describe every sampled response and the _kept metrics the
// update batch.
func TestSampledAndKeptMetrics(t *testing.T) {
	cfg := tinyRL(t, "dapo") // 3 prompts × 4, ±1 reward
	tr := newTrainer(t, cfg)
	// Correct answers per group: round 0: 1, 0, 4 (one group kept);
	// round 1: 2, 3, 0 (two kept, the batch is full).
	perGroup := [][]int{{1, 0, 4}, {2, 3, 0}}
	oracle(tr, func(round, i int) bool { return i%4 < perGroup[round][i/4] })
	st, err := tr.TrainStep()
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want float64
	}{
		{"sampled", float64(st.Sampled), 24},
		{"tries", float64(st.Tries), 2},
		{"groups", float64(st.Groups), 3},
		{"accuracy", st.Accuracy, 10.0 / 24},
		{"reward_mean", st.RewardMean, (10.0 - 14) / 24},
		{"accuracy_kept", st.AccuracyKept, 6.0 / 12},
		{"reward_mean_kept", st.RewardMeanKept, 0},
		{"reward_std_kept", st.RewardStdKept, 1},
	}
	for _, c := range checks {
		if math.Abs(c.got-c.want) > 1e-12 {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if st.ShortBatch {
		t.Error("a full batch is reported short")
	}
}

// TestShortBatch: when max_tries runs out, short_batch "train" trains on
// the groups kept and says so; "fail" fails the step without touching the
// policy.
func TestShortBatch(t *testing.T) {
	oneMixed := func(round, i int) bool { return i == 0 } // only group 0 of each round has a correct answer
	tr := newTrainer(t, tinyRL(t, "dapo"))
	oracle(tr, oneMixed)
	st, err := tr.TrainStep()
	if err != nil {
		t.Fatal(err)
	}
	if !st.ShortBatch || st.Groups != 2 || st.GroupsWanted != 3 || st.Updates == 0 {
		t.Errorf("short_batch %v, groups %d of %d, updates %d; want a short batch of 2 of 3 groups, trained on",
			st.ShortBatch, st.Groups, st.GroupsWanted, st.Updates)
	}

	cfg := tinyRL(t, "dapo")
	if err := cfg.Algo.Apply("short_batch=fail"); err != nil {
		t.Fatal(err)
	}
	tr = newTrainer(t, cfg)
	oracle(tr, oneMixed)
	before := tr.Policy.HostParams()
	_, err = tr.TrainStep()
	if !errors.Is(err, ErrShortBatch) || !strings.Contains(err.Error(), "2 of 3 groups") {
		t.Fatalf("short_batch=fail: error %v, want ErrShortBatch naming 2 of 3 groups", err)
	}
	if tr.Step != 0 || !sameParams(before, tr.Policy.HostParams()) {
		t.Errorf("a failed step counted (step %d) or changed the policy", tr.Step)
	}
}

// TestClippedPresetsClip: with their mini-batches, the clipped presets
// update the policy several times per rollout, so after the first update
// ρ ≠ 1 and the clip acts; with one mini-batch of one epoch ρ ≡ 1 and it
// never does. The learning rate is raised so that a tiny model moves
// within one step.
func TestClippedPresetsClip(t *testing.T) {
	for _, preset := range algo.Presets() {
		cfg := tinyRL(t, preset)
		if cfg.Algo.PolicyLoss == algo.OMD { // the policy terms with a ratio clip
			continue
		}
		t.Run(preset, func(t *testing.T) {
			cfg.LR, cfg.MinLR = 0.01, 0.01
			run := func(cfg Config) (clip, dev float64, updates int) {
				tr := newTrainer(t, cfg)
				oracle(tr, func(_, i int) bool { return i%3 == 0 })
				for range 2 {
					st, err := tr.TrainStep()
					if err != nil {
						t.Fatal(err)
					}
					clip = max(clip, st.ClipFrac)
					dev = max(dev, st.RatioMax-1, 1-st.RatioMin)
					updates += st.Updates
				}
				return clip, dev, updates
			}
			clip, dev, updates := run(cfg)
			t.Logf("%d × %d updates per rollout: clip_frac up to %.3f, |ρ − 1| up to %.3f", cfg.Algo.Epochs, cfg.Algo.MiniBatches, clip, dev)
			if want := 2 * cfg.Algo.Epochs * cfg.Algo.MiniBatches; updates != want {
				t.Errorf("%d updates in 2 steps, want %d", updates, want)
			}
			if clip == 0 || dev < 1e-3 {
				t.Errorf("%d epochs × %d mini-batches: clip_frac %v, max |ρ − 1| %v; want the clip to act", cfg.Algo.Epochs, cfg.Algo.MiniBatches, clip, dev)
			}
			cfg.Algo.Epochs, cfg.Algo.MiniBatches = 1, 1
			if clip, dev, _ := run(cfg); clip != 0 || dev > 1e-4 {
				t.Errorf("one update per rollout: clip_frac %v, max |ρ − 1| %v; want ρ ≡ 1", clip, dev)
			}
		})
	}
}

// TestOMDResetsOptimizer: Kimi k1.5 resets the optimizer at the start of
// every iteration, so AdamW's step count restarts each RL step.
func TestOMDResetsOptimizer(t *testing.T) {
	for _, reset := range []bool{true, false} {
		cfg := tinyRL(t, "omd")
		cfg.Algo.ResetOptimizer = reset
		tr := newTrainer(t, cfg)
		oracle(tr, func(_, i int) bool { return i%3 == 0 })
		total := 0
		for range 2 {
			st, err := tr.TrainStep()
			if err != nil {
				t.Fatal(err)
			}
			total += st.Updates
			want := total
			if reset {
				want = st.Updates
			}
			if tr.Policy.OptStep != want || st.Updates == 0 {
				t.Errorf("reset_optimizer=%v: optimizer step count %d after step %d (%d updates), want %d",
					reset, tr.Policy.OptStep, tr.Step, st.Updates, want)
			}
		}
	}
}

// TestLengthPenaltyWarmup: Kimi's length reward is off for the warm-up
// steps and at full weight after.
func TestLengthPenaltyWarmup(t *testing.T) {
	cfg := tinyRL(t, "omd")
	cfg.Algo.LengthPenalty, cfg.Algo.LengthPenaltyWarmup = 0.5, 1
	tr := newTrainer(t, cfg)
	// One group of 4 responses of different lengths, two correct.
	r := &Rollout{G: 4, Prompts: [][]int32{{1}}, Problems: []task.Problem{{Difficulty: 2}}}
	for i, n := range []int{2, 4, 6, 8} {
		r.Seqs = append(r.Seqs, moe.Sequence{Prompt: 0, Tokens: make([]int32, n), LogProbs: make([]float32, n)})
		ok := i%2 == 0
		r.Results = append(r.Results, reward.Result{Correct: ok, WellFormed: true, Reward: map[bool]float64{true: 1, false: 0.1}[ok]})
	}
	for step, want := range []float64{0, 0.5, 0.5} {
		tr.Step = step
		s, err := tr.score(r)
		if err != nil {
			t.Fatal(err)
		}
		pen, _ := algo.LengthPenalty([]int{2, 4, 6, 8}, []bool{true, false, true, false}, []int{0, 0, 0, 0}, want)
		for i := range s.shaped {
			if got := s.shaped[i] - s.raw[i]; math.Abs(got-pen[i]) > 1e-12 {
				t.Errorf("step %d response %d: length reward %v, want %v (weight %v)", step, i, got, pen[i], want)
			}
		}
	}
	tr.Step = 0
	oracle(tr, func(_, i int) bool { return i%3 == 0 })
	for _, want := range []float64{0, 0.5} {
		st, err := tr.TrainStep()
		if err != nil {
			t.Fatal(err)
		}
		if st.LengthPenalty != want {
			t.Errorf("step %d: length_penalty %v, want %v", st.Step, st.LengthPenalty, want)
		}
	}
}

// TestNonFinite injects a NaN, into one update's gradient or into the
// reference's weights (which makes the KL term of GRPO's loss NaN before
// backward), and checks both ways of handling it: without SkipNonFinite
// the step fails with a *moe.NonFiniteError and leaves the policy as it
// was; with it the bad updates are skipped and counted.
func TestNonFinite(t *testing.T) {
	poisonSecondGradient := func(tr *Trainer) {
		calls := 0
		tr.afterBackward = func(m *moe.Model) {
			if calls++; calls == 2 {
				g := m.HostGrads()
				g[len(g)/2] = float32(math.NaN())
				m.Backend().Upload(m.Grads, g)
			}
		}
	}
	poisonReference := func(tr *Trainer) {
		w := tr.Ref.HostParams()
		for i := range w {
			w[i] = float32(math.NaN())
		}
		tr.Ref.Backend().Upload(tr.Ref.Params, w)
	}
	tests := []struct {
		name    string
		poison  func(*Trainer)
		what    string // NonFiniteError.What without skipping
		skipped int    // of 3 updates, with skipping
	}{
		{"gradient", poisonSecondGradient, "gradient", 1},
		{"loss", poisonReference, "weight", 3},
	}
	for _, tc := range tests {
		for _, skip := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/skip=%v", tc.name, skip), func(t *testing.T) {
				cfg := tinyRL(t, "grpo") // 3 mini-batches
				cfg.SkipNonFinite = skip
				tr := newTrainer(t, cfg)
				oracle(tr, func(_, i int) bool { return i%3 == 0 })
				tc.poison(tr)
				before, optStep := tr.Policy.HostParams(), tr.Policy.OptStep
				st, err := tr.TrainStep()
				if !skip {
					var nf *moe.NonFiniteError
					if !errors.As(err, &nf) || nf.What != tc.what {
						t.Fatalf("error %v, want a *moe.NonFiniteError about a %s", err, tc.what)
					}
					t.Logf("error: %v", err)
					if tc.name == "loss" && !strings.Contains(err.Error(), "reference") {
						t.Errorf("error %q does not blame the reference", err)
					}
					if !sameParams(before, tr.Policy.HostParams()) || tr.Policy.OptStep != optStep || tr.Step != 0 {
						t.Error("a failed step changed the policy or was counted")
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if st.SkippedUpdates != tc.skipped || st.Updates != 3-tc.skipped {
					t.Errorf("skipped %d, took %d updates; want %d and %d", st.SkippedUpdates, st.Updates, tc.skipped, 3-tc.skipped)
				}
				if changed := !sameParams(before, tr.Policy.HostParams()); changed != (st.Updates > 0) || tr.Policy.OptStep != st.Updates {
					t.Errorf("policy changed %v after %d updates, optimizer step %d", changed, st.Updates, tr.Policy.OptStep)
				}
				if _, err := json.Marshal(st); err != nil {
					t.Errorf("stats of a step with skipped updates do not marshal: %v", err)
				}
			})
		}
	}
}

// TestStepStatsJSON: every metric has its own JSON name, and a metric
// that is not finite is written as null instead of failing the line.
func TestStepStatsJSON(t *testing.T) {
	seen := map[string]bool{}
	omitEmpty := 0
	typ := reflect.TypeFor[StepStats]()
	for i := range typ.NumField() {
		name, opts, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		if name == "" || name == "-" || seen[name] {
			t.Errorf("field %s: JSON name %q missing or repeated", typ.Field(i).Name, name)
		}
		seen[name] = true
		if opts == "omitempty" {
			omitEmpty++
		}
	}
	st := StepStats{Step: 3, Accuracy: 0.25, Groups: 2}
	type plain StepStats
	a, _ := json.Marshal(st)
	b, _ := json.Marshal(plain(st))
	if string(a) != string(b) {
		t.Errorf("finite stats marshal as %s, want %s", a, b)
	}
	st.KLRef, st.Entropy, st.ValueLoss = math.NaN(), math.Inf(1), 0
	line, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(line, &back); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	if v, ok := back["kl_ref"]; !ok || v != nil || back["entropy"] != nil || back["accuracy"] != 0.25 {
		t.Errorf("non-finite metrics: %s", line)
	}
	if _, ok := back["value_loss"]; ok || len(back) != len(seen)-omitEmpty {
		t.Errorf("omitempty not kept or fields lost: %s", line)
	}
}

// TestMiniBatchesFit: the batch must hold a response per mini-batch.
func TestMiniBatchesFit(t *testing.T) {
	cfg := tinyRL(t, "grpo") // 3 prompts × 4
	cfg.Algo.MiniBatches = 13
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "cannot fill 13 mini-batches") {
		t.Errorf("13 mini-batches of 12 responses: %v", err)
	}
	cfg.Algo.MiniBatches = 12
	if err := cfg.Validate(); err != nil {
		t.Errorf("12 mini-batches of 12 responses: %v", err)
	}
}

// TestNewPresetsTrain: gspo and cispo update a tiny model on groups with a
// signal, with finite losses and gradients.
func TestNewPresetsTrain(t *testing.T) {
	for _, preset := range []string{"gspo", "cispo"} {
		t.Run(preset, func(t *testing.T) {
			tr := newTrainer(t, tinyRL(t, preset))
			oracle(tr, func(_, i int) bool { return i%3 == 0 })
			before := tr.Policy.HostParams()
			st, err := tr.TrainStep()
			if err != nil {
				t.Fatal(err)
			}
			if st.Updates != tr.Cfg.Algo.MiniBatches || !(st.GradNorm > 0) || math.IsNaN(st.Loss) || math.IsInf(st.Loss, 0) {
				t.Errorf("%d updates of %d, grad norm %v, loss %v", st.Updates, tr.Cfg.Algo.MiniBatches, st.GradNorm, st.Loss)
			}
			if sameParams(before, tr.Policy.HostParams()) {
				t.Error("the policy did not move")
			}
		})
	}
}

// staleSampler makes the trainer's sampler record log-probs that differ
// from the policy's by a deterministic offset in [−amp, amp] per token, as
// a lower-precision or stale rollout engine would.
func staleSampler(tr *Trainer, amp float32) {
	oracle(tr, func(_, i int) bool { return i%3 == 0 })
	exact := tr.sample
	tr.sample = func(problems []task.Problem) (*Rollout, error) {
		r, err := exact(problems)
		if err != nil {
			return nil, err
		}
		for i := range r.Seqs {
			lp := slices.Clone(r.Seqs[i].LogProbs)
			for j := range lp {
				lp[j] += amp * float32(((i*7+j*13)%11)-5) / 5
			}
			r.Seqs[i].LogProbs = lp
		}
		return r, nil
	}
}

// TestRolloutCorrection: with a mismatch dialled in, every correction
// trains, its metrics see the mismatch, and a correction changes the
// update; without a mismatch the metrics say the sampler and the trainer
// agree.
func TestRolloutCorrection(t *testing.T) {
	run := func(corr string, amp float32) (StepStats, []float32) {
		cfg := tinyRL(t, "grpo")
		if err := cfg.Algo.Apply("rollout_correction=" + corr); err != nil {
			t.Fatal(err)
		}
		tr := newTrainer(t, cfg)
		staleSampler(tr, amp)
		st, err := tr.TrainStep()
		if err != nil {
			t.Fatalf("%s: %v", corr, err)
		}
		return st, tr.Policy.HostParams()
	}
	st, _ := run("none", 0)
	if st.LogpGapMax > 1e-4 || st.RolloutKL > 1e-6 || math.Abs(st.RolloutESS-1) > 1e-6 || st.RolloutMaskedFrac != 0 {
		t.Errorf("agreeing sampler: gap max %v, kl %v, ess %v, masked %v; want 0, 0, 1, 0",
			st.LogpGapMax, st.RolloutKL, st.RolloutESS, st.RolloutMaskedFrac)
	}
	_, plain := run("none", 1)
	for _, corr := range algo.Allowed("rollout_correction") {
		st, params := run(corr, 1)
		t.Logf("%s: gap %.3f (max %.3f), kl %.3f, ess %.3f, masked %.3f, loss %.4f",
			corr, st.LogpGap, st.LogpGapMax, st.RolloutKL, st.RolloutESS, st.RolloutMaskedFrac, st.Loss)
		if st.Updates == 0 || math.IsNaN(st.Loss) || st.LogpGap < 0.1 || st.LogpGapMax < 0.9 || st.RolloutKL <= 0 ||
			!(st.RolloutESS > 0 && st.RolloutESS < 1) || st.RolloutMaskedFrac <= 0 {
			t.Errorf("%s: stats %+v do not show the mismatch", corr, st)
		}
		if changed := !sameParams(plain, params); changed != (corr != "none") {
			t.Errorf("%s: update changed by the correction: %v", corr, changed)
		}
	}
}

// TestRewardControls: each control gives the rewards and verdicts of
// rl/reward's Control, the random one the same coins for the same step
// (so a resumed run draws them again) and others for another step, while
// the step's accuracy still reports the verifier.
func TestRewardControls(t *testing.T) {
	r := &Rollout{G: 4, Prompts: [][]int32{{1}, {1}}, Problems: []task.Problem{{Difficulty: 2}, {Difficulty: 2}}}
	for i := range 8 {
		r.Seqs = append(r.Seqs, moe.Sequence{Prompt: i / 4, Tokens: make([]int32, 3), LogProbs: make([]float32, 3)})
		res := reward.Result{Reward: 0, Reason: "malformed"} // i%3 == 2
		switch i % 3 {
		case 0:
			res = reward.Result{Reward: 1, Correct: true, WellFormed: true}
		case 1:
			res = reward.Result{Reward: 0.1, WellFormed: true}
		}
		r.Results = append(r.Results, res)
	}
	for _, name := range algo.Allowed("reward_control") {
		cfg := tinyRL(t, "grpo")
		if err := cfg.Algo.Apply("reward_control=" + name); err != nil {
			t.Fatal(err)
		}
		tr := newTrainer(t, cfg)
		ctl, _ := reward.ParseControl(name)
		tr.Step = 3
		s, err := tr.scoreRound(r, 1)
		if err != nil {
			t.Fatal(err)
		}
		for i, res := range r.Results {
			want, _ := ctl.Apply(res, reward.Default, reward.Coin(cfg.Seed, 3, 1, i))
			if s.raw[i] != want {
				t.Errorf("%s: response %d rewarded %v, want %v", name, i, s.raw[i], want)
			}
		}
		if name != "random" {
			continue
		}
		again, _ := tr.scoreRound(r, 1)
		tr.Step = 4
		other, _ := tr.scoreRound(r, 1)
		if !slices.Equal(again.raw, s.raw) || slices.Equal(other.raw, s.raw) {
			t.Errorf("random rewards %v, again %v, next step %v: not a function of the step", s.raw, again.raw, other.raw)
		}
	}
	// Inverted on a run where a third of the answers are right: accuracy
	// is the verifier's, the reward is the control's (a right answer earns
	// the wrong answer's 0.1, a wrong one 1).
	cfg := tinyRL(t, "grpo")
	cfg.Algo.RewardControl = algo.RewardInverted
	tr := newTrainer(t, cfg)
	oracle(tr, func(_, i int) bool { return i%3 == 0 })
	st, err := tr.TrainStep()
	if err != nil {
		t.Fatal(err)
	}
	if acc, rew := 4.0/12, (4*0.1+8*1)/12.0; math.Abs(st.Accuracy-acc) > 1e-12 || math.Abs(st.RewardMean-rew) > 1e-12 {
		t.Errorf("inverted: accuracy %v (want %v), reward_mean %v (want %v)", st.Accuracy, acc, st.RewardMean, rew)
	}
}

// TestTrainerRejects: settings the trainer cannot honour fail in Validate.
func TestTrainerRejects(t *testing.T) {
	tests := []struct {
		edit func(c *Config)
		want string
	}{
		{func(c *Config) { c.Algo.RewardControl, c.RewardSource = algo.RewardRandom, "mix" }, "needs reward_source rule"},
	}
	for _, tc := range tests {
		cfg := tinyRL(t, "grpo")
		tc.edit(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want one containing %q", err, tc.want)
		}
	}
}

// TestConfigHelp: every field of the run's Config has a help tag.
func TestConfigHelp(t *testing.T) {
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		if f := typ.Field(i); f.Tag.Get("help") == "" {
			t.Errorf("rl.Config.%s has no help tag", f.Name)
		}
	}
}

// TestRewardControlFilters: dynamic sampling keeps a group by the
// control's verdicts. Under format-only a group whose answers are all well
// formed, right or wrong, has no signal and is dropped; one with a
// malformed answer is kept.
func TestRewardControlFilters(t *testing.T) {
	cfg := tinyRL(t, "dapo")
	cfg.Algo.RewardControl = algo.RewardFormatOnly
	tr := newTrainer(t, cfg)
	r := &Rollout{G: 4, Prompts: [][]int32{{1}, {1}}, Problems: []task.Problem{{Difficulty: 2}, {Difficulty: 2}}}
	for i := range 8 {
		r.Seqs = append(r.Seqs, moe.Sequence{Prompt: i / 4, Tokens: make([]int32, 3), LogProbs: make([]float32, 3)})
		res := reward.Result{Reward: -1, WellFormed: true}
		if i%2 == 0 {
			res = reward.Result{Reward: 1, Correct: true, WellFormed: true}
		}
		if i == 7 {
			res = reward.Result{Reward: -1}
		}
		r.Results = append(r.Results, res)
	}
	s, err := tr.scoreRound(r, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s.keep[0] || !s.keep[4] {
		t.Errorf("keep %v: want group 0 (all well formed) dropped and group 1 kept", s.keep)
	}
}

// dialled runs steps RL steps of a tiny GRPO run with a signal and the
// given settings, and returns each step's stats and the final weights.
func dialledRun(t *testing.T, steps int, sets ...string) ([]StepStats, []float32) {
	t.Helper()
	cfg := tinyRL(t, "grpo")
	cfg.LR = 3e-3 // the policy moves enough in a step for a stale rollout to differ
	for _, a := range sets {
		if err := cfg.Algo.Apply(a); err != nil {
			t.Fatal(err)
		}
	}
	tr := newTrainer(t, cfg)
	oracle(tr, func(_, i int) bool { return i%3 == 0 })
	var out []StepStats
	for range steps {
		st, err := tr.TrainStep()
		if err != nil {
			t.Fatalf("%v: %v", sets, err)
		}
		out = append(out, st)
	}
	return out, tr.Policy.HostParams()
}

// TestMismatchDial: rounded rollout weights make the recorded log-probs
// differ from the trainer's from the first step; a stale rollout from the
// second (the first samples with the starting weights, which are the
// policy's); without a dial they agree bit for bit. The metrics stay
// finite and within their ranges.
func TestMismatchDial(t *testing.T) {
	const E = 3 // tinyModel's experts
	for _, tc := range []struct {
		sets  []string
		first int // the first step (1-based) with a gap
	}{
		{nil, 0},
		{[]string{"rollout_precision=bf16"}, 1},
		{[]string{"rollout_precision=fp16"}, 1},
		{[]string{"rollout_staleness=1"}, 2},
		{[]string{"rollout_staleness=1", "rollout_precision=bf16", "rollout_correction=token-mis"}, 1},
	} {
		sts, _ := dialledRun(t, 2, tc.sets...)
		for i, st := range sts {
			t.Logf("%v step %d: gap %.3g (max %.3g), rollout kl %.3g, ess %.5f, disagreement %.3f, load entropy %.3f, load max %.3f, margin %.3f",
				tc.sets, i+1, st.LogpGap, st.LogpGapMax, st.RolloutKL, st.RolloutESS, st.RoutingDisagreement, st.ExpertLoadEntropy, st.ExpertLoadMax, st.RouterMargin)
			gap := tc.first > 0 && i+1 >= tc.first
			if gap != (st.LogpGap > 0) || gap != (st.LogpGapMax > 0) || gap != (st.RolloutKL > 0) {
				t.Errorf("%v step %d: gap %v, max %v, kl %v; want a gap: %v", tc.sets, i+1, st.LogpGap, st.LogpGapMax, st.RolloutKL, gap)
			}
			if !gap && (st.RolloutESS != 1 || st.RoutingDisagreement != 0) {
				t.Errorf("%v step %d: agreeing rollout with ess %v, routing disagreement %v", tc.sets, i+1, st.RolloutESS, st.RoutingDisagreement)
			}
			if !(st.RolloutESS > 0 && st.RolloutESS <= 1) || !(st.RoutingDisagreement >= 0 && st.RoutingDisagreement <= 1) ||
				!(st.ExpertLoadEntropy > 0 && st.ExpertLoadEntropy <= math.Log(E)+1e-12) || !(st.ExpertLoadMax >= 1.0/E && st.ExpertLoadMax <= 1) ||
				!(st.RouterMargin >= 0 && st.RouterMargin <= 1) || math.IsNaN(st.Loss) {
				t.Errorf("%v step %d: stats out of range: %+v", tc.sets, i+1, st)
			}
		}
	}
}

// TestRolloutPrecisionWeights: the rollout model's weights are the
// policy's rounded as algo.RoundWeights rounds them — bf16 by a Cast on
// the backend, fp16 on the host.
func TestRolloutPrecisionWeights(t *testing.T) {
	for _, p := range []string{"bf16", "fp16"} {
		cfg := tinyRL(t, "grpo")
		if err := cfg.Algo.Apply("rollout_precision=" + p); err != nil {
			t.Fatal(err)
		}
		tr := newTrainer(t, cfg)
		if err := tr.prepareRollout(); err != nil {
			t.Fatal(err)
		}
		policy := tr.Policy.HostParams()
		want := append([]float32(nil), policy...)
		if err := algo.RoundWeights(algo.RolloutPrecision(p), want); err != nil {
			t.Fatal(err)
		}
		got := tr.RolloutModel().HostParams()
		rounded := 0
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s: rollout weight %d is %v, want %v", p, i, got[i], want[i])
			}
			if got[i] != policy[i] {
				rounded++
			}
		}
		if rounded == 0 {
			t.Errorf("%s: no weight was rounded", p)
		}
	}
}

// TestRoutingReplay: on an exactly on-policy rollout, replaying its
// routing changes nothing while the policy is the one that sampled — with
// one update per rollout, the run's stats and weights are bit for bit
// those without replay; with several, the later mini-batches replay the
// rollout's experts where the updated policy's router would choose others
// (R3's point), and the runs part. Under a mismatch whose routing differs,
// it changes the update and narrows the largest log-prob gap (the tokens
// whose experts flipped).
func TestRoutingReplay(t *testing.T) {
	off, wOff := dialledRun(t, 2, "mini_batches=1")
	on, wOn := dialledRun(t, 2, "mini_batches=1", "routing_replay=true")
	if !sameParams(wOff, wOn) {
		t.Error("routing replay on an on-policy rollout changed the update")
	}
	if _, w4 := dialledRun(t, 1, "routing_replay=true"); sameParams(w4, func() []float32 { _, w := dialledRun(t, 1); return w }()) {
		t.Error("with 3 mini-batches, replaying the rollout's routing after the first update changed nothing")
	}
	for i := range on {
		on[i].GenSeconds, on[i].UpdateSeconds, off[i].GenSeconds, off[i].UpdateSeconds = 0, 0, 0, 0
		if on[i] != off[i] {
			t.Errorf("step %d: stats with replay %+v, without %+v", i+1, on[i], off[i])
		}
		if on[i].LogpGap != 0 || on[i].RoutingDisagreement != 0 {
			t.Errorf("step %d: gap %v, disagreement %v on policy", i+1, on[i].LogpGap, on[i].RoutingDisagreement)
		}
	}
	plain, wPlain := dialledRun(t, 1, "rollout_precision=bf16")
	replay, wReplay := dialledRun(t, 1, "rollout_precision=bf16", "routing_replay=true")
	t.Logf("bf16 rollout: disagreement %.4f; largest gap %.4g without replay, %.4g with", plain[0].RoutingDisagreement, plain[0].LogpGapMax, replay[0].LogpGapMax)
	if !(plain[0].RoutingDisagreement > 0) || plain[0].RoutingDisagreement != replay[0].RoutingDisagreement {
		t.Fatalf("bf16 rollout: routing disagreement %v without replay, %v with; want the same, above 0",
			plain[0].RoutingDisagreement, replay[0].RoutingDisagreement)
	}
	if !(replay[0].LogpGapMax < plain[0].LogpGapMax) {
		t.Errorf("replaying the rollout's experts did not narrow the largest gap: %v with, %v without", replay[0].LogpGapMax, plain[0].LogpGapMax)
	}
	if sameParams(wPlain, wReplay) {
		t.Error("routing replay did not change the update under a routing mismatch")
	}
}

// TestEntropyBonusTrains: with no other signal (zero advantages, no KL)
// the entropy bonus alone moves the policy, and one small step raises the
// mean entropy of the batch it was computed on; without it nothing moves.
func TestEntropyBonusTrains(t *testing.T) {
	for _, coef := range []float64{0, 0.1} {
		cfg := tinyRL(t, "grpo")
		cfg.Algo.EntropyCoef, cfg.Algo.KLCoef, cfg.Algo.Aggregation, cfg.Algo.MiniBatches = coef, 0, algo.TokenMean, 1
		tr := newTrainer(t, cfg)
		tr.Policy.Cfg.AuxLossCoef = 0                    // no load-balancing gradient either
		oracle(tr, func(_, i int) bool { return false }) // every group's rewards equal: Â = 0
		st := StepStats{LR: tr.lr()}
		c, err := tr.batch(&st)
		if err != nil {
			t.Fatal(err)
		}
		before, err := tr.measure(c, &st)
		if err != nil {
			t.Fatal(err)
		}
		h0 := st.Entropy
		w0 := tr.Policy.HostParams()
		if err := tr.update(before, &st); err != nil {
			t.Fatal(err)
		}
		var after StepStats
		if _, err := tr.measure(c, &after); err != nil {
			t.Fatal(err)
		}
		moved := !sameParams(w0, tr.Policy.HostParams())
		t.Logf("entropy_coef %v: entropy %.6f → %.6f, grad norm %.3g, loss %.4g", coef, h0, after.Entropy, st.GradNorm, st.Loss)
		if moved != (coef > 0) || (coef > 0 && !(after.Entropy > h0)) {
			t.Errorf("entropy_coef %v: policy moved %v, entropy %v → %v", coef, moved, h0, after.Entropy)
		}
	}
}
