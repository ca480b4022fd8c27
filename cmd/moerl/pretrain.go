package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/rl"
	"github.com/moerl/moerl/rl/task"
	"github.com/moerl/moerl/run"
)

func runPretrain(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("pretrain", `Train a model from scratch with next-token cross-entropy on a text corpus
(--corpus FILE, one document per line), a built-in toy corpus (--synthetic),
or a reasoning task's problems with their chains of thought (--task), written
with the --mix-* shares of full, noisy (a slip making the answer wrong),
partial and plain (problem only) documents.
Writes OUT/model.ck (checkpoint, saved every --save-every steps, at the end
and when interrupted by Ctrl-C), OUT/metrics.jsonl (one line per step) and
OUT/run.json (the resolved settings).`, stderr)
	preset := fs.String("model", "moe-micro", "model preset: "+strings.Join(moe.PresetNames(), ", ")+"; the model flags below override its fields (their defaults shown are moe-micro's)")
	mc, _ := moe.Preset("moe-micro")
	bindStruct(fs, &mc, "", "", "model")
	tc := moe.DefaultTrain
	bindStruct(fs, &tc, "", "", "training")
	src := addCorpusFlags(fs, rl.DefaultMix)
	out := fs.String("out", "runs/pretrain", "output folder")
	rf := addRunFlags(fs, 100)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	s := run.Pretrain{Train: moe.DefaultTrain}
	var err error
	if s.Model, err = moe.Preset(*preset); err != nil {
		return usageError{fmt.Errorf("--model: %w", err)}
	}
	copySetFields(fs, &s.Model, &mc, "", "")
	copySetFields(fs, &s.Train, &tc, "", "")
	if !setFlags(fs)["seq-len"] {
		s.Train.SeqLen = s.Model.MaxSeq
	}
	if s.Corpus, err = src.corpus(s.Train.Seed); err != nil {
		return err
	}
	if err := s.Validate(); err != nil {
		return usageError{err}
	}
	env, release, err := newEnv(rf, stderr, "pretrain", args)
	if err != nil {
		return err
	}
	defer release()
	ck, err := run.RunPretrain(env, *out, s, rf.mode())
	if err != nil {
		return err
	}
	return printLMDone(stdout, *out, "pretrain", ck)
}

// printLMDone reports a finished language-modelling run.
func printLMDone(stdout io.Writer, dir, stage, ck string) error {
	rec, err := run.ReadRecord(dir)
	if err != nil {
		return err
	}
	var sum run.LMSummary
	if err := jsonUnmarshal(rec.Summary, &sum); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s done: step %d loss %.4f; checkpoint %s\n", stage, rec.Step, sum.Loss, ck)
	return nil
}

// corpusFlags choose the training text: a file, a toy corpus, or a
// reasoning task's problems written with a mix of solutions.
type corpusFlags struct {
	file, synthetic, task, diffs, weights *string
	docs                                  *int
	mix                                   rl.Mix
}

func addCorpusFlags(fs *flag.FlagSet, mix rl.Mix) *corpusFlags {
	c := &corpusFlags{
		file:      fs.String("corpus", "", "text file, one document per line (a literal \\n in a line is a newline)"),
		synthetic: fs.String("synthetic", "", "built-in toy corpus: "+strings.Join(moe.SyntheticKinds, ", ")),
		task:      fs.String("task", "", "reasoning task whose problems and solutions to write: "+strings.Join(task.Names(), ", ")),
		diffs:     fs.String("difficulties", "", "comma-separated task difficulties, e.g. 2,3 (default: the task's training bins)"),
		weights:   fs.String("weights", "", "comma-separated share of each --difficulties entry, e.g. 0.45,0.45,0.1; none: equal shares"),
		docs:      fs.Int("docs", 20000, "documents to generate for --synthetic or --task"),
		mix:       mix,
	}
	bindStruct(fs, &c.mix, "mix-", "", "share of --task documents:")
	return c
}

// corpus is the run.Corpus the flags describe.
func (c *corpusFlags) corpus(seed uint64) (run.Corpus, error) {
	out := run.Corpus{File: *c.file, Synthetic: *c.synthetic, Task: *c.task, Mix: c.mix, Seed: seed}
	if out.File == "" {
		out.Docs = *c.docs
	}
	if out.Task != "" {
		t, err := task.Get(out.Task)
		if err != nil {
			return out, usageError{fmt.Errorf("--task: %w", err)}
		}
		if *c.diffs != "" {
			if out.Difficulties, err = parseDifficulties(t, *c.diffs); err != nil {
				return out, err
			}
		}
		if *c.weights != "" {
			for _, f := range strings.Split(*c.weights, ",") {
				w, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
				if err != nil || w < 0 {
					return out, usagef("--weights %q: %q is not a share ≥ 0", *c.weights, f)
				}
				out.Weights = append(out.Weights, w)
			}
		}
	}
	if err := out.Validate(); err != nil {
		return out, usageError{err}
	}
	return out, nil
}

// jsonUnmarshal reads a run's summary.
func jsonUnmarshal(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("read run summary: %w", err)
	}
	return nil
}
