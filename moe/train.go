package moe

import (
	"fmt"
	"math"

	"github.com/moerl/moerl/engine"
)

// TrainConfig is a language-modelling run (pretraining or SFT): next-token
// cross-entropy on rows of documents, AdamW with warm-up and cosine decay.
type TrainConfig struct {
	Steps       int     `json:"steps" help:"training steps"`
	Batch       int     `json:"batch" help:"sequences per step"`                                                    // sequences per step
	SeqLen      int     `json:"seq_len" help:"tokens per sequence (at most the model's max_seq; default: max_seq)"` // tokens per sequence (≤ model max_seq)
	LR          float64 `json:"lr" help:"peak learning rate"`
	MinLR       float64 `json:"min_lr" help:"learning rate at the end of the cosine decay"`
	Warmup      int     `json:"warmup" help:"steps of linear warm-up"`
	Beta1       float64 `json:"beta1" help:"AdamW β1"`
	Beta2       float64 `json:"beta2" help:"AdamW β2"`
	WeightDecay float64 `json:"weight_decay" help:"AdamW weight decay (matrices only, not norm gains)"`
	ClipNorm    float64 `json:"clip_norm" help:"clip the gradient's global norm to this (0: no clipping)"`
	Seed        uint64  `json:"seed" help:"seed of the initial weights and the data order"`
}

// DefaultTrain is a short moe-micro pretraining run.
var DefaultTrain = TrainConfig{Steps: 300, Batch: 32, SeqLen: 64, LR: 3e-3, MinLR: 3e-4, Warmup: 30,
	Beta1: 0.9, Beta2: 0.95, WeightDecay: 0.1, ClipNorm: 1, Seed: 1}

// Validate names the first bad field.
func (t TrainConfig) Validate(c Config) error {
	switch {
	case t.Steps <= 0:
		return fmt.Errorf("train config: steps must be positive, got %d", t.Steps)
	case t.Batch <= 0:
		return fmt.Errorf("train config: batch must be positive, got %d", t.Batch)
	case t.SeqLen < 2 || t.SeqLen > c.MaxSeq:
		return fmt.Errorf("train config: seq_len must be in [2, max_seq=%d], got %d", c.MaxSeq, t.SeqLen)
	case !(t.LR > 0) || t.MinLR < 0 || t.MinLR > t.LR:
		return fmt.Errorf("train config: need 0 ≤ min_lr ≤ lr and lr > 0, got lr %g min_lr %g", t.LR, t.MinLR)
	case t.Warmup < 0:
		return fmt.Errorf("train config: warmup must be ≥ 0, got %d", t.Warmup)
	case t.Beta1 < 0 || t.Beta1 >= 1 || t.Beta2 < 0 || t.Beta2 >= 1:
		return fmt.Errorf("train config: beta1 and beta2 must be in [0,1), got %g, %g", t.Beta1, t.Beta2)
	case t.WeightDecay < 0 || t.ClipNorm < 0:
		return fmt.Errorf("train config: weight_decay and clip_norm must be ≥ 0")
	}
	return nil
}

// Schedule is the run's learning-rate schedule.
func (t TrainConfig) Schedule() engine.Schedule {
	return engine.Schedule{Peak: t.LR, Min: t.MinLR, Warmup: t.Warmup, Total: t.Steps}
}

// Opt is the run's optimizer setting.
func (t TrainConfig) Opt() OptConfig {
	return OptConfig{Beta1: t.Beta1, Beta2: t.Beta2, Eps: 1e-8, WeightDecay: t.WeightDecay, ClipNorm: t.ClipNorm}
}

// Batch is one step's tokens: Rows sequences of T tokens, targets shifted by
// one, and a 0/1 weight per target (0 on padding).
type Batch struct {
	Rows, T int
	IDs     []int32
	Targets []int32
	Mask    []float32
}

// NewBatch fills a batch from token sequences: row r is docs[r] truncated to
// T+1 tokens, inputs its first T and targets its last T, right-padded with pad.
func NewBatch(docs [][]int32, T int, pad int32) *Batch {
	b := &Batch{Rows: len(docs), T: T, IDs: make([]int32, len(docs)*T),
		Targets: make([]int32, len(docs)*T), Mask: make([]float32, len(docs)*T)}
	for r, doc := range docs {
		for t := range T {
			i := r*T + t
			b.IDs[i], b.Targets[i] = pad, pad
			if t < len(doc) {
				b.IDs[i] = doc[t]
			}
			if t+1 < len(doc) {
				b.Targets[i], b.Mask[i] = doc[t+1], 1
			}
		}
	}
	return b
}

// StepStats is what one training step reports.
type StepStats struct {
	Step     int     `json:"step"`
	Loss     float64 `json:"loss"`     // masked mean cross-entropy (nats/token)
	AuxLoss  float64 `json:"aux_loss"` // load-balancing loss, before its coefficient
	GradNorm float64 `json:"grad_norm"`
	LR       float64 `json:"lr"`
	Tokens   int     `json:"tokens"` // target tokens that counted
}

// TrainStep runs forward, backward and one AdamW step on a batch, at the
// learning rate of 0-based step `step` under t's schedule.
func (m *Model) TrainStep(a *Acts, b *Batch, t TrainConfig, step int) (StepStats, error) {
	if a.B != b.Rows || a.T != b.T {
		return StepStats{}, fmt.Errorf("train step: workspace is %d×%d, batch is %d×%d", a.B, a.T, b.Rows, b.T)
	}
	m.ZeroGrad()
	var count float64
	for _, w := range b.Mask {
		count += float64(w)
	}
	if count == 0 {
		return StepStats{}, fmt.Errorf("train step: batch has no target tokens")
	}
	// The loss's gradient depends on the mask alone, so the forward
	// writes the logits' gradient as it computes the log-probs.
	dlogp := make([]float32, len(b.Mask))
	for i, w := range b.Mask {
		if w != 0 {
			dlogp[i] = -w / float32(count)
		}
	}
	logp := m.Forward(a, b.IDs, b.Targets, ForwardOptions{DLogp: dlogp})
	var loss float64
	for i, w := range b.Mask {
		if w != 0 {
			loss -= float64(w) * float64(logp[i])
		}
	}
	loss /= count
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return StepStats{}, m.ForwardError(a, loss)
	}
	m.Backward(a, nil)
	lr := t.Schedule().LR(step)
	norm, err := m.Step(lr, t.Opt())
	if err != nil {
		return StepStats{}, err
	}
	return StepStats{Step: step + 1, Loss: loss, AuxLoss: m.AuxLoss, GradNorm: norm, LR: lr, Tokens: int(count)}, nil
}

// Loss is the masked mean cross-entropy of a batch without training.
func (m *Model) Loss(a *Acts, b *Batch) float64 {
	logp := m.Forward(a, b.IDs, b.Targets, ForwardOptions{})
	var loss, count float64
	for i, w := range b.Mask {
		loss -= float64(w) * float64(logp[i])
		count += float64(w)
	}
	return loss / max(count, 1)
}
