package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl"
	"github.com/moerl/moerl/rl/task"
)

// lmRun is a language-modelling run (pretrain or sft) as the command line
// describes it.
type lmRun struct {
	stage     string
	model     moe.Config
	train     moe.TrainConfig
	corpus    *moe.Corpus
	tok       *tokenizer.Tokenizer
	out       string
	resume    bool
	saveEvery int
	init      string // checkpoint to start from (sft); "" = fresh weights
	be        engine.Backend
}

func runPretrain(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("pretrain", `Train a model from scratch with next-token cross-entropy on a text corpus
(--corpus FILE, one document per line), a built-in toy corpus (--synthetic),
or a reasoning task's problems with their chains of thought (--task), written
with the --mix-* shares of full, noisy (a slip making the answer wrong),
partial and plain (problem only) documents.
Writes OUT/model.ck (checkpoint, saved every --save-every steps and at the
end), OUT/metrics.jsonl (one line per step) and OUT/run.json (settings).`, stderr)
	preset := fs.String("model", "moe-micro", "model preset: "+strings.Join(moe.PresetNames(), ", "))
	var mc moe.Config
	bindStruct(fs, &mc, "", "model")
	tc := moe.DefaultTrain
	bindStruct(fs, &tc, "", "training")
	src := addCorpusFlags(fs, rl.DefaultMix)
	out := fs.String("out", "runs/pretrain", "output folder")
	resume := fs.Bool("resume", false, "continue the run in --out from its checkpoint")
	saveEvery := fs.Int("save-every", 100, "checkpoint every N steps (0: only at the end)")
	device := fs.String("device", "auto", "compute device: auto, cpu or cuda")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	base, err := moe.Preset(*preset)
	if err != nil {
		return usageError{fmt.Errorf("--model: %w", err)}
	}
	copySetFields(fs, &base, &mc, "")
	train := moe.DefaultTrain
	copySetFields(fs, &train, &tc, "")
	if !setFlags(fs)["seq-len"] {
		train.SeqLen = base.MaxSeq
	}
	if err := base.Validate(); err != nil {
		return usageError{err}
	}
	if err := train.Validate(base); err != nil {
		return usageError{err}
	}
	if *saveEvery < 0 {
		return usagef("--save-every must be ≥ 0, got %d", *saveEvery)
	}
	tok := tokenizer.Default()
	if tok.VocabSize() > base.Vocab {
		return usagef("--vocab %d is smaller than the tokenizer's %d tokens", base.Vocab, tok.VocabSize())
	}
	corpus, err := src.load(tok, train.Seed)
	if err != nil {
		return err
	}
	be, err := openBackend(*device, stderr)
	if err != nil {
		return err
	}
	r := &lmRun{stage: "pretrain", model: base, train: train, corpus: corpus, tok: tok,
		out: *out, resume: *resume, saveEvery: *saveEvery, be: be}
	return r.run(stdout, stderr)
}

// corpusFlags chooses the training text: a file, a toy corpus, or a
// reasoning task's problems written with a mix of solutions.
type corpusFlags struct {
	file, synthetic, task, diffs *string
	docs                         *int
	mix                          rl.Mix
}

func addCorpusFlags(fs *flag.FlagSet, mix rl.Mix) *corpusFlags {
	c := &corpusFlags{
		file:      fs.String("corpus", "", "text file, one document per line"),
		synthetic: fs.String("synthetic", "", "built-in toy corpus: "+strings.Join(moe.SyntheticKinds, ", ")),
		task:      fs.String("task", "", "reasoning task whose problems and solutions to write: "+strings.Join(task.Names(), ", ")),
		diffs:     fs.String("difficulties", "", "comma-separated task difficulties (default: the task's training bins)"),
		docs:      fs.Int("docs", 20000, "documents to generate for --synthetic or --task"),
		mix:       mix,
	}
	bindStruct(fs, &c.mix, "mix-", "share of --task documents:")
	return c
}

func (c *corpusFlags) load(tok *tokenizer.Tokenizer, seed uint64) (*moe.Corpus, error) {
	given := 0
	for _, s := range []string{*c.file, *c.synthetic, *c.task} {
		if s != "" {
			given++
		}
	}
	if given != 1 {
		return nil, usagef("give exactly one of --corpus FILE, --synthetic KIND, --task NAME")
	}
	if *c.file != "" {
		return moe.ReadCorpus(*c.file, tok)
	}
	if *c.docs <= 0 {
		return nil, usagef("--docs must be positive, got %d", *c.docs)
	}
	var docs []string
	if *c.synthetic != "" {
		var err error
		if docs, err = moe.Synthetic(*c.synthetic, *c.docs, seed); err != nil {
			return nil, usageError{fmt.Errorf("--synthetic: %w", err)}
		}
	} else {
		t, err := task.Get(*c.task)
		if err != nil {
			return nil, usageError{fmt.Errorf("--task: %w", err)}
		}
		diffs, err := parseDifficulties(t, *c.diffs)
		if err != nil {
			return nil, err
		}
		if docs, err = rl.TaskCorpus(t, *c.docs, diffs, c.mix, seed); err != nil {
			return nil, usageError{err}
		}
	}
	return moe.EncodeCorpus(docs, tok)
}

// run trains, checkpointing on the way; with resume it continues from the
// checkpoint in r.out, and the metrics file is cut back to that step.
func (r *lmRun) run(stdout, stderr io.Writer) error {
	if err := os.MkdirAll(r.out, 0o755); err != nil {
		return fmt.Errorf("create output folder: %w", err)
	}
	ckPath := filepath.Join(r.out, "model.ck")
	metricsPath := filepath.Join(r.out, "metrics.jsonl")
	dataRNG := engine.NewRNG(r.train.Seed, engine.StreamData)
	var m *moe.Model
	start := 0
	switch _, statErr := os.Stat(ckPath); {
	case r.resume && statErr == nil:
		var st moe.RunState
		var err error
		m, _, st, err = moe.LoadCheckpoint(ckPath, r.be)
		if err != nil {
			return err
		}
		if m.Cfg != r.model {
			return fmt.Errorf("resume %s: the checkpoint's model config differs from the flags'", ckPath)
		}
		if err := dataRNG.SetState(st.RNG["data"]); err != nil {
			return fmt.Errorf("resume %s: %w", ckPath, err)
		}
		start = st.Step
		if err := truncateMetrics(metricsPath, start); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "resuming %s at step %d\n", ckPath, start)
	case r.resume && !errors.Is(statErr, fs.ErrNotExist):
		return fmt.Errorf("resume: %w", statErr)
	case !r.resume && statErr == nil:
		return fmt.Errorf("%s exists: pass --resume to continue that run, or choose another --out", ckPath)
	case r.init != "":
		var err error
		m, _, _, err = moe.LoadCheckpoint(r.init, r.be)
		if err != nil {
			return err
		}
		m.ResetOptimizer()
	default:
		var err error
		m, err = moe.New(r.model, r.be, r.train.Seed)
		if err != nil {
			return err
		}
	}
	if start == 0 {
		if err := os.Remove(metricsPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	settings, _ := json.MarshalIndent(map[string]any{"stage": r.stage, "model": r.model, "train": r.train,
		"device": r.be.Device(), "params": m.NumParams(), "docs": len(r.corpus.Docs)}, "", "  ")
	if err := os.WriteFile(filepath.Join(r.out, "run.json"), append(settings, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "%s: %d parameters on %s, %d documents, %d steps of %d×%d tokens\n",
		r.stage, m.NumParams(), r.be.Device(), len(r.corpus.Docs), r.train.Steps, r.train.Batch, r.train.SeqLen)

	mf, err := os.OpenFile(metricsPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer mf.Close()
	save := func(step int) error {
		st := moe.RunState{Stage: r.stage, Step: step, RNG: map[string][]byte{"data": dataRNG.State()}}
		st.Config, _ = json.Marshal(r.train)
		return m.SaveCheckpoint(ckPath, r.tok, st, true)
	}
	acts := m.NewActs(r.train.Batch, r.train.SeqLen)
	defer acts.Free(r.be)
	bar := newProgress(stderr, r.stage, r.train.Steps)
	t0, tokens := time.Now(), 0
	var last moe.StepStats
	for step := start; step < r.train.Steps; step++ {
		b := r.corpus.Batch(dataRNG, r.train.Batch, r.train.SeqLen)
		st, err := m.TrainStep(acts, b, r.train, step)
		if err != nil {
			return err
		}
		last = st
		tokens += b.Rows * b.T
		rate := float64(tokens) / time.Since(t0).Seconds()
		line, _ := json.Marshal(struct {
			moe.StepStats
			TokensPerS float64 `json:"tokens_per_s"`
		}{st, rate})
		if _, err := mf.Write(append(line, '\n')); err != nil {
			return fmt.Errorf("write metrics: %w", err)
		}
		bar.update(step+1, fmt.Sprintf("loss %.4f %s tok/s", st.Loss, fmtRate(rate)))
		if r.saveEvery > 0 && (step+1)%r.saveEvery == 0 && step+1 < r.train.Steps {
			if err := save(step + 1); err != nil {
				return err
			}
		}
	}
	bar.finish()
	if err := save(r.train.Steps); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s done: step %d loss %.4f; checkpoint %s\n", r.stage, r.train.Steps, last.Loss, ckPath)
	return nil
}

// truncateMetrics drops the lines of a metrics file past step (written
// after the checkpoint a resumed run continues from).
func truncateMetrics(path string, step int) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	var keep bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	for sc.Scan() {
		var s struct {
			Step int `json:"step"`
		}
		if json.Unmarshal(sc.Bytes(), &s) == nil && s.Step <= step {
			keep.Write(sc.Bytes())
			keep.WriteByte('\n')
		}
	}
	return os.WriteFile(path, keep.Bytes(), 0o644)
}
