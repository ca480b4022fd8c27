package moe

import (
	"math"

	"github.com/moerl/moerl/engine"
)

// layerActs are the activations one layer saves for its backward.
type layerActs struct {
	h1, rstd1        *engine.Tensor // attention pre-norm
	q, k, v          *engine.Tensor // projections (q, k before their norms)
	qr, kr           *engine.Tensor // q, k after head norm and RoPE
	rstdq, rstdk     *engine.Tensor
	att, lse         *engine.Tensor // attention output (before Wo) and its log-sum-exp
	x2               *engine.Tensor // residual after attention
	h2, rstd2        *engine.Tensor // FFN pre-norm
	rlogits, probs   *engine.Tensor // router
	weights, experts *engine.Tensor
	perm, inv        *engine.Tensor
	offsets          []int
	xp, g, u, s, y   *engine.Tensor // expert inputs (sorted by expert), gate, up, SwiGLU, outputs
}

// Acts is the workspace of one forward pass (and its backward) over a batch
// of B sequences of T tokens, or over B single tokens of a decode step.
// Reuse one Acts across steps of the same shape: it allocates once.
type Acts struct {
	B, T, N  int
	ids      *engine.Tensor // N token ids
	targets  *engine.Tensor // N next-token ids
	pos      *engine.Tensor // N positions
	x        []*engine.Tensor
	layers   []layerActs
	hf, rstf *engine.Tensor
	logits   *engine.Tensor
	logp     *engine.Tensor
	lse      *engine.Tensor
	ent      *engine.Tensor
	invTemp  float32

	// backward scratch, shared across layers
	dres, dh, dq, dk, dv, da *engine.Tensor
	dxp, dg, du, ds, dy      *engine.Tensor
	dweights, drl, dprobs    *engine.Tensor
	dlogits, dlogp           *engine.Tensor
	hostLogp, hostEnt        []float32
	hostProbs                []float32
}

// NewActs allocates a workspace for batches of B sequences of T tokens.
func (m *Model) NewActs(B, T int) *Acts {
	c, be := m.Cfg, m.be
	N, d, h, E, K := B*T, c.DModel, c.ExpertHidden, c.NumExperts(), c.K()
	f := be.NewF32
	a := &Acts{B: B, T: T, N: N, ids: be.NewI32(N), targets: be.NewI32(N), pos: be.NewI32(N),
		hf: f(N, d), rstf: f(N), logits: f(N, c.Vocab), logp: f(N), lse: f(N), ent: f(N),
		dres: f(N, d), dh: f(N, d), dq: f(N, d), dk: f(N, d), dv: f(N, d), da: f(N, d),
		dxp: f(N*K, d), dg: f(N*K, h), du: f(N*K, h), ds: f(N*K, h), dy: f(N*K, d),
		dweights: f(N, K), drl: f(N, E), dprobs: f(N, E),
		dlogits: f(N, c.Vocab), dlogp: f(N),
		hostLogp: make([]float32, N), hostEnt: make([]float32, N), hostProbs: make([]float32, N*E)}
	for l := 0; l <= c.Layers; l++ {
		a.x = append(a.x, f(N, d))
	}
	a.layers = make([]layerActs, c.Layers)
	for l := range a.layers {
		a.layers[l] = layerActs{
			h1: f(N, d), rstd1: f(N), q: f(N, d), k: f(N, d), v: f(N, d), qr: f(N, d), kr: f(N, d),
			rstdq: f(N * c.Heads), rstdk: f(N * c.Heads), att: f(N, d), lse: f(N * c.Heads),
			x2: f(N, d), h2: f(N, d), rstd2: f(N),
			rlogits: f(N, E), probs: f(N, E), weights: f(N, K), experts: be.NewI32(N, K),
			perm: be.NewI32(N * K), inv: be.NewI32(N * K), offsets: make([]int, E+1),
			xp: f(N*K, d), g: f(N*K, h), u: f(N*K, h), s: f(N*K, h), y: f(N*K, d),
		}
	}
	return a
}

// Free releases the workspace's backend memory.
func (a *Acts) Free(be engine.Backend) {
	for _, t := range a.tensors() {
		be.Free(t)
	}
}

func (a *Acts) tensors() []*engine.Tensor {
	ts := []*engine.Tensor{a.ids, a.targets, a.pos, a.hf, a.rstf, a.logits, a.logp, a.lse, a.ent,
		a.dres, a.dh, a.dq, a.dk, a.dv, a.da, a.dxp, a.dg, a.du, a.ds, a.dy, a.dweights, a.drl, a.dprobs, a.dlogits, a.dlogp}
	ts = append(ts, a.x...)
	for _, l := range a.layers {
		ts = append(ts, l.h1, l.rstd1, l.q, l.k, l.v, l.qr, l.kr, l.rstdq, l.rstdk, l.att, l.lse, l.x2, l.h2, l.rstd2,
			l.rlogits, l.probs, l.weights, l.experts, l.perm, l.inv, l.xp, l.g, l.u, l.s, l.y)
	}
	return ts
}

// ForwardOptions selects what a forward pass computes besides log-probs.
type ForwardOptions struct {
	Temperature float64 // logits are divided by it (0 or 1: unchanged)
	Entropy     bool    // also compute per-token entropy (Acts.Entropy)
}

// Forward runs the model over a.B sequences of a.T tokens (ids, row-major)
// and returns, for each position, log π(targets[i] | ids[..i]) — or, for a
// model with a value head, the value V of the position (targets unused) —
// in host memory owned by a, valid until the next Forward. Sequences start at
// position 0; right padding does not disturb earlier tokens (attention is
// causal), and its log-probs are simply ignored by the caller.
func (m *Model) Forward(a *Acts, ids, targets []int32, o ForwardOptions) []float32 {
	be := m.be
	be.UploadI32(a.ids, ids)
	be.UploadI32(a.targets, targets)
	pos := make([]int32, a.N)
	for i := range pos {
		pos[i] = int32(i % a.T)
	}
	be.UploadI32(a.pos, pos)
	m.forward(a, nil, true)
	m.head(a, o)
	be.Download(a.hostLogp, a.logp)
	if o.Entropy && !m.Cfg.ValueHead {
		be.Download(a.hostEnt, a.ent)
	}
	return a.hostLogp
}

// Entropy returns the per-token entropies of the last Forward with
// ForwardOptions.Entropy set.
func (a *Acts) Entropy() []float32 { return a.hostEnt }

// forward runs embedding and the layers into a.x[L]. With a cache it is a
// decode step: a.N = a.B single tokens at positions cache.Lens, whose keys
// and values are appended to the cache before attending. aux computes the
// load-balancing loss (training only).
func (m *Model) forward(a *Acts, cache *KVCache, aux bool) {
	c, be := m.Cfg, m.be
	N, d, H, hd, h, K := a.N, c.DModel, c.Heads, c.HeadDim(), c.ExpertHidden, c.K()
	E := c.NumExperts()
	theta, eps := float32(c.RopeTheta), float32(c.NormEps)
	be.Embedding(a.x[0], m.pv[m.lay.embed], a.ids, N, d)
	m.AuxLoss = 0
	for l := range c.Layers {
		w, s, x := &m.lay.layers[l], &a.layers[l], a.x[l]

		// Attention block: pre-norm, projections, head norms, RoPE.
		be.RMSNorm(s.h1, s.rstd1, x, m.pv[w.attnNorm], N, d, eps)
		be.Gemm(false, false, N, d, d, 1, s.h1, 0, d, m.pv[w.wq], 0, d, 0, s.q, 0, d)
		be.Gemm(false, false, N, d, d, 1, s.h1, 0, d, m.pv[w.wk], 0, d, 0, s.k, 0, d)
		be.Gemm(false, false, N, d, d, 1, s.h1, 0, d, m.pv[w.wv], 0, d, 0, s.v, 0, d)
		be.RMSNorm(s.qr, s.rstdq, s.q, m.pv[w.qNorm], N*H, hd, eps)
		be.RMSNorm(s.kr, s.rstdk, s.k, m.pv[w.kNorm], N*H, hd, eps)
		be.RoPE(s.qr, a.pos, N, H, hd, theta)
		be.RoPE(s.kr, a.pos, N, H, hd, theta)
		if cache == nil {
			be.Attention(s.att, s.lse, s.qr, s.kr, s.v, a.B, a.T, H, hd)
		} else {
			be.ScatterRows(cache.K[l], s.kr, cache.slots, N, d)
			be.ScatterRows(cache.V[l], s.v, cache.slots, N, d)
			be.AttentionDecode(s.att, s.qr, cache.K[l], cache.V[l], cache.lens, N, cache.MaxSeq, H, hd)
		}
		// x2 = x + att·Wo
		be.Copy(s.x2, x)
		be.Gemm(false, false, N, d, d, 1, s.att, 0, d, m.pv[w.wo], 0, d, 1, s.x2, 0, d)

		// FFN block: pre-norm, route, experts, combine.
		next := a.x[l+1]
		be.RMSNorm(s.h2, s.rstd2, s.x2, m.pv[w.ffnNorm], N, d, eps)
		be.Copy(next, s.x2)
		if c.DenseFFN {
			be.Gemm(false, false, N, h, d, 1, s.h2, 0, d, m.pv[w.w1], 0, h, 0, s.g, 0, h)
			be.Gemm(false, false, N, h, d, 1, s.h2, 0, d, m.pv[w.w3], 0, h, 0, s.u, 0, h)
			be.SwiGLU(s.s, s.g, s.u, N*h)
			be.Gemm(false, false, N, d, h, 1, s.s, 0, h, m.pv[w.w2], 0, d, 1, next, 0, d)
			continue
		}
		be.Gemm(false, false, N, E, d, 1, s.h2, 0, d, m.pv[w.router], 0, E, 0, s.rlogits, 0, E)
		be.RouterTopK(s.weights, s.experts, s.probs, s.rlogits, N, E, K)
		be.RouterDispatch(s.perm, s.inv, s.offsets, s.experts, N, E, K)
		be.Gather(s.xp, s.h2, s.perm, N*K, d)
		for e := range E {
			r0, n := s.offsets[e], s.offsets[e+1]-s.offsets[e]
			if n == 0 {
				continue
			}
			w1, w3, w2 := e*d*h, e*d*h, e*h*d
			be.Gemm(false, false, n, h, d, 1, s.xp, r0*d, d, m.pv[w.w1], w1, h, 0, s.g, r0*h, h)
			be.Gemm(false, false, n, h, d, 1, s.xp, r0*d, d, m.pv[w.w3], w3, h, 0, s.u, r0*h, h)
			be.SwiGLU(s.s.View(r0*h, n*h), s.g.View(r0*h, n*h), s.u.View(r0*h, n*h), n*h)
			be.Gemm(false, false, n, d, h, 1, s.s, r0*h, h, m.pv[w.w2], w2, d, 0, s.y, r0*d, d)
		}
		be.Combine(next, s.y, s.weights, s.inv, N, K, d)
		if aux {
			m.AuxLoss += m.auxLoss(a, s)
		}
	}
}

// auxLoss is E·Σ_e f_e·P_e for one layer; it also leaves the gradient
// coefficient f_e·E/N per expert in a.dprobs for the backward.
func (m *Model) auxLoss(a *Acts, s *layerActs) float64 {
	E, N, K := m.Cfg.Experts, a.N, m.Cfg.TopK
	m.be.Download(a.hostProbs, s.probs)
	var loss float64
	for e := range E {
		f := float64(s.offsets[e+1]-s.offsets[e]) / float64(N*K)
		var p float64
		for n := range N {
			p += float64(a.hostProbs[n*E+e])
		}
		loss += f * p / float64(N)
	}
	return float64(E) * loss
}

// head applies the final norm and the LM head and computes the log-probs
// (and entropies) of the targets.
func (m *Model) head(a *Acts, o ForwardOptions) {
	c, be := m.Cfg, m.be
	N, d, V := a.N, c.DModel, c.Vocab
	be.RMSNorm(a.hf, a.rstf, a.x[c.Layers], m.pv[m.lay.finalNorm], N, d, float32(c.NormEps))
	if c.ValueHead { // values land in logp's place: one per position
		be.Gemm(false, false, N, 1, d, 1, a.hf, 0, d, m.pv[m.lay.head], 0, 1, 0, a.logp, 0, 1)
		return
	}
	be.Gemm(false, false, N, V, d, 1, a.hf, 0, d, m.pv[m.lay.head], 0, V, 0, a.logits, 0, V)
	a.invTemp = 1
	if o.Temperature > 0 && o.Temperature != 1 {
		a.invTemp = float32(1 / o.Temperature)
		be.Scale(a.logits, N*V, a.invTemp)
	}
	be.TokenLogProbs(a.logp, a.lse, a.logits, a.targets, N, V)
	if o.Entropy {
		be.Entropy(a.ent, a.logits, a.lse, N, V)
	}
}

// Backward accumulates into m.Grads the gradient of L given dL/dout for
// every position of the last Forward on a (out: the log-probs, or the values
// of a value head), plus AuxLossCoef times the load-balancing loss's
// gradient.
func (m *Model) Backward(a *Acts, dlogp []float32) {
	c, be := m.Cfg, m.be
	N, d, H, hd, h, V, K := a.N, c.DModel, c.Heads, c.HeadDim(), c.ExpertHidden, c.Vocab, c.K()
	E := c.NumExperts()
	theta := float32(c.RopeTheta)
	lay := m.lay

	// LM head (or value head) and final norm.
	be.Upload(a.dlogp, dlogp)
	if c.ValueHead {
		be.Gemm(true, false, d, 1, N, 1, a.hf, 0, d, a.dlogp, 0, 1, 1, m.gv[lay.head], 0, 1)
		be.Gemm(false, true, N, d, 1, 1, a.dlogp, 0, 1, m.pv[lay.head], 0, 1, 0, a.dh, 0, d)
	} else {
		be.Zero(a.dlogits)
		be.TokenLogProbsBackward(a.dlogits, a.dlogp, a.logits, a.lse, a.targets, N, V)
		if a.invTemp != 1 {
			be.Scale(a.dlogits, N*V, a.invTemp)
		}
		be.Gemm(true, false, d, V, N, 1, a.hf, 0, d, a.dlogits, 0, V, 1, m.gv[lay.head], 0, V)
		be.Gemm(false, true, N, d, V, 1, a.dlogits, 0, V, m.pv[lay.head], 0, V, 0, a.dh, 0, d)
	}
	be.Zero(a.dres)
	be.RMSNormBackward(a.dres, m.gv[lay.finalNorm], a.dh, a.x[c.Layers], m.pv[lay.finalNorm], a.rstf, N, d)

	// a.dres holds dL/dx of the residual stream; each block adds its branch.
	for l := c.Layers - 1; l >= 0; l-- {
		w, s := &lay.layers[l], &a.layers[l]

		// FFN block.
		be.Zero(a.dh)
		if c.DenseFFN {
			be.Gemm(true, false, h, d, N, 1, s.s, 0, h, a.dres, 0, d, 1, m.gv[w.w2], 0, d)
			be.Gemm(false, true, N, h, d, 1, a.dres, 0, d, m.pv[w.w2], 0, d, 0, a.ds, 0, h)
			be.Zero(a.dg)
			be.Zero(a.du)
			be.SwiGLUBackward(a.dg, a.du, a.ds, s.g, s.u, N*h)
			be.Gemm(true, false, d, h, N, 1, s.h2, 0, d, a.dg, 0, h, 1, m.gv[w.w1], 0, h)
			be.Gemm(true, false, d, h, N, 1, s.h2, 0, d, a.du, 0, h, 1, m.gv[w.w3], 0, h)
			be.Gemm(false, true, N, d, h, 1, a.dg, 0, h, m.pv[w.w1], 0, h, 0, a.dh, 0, d)
			be.Gemm(false, true, N, d, h, 1, a.du, 0, h, m.pv[w.w3], 0, h, 1, a.dh, 0, d)
		} else {
			be.Zero(a.dy)
			be.Zero(a.dweights)
			be.CombineBackward(a.dy, a.dweights, a.dres, s.y, s.weights, s.inv, N, K, d)
			be.Zero(a.dg)
			be.Zero(a.du)
			for e := range E {
				r0, n := s.offsets[e], s.offsets[e+1]-s.offsets[e]
				if n == 0 {
					continue
				}
				w1, w2 := e*d*h, e*h*d
				be.Gemm(true, false, h, d, n, 1, s.s, r0*h, h, a.dy, r0*d, d, 1, m.gv[w.w2], w2, d)
				be.Gemm(false, true, n, h, d, 1, a.dy, r0*d, d, m.pv[w.w2], w2, d, 0, a.ds, r0*h, h)
				be.SwiGLUBackward(a.dg.View(r0*h, n*h), a.du.View(r0*h, n*h), a.ds.View(r0*h, n*h),
					s.g.View(r0*h, n*h), s.u.View(r0*h, n*h), n*h)
				be.Gemm(true, false, d, h, n, 1, s.xp, r0*d, d, a.dg, r0*h, h, 1, m.gv[w.w1], w1, h)
				be.Gemm(true, false, d, h, n, 1, s.xp, r0*d, d, a.du, r0*h, h, 1, m.gv[w.w3], w1, h)
				be.Gemm(false, true, n, d, h, 1, a.dg, r0*h, h, m.pv[w.w1], w1, h, 0, a.dxp, r0*d, d)
				be.Gemm(false, true, n, d, h, 1, a.du, r0*h, h, m.pv[w.w3], w1, h, 1, a.dxp, r0*d, d)
			}
			be.GatherBackward(a.dh, a.dxp, s.inv, N, K, d)
			// Router: through the top-k weights, plus the load-balancing term.
			be.Zero(a.drl)
			be.RouterTopKBackward(a.drl, a.dweights, s.weights, s.experts, s.probs, N, E, K)
			if coef := c.AuxLossCoef; coef > 0 {
				g := make([]float32, N*E)
				for e := range E {
					f := float64(s.offsets[e+1]-s.offsets[e]) / float64(N*K)
					v := float32(coef * float64(E) * f / float64(N))
					for n := range N {
						g[n*E+e] = v
					}
				}
				be.Upload(a.dprobs, g)
				be.SoftmaxBackward(a.drl, a.dprobs, s.probs, N, E)
			}
			be.Gemm(true, false, d, E, N, 1, s.h2, 0, d, a.drl, 0, E, 1, m.gv[w.router], 0, E)
			be.Gemm(false, true, N, d, E, 1, a.drl, 0, E, m.pv[w.router], 0, E, 1, a.dh, 0, d)
		}
		be.RMSNormBackward(a.dres, m.gv[w.ffnNorm], a.dh, s.x2, m.pv[w.ffnNorm], s.rstd2, N, d)

		// Attention block.
		be.Gemm(true, false, d, d, N, 1, s.att, 0, d, a.dres, 0, d, 1, m.gv[w.wo], 0, d)
		be.Gemm(false, true, N, d, d, 1, a.dres, 0, d, m.pv[w.wo], 0, d, 0, a.da, 0, d)
		be.Zero(a.dq)
		be.Zero(a.dk)
		be.Zero(a.dv)
		be.AttentionBackward(a.dq, a.dk, a.dv, a.da, s.qr, s.kr, s.v, s.att, s.lse, a.B, a.T, H, hd)
		be.RoPEBackward(a.dq, a.pos, N, H, hd, theta)
		be.RoPEBackward(a.dk, a.pos, N, H, hd, theta)
		// dq, dk now hold gradients w.r.t. the normed heads; a.dh, reused,
		// collects the pre-norm ones (q then k) in turn.
		be.Zero(a.dh)
		be.RMSNormBackward(a.dh, m.gv[w.qNorm], a.dq, s.q, m.pv[w.qNorm], s.rstdq, N*H, hd)
		be.Gemm(true, false, d, d, N, 1, s.h1, 0, d, a.dh, 0, d, 1, m.gv[w.wq], 0, d)
		be.Gemm(false, true, N, d, d, 1, a.dh, 0, d, m.pv[w.wq], 0, d, 0, a.da, 0, d)
		be.Zero(a.dh)
		be.RMSNormBackward(a.dh, m.gv[w.kNorm], a.dk, s.k, m.pv[w.kNorm], s.rstdk, N*H, hd)
		be.Gemm(true, false, d, d, N, 1, s.h1, 0, d, a.dh, 0, d, 1, m.gv[w.wk], 0, d)
		be.Gemm(false, true, N, d, d, 1, a.dh, 0, d, m.pv[w.wk], 0, d, 1, a.da, 0, d)
		be.Gemm(true, false, d, d, N, 1, s.h1, 0, d, a.dv, 0, d, 1, m.gv[w.wv], 0, d)
		be.Gemm(false, true, N, d, d, 1, a.dv, 0, d, m.pv[w.wv], 0, d, 1, a.da, 0, d)
		// a.da is now dL/dh1.
		be.RMSNormBackward(a.dres, m.gv[w.attnNorm], a.da, a.x[l], m.pv[w.attnNorm], s.rstd1, N, d)
	}
	be.EmbeddingBackward(m.gv[lay.embed], a.dres, a.ids, N, d)
}

func sqrt(x float64) float64 { return math.Sqrt(x) }
