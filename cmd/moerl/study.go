package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"

	"github.com/BurntSushi/toml"

	"github.com/moerl/moerl/study"
)

func runStudy(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("study", `The comparison behind the seed article, as one experiment: --replicates
independent base models (each its own pretraining and RL seed), every RL
algorithm from each at one sample budget, GRPO with and without KL, and a
student distilled from a larger teacher; every model evaluated on the same
problems. Then hierarchical bootstrap intervals (replicates, then problems)
for pass@k, maj@k, ΔSE and every difference from the base model, the
crossover k, the solved-set overlap, the sharpening measure, and a verdict
per finding of SPEC-RL.md decided by the intervals.

Settings come from the defaults (the CPU default study), then --config FILE
(TOML, the keys of --print-config), then these flags. Writes into --out every
stage's folder (r1/base, r1/grpo, …, each with its eval/), study.json (every
number, per replicate), study.md (tables, verdicts, reading) and SVG plots.
--resume reuses every stage whose settings did not change.`, stderr)
	configPath := fs.String("config", "", "study file (TOML) over the defaults; see --print-config for its keys")
	quick := fs.Bool("quick", false, "a tiny model, two replicates and a few steps: a smoke test of every stage and statistic (about a minute)")
	printConfig := fs.Bool("print-config", false, "print the resolved settings as a study file and exit")
	scratch := study.Default() // so that the help shows the defaults
	bindStruct(fs, &scratch, "", ".", "study")
	out := fs.String("out", "runs/study", "output folder")
	rf := addRunFlags(fs, 100)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := study.Load(*configPath, *quick)
	if err != nil {
		return usageError{err}
	}
	copySetFields(fs, &c, &scratch, "", ".")
	c.Fit()
	if *printConfig {
		return writeTOML(stdout, c)
	}
	if err := c.Validate(); err != nil {
		return usageError{err}
	}
	resultPath := filepath.Join(*out, study.JSONFile)
	if err := refuseFinished(resultPath, *rf.resume); err != nil {
		return err
	}
	env, release, err := newEnv(rf, stderr, "study", args)
	if err != nil {
		return err
	}
	defer release()
	res, err := study.Run(env, *out, c, compositeMode(*rf.resume))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nstudy: %d replicates, %d problems × %d samples, %s, %.0f s\n\n", res.Replicates, res.Problems, res.N, res.Device, res.Seconds)
	for _, f := range res.Findings {
		fmt.Fprintf(stdout, "finding %d: %-12s %s\n", f.ID, f.Verdict, f.Claim)
		for _, t := range f.Tests {
			fmt.Fprintf(stdout, "    %s = %+.3f [%+.3f, %+.3f] (predicted %s)\n", t.Statistic, t.Interval.Est, t.Interval.Lo, t.Interval.Hi, t.Prediction)
		}
	}
	fmt.Fprintf(stdout, "\nwrote %s, %s and the plots in %s\n", resultPath, filepath.Join(*out, study.MarkdownFile), *out)
	return nil
}

// writeTOML prints settings as TOML with their JSON names, the form a
// study file takes.
func writeTOML(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return err
	}
	return toml.NewEncoder(w).Encode(numbers(doc))
}

// numbers turns json.Number leaves into int64 or float64, so that TOML
// writes integers as integers.
func numbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	}
	return v
}
