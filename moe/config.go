package moe

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
)

// Config is the shape of a model. Every field has a command-line flag of the
// same name in cmd/moerl.
type Config struct {
	Vocab        int     `json:"vocab" help:"tokens in the vocabulary (at least the tokenizer's)"`
	DModel       int     `json:"d_model" help:"width of the residual stream (a multiple of heads)"`
	Layers       int     `json:"layers" help:"transformer layers"`
	Heads        int     `json:"heads" help:"attention heads"`
	Experts      int     `json:"experts" help:"experts per MoE layer (ignored with dense_ffn)"`                                  // ignored when DenseFFN
	TopK         int     `json:"top_k" help:"experts each token is routed to"`                                                   // experts per token
	ExpertHidden int     `json:"expert_hidden" help:"SwiGLU hidden width of an expert (or of the dense FFN)"`                    // SwiGLU hidden width of an expert (or of the dense FFN)
	DenseFFN     bool    `json:"dense_ffn" help:"one dense SwiGLU FFN per layer instead of a router and experts; true or false"` // one SwiGLU FFN instead of router + experts
	MaxSeq       int     `json:"max_seq" help:"longest sequence in tokens (training context and KV cache)"`                      // longest sequence (training context and KV cache)
	RopeTheta    float64 `json:"rope_theta" help:"RoPE base frequency θ"`
	NormEps      float64 `json:"norm_eps" help:"ε added to the mean square in RMSNorm"`
	InitStd      float64 `json:"init_std" help:"standard deviation of the initial weights"`
	AuxLossCoef  float64 `json:"aux_loss_coef" help:"weight of the load-balancing loss (Switch Transformer); 0 turns it off"` // load-balancing loss weight
	// RouterZLossCoef is c_z of ST-MoE's router z-loss (Zoph et al. 2022,
	// arXiv 2202.08906, eq. 5), c_z·mean_tokens (log Σ_e exp z_e)² per
	// layer, which keeps the router logits small; the paper uses 0.001.
	RouterZLossCoef float64 `json:"router_z_loss_coef" help:"weight c_z of the router z-loss c_z·mean_tokens (log Σ_e exp z_e)² (ST-MoE uses 0.001); 0 turns it off"`
	// ValueHead replaces the LM head by a scalar value head: the model is
	// a critic whose Forward returns V per position (PPO).
	ValueHead bool `json:"value_head" help:"a scalar value head instead of the LM head (a critic or reward model); true or false"`
}

// Presets are the model configurations of BENCH.md.
var Presets = map[string]Config{
	"moe-micro": {Vocab: 64, DModel: 128, Layers: 2, Heads: 4, Experts: 4, TopK: 2, ExpertHidden: 256, MaxSeq: 64},
	"moe-tiny":  {Vocab: 128, DModel: 256, Layers: 4, Heads: 4, Experts: 8, TopK: 2, ExpertHidden: 512, MaxSeq: 256},
	"moe-small": {Vocab: 128, DModel: 512, Layers: 8, Heads: 8, Experts: 16, TopK: 2, ExpertHidden: 1024, MaxSeq: 512},
}

func init() {
	for name, c := range Presets {
		c.RopeTheta, c.NormEps, c.InitStd, c.AuxLossCoef = 10000, 1e-6, 0.02, 0.01
		Presets[name] = c
	}
}

// Preset returns a named configuration.
func Preset(name string) (Config, error) {
	c, ok := Presets[name]
	if !ok {
		return Config{}, fmt.Errorf("unknown model preset %q (known: %s)", name, strings.Join(PresetNames(), ", "))
	}
	return c, nil
}

// PresetNames lists the presets, sorted.
func PresetNames() []string {
	var names []string
	for n := range Presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Outputs is the width of the head: Vocab, or 1 for a value head.
func (c Config) Outputs() int {
	if c.ValueHead {
		return 1
	}
	return c.Vocab
}

// HeadDim is DModel/Heads.
func (c Config) HeadDim() int { return c.DModel / c.Heads }

// NumExperts is the number of FFN blocks per layer (1 when dense).
func (c Config) NumExperts() int {
	if c.DenseFFN {
		return 1
	}
	return c.Experts
}

// K is the number of FFN blocks each token uses (1 when dense).
func (c Config) K() int {
	if c.DenseFFN {
		return 1
	}
	return c.TopK
}

// Bounds on a model's size. Validate refuses a configuration beyond them
// before anything is allocated, so that a checkpoint (or a flag) claiming a
// model of 10^12 parameters is an error, not an exhausted machine.
const (
	// MaxParams bounds the number of parameters: 2^30, about 5 times
	// moe-small (210M). Training holds four buffers of that many float32
	// (weights, gradients, two AdamW moments): 16 GiB, which the GPU
	// machine (139 GiB) holds with room for activations; loading its
	// checkpoint on the host takes about as much again.
	MaxParams = 1 << 30
	// MaxLayers bounds the depth, and with it the checkpoint's index (12
	// tensors a layer): 1024 layers are about 1.1 MB of header, well under
	// the format's 4 MiB.
	MaxLayers = 1024
	// MaxContext bounds max_seq, which sizes the KV cache (batch × max_seq ×
	// d_model floats per layer) and the int32 cache slots.
	MaxContext = 1 << 16
)

// Validate reports the first field that makes no model, naming it, or a
// model larger than MaxParams, MaxLayers or MaxContext allow.
func (c Config) Validate() error {
	pos := []struct {
		name string
		v    int
	}{{"vocab", c.Vocab}, {"d_model", c.DModel}, {"layers", c.Layers}, {"heads", c.Heads},
		{"expert_hidden", c.ExpertHidden}, {"max_seq", c.MaxSeq}}
	for _, p := range pos {
		if p.v <= 0 {
			return fmt.Errorf("model config: %s must be positive, got %d", p.name, p.v)
		}
	}
	if c.Layers > MaxLayers {
		return fmt.Errorf("model config: layers %d exceeds the limit of %d", c.Layers, MaxLayers)
	}
	if c.MaxSeq > MaxContext {
		return fmt.Errorf("model config: max_seq %d exceeds the limit of %d", c.MaxSeq, MaxContext)
	}
	if c.DModel%c.Heads != 0 {
		return fmt.Errorf("model config: d_model %d is not a multiple of heads %d", c.DModel, c.Heads)
	}
	if c.HeadDim()%2 != 0 {
		return fmt.Errorf("model config: head dim d_model/heads = %d must be even for RoPE", c.HeadDim())
	}
	if !c.DenseFFN {
		if c.Experts <= 0 {
			return fmt.Errorf("model config: experts must be positive, got %d", c.Experts)
		}
		if c.TopK <= 0 || c.TopK > c.Experts {
			return fmt.Errorf("model config: top_k must be in [1, experts=%d], got %d", c.Experts, c.TopK)
		}
	}
	// Counted in float64, which cannot overflow here and is exact far
	// beyond the bound.
	if n := c.paramCount(); n > MaxParams {
		return fmt.Errorf("model config: %.4g parameters exceed the limit of %d (moe.MaxParams)", n, MaxParams)
	}
	// The negated comparisons also refuse NaN.
	if !(c.RopeTheta > 1) || math.IsInf(c.RopeTheta, 0) {
		return fmt.Errorf("model config: rope_theta must be finite and > 1, got %g", c.RopeTheta)
	}
	if !(c.RouterZLossCoef >= 0) || math.IsInf(c.RouterZLossCoef, 0) {
		return fmt.Errorf("model config: router_z_loss_coef must be finite and non-negative, got %g", c.RouterZLossCoef)
	}
	if !(c.NormEps > 0) || !(c.InitStd > 0) || !(c.AuxLossCoef >= 0) ||
		math.IsInf(c.NormEps, 0) || math.IsInf(c.InitStd, 0) || math.IsInf(c.AuxLossCoef, 0) {
		return fmt.Errorf("model config: norm_eps and init_std must be positive and aux_loss_coef non-negative, all finite (got %g, %g, %g)", c.NormEps, c.InitStd, c.AuxLossCoef)
	}
	return nil
}

// paramCount is the number of parameters newLayout lays out, in float64 so
// that it can be computed for any configuration whose fields are positive.
func (c Config) paramCount() float64 {
	d, hd, h, e := float64(c.DModel), float64(c.HeadDim()), float64(c.ExpertHidden), float64(c.NumExperts())
	layer := 4*d*d + 3*e*d*h + 2*d + 2*hd
	if !c.DenseFFN {
		layer += d * e
	}
	return float64(c.Vocab)*d + float64(c.Layers)*layer + d*float64(c.Outputs()) + d
}

// Diff lists the fields in which c and o differ, in declaration order, each
// as "name: c's value → o's value" with the field's JSON name, so that a
// caller can say why a checkpoint does not match the settings ("d_model:
// 128 → 64"). It is empty when the configurations are equal.
func (c Config) Diff(o Config) []string {
	var out []string
	a, b := reflect.ValueOf(c), reflect.ValueOf(o)
	for i := range a.NumField() {
		// Compared as printed: distinct values print differently (the
		// shortest representation of a float is unique), and a NaN equals
		// itself.
		x, y := fmt.Sprint(a.Field(i).Interface()), fmt.Sprint(b.Field(i).Interface())
		if x == y {
			continue
		}
		name, _, _ := strings.Cut(a.Type().Field(i).Tag.Get("json"), ",")
		out = append(out, name+": "+x+" → "+y)
	}
	return out
}

// ActiveParams is the number of parameters one token uses (BENCH.md's
// N_active: embeddings excluded, the LM head included, top-k experts).
func (c Config) ActiveParams() int {
	d, h := c.DModel, c.ExpertHidden
	attn := 4*d*d + 2*d + 2*c.HeadDim()
	ffn := c.K() * 3 * d * h
	if !c.DenseFFN {
		ffn += d * c.Experts
	}
	return c.Layers*(attn+ffn) + d + d*c.Outputs()
}

// FLOPsPerToken is BENCH.md's training cost per token for context length t:
// 6·N_active + 12·layers·d_model·t.
func (c Config) FLOPsPerToken(t int) float64 {
	return 6*float64(c.ActiveParams()) + 12*float64(c.Layers*c.DModel*t)
}
