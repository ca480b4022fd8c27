package rl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl/algo"
	"github.com/moerl/moerl/rl/reward"
	"github.com/moerl/moerl/rl/task"
)

// Rollout is one batch of sampled responses: G per problem, scored.
type Rollout struct {
	Problems []task.Problem
	G        int
	Prompts  [][]int32       // per problem: <bos> and the prompt's tokens
	Seqs     []moe.Sequence  // P·G; sequence i answers problem i/G
	Texts    []string        // decoded responses, without the final <eos>
	Results  []reward.Result // rule-based scores
}

// EncodePrompt is the model's input for a problem: <bos> then its prompt.
func EncodePrompt(tok *tokenizer.Tokenizer, p task.Problem) ([]int32, error) {
	ids, err := tok.Encode(p.Prompt)
	if err != nil {
		return nil, fmt.Errorf("problem %s: %w", p.ID, err)
	}
	return append([]int32{tokenizer.BOS}, ids...), nil
}

// DecodeResponse is the text of generated tokens without the final <eos>;
// tokens outside the tokenizer (a model's vocabulary may be larger) show
// as U+FFFD, which no verifier accepts.
func DecodeResponse(tok *tokenizer.Tokenizer, ids []int32) string {
	if n := len(ids); n > 0 && ids[n-1] == tokenizer.EOS {
		ids = ids[:n-1]
	}
	return tok.DecodeLossy(ids)
}

// Sample draws G responses per problem and scores them with the problems'
// tasks under scheme.
func Sample(m *moe.Model, tok *tokenizer.Tokenizer, problems []task.Problem, G int,
	o moe.SampleOptions, scheme reward.Scheme, rng *engine.RNG) (*Rollout, error) {
	r := &Rollout{Problems: problems, G: G}
	for _, p := range problems {
		ids, err := EncodePrompt(tok, p)
		if err != nil {
			return nil, err
		}
		r.Prompts = append(r.Prompts, ids)
	}
	o.Stop = []int32{tokenizer.EOS}
	seqs, err := m.Generate(r.Prompts, G, o, rng)
	if err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	r.Seqs = seqs
	tasks := map[string]task.Task{}
	for _, s := range seqs {
		p := problems[s.Prompt]
		t, ok := tasks[p.Task]
		if !ok {
			if t, err = task.Get(p.Task); err != nil {
				return nil, err
			}
			tasks[p.Task] = t
		}
		text := DecodeResponse(tok, s.Tokens)
		r.Texts = append(r.Texts, text)
		res := reward.Score(t, p, text, scheme)
		if s.Truncated && res.WellFormed {
			// A response cut at the budget never closed with <eos>: it is
			// not a finished answer, whatever its text so far.
			res = reward.Result{Reward: scheme.Malformed, Answer: res.Answer, Reason: "malformed: truncated at the length limit"}
		}
		r.Results = append(r.Results, res)
	}
	return r, nil
}

// The rollout/trainer mismatch dial (algo rollout_precision,
// rollout_staleness): with it, rollouts sample from a frozen copy of the
// policy whose weights are the policy's of RolloutStaleness steps ago,
// rounded to RolloutPrecision, while the trainer computes with the
// policy's own fp32 weights. The log-probs recorded while sampling then
// differ from the trainer's recomputation (StepStats.LogpGap, RolloutKL,
// RolloutESS), and so can the experts chosen (RoutingDisagreement): what
// the rollout corrections and routing replay are for.

// snapshot is the policy's weights at the start of an RL step.
type snapshot struct {
	step int // the trainer's Step when taken: the weights after that many steps
	w    *engine.Tensor
}

// staleFile is a snapshot saved beside the policy checkpoint.
type staleFile struct {
	Step int    `json:"step"`
	Path string `json:"path"`
}

// dialled reports whether the rollout samples with other weights than the
// policy's.
func dialled(a algo.Config) bool {
	return a.RolloutStaleness > 0 || (a.RolloutPrecision != "" && a.RolloutPrecision != algo.PrecisionFP32)
}

// RolloutModel is the model the trainer's rollouts sample from: the policy,
// or, with a mismatch dialled in, a frozen copy holding the weights the
// dial asks for, set at the start of each step.
func (t *Trainer) RolloutModel() *moe.Model {
	if t.roll != nil {
		return t.roll
	}
	return t.Policy
}

// prepareRollout sets the rollout model's weights for the step about to
// run: the policy's after max(0, Step − k) steps (k the staleness),
// rounded to the rollout precision.
func (t *Trainer) prepareRollout() error {
	a := t.Cfg.Algo
	if !dialled(a) {
		return nil
	}
	be := t.Policy.Backend()
	if err := t.ensureRoll(); err != nil {
		return err
	}
	src := t.Policy.Params
	if k := a.RolloutStaleness; k > 0 {
		t.keepSnapshot()
		want := max(0, t.Step-k)
		src = nil
		for _, s := range t.stale {
			if s.step == want {
				src = s.w
			}
		}
		if src == nil {
			return fmt.Errorf("rollout_staleness %d: step %d samples with the weights after step %d, which the trainer does not hold (a run resumed without them?)", k, t.Step+1, want)
		}
	}
	switch p := a.RolloutPrecision; p {
	case "", algo.PrecisionFP32:
		be.Copy(t.roll.Params, src)
	case algo.PrecisionBF16:
		// Rounded on the backend, through a bf16 tensor and back: the
		// weights need not travel to the host and back each step.
		n := src.Len()
		h := be.New(engine.BF16, n)
		be.Cast(h, src, n)
		be.Cast(t.roll.Params, h, n)
		be.Free(h)
	default:
		be.Copy(t.roll.Params, src)
		w := t.roll.HostParams()
		if err := algo.RoundWeights(p, w); err != nil {
			return err
		}
		be.Upload(t.roll.Params, w)
	}
	return nil
}

// ensureRoll allocates the rollout model.
func (t *Trainer) ensureRoll() error {
	if t.roll != nil {
		return nil
	}
	m, err := moe.NewFrozen(t.Policy.Cfg, t.Policy.Backend())
	if err != nil {
		return fmt.Errorf("rollout model: %w", err)
	}
	t.roll = m
	return nil
}

// keepSnapshot adds the policy's current weights as the snapshot of step
// t.Step (replacing one of that step left by a failed attempt) and drops
// those no later step will sample with.
func (t *Trainer) keepSnapshot() {
	be, n := t.Policy.Backend(), t.Policy.NumParams()
	oldest := max(0, t.Step-t.Cfg.Algo.RolloutStaleness)
	var kept []snapshot
	var spare *engine.Tensor
	for _, s := range t.stale {
		if s.step < oldest || s.step == t.Step {
			if spare == nil {
				spare = s.w
			} else {
				be.Free(s.w)
			}
			continue
		}
		kept = append(kept, s)
	}
	if spare == nil {
		spare = be.NewF32(n)
	}
	be.Copy(spare, t.Policy.Params)
	t.stale = append(kept, snapshot{step: t.Step, w: spare})
}

// stalePath is where the snapshot of a step is saved beside the policy
// checkpoint.
func stalePath(policyPath string, step int) string {
	return fmt.Sprintf("%s.stale-%d.ck", strings.TrimSuffix(policyPath, ".ck"), step)
}

// saveStale writes the snapshots a resumed run will sample with (those
// after max(0, Step − k) … Step − 1 steps) beside the policy checkpoint
// and lists them; the files of older snapshots are removed by
// removeStale once the policy checkpoint that no longer lists them is
// written.
func (t *Trainer) saveStale(policyPath string) ([]staleFile, error) {
	k := t.Cfg.Algo.RolloutStaleness
	if k == 0 {
		return nil, nil
	}
	var files []staleFile
	for _, s := range t.stale {
		if s.step < max(0, t.Step-k) || s.step >= t.Step {
			continue
		}
		path := stalePath(policyPath, s.step)
		if t.savedStale[s.step] != path {
			if err := t.ensureRoll(); err != nil {
				return nil, err
			}
			t.Policy.Backend().Copy(t.roll.Params, s.w) // set again at the start of the next step
			st := moe.RunState{Stage: "rl-stale", Step: s.step}
			if err := t.roll.SaveCheckpoint(path, t.Tok, st, false); err != nil {
				return nil, fmt.Errorf("save the rollout's stale weights: %w", err)
			}
			if t.savedStale == nil {
				t.savedStale = map[int]string{}
			}
			t.savedStale[s.step] = path
		}
		files = append(files, staleFile{Step: s.step, Path: path})
	}
	return files, nil
}

// removeStale deletes the saved snapshots the checkpoint just written no
// longer lists.
func (t *Trainer) removeStale(listed []staleFile) error {
	keep := map[int]bool{}
	for _, f := range listed {
		keep[f.Step] = true
	}
	for step, path := range t.savedStale {
		if keep[step] {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove stale rollout weights: %w", err)
		}
		delete(t.savedStale, step)
	}
	return nil
}

// restoreStale loads the snapshots a checkpoint lists.
func (t *Trainer) restoreStale(files []staleFile) error {
	k := t.Cfg.Algo.RolloutStaleness
	if k == 0 {
		return nil
	}
	be := t.Policy.Backend()
	have := map[int]bool{}
	for _, f := range files {
		m, _, _, err := moe.LoadFrozen(f.Path, be)
		if err != nil {
			return fmt.Errorf("rollout_staleness %d: the weights after step %d: %w", k, f.Step, err)
		}
		if d := m.Cfg.Diff(t.Policy.Cfg); len(d) > 0 {
			m.Free()
			return fmt.Errorf("rollout_staleness %d: %s holds another model (%s)", k, f.Path, strings.Join(d, "; "))
		}
		w := be.NewF32(t.Policy.NumParams())
		be.Copy(w, m.Params)
		m.Free()
		t.stale = append(t.stale, snapshot{step: f.Step, w: w})
		if t.savedStale == nil {
			t.savedStale = map[int]string{}
		}
		t.savedStale[f.Step] = f.Path
		have[f.Step] = true
	}
	for j := max(0, t.Step-k); j < t.Step; j++ {
		if !have[j] {
			return fmt.Errorf("rollout_staleness %d: the checkpoint of step %d lists no saved weights after step %d, which the next steps sample with", k, t.Step, j)
		}
	}
	return nil
}
