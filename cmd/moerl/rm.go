package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/moerl/moerl/rl"
	"github.com/moerl/moerl/rl/task"
	"github.com/moerl/moerl/run"
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
	taskName := fs.String("task", "add", "task: "+strings.Join(task.Names(), ", "))
	diffs := fs.String("difficulties", "", "comma-separated difficulties, e.g. 2,3 (default: the task's training bins)")
	docs := fs.Int("docs", 512, "training problems (split evenly over the difficulties)")
	samples := fs.Int("samples", 4, "policy samples per problem")
	maxNew := fs.Int("max-new", 40, "new tokens per sample at most")
	tc := rl.RMTrainConfig{Steps: 300, Batch: 32, LR: 1e-3, Seed: 1}
	bindStruct(fs, &tc, "", "", "reward-model training")
	out := fs.String("out", "runs/rm", "output folder")
	rf := addRunFlags(fs, 100)
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
	bins, err := parseDifficulties(t, *diffs)
	if err != nil {
		return err
	}
	s := run.RM{Samples: *samples, MaxNew: *maxNew, Train: tc,
		Problems: run.Problems{Task: *taskName, Difficulties: bins, Count: max(1, *docs/len(bins)), Seed: tc.Seed + 17},
		HeldOut:  run.Problems{Task: *taskName, Difficulties: bins, Count: max(16, *docs/8/len(bins)), Seed: tc.Seed + 1_000_033}}
	env, release, err := newEnv(rf, stderr, "rm", args)
	if err != nil {
		return err
	}
	defer release()
	ck, err := run.RunRM(env, *out, *policyPath, s, rf.mode())
	if err != nil {
		return err
	}
	rec, err := run.ReadRecord(*out)
	if err != nil {
		return err
	}
	var sum run.RMSummary
	if err := jsonUnmarshal(rec.Summary, &sum); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rm done: held-out AUC %.3f, accuracy %.3f at P = 0.5 (classes weighted equally in training), logistic loss %.4f; checkpoint %s\n",
		sum.HeldOut.AUC, sum.HeldOut.Accuracy, sum.HeldOut.Loss, ck)
	return nil
}
