package moe

import (
	"fmt"

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

// SampleOptions controls Generate.
type SampleOptions struct {
	Temperature float64 // 0: greedy
	TopK        int     // 0: no top-k cut
	TopP        float64 // 0 or 1: no nucleus cut
	MaxNew      int     // new tokens per sequence at most (also bounded by MaxSeq)
	MaxNewPer   []int   // optional per-prompt caps, overriding MaxNew
	Stop        []int32 // tokens that end a sequence; the stop token is kept
}

// Sequence is one sampled continuation.
type Sequence struct {
	Prompt    int       // index into the prompts given to Generate
	Tokens    []int32   // generated tokens (the prompt excluded)
	LogProbs  []float32 // log-prob of each generated token, as sampled
	Stopped   bool      // ended on a stop token
	Truncated bool      // hit its length limit first
}

// Generate samples G continuations of every prompt. Each prompt is prefilled
// once and its KV cache copied to its G sequences, which then decode
// together, one token per step, until all have stopped or hit their limit.
// The log-prob recorded for a token is log softmax(logits/T) of the full
// vocabulary: what Forward with the same temperature recomputes.
func (m *Model) Generate(prompts [][]int32, G int, o SampleOptions, rng *engine.RNG) ([]Sequence, error) {
	c, be := m.Cfg, m.be
	P, S, V, d := len(prompts), len(prompts)*G, c.Vocab, c.DModel
	if P == 0 || G <= 0 {
		return nil, fmt.Errorf("generate: need at least one prompt and one sample per prompt")
	}
	if o.MaxNewPer != nil && len(o.MaxNewPer) != P {
		return nil, fmt.Errorf("generate: %d per-prompt length limits for %d prompts", len(o.MaxNewPer), P)
	}
	tp := 0
	for i, p := range prompts {
		if len(p) == 0 {
			return nil, fmt.Errorf("generate: prompt %d is empty", i)
		}
		if len(p) >= c.MaxSeq {
			return nil, fmt.Errorf("generate: prompt %d has %d tokens, the model's context is %d", i, len(p), c.MaxSeq)
		}
		for j, t := range p {
			if t < 0 || int(t) >= V {
				return nil, fmt.Errorf("generate: prompt %d token %d is %d, outside the vocabulary [0,%d)", i, j, t, V)
			}
		}
		tp = max(tp, len(p))
	}
	limit := make([]int, S)
	for s := range S {
		p := s / G
		n := o.MaxNew
		if o.MaxNewPer != nil {
			n = o.MaxNewPer[p]
		}
		limit[s] = min(n, c.MaxSeq-len(prompts[p]))
	}

	// Prefill: all prompts, right-padded to tp, through the training forward.
	pre := m.NewActs(P, tp)
	defer pre.Free(be)
	ids := make([]int32, P*tp)
	for p, pr := range prompts {
		copy(ids[p*tp:], pr)
	}
	be.UploadI32(pre.ids, ids)
	pos := make([]int32, P*tp)
	for i := range pos {
		pos[i] = int32(i % tp)
	}
	be.UploadI32(pre.pos, pos)
	m.forward(pre, nil, false)
	cache := m.NewKVCache(S, c.MaxSeq)
	defer cache.Free(be)
	idx := be.NewI32(P * tp)
	defer be.Free(idx)
	slots := make([]int32, P*tp)
	for g := range G {
		for i := range slots {
			p, t := i/tp, i%tp
			slots[i] = int32((p*G+g)*c.MaxSeq + t)
		}
		be.UploadI32(idx, slots)
		for l := range c.Layers {
			be.ScatterRows(cache.K[l], pre.layers[l].kr, idx, P*tp, d)
			be.ScatterRows(cache.V[l], pre.layers[l].v, idx, P*tp, d)
		}
	}
	// The first token of sequence s comes from its prompt's last position.
	last := make([]int32, S)
	for s := range S {
		p := s / G
		last[s] = int32(p*tp + len(prompts[p]) - 1)
		cache.Lens[s] = int32(len(prompts[p]))
	}
	dec := m.NewActs(S, 1)
	defer dec.Free(be)
	hf := be.NewF32(S, d)
	defer be.Free(hf)
	lastT := be.NewI32(S)
	defer be.Free(lastT)
	be.UploadI32(lastT, last)
	be.Gather(hf, pre.x[c.Layers], lastT, S, d)

	u := make([]float32, S)
	uT, tokT, lpT := be.NewF32(S), be.NewI32(S), be.NewF32(S)
	defer func() { be.Free(uT); be.Free(tokT); be.Free(lpT) }()
	tok, lp := make([]int32, S), make([]float32, S)
	out := make([]Sequence, S)
	done := make([]bool, S)
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
	topP := float32(o.TopP)
	if topP <= 0 {
		topP = 1
	}
	for {
		// hf holds the last hidden state of each sequence: sample from it.
		be.RMSNorm(dec.hf, dec.rstf, hf, m.pv[m.lay.finalNorm], S, d, float32(c.NormEps))
		be.Gemm(false, false, S, V, d, 1, dec.hf, 0, d, m.pv[m.lay.head], 0, V, 0, dec.logits, 0, V)
		for s := range u {
			u[s] = float32(rng.Float64())
		}
		be.Upload(uT, u)
		// Scale by 1/T exactly as Forward does (rather than letting Sample
		// divide), so recorded and recomputed log-probs round alike.
		temp := float32(0)
		if o.Temperature > 0 {
			temp = 1
			if o.Temperature != 1 {
				be.Scale(dec.logits, S*V, float32(1/o.Temperature))
			}
		}
		be.Sample(tokT, lpT, dec.logits, uT, S, V, temp, o.TopK, topP)
		be.DownloadI32(tok, tokT)
		be.Download(lp, lpT)
		active := false
		for s := range S {
			if done[s] {
				continue
			}
			out[s].Tokens = append(out[s].Tokens, tok[s])
			out[s].LogProbs = append(out[s].LogProbs, lp[s])
			switch {
			case stop[tok[s]]:
				done[s], out[s].Stopped = true, true
			case len(out[s].Tokens) >= limit[s]:
				done[s], out[s].Truncated = true, true
			default:
				active = true
			}
		}
		if !active {
			break
		}
		// Decode step: feed the sampled tokens (finished sequences feed
		// theirs too and are ignored; their cache slot stays in range).
		sl, ln := make([]int32, S), make([]int32, S)
		for s := range S {
			p := min(cache.Lens[s], int32(c.MaxSeq-1))
			sl[s] = int32(s*c.MaxSeq) + p
			ln[s] = p + 1
			cache.Lens[s] = p + 1
		}
		be.UploadI32(dec.ids, tok)
		be.UploadI32(dec.pos, lnMinus1(ln))
		be.UploadI32(cache.slots, sl)
		be.UploadI32(cache.lens, ln)
		m.forward(dec, cache, false)
		be.Copy(hf, dec.x[c.Layers])
	}
	return out, nil
}

func lnMinus1(ln []int32) []int32 {
	p := make([]int32, len(ln))
	for i, l := range ln {
		p[i] = l - 1
	}
	return p
}
