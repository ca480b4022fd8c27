package run

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"strings"
	"time"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/rl"
	"github.com/moerl/moerl/rl/task"
)

// ModelFile is the checkpoint a language-modelling stage (pretrain, sft,
// distill) writes; an rl stage writes PolicyFile.
const (
	ModelFile  = "model.ck"
	PolicyFile = "policy.ck"
	CriticFile = "critic.ck"
)

// Pretrain trains a model from scratch with next-token cross-entropy.
type Pretrain struct {
	Model  moe.Config      `json:"model"`
	Train  moe.TrainConfig `json:"train"`
	Corpus Corpus          `json:"corpus"`
}

// Validate names the first bad setting.
func (s Pretrain) Validate() error {
	if err := s.Model.Validate(); err != nil {
		return err
	}
	if err := s.Train.Validate(s.Model); err != nil {
		return err
	}
	return s.Corpus.Validate()
}

// SFT fine-tunes a checkpoint (input "init") with next-token cross-entropy,
// from a fresh optimizer.
type SFT struct {
	Train  moe.TrainConfig `json:"train"`
	Corpus Corpus          `json:"corpus"`
}

// Validate names the first bad setting (the training settings are checked
// against the model when it is loaded).
func (s SFT) Validate() error { return s.Corpus.Validate() }

// Distill fine-tunes a student (input "init") on a teacher's (input
// "teacher") verified samples: the teacher answers Samples times each of
// Problems, and the correct answers (rejection sampling) are the text.
// DropThinking is the share of those documents whose think block is
// emptied: Qwen3's thinking-mode fusion trains one model on answers with
// and without their reasoning (0.5); plain distillation keeps every one (0).
type Distill struct {
	Train        moe.TrainConfig `json:"train"`
	Problems     Problems        `json:"problems"`
	Samples      int             `json:"samples"`
	Temperature  float64         `json:"temperature"`
	MaxNew       int             `json:"max_new"`
	DropThinking float64         `json:"drop_thinking,omitempty"`
	Seed         uint64          `json:"seed"`
}

// Validate names the first bad setting.
func (s Distill) Validate() error {
	switch {
	case s.Samples <= 0:
		return fmt.Errorf("distill: samples must be positive, got %d", s.Samples)
	case !(s.Temperature >= 0):
		return fmt.Errorf("distill: temperature must be ≥ 0, got %v", s.Temperature)
	case s.MaxNew <= 0:
		return fmt.Errorf("distill: max_new must be positive, got %d", s.MaxNew)
	case !(s.DropThinking >= 0 && s.DropThinking <= 1):
		return fmt.Errorf("distill: drop_thinking must be in [0, 1], got %v", s.DropThinking)
	}
	return s.Problems.Validate()
}

// LMSummary is what a language-modelling stage records in run.json.
type LMSummary struct {
	Params int     `json:"params"`
	Docs   int     `json:"docs"`
	Loss   float64 `json:"final_loss"`
	// Kept is, for distill, the share of teacher samples that were correct.
	Kept float64 `json:"kept,omitempty"`
}

// RunPretrain runs (or continues, or reuses) a pretraining stage in dir and
// returns the checkpoint's path.
func RunPretrain(env *Env, dir string, s Pretrain, mode Mode) (string, error) {
	if err := s.Validate(); err != nil {
		return "", err
	}
	if env.Tok.VocabSize() > s.Model.Vocab {
		return "", fmt.Errorf("pretrain: vocab %d is smaller than the tokenizer's %d tokens", s.Model.Vocab, env.Tok.VocabSize())
	}
	return runLM(env, dir, "pretrain", s, s.Corpus.inputs(), mode, s.Train, func() (*moe.Model, *moe.Corpus, float64, error) {
		corpus, err := s.Corpus.Load(env.Tok)
		if err != nil {
			return nil, nil, 0, err
		}
		m, err := moe.New(s.Model, env.Backend, s.Train.Seed)
		return m, corpus, 0, err
	})
}

// RunSFT fine-tunes the checkpoint init in dir.
func RunSFT(env *Env, dir, init string, s SFT, mode Mode) (string, error) {
	if err := s.Corpus.Validate(); err != nil {
		return "", err
	}
	inputs := s.Corpus.inputs()
	if inputs == nil {
		inputs = map[string]string{}
	}
	inputs["init"] = init
	return runLM(env, dir, "sft", s, inputs, mode, s.Train, func() (*moe.Model, *moe.Corpus, float64, error) {
		corpus, err := s.Corpus.Load(env.Tok)
		if err != nil {
			return nil, nil, 0, err
		}
		m, err := loadFresh(env, init, s.Train)
		return m, corpus, 0, err
	})
}

// RunDistill fine-tunes the student init on the teacher's verified samples.
func RunDistill(env *Env, dir, init, teacher string, s Distill, mode Mode) (string, error) {
	if err := s.Validate(); err != nil {
		return "", err
	}
	inputs := map[string]string{"init": init, "teacher": teacher}
	for k, v := range s.Problems.inputs() {
		inputs[k] = v
	}
	return runLM(env, dir, "distill", s, inputs, mode, s.Train, func() (*moe.Model, *moe.Corpus, float64, error) {
		problems, err := s.Problems.Load()
		if err != nil {
			return nil, nil, 0, err
		}
		tm, _, _, err := moe.LoadFrozen(teacher, env.Backend)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("teacher: %w", err)
		}
		docs, kept, err := rl.DistilCorpus(tm, env.Tok, problems, s.Samples,
			moe.SampleOptions{Temperature: s.Temperature, MaxNew: s.MaxNew}, engine.NewRNG(s.Seed, engine.StreamSample))
		if err != nil {
			return nil, nil, 0, err
		}
		env.Log.Printf("distill: kept %d of %d teacher samples (%.1f%% correct)", len(docs), len(problems)*s.Samples, 100*kept)
		for i := range docs {
			// Spread evenly: document i loses its thinking when the running
			// count ⌊(i+1)·share⌋ steps up, so the share holds exactly.
			if math.Floor(float64(i+1)*s.DropThinking) > math.Floor(float64(i)*s.DropThinking) {
				docs[i] = withoutThinking(docs[i])
			}
		}
		corpus, err := moe.EncodeCorpus(docs, env.Tok)
		if err != nil {
			return nil, nil, 0, err
		}
		m, err := loadFresh(env, init, s.Train)
		return m, corpus, kept, err
	})
}

// loadFresh loads a checkpoint to fine-tune, with a fresh optimizer, and
// checks the training settings against its model.
func loadFresh(env *Env, init string, tc moe.TrainConfig) (*moe.Model, error) {
	m, _, _, err := moe.LoadCheckpoint(init, env.Backend)
	if err != nil {
		return nil, err
	}
	if err := tc.Validate(m.Cfg); err != nil {
		return nil, err
	}
	m.ResetOptimizer()
	return m, nil
}

// withoutThinking empties a document's think block: a non-thinking answer.
func withoutThinking(doc string) string {
	a := strings.Index(doc, task.ThinkOpen)
	b := strings.Index(doc, task.ThinkClose)
	if a < 0 || b < a {
		return doc
	}
	return doc[:a+len(task.ThinkOpen)] + doc[b:]
}

// runLM is the run of every language-modelling stage: open the folder,
// start or continue, loop, finish. start builds the model and the corpus
// of a run that begins at step 0 (and the corpus again on resume).
func runLM(env *Env, dir, kind string, settings any, inputs map[string]string, mode Mode, tc moe.TrainConfig,
	start func() (*moe.Model, *moe.Corpus, float64, error)) (string, error) {
	f, err := Open(dir, kind, settings, inputs, mode)
	if err != nil {
		return "", err
	}
	ck := f.Path(ModelFile)
	if f.State == Done {
		env.Log.Printf("%s: reusing the finished run in %s", kind, dir)
		return ck, nil
	}
	f.SetDevice(env.Backend.Device())
	m, corpus, kept, err := start()
	if err != nil {
		f.Stopped(StatusFailed, err)
		return "", fmt.Errorf("%s: %w", kind, err)
	}
	s := &lmStepper{env: env, kind: kind, m: m, corpus: corpus, train: tc, ck: ck,
		data: engine.NewRNG(tc.Seed, engine.StreamData)}
	if f.State == Partial {
		if err := s.restore(); err != nil {
			f.Stopped(StatusFailed, err)
			return "", err
		}
	}
	env.Log.Printf("%s: %d parameters on %s, %d documents, %d steps of %d×%d tokens%s",
		kind, m.NumParams(), env.Backend.Device(), len(corpus.Docs), tc.Steps, tc.Batch, tc.SeqLen, resumedAt(s.step))
	s.acts = m.NewActs(tc.Batch, tc.SeqLen)
	defer s.acts.Free(env.Backend)
	if err := Loop(env, f, kind, s); err != nil {
		return "", err
	}
	if err := f.Finish(LMSummary{Params: m.NumParams(), Docs: len(corpus.Docs), Loss: s.last.Loss, Kept: kept}); err != nil {
		return "", err
	}
	return ck, nil
}

func resumedAt(step int) string {
	if step == 0 {
		return ""
	}
	return fmt.Sprintf(", resuming at step %d", step)
}

// lmStepper is a language-modelling run as a Stepper.
type lmStepper struct {
	env    *Env
	kind   string
	m      *moe.Model
	corpus *moe.Corpus
	train  moe.TrainConfig
	data   *engine.RNG
	acts   *moe.Acts
	ck     string
	step   int
	last   moe.StepStats
	tokens int
	t0     time.Time
}

// restore continues from the checkpoint; a folder whose run stopped before
// its first checkpoint starts again from step 0.
func (s *lmStepper) restore() error {
	if _, err := os.Stat(s.ck); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	m, _, st, err := moe.LoadCheckpoint(s.ck, s.env.Backend)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if m.Cfg != s.m.Cfg {
		return fmt.Errorf("resume %s: the checkpoint's model differs from the run's: %s", s.ck, strings.Join(m.Cfg.Diff(s.m.Cfg), ", "))
	}
	if err := s.data.SetState(st.RNG["data"]); err != nil {
		return fmt.Errorf("resume %s: %w", s.ck, err)
	}
	s.m, s.step = m, st.Step
	return nil
}

func (s *lmStepper) Done() int            { return s.step }
func (s *lmStepper) Total() int           { return s.train.Steps }
func (s *lmStepper) Models() []*moe.Model { return []*moe.Model{s.m} }

// lmStepStats is a metrics line of a language-modelling step.
type lmStepStats struct {
	moe.StepStats
	TokensPerS float64 `json:"tokens_per_s"`
	Skipped    string  `json:"skipped,omitempty"` // why the batch was not trained on
}

func (s *lmStepper) Step() (StepResult, error) {
	if s.t0.IsZero() {
		s.t0 = time.Now()
	}
	b := s.corpus.Batch(s.data, s.train.Batch, s.train.SeqLen)
	st, err := s.m.TrainStep(s.acts, b, s.train, s.step)
	s.tokens += b.Rows * b.T
	rate := float64(s.tokens) / time.Since(s.t0).Seconds()
	if err != nil && s.env.SkipNonFinite && IsNonFinite(err) {
		// The batch is spent (the data stream moved on), the weights are
		// untouched: the step counts, its update does not.
		s.step++
		return StepResult{Stats: lmStepStats{StepStats: moe.StepStats{Step: s.step}, TokensPerS: rate, Skipped: err.Error()},
			Status: "skipped a non-finite batch", Skipped: true}, nil
	}
	if err != nil {
		return StepResult{}, err
	}
	s.step++
	s.last = st
	return StepResult{Stats: lmStepStats{StepStats: st, TokensPerS: rate},
		Status: fmt.Sprintf("loss %.4f %s tok/s", st.Loss, fmtRate(rate))}, nil
}

func (s *lmStepper) Save() error {
	st := moe.RunState{Stage: s.kind, Step: s.step, RNG: map[string][]byte{"data": s.data.State()}}
	st.Config, _ = json.Marshal(s.train)
	return s.m.SaveCheckpoint(s.ck, s.env.Tok, st, true)
}

// fmtRate prints a per-second rate with a k/M suffix.
func fmtRate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}
