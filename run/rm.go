package run

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/rl"
)

// RM trains a learned reward model (Seed-Thinking's verifier) on the
// samples of a policy (input "policy"), labelled by the task's verifier,
// and measures it on samples of HeldOut, other problems.
type RM struct {
	Problems Problems         `json:"problems"`
	HeldOut  Problems         `json:"held_out"`
	Samples  int              `json:"samples"`
	MaxNew   int              `json:"max_new"`
	Train    rl.RMTrainConfig `json:"train"`
}

// Validate names the first bad setting.
func (s RM) Validate() error {
	switch {
	case s.Samples <= 0 || s.MaxNew <= 0:
		return fmt.Errorf("rm: samples and max_new must be positive, got %d and %d", s.Samples, s.MaxNew)
	case s.Train.Steps <= 0 || s.Train.Batch <= 0 || !(s.Train.LR > 0):
		return fmt.Errorf("rm: steps, batch and lr must be positive")
	}
	if err := s.Problems.Validate(); err != nil {
		return err
	}
	return s.HeldOut.Validate()
}

// RMSummary is what an rm stage records: its data and its held-out fit.
type RMSummary struct {
	TrainSamples   int        `json:"train_samples"`
	TrainPositive  float64    `json:"train_positive"`
	HeldOutSamples int        `json:"held_out_samples"`
	HeldOut        rl.RMStats `json:"held_out"`
}

// RunRM trains a reward model in dir from the policy checkpoint's samples.
func RunRM(env *Env, dir, policyPath string, s RM, mode Mode) (string, error) {
	if err := s.Validate(); err != nil {
		return "", err
	}
	inputs := map[string]string{"policy": policyPath}
	for k, v := range s.Problems.inputs() {
		inputs[k] = v
	}
	f, err := Open(dir, "rm", s, inputs, mode)
	if err != nil {
		return "", err
	}
	ck := f.Path(ModelFile)
	if f.State == Done {
		env.Log.Printf("rm: reusing the finished run in %s", dir)
		return ck, nil
	}
	f.SetDevice(env.Backend.Device())
	st, err := newRMStepper(env, ck, policyPath, s, f.State == Partial)
	if err != nil {
		f.Stopped(StatusFailed, err)
		return "", err
	}
	defer st.tr.Close()
	env.Log.Printf("rm: %d training samples (%.0f%% correct), %d held-out samples (%.0f%% correct)%s",
		len(st.train), 100*correctShare(st.train), len(st.held), 100*correctShare(st.held), resumedAt(st.tr.Step))
	if err := Loop(env, f, "rm", st); err != nil {
		return "", err
	}
	after := rl.EvalRM(st.tr.RM, st.held)
	env.Log.Printf("rm: held-out AUC %.3f, accuracy %.3f at P = 0.5, logistic loss %.4f", after.AUC, after.Accuracy, after.Loss)
	sum := RMSummary{TrainSamples: len(st.train), TrainPositive: correctShare(st.train), HeldOutSamples: len(st.held), HeldOut: after}
	if err := f.Finish(sum); err != nil {
		return "", err
	}
	return ck, nil
}

type rmStepper struct {
	env         *Env
	tr          *rl.RMTrainer
	ck          string
	train, held []rl.RMExample
}

func newRMStepper(env *Env, ck, policyPath string, s RM, partial bool) (*rmStepper, error) {
	policy, _, _, err := moe.LoadFrozen(policyPath, env.Backend) // it samples, and the reward model starts from its weights
	if err != nil {
		return nil, err
	}
	if policy.Cfg.ValueHead {
		return nil, fmt.Errorf("rm: %s is a value model, not a policy", policyPath)
	}
	trainProblems, err := s.Problems.Load()
	if err != nil {
		return nil, err
	}
	heldProblems, err := s.HeldOut.Load()
	if err != nil {
		return nil, err
	}
	// One sampling stream for both sets, in this order: the data are the
	// same every time the stage runs, so a resumed run trains on them too.
	rng := engine.NewRNG(s.Train.Seed, engine.StreamSample)
	st := &rmStepper{env: env, ck: ck}
	if st.train, err = rl.LabelledSamples(policy, env.Tok, trainProblems, s.Samples, s.MaxNew, rng); err != nil {
		return nil, err
	}
	if st.held, err = rl.LabelledSamples(policy, env.Tok, heldProblems, s.Samples, s.MaxNew, rng); err != nil {
		return nil, err
	}
	if st.tr, err = rl.NewRMTrainer(policy, st.train, s.Train); err != nil {
		return nil, err
	}
	if _, statErr := os.Stat(ck); partial && statErr == nil {
		rm, _, rs, err := moe.LoadCheckpoint(ck, env.Backend)
		if err != nil {
			return nil, fmt.Errorf("resume: %w", err)
		}
		if err := st.tr.Restore(rm, rs); err != nil {
			return nil, err
		}
	} else if statErr != nil && !errors.Is(statErr, fs.ErrNotExist) {
		return nil, statErr
	}
	return st, nil
}

func (s *rmStepper) Done() int            { return s.tr.Step }
func (s *rmStepper) Total() int           { return s.tr.Cfg.Steps }
func (s *rmStepper) Models() []*moe.Model { return []*moe.Model{s.tr.RM} }
func (s *rmStepper) Save() error          { return s.tr.Save(s.ck, s.env.Tok) }

func (s *rmStepper) Step() (StepResult, error) {
	loss, err := s.tr.TrainStep()
	if err != nil {
		return StepResult{}, err
	}
	return StepResult{Stats: map[string]any{"step": s.tr.Step, "loss": loss}, Status: fmt.Sprintf("loss %.4f", loss)}, nil
}

// correctShare is the share of examples labelled correct.
func correctShare(ex []rl.RMExample) float64 {
	n := 0
	for _, e := range ex {
		if e.Correct {
			n++
		}
	}
	return float64(n) / float64(max(len(ex), 1))
}
