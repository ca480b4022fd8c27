package study

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	"github.com/moerl/moerl/rl/eval"
	"github.com/moerl/moerl/run"
)

// The files a study writes into its folder, beside its stages' folders.
const (
	JSONFile     = "study.json"
	MarkdownFile = "study.md"
)

// Run runs (or continues, with mode run.Reuse) the study into out, then
// computes its statistics and writes study.json, study.md and the plots.
func Run(env *run.Env, out string, c Config, mode run.Mode) (*Result, error) {
	p, err := c.Build()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	results, err := run.Execute(env, out, p.Plan, mode)
	if err != nil {
		return nil, err
	}
	outputs := map[string]string{}
	stageSeconds := map[string]float64{}
	for _, r := range results {
		outputs[r.Name] = r.Output
		stageSeconds[r.Name] = r.Seconds
	}
	env.Log.Printf("study: computing intervals (%d bootstrap resamples)", c.Stats.Resamples)
	d, err := load(p, outputs)
	if err != nil {
		return nil, err
	}
	res, err := analyze(c, p, d)
	if err != nil {
		return nil, err
	}
	res.Device, res.Seconds, res.StageSeconds = env.Backend.Device(), time.Since(start).Seconds(), stageSeconds
	for _, m := range p.Models {
		ev, err := run.ReadEval(filepath.Dir(outputs[m.EvalStage]))
		if err != nil {
			return nil, err
		}
		reps := res.PerReplicate[m.Name]
		for len(reps) < max(m.Replicate, 1) {
			reps = append(reps, eval.Report{})
		}
		reps[max(m.Replicate, 1)-1] = ev.Report
		res.PerReplicate[m.Name] = reps
	}
	if err := res.write(out); err != nil {
		return nil, err
	}
	return res, nil
}

// write saves study.json, study.md and the plots, each atomically.
func (r *Result) write(out string) error {
	js, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return fmt.Errorf("study.json: %w", err)
	}
	if err := run.WriteFileAtomic(filepath.Join(out, JSONFile), append(js, '\n')); err != nil {
		return err
	}
	var md bytes.Buffer
	if err := r.WriteMarkdown(&md); err != nil {
		return err
	}
	if err := run.WriteFileAtomic(filepath.Join(out, MarkdownFile), md.Bytes()); err != nil {
		return err
	}
	return r.writePlots(out)
}
