package moe

import (
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestConfigDiff(t *testing.T) {
	a, _ := Preset("moe-micro")
	if d := a.Diff(a); d != nil {
		t.Fatalf("a config differs from itself: %v", d)
	}
	b := a
	b.DModel = 64
	if d := a.Diff(b); !slices.Equal(d, []string{"d_model: 128 → 64"}) {
		t.Fatalf("got %q", d)
	}
	b.Vocab, b.DenseFFN, b.NormEps, b.ValueHead = 100, true, 1e-5, true
	want := []string{"vocab: 64 → 100", "d_model: 128 → 64", "dense_ffn: false → true", "norm_eps: 1e-06 → 1e-05", "value_head: false → true"}
	if d := a.Diff(b); !slices.Equal(d, want) {
		t.Fatalf("got %q, want %q", d, want)
	}
	if d := b.Diff(a); len(d) != len(want) || d[1] != "d_model: 64 → 128" {
		t.Fatalf("reversed: got %q", d)
	}
	// A NaN is the same as itself; floats one ulp apart are not.
	n := a
	n.AuxLossCoef = math.NaN()
	if d := n.Diff(n); d != nil {
		t.Fatalf("NaN: got %q", d)
	}
	u := a
	u.InitStd = math.Nextafter(a.InitStd, 1)
	if d := a.Diff(u); !slices.Equal(d, []string{"init_std: 0.02 → 0.020000000000000004"}) {
		t.Fatalf("one ulp: got %q", d)
	}

	// Every field is compared, under its JSON name.
	typ := reflect.TypeOf(Config{})
	for i := range typ.NumField() {
		f := typ.Field(i)
		c := a
		v := reflect.ValueOf(&c).Elem().Field(i)
		switch v.Kind() {
		case reflect.Int:
			v.SetInt(v.Int() + 1)
		case reflect.Float64:
			v.SetFloat(v.Float() + 0.5)
		case reflect.Bool:
			v.SetBool(!v.Bool())
		default:
			t.Fatalf("field %s of kind %s: teach this test about it", f.Name, v.Kind())
		}
		d := a.Diff(c)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if len(d) != 1 || !strings.HasPrefix(d[0], name+": ") || name == "" {
			t.Errorf("changing %s: got %q", f.Name, d)
		}
	}
}

func TestValidateBounds(t *testing.T) {
	base, _ := Preset("moe-micro")
	tests := []struct {
		name string
		edit func(c *Config)
		want string // "" when valid
	}{
		{"preset", func(c *Config) {}, ""},
		{"moe-small", func(c *Config) { *c, _ = Preset("moe-small") }, ""},
		{"at the layer bound", func(c *Config) { c.Layers = MaxLayers }, ""},
		{"at the context bound", func(c *Config) { c.MaxSeq = MaxContext }, ""},
		{"10^12 parameters", func(c *Config) { c.DModel, c.ExpertHidden, c.Experts = 1<<14, 1<<14, 1<<10 },
			"model config: 1.651e+12 parameters exceed the limit of 1073741824 (moe.MaxParams)"},
		{"just over MaxParams", func(c *Config) { c.Vocab = MaxParams/c.DModel + 1 }, "parameters exceed the limit of 1073741824"},
		{"dims whose product overflows int64", func(c *Config) { c.DModel, c.Heads, c.ExpertHidden, c.Experts = 1<<40, 2, 1<<40, 1<<40 },
			"parameters exceed the limit"},
		{"too deep", func(c *Config) { c.Layers = MaxLayers + 1 }, "model config: layers 1025 exceeds the limit of 1024"},
		{"too long a context", func(c *Config) { c.MaxSeq = MaxContext + 1 }, "model config: max_seq 65537 exceeds the limit of 65536"},
		{"NaN rope_theta", func(c *Config) { c.RopeTheta = math.NaN() }, "rope_theta must be finite and > 1, got NaN"},
		{"infinite rope_theta", func(c *Config) { c.RopeTheta = math.Inf(1) }, "rope_theta must be finite and > 1, got +Inf"},
		{"NaN norm_eps", func(c *Config) { c.NormEps = math.NaN() }, "norm_eps and init_std must be positive"},
		{"infinite init_std", func(c *Config) { c.InitStd = math.Inf(1) }, "norm_eps and init_std must be positive"},
		{"NaN aux_loss_coef", func(c *Config) { c.AuxLossCoef = math.NaN() }, "aux_loss_coef non-negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.edit(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestParamCount: the bound is checked on the count the layout really
// makes.
func TestParamCount(t *testing.T) {
	var cfgs []Config
	for _, n := range PresetNames() {
		c, _ := Preset(n)
		cfgs = append(cfgs, c)
	}
	for _, dense := range []bool{false, true} {
		c := tinyConfig(dense)
		cfgs = append(cfgs, c)
		c.ValueHead = true
		cfgs = append(cfgs, c)
	}
	for _, c := range cfgs {
		if got, want := c.paramCount(), newLayout(c).total; got != float64(want) {
			t.Errorf("%+v: paramCount %v, layout %d", c, got, want)
		}
	}
}
