package run

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"unicode"

	"github.com/BurntSushi/toml"
)

// A pipeline file is TOML:
//
//	name = "r1"
//	doc = "DeepSeek-R1: …"      # one line, shown by moerl pipeline --list
//	evaluate = true             # evaluate every stage that makes a policy (default)
//
//	[recipe]                    # overrides of the default recipe, e.g.
//	task = "add"
//	rl.steps = 100
//
//	[[stage]]
//	name = "base"
//	kind = "pretrain"
//	what = "the base model"
//
//	[[stage]]
//	name = "r1-zero"
//	kind = "rl"                 # pretrain, sft, distill, rm, rl, eval
//	from = "base"               # the stage it starts from
//	algo = "grpo"               # rl: the preset, and overrides of its fields:
//	set = ["kl_coef=0.001"]
//	steps = 50                  # any field of the kind's settings
//
// Each stage's settings start from the recipe's defaults for its kind;
// the stage's other keys override fields of those settings by their JSON
// names (rl: of rl.Config; sft: train.steps, corpus.docs, …). An unknown
// key anywhere is an error that names it.

//go:embed pipelines/*.toml
var shipped embed.FS

// Pipeline is a pipeline file, resolved.
type Pipeline struct {
	Name, Doc string
	Recipe    Recipe
	Plan      Plan
	// Evaluated are the stages whose models were given an eval stage, in
	// plan order; Evals maps each to its eval stage's name.
	Evaluated []string
	Evals     map[string]string
}

// Shipped lists the pipelines built into moerl.
func Shipped() []string {
	entries, _ := fs.ReadDir(shipped, "pipelines")
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".toml"))
	}
	return names
}

// ShippedFile returns the text of a built-in pipeline.
func ShippedFile(name string) ([]byte, error) {
	data, err := shipped.ReadFile(path.Join("pipelines", name+".toml"))
	if err != nil {
		return nil, fmt.Errorf("no built-in pipeline %q (built in: %s)", name, strings.Join(Shipped(), ", "))
	}
	return data, nil
}

// LoadPipeline reads a pipeline by the name of a built-in one or the path
// of a file. quick shrinks its recipe to a smoke test (Recipe.Quick);
// override, if not nil, edits the recipe after the file's overrides (the
// command line's).
func LoadPipeline(nameOrPath string, quick bool, override func(*Recipe) error) (*Pipeline, error) {
	var data []byte
	var err error
	where := nameOrPath
	if slices.Contains(Shipped(), nameOrPath) {
		data, err = ShippedFile(nameOrPath)
	} else if data, err = os.ReadFile(nameOrPath); err != nil {
		if errors.Is(err, fs.ErrNotExist) && !strings.ContainsAny(nameOrPath, "/.") {
			return nil, fmt.Errorf("pipeline %q: no such file, and no built-in pipeline of that name (built in: %s)",
				nameOrPath, strings.Join(Shipped(), ", "))
		}
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	if err != nil {
		return nil, err
	}
	p, err := ParsePipeline(data, quick, override)
	if err != nil {
		return nil, fmt.Errorf("pipeline %s: %w", where, err)
	}
	return p, nil
}

// stageKeys are the keys of a [[stage]] table that are not the kind's
// settings.
var stageKeys = []string{"name", "kind", "what", "dir", "from", "teacher", "reward_model", "scorer", "algo", "set"}

// ParsePipeline parses a pipeline file; see LoadPipeline.
func ParsePipeline(data []byte, quick bool, override func(*Recipe) error) (*Pipeline, error) {
	var doc map[string]any
	if _, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		return nil, err
	}
	for k := range doc {
		if !slices.Contains([]string{"name", "doc", "evaluate", "recipe", "stage"}, k) {
			return nil, fmt.Errorf("unknown key %q (a pipeline has name, doc, evaluate, [recipe] and [[stage]])", k)
		}
	}
	p := &Pipeline{Recipe: DefaultRecipe()}
	var ok bool
	if p.Name, ok = stringKey(doc, "name"); !ok || p.Name == "" {
		return nil, errors.New(`no name (name = "…")`)
	}
	p.Doc, _ = stringKey(doc, "doc")
	evaluate := true
	if v, found := doc["evaluate"]; found {
		if evaluate, ok = v.(bool); !ok {
			return nil, fmt.Errorf("evaluate = %v: want true or false", v)
		}
	}
	if r, found := doc["recipe"]; found {
		m, ok := r.(map[string]any)
		if !ok {
			return nil, errors.New("recipe: want a table ([recipe])")
		}
		if err := MergeInto(&p.Recipe, m); err != nil {
			return nil, fmt.Errorf("recipe: %w", err)
		}
	}
	if quick {
		p.Recipe.Quick()
	}
	if override != nil {
		if err := override(&p.Recipe); err != nil {
			return nil, err
		}
	}
	p.Recipe.Fit()
	if err := p.Recipe.Validate(); err != nil {
		return nil, err
	}
	stages, ok := doc["stage"].([]map[string]any)
	if !ok || len(stages) == 0 {
		return nil, errors.New("no stages ([[stage]] tables)")
	}
	for i, t := range stages {
		s, err := p.Recipe.stage(t)
		if err != nil {
			name, _ := stringKey(t, "name")
			return nil, fmt.Errorf("stage %d (%s): %w", i+1, name, err)
		}
		p.Plan.Stages = append(p.Plan.Stages, s)
	}
	if evaluate {
		p.Evals = p.Plan.AddEvals(p.Recipe.EvalStage())
		for model := range p.Evals {
			p.Evaluated = append(p.Evaluated, model)
		}
		slices.SortFunc(p.Evaluated, func(a, b string) int { return p.Plan.index(a) - p.Plan.index(b) })
	}
	if err := p.Plan.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// stage builds one stage from its table.
func (r Recipe) stage(t map[string]any) (Stage, error) {
	var s Stage
	var ok bool
	if s.Name, ok = stringKey(t, "name"); !ok || s.Name == "" {
		return s, errors.New(`no name (name = "…")`)
	}
	if s.Kind, ok = stringKey(t, "kind"); !ok {
		return s, fmt.Errorf("no kind (kind = one of %s)", strings.Join(Kinds(), ", "))
	}
	k, known := kinds[s.Kind]
	if !known {
		return s, fmt.Errorf("unknown kind %q (known: %s)", s.Kind, strings.Join(Kinds(), ", "))
	}
	s.What, _ = stringKey(t, "what")
	s.Dir, _ = stringKey(t, "dir")
	s.Inputs = map[string]string{}
	for _, role := range []string{"from", "teacher", "reward_model", "scorer"} {
		v, found := t[role]
		if !found {
			continue
		}
		name, ok := v.(string)
		if !ok {
			return s, fmt.Errorf("%s = %v: want the name of an earlier stage", role, v)
		}
		if role == "from" {
			if len(k.required) == 0 {
				return s, fmt.Errorf("kind %s starts from no checkpoint: remove from", s.Kind)
			}
			role = k.required[0]
		}
		s.Inputs[role] = name
	}
	rest := map[string]any{}
	for key, v := range t {
		if !slices.Contains(stageKeys, key) {
			rest[key] = v
		}
	}
	var err error
	switch s.Kind {
	case "pretrain":
		s.Settings = r.PretrainStage()
	case "sft":
		s.Settings = r.SFTStage()
	case "distill":
		s.Settings = r.DistillStage()
	case "rm":
		s.Settings = r.RMStage()
	case "eval":
		s.Settings = r.EvalStage()
	case "rl":
		preset, ok := stringKey(t, "algo")
		if !ok {
			return s, errors.New(`an rl stage needs algo = "<preset>"`)
		}
		cfg, err := r.RLStage(preset)
		if err != nil {
			return s, err
		}
		sets, _ := t["set"].([]any)
		for _, a := range sets {
			str, ok := a.(string)
			if !ok {
				return s, fmt.Errorf("set: %v is not a \"key=value\" string", a)
			}
			if err := cfg.Algo.Apply(str); err != nil {
				return s, fmt.Errorf("set %s: %w", str, err)
			}
		}
		if reward, found := rest["reward_source"]; found && s.Inputs["reward_model"] == "" && reward != "rule" {
			return s, fmt.Errorf("reward_source %v needs reward_model = \"<an rm stage>\"", reward)
		}
		s.Settings = cfg
	}
	for _, key := range []string{"algo", "set"} {
		if _, found := t[key]; found && s.Kind != "rl" {
			return s, fmt.Errorf("%s is a key of rl stages, not of %s", key, s.Kind)
		}
	}
	if err = MergeInto(s.Settings, rest); err != nil {
		return s, err
	}
	return s, nil
}

func stringKey(t map[string]any, key string) (string, bool) {
	s, ok := t[key].(string)
	return s, ok
}

// MergeInto overrides fields of dst (a pointer to a JSON-tagged struct)
// with the values of m (a decoded TOML or JSON document), nested tables
// merging into nested structs, so that a configuration file names only
// what it changes. A key that names no field is an error naming it; so is
// a value of the wrong type.
func MergeInto(dst any, m map[string]any) error {
	if len(m) == 0 {
		return nil
	}
	base, err := json.Marshal(dst)
	if err != nil {
		return err
	}
	var tree map[string]any
	if err := json.Unmarshal(base, &tree); err != nil {
		return err
	}
	if err := deepMerge(tree, m, ""); err != nil {
		return err
	}
	merged, err := json.Marshal(tree)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(merged))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return fmt.Errorf("%s", strings.TrimPrefix(jsonError(err), "json: "))
	}
	return nil
}

// deepMerge copies src into dst, recursing into tables. A key absent from
// dst is unknown: dst came from the full settings, so it lists every field
// (omitempty fields aside, which the decoder still checks).
func deepMerge(dst, src map[string]any, prefix string) error {
	for _, k := range slices.Sorted(maps.Keys(src)) {
		v := src[k]
		if sub, ok := v.(map[string]any); ok {
			if d, ok := dst[k].(map[string]any); ok {
				if err := deepMerge(d, sub, prefix+k+"."); err != nil {
					return err
				}
				continue
			}
		}
		dst[k] = v
	}
	return nil
}

// jsonError rewrites encoding/json's messages in the file's terms.
func jsonError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		// Drop the Go names of embedded structs from the path: every
		// field a file names is lower case.
		var path []string
		for _, part := range strings.Split(te.Field, ".") {
			if part != "" && !unicode.IsUpper(rune(part[0])) {
				path = append(path, part)
			}
		}
		return fmt.Sprintf("%s: a %s cannot be %s", strings.Join(path, "."), te.Value, te.Type)
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return "unknown key " + f
	}
	return msg
}
