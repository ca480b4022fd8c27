package run

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/rl"
)

// RLSummary is what an rl stage records in run.json: the last step's
// reward and accuracy.
type RLSummary struct {
	Reward   float64 `json:"final_reward"`
	Accuracy float64 `json:"final_accuracy"`
}

// RunRL trains a policy with RL from the checkpoint init (also the frozen
// reference) in dir; rm, if not "", is a reward model checkpoint for
// cfg.RewardSource model or mix. It returns the policy checkpoint's path.
func RunRL(env *Env, dir, init, rm string, cfg rl.Config, mode Mode) (string, error) {
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	if cfg.RewardSource != "rule" && rm == "" {
		return "", fmt.Errorf("rl: reward source %s needs a reward model (a checkpoint from moerl rm)", cfg.RewardSource)
	}
	inputs := map[string]string{"init": init}
	if rm != "" {
		inputs["reward_model"] = rm
	}
	f, err := Open(dir, "rl", cfg, inputs, mode)
	if err != nil {
		return "", err
	}
	pp := f.Path(PolicyFile)
	if f.State == Done {
		env.Log.Printf("rl %s: reusing the finished run in %s", cfg.Algo.Preset, dir)
		return pp, nil
	}
	f.SetDevice(env.Backend.Device())
	cfg.SkipNonFinite = env.SkipNonFinite
	s, err := newRLStepper(env, f, init, rm, cfg)
	if err != nil {
		f.Stopped(StatusFailed, err)
		return "", err
	}
	if s.tr.Step > 0 {
		env.Log.Printf("rl %s%s", cfg.Algo.Preset, resumedAt(s.tr.Step))
	}
	label := "rl " + cfg.Algo.Preset
	if err := Loop(env, f, label, s); err != nil {
		return "", err
	}
	if err := f.Finish(RLSummary{Reward: s.last.RewardMean, Accuracy: s.last.Accuracy}); err != nil {
		return "", err
	}
	return pp, nil
}

// rlStepper is an rl.Trainer as a Stepper.
type rlStepper struct {
	tr           *rl.Trainer
	pp, cp, init string
	last         rl.StepStats
}

func newRLStepper(env *Env, f *Folder, init, rmPath string, cfg rl.Config) (*rlStepper, error) {
	s := &rlStepper{pp: f.Path(PolicyFile), cp: f.Path(CriticFile), init: init}
	ref, tok, _, err := moe.LoadFrozen(init, env.Backend)
	if err != nil {
		return nil, err
	}
	_, statErr := os.Stat(s.pp)
	switch {
	case f.State == Partial && statErr == nil:
		policy, _, st, err := moe.LoadCheckpoint(s.pp, env.Backend)
		if err != nil {
			return nil, fmt.Errorf("resume: %w", err)
		}
		var critic *moe.Model
		if cfg.Algo.Critic {
			if critic, _, _, err = moe.LoadCheckpoint(s.cp, env.Backend); err != nil {
				return nil, fmt.Errorf("resume: %w", err)
			}
		}
		if s.tr, err = rl.NewTrainer(cfg, policy, ref, tok); err != nil {
			return nil, err
		}
		if err := s.tr.Restore(st, critic); err != nil {
			return nil, fmt.Errorf("resume %s: %w", s.pp, err)
		}
	case statErr != nil && !errors.Is(statErr, fs.ErrNotExist):
		return nil, statErr
	default:
		policy, _, _, err := moe.LoadCheckpoint(init, env.Backend)
		if err != nil {
			return nil, err
		}
		policy.ResetOptimizer()
		if s.tr, err = rl.NewTrainer(cfg, policy, ref, tok); err != nil {
			return nil, err
		}
	}
	if rmPath != "" {
		rm, _, _, err := moe.LoadFrozen(rmPath, env.Backend) // it scores, never trains here
		if err != nil {
			return nil, fmt.Errorf("reward model: %w", err)
		}
		if !rm.Cfg.ValueHead {
			return nil, fmt.Errorf("reward model %s is a policy, not a reward model (make one with moerl rm)", rmPath)
		}
		s.tr.RM = rm
	}
	return s, nil
}

func (s *rlStepper) Done() int  { return s.tr.Step }
func (s *rlStepper) Total() int { return s.tr.Cfg.Steps }
func (s *rlStepper) Save() error {
	return s.tr.Save(s.pp, s.cp, s.init)
}
func (s *rlStepper) Models() []*moe.Model {
	if s.tr.Critic != nil {
		return []*moe.Model{s.tr.Policy, s.tr.Critic}
	}
	return []*moe.Model{s.tr.Policy}
}

func (s *rlStepper) Step() (StepResult, error) {
	st, err := s.tr.TrainStep()
	if err != nil {
		return StepResult{}, err
	}
	s.last = st
	gen := st.GenSeconds / max(st.GenSeconds+st.UpdateSeconds, 1e-9)
	status := fmt.Sprintf("reward %.3f±%.3f acc %.2f len %.0f kl %.4f clip %.3f gen %.0f%%",
		st.RewardMean, st.RewardStd, st.Accuracy, st.LenMean, st.KLRef, st.ClipFrac, 100*gen)
	if st.ShortBatch {
		status += fmt.Sprintf(" SHORT BATCH %d/%d groups", st.Groups, st.GroupsWanted)
	}
	// A step counts as skipped when every one of its updates was.
	return StepResult{Stats: st, Status: status, Skipped: st.SkippedUpdates > 0 && st.Updates == 0}, nil
}
