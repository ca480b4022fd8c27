package moe

import (
	"fmt"
	"math"

	"github.com/moerl/moerl/engine"
)

// layerActs are the activations one layer saves for its backward.
type layerActs struct {
	h1, rstd1        *engine.Tensor // attention pre-norm
	qkv              *engine.Tensor // q, k and v one after another: one batched product writes them
	q, k, v          *engine.Tensor // projections (q, k before their norms), views of qkv
	qr, kr           *engine.Tensor // q, k after head norm and RoPE
	rstdq, rstdk     *engine.Tensor
	att, lse         *engine.Tensor // attention output (before Wo) and its log-sum-exp
	x2               *engine.Tensor // residual after attention
	h2, rstd2        *engine.Tensor // FFN pre-norm
	rlogits, probs   *engine.Tensor // router
	weights, experts *engine.Tensor
	replay           *engine.Tensor // experts to replay (ForwardOptions.Replay)
	perm, inv        *engine.Tensor
	offsets          *engine.Tensor // nExperts+1: each expert's first sorted slot
	g, u, s, y       *engine.Tensor // per slot (sorted by expert): gate, up, SwiGLU, expert outputs
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
	// replaying: the last Forward routed by ForwardOptions.Replay;
	// entropy: it computed the entropies (ForwardOptions.Entropy);
	// gradAhead: it was given dL/dout (ForwardOptions.DLogp), so dlogp
	// (and, under an LM head, dlogits) already hold the head's gradient.
	replaying, entropy, gradAhead bool
	// zlse holds, per layer, each token's log Σ_e exp(z_e) of the router
	// logits from the last Forward, for the z-loss's backward (nil when
	// the z-loss is off).
	zlse [][]float64

	// backward scratch, shared across layers; nil in a forward-only
	// workspace (the sampler's)
	dres, dh, dq, dk, dv, da *engine.Tensor
	// dqkv holds the gradients of q, k (before their norms) and v, in qkv's
	// layout, for one batched product of the three weight gradients; dqp,
	// dkp and dv are its views.
	dqkv, dqp, dkp        *engine.Tensor
	dxp, dg, du, ds, dy   *engine.Tensor
	dweights, drl, dprobs *engine.Tensor
	dlogits, dlogp, dent  *engine.Tensor

	// w16, when set (on a backend whose GEMMs multiply in bf16), is the
	// model's bf16 copy of the parameters (Model.w16), which the experts'
	// products read instead of the fp32 ones, forward and backward: half
	// the bytes, the same products, because those GEMMs round their inputs
	// to bf16 anyway.
	w16 *engine.Tensor
	// gemmIn is the dtype of the tensors that only the experts' grouped
	// products read (their SwiGLU output, and the gradients dy, dgate and
	// dup): BF16 where those products round their inputs to it
	// (engine.GEMMInput), for the reason w16 is; else, and in a dense FFN,
	// whose products may be cuBLAS's, F32. gateIn is the dtype of the
	// experts' gate and up values a training workspace keeps for the
	// backward: BF16 where gemmIn is and the backend stores activations in
	// it (engine.ActivationStorage), which rounds what the backward reads;
	// else F32.
	gemmIn, gateIn engine.DType

	hostPos           []int32
	hostLogp, hostEnt []float32
	hostProbs         []float32
	// load holds, per layer, RouterLoad's slot count and probability sum
	// per expert (Layers × 2·nExperts), fetched in one copy per Forward
	// into hostLoad for the load-balancing loss and its gradient.
	load     *engine.Tensor
	hostLoad []float32
	// auxCoef holds, per layer, the load-balancing loss's gradient with
	// respect to each expert's probability (Layers × nExperts), uploaded
	// before the backward; zeroIdx (one 0 per token) spreads a layer's
	// row of it to every token with Gather, so the backward needs no
	// upload between its ops.
	auxCoef, zeroIdx *engine.Tensor
	hostAuxCoef      []float32
	// steps holds the recorded forward and backward (graph.go), keyed by
	// what their ops bake in.
	steps    graphs
	cfg      Config
	backward bool
}

// act is one backend tensor of a workspace: the field that holds it and its
// size, tokens × width, or width alone when whole. A field with an alias
// holds the tensor of the alias field (allocated before it in the list)
// and owns nothing.
type act struct {
	t     **engine.Tensor
	dtype engine.DType
	width int
	whole bool
	alias **engine.Tensor
}

// acts is the one list of a workspace's backend tensors, in a fixed order:
// allocating (NewActs), freeing (Free), taking views of a larger workspace
// (view) and listing (tensors) all walk it, so a tensor added here is
// allocated, freed and listed alike. Every tensor holds a whole number of
// elements per token, except the whole ones, whose size does not depend on
// the tokens (a view shares them).
func (a *Acts) acts() []act {
	c := a.cfg
	d, h, V, E, K, H := c.DModel, c.ExpertHidden, c.Vocab, c.NumExperts(), c.K(), c.Heads
	f := func(t **engine.Tensor, width int) act { return act{t: t, dtype: engine.F32, width: width} }
	i := func(t **engine.Tensor, width int) act { return act{t: t, dtype: engine.I32, width: width} }
	// g is a tensor that only the experts' grouped products read: stored
	// in a.gemmIn (see Acts).
	g := func(t **engine.Tensor, width int) act { return act{t: t, dtype: a.gemmIn, width: width} }
	l := []act{i(&a.ids, 1), i(&a.targets, 1), i(&a.pos, 1),
		f(&a.hf, d), f(&a.rstf, 1), f(&a.logits, V), f(&a.logp, 1), f(&a.lse, 1), f(&a.ent, 1),
		{t: &a.load, dtype: engine.F32, width: len(a.layers) * 2 * E, whole: true},
		{t: &a.auxCoef, dtype: engine.F32, width: len(a.layers) * E, whole: true},
		i(&a.zeroIdx, 1)}
	for j := range a.x { // every layer's, so that a test can find where two passes part
		l = append(l, f(&a.x[j], d))
	}
	// A forward-only workspace (the sampler's) needs a layer's activations
	// only while the layer runs (the keys and values go into the KV cache
	// inside it): its layers after the first lay them over the first's
	// tensors, so the prefill's workspace shrinks to about one layer's.
	// What is read after the forward keeps a tensor per layer: the experts
	// (routing is recorded from them) and the replayed experts (uploaded
	// before the forward). The experts' gate and up values it does not keep
	// at all: only the backward reads them.
	var first []act
	for j := range a.layers {
		s := &a.layers[j]
		la := []act{f(&s.h1, d), f(&s.rstd1, 1), f(&s.qkv, 3*d), f(&s.qr, d), f(&s.kr, d),
			f(&s.rstdq, H), f(&s.rstdk, H), f(&s.att, d), f(&s.lse, H), f(&s.x2, d), f(&s.h2, d), f(&s.rstd2, 1),
			f(&s.rlogits, E), f(&s.probs, E), f(&s.weights, K), i(&s.experts, K), i(&s.replay, K), i(&s.perm, K), i(&s.inv, K),
			{t: &s.offsets, dtype: engine.I32, width: E + 1, whole: true}, g(&s.s, K*h), f(&s.y, K*d)}
		if a.backward || c.DenseFFN { // a dense FFN's SwiGLU reads them in the forward too
			la = append(la, act{t: &s.g, dtype: a.gateIn, width: K * h}, act{t: &s.u, dtype: a.gateIn, width: K * h})
		}
		if j == 0 {
			first = la
		} else if !a.backward {
			for k := range la {
				if t := la[k].t; t != &s.experts && t != &s.replay {
					la[k].alias = first[k].t
				}
			}
		}
		l = append(l, la...)
	}
	if a.backward {
		l = append(l, f(&a.dres, d), f(&a.dh, d), f(&a.dq, d), f(&a.dk, d), f(&a.dqkv, 3*d), f(&a.da, d),
			f(&a.dxp, K*d), g(&a.dg, K*h), g(&a.du, K*h), f(&a.ds, h), g(&a.dy, K*d),
			f(&a.dweights, K), f(&a.drl, E), f(&a.dprobs, E), f(&a.dlogits, V), f(&a.dlogp, 1), f(&a.dent, 1))
	}
	return l
}

// NewActs allocates a workspace for batches of B sequences of T tokens.
func (m *Model) NewActs(B, T int) *Acts { return m.newActs(B, T, true) }

// newActs allocates a workspace, with the backward's scratch or without it
// (a forward-only workspace cannot run Backward).
func (m *Model) newActs(B, T int, backward bool) *Acts {
	a := m.actsShell(B, T, backward)
	for _, t := range a.acts() {
		if t.alias != nil {
			*t.t = *t.alias
			continue
		}
		shape := []int{a.N, t.width}
		if t.whole {
			shape = []int{t.width}
		}
		*t.t = m.be.New(t.dtype, shape...)
	}
	a.w16 = m.weights16()
	a.hostPos, a.hostLogp, a.hostEnt = make([]int32, a.N), make([]float32, a.N), make([]float32, a.N)
	a.hostProbs = make([]float32, a.N*m.Cfg.NumExperts())
	a.hostLoad = make([]float32, a.load.Len())
	a.hostAuxCoef = make([]float32, a.auxCoef.Len())
	a.split()
	return a
}

// gemmInput is the dtype a workspace keeps what only the experts' grouped
// products read in (Acts.gemmIn).
func (m *Model) gemmInput() engine.DType {
	if gi, ok := m.be.(engine.GEMMInput); ok && !m.Cfg.DenseFFN {
		return gi.GEMMInputDType()
	}
	return engine.F32
}

// actsShell is a workspace of B×T tokens with no tensors yet.
func (m *Model) actsShell(B, T int, backward bool) *Acts {
	gemmIn, gateIn := m.gemmInput(), engine.F32
	if as, ok := m.be.(engine.ActivationStorage); ok && gemmIn == engine.BF16 && backward {
		gateIn = as.ActivationDType()
	}
	return &Acts{B: B, T: T, N: B * T, cfg: m.Cfg, backward: backward, gemmIn: gemmIn, gateIn: gateIn,
		x: make([]*engine.Tensor, m.Cfg.Layers+1), layers: make([]layerActs, m.Cfg.Layers)}
}

// view is a workspace of B×T tokens over the memory of a, which must hold
// at least B·T tokens: every tensor is the first B·T·width elements of a's.
// Only a is freed; its views must not be used after.
func (m *Model) view(a *Acts, B, T int) *Acts {
	v := m.actsShell(B, T, a.backward)
	src, dst := a.acts(), v.acts()
	for i, t := range dst {
		if t.alias != nil {
			*t.t = *t.alias
			continue
		}
		if t.whole {
			*t.t = *src[i].t
		} else {
			*t.t = (*src[i].t).View(0, v.N, t.width)
		}
	}
	v.hostLoad, v.hostAuxCoef, v.w16 = a.hostLoad, a.hostAuxCoef, a.w16
	v.split()
	N := v.N
	v.hostPos, v.hostLogp, v.hostEnt = a.hostPos[:N], a.hostLogp[:N], a.hostEnt[:N]
	v.hostProbs = a.hostProbs[:N*m.Cfg.NumExperts()]
	return v
}

// split lays the views of q, k and v over qkv (and of their gradients
// over dqkv): three blocks of N×d.
func (a *Acts) split() {
	N, d := a.N, a.cfg.DModel
	for l := range a.layers {
		s := &a.layers[l]
		s.q, s.k, s.v = s.qkv.View(0, N, d), s.qkv.View(N*d, N, d), s.qkv.View(2*N*d, N, d)
	}
	if a.backward {
		a.dqp, a.dkp, a.dv = a.dqkv.View(0, N, d), a.dqkv.View(N*d, N, d), a.dqkv.View(2*N*d, N, d)
	}
}

// Free releases the workspace's backend memory.
func (a *Acts) Free(be engine.Backend) {
	a.steps.close()
	for _, t := range a.tensors() {
		be.Free(t)
	}
}

// tensors lists the workspace's backend tensors, each once.
func (a *Acts) tensors() []*engine.Tensor {
	var ts []*engine.Tensor
	for _, t := range a.acts() {
		if t.alias == nil {
			ts = append(ts, *t.t)
		}
	}
	return ts
}

// ForwardOptions selects what a forward pass computes besides log-probs.
type ForwardOptions struct {
	Temperature float64 // logits are divided by it (0 or 1: unchanged)
	Entropy     bool    // also compute per-token entropy (Acts.Entropy)
	// Replay, when set, routes each token to given experts instead of the
	// router's top k (routing replay, R3: arXiv 2510.11370): for layer l,
	// token n of the B·T and slot j, Replay[(l·B·T + n)·K + j], K = TopK,
	// distinct ids in [0, Experts). The gate weights are the router's
	// softmax over the replayed experts, renormalised as top-k's are, and
	// Backward differentiates through them, so the gradient flows through
	// the experts given. A token whose first id is negative is routed by
	// the router. A dense model ignores it. See Sequence.Routing.
	Replay []int32
	// DLogp, when set, is dL/dout for every position, known before the
	// forward: the supervised cross-entropy's −w_i/count, which does not
	// depend on the log-probs. The LM head then writes the logits'
	// gradient in the pass that computes the log-probs
	// (engine.Backend.TokenLogProbsFused) instead of reading the logits
	// again in the backward, and the Backward that follows is given nil.
	// The gradient is bit for bit that of passing the same dlogp to
	// Backward. Not for a loss computed from the log-probs (RL's).
	DLogp []float32
}

// Forward runs the model over a.B sequences of a.T tokens (ids, row-major)
// and returns, for each position, log π(targets[i] | ids[..i]) — or, for a
// model with a value head, the value V of the position (targets unused) —
// in host memory owned by a, valid until the next Forward. Sequences start at
// position 0; right padding does not disturb earlier tokens (attention is
// causal), and its log-probs are simply ignored by the caller.
func (m *Model) Forward(a *Acts, ids, targets []int32, o ForwardOptions) []float32 {
	be, c := m.be, m.Cfg
	be.UploadI32(a.targets, targets)
	m.upload(a, ids)
	a.replaying = o.Replay != nil && !c.DenseFFN
	if a.replaying {
		NK := a.N * c.K()
		if len(o.Replay) != c.Layers*NK {
			panic(fmt.Sprintf("moe: Forward: %d replayed expert ids for %d layers × %d tokens × top-%d", len(o.Replay), c.Layers, a.N, c.K()))
		}
		for l := range c.Layers {
			be.UploadI32(a.layers[l].replay, o.Replay[l*NK:(l+1)*NK])
		}
	}
	a.gradAhead = o.DLogp != nil
	if a.gradAhead {
		if !a.backward {
			panic("moe: Forward: ForwardOptions.DLogp on a forward-only workspace")
		}
		if len(o.DLogp) != a.N {
			panic(fmt.Sprintf("moe: Forward: %d DLogp values for %d tokens", len(o.DLogp), a.N))
		}
		be.Upload(a.dlogp, o.DLogp)
	}
	m.AuxLoss, m.ZLoss = 0, 0
	pass := func() {
		if a.w16 != nil {
			// The weights may have changed since the last cast (an AdamW
			// step, a copy, a load); the backward reads the copy too.
			be.Cast(a.w16, m.Params, m.lay.total)
		}
		m.forward(a, nil, true, nil)
		m.head(a, o)
	}
	if c.RouterZLossCoef > 0 && !c.DenseFFN {
		pass() // the z-loss reads the router logits on the host, layer by layer
	} else {
		a.steps.run(be, forwardKey{temp: o.Temperature, entropy: o.Entropy, replay: a.replaying, gradAhead: a.gradAhead}, pass)
	}
	if !c.DenseFFN {
		be.Download(a.hostLoad, a.load)
		for l := range c.Layers {
			m.AuxLoss += m.auxLoss(a, l)
		}
	}
	a.entropy = o.Entropy && !c.ValueHead
	be.Download(a.hostLogp, a.logp)
	if a.entropy {
		be.Download(a.hostEnt, a.ent)
	}
	return a.hostLogp
}

// upload sets a's input: a.B sequences of a.T tokens from position 0.
func (m *Model) upload(a *Acts, ids []int32) {
	m.be.UploadI32(a.ids, ids)
	for i := range a.hostPos {
		a.hostPos[i] = int32(i % a.T)
	}
	m.be.UploadI32(a.pos, a.hostPos)
}

// Entropy returns the per-token entropies of the last Forward with
// ForwardOptions.Entropy set.
func (a *Acts) Entropy() []float32 { return a.hostEnt }

// linear computes out = in·w, or out += in·w when add is set (a residual
// branch, or a second gradient term): in is rows×inDim, w inDim×outDim and
// out rows×outDim, row-major.
func (m *Model) linear(out, in, w *engine.Tensor, rows, inDim, outDim int, add bool) {
	m.be.Gemm(false, false, rows, outDim, inDim, 1, in, 0, inDim, w, 0, outDim, beta(add), out, 0, outDim)
}

// linearBackward is linear's backward: dw += inᵀ·dout, and din = dout·wᵀ
// (din += dout·wᵀ when add is set, where din already holds another term).
func (m *Model) linearBackward(din, dw, dout, in, w *engine.Tensor, rows, inDim, outDim int, add bool) {
	m.be.Gemm(true, false, inDim, outDim, rows, 1, in, 0, inDim, dout, 0, outDim, 1, dw, 0, outDim)
	m.be.Gemm(false, true, rows, inDim, outDim, 1, dout, 0, outDim, w, 0, outDim, beta(add), din, 0, inDim)
}

func beta(add bool) float32 {
	if add {
		return 1
	}
	return 0
}

// rowsOf is the view of rows [r0, r0+n) of a matrix t of the given width.
func rowsOf(t *engine.Tensor, r0, n, width int) *engine.Tensor {
	return t.View(r0*width, n*width)
}

// expert is expert e's rows×cols matrix of a stacked expert weight.
func expert(w *engine.Tensor, e, rows, cols int) *engine.Tensor {
	return w.View(e*rows*cols, rows*cols)
}

// forward runs embedding and the layers into a.x[L]. With a cache it is a
// decode step: a.N = a.B single tokens at positions cache.Lens, whose keys
// and values are appended to the cache before attending. With pre it is a
// prefill: each layer's keys and values are copied into pre's caches as
// the layer runs. aux leaves the load-balancing loss's counts and sums in
// a.load for Forward, and adds the router z-loss to m.ZLoss (training
// only).
func (m *Model) forward(a *Acts, cache *KVCache, aux bool, pre *prefillDst) {
	c, be := m.Cfg, m.be
	N, d, H, hd, h, K := a.N, c.DModel, c.Heads, c.HeadDim(), c.ExpertHidden, c.K()
	E := c.NumExperts()
	theta, eps := float32(c.RopeTheta), float32(c.NormEps)
	be.Embedding(a.x[0], m.pv[m.lay.embed], a.ids, N, d)
	zloss := aux && c.RouterZLossCoef > 0 && !c.DenseFFN
	if zloss && len(a.zlse) != c.Layers {
		a.zlse = make([][]float64, c.Layers)
	}
	for l := range c.Layers {
		w, s, x := &m.lay.layers[l], &a.layers[l], a.x[l]

		// Attention block: pre-norm, projections, head norms, RoPE.
		be.RMSNorm(s.h1, s.rstd1, x, m.pv[w.attnNorm], N, d, eps)
		// q, k, v = h1·Wq, h1·Wk, h1·Wv in one batched product: the three
		// weights lie one after another (newLayout) and so do q, k, v.
		be.GemmBatched(false, false, N, d, d, 1, s.h1, 0, d, 0, m.Params, w.wq.Off, d, d*d, 0, s.qkv, 0, d, N*d, 3)
		be.RMSNorm(s.qr, s.rstdq, s.q, m.pv[w.qNorm], N*H, hd, eps)
		be.RMSNorm(s.kr, s.rstdk, s.k, m.pv[w.kNorm], N*H, hd, eps)
		be.RoPE(s.qr, a.pos, N, H, hd, theta)
		be.RoPE(s.kr, a.pos, N, H, hd, theta)
		if cache == nil {
			if pre != nil {
				for _, idx := range pre.idx {
					be.ScatterRows(pre.kv.K[l], s.kr, idx, N, d)
					be.ScatterRows(pre.kv.V[l], s.v, idx, N, d)
				}
			}
			be.Attention(s.att, s.lse, s.qr, s.kr, s.v, a.B, a.T, H, hd)
		} else {
			be.ScatterRows(cache.K[l], s.kr, cache.slots, N, d)
			be.ScatterRows(cache.V[l], s.v, cache.slots, N, d)
			be.AttentionDecode(s.att, s.qr, cache.K[l], cache.V[l], cache.lens, N, cache.MaxSeq, H, hd)
		}
		// x2 = x + att·Wo and h2 = RMSNorm(x2): the product lands in x2 and
		// the norm's pass adds the residual in place, so x is not copied
		// first and x2 is read once. (On the CPU, a product accumulated into
		// a copy of x, Gemm's beta = 1, would round the same only while
		// d_model fits one of Gemm's k blocks, 256.)
		m.linear(s.x2, s.att, m.pv[w.wo], N, d, d, false)
		be.ResidualRMSNorm(s.x2, s.h2, s.rstd2, x, s.x2, m.pv[w.ffnNorm], N, d, eps)

		// FFN block on h2: route, experts, combine.
		next := a.x[l+1]
		be.Copy(next, s.x2)
		if c.DenseFFN {
			// next += W2(silu(h2·W1) ⊙ h2·W3)
			m.linear(s.g, s.h2, m.pv[w.w1], N, d, h, false)
			m.linear(s.u, s.h2, m.pv[w.w3], N, d, h, false)
			be.SwiGLU(s.s, s.g, s.u, N*h)
			m.linear(next, s.s, m.pv[w.w2], N, h, d, true)
			continue
		}
		m.linear(s.rlogits, s.h2, m.pv[w.router], N, d, E, false)
		be.RouterTopK(s.weights, s.experts, s.probs, s.rlogits, N, E, K)
		if cache == nil && a.replaying {
			be.RouterReplay(s.weights, s.experts, s.probs, s.replay, N, E, K)
		}
		if zloss {
			m.ZLoss += m.zLoss(a, s, l)
		}
		// Each expert's slots are a block of the sorted rows, given by the
		// offsets on the backend; every expert runs in one grouped product
		// per projection: y = W2_e(silu(xp·W1_e) ⊙ xp·W3_e), the first
		// two projections and the SwiGLU in one call, with xp the rows of
		// h2 in slot order, read through perm rather than copied.
		be.RouterDispatch(s.perm, s.inv, s.offsets, s.experts, N, E, K)
		w1, w3, w2 := a.expertWeights(m, w)
		be.GemmGroupedSwiGLU(N*K, h, d, s.h2, s.perm, w1, w3, d*h, s.g, s.u, s.s, s.offsets, E)
		be.GemmGrouped(false, N*K, d, h, s.s, w2, h*d, 0, s.y, s.offsets, E)
		be.Combine(next, s.y, s.weights, s.inv, N, K, d)
		if aux {
			be.RouterLoad(a.load.View(l*2*E, 2*E), s.probs, s.offsets, N, E)
		}
	}
}

// expertWeights returns the experts' weights that layer w's forward and
// backward read: the parameters, or their bf16 copy in a.w16.
func (a *Acts) expertWeights(m *Model, w *layerParams) (w1, w3, w2 *engine.Tensor) {
	if a.w16 == nil {
		return m.pv[w.w1], m.pv[w.w3], m.pv[w.w2]
	}
	v := func(p *Param) *engine.Tensor { return a.w16.View(p.Off, p.Shape...) }
	return v(w.w1), v(w.w3), v(w.w2)
}

// auxLoss is E·Σ_e f_e·P_e for layer l, f_e its share of the slots and P_e
// the mean router probability, from a.hostLoad.
func (m *Model) auxLoss(a *Acts, l int) float64 {
	E, N, K := m.Cfg.Experts, a.N, m.Cfg.TopK
	load := a.hostLoad[l*2*E : (l+1)*2*E]
	var loss float64
	for e := range E {
		f := float64(load[e]) / float64(N*K)
		loss += f * float64(load[E+e]) / float64(N)
	}
	return float64(E) * loss
}

// zLoss is ST-MoE's router z-loss of one layer, mean_n (log Σ_e exp z_ne)²
// over the a.N tokens; it keeps each token's log-sum-exp in a.zlse[l] for
// the backward.
func (m *Model) zLoss(a *Acts, s *layerActs, l int) float64 {
	E, N := m.Cfg.Experts, a.N
	z := a.hostProbs[:N*E] // scratch of N×E floats; auxLoss downloads the probabilities after
	m.be.Download(z, s.rlogits)
	if len(a.zlse[l]) != N {
		a.zlse[l] = make([]float64, N)
	}
	var loss float64
	for n := range N {
		row := z[n*E : (n+1)*E]
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, float64(v))
		}
		var sum float64
		for _, v := range row {
			sum += math.Exp(float64(v) - mx)
		}
		lse := mx + math.Log(sum)
		a.zlse[l][n] = lse
		loss += lse * lse
	}
	return loss / float64(N)
}

// head applies the final norm and the LM head and computes the log-probs
// (and entropies) of the targets, and with a gradient given ahead the
// logits' gradient too.
func (m *Model) head(a *Acts, o ForwardOptions) {
	c, be := m.Cfg, m.be
	N, d, V := a.N, c.DModel, c.Vocab
	if c.ValueHead { // values land in logp's place: one per position
		be.RMSNorm(a.hf, a.rstf, a.x[c.Layers], m.pv[m.lay.finalNorm], N, d, float32(c.NormEps))
		m.linear(a.logp, a.hf, m.pv[m.lay.head], N, d, 1, false)
		return
	}
	m.logits(a, a.x[c.Layers], o.Temperature)
	if a.gradAhead {
		be.TokenLogProbsFused(a.logp, a.lse, a.dlogits, a.logits, a.targets, a.dlogp, N, V)
	} else {
		be.TokenLogProbs(a.logp, a.lse, a.logits, a.targets, N, V)
	}
	if o.Entropy {
		be.Entropy(a.ent, a.logits, a.lse, N, V)
	}
}

// logits computes a.logits = head(RMSNorm(x)) / temperature for a.N hidden
// states x (temperature 0 or 1: undivided). It is the one way from a hidden
// state to logits, for the trainer's log-probs and the sampler's draws.
func (m *Model) logits(a *Acts, x *engine.Tensor, temperature float64) {
	c, be := m.Cfg, m.be
	N, d, V := a.N, c.DModel, c.Vocab
	be.RMSNorm(a.hf, a.rstf, x, m.pv[m.lay.finalNorm], N, d, float32(c.NormEps))
	m.linear(a.logits, a.hf, m.pv[m.lay.head], N, d, V, false)
	a.invTemp = 1
	if temperature > 0 && temperature != 1 {
		a.invTemp = float32(1 / temperature)
		be.Scale(a.logits, N*V, a.invTemp)
	}
}

// Backward accumulates into m.Grads the gradient of L given dL/dout for
// every position of the last Forward on a (out: the log-probs, or the values
// of a value head), plus AuxLossCoef times the load-balancing loss's
// gradient and RouterZLossCoef times the router z-loss's. dlogp is nil
// exactly when that Forward was given it (ForwardOptions.DLogp).
func (m *Model) Backward(a *Acts, dlogp []float32) { m.BackwardEntropy(a, dlogp, nil) }

// BackwardEntropy is Backward with, when dent is not nil, a gradient
// dL/dH per position too, H the entropy of the (temperature-scaled)
// next-token distribution that the last Forward computed with
// ForwardOptions.Entropy: the head's backward adds
// dH/dz = −p⊙(log p + H), times 1/T for the unscaled logits (the entropy
// bonus of rl/algo, algo.EntropyBonus).
func (m *Model) BackwardEntropy(a *Acts, dlogp, dent []float32) {
	if !a.backward {
		panic("moe: Backward on a forward-only workspace")
	}
	m.mustTrain("Backward")
	if dent != nil && !a.entropy {
		panic("moe: Backward with an entropy gradient after a Forward without ForwardOptions.Entropy (or of a value head)")
	}
	if (dlogp == nil) != a.gradAhead {
		panic("moe: Backward: give dlogp here or ahead in ForwardOptions.DLogp, exactly one of the two")
	}
	c, be := m.Cfg, m.be
	// The host's part first — the inputs and the load-balancing loss's
	// gradient per layer and expert — so that the rest is device work only,
	// recorded as one graph where the backend can (the z-loss, which reads
	// the router's probabilities on the host, runs op by op).
	if !a.gradAhead {
		be.Upload(a.dlogp, dlogp)
	}
	if dent != nil {
		be.Upload(a.dent, dent)
	}
	E, K := c.NumExperts(), c.K()
	if coef := c.AuxLossCoef; coef > 0 && !c.DenseFFN {
		for l := range c.Layers {
			for e := range E {
				f := float64(a.hostLoad[l*2*E+e]) / float64(a.N*K)
				a.hostAuxCoef[l*E+e] = float32(coef * float64(E) * f / float64(a.N))
			}
		}
		be.Upload(a.auxCoef, a.hostAuxCoef)
	}
	pass := func() { m.backward(a, dent != nil) }
	if c.RouterZLossCoef > 0 && !c.DenseFFN {
		pass()
	} else {
		a.steps.run(be, backwardKey{entropy: dent != nil, invTemp: a.invTemp, gradAhead: a.gradAhead}, pass)
	}
}

// backward is Backward's device work, given its inputs on the backend.
func (m *Model) backward(a *Acts, entropy bool) {
	c, be := m.Cfg, m.be
	N, d, H, hd, h, V, K := a.N, c.DModel, c.Heads, c.HeadDim(), c.ExpertHidden, c.Vocab, c.K()
	E := c.NumExperts()
	theta := float32(c.RopeTheta)
	lay := m.lay

	// LM head (or value head) and final norm.
	if c.ValueHead {
		m.linearBackward(a.dh, m.gv[lay.head], a.dlogp, a.hf, m.pv[lay.head], N, d, 1, false)
	} else {
		if !a.gradAhead { // else the forward wrote it
			be.Zero(a.dlogits)
			be.TokenLogProbsBackward(a.dlogits, a.dlogp, a.logits, a.lse, a.targets, N, V)
		}
		if entropy {
			be.EntropyBackward(a.dlogits, a.dent, a.logits, a.lse, a.ent, N, V)
		}
		if a.invTemp != 1 {
			be.Scale(a.dlogits, N*V, a.invTemp)
		}
		m.linearBackward(a.dh, m.gv[lay.head], a.dlogits, a.hf, m.pv[lay.head], N, d, V, false)
	}
	be.Zero(a.dres)
	be.RMSNormBackward(a.dres, m.gv[lay.finalNorm], a.dh, a.x[c.Layers], m.pv[lay.finalNorm], a.rstf, N, d)

	// a.dres holds dL/dx of the residual stream; each block adds its branch.
	for l := c.Layers - 1; l >= 0; l-- {
		w, s := &lay.layers[l], &a.layers[l]

		// FFN block.
		be.Zero(a.dh)
		if c.DenseFFN {
			m.linearBackward(a.ds, m.gv[w.w2], a.dres, s.s, m.pv[w.w2], N, h, d, false)
			be.Zero(a.dg)
			be.Zero(a.du)
			be.SwiGLUBackward(a.dg, a.du, a.ds, s.g, s.u, N*h)
			m.linearBackward(a.dh, m.gv[w.w1], a.dg, s.h2, m.pv[w.w1], N, d, h, false)
			m.linearBackward(a.dh, m.gv[w.w3], a.du, s.h2, m.pv[w.w3], N, d, h, true)
		} else {
			be.Zero(a.dy)
			be.Zero(a.dweights)
			be.CombineBackward(a.dy, a.dweights, a.dres, s.y, s.weights, s.inv, N, K, d)
			// The experts' backward, grouped as the forward: dW_e += in_eᵀ·dout_e
			// and din_e = dout_e·W_eᵀ for W2, then through the SwiGLU, then W1
			// and W3 into one dxp.
			NK := N * K
			w1, w3, w2 := a.expertWeights(m, w)
			be.GemmGroupedT(NK, h, d, s.s, nil, a.dy, m.gv[w.w2], s.offsets, E)
			be.GemmGroupedSwiGLUBackward(NK, h, d, a.dy, w2, h*d, s.g, s.u, nil, a.dg, a.du, s.offsets, E) // ds is not read again
			be.GemmGroupedT(NK, d, h, s.h2, s.perm, a.dg, m.gv[w.w1], s.offsets, E)
			be.GemmGrouped(true, NK, d, h, a.dg, w1, d*h, 0, a.dxp, s.offsets, E)
			be.GemmGroupedT(NK, d, h, s.h2, s.perm, a.du, m.gv[w.w3], s.offsets, E)
			be.GemmGrouped(true, NK, d, h, a.du, w3, d*h, 1, a.dxp, s.offsets, E)
			be.GatherBackward(a.dh, a.dxp, s.inv, N, K, d)
			// Router: through the top-k weights, plus the load-balancing term.
			be.Zero(a.drl)
			be.RouterTopKBackward(a.drl, a.dweights, s.weights, s.experts, s.probs, N, E, K)
			if c.AuxLossCoef > 0 {
				be.Gather(a.dprobs, a.auxCoef.View(l*E, E), a.zeroIdx, N, E) // layer l's row to every token
				be.SoftmaxBackward(a.drl, a.dprobs, s.probs, N, E)
			}
			if coef := c.RouterZLossCoef; coef > 0 {
				m.zLossBackward(a, s, l, coef)
			}
			m.linearBackward(a.dh, m.gv[w.router], a.drl, s.h2, m.pv[w.router], N, d, E, true)
		}
		be.RMSNormBackward(a.dres, m.gv[w.ffnNorm], a.dh, s.x2, m.pv[w.ffnNorm], s.rstd2, N, d)

		// Attention block.
		m.linearBackward(a.da, m.gv[w.wo], a.dres, s.att, m.pv[w.wo], N, d, d, false)
		be.Zero(a.dq)
		be.Zero(a.dk)
		be.Zero(a.dv)
		be.AttentionBackward(a.dq, a.dk, a.dv, a.da, s.qr, s.kr, s.v, s.att, s.lse, a.B, a.T, H, hd)
		be.RoPEBackward(a.dq, a.pos, N, H, hd, theta)
		be.RoPEBackward(a.dk, a.pos, N, H, hd, theta)
		// dq, dk now hold gradients w.r.t. the normed heads; dqp and dkp
		// collect the pre-norm ones, beside dv in dqkv, so that the three
		// weight gradients are one batched product; a.da, reused, collects
		// dL/dh1 from the three projections, in the order q, k, v.
		be.Zero(a.dqp)
		be.Zero(a.dkp)
		be.RMSNormBackward(a.dqp, m.gv[w.qNorm], a.dq, s.q, m.pv[w.qNorm], s.rstdq, N*H, hd)
		be.RMSNormBackward(a.dkp, m.gv[w.kNorm], a.dk, s.k, m.pv[w.kNorm], s.rstdk, N*H, hd)
		be.GemmBatched(true, false, d, d, N, 1, s.h1, 0, d, 0, a.dqkv, 0, d, N*d, 1, m.Grads, w.wq.Off, d, d*d, 3)
		be.Gemm(false, true, N, d, d, 1, a.dqp, 0, d, m.pv[w.wq], 0, d, 0, a.da, 0, d)
		be.Gemm(false, true, N, d, d, 1, a.dkp, 0, d, m.pv[w.wk], 0, d, 1, a.da, 0, d)
		be.Gemm(false, true, N, d, d, 1, a.dv, 0, d, m.pv[w.wv], 0, d, 1, a.da, 0, d)
		be.RMSNormBackward(a.dres, m.gv[w.attnNorm], a.da, a.x[l], m.pv[w.attnNorm], s.rstd1, N, d)
	}
	be.EmbeddingBackward(m.gv[lay.embed], a.dres, a.ids, N, d)
}

// zLossBackward adds coef times the z-loss's gradient to a.drl:
// ∂/∂z_ne of mean_n lse_n² is (2/N)·lse_n·p_ne, with p the router's
// softmax saved by the forward.
func (m *Model) zLossBackward(a *Acts, s *layerActs, l int, coef float64) {
	E, N := m.Cfg.Experts, a.N
	p := a.hostProbs[:N*E]
	m.be.Download(p, s.probs)
	g := make([]float32, N*E)
	for n := range N {
		f := coef * 2 * a.zlse[l][n] / float64(N)
		for e := range E {
			g[n*E+e] = float32(f * float64(p[n*E+e]))
		}
	}
	m.be.Upload(a.dprobs, g)
	m.be.Add(a.drl, a.dprobs, N*E)
}

func sqrt(x float64) float64 { return math.Sqrt(x) }

// forwardKey and backwardKey name what a recorded forward or backward
// bakes into its ops besides the workspace's tensors.
type (
	forwardKey struct {
		temp                       float64
		entropy, replay, gradAhead bool
	}
	backwardKey struct {
		entropy, gradAhead bool
		invTemp            float32
	}
)
