package algo

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// AdvantageEstimator names how advantages Â are computed from rewards.
type AdvantageEstimator string

// The advantage estimators.
const (
	// GAE is generalized advantage estimation with a critic, whitened over
	// the batch's valid tokens.
	GAE AdvantageEstimator = "gae"
	// Group is GRPO's (r − mean_g r)/(std_g r + ε), std unbiased.
	Group AdvantageEstimator = "group"
	// GroupMean is Dr. GRPO's r − mean_g r.
	GroupMean AdvantageEstimator = "group-mean"
	// RLOO is the leave-one-out baseline r_i − mean_{j≠i} r_j.
	RLOO AdvantageEstimator = "rloo"
	// ReinforcePP is REINFORCE++: per-token returns normalised over the batch.
	ReinforcePP AdvantageEstimator = "reinforce++"
	// ReinforcePPBaseline is REINFORCE++ with the group mean subtracted from
	// the reward first.
	ReinforcePPBaseline AdvantageEstimator = "reinforce++-baseline"
)

// KLPlacement says where the KL to the reference policy enters.
type KLPlacement string

// The KL placements.
const (
	KLNone   KLPlacement = "none"   // no KL term
	KLReward KLPlacement = "reward" // −β_r·KL added to the reward
	KLLoss   KLPlacement = "loss"   // β·KL added to the loss per token
)

// KLEstimator names a per-token estimator of KL(π‖π_ref) from log-probs of
// tokens sampled from π (Schulman's k1, k2, k3).
type KLEstimator string

// The KL estimators.
const (
	K1 KLEstimator = "k1" // l − l_ref
	K2 KLEstimator = "k2" // ½(l − l_ref)²
	K3 KLEstimator = "k3" // exp(l_ref − l) − (l_ref − l) − 1
)

// PolicyTerm names the per-token (or per-sequence) policy loss.
type PolicyTerm string

// The policy terms.
const (
	// Clip is PPO's clipped surrogate with ε_low/ε_high and optional dual clip.
	Clip PolicyTerm = "clip"
	// OMD is Kimi k1.5's online mirror descent: a squared sequence log-ratio.
	OMD PolicyTerm = "omd"
)

// Aggregation names how per-token losses are reduced to the batch loss.
type Aggregation string

// The aggregations. B counts the responses that have at least one valid
// token (a response masked out entirely, say by overlong filtering, is not
// part of the batch); L is the padded length.
const (
	// SeqMeanTokenMean is original GRPO: (1/B) Σ_i (1/|o_i|) Σ_t ℓ_it.
	SeqMeanTokenMean Aggregation = "seq-mean-token-mean"
	// TokenMean is DAPO: Σ_it ℓ_it / Σ_i |o_i|.
	TokenMean Aggregation = "token-mean"
	// SeqMeanTokenSumNorm is Dr. GRPO: Σ_it ℓ_it / (B·L). Pad the batch to
	// the generation budget so that the normaliser is the same every step.
	SeqMeanTokenSumNorm Aggregation = "seq-mean-token-sum-norm"
	// SeqMeanTokenSum is (1/B) Σ_i Σ_t ℓ_it.
	SeqMeanTokenSum Aggregation = "seq-mean-token-sum"
)

// ShortBatchPolicy says what a step does when dynamic sampling has used
// its MaxTries sampling rounds without filling the update batch.
type ShortBatchPolicy string

// The short-batch policies.
const (
	// ShortBatchTrain trains on the groups that were kept (possibly none)
	// and reports the shortfall in the step's statistics.
	ShortBatchTrain ShortBatchPolicy = "train"
	// ShortBatchFail fails the step, as verl's DAPO trainer raises once
	// max_num_gen_batches generation batches have not filled the batch.
	ShortBatchFail ShortBatchPolicy = "fail"
)

// RewardScheme names the values the rule-based reward gives; rl/reward
// holds the values (reward.ParseScheme).
type RewardScheme string

// The reward schemes.
const (
	// RewardDefault is TinyZero's: 1 correct, 0.1 well-formed but wrong,
	// 0 malformed.
	RewardDefault RewardScheme = "default"
	// RewardPM1 is DAPO's: +1 correct, −1 otherwise.
	RewardPM1 RewardScheme = "pm1"
)

func (AdvantageEstimator) allowed() []string {
	return []string{"gae", "group", "group-mean", "rloo", "reinforce++", "reinforce++-baseline"}
}
func (KLPlacement) allowed() []string  { return []string{"none", "reward", "loss"} }
func (KLEstimator) allowed() []string  { return []string{"k1", "k2", "k3"} }
func (PolicyTerm) allowed() []string   { return []string{"clip", "omd"} }
func (RewardScheme) allowed() []string { return []string{"default", "pm1"} }
func (ShortBatchPolicy) allowed() []string {
	return []string{string(ShortBatchTrain), string(ShortBatchFail)}
}
func (Aggregation) allowed() []string {
	return []string{"seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm", "seq-mean-token-sum"}
}

// enum is implemented by the string types whose values are a closed set.
type enum interface{ allowed() []string }

// Config is the full choice of an RL algorithm's parts and their settings.
// Preset returns the ones the papers use; Set overrides a field by its JSON
// name. Fields that only some parts read say which.
type Config struct {
	// Preset is the name of the preset this Config started from, for the
	// log; it changes nothing.
	Preset string `json:"preset"`

	// Advantage is the advantage estimator.
	Advantage AdvantageEstimator `json:"advantage"`
	// Gamma is the discount γ of gae and reinforce++.
	Gamma float64 `json:"gamma"`
	// Lambda is GAE's λ.
	Lambda float64 `json:"lambda"`
	// StdEps is ε added to a standard deviation before dividing by it
	// (group advantages, whitening). verl uses 1e-6.
	StdEps float64 `json:"std_eps"`

	// KLPlacement says where the KL to the reference policy enters.
	KLPlacement KLPlacement `json:"kl_placement"`
	// KLEstimator is the per-token KL estimator.
	KLEstimator KLEstimator `json:"kl_estimator"`
	// KLCoef is β (KL in the loss) or β_r (KL in the reward).
	KLCoef float64 `json:"kl_coef"`

	// PolicyLoss is the policy term.
	PolicyLoss PolicyTerm `json:"policy_loss"`
	// ClipLow is ε_low: the ratio is clipped below at 1 − ε_low.
	ClipLow float64 `json:"clip_low"`
	// ClipHigh is ε_high: the ratio is clipped above at 1 + ε_high.
	ClipHigh float64 `json:"clip_high"`
	// DualClip is the dual-clip constant c (> 1) bounding the loss of a
	// token with Â < 0 by −c·Â; 0 turns dual clip off. The usual c is 3.
	DualClip float64 `json:"dual_clip"`
	// Tau is mirror descent's τ. Kimi k1.5 does not publish its τ; 0.1 is
	// moerl's default.
	Tau float64 `json:"tau"`
	// ResetOptimizer asks the trainer to reset the optimizer state at the
	// start of every iteration (RL step). Kimi k1.5 (§2.3.2) does so for its
	// mirror descent: each iteration optimizes a different problem, since
	// its reference policy is the one that sampled that iteration's batch.
	ResetOptimizer bool `json:"reset_optimizer"`
	// Aggregation reduces per-token losses to the batch loss. The omd policy
	// term always averages its sequence losses; there Aggregation applies
	// only to a KL term in the loss.
	Aggregation Aggregation `json:"aggregation"`

	// GroupSize is G, the number of responses sampled per prompt.
	GroupSize int `json:"group_size"`
	// RewardScheme is the values of the rule-based reward.
	RewardScheme RewardScheme `json:"reward_scheme"`
	// DynamicSampling drops the groups in which every response or no
	// response is correct, and samples more until the update batch is full
	// (DAPO eq. 11: 0 < |{o_i correct}| < G; KeepGroups).
	DynamicSampling bool `json:"dynamic_sampling"`
	// MaxTries caps the sampling rounds dynamic sampling may use to fill one
	// batch (verl's DAPO recipe: max_num_gen_batches = 10).
	MaxTries int `json:"max_tries"`
	// ShortBatch says what a step does when MaxTries rounds leave the batch
	// short of its prompts: "train" (the default) trains on the groups kept
	// and reports the shortfall (StepStats short_batch, groups,
	// groups_wanted); "fail" fails the step, as verl does when
	// max_num_gen_batches is exceeded. moerl trains by default because a toy
	// run on a hard bin often comes up short in its first steps, while the
	// policy rarely solves anything, and failing there would end exactly the
	// runs a study of hard problems needs; the shortfall is reported, not
	// silent.
	ShortBatch ShortBatchPolicy `json:"short_batch"`
	// OverlongShaping adds DAPO's soft overlong punishment to the reward.
	OverlongShaping bool `json:"overlong_shaping"`
	// MaxLen is DAPO's L_max; 0 means the run's generation budget.
	MaxLen int `json:"max_len"`
	// OverlongCache is DAPO's L_cache; 0 means MaxLen/5 (DAPO: 4096 of
	// 20480).
	OverlongCache int `json:"overlong_cache"`
	// OverlongFilter masks truncated responses out of the loss.
	OverlongFilter bool `json:"overlong_filter"`
	// LengthPenalty is the weight w of Kimi's length reward; 0 is off.
	LengthPenalty float64 `json:"length_penalty"`
	// LengthPenaltyWarmup is the number of RL steps trained without the
	// length reward before it switches on at its full weight. Kimi k1.5
	// (§2.3.3) found the penalty slows early training and warms it up:
	// "standard policy optimization without length penalty, followed by a
	// constant length penalty for the rest of training"; it does not say
	// for how long. See LengthPenaltyAt.
	LengthPenaltyWarmup int `json:"length_penalty_warmup"`
	// Curriculum asks the prompt sampler for easy-to-hard ordering (Kimi).
	Curriculum bool `json:"curriculum"`
	// PrioritizedSampling asks the prompt sampler to favour prompts with a
	// low success rate (Kimi).
	PrioritizedSampling bool `json:"prioritized_sampling"`

	// Critic trains a value model; gae needs it.
	Critic bool `json:"critic"`
	// ValueClip is ε_v of the clipped value loss; 0 turns clipping off.
	ValueClip float64 `json:"value_clip"`
	// Epochs is the number of passes over each batch of samples.
	Epochs int `json:"epochs"`
	// MiniBatches is the number of optimizer steps per epoch: the batch is
	// cut into that many mini-batches of whole responses. Epochs ×
	// MiniBatches is the number of updates one rollout pays for; after the
	// first, the policy differs from the one that sampled, ρ ≠ 1, and the
	// clip (or omd's τ term) can act.
	MiniBatches int `json:"mini_batches"`
}

// presets are the defaults of SPEC-RL.md's table, from the papers and
// reference implementations. Where the table leaves a value open the
// comment says where it comes from.
//
// Updates per rollout (Epochs × MiniBatches) come from each method's paper
// or reference scripts and are kept as they are at toy scale: a toy step
// is about 16 prompts × 8 responses = 128 responses (the papers' are 1,000
// to 8,000), so a mini-batch keeps the share of the batch it has in the
// source, and each still holds at least one whole group of a toy batch.
// Keeping the count, not the mini-batch size, keeps how far the policy
// moves away from the one that sampled before a batch is used up, which is
// what the clip (and DAPO's clip-higher) is there for.
var presets = map[string]Config{
	// PPO for LLMs (verl / OpenRLHF): GAE γ=1, λ=0.95, k1 KL in the reward
	// with β_r=0.05, clip 0.2, critic with value clip 0.2. Updates: 4 epochs
	// of one mini-batch (TRL's PPOConfig: num_ppo_epochs 4, num_mini_batches
	// 1; SPEC-RL.md's 4 epochs). A toy PPO batch (16 to 128 prompts × 1
	// response) is already smaller than one of TRL's mini-batches, so it
	// stays whole.
	"ppo": {
		Advantage: GAE, Gamma: 1, Lambda: 0.95,
		KLPlacement: KLReward, KLEstimator: K1, KLCoef: 0.05,
		PolicyLoss: Clip, ClipLow: 0.2, ClipHigh: 0.2,
		Aggregation: TokenMean, GroupSize: 1,
		Critic: true, ValueClip: 0.2, Epochs: 4, MiniBatches: 1,
	},
	// GRPO (DeepSeekMath): group mean/std, k3 KL in the loss with β=0.04.
	// The paper samples G=64; the table allows 8..64 and toy runs use 8.
	// Updates: 4 mini-batches of one epoch, verl's GRPO example
	// (examples/grpo_trainer/run_qwen2-7b.sh: train_batch_size 1024,
	// ppo_mini_batch_size 256). DeepSeekMath takes "a single update
	// following each exploration stage" (ρ ≡ 1: the clip never acts) and
	// DeepSeek-R1-Zero 16 (8,192 outputs split into 16 mini-batches, one
	// inner epoch). Toy: 16 prompts × 8 = 128 responses, 32 (four groups)
	// per mini-batch.
	"grpo": {
		Advantage: Group, Gamma: 1, Lambda: 1,
		KLPlacement: KLLoss, KLEstimator: K3, KLCoef: 0.04,
		PolicyLoss: Clip, ClipLow: 0.2, ClipHigh: 0.2,
		Aggregation: SeqMeanTokenMean, GroupSize: 8, Epochs: 1, MiniBatches: 4,
	},
	// DAPO: clip-higher 0.2/0.28, token-mean, no KL, dynamic sampling,
	// overlong shaping, ±1 reward, 16 responses per prompt. Updates: 16
	// mini-batches of one epoch (DAPO §4.1: prompt batch 512 × 16 responses,
	// mini-batch 512 responses, "16 gradient updates for each rollout step";
	// verl's recipe run_dapo_qwen2.5_32b.sh: train_prompt_bsz 512,
	// train_prompt_mini_bsz 32). Toy: 16 prompts × 16 = 256 responses, one
	// group per mini-batch.
	"dapo": {
		Advantage: Group, Gamma: 1, Lambda: 1,
		KLPlacement: KLNone, KLEstimator: K3,
		PolicyLoss: Clip, ClipLow: 0.2, ClipHigh: 0.28,
		Aggregation: TokenMean, GroupSize: 16, Epochs: 1, MiniBatches: 16,
		RewardScheme:    RewardPM1,
		DynamicSampling: true, MaxTries: 10,
		OverlongShaping: true,
	},
	// Kimi k1.5 online mirror descent: group mean baseline, KL through τ,
	// length penalty, curriculum and prioritized sampling, and the
	// optimizer reset at every iteration (§2.3.2). The paper adds the length
	// reward unweighted (w=1) after a warm-up without it (§2.3.3) whose
	// length it does not give: 10 steps here, a quarter of rl's default
	// 40-step run and a tenth of the study's 100. τ and the updates per
	// iteration are not published either: τ=0.1, and 4 mini-batches as
	// grpo's, since with a single update s_i = 0 and the τ term never
	// acts.
	"omd": {
		Advantage: GroupMean, Gamma: 1, Lambda: 1,
		KLPlacement: KLNone, KLEstimator: K1,
		PolicyLoss: OMD, ClipLow: 0.2, ClipHigh: 0.2, Tau: 0.1, ResetOptimizer: true,
		Aggregation: SeqMeanTokenSum, GroupSize: 8, Epochs: 1, MiniBatches: 4,
		LengthPenalty: 1, LengthPenaltyWarmup: 10, Curriculum: true, PrioritizedSampling: true,
	},
	// Dr. GRPO: no std division, no length normalisation, no KL. Updates:
	// 8 mini-batches of one epoch, the paper's oat scripts
	// (sail-sg/understand-r1-zero examples/qwen2.5-math-7b.sh:
	// rollout_batch_size 128 prompts × num_samples 8, train_batch_size 128,
	// num_ppo_epochs 1). Toy: 16 responses (two groups) per mini-batch.
	"drgrpo": {
		Advantage: GroupMean, Gamma: 1, Lambda: 1,
		KLPlacement: KLNone, KLEstimator: K3,
		PolicyLoss: Clip, ClipLow: 0.2, ClipHigh: 0.2,
		Aggregation: SeqMeanTokenSumNorm, GroupSize: 8, Epochs: 1, MiniBatches: 8,
	},
	// RLOO: sequence-level k1 KL in the reward; β_r=0.05 is TRL's default
	// kl_coef (the table gives none). Updates: 8 mini-batches of one epoch,
	// OpenRLHF's RLOO script (examples/scripts/train_rloo_llama.sh:
	// rollout_batch_size 32 × n_samples_per_prompt 4, train_batch_size 16,
	// max_epochs 1); TRL's RLOOTrainer takes one (num_iterations 1, one
	// optimizer step per generation batch). Toy: 16 responses per
	// mini-batch.
	"rloo": {
		Advantage: RLOO, Gamma: 1, Lambda: 1,
		KLPlacement: KLReward, KLEstimator: K1, KLCoef: 0.05,
		PolicyLoss: Clip, ClipLow: 0.2, ClipHigh: 0.2,
		Aggregation: TokenMean, GroupSize: 8, Epochs: 1, MiniBatches: 8,
	},
	// REINFORCE++: per-token k1 KL in the reward; β_r=0.01 is OpenRLHF's
	// default init_kl_coef (the table gives none). Updates: 8 mini-batches
	// of one epoch, OpenRLHF's script (examples/scripts/
	// train_reinforce_llama_ray.sh: rollout_batch_size 1024 × 1,
	// train_batch_size 128, max_epochs 1). Toy: 16 responses per
	// mini-batch.
	"reinforce++": {
		Advantage: ReinforcePP, Gamma: 1, Lambda: 1,
		KLPlacement: KLReward, KLEstimator: K1, KLCoef: 0.01,
		PolicyLoss: Clip, ClipLow: 0.2, ClipHigh: 0.2,
		Aggregation: TokenMean, GroupSize: 8, Epochs: 1, MiniBatches: 8,
	},
}

// Presets returns the names of the presets, sorted.
func Presets() []string {
	names := make([]string, 0, len(presets))
	for name := range presets {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Preset returns the named preset's Config.
func Preset(name string) (Config, error) {
	c, ok := presets[name]
	if !ok {
		return Config{}, fmt.Errorf("unknown algorithm preset %q (known: %s)", name, strings.Join(Presets(), ", "))
	}
	c.Preset = name
	// Fields every preset shares.
	c.StdEps = 1e-6
	if c.RewardScheme == "" {
		c.RewardScheme = RewardDefault
	}
	if c.MaxTries == 0 {
		c.MaxTries = 10
	}
	if c.ShortBatch == "" {
		c.ShortBatch = ShortBatchTrain
	}
	return c, nil
}

// configField is one settable field of Config.
type configField struct {
	name  string // JSON name
	index int
	typ   reflect.Type
}

var configFields = func() []configField {
	t := reflect.TypeFor[Config]()
	fields := make([]configField, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		fields = append(fields, configField{name: name, index: i, typ: f.Type})
	}
	return fields
}()

// Keys returns the JSON names of the settable fields, in declaration order.
func Keys() []string {
	var keys []string
	for _, f := range configFields {
		if f.name != "preset" {
			keys = append(keys, f.name)
		}
	}
	return keys
}

// Set overrides the field with JSON name key by value, parsed by the field's
// type. It checks the value's type and, for named choices, that the value is
// one of them; Validate checks the Config as a whole.
func (c *Config) Set(key, value string) error {
	if key == "preset" {
		return errors.New("set preset: choose a preset with Preset; it cannot be overridden")
	}
	i := slices.IndexFunc(configFields, func(f configField) bool { return f.name == key })
	if i < 0 {
		return fmt.Errorf("unknown setting %q (known: %s)", key, strings.Join(Keys(), ", "))
	}
	f := configFields[i]
	v := reflect.ValueOf(c).Elem().Field(f.index)
	if e, ok := v.Interface().(enum); ok {
		if !slices.Contains(e.allowed(), value) {
			return fmt.Errorf("set %s: %q is not one of %s", key, value, strings.Join(e.allowed(), ", "))
		}
		v.SetString(value)
		return nil
	}
	switch f.typ.Kind() {
	case reflect.Bool:
		b, err := strconv.ParseBool(value)
		if err != nil {
			return fmt.Errorf("set %s: %q is not a boolean (true or false)", key, value)
		}
		v.SetBool(b)
	case reflect.Int:
		n, err := strconv.Atoi(value)
		if err != nil {
			return fmt.Errorf("set %s: %q is not an integer", key, value)
		}
		v.SetInt(int64(n))
	case reflect.Float64:
		x, err := strconv.ParseFloat(value, 64)
		if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("set %s: %q is not a finite number", key, value)
		}
		v.SetFloat(x)
	default:
		return fmt.Errorf("set %s: field of type %s cannot be set", key, f.typ)
	}
	return nil
}

// Apply sets one "key=value" override, as given on the command line.
func (c *Config) Apply(assignment string) error {
	key, value, ok := strings.Cut(assignment, "=")
	if !ok {
		return fmt.Errorf("override %q: want key=value", assignment)
	}
	return c.Set(strings.TrimSpace(key), strings.TrimSpace(value))
}

// Validate reports every setting that is out of range or inconsistent with
// another, joined into one error.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	v := reflect.ValueOf(c)
	for _, f := range configFields {
		fv := v.Field(f.index)
		if e, ok := fv.Interface().(enum); ok && !slices.Contains(e.allowed(), fv.String()) {
			bad("%s: %q is not one of %s", f.name, fv.String(), strings.Join(e.allowed(), ", "))
		}
		if fv.Kind() == reflect.Float64 && (math.IsNaN(fv.Float()) || math.IsInf(fv.Float(), 0)) {
			bad("%s: %v is not a finite number", f.name, fv.Float())
		}
	}
	if c.Gamma < 0 || c.Gamma > 1 {
		bad("gamma: %v is outside [0, 1]", c.Gamma)
	}
	if c.Lambda < 0 || c.Lambda > 1 {
		bad("lambda: %v is outside [0, 1]", c.Lambda)
	}
	if c.StdEps < 0 {
		bad("std_eps: %v is negative", c.StdEps)
	}
	if c.KLCoef < 0 {
		bad("kl_coef: %v is negative", c.KLCoef)
	}
	if c.PolicyLoss == Clip {
		if c.ClipLow <= 0 || c.ClipLow >= 1 {
			bad("clip_low: %v is outside (0, 1)", c.ClipLow)
		}
		if c.ClipHigh <= 0 {
			bad("clip_high: %v is not positive", c.ClipHigh)
		}
		if c.DualClip != 0 && c.DualClip <= 1 {
			bad("dual_clip: %v must be 0 (off) or greater than 1", c.DualClip)
		}
	}
	if c.PolicyLoss == OMD {
		if c.Tau <= 0 {
			bad("tau: %v is not positive (omd divides by τ)", c.Tau)
		}
		if !c.Advantage.sequenceLevel() {
			bad("advantage: omd needs a sequence-level estimator (group, group-mean or rloo), not %q", c.Advantage)
		}
	}
	if c.Advantage == GAE && !c.Critic {
		bad("advantage: gae needs a critic (critic=true)")
	}
	if c.GroupSize < 1 {
		bad("group_size: %d is less than 1", c.GroupSize)
	}
	if c.Advantage.grouped() && c.GroupSize < 2 {
		bad("group_size: advantage %q compares responses to one prompt and needs at least 2, not %d", c.Advantage, c.GroupSize)
	}
	if c.DynamicSampling {
		if c.MaxTries < 1 {
			bad("max_tries: %d is less than 1", c.MaxTries)
		}
		if c.GroupSize < 2 {
			bad("dynamic_sampling: needs group_size of at least 2, not %d", c.GroupSize)
		}
	}
	if c.MaxLen < 0 {
		bad("max_len: %d is negative", c.MaxLen)
	}
	if c.OverlongCache < 0 {
		bad("overlong_cache: %d is negative", c.OverlongCache)
	}
	if c.MaxLen > 0 && c.OverlongCache >= c.MaxLen {
		bad("overlong_cache: %d is not below max_len %d", c.OverlongCache, c.MaxLen)
	}
	if c.LengthPenalty < 0 {
		bad("length_penalty: %v is negative", c.LengthPenalty)
	}
	if c.LengthPenaltyWarmup < 0 {
		bad("length_penalty_warmup: %d is negative", c.LengthPenaltyWarmup)
	}
	if c.ValueClip < 0 {
		bad("value_clip: %v is negative", c.ValueClip)
	}
	if c.Epochs < 1 {
		bad("epochs: %d is less than 1", c.Epochs)
	}
	if c.MiniBatches < 1 {
		bad("mini_batches: %d is less than 1", c.MiniBatches)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("algorithm config: %w", err)
	}
	return nil
}

// UsesReference reports whether the reference policy's log-probs are needed.
func (c Config) UsesReference() bool { return c.KLPlacement != KLNone && c.KLPlacement != "" }

// LengthPenaltyAt is the weight of Kimi's length reward at 0-based RL step
// step: 0 during the LengthPenaltyWarmup first steps, LengthPenalty after.
func (c Config) LengthPenaltyAt(step int) float64 {
	if step < c.LengthPenaltyWarmup {
		return 0
	}
	return c.LengthPenalty
}

// OverlongLimits resolves L_max and L_cache of overlong shaping for a run
// whose generation budget is budget tokens.
func (c Config) OverlongLimits(budget int) (maxLen, cache int) {
	maxLen = c.MaxLen
	if maxLen == 0 {
		maxLen = budget
	}
	cache = c.OverlongCache
	if cache == 0 {
		cache = maxLen / 5
	}
	return maxLen, cache
}

// String returns the Config as one line of JSON, for the run's log.
func (c Config) String() string {
	b, err := json.Marshal(c)
	if err != nil { // only a NaN or infinite field can make it fail
		type plain Config // without the String method
		return fmt.Sprintf("%+v", plain(c))
	}
	return string(b)
}

// sequenceLevel reports whether the estimator gives one advantage per
// response, the same for each of its tokens.
func (a AdvantageEstimator) sequenceLevel() bool {
	return a == Group || a == GroupMean || a == RLOO
}

// grouped reports whether the estimator compares the responses to one prompt.
func (a AdvantageEstimator) grouped() bool {
	return a.sequenceLevel() || a == ReinforcePPBaseline
}
