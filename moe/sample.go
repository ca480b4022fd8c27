package moe

import (
	"fmt"
	"slices"

	"github.com/moerl/moerl/engine"
)

// KVCache holds every layer's keys and values for Batch sequences of up to
// MaxSeq tokens: K[l] and V[l] are Batch×MaxSeq×d_model.
type KVCache struct {
	K, V          []*engine.Tensor
	Batch, MaxSeq int
	Lens          []int32 // tokens cached per sequence

	lens, slots *engine.Tensor // decode-step inputs on the backend
}

// NewKVCache allocates a cache for batch sequences.
func (m *Model) NewKVCache(batch, maxSeq int) *KVCache {
	c := &KVCache{Batch: batch, MaxSeq: maxSeq, Lens: make([]int32, batch),
		lens: m.be.NewI32(batch), slots: m.be.NewI32(batch)}
	for range m.Cfg.Layers {
		c.K = append(c.K, m.be.NewF32(batch, maxSeq, m.Cfg.DModel))
		c.V = append(c.V, m.be.NewF32(batch, maxSeq, m.Cfg.DModel))
	}
	return c
}

// Free releases the cache's backend memory.
func (c *KVCache) Free(be engine.Backend) {
	for i := range c.K {
		be.Free(c.K[i])
		be.Free(c.V[i])
	}
	be.Free(c.lens)
	be.Free(c.slots)
}

// view is a cache of batch sequences of maxSeq positions over the memory
// of c, which must hold at least batch·maxSeq positions and batch
// sequences.
func (c *KVCache) view(batch, maxSeq, d int) *KVCache {
	v := &KVCache{Batch: batch, MaxSeq: maxSeq, Lens: c.Lens[:batch],
		lens: c.lens.View(0, batch), slots: c.slots.View(0, batch)}
	for l := range c.K {
		v.K = append(v.K, c.K[l].View(0, batch, maxSeq, d))
		v.V = append(v.V, c.V[l].View(0, batch, maxSeq, d))
	}
	return v
}

// SampleOptions controls Generate.
type SampleOptions struct {
	Temperature float64 // 0: greedy
	TopK        int     // 0: no top-k cut
	TopP        float64 // 0 or 1: no nucleus cut
	MaxNew      int     // new tokens per sequence at most (also bounded by MaxSeq)
	MaxNewPer   []int   // optional per-prompt caps, overriding MaxNew
	Stop        []int32 // tokens that end a sequence; the stop token is kept
	// RecordRouting records, for an MoE model, the experts every layer
	// chose for every token the sampler fed (Sequence.Routing): what
	// routing replay replays and the routing metrics compare with.
	RecordRouting bool
	// BlockSteps is how many decode steps run between two visits of the
	// host: 0 is the backend's default (DefaultBlockSteps on a backend that
	// records graphs, 1 on the CPU); RecordRouting runs one at a time. The
	// samples are the same bits whatever it is (see Generate).
	BlockSteps int
	// PrefillTokens bounds the prompt tokens (padded) one prefill pass
	// holds: the prompts are prefilled in chunks of whole prompts, at least
	// one a chunk, so that the prefill's workspace does not grow with the
	// batch. 0 is DefaultPrefillTokens. The samples are the same bits
	// whatever it is, on every backend whose products do not depend on the
	// rows beside them (the CPU; CUDA with our own GEMM kernels).
	PrefillTokens int
}

// DefaultPrefillTokens is the prefill chunk SampleOptions.PrefillTokens 0
// means: 4096 tokens hold moe-tiny's prefill workspace to about 90 MB and
// moe-small's to about 200 MB (one layer's activations a token, the
// layers' hidden states, the head's), and cost BENCH.md's generate
// workload (256 prompts of 32) one more pass of the prefill's launches.
const DefaultPrefillTokens = 4096

// DefaultBlockSteps is the decode steps a backend that records graphs runs
// per host round trip: one graph launch, one wait and one copy of the
// tokens back for every 8 tokens, instead of for every token. The price:
// Generate throws away the steps of a block past a compaction or the last
// sequence's end, at most 7 and about 3.5 each time; a rollout of 256
// sequences compacts at most 5 times. While the host waited for every
// step, the GPU idled for the host's part of each; see docs/benchmarks.md,
// change 7, for the arithmetic.
const DefaultBlockSteps = 8

// Sequence is one sampled continuation.
type Sequence struct {
	Prompt    int       // index into the prompts given to Generate
	Tokens    []int32   // generated tokens (the prompt excluded)
	LogProbs  []float32 // log-prob of each generated token, as sampled
	Stopped   bool      // ended on a stop token
	Truncated bool      // hit its length limit first
	// Routing holds, with SampleOptions.RecordRouting, the experts chosen
	// while sampling for every input position p of prompt + response that
	// a training forward reads (p < len(prompt) + len(Tokens) − 1): for
	// layer l and slot j, Routing[(p·Layers + l)·TopK + j], in the router's
	// order (decreasing probability). Nil when not recorded or dense.
	Routing []int32
}

// Generate samples G continuations of every prompt. Each prompt is prefilled
// once and its KV cache copied to its G sequences, which then decode
// together, one token per step, until all have stopped or hit their limit.
//
// Sampling is exactly on-policy: the log-prob recorded for a token is
// log softmax(logits/T) of the full vocabulary, and it is bitwise the one
// Forward with the same temperature computes on the prompt and response
// (on the CPU backend, at any batch size and GOMAXPROCS), because the
// prefill is a forward, a decode step computes every row as a forward
// would, and the attention of a decode step sums in the forward's order.
//
// Generate keeps its workspaces and KV cache on the model between calls
// (an RL run samples the same shapes every step) and grows them when a call
// needs more; FreeSampler releases them. On a backend that records graphs
// (engine.Capturer) each decode step shape becomes a graph on its second
// step, kept with the workspaces. Calls on one model must not overlap.
//
// Decode steps run in blocks of o.BlockSteps, whose positions and uniforms
// the host lays out ahead, so the host waits once per block. A block is
// exactly the steps one at a time would run, as long as the decode rows
// stay the same: when sequences finish and the rows are compacted, or
// when every sequence has finished, the steps queued past that point are
// thrown away and the sampling stream and the cache lengths are put back
// to where that point left them. So the tokens, their log-probs and the
// state rng is left in are the same bits for every BlockSteps.
func (m *Model) Generate(prompts [][]int32, G int, o SampleOptions, rng *engine.RNG) ([]Sequence, error) {
	sh, limit, err := m.plan(prompts, G, o)
	if err != nil {
		return nil, err
	}
	w := m.sampler(sh)
	var rec *routeRecorder
	var recordPrefill func(p0, n int, a *Acts)
	if o.RecordRouting && !m.Cfg.DenseFFN {
		rec = m.newRouteRecorder(w, limit)
		recordPrefill = rec.prefilled
	}
	m.prefill(w, prompts, recordPrefill)

	out := make([]Sequence, sh.S)
	done := make([]bool, sh.S)
	for s := range out {
		out[s].Prompt = s / G
		if limit[s] <= 0 {
			done[s], out[s].Truncated = true, true
		}
	}
	stop := map[int32]bool{}
	for _, t := range o.Stop {
		stop[t] = true
	}
	// row[r] is the sequence decode row r holds: rows are compacted as
	// sequences finish, so that a long tail of a few unfinished ones does
	// not cost a step of the whole batch.
	row := make([]int, sh.S)
	for r := range row {
		row[r] = r
	}
	k := o.BlockSteps
	if k <= 0 {
		k = 1
		if _, ok := m.be.(engine.Capturer); ok {
			k = DefaultBlockSteps
		}
	}
	if rec != nil {
		k = 1 // the recorder copies each step's choices as it runs
	}
	var queued block                            // decode steps run ahead, not yet taken
	tok, lp := m.sampleNext(w, w.first, o, rng) // from each prompt's last hidden state
	for {
		active := 0
		for r, s := range row {
			if done[s] {
				continue
			}
			out[s].Tokens = append(out[s].Tokens, tok[r])
			out[s].LogProbs = append(out[s].LogProbs, lp[r])
			switch {
			case stop[tok[r]]:
				done[s], out[s].Stopped = true, true
			case len(out[s].Tokens) >= limit[s]:
				done[s], out[s].Truncated = true, true
			default:
				active++
			}
		}
		if active == 0 {
			queued.rewind(rng)
			break
		}
		if len(row) >= 8 && active <= len(row)/2 {
			queued.rewind(rng) // those steps were for the rows before compaction
			w, row = m.compact(w, row, done, tok)
			tok = tok[:len(row)]
		}
		if queued.taken == queued.n {
			// No more steps than the longest-running sequence still needs.
			n := 0
			for _, s := range row {
				if !done[s] {
					n = max(n, limit[s]-len(out[s].Tokens))
				}
			}
			queued = m.decodeBlock(w, tok, o, rng, min(k, n))
		}
		tok, lp = queued.next()
		if rec != nil {
			rec.step(w, row)
		}
	}
	if rec != nil {
		rec.finish(out, prompts)
	}
	// A device error is kept until a sync (and the work after it dropped,
	// its downloads zero): check here, so that no caller takes samples of
	// a failed decode for real ones.
	if err := m.be.Sync(); err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	return out, nil
}

// routeRecorder collects a Generate call's router choices: the prefill's
// on the host, and each decode step's copied on the backend into one
// buffer (no wait per step) that finish downloads once.
type routeRecorder struct {
	m       *Model
	G, Tp   int
	S       int       // decode rows at the start
	pre     [][]int32 // per layer: the prefill's experts, P·Tp × K
	buf     *engine.Tensor
	rows    [][]int // per decode step: the sequence each row held
	maxStep int
}

func (m *Model) newRouteRecorder(w sampling, limit []int) *routeRecorder {
	c, be := m.Cfg, m.be
	L, K := c.Layers, c.K()
	r := &routeRecorder{m: m, G: w.G, Tp: w.Tp, S: w.S}
	for range L {
		r.pre = append(r.pre, make([]int32, w.P*w.Tp*K))
	}
	for _, n := range limit {
		r.maxStep = max(r.maxStep, n-1) // decode steps feed response tokens 0 … n−2
	}
	if need := r.maxStep * L * w.S * K; need > 0 {
		g := m.gen
		if g.route == nil || g.route.Len() < need {
			if g.route != nil {
				be.Free(g.route)
			}
			g.route = be.NewI32(need)
		}
		r.buf = g.route
	}
	return r
}

// prefilled downloads the experts of a prefill chunk, prompts [p0, p0+n)
// in workspace a.
func (r *routeRecorder) prefilled(p0, n int, a *Acts) {
	K := r.m.Cfg.K()
	for l := range r.pre {
		r.m.be.DownloadI32(r.pre[l][p0*r.Tp*K:(p0+n)*r.Tp*K], a.layers[l].experts)
	}
}

// step copies the experts of the decode step just run (rows row) into the
// buffer.
func (r *routeRecorder) step(w sampling, row []int) {
	c, be := r.m.Cfg, r.m.be
	L, K := c.Layers, c.K()
	j := len(r.rows)
	if j >= r.maxStep {
		return // a step past every sequence's last needed token
	}
	n := len(row) * K
	for l := range L {
		be.Copy(r.buf.View((j*L+l)*r.S*K, n), w.dec.layers[l].experts.View(0, n))
	}
	r.rows = append(r.rows, slices.Clone(row))
}

// finish downloads the decode steps' choices and lays out each sequence's
// Routing.
func (r *routeRecorder) finish(out []Sequence, prompts [][]int32) {
	c := r.m.Cfg
	L, K := c.Layers, c.K()
	steps := len(r.rows)
	dec := make([]int32, steps*L*r.S*K)
	if steps > 0 {
		r.m.be.DownloadI32(dec, r.buf.View(0, len(dec)))
	}
	// at[j][s] is the decode row of sequence s at step j, or −1.
	at := make([][]int, steps)
	for j, row := range r.rows {
		at[j] = make([]int, len(out))
		for s := range at[j] {
			at[j][s] = -1
		}
		for i, s := range row {
			at[j][s] = i
		}
	}
	for s := range out {
		p := out[s].Prompt
		pl := len(prompts[p])
		n := pl + len(out[s].Tokens) - 1
		if n <= 0 {
			continue
		}
		rt := make([]int32, n*L*K)
		for pos := range n {
			for l := range L {
				dst := rt[(pos*L+l)*K : (pos*L+l+1)*K]
				if pos < pl {
					copy(dst, r.pre[l][(p*r.Tp+pos)*K:])
					continue
				}
				j := pos - pl
				i := at[j][s] // the sequence was running at step j: it had more tokens to sample
				copy(dst, dec[((j*L+l)*r.S+i)*K:])
			}
		}
		out[s].Routing = rt
	}
}

// compact moves the decode rows of unfinished sequences to the front —
// their caches, cache lengths and next tokens — and narrows the call's
// views to them. Every row's computation reads only its own cache, so a
// sequence samples the same tokens whichever row it sits in.
func (m *Model) compact(w sampling, row []int, done []bool, tok []int32) (sampling, []int) {
	be, d := m.be, m.Cfg.DModel
	kv := w.kv
	stride := kv.MaxSeq * d
	var keep []int
	for r, s := range row {
		if done[s] {
			continue
		}
		i := len(keep)
		if r != i { // r > i: rows before r are already moved, r is intact
			n := int(kv.Lens[r]) * d
			for l := range kv.K {
				be.Copy(kv.K[l].View(i*stride, n), kv.K[l].View(r*stride, n))
				be.Copy(kv.V[l].View(i*stride, n), kv.V[l].View(r*stride, n))
			}
			kv.Lens[i] = kv.Lens[r]
			tok[i] = tok[r]
		}
		keep = append(keep, s)
	}
	a := len(keep)
	sh := w.genShape
	sh.S = a
	g := m.gen
	nw := &generator{pre: w.pre, dec: m.view(g.dec, a, 1), kv: kv.view(a, kv.MaxSeq, d), idx: w.idx,
		last: w.last.View(0, a), first: w.first.View(0, a, d), u: w.u.View(0, a), lp: w.lp.View(0, a), tok: w.tok.View(0, a),
		hostIDs: w.hostIDs, hostIdx: w.hostIdx, hostLast: w.hostLast[:a],
		hostTok: w.hostTok[:a], hostPos: w.hostPos[:a], hostSlot: w.hostSlot[:a],
		hostU: w.hostU[:a], hostLp: w.hostLp[:a]}
	return sampling{genShape: sh, generator: nw}, keep
}

// FreeSampler releases the workspaces and KV cache that Generate keeps
// between calls; the next Generate allocates them again.
func (m *Model) FreeSampler() {
	if w := m.gen; w != nil {
		w.free(m.be)
		m.gen = nil
	}
}

// genShape is one Generate call's layout: P prompts right-padded to Tp
// tokens, prefilled Pc at a time, S = P·G sequences with caches of Seq
// positions.
type genShape struct{ P, Pc, G, S, Tp, Seq int }

// plan checks Generate's arguments and lays the call out, with each
// sequence's limit on new tokens.
func (m *Model) plan(prompts [][]int32, G int, o SampleOptions) (genShape, []int, error) {
	c := m.Cfg
	P := len(prompts)
	if P == 0 || G <= 0 {
		return genShape{}, nil, fmt.Errorf("generate: need at least one prompt and one sample per prompt")
	}
	if o.MaxNewPer != nil && len(o.MaxNewPer) != P {
		return genShape{}, nil, fmt.Errorf("generate: %d per-prompt length limits for %d prompts", len(o.MaxNewPer), P)
	}
	sh := genShape{P: P, G: G, S: P * G}
	for i, p := range prompts {
		if len(p) == 0 {
			return genShape{}, nil, fmt.Errorf("generate: prompt %d is empty", i)
		}
		if len(p) >= c.MaxSeq {
			return genShape{}, nil, fmt.Errorf("generate: prompt %d has %d tokens, the model's context is %d", i, len(p), c.MaxSeq)
		}
		for j, t := range p {
			if t < 0 || int(t) >= c.Vocab {
				return genShape{}, nil, fmt.Errorf("generate: prompt %d token %d is %d, outside the vocabulary [0,%d)", i, j, t, c.Vocab)
			}
		}
		sh.Tp = max(sh.Tp, len(p))
	}
	chunk := o.PrefillTokens
	if chunk <= 0 {
		chunk = DefaultPrefillTokens
	}
	sh.Pc = min(P, max(1, chunk/sh.Tp))
	limit := make([]int, sh.S)
	sh.Seq = sh.Tp // the prefill writes every padded position
	for s := range limit {
		p := s / G
		n := o.MaxNew
		if o.MaxNewPer != nil {
			n = o.MaxNewPer[p]
		}
		limit[s] = min(n, c.MaxSeq-len(prompts[p]))
		sh.Seq = max(sh.Seq, len(prompts[p])+limit[s])
	}
	return sh, limit, nil
}

// generator is Generate's workspace, kept on the model between calls: the
// prefill's and the decode step's activations, the KV cache and the
// sampler's inputs and outputs, each allocated at the largest size asked
// for so far. sampler lays one call's views over it.
type generator struct {
	pre, dec *Acts // forward-only workspaces
	kv       *KVCache
	idx      *engine.Tensor // a prefill chunk's rows' cache slots, for each of the G samples of its prompts
	last     *engine.Tensor // each sequence's last prompt row
	first    *engine.Tensor // each sequence's hidden state at its last prompt token
	u, lp    *engine.Tensor // uniforms in, log-probs out
	tok      *engine.Tensor
	route    *engine.Tensor // decode steps' router choices (SampleOptions.RecordRouting)

	hostIDs, hostIdx, hostLast []int32
	hostTok, hostPos, hostSlot []int32
	hostU, hostLp              []float32
	blk                        *blockBufs // decode blocks' inputs and outputs

	// steps holds each decode step shape's graph. A graph holds the
	// addresses of the tensors above: resizing them closes every graph.
	steps graphs
}

// stepKey is what a decode step's graph depends on besides the tensors'
// addresses: the rows, the cache's positions per sequence and the
// sampling settings baked into its ops.
type stepKey struct {
	S, Seq, topK int
	temp, topP   float64
}

// blockBufs holds a block of decode steps' inputs and outputs, step j's
// rows at j·S: the positions, cache slots, cache lengths and uniforms the
// host lays out ahead, and the tokens and log-probs drawn. steps and rows
// are the block length and rows per step they are sized for.
type blockBufs struct {
	steps, rows          int
	pos, slot, lens, tok *engine.Tensor
	u, lp                *engine.Tensor
	hostPos, hostSlot    []int32
	hostLens, hostTok    []int32
	hostU, hostLp        []float32
}

func (b *blockBufs) free(be engine.Backend) {
	for _, t := range []*engine.Tensor{b.pos, b.slot, b.lens, b.tok, b.u, b.lp} {
		be.Free(t)
	}
}

// blockKey is a block of decode steps' graph key.
type blockKey struct {
	stepKey
	n int
}

// closeGraphs frees every recorded decode step.
func (w *generator) closeGraphs() { w.steps.close() }

// sampling is one call's views over the generator.
type sampling struct {
	genShape
	*generator
}

func (w *generator) free(be engine.Backend) {
	w.closeGraphs()
	for _, a := range []*Acts{w.pre, w.dec} {
		if a != nil {
			a.Free(be)
		}
	}
	if w.kv != nil {
		w.kv.Free(be)
	}
	for _, t := range []*engine.Tensor{w.idx, w.last, w.first, w.u, w.lp, w.tok, w.route} {
		if t != nil {
			be.Free(t)
		}
	}
	if w.blk != nil {
		w.blk.free(be)
	}
}

// sampler returns views for one call, growing the generator where it is too
// small for sh.
func (m *Model) sampler(sh genShape) sampling {
	be, d := m.be, m.Cfg.DModel
	if g := m.gen; g != nil && g.pre != nil && g.pre.gemmIn != m.gemmInput() {
		// Made under another GEMM precision, its workspaces hold the other
		// dtypes (Acts.gemmIn), and its graphs the other kernels: start
		// afresh (a precision change is rare).
		m.FreeSampler()
	}
	if m.gen == nil {
		m.gen = &generator{}
	}
	w := m.gen
	if n := sh.Pc * sh.Tp; w.pre == nil || w.pre.N < n {
		if w.pre != nil {
			w.pre.Free(be)
		}
		w.pre = m.newActs(1, n, false) // viewed as a chunk of Pc prompts × Tp
		w.hostIDs = make([]int32, n)
	}
	if n := sh.G * sh.Pc * sh.Tp; w.idx == nil || w.idx.Len() < n {
		if w.idx != nil {
			be.Free(w.idx)
		}
		w.idx = be.NewI32(n)
		w.hostIdx = make([]int32, n)
	}
	if w.dec == nil || w.dec.N < sh.S {
		w.closeGraphs()
		if w.dec != nil {
			w.dec.Free(be)
			for _, t := range []*engine.Tensor{w.last, w.first, w.u, w.lp, w.tok} {
				be.Free(t)
			}
		}
		w.dec = m.newActs(sh.S, 1, false)
		w.last, w.first, w.tok = be.NewI32(sh.S), be.NewF32(sh.S, d), be.NewI32(sh.S)
		w.u, w.lp = be.NewF32(sh.S), be.NewF32(sh.S)
		w.hostLast, w.hostTok, w.hostPos, w.hostSlot = make([]int32, sh.S), make([]int32, sh.S), make([]int32, sh.S), make([]int32, sh.S)
		w.hostU, w.hostLp = make([]float32, sh.S), make([]float32, sh.S)
	}
	// Where GEMMs round their inputs to bf16, the experts' products read
	// the model's bf16 copy of the weights (Model.w16), cast again at every
	// call (the weights change between calls, never during one): half the
	// bytes a decode step reads for them, the same products.
	if w.pre.w16 != nil {
		be.Cast(w.pre.w16, m.Params, m.lay.total)
	}
	if w.kv == nil || w.kv.Batch < sh.S || w.kv.Batch*w.kv.MaxSeq < sh.S*sh.Seq {
		w.closeGraphs()
		if w.kv != nil {
			w.kv.Free(be)
		}
		w.kv = m.NewKVCache(sh.S, sh.Seq)
	}
	Pc, S := sh.Pc, sh.S
	return sampling{genShape: sh, generator: &generator{
		pre: m.view(w.pre, Pc, sh.Tp), dec: m.view(w.dec, S, 1), kv: w.kv.view(S, sh.Seq, d),
		idx: w.idx.View(0, sh.G*Pc*sh.Tp), last: w.last.View(0, S), first: w.first.View(0, S, d),
		u: w.u.View(0, S), lp: w.lp.View(0, S), tok: w.tok.View(0, S),
		hostIDs: w.hostIDs[:Pc*sh.Tp], hostIdx: w.hostIdx[:sh.G*Pc*sh.Tp], hostLast: w.hostLast[:S],
		hostTok: w.hostTok[:S], hostPos: w.hostPos[:S], hostSlot: w.hostSlot[:S],
		hostU: w.hostU[:S], hostLp: w.hostLp[:S]}}
}

// blockBuffers returns the generator's block buffers, grown to hold n
// steps of rows rows (and never shrunk, so that alternating shapes
// settle); growing closes the graphs that use the old ones.
func (m *Model) blockBuffers(n, rows int) *blockBufs {
	be, g := m.be, m.gen
	if b := g.blk; b != nil {
		if b.steps >= n && b.rows >= rows {
			return b
		}
		n, rows = max(n, b.steps), max(rows, b.rows)
		g.closeGraphs()
		b.free(be)
	}
	c := n * rows
	g.blk = &blockBufs{steps: n, rows: rows,
		pos: be.NewI32(c), slot: be.NewI32(c), lens: be.NewI32(c), tok: be.NewI32(c), u: be.NewF32(c), lp: be.NewF32(c),
		hostPos: make([]int32, c), hostSlot: make([]int32, c), hostLens: make([]int32, c), hostTok: make([]int32, c),
		hostU: make([]float32, c), hostLp: make([]float32, c)}
	return g.blk
}

// prefillDst is where a prefill's forward copies each layer's keys and
// values as the layer runs: the rows of a chunk of prompts into the caches
// of each of their G sequences (idx[g] for sample g).
type prefillDst struct {
	kv  *KVCache
	idx []*engine.Tensor
}

// prefill runs the training forward over the prompts, right-padded, w.Pc
// prompts at a time, and leaves every sequence ready to decode: each
// layer's keys and values copied into the caches of its prompt's G
// sequences while the layer runs (so a chunk's workspace is free for the
// next chunk), the cache lengths set, and each sequence's hidden state at
// its prompt's last token in w.first, from which its first token is
// sampled. chunk, when not nil, gets each chunk's workspace after its
// forward, with the chunk's first prompt and its number of prompts.
func (m *Model) prefill(w sampling, prompts [][]int32, chunk func(p0, n int, a *Acts)) {
	be, d, L := m.be, m.Cfg.DModel, m.Cfg.Layers
	for p0 := 0; p0 < w.P; p0 += w.Pc {
		n := min(w.Pc, w.P-p0)
		a := w.pre
		if n < w.Pc {
			a = m.view(w.pre, n, w.Tp)
		}
		rows := n * w.Tp
		ids := w.hostIDs[:rows]
		clear(ids)
		for i := range n {
			copy(ids[i*w.Tp:], prompts[p0+i])
		}
		m.upload(a, ids)
		dst := prefillDst{kv: w.kv, idx: make([]*engine.Tensor, w.G)}
		for g := range w.G {
			for i := range rows {
				p, t := p0+i/w.Tp, i%w.Tp
				w.hostIdx[g*rows+i] = int32((p*w.G+g)*w.Seq + t)
			}
			dst.idx[g] = w.idx.View(g*rows, rows)
		}
		be.UploadI32(w.idx.View(0, w.G*rows), w.hostIdx[:w.G*rows])
		m.forward(a, nil, false, &dst)
		if chunk != nil {
			chunk(p0, n, a)
		}
		s0, ns := p0*w.G, n*w.G // the chunk's sequences
		for s := s0; s < s0+ns; s++ {
			p := s / w.G
			w.hostLast[s] = int32((p-p0)*w.Tp + len(prompts[p]) - 1)
			w.kv.Lens[s] = int32(len(prompts[p]))
		}
		be.UploadI32(w.last.View(s0, ns), w.hostLast[s0:s0+ns])
		be.Gather(w.first.View(s0*d, ns, d), a.x[L], w.last.View(s0, ns), ns, d)
	}
}

// sampleNext draws each sequence's next token from its last hidden state h
// (S×d) through the head that Forward uses, and returns the tokens and
// their log-probs, in host memory owned by w.
func (m *Model) sampleNext(w sampling, h *engine.Tensor, o SampleOptions, rng *engine.RNG) ([]int32, []float32) {
	m.uniforms(w, rng)
	m.draw(w, h, o)
	return m.fetch(w)
}

// decodeNext feeds each sequence's token at the next position of its cache
// and draws the token after it: decode and sampleNext in one, whose device
// work (the forward, the head, Sample) is one graph per step shape on a
// backend that records graphs.
func (m *Model) decodeNext(w sampling, tok []int32, o SampleOptions, rng *engine.RNG) ([]int32, []float32) {
	m.decodeInputs(w, tok)
	m.uniforms(w, rng)
	m.gen.steps.run(m.be, stepKey{S: w.S, Seq: w.kv.MaxSeq, topK: o.TopK, temp: o.Temperature, topP: o.TopP}, func() {
		m.forward(w.dec, w.kv, false, nil)
		m.draw(w, w.dec.x[m.Cfg.Layers], o)
	})
	return m.fetch(w)
}

// block is a run of decode steps whose tokens the host takes one step at
// a time: n steps queued, taken of them handed out.
type block struct {
	tok      [][]int32 // each step's tokens, one per row
	lp       [][]float32
	states   [][]byte  // the sampling stream before each step's uniforms
	lens     [][]int32 // the cache lengths before each step
	kvLens   []int32   // the cache lengths the steps advance
	n, taken int
}

// next returns the tokens and log-probs of the next queued step.
func (b *block) next() ([]int32, []float32) {
	j := b.taken
	b.taken++
	return b.tok[j], b.lp[j]
}

// rewind gives back what the steps queued but not taken used: the
// uniforms they drew from rng and the cache positions they advanced.
// Their keys and values stay in the cache past the lengths, where the
// next steps overwrite them.
func (b *block) rewind(rng *engine.RNG) {
	if b.taken >= b.n {
		return
	}
	if err := rng.SetState(b.states[b.taken]); err != nil {
		panic(err) // a state that State returned cannot fail to restore
	}
	copy(b.kvLens, b.lens[b.taken])
	b.taken = b.n
}

// decodeBlock runs n decode steps from the tokens tok: the first as
// decodeNext does, the others each feeding the tokens the step before
// drew. The host lays out every step's positions, cache slots, cache
// lengths and uniforms first, in the order n calls of decodeNext would
// draw them, and fetches the n steps' tokens and log-probs in one copy;
// on a backend that records graphs the block is one graph.
func (m *Model) decodeBlock(w sampling, tok []int32, o SampleOptions, rng *engine.RNG, n int) block {
	be, kv, S := m.be, w.kv, w.S
	b := block{n: n, kvLens: kv.Lens}
	if n <= 1 {
		b.states, b.lens = [][]byte{rng.State()}, [][]int32{slices.Clone(kv.Lens)}
		t, l := m.decodeNext(w, tok, o, rng)
		b.tok, b.lp = [][]int32{t}, [][]float32{l}
		return b
	}
	bb := m.blockBuffers(n, S)
	for j := range n {
		b.states = append(b.states, rng.State())
		b.lens = append(b.lens, slices.Clone(kv.Lens))
		for s := range S {
			p := min(kv.Lens[s], int32(kv.MaxSeq-1))
			bb.hostPos[j*S+s], bb.hostSlot[j*S+s] = p, int32(s*kv.MaxSeq)+p
			kv.Lens[s] = p + 1
			bb.hostLens[j*S+s] = p + 1
		}
		for s := range S {
			bb.hostU[j*S+s] = float32(rng.Float64())
		}
	}
	c := n * S
	be.UploadI32(w.dec.ids, tok)
	be.UploadI32(bb.pos.View(0, c), bb.hostPos[:c])
	be.UploadI32(bb.slot.View(0, c), bb.hostSlot[:c])
	be.UploadI32(bb.lens.View(0, c), bb.hostLens[:c])
	be.Upload(bb.u.View(0, c), bb.hostU[:c])
	key := blockKey{stepKey{S: S, Seq: kv.MaxSeq, topK: o.TopK, temp: o.Temperature, topP: o.TopP}, n}
	m.gen.steps.run(be, key, func() {
		for j := range n {
			// Step j reads its inputs from the block's rows j, and the
			// tokens from the step before's, and writes its draws into
			// the block's rows j: shallow copies of the step workspace,
			// cache and sampler with those views swapped in, so the block
			// copies nothing.
			dec, cache, g := *w.dec, *kv, *w.generator
			dec.pos = bb.pos.View(j*S, S)
			if j > 0 {
				dec.ids = bb.tok.View((j-1)*S, S)
			}
			cache.slots, cache.lens = bb.slot.View(j*S, S), bb.lens.View(j*S, S)
			g.dec, g.u, g.tok, g.lp = &dec, bb.u.View(j*S, S), bb.tok.View(j*S, S), bb.lp.View(j*S, S)
			m.forward(&dec, &cache, false, nil)
			m.draw(sampling{genShape: w.genShape, generator: &g}, dec.x[m.Cfg.Layers], o)
		}
	})
	be.DownloadI32(bb.hostTok[:c], bb.tok.View(0, c))
	be.Download(bb.hostLp[:c], bb.lp.View(0, c))
	for j := range n {
		b.tok = append(b.tok, bb.hostTok[j*S:(j+1)*S])
		b.lp = append(b.lp, bb.hostLp[j*S:(j+1)*S])
	}
	return b
}

// uniforms uploads one uniform draw per row for Sample.
func (m *Model) uniforms(w sampling, rng *engine.RNG) {
	for s := range w.hostU {
		w.hostU[s] = float32(rng.Float64())
	}
	m.be.Upload(w.u, w.hostU)
}

// draw queues the head over h and Sample, given the uniforms in w.u.
func (m *Model) draw(w sampling, h *engine.Tensor, o SampleOptions) {
	// The logits are divided by T as Forward divides them (rather than
	// letting Sample divide), so recorded and recomputed log-probs round
	// alike; Sample then runs at temperature 1, or 0 for greedy.
	m.logits(w.dec, h, o.Temperature)
	temp := float32(0)
	if o.Temperature > 0 {
		temp = 1
	}
	topP := float32(o.TopP)
	if topP <= 0 {
		topP = 1
	}
	m.be.Sample(w.tok, w.lp, w.dec.logits, w.u, w.S, m.Cfg.Vocab, temp, o.TopK, topP)
}

// fetch copies the drawn tokens and their log-probs to the host.
func (m *Model) fetch(w sampling) ([]int32, []float32) {
	m.be.DownloadI32(w.hostTok, w.tok)
	m.be.Download(w.hostLp, w.lp)
	return w.hostTok, w.hostLp
}

// decode feeds each sequence's token at the next position of its cache
// and returns the new last hidden states (S×d). Finished sequences feed
// theirs too and are ignored; their position stays within the cache.
func (m *Model) decode(w sampling, tok []int32) *engine.Tensor {
	m.decodeInputs(w, tok)
	m.forward(w.dec, w.kv, false, nil)
	return w.dec.x[m.Cfg.Layers]
}

// decodeInputs uploads a decode step's tokens, positions, cache slots and
// cache lengths.
func (m *Model) decodeInputs(w sampling, tok []int32) {
	be, kv := m.be, w.kv
	for s := range w.S {
		p := min(kv.Lens[s], int32(kv.MaxSeq-1))
		w.hostPos[s] = p
		w.hostSlot[s] = int32(s*kv.MaxSeq) + p
		kv.Lens[s] = p + 1
	}
	be.UploadI32(w.dec.ids, tok)
	be.UploadI32(w.dec.pos, w.hostPos)
	be.UploadI32(kv.slots, w.hostSlot)
	be.UploadI32(kv.lens, kv.Lens)
}
