package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/moerl/moerl/rl"
	"github.com/moerl/moerl/rl/algo"
	"github.com/moerl/moerl/rl/task"
	"github.com/moerl/moerl/run"
)

func runRL(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("rl", `Train a policy with reinforcement learning from a checkpoint (--init) on a
reasoning task. --algo picks a preset (`+strings.Join(algo.Presets(), ", ")+`);
every field of it can be overridden by its own flag (--kl-coef 0.01) or with
--set key=value. The fully resolved settings are printed and written to
OUT/run.json. Writes OUT/policy.ck (and OUT/critic.ck for ppo) and
OUT/metrics.jsonl, one line per step. Ctrl-C saves a checkpoint at the end of
the current step; --resume continues from it.`, stderr)
	preset := fs.String("algo", "grpo", "algorithm preset: "+strings.Join(algo.Presets(), ", ")+"; the algorithm flags below override its fields (their defaults shown are grpo's)")
	ac, _ := algo.Preset("grpo")
	bindStruct(fs, &ac, "", "", "algorithm", "preset")
	var sets setList
	fs.Var(&sets, "set", "override an algorithm field: key=value (repeatable; keys: "+strings.Join(algo.Keys(), ", ")+")")
	def, _ := rl.DefaultConfig("grpo")
	rc := def
	bindStruct(fs, &rc, "", "", "rl")
	init := fs.String("init", "", "checkpoint to start from; also the frozen reference policy (required)")
	out := fs.String("out", "runs/rl", "output folder")
	rf := addRunFlags(fs, 10)
	rmPath := fs.String("reward-model", "", "reward model checkpoint (from moerl rm), for --reward-source model or mix")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := resolveRL(fs, *preset, &ac, &rc, sets)
	if err != nil {
		return err
	}
	if *init == "" {
		return usagef("--init is required: the checkpoint to start from")
	}
	if cfg.RewardSource != "rule" && *rmPath == "" {
		return usagef("--reward-source %s needs --reward-model (a checkpoint from moerl rm)", cfg.RewardSource)
	}
	env, release, err := newEnv(rf, stderr, "rl", args)
	if err != nil {
		return err
	}
	defer release()
	fmt.Fprintf(stderr, "rl settings: %s\n", cfg.Algo)
	pp, err := run.RunRL(env, *out, *init, *rmPath, cfg, rf.mode())
	if err != nil {
		return err
	}
	rec, err := run.ReadRecord(*out)
	if err != nil {
		return err
	}
	var sum run.RLSummary
	if err := jsonUnmarshal(rec.Summary, &sum); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rl %s done: step %d reward %.3f accuracy %.3f; checkpoint %s\n",
		cfg.Algo.Preset, rec.Step, sum.Reward, sum.Accuracy, pp)
	return nil
}

// resolveRL applies, in order, the preset, the flags that were set, and the
// --set assignments, then validates.
func resolveRL(fs *flag.FlagSet, preset string, ac *algo.Config, rc *rl.Config, sets []string) (rl.Config, error) {
	cfg, err := rl.DefaultConfig(preset)
	if err != nil {
		return cfg, usageError{fmt.Errorf("--algo: %w", err)}
	}
	copySetFields(fs, &cfg.Algo, ac, "", "", "preset")
	copySetFields(fs, &cfg, rc, "", "")
	for _, s := range sets {
		if err := cfg.Algo.Apply(s); err != nil {
			return cfg, usageError{fmt.Errorf("--set %s: %w", s, err)}
		}
	}
	if _, err := task.Get(cfg.Task); err != nil {
		return cfg, usageError{fmt.Errorf("--task: %w", err)}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}
