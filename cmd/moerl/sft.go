package main

import (
	"fmt"
	"io"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl"
	"github.com/moerl/moerl/rl/task"
)

func runSFT(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("sft", `Supervised fine-tuning of a checkpoint (--init) with next-token
cross-entropy, from a fresh optimizer. The text is a task's problems with
their canonical solutions (--task; --mix-* as in pretrain, default all full
solutions), a corpus file (--corpus), or, with --teacher, distillation: the
teacher samples --teacher-samples responses to each of --docs generated
problems and the verified-correct ones become the training text.
Writes OUT/model.ck, OUT/metrics.jsonl and OUT/run.json.`, stderr)
	init := fs.String("init", "", "checkpoint to fine-tune (required)")
	tc := moe.DefaultTrain
	tc.Steps, tc.LR, tc.MinLR, tc.Warmup = 200, 1e-3, 1e-4, 10
	bindStruct(fs, &tc, "", "training")
	src := addCorpusFlags(fs, rl.Mix{Full: 1})
	teacher := fs.String("teacher", "", "teacher checkpoint to distil from (with --task)")
	teacherSamples := fs.Int("teacher-samples", 4, "teacher samples per problem")
	teacherTemp := fs.Float64("teacher-temperature", 1, "teacher sampling temperature")
	maxNew := fs.Int("max-new", 48, "teacher's new tokens per sample at most")
	out := fs.String("out", "runs/sft", "output folder")
	resume := fs.Bool("resume", false, "continue the run in --out from its checkpoint")
	saveEvery := fs.Int("save-every", 100, "checkpoint every N steps (0: only at the end)")
	device := fs.String("device", "auto", "compute device: auto, cpu or cuda")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *init == "" {
		return usagef("--init is required: the checkpoint to fine-tune")
	}
	if *saveEvery < 0 || *teacherSamples <= 0 || *maxNew <= 0 || *teacherTemp < 0 {
		return usagef("--save-every must be ≥ 0; --teacher-samples and --max-new positive; --teacher-temperature ≥ 0")
	}
	be, err := openBackend(*device, stderr)
	if err != nil {
		return err
	}
	base, tok, _, err := moe.LoadCheckpoint(*init, be)
	if err != nil {
		return err
	}
	train := moe.DefaultTrain
	train.Steps, train.LR, train.MinLR, train.Warmup = 200, 1e-3, 1e-4, 10
	copySetFields(fs, &train, &tc, "")
	if !setFlags(fs)["seq-len"] {
		train.SeqLen = base.Cfg.MaxSeq
	}
	if err := train.Validate(base.Cfg); err != nil {
		return usageError{err}
	}
	var corpus *moe.Corpus
	if *teacher != "" {
		corpus, err = distilCorpus(*teacher, src, *teacherSamples, *teacherTemp, *maxNew, train.Seed, be, tok, stderr)
	} else {
		corpus, err = src.load(tok, train.Seed)
	}
	if err != nil {
		return err
	}
	r := &lmRun{stage: "sft", model: base.Cfg, train: train, corpus: corpus, tok: tok,
		out: *out, resume: *resume, saveEvery: *saveEvery, init: *init, be: be}
	return r.run(stdout, stderr)
}

func distilCorpus(teacherPath string, src *corpusFlags, samples int, temp float64, maxNew int, seed uint64,
	be engine.Backend, tok *tokenizer.Tokenizer, stderr io.Writer) (*moe.Corpus, error) {
	if *src.task == "" || *src.file != "" || *src.synthetic != "" {
		return nil, usagef("--teacher needs --task (the problems the teacher solves) and no --corpus or --synthetic")
	}
	t, err := task.Get(*src.task)
	if err != nil {
		return nil, usageError{fmt.Errorf("--task: %w", err)}
	}
	diffs, err := parseDifficulties(t, *src.diffs)
	if err != nil {
		return nil, err
	}
	teacher, _, _, err := moe.LoadCheckpoint(teacherPath, be)
	if err != nil {
		return nil, err
	}
	problems := task.GenerateSet(t, seed+7919, *src.docs, diffs)
	docs, kept, err := rl.DistilCorpus(teacher, tok, problems, samples,
		moe.SampleOptions{Temperature: temp, MaxNew: maxNew}, engine.NewRNG(seed, engine.StreamSample))
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stderr, "distil: kept %d of %d teacher samples (%.1f%% correct)\n", len(docs), len(problems)*samples, 100*kept)
	return moe.EncodeCorpus(docs, tok)
}
