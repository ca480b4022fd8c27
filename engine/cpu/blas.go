package cpu

import (
	"fmt"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/engine/cpu/gemm"
)

// span is the number of elements a rows×cols matrix with row stride ld
// occupies; it panics when ld is shorter than a row.
func span(op, name string, rows, cols, ld int) int {
	if ld < cols {
		panic(fmt.Sprintf("cpu: %s: %s row stride %d shorter than its %d columns", op, name, ld, cols))
	}
	return (rows-1)*ld + cols
}

// operand returns the slice of t that a stored matrix at offset off, batch
// matrices stride apart, occupies.
func operand(op, name string, t *engine.Tensor, off, stride, batch, rows, cols, ld int) []float32 {
	if off < 0 || stride < 0 {
		panic(fmt.Sprintf("cpu: %s: negative offset %d or stride %d for %s", op, off, stride, name))
	}
	n := off + (batch-1)*stride + span(op, name, rows, cols, ld)
	return f32(op, name, t, n)[off:]
}

// dims returns the stored shape of op(X) when op(X) is rows×cols.
func dims(trans bool, rows, cols int) (int, int) {
	if trans {
		return cols, rows
	}
	return rows, cols
}

// Gemm computes C = alpha·op(A)·op(B) + beta·C with gemm.Sgemm.
func (*Backend) Gemm(transA, transB bool, m, n, k int, alpha float32,
	a *engine.Tensor, offA, lda int, b *engine.Tensor, offB, ldb int,
	beta float32, c *engine.Tensor, offC, ldc int) {
	if m <= 0 || n <= 0 {
		if m < 0 || n < 0 || k < 0 {
			panic(fmt.Sprintf("cpu: Gemm: negative size m=%d n=%d k=%d", m, n, k))
		}
		return
	}
	if k < 0 {
		panic(fmt.Sprintf("cpu: Gemm: negative size k=%d", k))
	}
	cs := operand("Gemm", "C", c, offC, 0, 1, m, n, ldc)
	if k == 0 {
		scaleMatrix(cs, m, n, ldc, beta)
		return
	}
	ar, ac := dims(transA, m, k)
	br, bc := dims(transB, k, n)
	as := operand("Gemm", "A", a, offA, 0, 1, ar, ac, lda)
	bs := operand("Gemm", "B", b, offB, 0, 1, br, bc, ldb)
	gemm.Sgemm(transA, transB, m, n, k, alpha, as, lda, bs, ldb, beta, cs, ldc)
}

// scaleMatrix computes C = beta·C, or C = 0 when beta is 0: a product with
// k = 0, whose A and B hold nothing to check.
func scaleMatrix(c []float32, m, n, ldc int, beta float32) {
	for i := range m {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
		} else {
			scaleBy(row, beta)
		}
	}
}

// smallGemm is the number of multiply-adds under which GemmBatched runs
// the products of a batch in parallel rather than one after another:
// Sgemm spreads larger products over the cores itself.
const smallGemm = 1 << 18

// GemmBatched runs batch Gemms whose operands start stride elements apart.
// The products run in parallel when they are small and their C matrices do
// not overlap; a C stride of 0 accumulates them in batch order.
func (*Backend) GemmBatched(transA, transB bool, m, n, k int, alpha float32,
	a *engine.Tensor, offA, lda, strideA int, b *engine.Tensor, offB, ldb, strideB int,
	beta float32, c *engine.Tensor, offC, ldc, strideC int, batch int) {
	if m <= 0 || n <= 0 || batch <= 0 {
		if m < 0 || n < 0 || k < 0 || batch < 0 {
			panic(fmt.Sprintf("cpu: GemmBatched: negative size m=%d n=%d k=%d batch=%d", m, n, k, batch))
		}
		return
	}
	if k < 0 {
		panic(fmt.Sprintf("cpu: GemmBatched: negative size k=%d", k))
	}
	cs := operand("GemmBatched", "C", c, offC, strideC, batch, m, n, ldc)
	if k == 0 {
		for i := range batch {
			scaleMatrix(cs[i*strideC:], m, n, ldc, beta)
		}
		return
	}
	ar, ac := dims(transA, m, k)
	br, bc := dims(transB, k, n)
	as := operand("GemmBatched", "A", a, offA, strideA, batch, ar, ac, lda)
	bs := operand("GemmBatched", "B", b, offB, strideB, batch, br, bc, ldb)
	one := func(i int) {
		gemm.Sgemm(transA, transB, m, n, k, alpha, as[i*strideA:], lda, bs[i*strideB:], ldb, beta, cs[i*strideC:], ldc)
	}
	work := m * n * k
	if work >= smallGemm || strideC < span("GemmBatched", "C", m, n, ldc) {
		for i := range batch {
			one(i)
		}
		return
	}
	parallelFor(batch, grain(2*work), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			one(i)
		}
	})
}

// Add computes y += x over n elements.
func (*Backend) Add(y, x *engine.Tensor, n int) {
	ys, xs := f32("Add", "y", y, n), f32("Add", "x", x, n)
	parallelFor(n, chunkWork, func(lo, hi int) {
		addTo(ys[lo:hi], xs[lo:hi])
	})
}

// Scale computes x *= s over n elements.
func (*Backend) Scale(x *engine.Tensor, n int, s float32) {
	xs := f32("Scale", "x", x, n)
	parallelFor(n, chunkWork, func(lo, hi int) {
		scaleBy(xs[lo:hi], s)
	})
}

// sumSquaresChunk is the fixed chunk of SumSquares: partial sums over these
// many elements are added in chunk order.
const sumSquaresChunk = 1 << 14

// SumSquares returns Σ x² over n elements in float64: four interleaved sums
// per chunk of 16384 elements, then the chunk sums in order.
func (*Backend) SumSquares(x *engine.Tensor, n int) float64 {
	xs := f32("SumSquares", "x", x, n)
	chunks := (n + sumSquaresChunk - 1) / sumSquaresChunk
	s := getScratch(0, chunks, 0)
	defer putScratch(s)
	parts := s.f64
	parallelFor(n, sumSquaresChunk, func(lo, hi int) {
		parts[lo/sumSquaresChunk] = sumSquares(xs[lo:hi])
	})
	var total float64
	for _, p := range parts {
		total += p
	}
	return total
}

func sumSquares(x []float32) float64 {
	var s0, s1, s2, s3 float64
	for len(x) >= 4 {
		a, b, c, d := float64(x[0]), float64(x[1]), float64(x[2]), float64(x[3])
		s0 += a * a
		s1 += b * b
		s2 += c * c
		s3 += d * d
		x = x[4:]
	}
	for _, v := range x {
		s0 += float64(v) * float64(v)
	}
	return (s0 + s1) + (s2 + s3)
}

// GemmGrouped runs Gemm on each group's block of rows, group after group,
// so each group's result is the bits Gemm gives it alone.
func (b *Backend) GemmGrouped(transB bool, rows, n, k int, a, bm *engine.Tensor, strideB int, beta float32,
	c, offsets *engine.Tensor, groups int) {
	const op = "GemmGrouped"
	if rows < 0 || n < 0 || k < 0 || groups < 0 || strideB < 0 {
		panic(fmt.Sprintf("cpu: %s: negative size rows=%d n=%d k=%d groups=%d strideB=%d", op, rows, n, k, groups, strideB))
	}
	off := groupOffsets(op, offsets, groups, rows)
	ldb := n
	if transB {
		ldb = k
	}
	defer b.widened(false, &a, &bm)()
	for g := range groups {
		r0, m := int(off[g]), int(off[g+1]-off[g])
		if m == 0 {
			continue
		}
		b.Gemm(false, transB, m, n, k, 1, a, r0*k, k, bm, g*strideB, ldb, beta, c, r0*n, n)
	}
}

// GemmGroupedT accumulates Aᵀ·B over each group's rows into its matrix.
func (b *Backend) GemmGroupedT(rows, m, n int, a, aRows, bm, c, offsets *engine.Tensor, groups int) {
	const op = "GemmGroupedT"
	if rows < 0 || m < 0 || n < 0 || groups < 0 {
		panic(fmt.Sprintf("cpu: %s: negative size rows=%d m=%d n=%d groups=%d", op, rows, m, n, groups))
	}
	off := groupOffsets(op, offsets, groups, rows)
	defer b.widened(false, &a, &bm)()
	if aRows != nil {
		ga := b.gatherRows(op, a, aRows, rows, m)
		defer b.scratch.Put(ga)
		a = ga
	}
	for g := range groups {
		r0, kk := int(off[g]), int(off[g+1]-off[g])
		if kk == 0 {
			continue
		}
		b.Gemm(true, false, m, n, kk, 1, a, r0*m, m, bm, r0*n, n, 1, c, g*m*n, n)
	}
}

// GemmGroupedSwiGLU is GemmGrouped twice and SwiGLU, so its bits are theirs
// (bf16 g, u or s: theirs rounded, as Cast rounds; s from the unrounded g
// and u).
func (b *Backend) GemmGroupedSwiGLU(rows, n, k int, a, aRows, b1, b3 *engine.Tensor, strideB int, g, u, s,
	offsets *engine.Tensor, groups int) {
	const op = "GemmGroupedSwiGLU"
	if (g == nil) != (u == nil) {
		panic("cpu: " + op + ": g and u must be given or left out together")
	}
	if g == nil {
		g, u = b.scratchF32(rows*n), b.scratchF32(rows*n)
		defer b.scratch.Put(g)
		defer b.scratch.Put(u)
	}
	defer b.widened(true, &g, &u, &s)()
	fusedArgs(op, rows, n, k, groups, strideB, offsets, namedF32{"g", g}, namedF32{"u", u}, namedF32{"s", s})
	if aRows != nil {
		ga := b.gatherRows(op, a, aRows, rows, k)
		defer b.scratch.Put(ga)
		a = ga
	}
	b.GemmGrouped(false, rows, n, k, a, b1, strideB, 0, g, offsets, groups) // widens bf16 weights itself
	b.GemmGrouped(false, rows, n, k, a, b3, strideB, 0, u, offsets, groups)
	b.SwiGLU(s, g, u, rows*n)
}

// GemmGroupedSwiGLUBackward is GemmGrouped and SwiGLUBackward into zeroed
// gradients, so its bits are theirs (bf16 dg and du: theirs rounded; bf16
// dy, g and u: read widened); a nil ds is computed in scratch.
func (b *Backend) GemmGroupedSwiGLUBackward(rows, n, k int, dy, bm *engine.Tensor, strideB int, g, u, ds, dg, du,
	offsets *engine.Tensor, groups int) {
	if ds == nil {
		ds = b.scratchF32(rows * n)
		defer b.scratch.Put(ds)
	}
	defer b.widened(false, &dy, &g, &u)()
	defer b.widened(true, &dg, &du)()
	fusedArgs("GemmGroupedSwiGLUBackward", rows, n, k, groups, strideB, offsets,
		namedF32{"g", g}, namedF32{"u", u}, namedF32{"ds", ds}, namedF32{"dg", dg}, namedF32{"du", du})
	b.GemmGrouped(true, rows, n, k, dy, bm, strideB, 0, ds, offsets, groups)
	clear(dg.F[:rows*n])
	clear(du.F[:rows*n])
	b.SwiGLUBackward(dg, du, ds, g, u, rows*n)
}

// gatherRows gathers rows rows of dim floats of a, row r from row
// aRows[r], into a scratch tensor (returned to b.scratch by the caller):
// what Gather computes, for the grouped products that read their input
// through the dispatch permutation. On the CPU that is the same copy
// Gather made; a device backend reads the rows where they are instead.
func (b *Backend) gatherRows(op string, a, aRows *engine.Tensor, rows, dim int) *engine.Tensor {
	idx := i32(op, "aRows", aRows, rows)
	n := len(a.F) / max(dim, 1)
	for _, r := range idx {
		checkIndex(op, "aRows entry", r, n)
	}
	t := b.scratchF32(rows * dim)
	b.Gather(t, a, aRows, rows, dim)
	return t
}

// widened points each of ts that holds a BF16 tensor at a scratch copy
// widened exactly, for an op to read (or write) as F32, and returns what
// releases the copies, after rounding them back into their tensors (to
// nearest even, as Cast) when store is set: an op reads bf16 operands, or
// writes bf16 outputs, through it. F32 tensors and nil are left as they are.
func (b *Backend) widened(store bool, ts ...**engine.Tensor) (done func()) {
	type copied struct{ orig, wide *engine.Tensor }
	var cs []copied
	for _, t := range ts {
		if *t == nil || (*t).DType != engine.BF16 {
			continue
		}
		w := b.scratchF32((*t).Len())
		b.Cast(w, *t, w.Len())
		cs = append(cs, copied{*t, w})
		*t = w
	}
	return func() {
		for _, c := range cs {
			if store {
				b.Cast(c.orig, c.wide, c.wide.Len())
			}
			b.scratch.Put(c.wide)
		}
	}
}

// scratchF32 is a pooled F32 tensor of n elements, contents undefined.
func (b *Backend) scratchF32(n int) *engine.Tensor {
	t, _ := b.scratch.Get().(*engine.Tensor)
	if t == nil || cap(t.F) < n {
		t = engine.HostF32(n)
	}
	t.F, t.Shape = t.F[:n], []int{n}
	return t
}

// namedF32 is a tensor argument and its name, for checks that list several.
type namedF32 struct {
	name string
	t    *engine.Tensor
}

// fusedArgs checks what the fused grouped ops check before they call the
// unfused ones, so that a misuse panics under the fused op's name: the
// sizes, the offsets, and rows×n elements in each output.
func fusedArgs(op string, rows, n, k, groups, strideB int, offsets *engine.Tensor, outs ...namedF32) {
	if rows < 0 || n < 0 || k < 0 || groups < 0 || strideB < 0 {
		panic(fmt.Sprintf("cpu: %s: negative size rows=%d n=%d k=%d groups=%d strideB=%d", op, rows, n, k, groups, strideB))
	}
	groupOffsets(op, offsets, groups, rows)
	for _, o := range outs {
		f32(op, o.name, o.t, rows*n)
	}
}
