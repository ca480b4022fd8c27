package run

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/moerl/moerl/rl"
)

// Stage is one stage of a Plan: a kind, its settings, and the earlier
// stages whose checkpoints it reads, by role.
type Stage struct {
	// Name names the stage and, unless Dir is set, its folder in the plan's.
	Name string
	// What is a line on what the stage does, shown when it runs.
	What string
	Kind string
	Dir  string
	// Inputs maps a role the kind reads ("init", "teacher", "reward_model",
	// "policy", "model", "scorer") to the name of an earlier stage.
	Inputs map[string]string
	// Settings points to the kind's settings: *Pretrain, *SFT, *Distill,
	// *RM, *rl.Config or *Eval.
	Settings any
}

// kind is one registered stage kind: the roles it reads (required first,
// then optional) and how it runs.
type kind struct {
	required, optional []string
	doc                string
	run                func(env *Env, dir string, in map[string]string, settings any, mode Mode) (string, error)
	// settings is a pointer to the kind's zero settings, for decoding.
	settings func() any
}

// kinds are the stage kinds, one entry each.
var kinds = map[string]kind{
	"pretrain": {doc: "train a model from scratch on a corpus", settings: func() any { return new(Pretrain) },
		run: func(env *Env, dir string, in map[string]string, s any, mode Mode) (string, error) {
			return RunPretrain(env, dir, *s.(*Pretrain), mode)
		}},
	"sft": {required: []string{"init"}, doc: "fine-tune a checkpoint on a corpus", settings: func() any { return new(SFT) },
		run: func(env *Env, dir string, in map[string]string, s any, mode Mode) (string, error) {
			return RunSFT(env, dir, in["init"], *s.(*SFT), mode)
		}},
	"distill": {required: []string{"init", "teacher"}, doc: "fine-tune a checkpoint on a teacher's verified samples",
		settings: func() any { return new(Distill) },
		run: func(env *Env, dir string, in map[string]string, s any, mode Mode) (string, error) {
			return RunDistill(env, dir, in["init"], in["teacher"], *s.(*Distill), mode)
		}},
	"rm": {required: []string{"policy"}, doc: "train a reward model on a policy's labelled samples", settings: func() any { return new(RM) },
		run: func(env *Env, dir string, in map[string]string, s any, mode Mode) (string, error) {
			return RunRM(env, dir, in["policy"], *s.(*RM), mode)
		}},
	"rl": {required: []string{"init"}, optional: []string{"reward_model"}, doc: "train a policy with RL",
		settings: func() any { return new(rl.Config) },
		run: func(env *Env, dir string, in map[string]string, s any, mode Mode) (string, error) {
			return RunRL(env, dir, in["init"], in["reward_model"], *s.(*rl.Config), mode)
		}},
	"eval": {required: []string{"model"}, optional: []string{"scorer"}, doc: "sample a model on problems and measure pass@k and maj@k",
		settings: func() any { return new(Eval) },
		run: func(env *Env, dir string, in map[string]string, s any, mode Mode) (string, error) {
			return RunEval(env, dir, in["model"], in["scorer"], *s.(*Eval), mode)
		}},
}

// Kinds lists the stage kinds, sorted.
func Kinds() []string { return slices.Sorted(maps.Keys(kinds)) }

// Plan is a list of stages, each reading only earlier ones.
type Plan struct {
	Stages []Stage
}

// Validate checks the plan as a whole before anything runs: known kinds,
// unique names, inputs that name earlier stages and the roles the kind
// reads, and settings of the kind's type that validate.
func (p Plan) Validate() error {
	seen := map[string]string{} // name → kind
	for i, s := range p.Stages {
		where := fmt.Sprintf("stage %d (%s)", i+1, s.Name)
		if s.Name == "" {
			return fmt.Errorf("stage %d: no name", i+1)
		}
		if strings.ContainsAny(s.Name, `/\`) || s.Name == "." || s.Name == ".." {
			return fmt.Errorf("%s: a name cannot contain a path separator or be . or ..", where)
		}
		if _, dup := seen[s.Name]; dup {
			return fmt.Errorf("%s: the name is used twice", where)
		}
		k, ok := kinds[s.Kind]
		if !ok {
			return fmt.Errorf("%s: unknown kind %q (known: %s)", where, s.Kind, strings.Join(Kinds(), ", "))
		}
		for _, role := range k.required {
			if s.Inputs[role] == "" {
				return fmt.Errorf("%s: kind %s needs the input %q (the name of an earlier stage)", where, s.Kind, role)
			}
		}
		for role, from := range s.Inputs {
			if !slices.Contains(k.required, role) && !slices.Contains(k.optional, role) {
				return fmt.Errorf("%s: kind %s reads no input %q (it reads: %s)", where, s.Kind, role,
					strings.Join(append(slices.Clone(k.required), k.optional...), ", "))
			}
			fk, ok := seen[from]
			if !ok {
				return fmt.Errorf("%s: input %s = %q is not an earlier stage", where, role, from)
			}
			if fk == "eval" {
				return fmt.Errorf("%s: input %s = %q is an eval stage, which makes no checkpoint", where, role, from)
			}
		}
		if err := validateSettings(s); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		seen[s.Name] = s.Kind
	}
	return nil
}

// validateSettings checks that a stage's settings are a pointer to its
// kind's settings type and that they validate.
func validateSettings(s Stage) error {
	want, got := fmt.Sprintf("%T", kinds[s.Kind].settings()), fmt.Sprintf("%T", s.Settings)
	if got != want {
		return fmt.Errorf("settings of type %s for kind %s (want %s)", got, s.Kind, want)
	}
	return s.Settings.(interface{ Validate() error }).Validate()
}

// AddEvals gives every stage that makes a policy (every kind but rm and
// eval) an eval stage with settings s, in the folder eval/ of the stage's,
// so that every model is measured on the same problems and draws. It
// returns, per model stage, the name of its eval stage ("eval-" + name).
func (p *Plan) AddEvals(s *Eval) map[string]string {
	evals := map[string]string{}
	var add []Stage
	for _, st := range p.Stages {
		if st.Kind == "rm" || st.Kind == "eval" {
			continue
		}
		dir := st.Dir
		if dir == "" {
			dir = st.Name
		}
		name := "eval-" + st.Name
		settings := *s
		add = append(add, Stage{Name: name, Kind: "eval", Dir: filepath.Join(dir, "eval"),
			Inputs: map[string]string{"model": st.Name}, Settings: &settings})
		evals[st.Name] = name
	}
	p.Stages = append(p.Stages, add...)
	return evals
}

// index is the position of the named stage, or -1.
func (p Plan) index(name string) int {
	return slices.IndexFunc(p.Stages, func(s Stage) bool { return s.Name == name })
}

// Result is what Execute did with one stage.
type Result struct {
	Name, Kind string
	// Output is the stage's checkpoint, or for eval its report file.
	Output  string
	Seconds float64
}

// Execute runs the plan's stages in order into folder out (a stage's
// folder is out/Dir, or out/Name) and returns each stage's result, in
// order. With mode Reuse a stage whose settings and inputs have not
// changed is reused; Fresh refuses a folder that holds a run.
func Execute(env *Env, out string, p Plan, mode Mode) ([]Result, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	outputs := map[string]string{}
	var results []Result
	for _, s := range p.Stages {
		in := map[string]string{}
		for role, from := range s.Inputs {
			in[role] = outputs[from]
		}
		dir := s.Dir
		if dir == "" {
			dir = s.Name
		}
		if s.What != "" {
			env.Log.Stage(s.Name, s.What)
		}
		t0 := time.Now()
		path, err := kinds[s.Kind].run(env, filepath.Join(out, dir), in, s.Settings, mode)
		if err != nil {
			var intr *Interrupted
			if errors.As(err, &intr) {
				return results, err
			}
			return results, fmt.Errorf("stage %s: %w", s.Name, err)
		}
		outputs[s.Name] = path
		results = append(results, Result{Name: s.Name, Kind: s.Kind, Output: path, Seconds: time.Since(t0).Seconds()})
	}
	return results, nil
}
