package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The files of a run folder the report reads. It never writes them.
const (
	MetricsFile  = "metrics.jsonl"
	SettingsFile = "run.json"
	EvalFile     = "eval.json"
	// StudyFile and PipelineFile are a demo's and a pipeline's summaries,
	// in the folder above the runs; they hold the runs' evaluations.
	StudyFile    = "study.json"
	PipelineFile = "pipeline.json"
)

// EvalReport is an evaluation as `moerl eval --json`, eval.json, study.json
// and pipeline.json hold it (rl/eval.Report): the parts a report draws.
// Unknown fields are ignored.
type EvalReport struct {
	Problems int `json:"problems"`
	N        int `json:"n"`
	// PassAtK, MajAtK and MeanAtK map k to the mean over problems.
	PassAtK map[int]float64 `json:"pass_at_k"`
	MajAtK  map[int]float64 `json:"maj_at_k"`
	MeanAtK map[int]float64 `json:"mean_at_k"`
	// Bins holds the same per difficulty bin.
	Bins map[string]EvalReport `json:"bins,omitempty"`
}

// check rejects what cannot be drawn on pass@k's log axis.
func (e *EvalReport) check() error {
	for _, m := range []map[int]float64{e.PassAtK, e.MajAtK, e.MeanAtK} {
		for k := range m {
			if k < 1 {
				return fmt.Errorf("k = %d: want k ≥ 1", k)
			}
		}
	}
	for name, b := range e.Bins {
		if err := b.check(); err != nil {
			return fmt.Errorf("bin %s: %w", name, err)
		}
	}
	return nil
}

// ParseEval reads an evaluation report (eval.json, `moerl eval --json`);
// an error names src. A k below 1 is an error: pass@k is drawn on a log
// axis.
func ParseEval(data []byte, src string) (*EvalReport, error) {
	var e EvalReport
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	if err := e.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	return &e, nil
}

// Run is one run folder: its per-step metrics, settings and evaluation,
// each absent when the folder lacks its file.
type Run struct {
	// Name labels the run in plots and tables: its folder's name (with the
	// parent folder's in front when two runs would share one).
	Name string
	// Dir is the folder.
	Dir string
	// Stage is what trained it: run.json's "stage" ("pretrain", "sft"),
	// "rl" for an RL run, "rm" for a reward model, "" when unknown.
	Stage string
	// Metrics is metrics.jsonl; nil when absent.
	Metrics *Metrics
	// Settings is run.json as written; nil when absent.
	Settings json.RawMessage
	// Eval is the model's evaluation (eval.json, or the study's or
	// pipeline's summary in the folder above); nil when not evaluated.
	Eval *EvalReport
	// EvalSource is the file Eval came from.
	EvalSource string
}

func (r *Run) part() part {
	switch r.Stage {
	case "rl":
		return partRL
	case "rm":
		return partRM
	}
	return partLM
}

// ReadRun reads the run in dir: metrics.jsonl, run.json and eval.json,
// any of which may be missing (but not all three). Malformed files are
// errors naming the file.
func ReadRun(dir string) (*Run, error) {
	r := &Run{Name: filepath.Base(filepath.Clean(dir)), Dir: dir}
	found := false
	m, err := ReadMetrics(filepath.Join(dir, MetricsFile))
	switch {
	case err == nil:
		r.Metrics, found = m, true
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	settingsPath := filepath.Join(dir, SettingsFile)
	data, err := os.ReadFile(settingsPath)
	switch {
	case err == nil:
		if !json.Valid(data) {
			return nil, fmt.Errorf("%s: not valid JSON", settingsPath)
		}
		r.Settings = json.RawMessage(bytes.TrimSpace(data))
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	// A stage's evaluation is its own folder's eval.json, or that of its
	// eval/ folder (the run layer evaluates a stage there).
	evalPath := filepath.Join(dir, EvalFile)
	if _, err := os.Stat(evalPath); errors.Is(err, fs.ErrNotExist) {
		evalPath = filepath.Join(dir, "eval", EvalFile)
	}
	data, err = os.ReadFile(evalPath)
	switch {
	case err == nil:
		e, err := ParseEval(data, evalPath)
		if err != nil {
			return nil, err
		}
		r.Eval, r.EvalSource, found = e, evalPath, true
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("%s: not a run (no %s or %s)", dir, MetricsFile, EvalFile)
	}
	r.Stage = stageOf(r)
	return r, nil
}

// stageOf tells what trained a run from its settings, or failing those
// from its metrics: cmd/moerl's pretrain and sft write "stage" in run.json,
// rl writes an "rl" object, rm a "policy" (the policy whose samples it
// judged).
func stageOf(r *Run) string {
	var s map[string]json.RawMessage
	if json.Unmarshal(r.Settings, &s) == nil {
		var kind string // run.json of the run layer: "kind"
		if json.Unmarshal(s["kind"], &kind) == nil && kind != "" {
			return kind
		}
		var stage string
		if json.Unmarshal(s["stage"], &stage) == nil && stage != "" {
			return stage
		}
		if _, ok := s["rl"]; ok {
			return "rl"
		}
		if _, ok := s["policy"]; ok {
			return "rm"
		}
	}
	if r.Metrics.Has("reward_mean") {
		return "rl"
	}
	return ""
}

// Load reads the runs that paths name. A path whose folder holds
// metrics.jsonl or eval.json is one run; any other folder is a study (a
// demo's, a pipeline's, or any folder of runs), and each of its immediate
// subfolders holding one of those files is a run, labelled by its name, in
// the order of pipeline.json's stages or else by name with "base" first.
// A study's study.json or pipeline.json supplies the evaluation of runs
// that have no eval.json. Two runs that would share a label get their
// parent folder's name in front; a run named twice counts once. It fails,
// naming the path, when a path is missing, not a folder, or holds no run.
func Load(paths ...string) ([]*Run, error) {
	if len(paths) == 0 {
		return nil, errors.New("no run folder given")
	}
	var runs []*Run
	seen := map[string]bool{}
	for _, p := range paths {
		rs, err := loadPath(p)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			abs, err := filepath.Abs(r.Dir)
			if err != nil {
				return nil, err
			}
			if !seen[abs] { // a run named twice (a study and one of its runs) counts once
				seen[abs] = true
				runs = append(runs, r)
			}
		}
	}
	label(runs)
	return runs, nil
}

func loadPath(p string) ([]*Run, error) {
	st, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: no such folder", p)
		}
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s: not a folder (give the run's folder, not a file in it)", p)
	}
	if isRun(p) {
		r, err := ReadRun(p)
		if err != nil {
			return nil, err
		}
		return []*Run{r}, nil
	}
	entries, err := os.ReadDir(p)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && isRun(filepath.Join(p, e.Name())) {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: no runs in it (no %s or %s in it or its immediate subfolders)", p, MetricsFile, EvalFile)
	}
	evals, order, err := studyEvals(p, names)
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(names, func(a, b string) int {
		ia, ib := rank(order, a), rank(order, b)
		if ia != ib {
			return ia - ib
		}
		return strings.Compare(a, b)
	})
	var runs []*Run
	for _, n := range names {
		r, err := ReadRun(filepath.Join(p, n))
		if err != nil {
			return nil, err
		}
		if e, ok := evals[n]; ok && r.Eval == nil {
			r.Eval, r.EvalSource = e.rep, e.src
		}
		runs = append(runs, r)
	}
	return runs, nil
}

// rank places a run by the stage order of its study; "base" comes first
// where no order is known.
func rank(order []string, name string) int {
	if i := slices.Index(order, name); i >= 0 {
		return i
	}
	if name == "base" && len(order) == 0 {
		return -1
	}
	return len(order)
}

func isRun(dir string) bool {
	for _, f := range []string{MetricsFile, EvalFile} {
		if st, err := os.Stat(filepath.Join(dir, f)); err == nil && st.Mode().IsRegular() {
			return true
		}
	}
	return false
}

type sourcedEval struct {
	rep *EvalReport
	src string
}

// studyEvals reads the evaluations a study folder's summary holds, keyed
// by run folder name: study.json has "base" and "runs"{preset: {"report"}}
// (a single preset's folder is "rl"); pipeline.json has "reports"{stage}
// and the stage order.
func studyEvals(dir string, names []string) (map[string]sourcedEval, []string, error) {
	out := map[string]sourcedEval{}
	studyPath := filepath.Join(dir, StudyFile)
	if data, err := os.ReadFile(studyPath); err == nil {
		var s struct {
			Base *EvalReport `json:"base"`
			Runs map[string]struct {
				Report *EvalReport `json:"report"`
			} `json:"runs"`
		}
		if err := json.Unmarshal(data, &s); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", studyPath, err)
		}
		add := func(name string, e *EvalReport) error {
			if e == nil || len(e.PassAtK) == 0 {
				return nil
			}
			if err := e.check(); err != nil {
				return fmt.Errorf("%s: %s: %w", studyPath, name, err)
			}
			out[name] = sourcedEval{e, studyPath}
			return nil
		}
		if err := add("base", s.Base); err != nil {
			return nil, nil, err
		}
		for name, r := range s.Runs {
			folder := name
			if len(s.Runs) == 1 && !slices.Contains(names, name) {
				folder = "rl"
			}
			if err := add(folder, r.Report); err != nil {
				return nil, nil, err
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	var order []string
	pipePath := filepath.Join(dir, PipelineFile)
	if data, err := os.ReadFile(pipePath); err == nil {
		var p struct {
			Stages  []string              `json:"stages"`
			Reports map[string]EvalReport `json:"reports"`
		}
		if err := json.Unmarshal(data, &p); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", pipePath, err)
		}
		for name, e := range p.Reports {
			if err := e.check(); err != nil {
				return nil, nil, fmt.Errorf("%s: %s: %w", pipePath, name, err)
			}
			if _, ok := out[name]; !ok && len(e.PassAtK) > 0 {
				out[name] = sourcedEval{&e, pipePath}
			}
		}
		order = p.Stages
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	return out, order, nil
}

// label makes the runs' names unique: a run whose name another run shares
// gets its parent folder's name in front ("demo1/base"), and a number
// after that if the clash remains.
func label(runs []*Run) {
	count := map[string]int{}
	for _, r := range runs {
		count[r.Name]++
	}
	for _, r := range runs {
		if count[r.Name] > 1 {
			if abs, err := filepath.Abs(r.Dir); err == nil {
				r.Name = filepath.Base(filepath.Dir(abs)) + "/" + r.Name
			}
		}
	}
	seen := map[string]int{}
	for _, r := range runs {
		seen[r.Name]++
		if n := seen[r.Name]; n > 1 {
			r.Name = fmt.Sprintf("%s (%d)", r.Name, n)
		}
	}
}

// finite reports whether v is a number a plot can place.
func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
