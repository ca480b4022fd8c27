package moe

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/moerl/moerl/engine/cpu"
)

// TestGorgoniaGradients checks the hand-written backward of a one-layer
// model against gorgonia's symbolic differentiation of the same model
// written as a float64 expression graph: the log-probs agree to 1e-5 and
// every parameter's gradient (the embedding table included, which carries
// the gradient into the block's input) to a relative error of 1e-4.
//
// The loss is Σ_i c_i·logp_i with the load-balancing term off. Top-k routing
// is a discrete choice with no gradient, so the graph takes the chosen
// experts as a constant 0/1 mask and differentiates only through the
// renormalised softmax weights, as the model's backward does.
func TestGorgoniaGradients(t *testing.T) {
	for _, dense := range []bool{false, true} {
		t.Run(fmt.Sprintf("dense=%v", dense), func(t *testing.T) {
			cfg := tinyConfig(dense)
			cfg.Layers, cfg.AuxLossCoef = 1, 0
			be := cpu.New()
			m, err := New(cfg, be, 11)
			if err != nil {
				t.Fatal(err)
			}
			B, T := 2, 6
			N := B * T
			rng := rand.New(rand.NewPCG(4, 4))
			ids, targets := randomIDs(rng, N, cfg.Vocab), randomIDs(rng, N, cfg.Vocab)
			c := make([]float32, N)
			for i := range c {
				c[i] = float32(rng.NormFloat64())
			}

			a := m.NewActs(B, T)
			m.ZeroGrad()
			logp := slices.Clone(m.Forward(a, ids, targets, ForwardOptions{}))
			m.Backward(a, c)
			grads := m.HostGrads()

			in := refInput{m: m, ids: ids, targets: targets, c: c, B: B, T: T}
			if !dense {
				// The router's probabilities do not depend on the mask,
				// so a first forward with every expert on yields them.
				probe, err := buildRef(in)
				if err != nil {
					t.Fatal(err)
				}
				if err := probe.run(false); err != nil {
					t.Fatal(err)
				}
				mask, chosen, gap := topKMask(probe.probsV.Data().([]float64), N, cfg.Experts, cfg.TopK)
				// float32 rounding moves the router's probabilities by
				// ~1e-7; a gap well above that keeps both sides' choices equal.
				t.Logf("routing: smallest top-k gap %.3g", gap)
				if gap < 1e-4 {
					t.Fatalf("routing is near a tie (smallest gap between the k-th and (k+1)-th probability %.3g): pick another seed", gap)
				}
				got := make([]int32, N*cfg.TopK)
				be.DownloadI32(got, a.layers[0].experts)
				if !slices.Equal(got, chosen) {
					t.Fatalf("the model routed tokens to experts %v, the float64 reference to %v", got, chosen)
				}
				in.mask = mask
			}
			ref, err := buildRef(in)
			if err != nil {
				t.Fatal(err)
			}
			if err := ref.run(true); err != nil {
				t.Fatal(err)
			}

			refLogp := ref.logpV.Data().([]float64)
			var worst float64
			for i := range logp {
				worst = math.Max(worst, math.Abs(float64(logp[i])-refLogp[i]))
			}
			t.Logf("log-probs: max |Δ| %.2g", worst)
			if worst > 1e-5 || math.IsNaN(worst) {
				t.Errorf("log-probs differ from the reference by up to %.3g, want ≤ 1e-5", worst)
			}

			for _, p := range m.ParamList() {
				want := ref.grad(p)
				got := grads[p.Off : p.Off+p.Len()]
				if len(want) != len(got) {
					t.Fatalf("%s: reference gradient has %d elements, the model's %d", p.Name, len(want), len(got))
				}
				var diff, norm float64
				for i, w := range want {
					d := float64(got[i]) - w
					diff += d * d
					norm += w * w
				}
				rel := math.Sqrt(diff / norm)
				t.Logf("%-16s ‖g‖ %.3e  rel err %.2e", p.Name, math.Sqrt(norm), rel)
				if !(rel < 1e-4) || norm == 0 {
					t.Errorf("%s: gradient differs from gorgonia's by relative error %.3g (‖g_ref‖ = %.3g), want < 1e-4", p.Name, rel, math.Sqrt(norm))
				}
			}
		})
	}
}

// topKMask picks, per row of probs, the k largest entries (ties: lower
// index first, the engine's rule) and returns them as a rows×n 0/1 mask and
// as a rows×k list in decreasing order, with the smallest gap between a
// row's k-th and (k+1)-th probability.
func topKMask(probs []float64, rows, n, k int) (mask []float64, chosen []int32, gap float64) {
	mask = make([]float64, rows*n)
	gap = math.Inf(1)
	for r := range rows {
		p := probs[r*n : (r+1)*n]
		order := make([]int, n)
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(i, j int) bool { return p[order[i]] > p[order[j]] })
		for _, e := range order[:k] {
			mask[r*n+e] = 1
			chosen = append(chosen, int32(e))
		}
		if k < n {
			gap = math.Min(gap, p[order[k-1]]-p[order[k]])
		}
	}
	return mask, chosen, gap
}

// refInput is what the reference graph is built from: the model's weights
// and one batch with its loss coefficients. mask (rows×experts) is the
// routing; nil turns every expert on.
type refInput struct {
	m       *Model
	ids     []int32
	targets []int32
	c       []float32
	B, T    int
	mask    []float64
}

// refGraph is the model as a gorgonia expression graph. The tape machine
// reuses a node's memory once the node has no consumers left, so values
// are read out with G.Read (a copy taken when the node is computed), never
// with Node.Value after the run.
type refGraph struct {
	g      *G.ExprGraph
	loss   *G.Node
	logp   *G.Node              // N×1 log-probs of the targets
	probs  *G.Node              // N×E router probabilities (nil when dense)
	params map[*Param][]*G.Node // a parameter's leaves, whose gradients concatenate to its gradient
	wrt    []*G.Node            // every parameter leaf

	logpV, probsV G.Value
	gradV         map[*G.Node]*G.Value
}

// refBuilder makes the graph's leaves. Every leaf, constants included, is an
// input node with a unique name: gorgonia merges nodes by hash, and a
// constant tensor's hash is its printed value, which elides the middle of
// large tensors.
type refBuilder struct {
	g *G.ExprGraph
	n int
}

func (b *refBuilder) leaf(name string, rows, cols int, data []float64) *G.Node {
	if len(data) != rows*cols {
		panic(fmt.Sprintf("leaf %s: %d values for %d×%d", name, len(data), rows, cols))
	}
	b.n++
	return G.NewMatrix(b.g, tensor.Float64, G.WithShape(rows, cols), G.WithName(fmt.Sprintf("%s#%d", name, b.n)),
		G.WithValue(tensor.New(tensor.WithShape(rows, cols), tensor.WithBacking(data))))
}

// matrix makes a rows×cols constant with entries f(i, j).
func (b *refBuilder) matrix(name string, rows, cols int, f func(i, j int) float64) *G.Node {
	data := make([]float64, rows*cols)
	for i := range rows {
		for j := range cols {
			data[i*cols+j] = f(i, j)
		}
	}
	return b.leaf(name, rows, cols, data)
}

func (b *refBuilder) fill(rows, cols int, v float64) *G.Node {
	return b.matrix("fill", rows, cols, func(int, int) float64 { return v })
}

func gMul(x, y *G.Node) *G.Node { return G.Must(G.Mul(x, y)) }
func gHad(x, y *G.Node) *G.Node { return G.Must(G.HadamardProd(x, y)) }
func gAdd(x, y *G.Node) *G.Node { return G.Must(G.Add(x, y)) }
func gDiv(x, y *G.Node) *G.Node { return G.Must(G.HadamardDiv(x, y)) }

// refRMSNorm normalises x (rows×cols) by the root mean square of each group
// of columns that avg (cols×cols, 1/group within a group's block) averages
// over, and scales by gain (rows×cols). It divides by Sqrt rather than
// multiplying by InverseSqrt: gorgonia v0.9.18's InverseSqrt has a wrong
// symbolic derivative (it divides by y³ where it should multiply).
func refRMSNorm(x, avg, gain *G.Node, eps float64) *G.Node {
	ms := gMul(G.Must(G.Square(x)), avg)
	rms := G.Must(G.Sqrt(gAdd(ms, G.NewConstant(eps))))
	return gHad(gDiv(x, rms), gain)
}

// buildRef writes the one-layer model of in.m as a graph over its weights
// converted to float64, with the routing mask as a constant.
func buildRef(in refInput) (ref *refGraph, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("build gorgonia reference graph: %v", r)
		}
	}()
	m := in.m
	cfg, lay := m.Cfg, m.lay
	N, d, H, hd, h, V, E := len(in.ids), cfg.DModel, cfg.Heads, cfg.HeadDim(), cfg.ExpertHidden, cfg.Vocab, cfg.NumExperts()
	half := hd / 2
	host := m.HostParams()
	b := &refBuilder{g: G.NewGraph()}
	ref = &refGraph{g: b.g, params: map[*Param][]*G.Node{}}

	// param makes p's leaves: count blocks of rows×cols, in buffer order.
	param := func(p *Param, count, rows, cols int) []*G.Node {
		if count*rows*cols != p.Len() {
			panic(fmt.Sprintf("%s: shape %v is not %d×%d×%d", p.Name, p.Shape, count, rows, cols))
		}
		var nodes []*G.Node
		for k := range count {
			w := make([]float64, rows*cols)
			for i := range w {
				w[i] = float64(host[p.Off+k*rows*cols+i])
			}
			nodes = append(nodes, b.leaf(p.Name, rows, cols, w))
		}
		ref.params[p] = nodes
		ref.wrt = append(ref.wrt, nodes...)
		return nodes
	}
	ones := func(rows, cols int) *G.Node { return b.fill(rows, cols, 1) }
	// rowsOf broadcasts a 1×cols gain to N rows.
	rowsOf := func(w *G.Node) *G.Node { return gMul(ones(N, 1), w) }
	avgAll := b.fill(d, d, 1/float64(d))
	avgHead := b.matrix("avg_head", d, d, func(i, j int) float64 {
		if i/hd == j/hd {
			return 1 / float64(hd)
		}
		return 0
	})
	// tileHeads copies a 1×hd row into each head of a 1×d row.
	tileHeads := b.matrix("tile_heads", hd, d, func(i, j int) float64 {
		if j%hd == i {
			return 1
		}
		return 0
	})
	eps := cfg.NormEps

	embed := param(lay.embed, 1, V, d)[0]
	oneHot := func(name string, idx []int32) *G.Node {
		return b.matrix(name, N, V, func(i, j int) float64 {
			if int(idx[i]) == j {
				return 1
			}
			return 0
		})
	}
	x := gMul(oneHot("ids", in.ids), embed)

	w := &lay.layers[0]
	wq, wk, wv, wo := param(w.wq, 1, d, d)[0], param(w.wk, 1, d, d)[0], param(w.wv, 1, d, d)[0], param(w.wo, 1, d, d)[0]
	var router *G.Node
	if !cfg.DenseFFN {
		router = param(w.router, 1, d, E)[0]
	}
	w1, w3, w2 := param(w.w1, E, d, h), param(w.w3, E, d, h), param(w.w2, E, h, d)
	head := param(lay.head, 1, d, V)[0]
	attnNorm, qNorm, kNorm := param(w.attnNorm, 1, 1, d)[0], param(w.qNorm, 1, 1, hd)[0], param(w.kNorm, 1, 1, hd)[0]
	ffnNorm, finalNorm := param(w.ffnNorm, 1, 1, d)[0], param(lay.finalNorm, 1, 1, d)[0]

	// Attention block.
	h1 := refRMSNorm(x, avgAll, rowsOf(attnNorm), eps)
	q := refRMSNorm(gMul(h1, wq), avgHead, rowsOf(gMul(qNorm, tileHeads)), eps)
	k := refRMSNorm(gMul(h1, wk), avgHead, rowsOf(gMul(kNorm, tileHeads)), eps)
	v := gMul(h1, wv)
	// RoPE: x·cos + (x·rot)·sin, where x·rot maps each head's (x1, x2) to (−x2, x1).
	angle := func(i, j int) float64 {
		pos := float64(i % in.T)
		return pos * math.Pow(cfg.RopeTheta, -float64(2*(j%hd%half))/float64(hd))
	}
	cos := b.matrix("cos", N, d, func(i, j int) float64 { return math.Cos(angle(i, j)) })
	sin := b.matrix("sin", N, d, func(i, j int) float64 { return math.Sin(angle(i, j)) })
	rot := b.matrix("rot", d, d, func(i, j int) float64 {
		switch {
		case i/hd != j/hd:
			return 0
		case i%hd == j%hd+half:
			return -1
		case i%hd+half == j%hd:
			return 1
		}
		return 0
	})
	rope := func(x *G.Node) *G.Node { return gAdd(gHad(x, cos), gHad(gMul(x, rot), sin)) }
	q, k = rope(q), rope(k)

	// Per (sequence, head): select rows with R (T×N) and columns with P (d×hd).
	// gorgonia's SoftMax shifts each row by a maximum seeded from the
	// tensor's first element rather than the row's; that is harmless here,
	// where the normed q and k bound every score by sqrt(headDim).
	causal := b.matrix("causal", in.T, in.T, func(i, j int) float64 {
		if j > i {
			return -1e9
		}
		return 0
	})
	scale := G.NewConstant(1 / math.Sqrt(float64(hd)))
	var att *G.Node
	for s := range in.B {
		R := b.matrix("rows", in.T, N, func(i, j int) float64 { return refIndicator(j == s*in.T+i) })
		Rt := b.matrix("rows_t", N, in.T, func(i, j int) float64 { return refIndicator(i == s*in.T+j) })
		for hh := range H {
			P := b.matrix("cols", d, hd, func(i, j int) float64 { return refIndicator(i == hh*hd+j) })
			Pt := b.matrix("cols_t", hd, d, func(i, j int) float64 { return refIndicator(j == hh*hd+i) })
			qs, ks, vs := gMul(gMul(R, q), P), gMul(gMul(R, k), P), gMul(gMul(R, v), P)
			scores := gAdd(gHad(gMul(qs, G.Must(G.Transpose(ks))), scale), causal)
			o := gMul(gMul(Rt, gMul(G.Must(G.SoftMax(scores)), vs)), Pt)
			if att == nil {
				att = o
			} else {
				att = gAdd(att, o)
			}
		}
	}
	x2 := gAdd(x, gMul(att, wo))

	// FFN block: every expert on every token, weighted by the masked,
	// renormalised router probabilities (1 for the dense FFN).
	h2 := refRMSNorm(x2, avgAll, rowsOf(ffnNorm), eps)
	expert := func(e int) *G.Node {
		g := gMul(h2, w1[e])
		return gMul(gHad(gHad(g, G.Must(G.Sigmoid(g))), gMul(h2, w3[e])), w2[e])
	}
	out := x2
	if cfg.DenseFFN {
		out = gAdd(out, expert(0))
	} else {
		ref.probs = G.Must(G.SoftMax(gMul(h2, router)))
		mask := in.mask
		if mask == nil {
			mask = make([]float64, N*E)
			for i := range mask {
				mask[i] = 1
			}
		}
		picked := gHad(ref.probs, b.leaf("mask", N, E, mask))
		weights := gDiv(picked, gMul(picked, ones(E, E)))
		for e := range E {
			sel := b.matrix("expert_col", E, d, func(i, _ int) float64 { return refIndicator(i == e) })
			out = gAdd(out, gHad(gMul(weights, sel), expert(e)))
		}
	}

	// Head: final norm, logits, log-softmax at the targets.
	logits := gMul(refRMSNorm(out, avgAll, rowsOf(finalNorm), eps), head)
	logsm := G.Must(G.LogSoftMax(logits))
	targets := oneHot("targets", in.targets)
	ref.logp = gMul(gHad(logsm, targets), ones(V, 1))
	weighted := b.matrix("coef", N, V, func(i, j int) float64 { return refIndicator(int(in.targets[i]) == j) * float64(in.c[i]) })
	ref.loss = G.Must(G.Sum(gHad(logsm, weighted)))
	return ref, nil
}

func refIndicator(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// run evaluates the graph, and with grads also the loss's gradient with
// respect to every parameter leaf.
func (r *refGraph) run(grads bool) error {
	G.Read(r.logp, &r.logpV)
	if r.probs != nil {
		G.Read(r.probs, &r.probsV)
	}
	if grads {
		gs, err := G.Grad(r.loss, r.wrt...)
		if err != nil {
			return fmt.Errorf("gorgonia grad: %w", err)
		}
		r.gradV = map[*G.Node]*G.Value{}
		for i, n := range r.wrt {
			v := new(G.Value)
			G.Read(gs[i], v)
			r.gradV[n] = v
		}
	}
	vm := G.NewTapeMachine(r.g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		return fmt.Errorf("gorgonia run: %w", err)
	}
	return nil
}

// grad is p's gradient, its leaves' gradients concatenated in buffer order.
func (r *refGraph) grad(p *Param) []float64 {
	var out []float64
	for _, n := range r.params[p] {
		out = append(out, (*r.gradV[n]).Data().([]float64)...)
	}
	return out
}
