package moe

import (
	"fmt"
	"math"

	"github.com/moerl/moerl/engine"
)

// ForwardError is the error for a loss that is not finite after the
// forward pass over workspace a: it names the first weight that is not
// finite (usually the cause), or, when every weight is finite, the first
// activation in forward order that holds NaN or ±Inf — where the forward
// pass overflowed — with its layer.
func (m *Model) ForwardError(a *Acts, loss float64) error {
	if err := m.CheckWeights(); err != nil {
		return fmt.Errorf("loss is %v: %w", loss, err)
	}
	for _, x := range m.forwardActs(a) {
		host := make([]float32, x.t.Len())
		m.be.Download(host, x.t)
		for i, v := range host {
			if f := float64(v); math.IsNaN(f) || math.IsInf(f, 0) {
				return &NonFiniteError{What: fmt.Sprintf("loss (%v): every weight is finite; the forward pass overflowed: activation", loss),
					Tensor: x.name, Layer: x.layer, Index: i, Value: v}
			}
		}
	}
	return &NonFiniteError{What: fmt.Sprintf("loss (%v)", loss), Layer: -1}
}

// namedAct is an activation of the forward pass with its name.
type namedAct struct {
	name  string
	layer int
	t     *engine.Tensor
}

// forwardActs lists a workspace's activations in the order the forward
// pass writes them: each layer's residual input, attention and FFN
// intermediates, then the head's. Expert buffers are left out: they are
// sized for every routing slot, not only those a batch fills.
func (m *Model) forwardActs(a *Acts) []namedAct {
	var out []namedAct
	for l, s := range a.layers {
		name := func(n string) string { return fmt.Sprintf("layer%d.%s", l, n) }
		out = append(out, namedAct{name("input"), l, a.x[l]}, namedAct{name("attn_norm"), l, s.h1},
			namedAct{name("q"), l, s.q}, namedAct{name("k"), l, s.k}, namedAct{name("v"), l, s.v},
			namedAct{name("attention"), l, s.att}, namedAct{name("after_attention"), l, s.x2},
			namedAct{name("ffn_norm"), l, s.h2})
		if !m.Cfg.DenseFFN {
			out = append(out, namedAct{name("router_logits"), l, s.rlogits}, namedAct{name("router_probs"), l, s.probs})
		}
	}
	L := len(a.layers)
	return append(out, namedAct{"output", -1, a.x[L]}, namedAct{"final_norm", -1, a.hf}, namedAct{"logits", -1, a.logits})
}
