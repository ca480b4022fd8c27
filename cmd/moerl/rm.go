package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/rl"
	"github.com/moerl/moerl/rl/task"
)

func runRM(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("rm", `Train a learned reward model (Seed-Thinking's verifier model): a model with
the policy's architecture and a scalar head, started from the policy's
weights, that reads a prompt and a whole response and predicts whether the
response is correct. Its data are the policy's own samples (--samples per
problem for --docs generated problems), labelled by the task's verifier;
it is measured on fresh samples of other problems. Use it in RL with
'moerl rl --reward-source model --reward-model OUT/model.ck' (or mix).
Writes OUT/model.ck, OUT/metrics.jsonl and OUT/run.json.`, stderr)
	policyPath := fs.String("policy", "", "policy checkpoint whose samples the model learns to judge (required)")
	taskName := fs.String("task", "add", "task")
	diffs := fs.String("difficulties", "", "comma-separated difficulties (default: the task's training bins)")
	docs := fs.Int("docs", 512, "training problems")
	samples := fs.Int("samples", 4, "policy samples per problem")
	maxNew := fs.Int("max-new", 40, "new tokens per sample at most")
	tc := rl.RMTrainConfig{Steps: 300, Batch: 32, LR: 1e-3, Seed: 1}
	bindStruct(fs, &tc, "", "reward-model training")
	out := fs.String("out", "runs/rm", "output folder")
	device := fs.String("device", "auto", "compute device: auto, cpu or cuda")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *policyPath == "":
		return usagef("--policy is required")
	case *docs <= 0 || *samples <= 0 || *maxNew <= 0:
		return usagef("--docs, --samples and --max-new must be positive")
	case tc.Steps <= 0 || tc.Batch <= 0 || !(tc.LR > 0):
		return usagef("--steps, --batch and --lr must be positive")
	}
	t, err := task.Get(*taskName)
	if err != nil {
		return usageError{fmt.Errorf("--task: %w", err)}
	}
	difficulties, err := parseDifficulties(t, *diffs)
	if err != nil {
		return err
	}
	ckPath := filepath.Join(*out, "model.ck")
	if _, err := os.Stat(ckPath); err == nil {
		return fmt.Errorf("%s exists: choose another --out", ckPath)
	}
	be, err := openBackend(*device, stderr)
	if err != nil {
		return err
	}
	policy, tok, _, err := moe.LoadCheckpoint(*policyPath, be)
	if err != nil {
		return err
	}
	if policy.Cfg.ValueHead {
		return usagef("--policy %s is a value model, not a policy", *policyPath)
	}
	rng := engine.NewRNG(tc.Seed, engine.StreamSample)
	train, err := rl.LabelledSamples(policy, tok, task.GenerateSet(t, tc.Seed+17, *docs, difficulties), *samples, *maxNew, rng)
	if err != nil {
		return err
	}
	held, err := rl.LabelledSamples(policy, tok, task.GenerateSet(t, tc.Seed+1_000_033, max(32, *docs/8), difficulties), *samples, *maxNew, rng)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	mf, err := os.Create(filepath.Join(*out, "metrics.jsonl"))
	if err != nil {
		return err
	}
	defer mf.Close()
	fmt.Fprintf(stderr, "rm: %d training samples (%.0f%% correct), %d held-out samples (%.0f%% correct)\n",
		len(train), 100*correctShare(train), len(held), 100*correctShare(held))
	bar := newProgress(stderr, "rm", tc.Steps)
	rm, err := rl.TrainRM(policy, train, tc, func(step int, loss float64) {
		line, _ := json.Marshal(map[string]any{"step": step, "loss": loss})
		mf.Write(append(line, '\n'))
		bar.update(step, fmt.Sprintf("loss %.4f", loss))
	})
	bar.finish()
	if err != nil {
		return err
	}
	after := rl.EvalRM(rm, held)
	st := moe.RunState{Stage: "rm", Step: tc.Steps}
	st.Config, _ = json.Marshal(tc)
	if err := rm.SaveCheckpoint(ckPath, tok, st, false); err != nil {
		return err
	}
	run, _ := json.MarshalIndent(map[string]any{"policy": *policyPath, "task": *taskName, "difficulties": difficulties,
		"train": tc, "train_samples": len(train), "held_out": after, "device": be.Device()}, "", "  ")
	if err := writeFileAtomic(filepath.Join(*out, "run.json"), append(run, '\n')); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rm done: held-out AUC %.3f, accuracy %.3f at P = 0.5 (classes weighted equally in training), logistic loss %.4f; checkpoint %s\n",
		after.AUC, after.Accuracy, after.Loss, ckPath)
	return nil
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
