package rl

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl/reward"
	"github.com/moerl/moerl/rl/task"
)

// A learned reward model (Seed-Thinking's verifier model, takeaway 4 of the
// seed article: a model that reads the whole chain of thought and judges
// it) is the second reward source next to the rule-based verifier. Here it
// is a value-head model with the policy's architecture; its output at the
// last token of a response is the logit of P(the response is correct). It
// is trained with logistic loss on a policy's own samples, labelled by the
// task's verifier.

// RMExample is one labelled response.
type RMExample struct {
	Prompt   []int32 // <bos> and the prompt
	Response []int32 // generated tokens, <eos> included if it stopped
	Correct  bool
}

// RMTrainConfig is a reward-model training run.
type RMTrainConfig struct {
	Steps int     `json:"steps" help:"reward-model training steps"`
	Batch int     `json:"batch" help:"labelled responses per step"`
	LR    float64 `json:"lr" help:"peak learning rate (warm-up over a tenth of the steps, decay to a tenth)"`
	Seed  uint64  `json:"seed" help:"seed of the sampling and of the batches"`
}

// RMStats reports a reward model's fit on labelled examples.
type RMStats struct {
	Loss     float64 `json:"loss"`     // mean logistic loss
	Accuracy float64 `json:"accuracy"` // P(correct) > 0.5 agrees with the label
	// AUC is the probability that a correct response scores above a wrong
	// one (ties count half): how well the model ranks, whatever the prior.
	AUC      float64 `json:"auc"`
	Positive float64 `json:"positive"` // share of correct examples
}

// rmRows lays examples out as rows of T tokens and the position of each
// response's last token.
func rmRows(ex []RMExample, T int) (ids []int32, last []int) {
	ids = make([]int32, len(ex)*T)
	for i, e := range ex {
		full := append(slices.Clone(e.Prompt), e.Response...)
		if len(full) > T {
			full = full[:T]
		}
		copy(ids[i*T:], full)
		last = append(last, i*T+len(full)-1)
	}
	return ids, last
}

// RMScores returns the reward model's P(correct) for each example.
func RMScores(rm *moe.Model, ex []RMExample) []float64 {
	const chunk = 256
	out := make([]float64, 0, len(ex))
	T := rm.Cfg.MaxSeq
	var a *moe.Acts
	for lo := 0; lo < len(ex); lo += chunk {
		part := ex[lo:min(lo+chunk, len(ex))]
		if a == nil || a.B != len(part) {
			if a != nil {
				a.Free(rm.Backend())
			}
			a = rm.NewActs(len(part), T)
		}
		ids, last := rmRows(part, T)
		v := rm.Forward(a, ids, ids, moe.ForwardOptions{})
		for _, p := range last {
			out = append(out, sigmoid(float64(v[p])))
		}
	}
	if a != nil {
		a.Free(rm.Backend())
	}
	return out
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

// auc is the Mann-Whitney estimate of P(a positive scores above a
// negative), ties counting half; 0.5 when either side is empty.
func auc(pos, neg []float64) float64 {
	if len(pos) == 0 || len(neg) == 0 {
		return 0.5
	}
	slices.Sort(neg)
	var wins float64
	for _, p := range pos {
		below, _ := slices.BinarySearch(neg, p) // first index with neg ≥ p
		equal := below
		for equal < len(neg) && neg[equal] == p {
			equal++
		}
		wins += float64(below) + 0.5*float64(equal-below)
	}
	return wins / float64(len(pos)*len(neg))
}

// EvalRM measures a reward model on labelled examples.
func EvalRM(rm *moe.Model, ex []RMExample) RMStats {
	var st RMStats
	scores := RMScores(rm, ex)
	var pos, neg []float64
	for i, p := range scores {
		if ex[i].Correct {
			pos = append(pos, p)
		} else {
			neg = append(neg, p)
		}
	}
	st.AUC = auc(pos, neg)
	for i, p := range scores {
		y := 0.0
		if ex[i].Correct {
			y, st.Positive = 1, st.Positive+1
		}
		st.Loss -= y*math.Log(max(p, 1e-12)) + (1-y)*math.Log(max(1-p, 1e-12))
		if (p > 0.5) == ex[i].Correct {
			st.Accuracy++
		}
	}
	n := float64(max(len(ex), 1))
	st.Loss, st.Accuracy, st.Positive = st.Loss/n, st.Accuracy/n, st.Positive/n
	return st
}

// RMTrainer trains a reward model, initialised from a policy's trunk
// (moe.NewCritic), on labelled examples with logistic loss and AdamW. Each
// step draws a batch from its own stream; correct and wrong examples are
// weighted to count equally, so a verifier that is mostly right or mostly
// wrong still learns both sides.
type RMTrainer struct {
	Cfg  RMTrainConfig
	RM   *moe.Model
	Step int // steps done
	Data *engine.RNG

	ex         []RMExample
	wPos, wNeg float64
	acts       *moe.Acts
}

// NewRMTrainer starts a reward model from policy for training on ex.
func NewRMTrainer(policy *moe.Model, ex []RMExample, cfg RMTrainConfig) (*RMTrainer, error) {
	if cfg.Steps <= 0 || cfg.Batch <= 0 || !(cfg.LR > 0) {
		return nil, fmt.Errorf("reward model: steps, batch and lr must be positive")
	}
	var pos int
	for _, e := range ex {
		if e.Correct {
			pos++
		}
	}
	if pos == 0 || pos == len(ex) {
		return nil, fmt.Errorf("reward model: the %d examples are all %s; it needs both correct and wrong ones",
			len(ex), map[bool]string{true: "correct", false: "wrong"}[pos > 0])
	}
	rm, err := moe.NewCritic(policy)
	if err != nil {
		return nil, err
	}
	return &RMTrainer{Cfg: cfg, RM: rm, Data: engine.NewRNG(cfg.Seed, engine.StreamData), ex: ex,
		wPos: float64(len(ex)) / (2 * float64(pos)), wNeg: float64(len(ex)) / (2 * float64(len(ex)-pos))}, nil
}

// TrainStep takes one step and returns its weighted logistic loss.
func (t *RMTrainer) TrainStep() (float64, error) {
	cfg, rm := t.Cfg, t.RM
	T := rm.Cfg.MaxSeq
	if t.acts == nil {
		t.acts = rm.NewActs(cfg.Batch, T)
	}
	sched := engine.Schedule{Peak: cfg.LR, Min: cfg.LR / 10, Warmup: cfg.Steps / 10, Total: cfg.Steps}
	opt := moe.OptConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0, ClipNorm: 1}
	batch := make([]RMExample, cfg.Batch)
	for i := range batch {
		batch[i] = t.ex[t.Data.IntN(len(t.ex))]
	}
	ids, last := rmRows(batch, T)
	rm.ZeroGrad()
	v := rm.Forward(t.acts, ids, ids, moe.ForwardOptions{})
	dv := make([]float32, cfg.Batch*T)
	var loss, wsum float64
	for i, p := range last {
		s := float64(v[p])
		y, w := -1.0, t.wNeg
		if batch[i].Correct {
			y, w = 1, t.wPos
		}
		// logistic loss log(1 + e^{−y·s}), weighted
		loss += w * (math.Log1p(math.Exp(-math.Abs(s))) + math.Max(-y*s, 0))
		dv[p] = float32(w * -y * sigmoid(-y*s))
		wsum += w
	}
	for _, p := range last {
		dv[p] /= float32(wsum)
	}
	loss /= wsum
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return loss, rm.LossError(loss)
	}
	rm.Backward(t.acts, dv)
	if _, err := rm.Step(sched.LR(t.Step), opt); err != nil {
		return loss, err
	}
	t.Step++
	return loss, nil
}

// Close frees the trainer's workspace.
func (t *RMTrainer) Close() {
	if t.acts != nil {
		t.acts.Free(t.RM.Backend())
		t.acts = nil
	}
}

// Save writes the reward model with the state to continue training it.
func (t *RMTrainer) Save(path string, tok *tokenizer.Tokenizer) error {
	cfg, _ := json.Marshal(t.Cfg)
	st := moe.RunState{Stage: "rm", Step: t.Step, Config: cfg, RNG: map[string][]byte{"data": t.Data.State()}}
	return t.RM.SaveCheckpoint(path, tok, st, true)
}

// Restore continues from a checkpoint that Save wrote.
func (t *RMTrainer) Restore(rm *moe.Model, st moe.RunState) error {
	if rm.Cfg != t.RM.Cfg {
		return fmt.Errorf("restore reward model: the checkpoint's model differs")
	}
	if err := t.Data.SetState(st.RNG["data"]); err != nil {
		return fmt.Errorf("restore reward model: %w", err)
	}
	t.RM, t.Step = rm, st.Step
	return nil
}

// TrainRM trains a reward model to the end (see RMTrainer); progress, if
// set, is called after every step.
func TrainRM(policy *moe.Model, ex []RMExample, cfg RMTrainConfig, progress func(step int, loss float64)) (*moe.Model, error) {
	t, err := NewRMTrainer(policy, ex, cfg)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	for t.Step < cfg.Steps {
		loss, err := t.TrainStep()
		if err != nil {
			return nil, fmt.Errorf("reward model step %d: %w", t.Step+1, err)
		}
		if progress != nil {
			progress(t.Step, loss)
		}
	}
	return t.RM, nil
}

// LabelledSamples samples G responses per problem from a policy and labels
// each with the task's verifier: the training data of a reward model.
func LabelledSamples(policy *moe.Model, tok *tokenizer.Tokenizer, problems []task.Problem, G, maxNew int, rng *engine.RNG) ([]RMExample, error) {
	var ex []RMExample
	const chunk = 64
	for lo := 0; lo < len(problems); lo += chunk {
		r, err := Sample(policy, tok, problems[lo:min(lo+chunk, len(problems))], G,
			moe.SampleOptions{Temperature: 1, MaxNew: maxNew}, reward.Default, rng)
		if err != nil {
			return nil, err
		}
		for i, s := range r.Seqs {
			ex = append(ex, RMExample{Prompt: r.Prompts[s.Prompt], Response: s.Tokens, Correct: r.Results[i].Correct})
		}
	}
	return ex, nil
}
