package algo

import (
	"encoding/json"
	"github.com/moerl/moerl/rl/reward"
	"strings"
	"testing"
)

// TestPresetsMatchSpec checks each preset against the row of SPEC-RL.md's
// preset table.
func TestPresetsMatchSpec(t *testing.T) {
	type row struct {
		adv                AdvantageEstimator
		gamma, lambda      float64
		kl                 KLPlacement
		est                KLEstimator
		beta               float64
		term               PolicyTerm
		clipLow, clipHigh  float64
		agg                Aggregation
		critic             bool
		valueClip          float64
		epochs             int
		dynamic, overlong  bool
		lengthPenalty, tau float64
		scheme             RewardScheme
	}
	tests := map[string]row{
		"ppo":         {GAE, 1, 0.95, KLReward, K1, 0.05, Clip, 0.2, 0.2, TokenMean, true, 0.2, 4, false, false, 0, 0, RewardDefault},
		"grpo":        {Group, 1, 1, KLLoss, K3, 0.04, Clip, 0.2, 0.2, SeqMeanTokenMean, false, 0, 1, false, false, 0, 0, RewardDefault},
		"dapo":        {Group, 1, 1, KLNone, K3, 0, Clip, 0.2, 0.28, TokenMean, false, 0, 1, true, true, 0, 0, RewardPM1},
		"omd":         {GroupMean, 1, 1, KLNone, K1, 0, OMD, 0.2, 0.2, SeqMeanTokenSum, false, 0, 1, false, false, 1, 0.1, RewardDefault},
		"drgrpo":      {GroupMean, 1, 1, KLNone, K3, 0, Clip, 0.2, 0.2, SeqMeanTokenSumNorm, false, 0, 1, false, false, 0, 0, RewardDefault},
		"rloo":        {RLOO, 1, 1, KLReward, K1, 0.05, Clip, 0.2, 0.2, TokenMean, false, 0, 1, false, false, 0, 0, RewardDefault},
		"reinforce++": {ReinforcePP, 1, 1, KLReward, K1, 0.01, Clip, 0.2, 0.2, TokenMean, false, 0, 1, false, false, 0, 0, RewardDefault},
		// SPEC-RL.md's additions: GSPO's clip range 3e-4/4e-4, sequence mean;
		// CISPO token-mean, no lower bound on its weight (ε_low 1).
		"gspo":  {Group, 1, 1, KLNone, K3, 0, GSPO, 3e-4, 4e-4, SeqMeanTokenMean, false, 0, 1, false, false, 0, 0, RewardDefault},
		"cispo": {Group, 1, 1, KLNone, K3, 0, CISPO, 1, 0.2, TokenMean, false, 0, 1, true, true, 0, 0, RewardDefault},
	}
	if got, want := strings.Join(Presets(), ","), "cispo,dapo,drgrpo,grpo,gspo,omd,ppo,reinforce++,rloo"; got != want {
		t.Errorf("Presets() = %s, want %s", got, want)
	}
	for name, w := range tests {
		c, err := Preset(name)
		if err != nil {
			t.Fatalf("Preset(%q): %v", name, err)
		}
		got := row{c.Advantage, c.Gamma, c.Lambda, c.KLPlacement, c.KLEstimator, c.KLCoef, c.PolicyLoss,
			c.ClipLow, c.ClipHigh, c.Aggregation, c.Critic, c.ValueClip, c.Epochs, c.DynamicSampling,
			c.OverlongShaping, c.LengthPenalty, c.Tau, c.RewardScheme}
		if name != "omd" {
			got.tau = 0 // τ is only read by omd
		}
		if got != w {
			t.Errorf("preset %s:\n got %+v\nwant %+v", name, got, w)
		}
		if c.Preset != name || c.StdEps != 1e-6 || c.DualClip != 0 {
			t.Errorf("preset %s: preset=%q std_eps=%v dual_clip=%v", name, c.Preset, c.StdEps, c.DualClip)
		}
		if c.EntropyCoef != 0 || c.RolloutCorrection != CorrectionNone || c.RolloutISCap != 2 || c.RewardControl != RewardControlNone {
			t.Errorf("preset %s: entropy_coef %v, rollout_correction %q, rollout_is_cap %v, reward_control %q; want 0, none, 2 (verl), none",
				name, c.EntropyCoef, c.RolloutCorrection, c.RolloutISCap, c.RewardControl)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("preset %s does not validate: %v", name, err)
		}
	}
	if _, err := Preset("a2c"); err == nil || !strings.Contains(err.Error(), "grpo") {
		t.Errorf("Preset(a2c) error %v should list the known presets", err)
	}
	if c, _ := Preset("omd"); !c.Curriculum || !c.PrioritizedSampling {
		t.Error("omd preset should ask for curriculum and prioritized sampling")
	}
	if c, _ := Preset("dapo"); c.GroupSize != 16 || c.MaxTries != 10 {
		t.Errorf("dapo: group_size %d max_tries %d, want 16 and 10", c.GroupSize, c.MaxTries)
	}
	if c, _ := Preset("omd"); !c.ResetOptimizer || c.LengthPenaltyWarmup != 10 {
		t.Errorf("omd: reset_optimizer %v length_penalty_warmup %d, want true and 10 (Kimi k1.5 §2.3.2, §2.3.3)",
			c.ResetOptimizer, c.LengthPenaltyWarmup)
	}
}

// TestPresetUpdates checks each preset's updates per rollout (epochs ×
// mini-batches) against its source (see the presets' comments), and that
// a toy batch of 16 prompts fills every mini-batch with at least one whole
// group.
func TestPresetUpdates(t *testing.T) {
	tests := map[string]struct{ epochs, miniBatches int }{
		"ppo":         {4, 1},  // TRL PPOConfig
		"grpo":        {1, 4},  // verl examples/grpo_trainer/run_qwen2-7b.sh
		"dapo":        {1, 16}, // DAPO §4.1, verl recipe
		"omd":         {1, 4},  // not published; grpo's
		"drgrpo":      {1, 8},  // oat understand-r1-zero scripts
		"rloo":        {1, 8},  // OpenRLHF train_rloo_llama.sh
		"reinforce++": {1, 8},  // OpenRLHF train_reinforce_llama_ray.sh
		"gspo":        {1, 4},  // GSPO §5.1, verl test_gspo_3b_math.sh
		"cispo":       {1, 4},  // verl examples/cispo_trainer/run_qwen3_8b_fsdp.sh
	}
	for _, name := range Presets() {
		c, _ := Preset(name)
		w, ok := tests[name]
		if !ok {
			t.Errorf("preset %s has no expected update count", name)
			continue
		}
		if c.Epochs != w.epochs || c.MiniBatches != w.miniBatches {
			t.Errorf("preset %s: %d epochs × %d mini-batches, want %d × %d", name, c.Epochs, c.MiniBatches, w.epochs, w.miniBatches)
		}
		if responses := 16 * c.GroupSize; responses/c.MiniBatches < c.GroupSize {
			t.Errorf("preset %s: 16 prompts × %d = %d responses give mini-batches of fewer than one group", name, c.GroupSize, responses)
		}
		if c.ShortBatch != ShortBatchTrain {
			t.Errorf("preset %s: short_batch %q, want train", name, c.ShortBatch)
		}
	}
}

func TestLengthPenaltyAt(t *testing.T) {
	c, _ := Preset("omd")
	c.LengthPenalty, c.LengthPenaltyWarmup = 0.5, 3
	for step, want := range []float64{0, 0, 0, 0.5, 0.5} {
		if got := c.LengthPenaltyAt(step); got != want {
			t.Errorf("step %d: weight %v, want %v", step, got, want)
		}
	}
	c.LengthPenaltyWarmup = 0
	if got := c.LengthPenaltyAt(0); got != 0.5 {
		t.Errorf("no warm-up: weight %v at step 0, want 0.5", got)
	}
}

func TestSet(t *testing.T) {
	c, _ := Preset("grpo")
	for _, kv := range []string{"advantage=rloo", "gamma=0.99", "dual_clip=3", "overlong_filter=true", "max_tries=4", " clip_high = 0.28 ",
		"mini_batches=2", "short_batch=fail", "length_penalty_warmup=5"} {
		if err := c.Apply(kv); err != nil {
			t.Fatalf("Apply(%q): %v", kv, err)
		}
	}
	if c.Advantage != RLOO || c.Gamma != 0.99 || c.DualClip != 3 || !c.OverlongFilter || c.MaxTries != 4 || c.ClipHigh != 0.28 ||
		c.MiniBatches != 2 || c.ShortBatch != ShortBatchFail || c.LengthPenaltyWarmup != 5 {
		t.Errorf("overrides not applied: %v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate after overrides: %v", err)
	}

	errs := []struct{ key, value, want string }{
		{"advantage", "ppo", "not one of gae, group, group-mean, rloo, reinforce++, reinforce++-baseline"},
		{"kl_estimator", "k4", "not one of k1, k2, k3"},
		{"aggregation", "mean", "token-mean"},
		{"gamma", "x", "set gamma: \"x\" is not a finite number"},
		{"gamma", "NaN", "not a finite number"},
		{"kl_coef", "+Inf", "not a finite number"},
		{"epochs", "1.5", "set epochs: \"1.5\" is not an integer"},
		{"critic", "yes", "set critic: \"yes\" is not a boolean"},
		{"learning_rate", "1", "unknown setting \"learning_rate\" (known: advantage,"},
		{"preset", "ppo", "cannot be overridden"},
		{"short_batch", "skip", "not one of train, fail"},
	}
	for _, e := range errs {
		err := c.Set(e.key, e.value)
		if err == nil || !strings.Contains(err.Error(), e.want) {
			t.Errorf("Set(%q, %q) = %v, want error containing %q", e.key, e.value, err, e.want)
		}
	}
	if err := c.Apply("gamma"); err == nil || !strings.Contains(err.Error(), "key=value") {
		t.Errorf("Apply without '=' = %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		preset string
		sets   []string
		want   string // substring of the error; "" for valid
	}{
		{"grpo", nil, ""},
		{"grpo", []string{"gamma=1.5"}, "gamma: 1.5 is outside [0, 1]"},
		{"grpo", []string{"clip_low=1"}, "clip_low"},
		{"grpo", []string{"clip_high=0"}, "clip_high"},
		{"grpo", []string{"dual_clip=1"}, "dual_clip"},
		{"grpo", []string{"group_size=1"}, "needs at least 2"},
		{"grpo", []string{"kl_coef=-0.1"}, "kl_coef"},
		{"grpo", []string{"epochs=0"}, "epochs"},
		{"grpo", []string{"mini_batches=0"}, "mini_batches: 0 is less than 1"},
		{"omd", []string{"length_penalty_warmup=-1"}, "length_penalty_warmup"},
		{"grpo", []string{"advantage=gae"}, "gae needs a critic"},
		{"ppo", []string{"critic=false"}, "gae needs a critic"},
		{"omd", []string{"tau=0"}, "tau"},
		{"omd", []string{"advantage=reinforce++"}, "sequence-level"},
		{"dapo", []string{"max_tries=0"}, "max_tries"},
		{"dapo", []string{"max_len=100", "overlong_cache=100"}, "overlong_cache"},
		{"ppo", []string{"value_clip=-1"}, "value_clip"},
		{"ppo", []string{"std_eps=-1"}, "std_eps"},
		{"ppo", []string{"length_penalty=-1"}, "length_penalty"},
		{"reinforce++", []string{"advantage=reinforce++-baseline", "group_size=1"}, "group_size"},
		// Several problems are all reported.
		{"grpo", []string{"gamma=2", "epochs=0"}, "epochs"},
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
	bad := Config{Advantage: "magic"}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), `advantage: "magic" is not one of`) {
		t.Errorf("Validate of an unknown estimator: %v", err)
	}
}

func TestConfigJSON(t *testing.T) {
	c, _ := Preset("dapo")
	s := c.String()
	for _, want := range []string{`"preset":"dapo"`, `"clip_high":0.28`, `"aggregation":"token-mean"`, `"dynamic_sampling":true`} {
		if !strings.Contains(s, want) {
			t.Errorf("String() = %s, missing %s", s, want)
		}
	}
	var back Config
	if err := json.Unmarshal([]byte(s), &back); err != nil {
		t.Fatal(err)
	}
	if back != c {
		t.Errorf("JSON round trip changed the config:\n%v\n%v", c, back)
	}
	// Every JSON key is a settable key, and the other way round.
	var m map[string]any
	_ = json.Unmarshal([]byte(s), &m)
	if len(m) != len(Keys())+1 {
		t.Errorf("%d JSON keys, %d settable keys + preset", len(m), len(Keys()))
	}
	for _, k := range Keys() {
		if _, ok := m[k]; !ok {
			t.Errorf("settable key %q not in the JSON", k)
		}
	}
}

// TestRewardSchemesExist: every scheme a Config can name is one rl/reward
// knows, and every preset's scheme is valid.
func TestRewardSchemesExist(t *testing.T) {
	for _, s := range Allowed("reward_scheme") {
		if _, err := reward.ParseScheme(s); err != nil {
			t.Errorf("scheme %q: %v", s, err)
		}
	}
	for _, name := range Presets() {
		c, _ := Preset(name)
		if _, err := reward.ParseScheme(string(c.RewardScheme)); err != nil {
			t.Errorf("preset %s: %v", name, err)
		}
	}
}
