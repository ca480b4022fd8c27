package rl

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl/algo"
	"github.com/moerl/moerl/rl/reward"
	"github.com/moerl/moerl/rl/task"
)

// Config is an RL run: the algorithm (rl/algo) and the loop around it.
type Config struct {
	Algo         algo.Config `json:"algo"`
	Task         string      `json:"task"`
	Difficulties []int       `json:"difficulties"` // training bins; empty: the task's
	Steps        int         `json:"steps"`
	Prompts      int         `json:"prompts"` // groups (prompts) per update batch
	MaxNew       int         `json:"max_new"` // generation budget per response
	Temperature  float64     `json:"temperature"`
	MiniBatches  int         `json:"mini_batches"` // optimizer steps per epoch
	LR           float64     `json:"lr"`
	MinLR        float64     `json:"min_lr"`
	Warmup       int         `json:"warmup"`
	CriticLR     float64     `json:"critic_lr"`
	WeightDecay  float64     `json:"weight_decay"`
	ClipNorm     float64     `json:"clip_norm"`
	Seed         uint64      `json:"seed"`
	// RewardSource is where the reward comes from: "rule" (the task's
	// verifier), "model" (a learned reward model's P(correct) in place of
	// the verifier's verdict, format still checked by rule), or "mix" (the
	// mean of the two). "model" and "mix" need Trainer.RM.
	RewardSource string `json:"reward_source"`
}

// RewardSources are the allowed values of Config.RewardSource.
var RewardSources = []string{"rule", "model", "mix"}

// DefaultConfig is a short GRPO run on add; Algo is filled by the preset.
func DefaultConfig(preset string) (Config, error) {
	a, err := algo.Preset(preset)
	if err != nil {
		return Config{}, err
	}
	return Config{Algo: a, Task: "add", Steps: 40, Prompts: 16, MaxNew: 40, Temperature: 1,
		MiniBatches: 1, LR: 1e-4, MinLR: 1e-4, Warmup: 0, CriticLR: 1e-4, WeightDecay: 0, ClipNorm: 1, Seed: 1,
		RewardSource: "rule"}, nil
}

// Validate names the first bad field.
func (c Config) Validate() error {
	if err := c.Algo.Validate(); err != nil {
		return err
	}
	t, err := task.Get(c.Task)
	if err != nil {
		return err
	}
	for _, d := range c.Difficulties {
		if err := task.CheckDifficulty(t, d); err != nil {
			return err
		}
	}
	switch {
	case c.Steps <= 0:
		return fmt.Errorf("rl config: steps must be positive, got %d", c.Steps)
	case c.Prompts <= 0:
		return fmt.Errorf("rl config: prompts must be positive, got %d", c.Prompts)
	case c.MaxNew <= 0:
		return fmt.Errorf("rl config: max_new must be positive, got %d", c.MaxNew)
	case !(c.Temperature > 0):
		return fmt.Errorf("rl config: temperature must be positive, got %g", c.Temperature)
	case c.MiniBatches <= 0:
		return fmt.Errorf("rl config: mini_batches must be positive, got %d", c.MiniBatches)
	case !(c.LR > 0) || c.MinLR < 0 || c.MinLR > c.LR || c.Warmup < 0:
		return fmt.Errorf("rl config: need lr > 0, 0 ≤ min_lr ≤ lr, warmup ≥ 0 (got %g, %g, %d)", c.LR, c.MinLR, c.Warmup)
	case c.Algo.Critic && !(c.CriticLR > 0):
		return fmt.Errorf("rl config: critic_lr must be positive, got %g", c.CriticLR)
	case c.WeightDecay < 0 || c.ClipNorm < 0:
		return fmt.Errorf("rl config: weight_decay and clip_norm must be ≥ 0")
	}
	if !slices.Contains(RewardSources, c.RewardSource) {
		return fmt.Errorf("rl config: reward_source %q: want one of %v", c.RewardSource, RewardSources)
	}
	if c.Prompts*c.Algo.GroupSize < c.MiniBatches {
		return fmt.Errorf("rl config: %d responses per batch cannot fill %d mini-batches", c.Prompts*c.Algo.GroupSize, c.MiniBatches)
	}
	return nil
}

// StepStats is what one RL step reports (SPEC-RL.md's per-step metrics).
type StepStats struct {
	Step          int     `json:"step"`
	RewardMean    float64 `json:"reward_mean"` // rule-based reward before shaping
	RewardStd     float64 `json:"reward_std"`
	Accuracy      float64 `json:"accuracy"`
	ZeroStdGroups float64 `json:"zero_std_groups"` // share of groups whose rewards are all equal (0 when G = 1)
	LenMean       float64 `json:"len_mean"`
	LenMax        int     `json:"len_max"`
	Truncated     float64 `json:"truncated"` // share of responses cut at the budget
	Entropy       float64 `json:"entropy"`   // mean per response token
	KLRef         float64 `json:"kl_ref"`    // k3 estimate of KL(π‖π_ref) per response token
	ClipFrac      float64 `json:"clip_frac"`
	LogpGap       float64 `json:"logp_gap"` // mean |rollout − trainer| log-prob before the update
	Loss          float64 `json:"loss"`
	ValueLoss     float64 `json:"value_loss,omitempty"`
	GradNorm      float64 `json:"grad_norm"`
	LR            float64 `json:"lr"`
	Groups        int     `json:"groups"` // groups in the update batch
	Tries         int     `json:"tries"`  // sampling rounds (dynamic sampling)
	GenSeconds    float64 `json:"gen_s"`
	UpdateSeconds float64 `json:"update_s"`
}

// Trainer runs the RL loop on a policy, with a frozen reference model and,
// for PPO, a critic.
type Trainer struct {
	Cfg            Config
	Policy, Ref    *moe.Model
	Critic         *moe.Model // nil unless Cfg.Algo.Critic
	RM             *moe.Model // learned reward model (value head), for Cfg.RewardSource model or mix
	Tok            *tokenizer.Tokenizer
	Step           int // steps done
	DataRNG        *engine.RNG
	SampleRNG      *engine.RNG
	Success        map[int]float64 // per difficulty: moving accuracy, for prioritized sampling
	task           task.Task
	scheme         reward.Scheme
	bins           []int
	actsCache      map[[2]int]*moe.Acts
	criticActCache map[[2]int]*moe.Acts
}

// NewTrainer starts a run from a policy; ref is a frozen copy of the
// starting weights (the reference policy).
func NewTrainer(cfg Config, policy, ref *moe.Model, tok *tokenizer.Tokenizer) (*Trainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t := &Trainer{Cfg: cfg, Policy: policy, Ref: ref, Tok: tok,
		DataRNG: engine.NewRNG(cfg.Seed, engine.StreamData), SampleRNG: engine.NewRNG(cfg.Seed, engine.StreamSample),
		Success: map[int]float64{}, actsCache: map[[2]int]*moe.Acts{}, criticActCache: map[[2]int]*moe.Acts{}}
	t.task, _ = task.Get(cfg.Task)
	var err error
	if t.scheme, err = reward.ParseScheme(string(cfg.Algo.RewardScheme)); err != nil {
		return nil, err
	}
	t.bins = cfg.Difficulties
	if len(t.bins) == 0 {
		t.bins, _ = t.task.Difficulties()
	}
	if cfg.Algo.Critic {
		if t.Critic, err = moe.NewCritic(policy); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// drawProblems picks n training problems. Difficulty bins are uniform, or
// (Kimi) in curriculum order — the easiest bins first, the harder ones
// opening up as training goes — and/or weighted toward bins the policy
// solves less often (prioritized sampling).
func (t *Trainer) drawProblems(n int) []task.Problem {
	bins := slices.Sorted(slices.Values(t.bins))
	if t.Cfg.Algo.Curriculum {
		open := 1 + (len(bins)-1)*t.Step/max(1, t.Cfg.Steps-1)
		bins = bins[:min(open, len(bins))]
	}
	w := make([]float64, len(bins))
	var total float64
	for i, b := range bins {
		w[i] = 1
		if t.Cfg.Algo.PrioritizedSampling {
			if s, ok := t.Success[b]; ok {
				w[i] = 1 - s + 0.05
			}
		}
		total += w[i]
	}
	out := make([]task.Problem, n)
	for i := range out {
		u := t.DataRNG.Float64() * total
		j := 0
		for ; j < len(bins)-1 && u >= w[j]; j++ {
			u -= w[j]
		}
		out[i] = t.task.Generate(t.DataRNG.Rand, bins[j])
	}
	return out
}

// collected is the update batch: responses with their shaped rewards.
type collected struct {
	prompts  [][]int32
	problems []task.Problem
	seqs     []moe.Sequence
	results  []reward.Result
	rewards  []float64 // shaped
	groups   []int
}

// collect samples until the batch has Cfg.Prompts groups (dynamic sampling
// keeps only groups with both correct and wrong answers, trying at most
// MaxTries rounds).
func (t *Trainer) collect(st *StepStats) (*collected, error) {
	a, G := t.Cfg.Algo, t.Cfg.Algo.GroupSize
	c := &collected{}
	tries := 1
	if a.DynamicSampling {
		tries = max(1, a.MaxTries)
	}
	var rewardsRaw []float64
	var zero, groupsSeen int
	for try := 0; try < tries && len(c.prompts) < t.Cfg.Prompts; try++ {
		st.Tries++
		r, err := Sample(t.Policy, t.Tok, t.drawProblems(t.Cfg.Prompts), G,
			moe.SampleOptions{Temperature: t.Cfg.Temperature, MaxNew: t.Cfg.MaxNew}, t.scheme, t.SampleRNG)
		if err != nil {
			return nil, err
		}
		raw, err := t.rewards(r)
		if err != nil {
			return nil, err
		}
		lengths, correct, groups := make([]int, len(r.Seqs)), make([]bool, len(r.Seqs)), make([]int, len(r.Seqs))
		for i, s := range r.Seqs {
			lengths[i], correct[i], groups[i] = len(s.Tokens), r.Results[i].Correct, s.Prompt
		}
		shaped, err := algo.ShapeRewards(a, raw, lengths, correct, groups, t.Cfg.MaxNew)
		if err != nil {
			return nil, err
		}
		keep, err := algo.KeepGroups(correct, groups)
		if err != nil {
			return nil, err
		}
		z, n, err := algo.ZeroSpreadGroups(shaped, groups)
		if err != nil {
			return nil, err
		}
		zero, groupsSeen = zero+z, groupsSeen+n
		for p := range r.Problems {
			if a.DynamicSampling && !keep[p*G] || len(c.prompts) >= t.Cfg.Prompts {
				continue
			}
			g := len(c.prompts)
			c.prompts = append(c.prompts, r.Prompts[p])
			c.problems = append(c.problems, r.Problems[p])
			for i := p * G; i < (p+1)*G; i++ {
				c.seqs = append(c.seqs, r.Seqs[i])
				c.results = append(c.results, r.Results[i])
				c.rewards = append(c.rewards, shaped[i])
				c.groups = append(c.groups, g)
				rewardsRaw = append(rewardsRaw, raw[i])
			}
		}
		// Success per difficulty, for prioritized sampling.
		for p, pr := range r.Problems {
			var ok float64
			for i := p * G; i < (p+1)*G; i++ {
				if r.Results[i].Correct {
					ok++
				}
			}
			old, seen := t.Success[pr.Difficulty]
			if !seen {
				old = ok / float64(G)
			}
			t.Success[pr.Difficulty] = 0.9*old + 0.1*ok/float64(G)
		}
	}
	st.ZeroStdGroups = float64(zero) / float64(max(groupsSeen, 1))
	st.RewardMean, st.RewardStd = meanStd(rewardsRaw)
	return c, nil
}

// rewards are the rollout's rewards from the configured source.
func (t *Trainer) rewards(r *Rollout) ([]float64, error) {
	out := make([]float64, len(r.Seqs))
	for i := range out {
		out[i] = r.Results[i].Reward
	}
	if t.Cfg.RewardSource == "rule" || t.Cfg.RewardSource == "" {
		return out, nil
	}
	if t.RM == nil {
		return nil, fmt.Errorf("reward source %q needs a reward model", t.Cfg.RewardSource)
	}
	ex := make([]RMExample, len(r.Seqs))
	for i, s := range r.Seqs {
		ex[i] = RMExample{Prompt: r.Prompts[s.Prompt], Response: s.Tokens}
	}
	sc := t.scheme
	for i, p := range RMScores(t.RM, ex) {
		model := sc.Malformed
		if r.Results[i].WellFormed || r.Results[i].Correct {
			model = sc.Wrong + (sc.Correct-sc.Wrong)*p
		}
		if t.Cfg.RewardSource == "mix" {
			model = (model + out[i]) / 2
		}
		out[i] = model
	}
	return out, nil
}

func meanStd(x []float64) (float64, float64) {
	if len(x) == 0 {
		return 0, 0
	}
	var s, ss float64
	for _, v := range x {
		s += v
	}
	m := s / float64(len(x))
	for _, v := range x {
		ss += (v - m) * (v - m)
	}
	return m, math.Sqrt(ss / float64(len(x)))
}

// rows lays out the batch for the model: row i is prompt + response i,
// right-padded to T; response token j of row i is predicted at position
// plen_i − 1 + j.
type rows struct {
	B, T, L  int
	ids, tgt []int32
	start    []int // plen − 1 per row
	lengths  []int
}

func layout(c *collected, L, maxSeq int) *rows {
	r := &rows{B: len(c.seqs), L: L}
	for i, s := range c.seqs {
		r.T = max(r.T, len(c.prompts[c.groups[i]])+len(s.Tokens))
	}
	r.T = min((r.T+7)/8*8, maxSeq)
	r.ids, r.tgt = make([]int32, r.B*r.T), make([]int32, r.B*r.T)
	for i, s := range c.seqs {
		full := append(slices.Clone(c.prompts[c.groups[i]]), s.Tokens...)
		for j := 0; j+1 < len(full); j++ {
			r.ids[i*r.T+j], r.tgt[i*r.T+j] = full[j], full[j+1]
		}
		r.start = append(r.start, len(c.prompts[c.groups[i]])-1)
		r.lengths = append(r.lengths, len(s.Tokens))
	}
	return r
}

// gather maps per-position values of rows [lo, hi) to the B×L response layout.
func (r *rows) gather(dst []float32, src []float32, lo, hi int) {
	for i := lo; i < hi; i++ {
		for j := range r.lengths[i] {
			dst[(i-lo)*r.L+j] = src[(i-lo)*r.T+r.start[i]+j]
		}
	}
}

// scatter is gather's transpose (zero elsewhere).
func (r *rows) scatter(dst []float32, src []float32, lo, hi int) {
	clear(dst)
	for i := lo; i < hi; i++ {
		for j := range r.lengths[i] {
			dst[(i-lo)*r.T+r.start[i]+j] = src[(i-lo)*r.L+j]
		}
	}
}

func (t *Trainer) acts(m *moe.Model, cache map[[2]int]*moe.Acts, B, T int) *moe.Acts {
	k := [2]int{B, T}
	if a, ok := cache[k]; ok {
		return a
	}
	for key, a := range cache { // one shape at a time: free the others
		a.Free(m.Backend())
		delete(cache, key)
	}
	a := m.NewActs(B, T)
	cache[k] = a
	return a
}

// forward returns per-position outputs of m for rows [lo, hi).
func (t *Trainer) forward(m *moe.Model, cache map[[2]int]*moe.Acts, r *rows, lo, hi int, o moe.ForwardOptions) ([]float32, *moe.Acts) {
	a := t.acts(m, cache, hi-lo, r.T)
	return m.Forward(a, r.ids[lo*r.T:hi*r.T], r.tgt[lo*r.T:hi*r.T], o), a
}

// TrainStep samples a batch, scores it and updates the policy (and critic).
func (t *Trainer) TrainStep() (StepStats, error) {
	cfg, a := t.Cfg, t.Cfg.Algo
	st := StepStats{Step: t.Step + 1}
	t0 := time.Now()
	c, err := t.collect(&st)
	if err != nil {
		return st, err
	}
	st.GenSeconds = time.Since(t0).Seconds()
	t1 := time.Now()
	st.Groups = len(c.prompts)
	if len(c.seqs) == 0 { // dynamic sampling found no signal: nothing to learn from
		t.Step++
		st.UpdateSeconds = time.Since(t1).Seconds()
		return st, nil
	}
	L := cfg.MaxNew
	r := layout(c, L, t.Policy.Cfg.MaxSeq)
	B := r.B
	b := &algo.Batch{B: B, L: L, OldLogp: make([]float32, B*L), RefLogp: make([]float32, B*L),
		Mask: make([]float32, B*L), Rewards: c.rewards, Groups: c.groups, Lengths: r.lengths, Truncated: make([]bool, B)}
	var correct int
	for i, s := range c.seqs {
		copy(b.OldLogp[i*L:], s.LogProbs)
		for j := range s.Tokens {
			b.Mask[i*L+j] = 1
		}
		b.Truncated[i] = s.Truncated
		st.LenMean += float64(len(s.Tokens)) / float64(B)
		st.LenMax = max(st.LenMax, len(s.Tokens))
		if s.Truncated {
			st.Truncated += 1 / float64(B)
		}
		if c.results[i].Correct {
			correct++
		}
	}
	st.Accuracy = float64(correct) / float64(B)
	fo := moe.ForwardOptions{Temperature: cfg.Temperature}

	// Before the update: the trainer's own log-probs (for the gap and the
	// entropy), the reference's, and the critic's values.
	cur := make([]float32, B*L)
	eo := fo
	eo.Entropy = true
	logp, acts := t.forward(t.Policy, t.actsCache, r, 0, B, eo)
	r.gather(cur, logp, 0, B)
	ent := make([]float32, B*L)
	r.gather(ent, acts.Entropy(), 0, B)
	refLogp, _ := t.forward(t.Ref, t.actsCache, r, 0, B, fo)
	r.gather(b.RefLogp, refLogp, 0, B)
	var n float64
	for p, m := range b.Mask {
		if m == 0 {
			continue
		}
		n++
		st.LogpGap += math.Abs(float64(cur[p] - b.OldLogp[p]))
		st.Entropy += float64(ent[p])
		kl, _ := algo.KL(algo.K3, float64(cur[p]), float64(b.RefLogp[p]))
		st.KLRef += kl
	}
	st.LogpGap, st.Entropy, st.KLRef = st.LogpGap/n, st.Entropy/n, st.KLRef/n
	if t.Critic != nil {
		b.OldValues = make([]float32, B*L)
		v, _ := t.forward(t.Critic, t.criticActCache, r, 0, B, moe.ForwardOptions{})
		r.gather(b.OldValues, v, 0, B)
	}
	adv, ret, err := algo.ComputeAdvantages(a, b)
	if err != nil {
		return st, err
	}
	b.Advantages = adv
	lossMask, err := algo.LossMask(a, b)
	if err != nil {
		return st, err
	}

	// Update: epochs over mini-batches of whole responses.
	if a.ResetOptimizer {
		t.Policy.ResetOptimizer()
	}
	sched := engine.Schedule{Peak: cfg.LR, Min: cfg.MinLR, Warmup: cfg.Warmup, Total: cfg.Steps}
	st.LR = sched.LR(t.Step)
	opt := moe.OptConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: cfg.WeightDecay, ClipNorm: cfg.ClipNorm}
	var updates float64
	epochs := max(1, a.Epochs)
	for range epochs {
		for k := range cfg.MiniBatches {
			lo, hi := k*B/cfg.MiniBatches, (k+1)*B/cfg.MiniBatches
			if hi == lo {
				continue
			}
			sub := subBatch(b, lo, hi)
			logp, acts := t.forward(t.Policy, t.actsCache, r, lo, hi, fo)
			sub.NewLogp = make([]float32, (hi-lo)*L)
			r.gather(sub.NewLogp, logp, lo, hi)
			loss, dNew, ps, err := algo.PolicyLoss(a, sub)
			if err != nil {
				return st, err
			}
			dlogp := make([]float32, (hi-lo)*r.T)
			r.scatter(dlogp, dNew, lo, hi)
			t.Policy.ZeroGrad()
			t.Policy.Backward(acts, dlogp)
			norm, err := t.Policy.Step(st.LR, opt)
			if err != nil {
				return st, fmt.Errorf("policy update: %w", err)
			}
			st.GradNorm += norm
			st.Loss += loss
			st.ClipFrac += ps.ClipFrac
			updates++
			if t.Critic != nil {
				v, cacts := t.forward(t.Critic, t.criticActCache, r, lo, hi, moe.ForwardOptions{})
				vals := make([]float32, (hi-lo)*L)
				r.gather(vals, v, lo, hi)
				vl, dv, _, err := algo.ValueLoss(vals, sub.OldValues, ret[lo*L:hi*L], lossMask[lo*L:hi*L], L, a.ValueClip, a.Aggregation)
				if err != nil {
					return st, err
				}
				dvals := make([]float32, (hi-lo)*r.T)
				r.scatter(dvals, dv, lo, hi)
				t.Critic.ZeroGrad()
				t.Critic.Backward(cacts, dvals)
				if _, err := t.Critic.Step(cfg.CriticLR, opt); err != nil {
					return st, fmt.Errorf("critic update: %w", err)
				}
				st.ValueLoss += vl
			}
		}
	}
	st.Loss /= updates
	st.ClipFrac /= updates
	st.GradNorm /= updates
	st.ValueLoss /= updates
	t.Step++
	st.UpdateSeconds = time.Since(t1).Seconds()
	return st, nil
}

// subBatch is rows [lo, hi) of b, sharing its memory.
func subBatch(b *algo.Batch, lo, hi int) *algo.Batch {
	L := b.L
	s := &algo.Batch{B: hi - lo, L: L, OldLogp: b.OldLogp[lo*L : hi*L], Mask: b.Mask[lo*L : hi*L],
		Advantages: b.Advantages[lo*L : hi*L], Rewards: b.Rewards[lo:hi], Groups: b.Groups[lo:hi],
		Lengths: b.Lengths[lo:hi], Truncated: b.Truncated[lo:hi]}
	if b.RefLogp != nil {
		s.RefLogp = b.RefLogp[lo*L : hi*L]
	}
	if b.OldValues != nil {
		s.OldValues = b.OldValues[lo*L : hi*L]
	}
	return s
}

// trainerState is what a checkpoint keeps of the loop besides the weights.
type trainerState struct {
	Success map[int]float64 `json:"success"`
	Init    string          `json:"init"` // checkpoint the run started from (the reference)
}

// Save writes the policy (and critic) checkpoints with the loop's state.
func (t *Trainer) Save(policyPath, criticPath, initPath string) error {
	cfgJSON, _ := json.Marshal(t.Cfg)
	extra, _ := json.Marshal(trainerState{Success: t.Success, Init: initPath})
	st := moe.RunState{Stage: "rl", Step: t.Step, Config: cfgJSON, Extra: extra,
		RNG: map[string][]byte{"data": t.DataRNG.State(), "sample": t.SampleRNG.State()}}
	if err := t.Policy.SaveCheckpoint(policyPath, t.Tok, st, true); err != nil {
		return err
	}
	if t.Critic != nil {
		cs := moe.RunState{Stage: "rl-critic", Step: t.Step}
		if err := t.Critic.SaveCheckpoint(criticPath, t.Tok, cs, true); err != nil {
			return err
		}
	}
	return nil
}

// Restore continues a run from the state saved with the policy checkpoint
// (and the critic's weights, when the run has one).
func (t *Trainer) Restore(st moe.RunState, critic *moe.Model) error {
	var ts trainerState
	if len(st.Extra) > 0 {
		if err := json.Unmarshal(st.Extra, &ts); err != nil {
			return fmt.Errorf("restore rl state: %w", err)
		}
	}
	if err := t.DataRNG.SetState(st.RNG["data"]); err != nil {
		return err
	}
	if err := t.SampleRNG.SetState(st.RNG["sample"]); err != nil {
		return err
	}
	t.Step = st.Step
	if ts.Success != nil {
		t.Success = ts.Success
	}
	if t.Cfg.Algo.Critic {
		if critic == nil {
			return fmt.Errorf("restore rl state: the run has a critic but no critic checkpoint was given")
		}
		t.Critic = critic
	}
	return nil
}
