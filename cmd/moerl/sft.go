package main

import (
	"io"

	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/rl"
	"github.com/moerl/moerl/rl/task"
	"github.com/moerl/moerl/run"
)

func runSFT(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("sft", `Supervised fine-tuning of a checkpoint (--init) with next-token
cross-entropy, from a fresh optimizer. The text is a task's problems with
their canonical solutions (--task; --mix-* as in pretrain, default all full
solutions), a corpus file (--corpus), or, with --teacher, distillation: the
teacher samples --teacher-samples responses to each of --docs generated
problems and the verified-correct ones become the training text (rejection
sampling).
Writes OUT/model.ck, OUT/metrics.jsonl and OUT/run.json.`, stderr)
	init := fs.String("init", "", "checkpoint to fine-tune (required)")
	def := moe.DefaultTrain
	def.Steps, def.LR, def.MinLR, def.Warmup = 200, 1e-3, 1e-4, 10
	tc := def
	bindStruct(fs, &tc, "", "", "training")
	src := addCorpusFlags(fs, rl.Mix{Full: 1})
	teacher := fs.String("teacher", "", "teacher checkpoint to distil from (with --task): its verified samples become the text")
	teacherSamples := fs.Int("teacher-samples", 4, "teacher samples per problem (--teacher)")
	teacherTemp := fs.Float64("teacher-temperature", 1, "teacher sampling temperature, ≥ 0 (0: greedy)")
	maxNew := fs.Int("max-new", 48, "teacher's new tokens per sample at most")
	out := fs.String("out", "runs/sft", "output folder")
	rf := addRunFlags(fs, 100)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *init == "" {
		return usagef("--init is required: the checkpoint to fine-tune")
	}
	train := def
	copySetFields(fs, &train, &tc, "", "")
	// The context is the model's unless --seq-len says otherwise: read it
	// from the checkpoint's header.
	if !setFlags(fs)["seq-len"] {
		cfg, _, err := moe.ReadCheckpointInfo(*init)
		if err != nil {
			return err
		}
		train.SeqLen = cfg.MaxSeq
	}
	var ck string
	if *teacher != "" {
		if *src.task == "" || *src.file != "" || *src.synthetic != "" {
			return usagef("--teacher needs --task (the problems the teacher solves) and no --corpus or --synthetic")
		}
		c, err := src.corpus(train.Seed)
		if err != nil {
			return err
		}
		t, _ := task.Get(c.Task)
		bins := c.Difficulties
		if len(bins) == 0 {
			bins, _ = t.Difficulties()
		}
		s := run.Distill{Train: train, Samples: *teacherSamples, Temperature: *teacherTemp, MaxNew: *maxNew, Seed: train.Seed,
			Problems: run.Problems{Task: c.Task, Difficulties: bins, Count: max(1, *src.docs/len(bins)), Seed: train.Seed + 7919}}
		if err := s.Validate(); err != nil {
			return usageError{err}
		}
		env, release, err := newEnv(rf, stderr, "sft", args)
		if err != nil {
			return err
		}
		defer release()
		if ck, err = run.RunDistill(env, *out, *init, *teacher, s, rf.mode()); err != nil {
			return err
		}
	} else {
		c, err := src.corpus(train.Seed)
		if err != nil {
			return err
		}
		env, release, err := newEnv(rf, stderr, "sft", args)
		if err != nil {
			return err
		}
		defer release()
		if ck, err = run.RunSFT(env, *out, *init, run.SFT{Train: train, Corpus: c}, rf.mode()); err != nil {
			return err
		}
	}
	return printLMDone(stdout, *out, "sft", ck)
}
