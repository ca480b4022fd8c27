package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl/task"
	"github.com/moerl/moerl/run"
)

// moerl runs a command line and returns its exit code, stdout and stderr.
func moerl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := moerlMain(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"pretrain", "--steps", "x"}, `invalid value "x" for flag -steps`},
		{[]string{"pretrain", "--synthetic", "copy", "--steps", "0", "--out", dir}, "steps must be positive"},
		{[]string{"pretrain", "--synthetic", "nope", "--out", dir}, `synthetic "nope": want one of`},
		{[]string{"pretrain", "--model", "moe-huge"}, `unknown model preset "moe-huge"`},
		{[]string{"pretrain", "--synthetic", "copy", "--heads", "3", "--out", dir}, "not a multiple of heads"},
		{[]string{"pretrain", "--synthetic", "copy", "--corpus", "x.txt"}, "exactly one of"},
		{[]string{"pretrain", "--task", "add", "--difficulties", "2,99", "--out", dir}, "difficulty 99 outside"},
		{[]string{"pretrain", "--synthetic", "copy", "--device", "tpu", "--out", dir}, `--device "tpu"`},
		{[]string{"rl", "--algo", "trpo", "--init", "x"}, `unknown algorithm preset "trpo"`},
		{[]string{"rl", "--init", "x", "--set", "clip_low=banana"}, "clip_low"},
		{[]string{"rl", "--init", "x", "--aggregation", "median"}, "aggregation"},
		{[]string{"rl"}, "--init is required"},
		{[]string{"rl", "--init", "x", "--reward-source", "model"}, "needs --reward-model"},
		{[]string{"rl", "--init", "x", "--reward-source", "oracle"}, `reward_source "oracle"`},
		{[]string{"rm"}, "--policy is required"},
		{[]string{"eval"}, "exactly one of --ckpt"},
		{[]string{"generate", "--ckpt", "x", "--top-p", "0"}, "--top-p must be in (0, 1]"},
		{[]string{"bench", "--config", "moe-xl"}, `--config "moe-xl"`},
		{[]string{"bench", "--device", "cpu", "--bf16"}, "bf16 GEMMs need --device cuda"},
		{[]string{"bench", "--device", "cpu", "--bf16", "--tf32"}, "two GEMM precisions"},
		{[]string{"demo", "--algo", "sarsa"}, `unknown algorithm preset "sarsa"`},
	}
	for _, c := range cases {
		code, _, stderr := moerl(t, c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("moerl %s: exit %d, stderr %q; want exit 2 and %q", strings.Join(c.args, " "), code, stderr, c.want)
		}
	}
}

func TestHelpEverywhere(t *testing.T) {
	for _, c := range commands() {
		code, _, stderr := moerl(t, c.name, "--help")
		if code != 0 || !strings.Contains(stderr, "Usage: moerl "+c.name) {
			t.Errorf("%s --help: exit %d, %q", c.name, code, stderr)
		}
	}
}

// TestPretrainResumeGenerate: a run stopped at a checkpoint and resumed
// ends with the same checkpoint bytes as one never stopped; a finished
// checkpoint is never overwritten without --resume; generate reads it, and
// a prompt with an unknown character is an error naming it.
func TestPretrainResumeGenerate(t *testing.T) {
	dir := t.TempDir()
	common := []string{"pretrain", "--synthetic", "copy", "--docs", "200", "--d-model", "32", "--expert-hidden", "32",
		"--layers", "1", "--batch", "4", "--seq-len", "32", "--save-every", "3", "--device", "cpu"}
	whole := filepath.Join(dir, "whole")
	if code, _, stderr := moerl(t, append(common, "--steps", "6", "--out", whole)...); code != 0 {
		t.Fatalf("pretrain: exit %d: %s", code, stderr)
	}
	// A finished run is never overwritten; --resume on it is a no-op, and
	// --resume with other settings is refused with the difference named.
	// (Interrupting and resuming a real process: TestInterruptAndResume.)
	before, _ := os.ReadFile(filepath.Join(whole, "model.ck"))
	code, _, stderr := moerl(t, append(common, "--steps", "6", "--out", whole)...)
	if code != 1 || !strings.Contains(stderr, "pass --resume") {
		t.Fatalf("rerun without --resume: exit %d %q, want a refusal", code, stderr)
	}
	if code, _, stderr := moerl(t, append(common, "--steps", "6", "--out", whole, "--resume")...); code != 0 || !strings.Contains(stderr, "reusing the finished run") {
		t.Errorf("resume of a finished run: exit %d %q", code, stderr)
	}
	code, _, stderr = moerl(t, append(common, "--steps", "9", "--out", whole, "--resume")...)
	if code != 1 || !strings.Contains(stderr, "train.steps: 6 → 9") {
		t.Errorf("resume with other settings: exit %d %q, want the difference named", code, stderr)
	}
	after, _ := os.ReadFile(filepath.Join(whole, "model.ck"))
	if !bytes.Equal(before, after) {
		t.Error("the finished checkpoint changed")
	}
	m, _ := os.ReadFile(filepath.Join(whole, "metrics.jsonl"))
	if n := strings.Count(string(m), "\n"); n != 6 {
		t.Errorf("metrics has %d lines, want 6", n)
	}
	ck := filepath.Join(whole, "model.ck")
	code, out, stderr := moerl(t, "generate", "--ckpt", ck, "--prompt", "abc=", "--n", "2", "--max-new", "8", "--device", "cpu")
	if code != 0 || strings.Count(out, "\n") != 2 || !strings.HasPrefix(out, "abc=") {
		t.Errorf("generate: exit %d out %q err %q", code, out, stderr)
	}
	code, _, stderr = moerl(t, "generate", "--ckpt", ck, "--prompt", "abC=", "--device", "cpu")
	if code != 2 || !strings.Contains(stderr, "unknown character 'C' at position 2") {
		t.Errorf("bad prompt: exit %d, %q", code, stderr)
	}
	code, _, stderr = moerl(t, "generate", "--ckpt", filepath.Join(dir, "none.ck"), "--prompt", "a", "--device", "cpu")
	if code != 1 || !strings.Contains(stderr, "none.ck") {
		t.Errorf("missing checkpoint: exit %d, %q", code, stderr)
	}
}

// TestRewardAndEvalResponses scores given responses with both commands.
func TestRewardAndEvalResponses(t *testing.T) {
	dir := t.TempDir()
	code, probs, stderr := moerl(t, "problems", "--task", "add", "--count", "1", "--difficulties", "2")
	if code != 0 {
		t.Fatal(stderr)
	}
	pf := filepath.Join(dir, "p.jsonl")
	os.WriteFile(pf, []byte(probs), 0o644)
	var first struct{ ID, CoT, Answer string }
	json.Unmarshal([]byte(strings.SplitN(probs, "\n", 2)[0]), &first)
	lines := []string{
		`{"index":0,"response":"<think>` + first.CoT + `</think><answer>` + first.Answer + `</answer>"}`,
		`{"index":0,"response":"<think>x</think><answer>` + first.Answer + ` or 3</answer>"}`,
		`{"index":0,"response":"<answer>1</answer>"}`,
		`{"id":"` + first.ID + `","response":"<think></think><answer>` + first.Answer + `</answer>tail"}`,
	}
	rf := filepath.Join(dir, "r.jsonl")
	os.WriteFile(rf, []byte(strings.Join(lines, "\n")), 0o644)
	code, out, stderr := moerl(t, "reward", "--problems", pf, "--responses", rf)
	if code != 0 {
		t.Fatal(stderr)
	}
	got := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{`"correct":true`, `"correct":false`, `"well_formed":false`, `"well_formed":false`}
	for i, w := range want {
		if i >= len(got) || !strings.Contains(got[i], w) {
			t.Errorf("reward line %d: %q, want %s", i, got, w)
		}
	}
	code, out, stderr = moerl(t, "eval", "--problems", pf, "--responses", rf, "--json")
	if code != 0 {
		t.Fatal(stderr)
	}
	var rep struct {
		PassAtK map[string]float64 `json:"pass_at_k"`
		MajAtK  map[string]float64 `json:"maj_at_k"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if math.Abs(rep.PassAtK["1"]-0.25) > 1e-12 || rep.PassAtK["4"] != 1 {
		t.Errorf("pass@k = %v, want pass@1 0.25 and pass@4 1", rep.PassAtK)
	}
	os.WriteFile(rf, []byte(`{"index":0,"response":"x","extra":1}`), 0o644)
	if code, _, stderr := moerl(t, "reward", "--problems", pf, "--responses", rf); code != 1 || !strings.Contains(stderr, "line 1") {
		t.Errorf("bad responses file: exit %d %q", code, stderr)
	}
}

// TestDemoQuick runs the whole study at toy size and checks its outputs.
func TestDemoQuick(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	code, out, stderr := moerl(t, "demo", "--quick", "--out", dir, "--device", "cpu")
	if code != 0 {
		t.Fatalf("demo: exit %d\n%s", code, stderr)
	}
	if !strings.Contains(out, "pass@k base") || !strings.Contains(out, "ΔSE") {
		t.Errorf("demo output lacks the comparison table:\n%s", out)
	}
	var st struct {
		Base, RL struct {
			PassAtK map[string]float64 `json:"pass_at_k"`
			MajAtK  map[string]float64 `json:"maj_at_k"`
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "demo.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Base.PassAtK) == 0 || len(st.RL.MajAtK) == 0 {
		t.Errorf("demo.json lacks reports: %s", data)
	}
	svg, _ := os.ReadFile(filepath.Join(dir, "pass_at_k.svg"))
	if !bytes.Contains(svg, []byte("<path")) || !bytes.Contains(svg, []byte(">grpo<")) {
		t.Error("pass_at_k.svg has no curves")
	}
	// A finished study is never overwritten.
	if code, _, stderr := moerl(t, "demo", "--quick", "--out", dir, "--device", "cpu"); code != 1 || !strings.Contains(stderr, "exists") {
		t.Errorf("second demo into the same folder: exit %d %q", code, stderr)
	}
}

func TestBenchJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the micro workloads")
	}
	code, out, stderr := moerl(t, "bench", "--json", "--steps", "1", "--warmup", "0", "--workloads", "train,generate,rl-step", "--device", "cpu")
	if code != 0 {
		t.Fatal(stderr)
	}
	var r struct {
		Workloads []struct {
			Workload, Config, Device string
			TokensPerS               float64 `json:"tokens_per_s"`
			GenShare                 float64 `json:"gen_share"`
		}
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Workloads) != 3 || r.Workloads[0].TokensPerS <= 0 || r.Workloads[1].Workload != "generate" ||
		r.Workloads[2].GenShare <= 0 || r.Workloads[2].GenShare >= 1 {
		t.Errorf("bench JSON: %s", out)
	}
}

// TestPipelineQuick runs every built-in pipeline at toy size, end to end,
// and checks every stage that makes a model is evaluated.
func TestPipelineQuick(t *testing.T) {
	for _, name := range run.Shipped() {
		dir := filepath.Join(t.TempDir(), name)
		code, out, stderr := moerl(t, "pipeline", "--quick", "--out", dir, "--device", "cpu", name)
		if code != 0 {
			t.Errorf("pipeline %s: exit %d\n%s", name, code, stderr)
			continue
		}
		var res struct {
			Stages  []string
			Reports map[string]json.RawMessage
		}
		data, _ := os.ReadFile(filepath.Join(dir, "pipeline.json"))
		if err := json.Unmarshal(data, &res); err != nil {
			t.Fatal(err)
		}
		p, _ := run.LoadPipeline(name, true, nil)
		if len(res.Stages) != len(p.Evaluated) || len(res.Reports) != len(res.Stages) || res.Stages[0] != "base" {
			t.Errorf("pipeline %s: stages %v, %d reports; want %v", name, res.Stages, len(res.Reports), p.Evaluated)
		}
		if !strings.Contains(out, "pass@1") {
			t.Errorf("pipeline %s printed no table:\n%s", name, out)
		}
	}
	if code, _, stderr := moerl(t, "pipeline", "o1"); code != 2 || !strings.Contains(stderr, `no built-in pipeline of that name`) {
		t.Errorf("unknown pipeline: exit %d %q", code, stderr)
	}
}

// TestRLResolvesSettings: --algo picks the preset, a field flag and --set
// override it, and run.json records the resolved settings.
func TestRLResolvesSettings(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base")
	if code, _, stderr := moerl(t, "pretrain", "--task", "add", "--docs", "200", "--d-model", "32", "--expert-hidden", "32",
		"--layers", "1", "--batch", "4", "--steps", "2", "--out", base, "--device", "cpu"); code != 0 {
		t.Fatal(stderr)
	}
	out := filepath.Join(dir, "dapo")
	code, _, stderr := moerl(t, "rl", "--algo", "dapo", "--init", filepath.Join(base, "model.ck"), "--steps", "1",
		"--prompts", "2", "--max-new", "8", "--clip-low", "0.1", "--set", "clip_high=0.3", "--set", "max_tries=1",
		"--out", out, "--device", "cpu")
	if code != 0 {
		t.Fatal(stderr)
	}
	data, _ := os.ReadFile(filepath.Join(out, "run.json"))
	var raw map[string]map[string]map[string]any
	json.Unmarshal(data, &raw)
	a := raw["settings"]["algo"]
	if a["preset"] != "dapo" || a["clip_low"] != 0.1 || a["clip_high"] != 0.3 || a["dynamic_sampling"] != true {
		t.Errorf("resolved settings %v: want the dapo preset with clip_low 0.1, clip_high 0.3", a)
	}
	if !strings.Contains(stderr, `"preset":"dapo"`) {
		t.Errorf("the resolved settings are not printed: %q", stderr)
	}
}

// TestFitToTask: the recipe's budget covers every task's canonical
// responses and its context the longest evaluated prompt plus that budget,
// and add keeps moe-micro's 64-token context and 40-token budget.
func TestFitToTask(t *testing.T) {
	for _, name := range task.Names() {
		tk, _ := task.Get(name)
		r := run.DefaultRecipe()
		r.Task = name
		r.Fit()
		if name == "add" && (r.Model.MaxSeq != 64 || r.MaxNew != 40) {
			t.Errorf("add: context %d, budget %d; want 64 and 40", r.Model.MaxSeq, r.MaxNew)
		}
		train, _ := tk.Difficulties()
		tok := tokenizer.Default()
		for _, p := range task.GenerateSet(tk, 99, 100, train) {
			pi, _ := tok.Encode(p.Prompt)
			ri, _ := tok.Encode(p.Response())
			if len(ri)+1 > r.MaxNew || len(pi)+1+r.MaxNew > r.Model.MaxSeq {
				t.Errorf("%s: a %d-token prompt and %d-token response do not fit budget %d, context %d",
					name, len(pi)+1, len(ri)+1, r.MaxNew, r.Model.MaxSeq)
				break
			}
		}
	}
}

// TestFlagsExplainThemselves: every flag of every command says what it
// does (more than its own name) and prints its default.
func TestFlagsExplainThemselves(t *testing.T) {
	for _, c := range commands() {
		code, _, help := moerl(t, c.name, "--help")
		if code != 0 {
			t.Errorf("%s --help: exit %d", c.name, code)
			continue
		}
		lines := strings.Split(help, "\n")
		for i, line := range lines {
			if !strings.HasPrefix(line, "  --") || i+1 >= len(lines) {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimPrefix(line, "  --"), " ")
			usage := strings.TrimSpace(lines[i+1])
			if strings.Contains(usage, "(undocumented)") {
				t.Errorf("%s --%s: help %q only names the field (add a help tag)", c.name, name, usage)
			}
			if len(strings.Fields(usage)) < 4 {
				t.Errorf("%s --%s: help %q is too short to say what it does", c.name, name, usage)
			}
			if !strings.Contains(usage, "(default ") {
				t.Errorf("%s --%s: help %q does not state its default", c.name, name, usage)
			}
		}
	}
}

// TestStudyQuick runs the whole study at toy size: every stage, every
// statistic and every output; then --resume reuses every stage, and a
// changed setting reruns only what depends on it.
func TestStudyQuick(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "study")
	code, out, stderr := moerl(t, "study", "--quick", "--out", dir, "--device", "cpu")
	if code != 0 {
		t.Fatalf("study: exit %d\n%s", code, stderr)
	}
	if !strings.Contains(out, "finding 5:") {
		t.Errorf("study output lacks the verdicts:\n%s", out)
	}
	var res struct {
		Replicates   int
		PerReplicate map[string][]json.RawMessage `json:"per_replicate"`
		Views        map[string]struct {
			Models map[string]struct {
				Unsolved struct{ Est, Lo, Hi float64 }
				PassAtK  map[string]struct{ Est, Lo, Hi float64 } `json:"pass_at_k"`
			}
			VsBase map[string]struct {
				OverlapCounts []map[string]int `json:"overlap_counts"`
			} `json:"vs_base"`
		}
		Findings []struct{ Verdict string }
	}
	data, err := os.ReadFile(filepath.Join(dir, "study.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	all := res.Views["all"]
	if res.Replicates != 2 || len(res.PerReplicate["grpo"]) != 2 || len(res.Findings) != 5 {
		t.Errorf("study.json: %d replicates, %d grpo reports, %d findings", res.Replicates, len(res.PerReplicate["grpo"]), len(res.Findings))
	}
	if p := all.Models["base"].PassAtK["1"]; !(p.Lo <= p.Est && p.Est <= p.Hi) {
		t.Errorf("base pass@1 interval %+v", p)
	}
	if len(all.VsBase["grpo"].OverlapCounts) != 2 || len(res.Views) < 2 {
		t.Errorf("overlap counts %v, %d views", all.VsBase["grpo"].OverlapCounts, len(res.Views))
	}
	for _, f := range []string{"study.md", "pass_at_k.svg", "solved_sets.svg", "pass_at_k_algorithms.svg", "r1/base/eval/problems.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("missing %s", f)
		}
	}
	if code, _, stderr := moerl(t, "study", "--quick", "--out", dir, "--device", "cpu"); code != 1 || !strings.Contains(stderr, "--resume") {
		t.Errorf("a second study into the same folder: exit %d %q", code, stderr)
	}
	code, _, stderr = moerl(t, "study", "--quick", "--out", dir, "--device", "cpu", "--resume", "--stats.resamples", "300")
	if code != 0 || strings.Contains(stderr, "pretrain [") || strings.Contains(stderr, "rl grpo [") {
		t.Errorf("resume with only the statistics changed retrained something: exit %d\n%s", code, stderr)
	}
	code, _, stderr = moerl(t, "study", "--quick", "--out", dir, "--device", "cpu", "--resume", "--rl.steps", "2")
	if code != 0 || strings.Contains(stderr, "pretrain [") || !strings.Contains(stderr, "rl grpo [") {
		t.Errorf("resume with rl.steps changed should rerun the RL stages only: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "r1")); err != nil {
		t.Error(err)
	}
}

// TestStudyConfig: a study file's unknown key is an error naming it, and
// --print-config writes a file that loads back to the same settings.
func TestStudyConfig(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("replicates = 3\n[rl]\nstesp = 4\n"), 0o644)
	if code, _, stderr := moerl(t, "study", "--config", bad, "--print-config"); code != 2 || !strings.Contains(stderr, `unknown key "stesp"`) {
		t.Errorf("unknown key: exit %d %q", code, stderr)
	}
	code, printed, stderr := moerl(t, "study", "--replicates", "4", "--rl.steps", "33", "--algos", "grpo,dapo", "--print-config")
	if code != 0 {
		t.Fatal(stderr)
	}
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte(printed), 0o644)
	code, again, stderr := moerl(t, "study", "--config", good, "--print-config")
	if code != 0 || again != printed {
		t.Errorf("printed config does not load back the same: exit %d %s\n%s\nvs\n%s", code, stderr, printed, again)
	}
	if !strings.Contains(printed, "replicates = 4") || !strings.Contains(printed, "steps = 33") {
		t.Errorf("flags did not reach the config:\n%s", printed)
	}
}

// TestCPUNotesBF16: asking for bf16 GEMMs on the CPU backend is said to
// have no effect, not silently ignored.
func TestCPUNotesBF16(t *testing.T) {
	for _, tc := range []struct {
		env  string
		note bool
	}{{"1", true}, {"on", true}, {"0", false}, {"", false}} {
		t.Setenv("MOERL_BF16", tc.env)
		var errb bytes.Buffer
		if _, err := openBackend("cpu", &errb); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(errb.String(), "has no effect on the cpu backend"); got != tc.note {
			t.Errorf("MOERL_BF16=%q: note %v, want %v (%q)", tc.env, got, tc.note, errb.String())
		}
	}
}
