package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/rl"
	"github.com/moerl/moerl/rl/algo"
	"github.com/moerl/moerl/rl/task"
)

// setList collects repeated --set key=value flags.
type setList []string

func (s *setList) String() string     { return strings.Join(*s, " ") }
func (s *setList) Set(v string) error { *s = append(*s, v); return nil }

func runRL(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("rl", `Train a policy with reinforcement learning from a checkpoint (--init) on a
reasoning task. --algo picks a preset (`+strings.Join(algo.Presets(), ", ")+`);
every field of it can be overridden by its own flag (--kl-coef 0.01) or with
--set key=value. The fully resolved settings are printed and written to
OUT/run.json. Writes OUT/policy.ck (and OUT/critic.ck for ppo) and
OUT/metrics.jsonl, one line per step.`, stderr)
	preset := fs.String("algo", "grpo", "algorithm preset")
	var ac algo.Config
	bindStruct(fs, &ac, "", "algorithm", "preset")
	var sets setList
	fs.Var(&sets, "set", "override an algorithm field: key=value (repeatable; keys: "+strings.Join(algo.Keys(), ", ")+")")
	def, _ := rl.DefaultConfig("grpo")
	rc := def
	bindStruct(fs, &rc, "", "rl")
	diffs := fs.String("difficulties", "", "comma-separated training difficulties (default: the task's training bins)")
	init := fs.String("init", "", "checkpoint to start from; also the reference policy (required)")
	out := fs.String("out", "runs/rl", "output folder")
	resume := fs.Bool("resume", false, "continue the run in --out from its checkpoint")
	saveEvery := fs.Int("save-every", 10, "checkpoint every N steps (0: only at the end)")
	rmPath := fs.String("reward-model", "", "reward model checkpoint (moerl rm), for --reward-source model or mix")
	device := fs.String("device", "auto", "compute device: auto, cpu or cuda")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := resolveRL(fs, *preset, &ac, &rc, sets, *diffs)
	if err != nil {
		return err
	}
	if *init == "" {
		return usagef("--init is required: the checkpoint to start from")
	}
	if cfg.RewardSource != "rule" && *rmPath == "" {
		return usagef("--reward-source %s needs --reward-model (a checkpoint from moerl rm)", cfg.RewardSource)
	}
	if *saveEvery < 0 {
		return usagef("--save-every must be ≥ 0, got %d", *saveEvery)
	}
	be, err := openBackend(*device, stderr)
	if err != nil {
		return err
	}
	_, err = trainRL(cfg, *init, *out, *resume, *saveEvery, *rmPath, be, stdout, stderr)
	return err
}

// resolveRL applies, in order, the preset, the flags that were set, and the
// --set assignments, then validates.
func resolveRL(fs *flag.FlagSet, preset string, ac *algo.Config, rc *rl.Config, sets []string, diffs string) (rl.Config, error) {
	cfg, err := rl.DefaultConfig(preset)
	if err != nil {
		return cfg, usageError{fmt.Errorf("--algo: %w", err)}
	}
	copySetFields(fs, &cfg.Algo, ac, "", "preset")
	copySetFields(fs, &cfg, rc, "")
	for _, s := range sets {
		if err := cfg.Algo.Apply(s); err != nil {
			return cfg, usageError{fmt.Errorf("--set %s: %w", s, err)}
		}
	}
	t, err := task.Get(cfg.Task)
	if err != nil {
		return cfg, usageError{fmt.Errorf("--task: %w", err)}
	}
	if cfg.Difficulties, err = parseDifficulties(t, diffs); err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}

// trainRL runs (or resumes) an RL run into out and returns the trained
// policy's checkpoint path.
// rmPath, if set, is a reward model checkpoint (moerl rm) for
// cfg.RewardSource model or mix.
func trainRL(cfg rl.Config, initPath, out string, resume bool, saveEvery int, rmPath string, be engine.Backend, stdout, stderr io.Writer) (string, error) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", fmt.Errorf("create output folder: %w", err)
	}
	pp, cp := filepath.Join(out, "policy.ck"), filepath.Join(out, "critic.ck")
	metricsPath := filepath.Join(out, "metrics.jsonl")
	ref, tok, _, err := moe.LoadCheckpoint(initPath, be)
	if err != nil {
		return "", err
	}
	var tr *rl.Trainer
	_, statErr := os.Stat(pp)
	switch {
	case resume && statErr == nil:
		policy, _, st, err := moe.LoadCheckpoint(pp, be)
		if err != nil {
			return "", err
		}
		var critic *moe.Model
		if cfg.Algo.Critic {
			if critic, _, _, err = moe.LoadCheckpoint(cp, be); err != nil {
				return "", err
			}
		}
		if tr, err = rl.NewTrainer(cfg, policy, ref, tok); err != nil {
			return "", err
		}
		if err := tr.Restore(st, critic); err != nil {
			return "", fmt.Errorf("resume %s: %w", pp, err)
		}
		if err := truncateMetrics(metricsPath, tr.Step); err != nil {
			return "", err
		}
		fmt.Fprintf(stderr, "resuming %s at step %d\n", pp, tr.Step)
	case resume && !errors.Is(statErr, fs.ErrNotExist):
		return "", fmt.Errorf("resume: %w", statErr)
	case !resume && statErr == nil:
		return "", fmt.Errorf("%s exists: pass --resume to continue that run, or choose another --out", pp)
	default:
		policy, _, _, err := moe.LoadCheckpoint(initPath, be)
		if err != nil {
			return "", err
		}
		policy.ResetOptimizer()
		if tr, err = rl.NewTrainer(cfg, policy, ref, tok); err != nil {
			return "", err
		}
		if err := os.Remove(metricsPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
	}
	if cfg.RewardSource != "rule" {
		if rmPath == "" {
			return "", usagef("--reward-source %s needs --reward-model (a checkpoint from moerl rm)", cfg.RewardSource)
		}
		rm, _, _, err := moe.LoadCheckpoint(rmPath, be)
		if err != nil {
			return "", err
		}
		if !rm.Cfg.ValueHead {
			return "", fmt.Errorf("--reward-model %s is a policy, not a reward model (make one with moerl rm)", rmPath)
		}
		tr.RM = rm
	}
	resolved, _ := json.MarshalIndent(map[string]any{"init": initPath, "rl": cfg, "reward_model": rmPath, "device": be.Device()}, "", "  ")
	if err := os.WriteFile(filepath.Join(out, "run.json"), append(resolved, '\n'), 0o644); err != nil {
		return "", err
	}
	fmt.Fprintf(stderr, "rl settings: %s\n", cfg.Algo)
	mf, err := os.OpenFile(metricsPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return "", err
	}
	defer mf.Close()
	bar := newProgress(stderr, "rl "+cfg.Algo.Preset, cfg.Steps)
	var last rl.StepStats
	for tr.Step < cfg.Steps {
		st, err := tr.TrainStep()
		if err != nil {
			return "", fmt.Errorf("rl step %d: %w", tr.Step+1, err)
		}
		last = st
		line, _ := json.Marshal(st)
		if _, err := mf.Write(append(line, '\n')); err != nil {
			return "", fmt.Errorf("write metrics: %w", err)
		}
		gen := st.GenSeconds / max(st.GenSeconds+st.UpdateSeconds, 1e-9)
		bar.update(tr.Step, fmt.Sprintf("reward %.3f±%.3f acc %.2f len %.0f kl %.4f clip %.3f gen %.0f%%",
			st.RewardMean, st.RewardStd, st.Accuracy, st.LenMean, st.KLRef, st.ClipFrac, 100*gen))
		if saveEvery > 0 && tr.Step%saveEvery == 0 && tr.Step < cfg.Steps {
			if err := tr.Save(pp, cp, initPath); err != nil {
				return "", err
			}
		}
	}
	bar.finish()
	if err := tr.Save(pp, cp, initPath); err != nil {
		return "", err
	}
	fmt.Fprintf(stdout, "rl %s done: step %d reward %.3f accuracy %.3f; checkpoint %s\n",
		cfg.Algo.Preset, tr.Step, last.RewardMean, last.Accuracy, pp)
	return pp, nil
}
