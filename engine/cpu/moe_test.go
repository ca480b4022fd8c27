package cpu

import (
	"math"
	"slices"
	"testing"
)

// routed returns a routing of rows tokens to k of nExperts experts, from
// RouterTopK on separated logits, and its dispatch.
func routed(t *testing.T, rows, nExperts, k int) (w []float32, e, perm, inv []int32, offsets []int) {
	t.Helper()
	b := New()
	w, e = make([]float32, rows*k), make([]int32, rows*k)
	b.RouterTopK(wrap(w), wrapI(e), tf(make([]float32, rows*nExperts)), tf(separatedLogits(21, rows, nExperts)), rows, nExperts, k)
	perm, inv, off := make([]int32, rows*k), make([]int32, rows*k), make([]int32, nExperts+1)
	b.RouterDispatch(wrapI(perm), wrapI(inv), wrapI(off), wrapI(e), rows, nExperts, k)
	for _, o := range off {
		offsets = append(offsets, int(o))
	}
	return w, e, perm, inv, offsets
}

func TestRouterDispatch(t *testing.T) {
	const rows, nExperts, k = 10, 4, 2
	_, e, perm, inv, offsets := routed(t, rows, nExperts, k)
	if offsets[0] != 0 || offsets[nExperts] != rows*k {
		t.Fatalf("offsets %v do not span [0, %d]", offsets, rows*k)
	}
	// Rebuild the expected order directly: for each expert, its (token,
	// slot) pairs in order.
	var want []int32
	for x := range nExperts {
		if offsets[x] != len(want) {
			t.Errorf("offsets[%d] = %d, want %d", x, offsets[x], len(want))
		}
		for a, ex := range e {
			if int(ex) == x {
				want = append(want, int32(a/k))
				if inv[a] != int32(len(want)-1) {
					t.Errorf("inv[%d] = %d, want %d", a, inv[a], len(want)-1)
				}
			}
		}
	}
	if !slices.Equal(perm, want) {
		t.Errorf("perm %v, want %v", perm, want)
	}
}

// TestMoERoundTrip runs dispatch, gather, a per-expert map and combine, and
// compares with applying each token's experts directly.
func TestMoERoundTrip(t *testing.T) {
	b := New()
	const rows, nExperts, k, dim = 10, 4, 2, 5
	w, e, perm, inv, offsets := routed(t, rows, nExperts, k)
	x := randVec(newRand(22), rows*dim, 1)
	expert := func(ex int, v float32) float32 { return float32(ex+1)*v + float32(ex) }

	xs := make([]float32, rows*k*dim)
	b.Gather(wrap(xs), tf(x), wrapI(perm), rows*k, dim)
	for ex := range nExperts {
		for i := offsets[ex] * dim; i < offsets[ex+1]*dim; i++ {
			xs[i] = expert(ex, xs[i])
		}
	}
	out := randVec(newRand(23), rows*dim, 1)
	want := f64s(out)
	b.Combine(wrap(out), wrap(xs), wrap(w), wrapI(inv), rows, k, dim)
	for tok := range rows {
		for j := range k {
			for d := range dim {
				want[tok*dim+d] += float64(w[tok*k+j] * expert(int(e[tok*k+j]), x[tok*dim+d]))
			}
		}
	}
	checkClose(t, "dispatch-gather-combine", out, want, 1e-6)
}

func TestGatherBackward(t *testing.T) {
	b := New()
	const rows, nExperts, k, dim = 9, 4, 3, 4
	_, _, perm, inv, _ := routed(t, rows, nExperts, k)
	r := newRand(24)
	x := randVec(r, rows*dim, 1)
	c := randVec(r, rows*k*dim, 1)
	dx := make([]float32, rows*dim)
	backward := func() { b.GatherBackward(wrap(dx), tf(c), wrapI(inv), rows, k, dim) }
	backward()
	x64 := f64s(x)
	checkGrad(t, "GatherBackward", dx, x64, func() float64 { return linear(c, refGather(x64, perm, dim)) })
	checkAccumulates(t, "GatherBackward", backward, dx)
}

func TestCombineBackward(t *testing.T) {
	b := New()
	const rows, nExperts, k, dim = 9, 4, 2, 6
	w, _, _, inv, _ := routed(t, rows, nExperts, k)
	r := newRand(25)
	y := randVec(r, rows*k*dim, 1)
	c := randVec(r, rows*dim, 1)
	dy, dw := make([]float32, rows*k*dim), make([]float32, rows*k)
	backward := func() { b.CombineBackward(wrap(dy), wrap(dw), tf(c), tf(y), wrap(w), wrapI(inv), rows, k, dim) }
	backward()
	y64, w64 := f64s(y), f64s(w)
	loss := func() float64 { return linear(c, refCombine(y64, w64, inv, rows, k, dim)) }
	checkGrad(t, "CombineBackward dy", dy, y64, loss)
	checkGrad(t, "CombineBackward dweights", dw, w64, loss)
	checkAccumulates(t, "CombineBackward", backward, dy, dw)
}

func TestScatterRows(t *testing.T) {
	b := New()
	const dim = 3
	dst := make([]float32, 5*dim)
	src := []float32{1, 2, 3, 4, 5, 6}
	b.ScatterRows(wrap(dst), tf(src), ti([]int32{4, 1}), 2, dim)
	want := []float32{0, 0, 0, 4, 5, 6, 0, 0, 0, 0, 0, 0, 1, 2, 3}
	if !slices.Equal(dst, want) {
		t.Errorf("ScatterRows gave %v, want %v", dst, want)
	}
}

// TestRouterReplay: replaying the router's own choice rewrites its weights
// bit for bit; replaying other experts gives their softmax renormalised
// over the replayed set, in replay order, whose gradient
// RouterTopKBackward computes; rows marked −1 keep the router's choice;
// a repeated or out-of-range expert panics.
func TestRouterReplay(t *testing.T) {
	b := New()
	const rows, nExperts, k = 6, 5, 2
	logits := separatedLogits(31, rows, nExperts)
	probs := make([]float32, rows*nExperts)
	w, e := make([]float32, rows*k), make([]int32, rows*k)
	b.RouterTopK(wrap(w), wrapI(e), wrap(probs), tf(logits), rows, nExperts, k)
	w0, e0 := slices.Clone(w), slices.Clone(e)
	b.RouterReplay(wrap(w), wrapI(e), tf(probs), ti(slices.Clone(e0)), rows, nExperts, k)
	if firstDiff(w, w0) >= 0 || !slices.Equal(e, e0) {
		t.Fatalf("replaying the router's own choice changed it: %v %v, was %v %v", w, e, w0, e0)
	}

	// Replay the two least probable experts, in increasing order, except
	// in row 2, which keeps its own.
	replay := make([]int32, rows*k)
	for r := range rows {
		p := probs[r*nExperts : (r+1)*nExperts]
		order := []int32{0, 1, 2, 3, 4}
		slices.SortStableFunc(order, func(a, c int32) int {
			if p[a] < p[c] {
				return -1
			}
			if p[a] > p[c] {
				return 1
			}
			return 0
		})
		copy(replay[r*k:], order[:k])
	}
	replay[2*k], replay[2*k+1] = -1, -1
	b.RouterReplay(wrap(w), wrapI(e), tf(probs), ti(replay), rows, nExperts, k)
	ref := func(x []float64) []float64 { // weights of the replayed experts as a function of the logits
		out := make([]float64, rows*k)
		for r := range rows {
			ex := replay[r*k : (r+1)*k]
			if ex[0] < 0 {
				ex = e0[r*k : (r+1)*k]
			}
			var s float64
			for _, i := range ex {
				s += math.Exp(x[r*nExperts+int(i)])
			}
			for j, i := range ex {
				out[r*k+j] = math.Exp(x[r*nExperts+int(i)]) / s
			}
		}
		return out
	}
	x64 := f64s(logits)
	checkClose(t, "RouterReplay weights", w, ref(x64), fwdTol)
	for r := range rows {
		want := replay[r*k : (r+1)*k]
		if r == 2 {
			want = e0[r*k : (r+1)*k]
		}
		if !slices.Equal(e[r*k:(r+1)*k], want) {
			t.Errorf("row %d: experts %v, want %v", r, e[r*k:(r+1)*k], want)
		}
	}
	c := randVec(newRand(32), rows*k, 1)
	dl := make([]float32, rows*nExperts)
	b.RouterTopKBackward(wrap(dl), tf(c), tf(w), ti(e), tf(probs), rows, nExperts, k)
	checkGrad(t, "replayed weights", dl, x64, func() float64 { return linear(c, ref(x64)) })

	bad := slices.Clone(replay)
	bad[1] = bad[0]
	mustPanic(t, "twice", func() { b.RouterReplay(wrap(w), wrapI(e), tf(probs), ti(bad), rows, nExperts, k) })
	bad[1] = nExperts
	mustPanic(t, "out of range", func() { b.RouterReplay(wrap(w), wrapI(e), tf(probs), ti(bad), rows, nExperts, k) })
}
