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

// AdvantageEstimator names how advantages Â are computed from rewards;
// the values are the parts registered in advantage.go (Allowed("advantage")).
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
	// PassK is verl's grpo_passk: in each group only the best response gets
	// an advantage, r_max − r_second.
	PassK AdvantageEstimator = "passk"
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

// PolicyTerm names the per-token (or per-sequence) policy loss; the values
// are the parts registered in loss.go.
type PolicyTerm string

// The policy terms.
const (
	// Clip is PPO's clipped surrogate with ε_low/ε_high and optional dual clip.
	Clip PolicyTerm = "clip"
	// OMD is Kimi k1.5's online mirror descent: a squared sequence log-ratio.
	OMD PolicyTerm = "omd"
	// GSPO is Qwen's group sequence policy optimization: the clipped
	// surrogate on the geometric mean of a response's token ratios.
	GSPO PolicyTerm = "gspo"
	// CISPO is MiniMax-M1's clipped IS-weight policy optimization: every
	// token keeps its gradient, weighted by its stop-gradient clipped ratio.
	CISPO PolicyTerm = "cispo"
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

// RewardControl names a control for spurious-reward experiments (Shao et
// al., arXiv 2506.10947): it replaces the verifier's verdict before the
// reward is given. rl/reward implements them (reward.ParseControl); the
// step's accuracy still reports the true verdict.
type RewardControl string

// The reward controls.
const (
	// RewardControlNone rewards the verifier's verdict.
	RewardControlNone RewardControl = "none"
	// RewardRandom rewards a fair coin per response (Bernoulli 0.5),
	// seeded by the run's seed, the step, the sampling round and the
	// response, so a resumed run draws the same coins.
	RewardRandom RewardControl = "random"
	// RewardFormatOnly rewards every well-formed response as if correct:
	// the format reward alone.
	RewardFormatOnly RewardControl = "format-only"
	// RewardInverted swaps correct and wrong: a well-formed wrong answer
	// earns the correct reward and a correct one the wrong reward.
	RewardInverted RewardControl = "inverted"
)

// RolloutCorrection names an importance-sampling correction for the
// mismatch between the policy that sampled (log-probs l^roll recorded while
// sampling) and the trainer's recomputation of the same old policy (l°),
// w_it = exp(l°_it − l^roll_it), in the manner of verl's rollout_is /
// rollout_rs and TRL's vllm_importance_sampling_mode.
type RolloutCorrection string

// The rollout corrections.
const (
	// CorrectionNone uses the recorded log-probs as l° and weights nothing,
	// as moerl always did.
	CorrectionNone RolloutCorrection = "none"
	// TokenTIS multiplies ℓ_it by min(w_it, C) (truncated IS; verl
	// rollout_is=token, TRL token_truncate).
	TokenTIS RolloutCorrection = "token-tis"
	// SeqTIS multiplies each response's loss by min(Π_t w_it, C) (verl
	// rollout_is=sequence, TRL sequence_truncate).
	SeqTIS RolloutCorrection = "seq-tis"
	// TokenMIS multiplies ℓ_it by w_it, or 0 where w_it > C (masked IS;
	// TRL token_mask).
	TokenMIS RolloutCorrection = "token-mis"
	// SeqMIS multiplies each response's loss by Π_t w_it, or 0 where that
	// exceeds C (TRL sequence_mask).
	SeqMIS RolloutCorrection = "seq-mis"
)

func init() {
	rewardSchemes.register(
		part[struct{}]{name: string(RewardDefault), doc: "TinyZero's: 1 correct, 0.1 well-formed but wrong, 0 malformed"},
		part[struct{}]{name: string(RewardPM1), doc: "DAPO's: +1 correct, −1 otherwise"},
	)
	rewardControls.register(
		part[struct{}]{name: string(RewardControlNone), doc: "the verifier's verdict"},
		part[struct{}]{name: string(RewardRandom), doc: "a seeded fair coin per response (arXiv 2506.10947's random reward)"},
		part[struct{}]{name: string(RewardFormatOnly), doc: "every well-formed response rewarded as correct (2506.10947's format reward)"},
		part[struct{}]{name: string(RewardInverted), doc: "correct and wrong swapped (2506.10947's incorrect reward)"},
	)
	shortBatches.register(
		part[struct{}]{name: string(ShortBatchTrain), doc: "train on the groups kept and report the shortfall"},
		part[struct{}]{name: string(ShortBatchFail), doc: "fail the step, as verl's DAPO trainer does"},
	)
}

var (
	rewardSchemes  = newKind[struct{}]("reward_scheme", "")
	rewardControls = newKind[struct{}]("reward_control", string(RewardControlNone))
	shortBatches   = newKind[struct{}]("short_batch", "")
)

// Config is the full choice of an RL algorithm's parts and their settings.
// Preset returns the ones the papers use; Set overrides a field by its JSON
// name. Fields that only some parts read say which. Each field's help tag
// is a one-line description for the command line (Help).
type Config struct {
	// Preset is the name of the preset this Config started from, for the
	// log; it changes nothing.
	Preset string `json:"preset" help:"the preset this configuration started from (for the log; set with the preset, not with set)"`

	// Advantage is the advantage estimator.
	Advantage AdvantageEstimator `json:"advantage" help:"advantage estimator: gae (critic, whitened), group (GRPO mean/std), group-mean (Dr. GRPO), rloo (leave-one-out), reinforce++ (batch-whitened returns), reinforce++-baseline (group mean first), passk (verl grpo_passk: best of the group gets r_max − r_second)"`
	// Gamma is the discount γ of gae and reinforce++.
	Gamma float64 `json:"gamma" help:"discount γ of gae and reinforce++, in [0, 1]"`
	// Lambda is GAE's λ.
	Lambda float64 `json:"lambda" help:"GAE's λ, in [0, 1]"`
	// StdEps is ε added to a standard deviation before dividing by it
	// (group advantages, whitening). verl uses 1e-6.
	StdEps float64 `json:"std_eps" help:"ε added to a standard deviation before dividing by it (group, whitening); ≥ 0, verl's 1e-6"`

	// KLPlacement says where the KL to the reference policy enters.
	KLPlacement KLPlacement `json:"kl_placement" help:"where the KL to the reference enters: none, reward (−β_r·KL in the reward), loss (β·KL per token in the loss)"`
	// KLEstimator is the per-token KL estimator.
	KLEstimator KLEstimator `json:"kl_estimator" help:"per-token KL estimator: k1 (l − l_ref), k2 (½(l − l_ref)²), k3 (exp(l_ref − l) − (l_ref − l) − 1)"`
	// KLCoef is β (KL in the loss) or β_r (KL in the reward).
	KLCoef float64 `json:"kl_coef" help:"β of the KL in the loss or β_r of the KL in the reward; ≥ 0"`

	// PolicyLoss is the policy term.
	PolicyLoss PolicyTerm `json:"policy_loss" help:"policy term: clip (PPO clipped surrogate), omd (Kimi k1.5 mirror descent), gspo (clipped geometric-mean sequence ratio), cispo (stop-gradient clipped IS weight × Â × log π)"`
	// ClipLow is ε_low: the ratio is clipped below at 1 − ε_low.
	ClipLow float64 `json:"clip_low" help:"ε_low: clip and gspo clip the ratio below at 1 − ε_low, in (0, 1); cispo clips its IS weight there, > 0 (≥ 1: no lower bound)"`
	// ClipHigh is ε_high: the ratio is clipped above at 1 + ε_high.
	ClipHigh float64 `json:"clip_high" help:"ε_high: clip, gspo and cispo clip the ratio above at 1 + ε_high; > 0"`
	// DualClip is the dual-clip constant c (> 1) bounding the loss of a
	// token with Â < 0 by −c·Â; 0 turns dual clip off. The usual c is 3.
	DualClip float64 `json:"dual_clip" help:"clip only: dual-clip constant c bounding a token's loss by −c·Â when Â < 0; 0 (off) or > 1, usually 3"`
	// Tau is mirror descent's τ. Kimi k1.5 does not publish its τ; 0.1 is
	// moerl's default.
	Tau float64 `json:"tau" help:"omd only: mirror descent's τ, > 0 (Kimi k1.5 does not publish it; moerl's 0.1)"`
	// ResetOptimizer asks the trainer to reset the optimizer state at the
	// start of every iteration (RL step). Kimi k1.5 (§2.3.2) does so for its
	// mirror descent: each iteration optimizes a different problem, since
	// its reference policy is the one that sampled that iteration's batch.
	ResetOptimizer bool `json:"reset_optimizer" help:"reset the optimizer state at the start of every RL step (Kimi k1.5 §2.3.2); true or false"`
	// Aggregation reduces per-token losses to the batch loss. The omd policy
	// term always averages its sequence losses; there Aggregation applies
	// only to a KL term in the loss and to the entropy bonus.
	Aggregation Aggregation `json:"aggregation" help:"reduction of per-token losses: seq-mean-token-mean (GRPO), token-mean (DAPO), seq-mean-token-sum-norm (Dr. GRPO), seq-mean-token-sum; omd averages its sequence losses and uses it for the KL and entropy terms only"`
	// EntropyCoef is c_H of the entropy bonus ℓ ← ℓ − c_H·H_t, aggregated
	// like the policy term by Aggregation (verl's entropy_coeff, whose
	// default is 0 too). It needs the per-token entropy of the policy being
	// trained (Batch.Entropy) and a model that can backpropagate through it
	// (EntropyBonus).
	EntropyCoef float64 `json:"entropy_coef" help:"c_H of the entropy bonus −c_H·H_t per token, aggregated like the policy term; ≥ 0, 0 is off (verl entropy_coeff)"`

	// RolloutCorrection weights the policy term for the mismatch between
	// the log-probs recorded while sampling and the trainer's recomputation
	// of them; with one, the trainer's recomputation is l° (the ratio's
	// denominator). See RolloutCorrection's values.
	RolloutCorrection RolloutCorrection `json:"rollout_correction" help:"off-policy correction with w = exp(l° − l_roll): none (recorded log-probs are l°), token-tis (× min(w, C)), seq-tis (× min(Π w, C) per response), token-mis (× w, 0 above C), seq-mis (× Π w, 0 above C)"`
	// RolloutISCap is the threshold C of the rollout correction; verl's
	// rollout_is_threshold defaults to 2 (TRL's vllm_importance_sampling_cap
	// to 3).
	RolloutISCap float64 `json:"rollout_is_cap" help:"threshold C of the rollout correction, > 0 (verl rollout_is_threshold 2)"`
	// RolloutPrecision dials in a mismatch between sampler and trainer:
	// the weights the rollout samples with are rounded to this precision,
	// the trainer's stay fp32 (mismatch.go). fp32 is none.
	RolloutPrecision RolloutPrecision `json:"rollout_precision" help:"precision of the weights the rollout samples with (a dialled-in mismatch; the trainer stays fp32): fp32 (none), bf16, fp16"`
	// RolloutStaleness dials in a policy lag: step s samples with the
	// weights the policy had after step s − k (the starting weights while
	// s < k), as an asynchronous pipeline k updates behind would. 0 is
	// none. The trainer keeps and checkpoints the k last weights.
	RolloutStaleness int `json:"rollout_staleness" help:"RL steps the rollout policy lags the trained one (a dialled-in mismatch); 0 (none) to 64"`
	// RoutingReplay replays the experts the rollout chose for every token
	// and layer in the trainer's forward and backward (R3, Ma et al.,
	// arXiv 2510.11370), its recomputation of the old log-probs included,
	// with the gate weights recomputed over the replayed experts, so that
	// the gradient flows through the experts that produced the sample. The
	// reference policy routes by its own router. No effect on a dense model.
	RoutingReplay bool `json:"routing_replay" help:"replay the rollout's top-k experts per token and layer in the trainer's forward and backward (R3, arXiv 2510.11370); true or false"`

	// GroupSize is G, the number of responses sampled per prompt.
	GroupSize int `json:"group_size" help:"G, responses sampled per prompt; ≥ 1, ≥ 2 for group estimators"`
	// RewardScheme is the values of the rule-based reward.
	RewardScheme RewardScheme `json:"reward_scheme" help:"values of the rule-based reward: default (1 / 0.1 / 0, TinyZero), pm1 (+1 / −1, DAPO)"`
	// RewardControl replaces the verifier's verdict for spurious-reward
	// experiments (arXiv 2506.10947); the step's accuracy metrics still
	// report the true verdict, while the reward, its shaping and dynamic
	// sampling see the controlled one.
	RewardControl RewardControl `json:"reward_control" help:"spurious-reward control (arXiv 2506.10947): none, random (seeded fair coin per response), format-only (well-formed counts as correct), inverted (correct and wrong swapped)"`
	// DynamicSampling drops the groups in which every response or no
	// response is correct, and samples more until the update batch is full
	// (DAPO eq. 11: 0 < |{o_i correct}| < G; KeepGroups).
	DynamicSampling bool `json:"dynamic_sampling" help:"DAPO dynamic sampling: keep only groups with some but not all answers correct, sampling again to fill the batch; true or false"`
	// MaxTries caps the sampling rounds dynamic sampling may use to fill one
	// batch (verl's DAPO recipe: max_num_gen_batches = 10).
	MaxTries int `json:"max_tries" help:"sampling rounds dynamic sampling may use per step; ≥ 1 (verl max_num_gen_batches 10)"`
	// ShortBatch says what a step does when MaxTries rounds leave the batch
	// short of its prompts: "train" (the default) trains on the groups kept
	// and reports the shortfall (StepStats short_batch, groups,
	// groups_wanted); "fail" fails the step, as verl does when
	// max_num_gen_batches is exceeded. moerl trains by default because a toy
	// run on a hard bin often comes up short in its first steps, while the
	// policy rarely solves anything, and failing there would end exactly the
	// runs a study of hard problems needs; the shortfall is reported, not
	// silent.
	ShortBatch ShortBatchPolicy `json:"short_batch" help:"when dynamic sampling runs out of tries: train (on the groups kept, reporting the shortfall) or fail (verl's behaviour)"`
	// OverlongShaping adds DAPO's soft overlong punishment to the reward.
	OverlongShaping bool `json:"overlong_shaping" help:"add DAPO's soft overlong punishment to the reward; true or false"`
	// MaxLen is DAPO's L_max; 0 means the run's generation budget.
	MaxLen int `json:"max_len" help:"DAPO's L_max in tokens; 0 means the generation budget"`
	// OverlongCache is DAPO's L_cache; 0 means MaxLen/5 (DAPO: 4096 of
	// 20480).
	OverlongCache int `json:"overlong_cache" help:"DAPO's L_cache in tokens, below max_len; 0 means max_len/5"`
	// OverlongFilter masks truncated responses out of the loss.
	OverlongFilter bool `json:"overlong_filter" help:"mask responses cut at the budget out of the loss; true or false"`
	// LengthPenalty is the weight w of Kimi's length reward; 0 is off.
	LengthPenalty float64 `json:"length_penalty" help:"weight w of Kimi k1.5's length reward; ≥ 0, 0 is off"`
	// LengthPenaltyWarmup is the number of RL steps trained without the
	// length reward before it switches on at its full weight. Kimi k1.5
	// (§2.3.3) found the penalty slows early training and warms it up:
	// "standard policy optimization without length penalty, followed by a
	// constant length penalty for the rest of training"; it does not say
	// for how long. See LengthPenaltyAt.
	LengthPenaltyWarmup int `json:"length_penalty_warmup" help:"RL steps trained before the length reward switches on; ≥ 0 (Kimi k1.5 §2.3.3)"`
	// Curriculum asks the prompt sampler for easy-to-hard ordering (Kimi).
	Curriculum bool `json:"curriculum" help:"sample the easy difficulty bins first, opening harder ones as training goes (Kimi); true or false"`
	// PrioritizedSampling asks the prompt sampler to favour prompts with a
	// low success rate (Kimi).
	PrioritizedSampling bool `json:"prioritized_sampling" help:"favour difficulty bins the policy solves less often (Kimi); true or false"`

	// Critic trains a value model; gae needs it.
	Critic bool `json:"critic" help:"train a value model (PPO); gae needs it; true or false"`
	// ValueClip is ε_v of the clipped value loss; 0 turns clipping off.
	ValueClip float64 `json:"value_clip" help:"ε_v of the critic's clipped value loss; ≥ 0, 0 is off"`
	// Epochs is the number of passes over each batch of samples.
	Epochs int `json:"epochs" help:"passes over each batch of samples; ≥ 1"`
	// MiniBatches is the number of optimizer steps per epoch: the batch is
	// cut into that many mini-batches of whole responses. Epochs ×
	// MiniBatches is the number of updates one rollout pays for; after the
	// first, the policy differs from the one that sampled, ρ ≠ 1, and the
	// clip (or omd's τ term) can act.
	MiniBatches int `json:"mini_batches" help:"optimizer steps per epoch, each on a mini-batch of whole responses; ≥ 1"`
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
	// GSPO (Zheng et al., arXiv 2507.18071): the clipped surrogate on the
	// sequence ratio, with the paper's clip range ε_low 3e-4, ε_high 4e-4
	// (§5.1), GRPO's group advantages and no KL, as verl's examples run it
	// (examples/gspo_trainer/test_gspo_3b_math.sh: adv_estimator grpo,
	// loss_agg_mode seq-mean-token-mean, use_kl_loss false, kl_coef 0).
	// The aggregation is verl's; the loss is one per response, so every
	// aggregation that averages over responses gives the paper's sequence
	// mean. Updates: 4 mini-batches of one epoch, the paper's "four
	// minibatches" (§5.1; the same script: train_batch_size 512,
	// ppo_mini_batch_size 128). 16 responses per prompt, verl's
	// n_resp_per_prompt. Toy: 16 prompts × 16 = 256 responses, 64 (four
	// groups) per mini-batch.
	"gspo": {
		Advantage: Group, Gamma: 1, Lambda: 1,
		KLPlacement: KLNone, KLEstimator: K3,
		PolicyLoss: GSPO, ClipLow: 3e-4, ClipHigh: 4e-4,
		Aggregation: SeqMeanTokenMean, GroupSize: 16, Epochs: 1, MiniBatches: 4,
	},
	// CISPO (MiniMax-M1, arXiv 2506.13585 §3.1): the stop-gradient clipped
	// IS weight on GRPO's group advantages, normalised by the batch's token
	// count (token-mean), with no KL and DAPO's dynamic sampling and
	// overlong reward shaping. The paper puts no lower bound on the IS
	// weight (ε_low "a large value"; ε_low 1 clips at 0, which a ratio
	// never reaches; verl's example uses 10) and does not publish its
	// ε_high: 0.2 is verl's (examples/cispo_trainer/run_qwen3_8b_fsdp.sh:
	// clip_ratio_low 10, clip_ratio_high 0.2). Updates: 4 mini-batches of
	// one epoch, the same script's (train_batch_size 1024,
	// ppo_mini_batch_size 256); 16 responses per prompt as DAPO, whose
	// sampling it adopts. Toy: 16 prompts × 16, 64 responses per
	// mini-batch.
	"cispo": {
		Advantage: Group, Gamma: 1, Lambda: 1,
		KLPlacement: KLNone, KLEstimator: K3,
		PolicyLoss: CISPO, ClipLow: 1, ClipHigh: 0.2,
		Aggregation: TokenMean, GroupSize: 16, Epochs: 1, MiniBatches: 4,
		DynamicSampling: true, MaxTries: 10,
		OverlongShaping: true,
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
	c.RewardControl = RewardControlNone
	c.RolloutCorrection = CorrectionNone
	c.RolloutISCap = 2 // verl's rollout_is_threshold
	c.RolloutPrecision = PrecisionFP32
	return c, nil
}

// configField is one settable field of Config.
type configField struct {
	name  string // JSON name
	help  string // help tag
	index int
	typ   reflect.Type
}

var configFields = func() []configField {
	t := reflect.TypeFor[Config]()
	fields := make([]configField, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		fields = append(fields, configField{name: name, help: f.Tag.Get("help"), index: i, typ: f.Type})
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

// Help returns the one-line help of the field with JSON name key (its
// help tag: what it does, its unit or its allowed values), or "" for an
// unknown key.
func Help(key string) string {
	for _, f := range configFields {
		if f.name == key {
			return f.help
		}
	}
	return ""
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
	if k, ok := kinds[key]; ok {
		if !slices.Contains(k.names(), value) {
			return fmt.Errorf("set %s: %q is not one of %s", key, value, strings.Join(k.names(), ", "))
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
// another, joined into one error. The values an enum field allows and what
// each chosen part requires of the other settings come from the registry.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	v := reflect.ValueOf(c)
	for _, f := range configFields {
		fv := v.Field(f.index)
		if k, ok := kinds[f.name]; ok && !k.valid(fv.String()) {
			bad("%s: %q is not one of %s", f.name, fv.String(), strings.Join(k.names(), ", "))
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
	if c.EntropyCoef < 0 {
		bad("entropy_coef: %v is negative", c.EntropyCoef)
	}
	// What each chosen part needs of the other settings.
	for _, f := range configFields {
		if k, ok := kinds[f.name]; ok {
			for _, p := range k.problems(c, v.Field(f.index).String()) {
				errs = append(errs, errors.New(p))
			}
		}
	}
	if c.RolloutStaleness < 0 || c.RolloutStaleness > MaxRolloutStaleness {
		bad("rollout_staleness: %d is outside [0, %d]", c.RolloutStaleness, MaxRolloutStaleness)
	}
	if c.GroupSize < 1 {
		bad("group_size: %d is less than 1", c.GroupSize)
	}
	if advantages.must(string(c.Advantage)).is.grouped && c.GroupSize < 2 {
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
func (c Config) UsesReference() bool {
	p := klPlacements.must(string(c.KLPlacement)).fn
	return p.reward || p.loss
}

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
