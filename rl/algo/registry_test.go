package algo

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/moerl/moerl/rl/reward"
)

// TestRegistry: every enum field of Config has a registry whose values
// are the field's constants, each with a doc, and Allowed, Set and
// Validate agree with it.
func TestRegistry(t *testing.T) {
	want := map[string][]string{
		"advantage":          {"gae", "group", "group-mean", "rloo", "reinforce++", "reinforce++-baseline", "passk"},
		"kl_placement":       {"none", "reward", "loss"},
		"kl_estimator":       {"k1", "k2", "k3"},
		"policy_loss":        {"clip", "omd", "gspo", "cispo"},
		"aggregation":        {"seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm", "seq-mean-token-sum"},
		"rollout_correction": {"none", "token-tis", "seq-tis", "token-mis", "seq-mis"},
		"rollout_precision":  {"fp32", "bf16", "fp16"},
		"reward_scheme":      {"default", "pm1"},
		"reward_control":     {"none", "random", "format-only", "inverted"},
		"short_batch":        {"train", "fail"},
	}
	keys := EnumKeys()
	if len(keys) != len(want) {
		t.Errorf("EnumKeys() = %v, want the %d keys %v", keys, len(want), want)
	}
	for _, key := range keys {
		if got := Allowed(key); !slices.Equal(got, want[key]) {
			t.Errorf("Allowed(%q) = %v, want %v", key, got, want[key])
		}
		for _, p := range Parts(key) {
			if p.Doc == "" {
				t.Errorf("%s part %q has no doc", key, p.Name)
			}
			c, _ := Preset("grpo")
			if err := c.Set(key, p.Name); err != nil {
				t.Errorf("Set(%q, %q): %v", key, p.Name, err)
			}
		}
		c, _ := Preset("grpo")
		if err := c.Set(key, "no-such-part"); err == nil || !strings.Contains(err.Error(), strings.Join(want[key], ", ")) {
			t.Errorf("Set(%q, no-such-part) = %v, want an error listing %v", key, err, want[key])
		}
	}
	for _, key := range []string{"gamma", "critic", "nope"} {
		if Allowed(key) != nil || Parts(key) != nil {
			t.Errorf("Allowed(%q) = %v: not an enum field", key, Allowed(key))
		}
	}
	// A field with a default accepts the empty value as that default; one
	// without does not.
	c, _ := Preset("grpo")
	c.RolloutCorrection, c.RewardControl = "", ""
	if err := c.Validate(); err != nil || c.UsesRolloutCorrection() {
		t.Errorf("empty rollout_correction and reward_control: %v (correction on: %v), want the defaults", err, c.UsesRolloutCorrection())
	}
	c.Aggregation = ""
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `aggregation: "" is not one of`) {
		t.Errorf("empty aggregation: %v", err)
	}
}

// TestHelpTags: every field has a help tag, and an enum field's tag
// names every value it allows, so the command line's help stays true.
func TestHelpTags(t *testing.T) {
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		help := Help(key)
		if help == "" || help != f.Tag.Get("help") {
			t.Errorf("field %s (%s): help %q", f.Name, key, help)
		}
		for _, name := range Allowed(key) {
			if !strings.Contains(help, name) {
				t.Errorf("help of %s does not name its value %q: %s", key, name, help)
			}
		}
	}
	if Help("nope") != "" {
		t.Error("Help of an unknown key is not empty")
	}
}

// TestRewardControlsExist: every control a Config can name is one
// rl/reward implements, and the other way round.
func TestRewardControlsExist(t *testing.T) {
	if got, want := reward.ControlNames(), Allowed("reward_control"); !slices.Equal(got, want) {
		t.Errorf("rl/reward controls %v, rl/algo's %v", got, want)
	}
	if got, want := reward.SchemeNames(), Allowed("reward_scheme"); !slices.Equal(got, want) {
		t.Errorf("rl/reward schemes %v, rl/algo's %v", got, want)
	}
}

func TestValidateNewParts(t *testing.T) {
	tests := []struct {
		preset string
		sets   []string
		want   string // substring of the error; "" for valid
	}{
		{"gspo", nil, ""},
		{"cispo", nil, ""},
		{"cispo", []string{"clip_low=10"}, ""}, // verl's "no lower bound"
		{"cispo", []string{"clip_low=0"}, "clip_low: 0 is not positive"},
		{"gspo", []string{"clip_low=1"}, "clip_low: 1 is outside (0, 1)"},
		{"gspo", []string{"advantage=reinforce++"}, "gspo needs a sequence-level estimator (group, group-mean, rloo, passk)"},
		{"omd", []string{"advantage=passk"}, ""},
		{"grpo", []string{"advantage=passk"}, ""},
		{"grpo", []string{"entropy_coef=-0.1"}, "entropy_coef: -0.1 is negative"},
		{"grpo", []string{"rollout_correction=token-tis"}, ""},
		{"grpo", []string{"rollout_correction=seq-mis", "rollout_is_cap=0"}, "rollout_is_cap: 0 is not positive"},
		{"grpo", []string{"rollout_is_cap=0"}, ""}, // read only with a correction
		{"omd", []string{"rollout_correction=token-mis"}, "token-mis weights tokens, and policy_loss omd has one loss per response"},
		{"gspo", []string{"rollout_correction=token-tis"}, "use seq-tis or seq-mis"},
		{"gspo", []string{"rollout_correction=seq-tis"}, ""},
		{"grpo", []string{"reward_control=random"}, ""},
	}
	for _, tc := range tests {
		c, _ := Preset(tc.preset)
		for _, kv := range tc.sets {
			if err := c.Apply(kv); err != nil {
				t.Fatalf("Apply(%q): %v", kv, err)
			}
		}
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s %v: unexpected error %v", tc.preset, tc.sets, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s %v: error %v, want one containing %q", tc.preset, tc.sets, err, tc.want)
		}
	}
}
