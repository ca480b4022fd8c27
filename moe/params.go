package moe

import (
	"math"
	"strconv"

	"github.com/moerl/moerl/engine"
)

// Param is one named parameter: a slice [Off, Off+Len) of the model's flat
// parameter buffer.
type Param struct {
	Name  string
	Shape []int
	Off   int
	Decay bool // AdamW weight decay applies (matrices yes; norms no)
	std   float64
	ones  bool // initialised to 1 (norm gains)
}

// Len is the number of elements.
func (p *Param) Len() int { return engine.Numel(p.Shape) }

// layerParams indexes one layer's parameters in Model.Params.
type layerParams struct {
	attnNorm, wq, wk, wv, qNorm, kNorm, wo *Param
	ffnNorm, router, w1, w3, w2            *Param // router is nil when dense
}

// layout lists every parameter in buffer order. Decayed matrices come first
// and norm gains last, so each AdamW group is one contiguous range.
type layout struct {
	params    []*Param
	embed     *Param
	layers    []layerParams
	finalNorm *Param
	head      *Param
	nDecay    int // elements [0, nDecay) take weight decay
	total     int
}

func newLayout(c Config) *layout {
	d, hd, h, e := c.DModel, c.HeadDim(), c.ExpertHidden, c.NumExperts()
	std := c.InitStd
	// Residual-branch outputs are scaled down with depth (GPT-2's 1/sqrt(2L))
	// so the residual stream's variance stays near 1 at init.
	outStd := std / math.Sqrt(2*float64(c.Layers))
	l := &layout{layers: make([]layerParams, c.Layers)}
	add := func(name string, decay bool, std float64, ones bool, shape ...int) *Param {
		p := &Param{Name: name, Shape: shape, Decay: decay, std: std, ones: ones}
		l.params = append(l.params, p)
		return p
	}
	l.embed = add("embed", true, std, false, c.Vocab, d)
	for i := range l.layers {
		lp := &l.layers[i]
		pre := "layer" + strconv.Itoa(i) + "."
		// wq, wk and wv stay one after another: the forward multiplies by
		// all three in one batched product (moe/forward.go).
		lp.wq = add(pre+"wq", true, std, false, d, d)
		lp.wk = add(pre+"wk", true, std, false, d, d)
		lp.wv = add(pre+"wv", true, std, false, d, d)
		lp.wo = add(pre+"wo", true, outStd, false, d, d)
		if !c.DenseFFN {
			lp.router = add(pre+"router", true, std, false, d, e)
		}
		lp.w1 = add(pre+"w1", true, std, false, e, d, h)
		lp.w3 = add(pre+"w3", true, std, false, e, d, h)
		lp.w2 = add(pre+"w2", true, outStd, false, e, h, d)
	}
	l.head = add("head", true, std, false, d, c.Outputs())
	for i := range l.layers {
		lp := &l.layers[i]
		pre := "layer" + strconv.Itoa(i) + "."
		lp.attnNorm = add(pre+"attn_norm", false, 0, true, d)
		lp.qNorm = add(pre+"q_norm", false, 0, true, hd)
		lp.kNorm = add(pre+"k_norm", false, 0, true, hd)
		lp.ffnNorm = add(pre+"ffn_norm", false, 0, true, d)
	}
	l.finalNorm = add("final_norm", false, 0, true, d)
	for _, p := range l.params {
		p.Off = l.total
		l.total += p.Len()
		if p.Decay {
			l.nDecay = l.total
		}
	}
	return l
}

// init fills a host buffer with the seeded initial values.
func (l *layout) init(buf []float32, rng *engine.RNG) {
	for _, p := range l.params {
		w := buf[p.Off : p.Off+p.Len()]
		for i := range w {
			if p.ones {
				w[i] = 1
			} else {
				w[i] = rng.Normal32(float32(p.std))
			}
		}
	}
}
