package cpu

import (
	"fmt"
	"math"
	"sync"

	"github.com/moerl/moerl/engine"
)

// Embedding gathers out[i] = table[ids[i]]; every id must be a row of table.
func (*Backend) Embedding(out, table, ids *engine.Tensor, rows, dim int) {
	os := f32("Embedding", "out", out, rows*dim)
	is := i32("Embedding", "ids", ids, rows)
	ts := table.F
	vocab := len(ts) / max(dim, 1)
	for _, id := range is {
		checkIndex("Embedding", "id", id, vocab)
	}
	parallelFor(rows, grain(dim), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			id := int(is[i])
			copy(os[i*dim:(i+1)*dim], ts[id*dim:(id+1)*dim])
		}
	})
}

// EmbeddingBackward accumulates dtable[ids[i]] += dout[i]. The columns are
// split among goroutines and each adds the rows in index order, so every
// element of dtable sums its contributions in the same order always.
func (*Backend) EmbeddingBackward(dtable, dout, ids *engine.Tensor, rows, dim int) {
	ds := f32("EmbeddingBackward", "dout", dout, rows*dim)
	is := i32("EmbeddingBackward", "ids", ids, rows)
	ts := dtable.F
	vocab := len(ts) / max(dim, 1)
	for _, id := range is {
		checkIndex("EmbeddingBackward", "id", id, vocab)
	}
	// Columns in multiples of 16 keep each goroutine on whole cache lines.
	cols := max(16, (grain(rows)+15)&^15)
	parallelFor(dim, cols, func(lo, hi int) {
		for i, id := range is {
			addTo(ts[int(id)*dim+lo:int(id)*dim+hi], ds[i*dim+lo:i*dim+hi])
		}
	})
}

// RMSNorm computes out = x·rstd·w with rstd = 1/sqrt(mean(x²)+eps) per row,
// the mean of squares in float64.
func (*Backend) RMSNorm(out, rstd, x, w *engine.Tensor, rows, dim int, eps float32) {
	n := rows * dim
	os, rs := f32("RMSNorm", "out", out, n), f32("RMSNorm", "rstd", rstd, rows)
	xs, ws := f32("RMSNorm", "x", x, n), f32("RMSNorm", "w", w, dim)
	parallelFor(rows, grain(3*dim), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			rs[r] = rmsNormRow(os[r*dim:(r+1)*dim], xs[r*dim:(r+1)*dim], ws, eps)
		}
	})
}

// rmsNormRow normalises one row x into out (both dim long, w at least as
// long) and returns its rstd: the one place RMSNorm's arithmetic is
// written, so that ResidualRMSNorm gives RMSNorm's bits.
func rmsNormRow(out, x, w []float32, eps float32) float32 {
	rinv := float32(1 / math.Sqrt(sumSquares(x)/float64(len(x))+float64(eps)))
	out = out[:len(x)]
	w = w[:len(x)]
	for j, v := range x {
		out[j] = v * rinv * w[j]
	}
	return rinv
}

// ResidualRMSNorm computes sum = x + r and then RMSNorm of sum, row by row
// while the row is in cache. Its adds are Add's float32 adds and its norm
// is RMSNorm's row code, so its bits are theirs.
func (*Backend) ResidualRMSNorm(sum, out, rstd, x, r, w *engine.Tensor, rows, dim int, eps float32) {
	const op = "ResidualRMSNorm"
	switch {
	case rows < 0 || dim < 0:
		panic(fmt.Sprintf("cpu: %s: negative size rows=%d dim=%d", op, rows, dim))
	case rows > 0 && dim == 0:
		panic(fmt.Sprintf("cpu: %s: dim must be positive", op))
	}
	n := rows * dim
	ss, os, rs := f32(op, "sum", sum, n), f32(op, "out", out, n), f32(op, "rstd", rstd, rows)
	xs, res, ws := f32(op, "x", x, n), f32(op, "r", r, n), f32(op, "w", w, dim)
	writes := []region{{"sum", ss}, {"out", os}, {"rstd", rs}}
	all := append(writes, region{"x", xs}, region{"r", res}, region{"w", ws})
	for i, o := range writes {
		for _, a := range all[i+1:] {
			// sum may be x or r exactly: each element reads its own before it is written.
			if !(o.name == "sum" && (a.name == "x" || a.name == "r") && sameStart(ss, a.s)) {
				disjoint(op, o, a)
			}
		}
	}
	parallelFor(rows, grain(4*dim), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			sr, xr, rr := ss[i*dim:(i+1)*dim], xs[i*dim:(i+1)*dim], res[i*dim:(i+1)*dim]
			for j := range sr {
				sr[j] = xr[j] + rr[j]
			}
			rs[i] = rmsNormRow(os[i*dim:(i+1)*dim], sr, ws, eps)
		}
	})
}

// RMSNormBackward accumulates into dx and dw. With y = x·r·w and
// r = (mean(x²)+eps)^(-1/2):
//
//	dx = r·w·dy − x·r³·(Σ dy·w·x)/dim,   dw = Σ_rows dy·x·r.
//
// dw is summed per fixed chunk of rows in float64, then over chunks in order.
func (*Backend) RMSNormBackward(dx, dw, dout, x, w, rstd *engine.Tensor, rows, dim int) {
	const op = "RMSNormBackward"
	n := rows * dim
	dxs, dws := f32(op, "dx", dx, n), f32(op, "dw", dw, dim)
	dos, xs := f32(op, "dout", dout, n), f32(op, "x", x, n)
	ws, rs := f32(op, "w", w, dim), f32(op, "rstd", rstd, rows)
	g := grain(6 * dim)
	chunks := (rows + g - 1) / g
	s := getScratch(0, chunks*dim, 0)
	defer putScratch(s)
	parts := s.f64
	parallelFor(rows, g, func(lo, hi int) {
		part := parts[lo/g*dim : (lo/g+1)*dim]
		clear(part)
		for r := lo; r < hi; r++ {
			xr := xs[r*dim : (r+1)*dim]
			dr := dos[r*dim : (r+1)*dim][:len(xr)]
			dxr := dxs[r*dim : (r+1)*dim][:len(xr)]
			ws := ws[:len(xr)]
			part := part[:len(xr)]
			ri := rs[r]
			var c float64
			for j, v := range xr {
				c += float64(dr[j]) * float64(ws[j]) * float64(v)
			}
			k := float32(c) * ri * ri * ri / float32(dim)
			for j, v := range xr {
				dxr[j] += ri*ws[j]*dr[j] - v*k
				part[j] += float64(dr[j] * v * ri)
			}
		}
	})
	for j := range dws {
		var t float64
		for c := range chunks {
			t += parts[c*dim+j]
		}
		dws[j] += float32(t)
	}
}

// ropeCache keeps cos and sin of pos·theta^(−2i/headDim), computed in
// float64, for every position seen so far.
type ropeCache struct {
	mu     sync.Mutex
	tables map[ropeKey]*ropeTable
}

type ropeKey struct {
	theta   float32
	headDim int
}

// ropeTable is immutable once built; a longer one replaces it.
type ropeTable struct {
	positions int
	cos, sin  []float32 // positions × headDim/2
}

func (c *ropeCache) table(theta float32, headDim, maxPos int) *ropeTable {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := ropeKey{theta, headDim}
	t := c.tables[key]
	if t != nil && t.positions > maxPos {
		return t
	}
	n := max(maxPos+1, 256)
	if t != nil {
		n = max(n, 2*t.positions)
	}
	half := headDim / 2
	t = &ropeTable{positions: n, cos: make([]float32, n*half), sin: make([]float32, n*half)}
	for i := range half {
		freq := math.Pow(float64(theta), -float64(2*i)/float64(headDim))
		for p := range n {
			s, co := math.Sincos(float64(p) * freq)
			t.cos[p*half+i], t.sin[p*half+i] = float32(co), float32(s)
		}
	}
	if c.tables == nil {
		c.tables = make(map[ropeKey]*ropeTable)
	}
	c.tables[key] = t
	return t
}

// RoPE rotates x in place; see engine.Backend.
func (b *Backend) RoPE(x, pos *engine.Tensor, rows, heads, headDim int, theta float32) {
	b.rotate("RoPE", x, pos, rows, heads, headDim, theta, 1)
}

// RoPEBackward rotates dx in place by the opposite angle.
func (b *Backend) RoPEBackward(dx, pos *engine.Tensor, rows, heads, headDim int, theta float32) {
	b.rotate("RoPEBackward", dx, pos, rows, heads, headDim, theta, -1)
}

// rotate turns each (first half, second half) pair of every head by
// sign·pos·theta^(−2i/headDim).
func (b *Backend) rotate(op string, x, pos *engine.Tensor, rows, heads, headDim int, theta, sign float32) {
	if headDim%2 != 0 {
		panic("cpu: " + op + ": odd head dimension")
	}
	xs := f32(op, "x", x, rows*heads*headDim)
	ps := i32(op, "pos", pos, rows)
	maxPos := int32(0)
	for _, p := range ps {
		if p < 0 {
			checkIndex(op, "position", p, math.MaxInt32)
		}
		maxPos = max(maxPos, p)
	}
	t := b.rope.table(theta, headDim, int(maxPos))
	half := headDim / 2
	width := heads * headDim
	parallelFor(rows, grain(3*width), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			p := int(ps[r])
			cos, sin := t.cos[p*half:(p+1)*half], t.sin[p*half:(p+1)*half]
			sin = sin[:len(cos)]
			row := xs[r*width : (r+1)*width]
			for h := 0; h < width; h += headDim {
				x1 := row[h : h+half][:len(cos)]
				x2 := row[h+half : h+headDim][:len(cos)]
				for i, c := range cos {
					s := sign * sin[i]
					a, b := x1[i], x2[i]
					x1[i] = a*c - b*s
					x2[i] = a*s + b*c
				}
			}
		}
	})
}
