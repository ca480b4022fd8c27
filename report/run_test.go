package report

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeFile writes data under dir, making folders.
func writeFile(t *testing.T, dir, name, data string) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// lmLog is a pretraining log of n steps whose loss falls.
func lmLog(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, `{"step":%d,"loss":%.4f,"aux_loss":%.4f,"grad_norm":%.3f,"lr":0.003,"tokens":1000,"tokens_per_s":%.0f}`+"\n",
			i, 1+3*math.Exp(-float64(i)/15), 1+0.02*math.Sin(float64(i)), 1+0.5*math.Cos(float64(i)/3), 9e4+100*float64(i))
	}
	return b.String()
}

// rlLog is an RL log of n steps; skill sets how fast the reward rises;
// it logs a routing metric and a field the report does not know.
func rlLog(n int, skill float64) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		r := 1 - math.Exp(-skill*float64(i)/10)
		fmt.Fprintf(&b, `{"step":%d,"reward_mean":%.4f,"reward_std":0.1,"accuracy":%.4f,"zero_std_groups":0.2,"len_mean":%.1f,"len_max":40,"truncated":0.05,"entropy":%.3f,"kl_ref":%.4f,"clip_frac":0.01,"logp_gap":1e-7,"loss":0.01,"grad_norm":0.5,"lr":0.0002,"groups":4,"tries":1,"gen_s":0.01,"update_s":0.03,"routing_disagreement":%.3f,"new_thing":%d}`+"\n",
			i, r, r*0.9, 20+float64(i)/2, 2.5-float64(i)/40, 0.001*float64(i), 0.1/float64(i), i%3)
	}
	return b.String()
}

func evalJSON(p1 float64) string {
	e := EvalReport{Problems: 16, N: 8, PassAtK: map[int]float64{}, MajAtK: map[int]float64{}, MeanAtK: map[int]float64{},
		Bins: map[string]EvalReport{"digits2": {Problems: 8, N: 8, PassAtK: map[int]float64{1: p1 + 0.1, 8: 0.9}}}}
	for k := 1; k <= 8; k *= 2 {
		e.PassAtK[k] = 1 - (1-p1)*math.Pow(0.8, math.Log2(float64(k)))
		e.MajAtK[k] = p1
		e.MeanAtK[k] = p1
	}
	e.PassAtK[1] = p1
	data, _ := json.Marshal(e)
	return string(data)
}

// studyFixture is a demo-like folder: base (pretrain), grpo (RL, its own
// eval.json) and ppo (RL, evaluated in study.json), and a folder that is
// no run.
func studyFixture(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "demo")
	writeFile(t, dir, "base/metrics.jsonl", lmLog(60))
	writeFile(t, dir, "base/run.json", `{"stage":"pretrain","train":{"steps":60}}`)
	writeFile(t, dir, "grpo/metrics.jsonl", rlLog(30, 1))
	writeFile(t, dir, "grpo/run.json", `{"rl":{"algo":{"preset":"grpo"}}}`)
	writeFile(t, dir, "grpo/eval.json", evalJSON(0.4))
	writeFile(t, dir, "ppo/metrics.jsonl", rlLog(30, 0.5))
	writeFile(t, dir, "ppo/run.json", `{"rl":{"algo":{"preset":"ppo"}}}`)
	writeFile(t, dir, "notes/readme.txt", "not a run")
	writeFile(t, dir, "study.json", fmt.Sprintf(`{"base":%s,"runs":{"grpo":{"report":%s},"ppo":{"report":%s}},"extra":1}`, evalJSON(0.25), evalJSON(0.99), evalJSON(0.3)))
	return dir
}

func TestLoadStudy(t *testing.T) {
	dir := studyFixture(t)
	runs, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names, stages []string
	for _, r := range runs {
		names = append(names, r.Name)
		stages = append(stages, r.Stage)
	}
	if !slices.Equal(names, []string{"base", "grpo", "ppo"}) || !slices.Equal(stages, []string{"pretrain", "rl", "rl"}) {
		t.Fatalf("runs %v, stages %v", names, stages)
	}
	base, grpo, ppo := runs[0], runs[1], runs[2]
	if base.Eval == nil || base.EvalSource != filepath.Join(dir, StudyFile) || base.Eval.PassAtK[1] != 0.25 {
		t.Errorf("base eval %+v from %s: want study.json's", base.Eval, base.EvalSource)
	}
	if grpo.EvalSource != filepath.Join(dir, "grpo", EvalFile) || grpo.Eval.PassAtK[1] != 0.4 {
		t.Errorf("grpo eval from %s (pass@1 %v): eval.json must win over study.json", grpo.EvalSource, grpo.Eval.PassAtK[1])
	}
	if ppo.Eval == nil || ppo.Eval.PassAtK[1] != 0.3 {
		t.Errorf("ppo eval %+v", ppo.Eval)
	}
	if len(base.Metrics.Steps) != 60 || !grpo.Metrics.Has("routing_disagreement") || string(base.Settings) == "" {
		t.Errorf("base steps %d, grpo fields %v", len(base.Metrics.Steps), grpo.Metrics.Fields)
	}
	// one run folder given directly
	one, err := Load(filepath.Join(dir, "ppo"))
	if err != nil || len(one) != 1 || one[0].Name != "ppo" || one[0].Eval != nil {
		t.Errorf("single run: %v, %v", one, err)
	}
}

// TestLoadDemoLayout: a demo with one algorithm writes its run to rl/ and
// keys its report by preset in study.json; a pipeline orders its stages.
func TestLoadDemoLayout(t *testing.T) {
	demo := filepath.Join(t.TempDir(), "demo")
	writeFile(t, demo, "base/metrics.jsonl", lmLog(5))
	writeFile(t, demo, "rl/metrics.jsonl", rlLog(5, 1))
	writeFile(t, demo, "study.json", fmt.Sprintf(`{"base":%s,"rl":%s,"runs":{"dapo":{"report":%s}}}`, evalJSON(0.1), evalJSON(0.2), evalJSON(0.2)))
	runs, err := Load(demo)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[1].Name != "rl" || runs[1].Eval == nil || runs[1].Eval.PassAtK[1] != 0.2 {
		t.Errorf("rl run %+v", runs[1])
	}

	pipe := filepath.Join(t.TempDir(), "pipe")
	for _, s := range []string{"base", "sft1", "r1-zero", "rl1"} {
		writeFile(t, pipe, s+"/metrics.jsonl", lmLog(3))
	}
	writeFile(t, pipe, "pipeline.json", fmt.Sprintf(`{"stages":["base","r1-zero","sft1","rl1"],"reports":{"rl1":%s}}`, evalJSON(0.5)))
	runs, err = Load(pipe)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range runs {
		names = append(names, r.Name)
	}
	if !slices.Equal(names, []string{"base", "r1-zero", "sft1", "rl1"}) || runs[3].Eval == nil {
		t.Errorf("pipeline runs %v (want the stage order), rl1 eval %v", names, runs[3].Eval)
	}
}

func TestLoadLabelsClash(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"a", "b"} {
		writeFile(t, root, d+"/base/metrics.jsonl", lmLog(3))
		writeFile(t, root, d+"/rl/metrics.jsonl", rlLog(3, 1))
	}
	runs, err := Load(filepath.Join(root, "a"), filepath.Join(root, "b"), filepath.Join(root, "b", "rl"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range runs {
		names = append(names, r.Name)
	}
	want := []string{"a/base", "a/rl", "b/base", "b/rl"} // b/rl given twice counts once
	if !slices.Equal(names, want) {
		t.Errorf("labels %v, want %v", names, want)
	}
}

func TestLoadErrors(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, "empty/notes.txt", "x")
	writeFile(t, root, "file.txt", "x")
	writeFile(t, root, "badeval/eval.json", `{"pass_at_k":{"one":1}}`)
	writeFile(t, root, "zerok/eval.json", `{"pass_at_k":{"0":1}}`)
	writeFile(t, root, "badrun/metrics.jsonl", lmLog(2))
	writeFile(t, root, "badrun/run.json", `{"stage":`)
	writeFile(t, root, "badmetrics/metrics.jsonl", lmLog(2)+"{nope}\n")
	writeFile(t, root, "badstudy/x/metrics.jsonl", lmLog(2))
	writeFile(t, root, "badstudy/study.json", `{"base":[]}`)
	cases := []struct{ path, want string }{
		{filepath.Join(root, "missing"), "missing: no such folder"},
		{filepath.Join(root, "file.txt"), "file.txt: not a folder"},
		{filepath.Join(root, "empty"), "empty: no runs in it"},
		{filepath.Join(root, "badeval"), filepath.Join("badeval", "eval.json") + ": "},
		{filepath.Join(root, "zerok"), "k = 0"},
		{filepath.Join(root, "badrun"), filepath.Join("badrun", "run.json") + ": not valid JSON"},
		{filepath.Join(root, "badmetrics"), filepath.Join("badmetrics", "metrics.jsonl") + ":3: bad JSON"},
		{filepath.Join(root, "badstudy"), filepath.Join("badstudy", "study.json") + ": "},
	}
	for _, c := range cases {
		if _, err := Load(c.path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Load(%s): error %v, want %q", c.path, err, c.want)
		}
	}
	if _, err := Load(); err == nil {
		t.Error("Load() without paths: no error")
	}
}

// TestEvalOnlyRun: a folder with only eval.json is a run; the page and
// the summary draw its pass@k and skip its (absent) curves.
func TestEvalOnlyRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "evaluated")
	writeFile(t, dir, EvalFile, evalJSON(0.5))
	runs, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 || runs[0].Metrics != nil || runs[0].Eval == nil {
		t.Fatalf("runs %+v", runs)
	}
	page, err := HTML(runs, Options{Smooth: 4})
	if err != nil {
		t.Fatal(err)
	}
	if n := checkXML(t, page); n["svg"] != 3 {
		t.Errorf("%d plots, want pass@k, maj@k and one bin", n["svg"])
	}
	md, err := Markdown(runs, Options{})
	if err != nil || !strings.Contains(string(md), "| 1 | 0.5000 |") {
		t.Errorf("markdown %s, %v", md, err)
	}
}

// FuzzParseEval: any bytes parse or fail with an error naming the file;
// an accepted report has only k ≥ 1, so its plots can be drawn.
func FuzzParseEval(f *testing.F) {
	f.Add([]byte(evalJSON(0.3)))
	f.Add([]byte(`{"pass_at_k":{"0":1}}`))
	f.Add([]byte(`{"problems":1,"n":2,"pass_at_k":{"1":0.5,"2":1},"bins":{"a":{"pass_at_k":{"-1":1}}}}`))
	f.Add([]byte(`{"pass_at_k":{"1":1e999}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := ParseEval(data, "eval.json")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "eval.json: ") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		var walk func(*EvalReport)
		walk = func(e *EvalReport) {
			for k := range e.PassAtK {
				if k < 1 {
					t.Fatalf("accepted k = %d", k)
				}
			}
			for _, b := range e.Bins {
				walk(&b)
			}
		}
		walk(e)
		runs := []*Run{{Name: "x", Dir: "x", Eval: e}}
		if _, err := Markdown(runs, Options{}); err != nil {
			t.Fatalf("markdown of an accepted report: %v", err)
		}
		if _, err := HTML(runs, Options{}); err != nil {
			t.Fatalf("page of an accepted report: %v", err)
		}
	})
}
