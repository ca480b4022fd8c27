package run

import (
	"strings"
	"testing"

	"github.com/moerl/moerl/rl"
)

// TestShippedPipelinesParse: every built-in pipeline is a valid file whose
// stages read earlier stages, and gets an eval stage per model stage.
func TestShippedPipelinesParse(t *testing.T) {
	names := Shipped()
	for _, want := range []string{"kimi", "qwen3", "r1", "r1-zero", "seed-thinking"} {
		p, err := LoadPipeline(want, false, nil)
		if err != nil {
			t.Errorf("%s: %v", want, err)
			continue
		}
		if p.Name != want || p.Doc == "" || len(p.Evaluated) == 0 {
			t.Errorf("%s: name %q, doc %q, evaluated %v", want, p.Name, p.Doc, p.Evaluated)
		}
		for _, m := range p.Evaluated {
			if _, ok := p.Evals[m]; !ok {
				t.Errorf("%s: %s is evaluated by no stage", want, m)
			}
		}
	}
	if len(names) < 5 {
		t.Errorf("built-in pipelines: %v", names)
	}
}

// TestPipelineErrors: every mistake in a pipeline file is an error that
// names it.
func TestPipelineErrors(t *testing.T) {
	head := "name = \"x\"\n[[stage]]\nname = \"base\"\nkind = \"pretrain\"\n"
	cases := []struct{ file, want string }{
		{"name = \"x\"\ncolour = 1\n", `unknown key "colour"`},
		{"[[stage]]\nname = \"a\"\nkind = \"pretrain\"\n", "no name"},
		{"name = \"x\"\n", "no stages"},
		{head + "[[stage]]\nname = \"b\"\nkind = \"sdft\"\nfrom = \"base\"\n", `unknown kind "sdft"`},
		{head + "[[stage]]\nname = \"b\"\nkind = \"sft\"\nfrom = \"base\"\ntrain = { stpes = 3 }\n", `unknown key "stpes"`},
		{head + "[[stage]]\nname = \"b\"\nkind = \"sft\"\nfrom = \"base\"\ntrain = { steps = \"many\" }\n", "train.steps: a string cannot be int"},
		{head + "[[stage]]\nname = \"b\"\nkind = \"sft\"\nfrom = \"later\"\n", `input init = "later" is not an earlier stage`},
		{head + "[[stage]]\nname = \"b\"\nkind = \"sft\"\n", `needs the input "init"`},
		{head + "[[stage]]\nname = \"b\"\nkind = \"sft\"\nfrom = \"base\"\nalgo = \"grpo\"\n", "algo is a key of rl stages"},
		{head + "[[stage]]\nname = \"b\"\nkind = \"rl\"\nfrom = \"base\"\n", `needs algo`},
		{head + "[[stage]]\nname = \"b\"\nkind = \"rl\"\nfrom = \"base\"\nalgo = \"trpo\"\n", `unknown algorithm preset "trpo"`},
		{head + "[[stage]]\nname = \"b\"\nkind = \"rl\"\nfrom = \"base\"\nalgo = \"grpo\"\nset = [\"clip_low=2\"]\n", "clip_low"},
		{head + "[[stage]]\nname = \"base\"\nkind = \"sft\"\nfrom = \"base\"\n", "used twice"},
		{head + "[[stage]]\nname = \"b\"\nkind = \"pretrain\"\nfrom = \"base\"\n", "starts from no checkpoint"},
		{"name = \"x\"\n[recipe]\nrl = { stesp = 1 }\n[[stage]]\nname = \"base\"\nkind = \"pretrain\"\n", `unknown key "stesp"`},
		{head + "[[stage]]\nname = \"b\"\nkind = \"rl\"\nfrom = \"base\"\nalgo = \"grpo\"\nreward_source = \"mix\"\n", "needs reward_model"},
		{"name = \"x\"\n[[stage]\n", "toml"},
	}
	for _, c := range cases {
		_, err := ParsePipeline([]byte(c.file), false, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("pipeline\n%s\nerror %v, want one containing %q", c.file, err, c.want)
		}
	}
}

// TestPipelineOverrides: a stage's keys override the recipe's defaults for
// its kind, and the recipe table overrides the default recipe.
func TestPipelineOverrides(t *testing.T) {
	file := `name = "x"
evaluate = false
[recipe]
rl.steps = 7
[[stage]]
name = "base"
kind = "pretrain"
train.steps = 5
[[stage]]
name = "g"
kind = "rl"
from = "base"
algo = "grpo"
set = ["kl_coef=0.001"]
prompts = 3
`
	p, err := ParsePipeline([]byte(file), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Plan.Stages) != 2 {
		t.Fatalf("evaluate = false still added stages: %d", len(p.Plan.Stages))
	}
	if s := p.Plan.Stages[0].Settings.(*Pretrain); s.Train.Steps != 5 || s.Corpus.Docs != DefaultRecipe().Pretrain.Docs {
		t.Errorf("pretrain settings: steps %d docs %d", s.Train.Steps, s.Corpus.Docs)
	}
	cfg := p.Plan.Stages[1].Settings.(*rl.Config)
	if cfg.Steps != 7 || cfg.Prompts != 3 || cfg.Algo.KLCoef != 0.001 || cfg.Algo.Preset != "grpo" {
		t.Errorf("rl settings: steps %d prompts %d kl %v preset %s", cfg.Steps, cfg.Prompts, cfg.Algo.KLCoef, cfg.Algo.Preset)
	}
}

// FuzzParsePipeline: no pipeline file makes the parser panic, and every
// file it accepts is a plan that validates.
func FuzzParsePipeline(f *testing.F) {
	for _, name := range Shipped() {
		data, _ := ShippedFile(name)
		f.Add(data)
	}
	f.Add([]byte("name = \"x\"\n[[stage]]\nname = \"b\"\nkind = \"rl\"\nfrom = \"b\"\nalgo = \"grpo\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePipeline(data, true, nil)
		if err != nil {
			return
		}
		if err := p.Plan.Validate(); err != nil {
			t.Fatalf("accepted a plan that does not validate: %v", err)
		}
	})
}
