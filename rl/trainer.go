package rl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl/algo"
	"github.com/moerl/moerl/rl/reward"
	"github.com/moerl/moerl/rl/task"
)

// Config is an RL run: the algorithm (rl/algo) and the loop around it.
// Each field's help tag is its one-line description for the command line.
type Config struct {
	Algo         algo.Config `json:"algo" help:"the RL algorithm: a preset with overrides (see the algo keys)"`
	Task         string      `json:"task" help:"the reasoning task to train on (rl/task)"`
	Difficulties []int       `json:"difficulties" help:"training difficulty bins of the task; empty: all of the task's"`
	Steps        int         `json:"steps" help:"RL steps (iterations) of the run; > 0"`
	Prompts      int         `json:"prompts" help:"prompts (groups) per update batch; > 0"`
	MaxNew       int         `json:"max_new" help:"generation budget per response, tokens; > 0"`
	Temperature  float64     `json:"temperature" help:"sampling temperature, also applied to the trainer's log-probs; > 0"`
	LR           float64     `json:"lr" help:"peak policy learning rate (AdamW); > 0"`
	MinLR        float64     `json:"min_lr" help:"learning rate at the end of the cosine schedule; in [0, lr]"`
	Warmup       int         `json:"warmup" help:"linear learning-rate warm-up, steps; ≥ 0"`
	CriticLR     float64     `json:"critic_lr" help:"critic learning rate (constant); > 0 when the algorithm has a critic"`
	WeightDecay  float64     `json:"weight_decay" help:"AdamW weight decay of policy and critic; ≥ 0"`
	ClipNorm     float64     `json:"clip_norm" help:"global gradient-norm clip; ≥ 0, 0 is off"`
	Seed         uint64      `json:"seed" help:"seed of the data, sampling and reward-control streams"`
	// RewardSource is where the reward comes from: "rule" (the task's
	// verifier), "model" (a learned reward model's P(correct) in place of
	// the verifier's verdict, format still checked by rule), or "mix" (the
	// mean of the two). "model" and "mix" need Trainer.RM.
	RewardSource string `json:"reward_source" help:"where the reward comes from: rule (the task's verifier), model (a learned reward model's P(correct), format by rule), mix (their mean)"`
	// SkipNonFinite skips an update whose loss or gradient is not finite
	// (no optimizer step for that mini-batch; StepStats.SkippedUpdates
	// counts them) instead of failing the step. Without it such an update
	// fails the step with an error wrapping a *moe.NonFiniteError, and the
	// policy and critic are put back as they were before the step.
	// It is how a run copes with a fault, not a setting of the
	// experiment, so it is not part of the recorded settings (json "-"):
	// the run layer sets it from --skip-nonfinite.
	SkipNonFinite bool `json:"-" help:"skip (and count) an update whose loss or gradient is not finite instead of failing the step; set by --skip-nonfinite"`
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
		LR: 1e-4, MinLR: 1e-4, Warmup: 0, CriticLR: 1e-4, WeightDecay: 0, ClipNorm: 1, Seed: 1,
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
	if ctl := c.Algo.RewardControl; ctl != "" && ctl != algo.RewardControlNone && c.RewardSource != "rule" {
		return fmt.Errorf("rl config: reward_control %q replaces the verifier's verdict and needs reward_source rule, not %q", ctl, c.RewardSource)
	}
	if n := c.Prompts * c.Algo.GroupSize; n < c.Algo.MiniBatches {
		return fmt.Errorf("rl config: %d prompts × group_size %d = %d responses per batch cannot fill %d mini-batches (algo mini_batches)",
			c.Prompts, c.Algo.GroupSize, n, c.Algo.MiniBatches)
	}
	return nil
}

// ErrShortBatch is wrapped by the error of a step that dynamic sampling
// could not fill within max_tries rounds when the algorithm's short_batch
// is "fail".
var ErrShortBatch = errors.New("dynamic sampling could not fill the update batch")

// StepStats is what one RL step reports (SPEC-RL.md's per-step metrics),
// one line of metrics.jsonl. Rewards are in the reward scheme's units,
// lengths in tokens, log-probs in nats, times in seconds; shares and
// fractions are in [0, 1]. "Sampled" means every response drawn this step,
// over all sampling rounds; "the update batch" the groups kept for the
// update, which is the same set unless dynamic sampling dropped some.
type StepStats struct {
	Step int `json:"step"` // 1-based

	// Over every sampled response.
	Sampled    int     `json:"sampled"`     // responses sampled this step
	RewardMean float64 `json:"reward_mean"` // reward from the reward source (after any reward control), before shaping
	RewardStd  float64 `json:"reward_std"`  // population std of that reward
	Accuracy   float64 `json:"accuracy"`    // share of responses the verifier accepts (the true verdict, whatever the reward control)
	// ZeroStdGroups is the share of sampled groups whose shaped rewards
	// are all equal (no signal under a group baseline); 0 when G = 1.
	ZeroStdGroups float64 `json:"zero_std_groups"`

	// Over the update batch.
	RewardMeanKept float64 `json:"reward_mean_kept"`
	RewardStdKept  float64 `json:"reward_std_kept"`
	AccuracyKept   float64 `json:"accuracy_kept"`
	LenMean        float64 `json:"len_mean"`  // mean response length, tokens
	LenMax         int     `json:"len_max"`   // longest response, tokens
	Truncated      float64 `json:"truncated"` // share of responses cut at the budget
	Entropy        float64 `json:"entropy"`   // mean per response token, nats
	KLRef          float64 `json:"kl_ref"`    // k3 estimate of KL(π‖π_ref) per response token, nats
	LogpGap        float64 `json:"logp_gap"`  // mean |rollout − trainer| log-prob before the update, nats
	// The mismatch between the log-probs recorded while sampling (l^roll)
	// and the trainer's recomputation (l°) before the update, over response
	// tokens (algo.RolloutStats): the largest |l° − l^roll|, nats; the mean
	// k3 estimate of KL(π_roll‖π°), nats; the effective sample size
	// (Σw)²/(N·Σw²) of the rollout correction's weights (of the raw token
	// weights w = exp(l° − l^roll) without one), in (0, 1]; and the share of
	// tokens whose weight exceeds the cap C (masked by MIS, truncated by
	// TIS). All are 0, or 1 for the ESS, when sampler and trainer agree.
	LogpGapMax        float64 `json:"logp_gap_max"`
	RolloutKL         float64 `json:"rollout_kl"`
	RolloutESS        float64 `json:"rollout_ess"`
	RolloutMaskedFrac float64 `json:"rollout_masked_frac"`
	// LengthPenalty is the weight of Kimi's length reward this step (0
	// during its warm-up or when off).
	LengthPenalty float64 `json:"length_penalty"`

	// The router (MoE models; 0 for a dense one), over the response tokens
	// of the update batch in the trainer's forward before the update
	// (moe.RoutingStats), per layer and averaged over layers:
	// RoutingDisagreement is the share of (token, layer) pairs whose
	// top-k expert set chosen while sampling differs from the one the
	// trainer's router ranks first (0 when sampler and trainer agree;
	// with routing replay, the choice the replay overrides);
	// ExpertLoadEntropy the entropy, nats, of the share of the tokens'
	// expert assignments each expert received (log E when balanced);
	// ExpertLoadMax the most loaded expert's share of them (1/E when
	// balanced); RouterMargin the mean gap between the k-th and the
	// (k+1)-th router probability, how near a token is to changing its
	// experts.
	RoutingDisagreement float64 `json:"routing_disagreement"`
	ExpertLoadEntropy   float64 `json:"expert_load_entropy"`
	ExpertLoadMax       float64 `json:"expert_load_max"`
	RouterMargin        float64 `json:"router_margin"`

	// Over the updates taken (skipped ones excluded); 0 when none was.
	ClipFrac  float64 `json:"clip_frac"` // share of loss tokens whose ratio clip was active
	RatioMin  float64 `json:"ratio_min"` // smallest ρ = π/π_old on a loss token
	RatioMax  float64 `json:"ratio_max"` // largest ρ on a loss token
	ApproxKL  float64 `json:"approx_kl"` // mean k3 estimate of KL(π_old‖π) per loss token, nats
	Loss      float64 `json:"loss"`      // policy loss (+ KL term in the loss), mean over updates
	ValueLoss float64 `json:"value_loss,omitempty"`
	GradNorm  float64 `json:"grad_norm"` // policy gradient norm before clipping, mean over updates
	LR        float64 `json:"lr"`        // policy learning rate this step

	// Batch and update counts.
	Groups       int  `json:"groups"`        // groups in the update batch
	GroupsWanted int  `json:"groups_wanted"` // groups the batch asks for (prompts)
	ShortBatch   bool `json:"short_batch"`   // dynamic sampling ran out of tries before filling the batch
	Tries        int  `json:"tries"`         // sampling rounds (dynamic sampling)
	Updates      int  `json:"updates"`       // policy optimizer steps taken
	// SkippedUpdates counts the policy updates skipped because their loss
	// or gradient was not finite (Config.SkipNonFinite);
	// SkippedCriticUpdates the critic's.
	SkippedUpdates       int `json:"skipped_updates"`
	SkippedCriticUpdates int `json:"skipped_critic_updates,omitempty"`

	GenSeconds    float64 `json:"gen_s"`    // sampling and scoring
	UpdateSeconds float64 `json:"update_s"` // everything after
}

// MarshalJSON writes the stats as encoding/json would, except that a
// metric that is not finite (the entropy of a diverged policy, say), which
// encoding/json refuses, is written as null: the metrics line of a step
// that skipped non-finite updates is still written and readable.
func (s StepStats) MarshalJSON() ([]byte, error) {
	type plain StepStats // without this method
	v := reflect.ValueOf(s)
	finite := true
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Float64 && (math.IsNaN(f.Float()) || math.IsInf(f.Float(), 0)) {
			finite = false
		}
	}
	if finite {
		return json.Marshal(plain(s))
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for i := range v.NumField() {
		name, opts, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
		f := v.Field(i)
		if opts == "omitempty" && f.IsZero() {
			continue
		}
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:", name)
		if f.Kind() == reflect.Float64 && (math.IsNaN(f.Float()) || math.IsInf(f.Float(), 0)) {
			b.WriteString("null")
			continue
		}
		val, err := json.Marshal(f.Interface())
		if err != nil {
			return nil, err
		}
		b.Write(val)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
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
	control        reward.Control
	bins           []int
	actsCache      map[[2]int]*moe.Acts
	criticActCache map[[2]int]*moe.Acts
	// policySaved and criticSaved hold the models' state at the start of
	// the update, to put back when a step fails part-way.
	policySaved, criticSaved modelState
	// roll is the model the rollouts sample from when a mismatch is dialled
	// in (algo rollout_precision, rollout_staleness), nil otherwise: the
	// policy's weights of RolloutStaleness steps ago, rounded to
	// RolloutPrecision. stale holds the policy's weights at the start of
	// each of the last RolloutStaleness + 1 steps, oldest first.
	roll       *moe.Model
	stale      []snapshot
	savedStale map[int]string // snapshot files this trainer wrote or restored, by step
	// Seams for tests: sample, when set, replaces Sample for one round of
	// the batch; afterBackward runs after each policy backward pass, before
	// its optimizer step.
	sample        func(problems []task.Problem) (*Rollout, error)
	afterBackward func(m *moe.Model)
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
	if t.control, err = reward.ParseControl(string(cfg.Algo.RewardControl)); err != nil {
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

// TrainStep is one iteration of the algorithm, in three parts:
//
//  1. batch: sample G responses to each of Cfg.Prompts problems, score
//     them, shape the rewards and (dynamic sampling) keep the groups with
//     some correct and some wrong answers, sampling again until the batch
//     is full or the tries run out; lay the batch out for the model.
//  2. measure: before any update, the trainer's log-probs l° of the
//     sampled tokens, the reference's l^ref, the critic's values V, the
//     advantages Â, and the per-step metrics.
//  3. update: Epochs passes over MiniBatches mini-batches of whole
//     responses, one optimizer step each (and one for the critic).
//
// On error the step is not counted; the policy and critic are as they
// were before it (Config.SkipNonFinite says what a non-finite update
// does), while the RNG streams and the success rates have moved on.
func (t *Trainer) TrainStep() (StepStats, error) {
	st := StepStats{Step: t.Step + 1, GroupsWanted: t.Cfg.Prompts, LR: t.lr()}
	t0 := time.Now()
	if err := t.prepareRollout(); err != nil {
		return st, err
	}
	c, err := t.batch(&st)
	if err != nil {
		return st, err
	}
	st.GenSeconds = time.Since(t0).Seconds()
	t1 := time.Now()
	if len(c.seqs) > 0 { // dynamic sampling may find no group with a signal: nothing to learn from
		m, err := t.measure(c, &st)
		if err != nil {
			return st, err
		}
		if err := t.update(m, &st); err != nil {
			return st, err
		}
	}
	t.Step++
	st.UpdateSeconds = time.Since(t1).Seconds()
	return st, nil
}

// lr is the policy's learning rate at the current step.
func (t *Trainer) lr() float64 {
	c := t.Cfg
	return engine.Schedule{Peak: c.LR, Min: c.MinLR, Warmup: c.Warmup, Total: c.Steps}.LR(t.Step)
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

// collected is the update batch: the kept groups' responses with their
// shaped rewards.
type collected struct {
	prompts  [][]int32
	problems []task.Problem
	seqs     []moe.Sequence
	results  []reward.Result
	rewards  []float64 // shaped
	groups   []int
}

// scored is one sampling round with its rewards and the filter's verdict.
type scored struct {
	*Rollout
	raw    []float64 // per response: from the reward source, before shaping
	shaped []float64 // raw plus DAPO's overlong and Kimi's length shaping
	keep   []bool    // per response: its group may enter the update batch
}

// score scores one sampling round: rewards from the configured source,
// shaped as the algorithm asks (the length reward at this step's weight),
// and, under dynamic sampling, kept when the group's correctness varies
// (algo.KeepGroups).
func (t *Trainer) score(r *Rollout) (*scored, error) { return t.scoreRound(r, 0) }

// scoreRound is score for sampling round `round` of the step: under a
// reward control (algo reward_control) the round's rewards, and the
// verdicts shaping and filtering read, are the control's, the random one
// tossing the coin of (seed, step, round, response).
func (t *Trainer) scoreRound(r *Rollout, round int) (*scored, error) {
	a := t.Cfg.Algo
	raw, err := t.rewards(r)
	if err != nil {
		return nil, err
	}
	n := len(r.Seqs)
	lengths, correct, groups := make([]int, n), make([]bool, n), make([]int, n)
	for i, s := range r.Seqs {
		lengths[i], correct[i], groups[i] = len(s.Tokens), r.Results[i].Correct, s.Prompt
	}
	if t.control != reward.NoControl {
		for i := range raw {
			raw[i], correct[i] = t.control.Apply(r.Results[i], t.scheme, reward.Coin(t.Cfg.Seed, t.Step, round, i))
		}
	}
	shape := a
	shape.LengthPenalty = a.LengthPenaltyAt(t.Step)
	shaped, err := algo.ShapeRewards(shape, raw, lengths, correct, groups, t.Cfg.MaxNew)
	if err != nil {
		return nil, err
	}
	keep := make([]bool, n)
	if a.DynamicSampling {
		if keep, err = algo.KeepGroups(correct, groups); err != nil {
			return nil, err
		}
	} else {
		for i := range keep {
			keep[i] = true
		}
	}
	return &scored{Rollout: r, raw: raw, shaped: shaped, keep: keep}, nil
}

// batch samples until the update batch has Cfg.Prompts groups (without
// dynamic sampling one round always fills it; with it, at most MaxTries
// rounds), and reports the sampled and the kept responses' rewards.
func (t *Trainer) batch(st *StepStats) (*collected, error) {
	a, G := t.Cfg.Algo, t.Cfg.Algo.GroupSize
	st.LengthPenalty = a.LengthPenaltyAt(t.Step)
	c := &collected{}
	tries := 1
	if a.DynamicSampling {
		tries = max(1, a.MaxTries)
	}
	var rawAll, rawKept []float64
	var correctAll, zero, counted int
	for try := 0; try < tries && len(c.prompts) < t.Cfg.Prompts; try++ {
		st.Tries++
		r, err := t.sampleRound(t.drawProblems(t.Cfg.Prompts))
		if err != nil {
			return nil, err
		}
		s, err := t.scoreRound(r, try)
		if err != nil {
			return nil, err
		}
		st.Sampled += len(r.Seqs)
		rawAll = append(rawAll, s.raw...)
		for _, res := range r.Results {
			if res.Correct {
				correctAll++
			}
		}
		groups := make([]int, len(r.Seqs))
		for i, q := range r.Seqs {
			groups[i] = q.Prompt
		}
		z, n, err := algo.ZeroSpreadGroups(s.shaped, groups)
		if err != nil {
			return nil, err
		}
		zero, counted = zero+z, counted+n
		for p := range r.Problems {
			if !s.keep[p*G] || len(c.prompts) >= t.Cfg.Prompts {
				continue
			}
			g := len(c.prompts)
			c.prompts = append(c.prompts, r.Prompts[p])
			c.problems = append(c.problems, r.Problems[p])
			for i := p * G; i < (p+1)*G; i++ {
				c.seqs = append(c.seqs, r.Seqs[i])
				c.results = append(c.results, r.Results[i])
				c.rewards = append(c.rewards, s.shaped[i])
				c.groups = append(c.groups, g)
				rawKept = append(rawKept, s.raw[i])
			}
		}
		t.updateSuccess(r)
	}
	st.Groups = len(c.prompts)
	st.ShortBatch = st.Groups < t.Cfg.Prompts
	st.ZeroStdGroups = float64(zero) / float64(max(counted, 1))
	st.RewardMean, st.RewardStd = meanStd(rawAll)
	st.Accuracy = float64(correctAll) / float64(max(st.Sampled, 1))
	st.RewardMeanKept, st.RewardStdKept = meanStd(rawKept)
	var correctKept int
	for _, res := range c.results {
		if res.Correct {
			correctKept++
		}
	}
	st.AccuracyKept = float64(correctKept) / float64(max(len(c.results), 1))
	if st.ShortBatch && a.ShortBatch == algo.ShortBatchFail {
		return nil, fmt.Errorf("%w: %d of %d groups had both correct and wrong answers after %d tries of %d prompts (short_batch=fail; raise max_tries or train on easier problems)",
			ErrShortBatch, st.Groups, t.Cfg.Prompts, st.Tries, t.Cfg.Prompts)
	}
	return c, nil
}

// sampleRound draws G responses to each problem from the policy and
// scores them with the rule-based verifier.
func (t *Trainer) sampleRound(problems []task.Problem) (*Rollout, error) {
	if t.sample != nil {
		return t.sample(problems)
	}
	return Sample(t.RolloutModel(), t.Tok, problems, t.Cfg.Algo.GroupSize, t.SampleOptions(), t.scheme, t.SampleRNG)
}

// SampleOptions are the options the trainer samples with: its temperature
// and budget, and the router's choices recorded (for the routing metrics
// and routing replay).
func (t *Trainer) SampleOptions() moe.SampleOptions {
	return moe.SampleOptions{Temperature: t.Cfg.Temperature, MaxNew: t.Cfg.MaxNew, RecordRouting: !t.Policy.Cfg.DenseFFN}
}

// updateSuccess folds a round's accuracy per difficulty into the moving
// success rates that prioritized sampling reads.
func (t *Trainer) updateSuccess(r *Rollout) {
	G := r.G
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
	routing  [][]int32 // per row: the experts chosen while sampling (moe.Sequence.Routing), or nil
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
		r.routing = append(r.routing, s.Routing)
	}
	return r
}

// replay lays out the recorded routing of rows [lo, hi) for a forward of
// m over them (moe.ForwardOptions.Replay): every position the sampler
// routed gets its experts, the rest (padding, or a row sampled without a
// record) −1, routed by the router.
func (r *rows) replay(cfg moe.Config, lo, hi int) []int32 {
	L, K := cfg.Layers, cfg.TopK
	N := (hi - lo) * r.T
	out := make([]int32, L*N*K)
	for i := range out {
		out[i] = -1
	}
	for i := lo; i < hi; i++ {
		rt := r.routing[i]
		if len(rt)%(L*K) != 0 {
			continue // not this model's routing
		}
		for p := range min(len(rt)/(L*K), r.T) {
			n := (i-lo)*r.T + p
			for l := range L {
				copy(out[(l*N+n)*K:(l*N+n+1)*K], rt[(p*L+l)*K:(p*L+l+1)*K])
			}
		}
	}
	return out
}

// responseTokens lists the positions of rows [lo, hi)'s response tokens in
// a forward over them, with the recorded routing at each (nil where none).
func (r *rows) responseTokens(cfg moe.Config, lo, hi int) ([]int, [][]int32) {
	L, K := cfg.Layers, cfg.K()
	var tokens []int
	var rec [][]int32
	for i := lo; i < hi; i++ {
		rt := r.routing[i]
		for j := range r.lengths[i] {
			p := r.start[i] + j
			tokens = append(tokens, (i-lo)*r.T+p)
			var at []int32
			if (p+1)*L*K <= len(rt) {
				at = rt[p*L*K : (p+1)*L*K]
			}
			rec = append(rec, at)
		}
	}
	return tokens, rec
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

// forward returns per-position outputs of m for rows [lo, hi). The policy
// replays the rollout's routing under algo routing_replay; the reference
// and the critic route by their own routers.
func (t *Trainer) forward(m *moe.Model, cache map[[2]int]*moe.Acts, r *rows, lo, hi int, o moe.ForwardOptions) ([]float32, *moe.Acts) {
	a := t.acts(m, cache, hi-lo, r.T)
	if m == t.Policy && t.Cfg.Algo.RoutingReplay && !m.Cfg.DenseFFN {
		o.Replay = r.replay(m.Cfg, lo, hi)
	}
	return m.Forward(a, r.ids[lo*r.T:hi*r.T], r.tgt[lo*r.T:hi*r.T], o), a
}

// measured is the update batch laid out for the model with everything the
// update reads, all computed before the update.
type measured struct {
	r        *rows
	b        *algo.Batch // OldLogp, RefLogp, Mask, OldValues, Advantages, rewards, groups
	returns  []float32   // R_t, the critic's targets
	lossMask []float32   // Mask less the responses overlong filtering drops
}

// measure computes, before any update, what the update and the step's
// metrics need: the log-probs recorded while sampling, the trainer's own
// recomputation of them (for the gap and the entropy; with a rollout
// correction it is the old policy l° and the recorded ones are l^roll,
// without one the recorded ones are l°),
// the reference's l^ref, the critic's values V_old, the advantages Â and
// returns R, and the loss mask.
func (t *Trainer) measure(c *collected, st *StepStats) (*measured, error) {
	cfg, a := t.Cfg, t.Cfg.Algo
	L := cfg.MaxNew
	r := layout(c, L, t.Policy.Cfg.MaxSeq)
	B := r.B
	b := &algo.Batch{B: B, L: L, OldLogp: make([]float32, B*L), RefLogp: make([]float32, B*L),
		Mask: make([]float32, B*L), Rewards: c.rewards, Groups: c.groups, Lengths: r.lengths, Truncated: make([]bool, B)}
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
	}
	fo := moe.ForwardOptions{Temperature: cfg.Temperature}
	cur := make([]float32, B*L)
	eo := fo
	eo.Entropy = true
	logp, acts := t.forward(t.Policy, t.actsCache, r, 0, B, eo)
	r.gather(cur, logp, 0, B)
	ent := make([]float32, B*L)
	r.gather(ent, acts.Entropy(), 0, B)
	// Before the reference's forward, which reuses the workspace.
	tokens, rec := r.responseTokens(t.Policy.Cfg, 0, B)
	rt, err := t.Policy.MeasureRouting(acts, tokens, rec)
	if err != nil {
		return nil, err
	}
	st.RoutingDisagreement, st.ExpertLoadEntropy, st.ExpertLoadMax, st.RouterMargin = rt.Disagreement, rt.LoadEntropy, rt.LoadMax, rt.Margin
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
	rs, err := algo.MeasureRollout(a, cur, b.OldLogp, b.Mask, L)
	if err != nil {
		return nil, err
	}
	st.LogpGapMax, st.RolloutKL, st.RolloutESS, st.RolloutMaskedFrac = rs.GapMax, rs.KL, rs.ESS, rs.MaskedFrac
	if a.UsesRolloutCorrection() {
		// The trainer's recomputation is the old policy of the ratio; the
		// recorded log-probs only weight the samples (algo.RolloutWeights).
		b.RolloutLogp, b.OldLogp = b.OldLogp, cur
	}
	if t.Critic != nil {
		b.OldValues = make([]float32, B*L)
		v, _ := t.forward(t.Critic, t.criticActCache, r, 0, B, moe.ForwardOptions{})
		r.gather(b.OldValues, v, 0, B)
	}
	adv, ret, err := algo.ComputeAdvantages(a, b)
	if err != nil {
		return nil, err
	}
	b.Advantages = adv
	lossMask, err := algo.LossMask(a, b)
	if err != nil {
		return nil, err
	}
	return &measured{r: r, b: b, returns: ret, lossMask: lossMask}, nil
}

// update runs Epochs passes over MiniBatches mini-batches of whole
// responses [lo, hi), each one policy step on the policy loss of
// algo.PolicyLoss (and one critic step on the clipped value loss). The
// optimizer is reset first when the algorithm asks (Kimi's mirror
// descent). A non-finite loss is caught before backward, a non-finite
// gradient by the optimizer step; either skips that update under
// Config.SkipNonFinite, and otherwise fails the step after putting the
// models back as they were.
func (t *Trainer) update(m *measured, st *StepStats) (err error) {
	cfg, a := t.Cfg, t.Cfg.Algo
	if !cfg.SkipNonFinite {
		t.policySaved.save(t.Policy)
		if t.Critic != nil {
			t.criticSaved.save(t.Critic)
		}
		defer func() {
			if err != nil {
				t.policySaved.restore(t.Policy)
				if t.Critic != nil {
					t.criticSaved.restore(t.Critic)
				}
			}
		}()
	}
	if a.ResetOptimizer {
		t.Policy.ResetOptimizer()
	}
	opt := moe.OptConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: cfg.WeightDecay, ClipNorm: cfg.ClipNorm}
	B, M := m.r.B, a.MiniBatches
	st.RatioMin, st.RatioMax = math.Inf(1), math.Inf(-1)
	var valueUpdates int
	for epoch := range a.Epochs {
		for k := range M {
			lo, hi := k*B/M, (k+1)*B/M
			if hi == lo {
				continue
			}
			where := func(err error) error {
				return fmt.Errorf("epoch %d, mini-batch %d of %d: %w", epoch+1, k+1, M, err)
			}
			sub := subBatch(m.b, lo, hi)
			if err := t.policyUpdate(m.r, sub, lo, hi, opt, st); err != nil {
				return where(err)
			}
			if t.Critic != nil {
				took, err := t.criticUpdate(m, sub, lo, hi, opt, st)
				if err != nil {
					return where(err)
				}
				if took {
					valueUpdates++
				}
			}
		}
	}
	if st.Updates == 0 {
		st.RatioMin, st.RatioMax = 0, 0
	} else {
		n := float64(st.Updates)
		st.Loss /= n
		st.ClipFrac /= n
		st.GradNorm /= n
		st.ApproxKL /= n
	}
	if valueUpdates > 0 {
		st.ValueLoss /= float64(valueUpdates)
	}
	return nil
}

// policyUpdate takes one optimizer step on the policy for responses
// [lo, hi) (sub), adding its loss, gradient norm and ratio statistics to
// st. A non-finite loss or gradient returns an error wrapping a
// *moe.NonFiniteError, or is counted in st.SkippedUpdates under
// SkipNonFinite.
func (t *Trainer) policyUpdate(r *rows, sub *algo.Batch, lo, hi int, opt moe.OptConfig, st *StepStats) error {
	L, a := sub.L, t.Cfg.Algo
	bonus := a.EntropyCoef > 0
	logp, acts := t.forward(t.Policy, t.actsCache, r, lo, hi, moe.ForwardOptions{Temperature: t.Cfg.Temperature, Entropy: bonus})
	sub.NewLogp = make([]float32, (hi-lo)*L)
	r.gather(sub.NewLogp, logp, lo, hi)
	if bonus {
		sub.Entropy = make([]float32, (hi-lo)*L)
		r.gather(sub.Entropy, acts.Entropy(), lo, hi)
	}
	loss, dNew, ps, err := algo.PolicyLoss(a, sub)
	if err != nil {
		return err
	}
	var dent []float32 // d loss / d H per position, for the entropy bonus
	if bonus {
		_, dH, err := algo.EntropyBonus(a, sub)
		if err != nil {
			return err
		}
		dent = make([]float32, (hi-lo)*r.T)
		r.scatter(dent, dH, lo, hi)
	}
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		if t.Cfg.SkipNonFinite {
			st.SkippedUpdates++
			return nil
		}
		return t.lossError(loss)
	}
	dlogp := make([]float32, (hi-lo)*r.T)
	r.scatter(dlogp, dNew, lo, hi)
	t.Policy.ZeroGrad()
	t.Policy.BackwardEntropy(acts, dlogp, dent)
	if t.afterBackward != nil {
		t.afterBackward(t.Policy)
	}
	norm, err := t.Policy.Step(st.LR, opt)
	if err != nil {
		var nf *moe.NonFiniteError
		if t.Cfg.SkipNonFinite && errors.As(err, &nf) {
			st.SkippedUpdates++
			return nil
		}
		return fmt.Errorf("policy update: %w", err)
	}
	st.GradNorm += norm
	st.Loss += loss
	st.ClipFrac += ps.ClipFrac
	st.ApproxKL += ps.ApproxKL
	if ps.Tokens > 0 {
		st.RatioMin = math.Min(st.RatioMin, ps.RatioMin)
		st.RatioMax = math.Max(st.RatioMax, ps.RatioMax)
	}
	st.Updates++
	return nil
}

// criticUpdate takes one optimizer step on the critic's clipped value loss
// for responses [lo, hi), and reports whether it took it.
func (t *Trainer) criticUpdate(m *measured, sub *algo.Batch, lo, hi int, opt moe.OptConfig, st *StepStats) (bool, error) {
	r, L, a := m.r, sub.L, t.Cfg.Algo
	v, cacts := t.forward(t.Critic, t.criticActCache, r, lo, hi, moe.ForwardOptions{})
	vals := make([]float32, (hi-lo)*L)
	r.gather(vals, v, lo, hi)
	vl, dv, _, err := algo.ValueLoss(vals, sub.OldValues, m.returns[lo*L:hi*L], m.lossMask[lo*L:hi*L], L, a.ValueClip, a.Aggregation)
	if err != nil {
		return false, err
	}
	if math.IsNaN(vl) || math.IsInf(vl, 0) {
		if t.Cfg.SkipNonFinite {
			st.SkippedCriticUpdates++
			return false, nil
		}
		return false, fmt.Errorf("critic update: %w", t.Critic.LossError(vl))
	}
	dvals := make([]float32, (hi-lo)*r.T)
	r.scatter(dvals, dv, lo, hi)
	t.Critic.ZeroGrad()
	t.Critic.Backward(cacts, dvals)
	if _, err := t.Critic.Step(t.Cfg.CriticLR, opt); err != nil {
		var nf *moe.NonFiniteError
		if t.Cfg.SkipNonFinite && errors.As(err, &nf) {
			st.SkippedCriticUpdates++
			return false, nil
		}
		return false, fmt.Errorf("critic update: %w", err)
	}
	st.ValueLoss += vl
	return true, nil
}

// lossError explains a policy loss that is not finite: it names the first
// weight of the policy, the reference or the critic that is not finite,
// which is usually the cause, or says that every weight is finite.
func (t *Trainer) lossError(loss float64) error {
	for _, m := range []struct {
		name  string
		model *moe.Model
	}{{"policy", t.Policy}, {"reference", t.Ref}, {"critic", t.Critic}} {
		if m.model == nil {
			continue
		}
		if err := m.model.CheckWeights(); err != nil {
			return fmt.Errorf("policy loss is %v: %s %w", loss, m.name, err)
		}
	}
	return fmt.Errorf("policy loss: %w", t.Policy.LossError(loss))
}

// modelState is a copy of a model's weights, AdamW moments and step count
// on its backend.
type modelState struct {
	params, m, v *engine.Tensor
	optStep      int
}

func (s *modelState) save(m *moe.Model) {
	be := m.Backend()
	if s.params == nil {
		n := m.NumParams()
		s.params, s.m, s.v = be.NewF32(n), be.NewF32(n), be.NewF32(n)
	}
	be.Copy(s.params, m.Params)
	be.Copy(s.m, m.M)
	be.Copy(s.v, m.V)
	s.optStep = m.OptStep
}

func (s *modelState) restore(m *moe.Model) {
	be := m.Backend()
	be.Copy(m.Params, s.params)
	be.Copy(m.M, s.m)
	be.Copy(m.V, s.v)
	m.OptStep = s.optStep
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
	if b.RolloutLogp != nil {
		s.RolloutLogp = b.RolloutLogp[lo*L : hi*L]
	}
	return s
}

// trainerState is what a checkpoint keeps of the loop besides the weights.
type trainerState struct {
	Success map[int]float64 `json:"success"`
	Init    string          `json:"init"` // checkpoint the run started from (the reference)
	// Stale lists the files of the weights a run with rollout_staleness
	// samples with next (saved beside the policy checkpoint).
	Stale []staleFile `json:"stale,omitempty"`
}

// Save writes the policy (and critic) checkpoints with the loop's state.
func (t *Trainer) Save(policyPath, criticPath, initPath string) error {
	cfgJSON, _ := json.Marshal(t.Cfg)
	stale, err := t.saveStale(policyPath)
	if err != nil {
		return err
	}
	extra, _ := json.Marshal(trainerState{Success: t.Success, Init: initPath, Stale: stale})
	st := moe.RunState{Stage: "rl", Step: t.Step, Config: cfgJSON, Extra: extra,
		RNG: map[string][]byte{"data": t.DataRNG.State(), "sample": t.SampleRNG.State()}}
	if err := t.Policy.SaveCheckpoint(policyPath, t.Tok, st, true); err != nil {
		return err
	}
	if err := t.removeStale(stale); err != nil {
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
	if err := t.restoreStale(ts.Stale); err != nil {
		return fmt.Errorf("restore rl state: %w", err)
	}
	if t.Cfg.Algo.Critic {
		if critic == nil {
			return fmt.Errorf("restore rl state: the run has a critic but no critic checkpoint was given")
		}
		t.Critic = critic
	}
	return nil
}
