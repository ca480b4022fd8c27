package cuda

import (
	"math"
	"math/bits"
	"strconv"
	"unsafe"

	"github.com/moerl/moerl/engine"
)

// The launchers: one method per engine.Backend op. Each checks its
// arguments (a broken precondition panics, a shape the kernels cannot take
// becomes the pending error and the op does nothing; see Backend.ok), then
// queues its kernels with the grid and block shapes the kernels were
// written for (see the comments in kernels/*.cu and docs/kernels.md).

// statusArg is the device status word in which kernels report bad indices.
func (b *Backend) statusArg() karg { return ptrArg(b.status) }

// ---------------------------------------------------------------- GEMM

// Gemm computes C = alpha·op(A)·op(B) + beta·C on row-major matrices.
func (b *Backend) Gemm(transA, transB bool, m, n, k int, alpha float32,
	a *engine.Tensor, offA, lda int, bm *engine.Tensor, offB, ldb int,
	beta float32, c *engine.Tensor, offC, ldc int) {
	b.gemm("Gemm", transA, transB, m, n, k, alpha, a, offA, lda, 0, bm, offB, ldb, 0, beta, c, offC, ldc, 0, 1)
}

// GemmBatched runs batch Gemms whose operands start stride elements apart.
func (b *Backend) GemmBatched(transA, transB bool, m, n, k int, alpha float32,
	a *engine.Tensor, offA, lda, strideA int, bm *engine.Tensor, offB, ldb, strideB int,
	beta float32, c *engine.Tensor, offC, ldc, strideC int, batch int) {
	b.gemm("GemmBatched", transA, transB, m, n, k, alpha, a, offA, lda, strideA, bm, offB, ldb, strideB,
		beta, c, offC, ldc, strideC, batch)
}

// extent is one past the last element a batch of rows×cols matrices with
// row stride ld touches.
func extent(off, rows, cols, ld, stride, batch int) int64 {
	if rows == 0 || cols == 0 || batch == 0 {
		return 0
	}
	return int64(off) + int64(batch-1)*int64(stride) + int64(rows-1)*int64(ld) + int64(cols)
}

func (b *Backend) gemm(op string, transA, transB bool, m, n, k int, alpha float32,
	a *engine.Tensor, offA, lda, strideA int, bm *engine.Tensor, offB, ldb, strideB int,
	beta float32, c *engine.Tensor, offC, ldc, strideC int, batch int) {
	chk := b.begin(op)
	for _, v := range []int{m, n, k, lda, ldb, ldc, batch} {
		chk.require(v >= 0, "sizes and strides must not be negative: m %d n %d k %d lda %d ldb %d ldc %d batch %d", m, n, k, lda, ldb, ldc, batch)
		chk.supports(v <= math.MaxInt32, "sizes and strides must be at most 2³¹−1: m %d n %d k %d lda %d ldb %d ldc %d batch %d", m, n, k, lda, ldb, ldc, batch)
	}
	chk.require(offA >= 0 && offB >= 0 && offC >= 0 && strideA >= 0 && strideB >= 0 && strideC >= 0,
		"offsets and batch strides must not be negative")
	rowsA, colsA := m, k
	if transA {
		rowsA, colsA = k, m
	}
	rowsB, colsB := k, n
	if transB {
		rowsB, colsB = n, k
	}
	chk.require(lda >= max(1, colsA), "lda %d is less than A's %d columns", lda, colsA)
	chk.require(ldb >= max(1, colsB), "ldb %d is less than B's %d columns", ldb, colsB)
	chk.require(ldc >= max(1, n), "ldc %d is less than C's %d columns", ldc, n)
	if chk.err == nil && m > 0 && n > 0 && batch > 0 {
		chk.f32("A", a, extent(offA, rowsA, colsA, lda, strideA, batch))
		chk.f32("B", bm, extent(offB, rowsB, colsB, ldb, strideB, batch))
		chk.f32("C", c, extent(offC, m, n, ldc, strideC, batch))
	}
	if !b.ok(chk) || m == 0 || n == 0 || batch == 0 {
		return
	}
	if b.bl != nil && k > 0 {
		// cuBLAS is column-major. A row-major r×c matrix with row stride ld
		// is, read column-major, its c×r transpose with leading dimension
		// ld. So the row-major C (m×n) is the column-major Cᵀ (n×m), and
		// C = op(A)·op(B) is the same as Cᵀ = op(B)ᵀ·op(A)ᵀ. cuBLAS's first
		// operand is therefore our B, read as stored (column-major that is
		// Bᵀ, or B when transB, hence cuBLAS op T), its second our A, with
		// m and n swapped and the leading dimensions our row strides.
		opB, opA := blasOpN, blasOpN
		if transB {
			opB = blasOpT
		}
		if transA {
			opA = blasOpT
		}
		pA := bm.Ptr + uintptr(offB)*4 // cuBLAS A
		pB := a.Ptr + uintptr(offA)*4  // cuBLAS B
		pC := c.Ptr + uintptr(offC)*4
		compute := b.GEMMPrecision().computeType()
		b.post(func() error {
			if batch == 1 {
				return b.bl.gemmEx(b.blasH, opB, opA, n, m, k, alpha, pA, ldb, pB, lda, beta, pC, ldc, compute)
			}
			return b.bl.gemmStridedBatchedEx(b.blasH, opB, opA, n, m, k, alpha, pA, ldb, int64(strideB),
				pB, lda, int64(strideA), beta, pC, ldc, int64(strideC), batch, compute)
		})
		return
	}
	// The fallback kernel: 64×64 tiles, the batch on grid.z (65535 at most
	// per launch); its TF32 twin in TF32 mode, where there are products.
	suffix := ""
	if k > 0 {
		suffix = b.GEMMPrecision().suffix()
	}
	for z0 := 0; z0 < batch; z0 += 65535 {
		nz := min(batch-z0, 65535)
		b.launch("sgemm_tiled"+suffix, dim3{cdiv(n, 64), cdiv(m, 64), nz}, dim3{256, 1, 1}, 0,
			boolArg(transA), boolArg(transB), i32Arg(m), i32Arg(n), i32Arg(k), f32Arg(alpha),
			offsetArg(a, offA+z0*strideA), i32Arg(lda), i64Arg(int64(strideA)),
			offsetArg(bm, offB+z0*strideB), i32Arg(ldb), i64Arg(int64(strideB)),
			f32Arg(beta), offsetArg(c, offC+z0*strideC), i32Arg(ldc), i64Arg(int64(strideC)))
	}
}

// ---------------------------------------------------------------- vectors

// Add computes y += x over n elements.
func (b *Backend) Add(y, x *engine.Tensor, n int) {
	c := b.begin("Add")
	c.nonneg("n", n)
	c.f32("y", y, int64(n))
	c.f32("x", x, int64(n))
	if !b.ok(c) || n == 0 {
		return
	}
	g, t := elementwise(n)
	b.launch("add_f32", g, t, 0, tensorArg(y), tensorArg(x), i32Arg(n))
}

// Cast converts n elements between F32 and BF16, rounding to nearest
// even on the way down (kernels/cast.cu).
func (b *Backend) Cast(dst, src *engine.Tensor, n int) {
	c := b.begin("Cast")
	c.nonneg("n", n)
	kernel := ""
	switch {
	case src == nil || dst == nil:
		c.require(false, "nil tensor")
	case src.DType == engine.F32 && dst.DType == engine.BF16:
		kernel = "cast_f32_bf16"
	case src.DType == engine.BF16 && dst.DType == engine.F32:
		kernel = "cast_bf16_f32"
	default:
		c.require(false, "from %v to %v; Cast converts between f32 and bf16", src.DType, dst.DType)
	}
	if kernel != "" {
		c.tensor("src", src, src.DType, int64(n))
		c.tensor("dst", dst, dst.DType, int64(n))
	}
	if !b.ok(c) || n == 0 {
		return
	}
	g, t := elementwise(n)
	b.launch(kernel, g, t, 0, tensorArg(dst), tensorArg(src), i32Arg(n))
}

// Scale computes x *= s over n elements.
func (b *Backend) Scale(x *engine.Tensor, n int, s float32) {
	c := b.begin("Scale")
	c.nonneg("n", n)
	c.f32("x", x, int64(n))
	if !b.ok(c) || n == 0 {
		return
	}
	g, t := elementwise(n)
	b.launch("scale_f32", g, t, 0, tensorArg(x), i32Arg(n), f32Arg(s))
}

// SumSquares returns Σ x² over n elements, summed in float64 in a fixed
// order. It waits for the GPU; with an error pending it returns 0, and Sync
// reports the error.
func (b *Backend) SumSquares(x *engine.Tensor, n int) float64 {
	c := b.begin("SumSquares")
	c.nonneg("n", n)
	c.f32("x", x, int64(n))
	if !b.ok(c) || n == 0 || !b.hostWork("SumSquares") {
		return 0
	}
	g := min(1024, max(1, cdiv(n, 2048))) // fixed by n alone, so the order is too
	partial, ok1 := b.scratchPtr(scratchPartial, uint64(g)*8)
	res, ok2 := b.scratchPtr(scratchResult, 8)
	if !ok1 || !ok2 {
		return 0
	}
	b.launch("sumsq_partial", dim3{g, 1, 1}, dim3{256, 1, 1}, 0, tensorArg(x), i32Arg(n), ptrArg(partial))
	b.launch("sumsq_final", dim3{1, 1, 1}, dim3{256, 1, 1}, 0, ptrArg(partial), i32Arg(g), ptrArg(res))
	var v float64
	b.download(unsafe.Pointer(&v), res, 8)
	return v
}

// ---------------------------------------------------------------- embedding

// Embedding gathers out[i] = table[ids[i]] for rows rows of dim floats.
func (b *Backend) Embedding(out, table, ids *engine.Tensor, rows, dim int) {
	c := b.begin("Embedding")
	n := c.nonneg("rows, dim", rows, dim)
	c.require(rows == 0 || dim > 0, "dim must be positive")
	c.f32("out", out, n)
	c.i32("ids", ids, int64(rows))
	c.f32("table", table, int64(dim))
	if !b.ok(c) || n == 0 {
		return
	}
	vocab := table.Len() / dim
	b.launch("embedding_fwd", dim3{rows, 1, 1}, rowBlock(dim), 0, tensorArg(out), tensorArg(table), tensorArg(ids),
		i32Arg(rows), i32Arg(dim), i32Arg(vocab), b.statusArg())
}

// EmbeddingBackward accumulates dtable[ids[i]] += dout[i], in increasing i
// for each id (the CPU's order), without atomics.
func (b *Backend) EmbeddingBackward(dtable, dout, ids *engine.Tensor, rows, dim int) {
	c := b.begin("EmbeddingBackward")
	n := c.nonneg("rows, dim", rows, dim)
	c.require(rows == 0 || dim > 0, "dim must be positive")
	c.f32("dout", dout, n)
	c.i32("ids", ids, int64(rows))
	c.f32("dtable", dtable, int64(dim))
	if !b.ok(c) || n == 0 {
		return
	}
	vocab := dtable.Len() / dim
	keys, order, ok := b.sortByKey(ids.Ptr, rows, vocab, statusEmbedID)
	if !ok {
		return
	}
	b.launch("embedding_bwd_apply", dim3{rows, 1, 1}, rowBlock(dim), 0, tensorArg(dtable), tensorArg(dout),
		ptrArg(keys), ptrArg(order), i32Arg(rows), i32Arg(dim), i32Arg(vocab))
}

// sortByKey sorts the indices 0..n−1 stably by the int32 keys at src, which
// must lie in [0, limit) (others are reported with code and sorted last). It
// returns the sanitized keys and the sorted order, both in scratch memory.
func (b *Backend) sortByKey(src uintptr, n, limit int, code int) (keys, order uintptr, ok bool) {
	seg := max(1024, cdiv(n, 1024))
	nb := cdiv(n, seg)
	keys, ok1 := b.scratchPtr(scratchSortKeys, uint64(n)*4)
	pa, ok2 := b.scratchPtr(scratchSortA, uint64(n)*4)
	pb, ok3 := b.scratchPtr(scratchSortB, uint64(n)*4)
	counts, ok4 := b.scratchPtr(scratchSortCount, uint64(nb)*256*4)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return 0, 0, false
	}
	g, t := elementwise(n)
	b.launch("sort_keys", g, t, 0, ptrArg(src), ptrArg(keys), i32Arg(n), i32Arg(limit), b.statusArg(), i32Arg(code))
	in, out := uintptr(0), pa // a null in_order means the identity
	for shift := 0; shift < bits.Len(uint(limit)); shift += 8 {
		b.launch("sort_count", dim3{nb, 1, 1}, dim3{256, 1, 1}, 0, ptrArg(keys), ptrArg(in), i32Arg(n),
			i32Arg(shift), i32Arg(seg), ptrArg(counts))
		b.launch("sort_scan", dim3{1, 1, 1}, dim3{256, 1, 1}, 0, ptrArg(counts), i32Arg(256*nb))
		b.launch("sort_place", dim3{nb, 1, 1}, dim3{32, 1, 1}, 0, ptrArg(keys), ptrArg(in), ptrArg(out), i32Arg(n),
			i32Arg(shift), i32Arg(seg), ptrArg(counts))
		in = out
		if out == pa {
			out = pb
		} else {
			out = pa
		}
	}
	return keys, in, true
}

// ---------------------------------------------------------------- RMSNorm

// RMSNorm computes out = x / sqrt(mean(x²) + eps) · w per row and saves the
// reciprocal rms in rstd.
func (b *Backend) RMSNorm(out, rstd, x, w *engine.Tensor, rows, dim int, eps float32) {
	c := b.begin("RMSNorm")
	n := c.nonneg("rows, dim", rows, dim)
	c.require(rows == 0 || dim > 0, "dim must be positive")
	c.f32("out", out, n)
	c.f32("rstd", rstd, int64(rows))
	c.f32("x", x, n)
	c.f32("w", w, int64(dim))
	if !b.ok(c) || n == 0 {
		return
	}
	b.launch("rmsnorm_fwd", dim3{cdiv(rows, 8), 1, 1}, dim3{256, 1, 1}, 0, tensorArg(out), tensorArg(rstd),
		tensorArg(x), tensorArg(w), i32Arg(rows), i32Arg(dim), f32Arg(eps))
}

// ResidualRMSNorm computes sum = x + r and RMSNorm of sum in one kernel,
// residual_rmsnorm, whose sum and norm are add_f32's and rmsnorm_fwd's
// arithmetic.
func (b *Backend) ResidualRMSNorm(sum, out, rstd, x, r, w *engine.Tensor, rows, dim int, eps float32) {
	c := b.begin("ResidualRMSNorm")
	n := c.nonneg("rows, dim", rows, dim)
	c.require(rows == 0 || dim > 0, "dim must be positive")
	c.f32s(n, named{"sum", sum}, named{"out", out}, named{"x", x}, named{"r", r})
	c.f32("rstd", rstd, int64(rows))
	c.f32("w", w, int64(dim))
	if c.err == nil && n > 0 {
		writes := []region{{named{"sum", sum}, n}, {named{"out", out}, n}, {named{"rstd", rstd}, int64(rows)}}
		all := append(writes, region{named{"x", x}, n}, region{named{"r", r}, n}, region{named{"w", w}, int64(dim)})
		for i, o := range writes {
			for _, a := range all[i+1:] {
				// sum may be x or r exactly: each element reads its own before it is written.
				if !(o.name == "sum" && (a.name == "x" || a.name == "r") && sum.Ptr == a.t.Ptr) {
					c.apart(o, a)
				}
			}
		}
	}
	if !b.ok(c) || n == 0 {
		return
	}
	b.launch("residual_rmsnorm", dim3{cdiv(rows, 8), 1, 1}, dim3{256, 1, 1}, 0, tensorArg(sum), tensorArg(out),
		tensorArg(rstd), tensorArg(x), tensorArg(r), tensorArg(w), i32Arg(rows), i32Arg(dim), f32Arg(eps))
}

// rmsMaxCols is RMS_MAXC in rmsnorm.cu: columns per thread in the backward.
const rmsMaxCols = 16

// RMSNormBackward accumulates dx and dw; dw is reduced through per-block
// partial sums added in block order.
func (b *Backend) RMSNormBackward(dx, dw, dout, x, w, rstd *engine.Tensor, rows, dim int) {
	c := b.begin("RMSNormBackward")
	n := c.nonneg("rows, dim", rows, dim)
	c.require(rows == 0 || dim > 0, "dim must be positive")
	block := rowBlock(dim)
	c.supports(dim <= rmsMaxCols*256, "dim %d exceeds the kernel's %d", dim, rmsMaxCols*256)
	c.f32("dx", dx, n)
	c.f32("dw", dw, int64(dim))
	c.f32("dout", dout, n)
	c.f32("x", x, n)
	c.f32("w", w, int64(dim))
	c.f32("rstd", rstd, int64(rows))
	if !b.ok(c) || n == 0 {
		return
	}
	// At most about 1024 blocks, each a fixed run of rows: the grid depends
	// on rows only, so the order of the dw sums does too.
	rpb := max(1, cdiv(rows, 1024))
	nb := cdiv(rows, rpb)
	partial, ok := b.scratchPtr(scratchPartial, uint64(nb)*uint64(dim)*8) // float64
	if !ok {
		return
	}
	b.launch("rmsnorm_bwd", dim3{nb, 1, 1}, block, 0, tensorArg(dx), ptrArg(partial), tensorArg(dout),
		tensorArg(x), tensorArg(w), tensorArg(rstd), i32Arg(rows), i32Arg(dim), i32Arg(rpb))
	b.launch("rmsnorm_dw_reduce", dim3{cdiv(dim, 256), 1, 1}, dim3{256, 1, 1}, 0, tensorArg(dw), ptrArg(partial),
		i32Arg(nb), i32Arg(dim))
}

// ---------------------------------------------------------------- RoPE

// RoPE rotates x in place by position.
func (b *Backend) RoPE(x, pos *engine.Tensor, rows, heads, headDim int, theta float32) {
	b.rope("RoPE", "rope_fwd", x, pos, rows, heads, headDim, theta)
}

// RoPEBackward rotates a gradient in place by the opposite angle.
func (b *Backend) RoPEBackward(dx, pos *engine.Tensor, rows, heads, headDim int, theta float32) {
	b.rope("RoPEBackward", "rope_bwd", dx, pos, rows, heads, headDim, theta)
}

func (b *Backend) rope(op, kernel string, x, pos *engine.Tensor, rows, heads, hd int, theta float32) {
	c := b.begin(op)
	n := c.nonneg("rows, heads, headDim", rows, heads, hd)
	c.require(n == 0 || hd%2 == 0, "headDim %d is odd", hd)
	c.f32("x", x, n)
	c.i32("pos", pos, int64(rows))
	if !b.ok(c) || n == 0 {
		return
	}
	pairs := rows * (hd / 2)
	b.launch(kernel, dim3{cdiv(pairs, 256), 1, 1}, dim3{256, 1, 1}, 0, tensorArg(x), tensorArg(pos),
		i32Arg(rows), i32Arg(heads), i32Arg(hd), f32Arg(theta))
}

// ---------------------------------------------------------------- attention

// attnDim is the padded head size the attention kernels are compiled for.
func attnDim(hd int) int {
	switch {
	case hd <= 32:
		return 32
	case hd <= 64:
		return 64
	case hd <= 128:
		return 128
	}
	return 0
}

// Shared memory of the attention kernels, from the tile sizes in
// attention.cu (FWD_BR = FWD_BC = 64, BWD_BR = 64, BWD_BC = 32; rows padded
// to D+1 floats).
func attnFwdSmem(d int) int  { return (3*64*(d+1) + 64*65) * 4 }
func attnDkdvSmem(d int) int { return (2*32*(d+1) + 2*64*(d+1) + 2*64*33 + 128) * 4 }
func attnDqSmem(d int) int   { return (2*64*(d+1) + 2*32*(d+1) + 64*33 + 128) * 4 }

// fixedSmem is the dynamic shared memory a kernel always launches with
// (0 for the others), so its limit can be raised when the module loads.
func fixedSmem(name string) int {
	for _, d := range []int{32, 64, 128} {
		s := "_d" + strconv.Itoa(d)
		switch name {
		case "attn_fwd" + s:
			return attnFwdSmem(d)
		case "attn_bwd_dkdv" + s:
			return attnDkdvSmem(d)
		case "attn_bwd_dq" + s:
			return attnDqSmem(d)
		}
	}
	return 0
}

func (b *Backend) attnCheck(c *argCheck, batch, seq, heads, hd int) int64 {
	n := c.nonneg("batch, seq, heads, headDim", batch, seq, heads, hd)
	c.supports(n == 0 || attnDim(hd) > 0, "headDim %d exceeds 128", hd)
	c.supports(heads <= 65535 && batch <= 65535, "heads %d and batch %d must be at most 65535", heads, batch)
	return n
}

// Attention is causal softmax attention with scale 1/sqrt(headDim).
func (b *Backend) Attention(out, lse, q, k, v *engine.Tensor, batch, seq, heads, headDim int) {
	c := b.begin("Attention")
	n := b.attnCheck(c, batch, seq, heads, headDim)
	for _, t := range []struct {
		name string
		t    *engine.Tensor
	}{{"out", out}, {"q", q}, {"k", k}, {"v", v}} {
		c.f32(t.name, t.t, n)
	}
	c.f32("lse", lse, int64(batch)*int64(heads)*int64(seq))
	if !b.ok(c) || n == 0 {
		return
	}
	d := attnDim(headDim)
	scale := float32(1 / math.Sqrt(float64(headDim)))
	b.launch("attn_fwd_d"+strconv.Itoa(d), dim3{cdiv(seq, 64), heads, batch}, dim3{256, 1, 1}, attnFwdSmem(d),
		tensorArg(out), tensorArg(lse), tensorArg(q), tensorArg(k), tensorArg(v),
		i32Arg(seq), i32Arg(heads), i32Arg(headDim), f32Arg(scale))
}

// AttentionBackward accumulates dq, dk and dv.
func (b *Backend) AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse *engine.Tensor, batch, seq, heads, headDim int) {
	c := b.begin("AttentionBackward")
	n := b.attnCheck(c, batch, seq, heads, headDim)
	for _, t := range []struct {
		name string
		t    *engine.Tensor
	}{{"dq", dq}, {"dk", dk}, {"dv", dv}, {"dout", dout}, {"q", q}, {"k", k}, {"v", v}, {"out", out}} {
		c.f32(t.name, t.t, n)
	}
	rowsLse := int64(batch) * int64(heads) * int64(seq)
	c.f32("lse", lse, rowsLse)
	if !b.ok(c) || n == 0 {
		return
	}
	delta, ok := b.scratchPtr(scratchDelta, uint64(rowsLse)*4)
	if !ok {
		return
	}
	d := attnDim(headDim)
	ds := strconv.Itoa(d)
	scale := float32(1 / math.Sqrt(float64(headDim)))
	b.launch("attn_bwd_delta", dim3{cdiv(batch*seq*heads, 8), 1, 1}, dim3{256, 1, 1}, 0, ptrArg(delta),
		tensorArg(dout), tensorArg(out), i32Arg(batch), i32Arg(seq), i32Arg(heads), i32Arg(headDim))
	b.launch("attn_bwd_dkdv_d"+ds, dim3{cdiv(seq, 32), heads, batch}, dim3{256, 1, 1}, attnDkdvSmem(d),
		tensorArg(dk), tensorArg(dv), tensorArg(dout), tensorArg(q), tensorArg(k), tensorArg(v),
		tensorArg(lse), ptrArg(delta), i32Arg(seq), i32Arg(heads), i32Arg(headDim), f32Arg(scale))
	b.launch("attn_bwd_dq_d"+ds, dim3{cdiv(seq, 64), heads, batch}, dim3{256, 1, 1}, attnDqSmem(d),
		tensorArg(dq), tensorArg(dout), tensorArg(q), tensorArg(k), tensorArg(v),
		tensorArg(lse), ptrArg(delta), i32Arg(seq), i32Arg(heads), i32Arg(headDim), f32Arg(scale))
}

// decodeStaticSmem bounds the decode kernel's static shared memory (2.7 KB
// at D = 128 by ptxas), kept free beside the scores.
const decodeStaticSmem = 4 << 10

// AttentionDecode attends one new query per sequence to a KV cache.
func (b *Backend) AttentionDecode(out, q, kc, vc, lens *engine.Tensor, batch, maxSeq, heads, headDim int) {
	c := b.begin("AttentionDecode")
	n := b.attnCheck(c, batch, 1, heads, headDim)
	cache := c.nonneg("batch, maxSeq, heads, headDim", batch, maxSeq, heads, headDim)
	c.supports(maxSeq*4+decodeStaticSmem <= b.smemOptin, "maxSeq %d needs more shared memory than the device's %d bytes", maxSeq, b.smemOptin)
	c.f32("out", out, n)
	c.f32("q", q, n)
	c.f32("kc", kc, cache)
	c.f32("vc", vc, cache)
	c.i32("lens", lens, int64(batch))
	if !b.ok(c) || n == 0 {
		return
	}
	d := attnDim(headDim)
	scale := float32(1 / math.Sqrt(float64(headDim)))
	b.launch("attn_decode_d"+strconv.Itoa(d), dim3{heads, batch, 1}, dim3{128, 1, 1}, maxSeq*4,
		tensorArg(out), tensorArg(q), tensorArg(kc), tensorArg(vc), tensorArg(lens),
		i32Arg(maxSeq), i32Arg(heads), i32Arg(headDim), f32Arg(scale), b.statusArg())
}

// ---------------------------------------------------------------- SwiGLU

// SwiGLU computes out = silu(gate) · up over n elements.
func (b *Backend) SwiGLU(out, gate, up *engine.Tensor, n int) {
	c := b.begin("SwiGLU")
	c.nonneg("n", n)
	c.f32("out", out, int64(n))
	c.f32("gate", gate, int64(n))
	c.f32("up", up, int64(n))
	if !b.ok(c) || n == 0 {
		return
	}
	g, t := elementwise(n)
	b.launch("swiglu_fwd", g, t, 0, tensorArg(out), tensorArg(gate), tensorArg(up), i32Arg(n))
}

// SwiGLUBackward accumulates dgate and dup.
func (b *Backend) SwiGLUBackward(dgate, dup, dout, gate, up *engine.Tensor, n int) {
	c := b.begin("SwiGLUBackward")
	c.nonneg("n", n)
	for _, t := range []struct {
		name string
		t    *engine.Tensor
	}{{"dgate", dgate}, {"dup", dup}, {"dout", dout}, {"gate", gate}, {"up", up}} {
		c.f32(t.name, t.t, int64(n))
	}
	if !b.ok(c) || n == 0 {
		return
	}
	g, t := elementwise(n)
	b.launch("swiglu_bwd", g, t, 0, tensorArg(dgate), tensorArg(dup), tensorArg(dout), tensorArg(gate),
		tensorArg(up), i32Arg(n))
}

// ---------------------------------------------------------------- router

// Router limits, from router.cu (ROUTER_MAXC lanes of 32) and the shared
// memory of dispatch_offsets.
const (
	maxExperts         = 1024
	maxTopK            = 32
	maxDispatchExperts = defaultSmem/4 - 1
)

func (b *Backend) routerCheck(c *argCheck, rows, nE, k int) int64 {
	n := c.nonneg("rows, nExperts", rows, nE)
	c.nonneg("rows, k", rows, k)
	if rows > 0 {
		c.require(nE >= 1, "nExperts %d must be positive", nE)
		c.require(k >= 1 && k <= nE, "k %d must lie in [1, nExperts = %d]", k, nE)
		c.supports(nE <= maxExperts, "nExperts %d exceeds the kernel's %d", nE, maxExperts)
		c.supports(k <= maxTopK, "k %d exceeds the kernel's %d", k, maxTopK)
	}
	return n
}

// RouterTopK computes the softmax of the router logits and the top k experts
// per row with renormalised weights.
func (b *Backend) RouterTopK(weights, experts, probs, logits *engine.Tensor, rows, nExperts, k int) {
	c := b.begin("RouterTopK")
	n := b.routerCheck(c, rows, nExperts, k)
	c.f32("weights", weights, int64(rows)*int64(k))
	c.i32("experts", experts, int64(rows)*int64(k))
	c.f32("probs", probs, n)
	c.f32("logits", logits, n)
	if !b.ok(c) || rows == 0 {
		return
	}
	b.launch("router_topk_fwd", dim3{cdiv(rows, 8), 1, 1}, dim3{256, 1, 1}, 0, tensorArg(weights),
		tensorArg(experts), tensorArg(probs), tensorArg(logits), i32Arg(rows), i32Arg(nExperts), i32Arg(k))
}

// RouterTopKBackward accumulates into dlogits the gradient through the
// renormalised weights and the softmax.
func (b *Backend) RouterTopKBackward(dlogits, dweights, weights, experts, probs *engine.Tensor, rows, nExperts, k int) {
	c := b.begin("RouterTopKBackward")
	n := b.routerCheck(c, rows, nExperts, k)
	rk := int64(rows) * int64(k)
	c.f32("dlogits", dlogits, n)
	c.f32("dweights", dweights, rk)
	c.f32("weights", weights, rk)
	c.i32("experts", experts, rk)
	c.f32("probs", probs, n)
	if !b.ok(c) || rows == 0 {
		return
	}
	b.launch("router_topk_bwd", dim3{cdiv(rows, 8), 1, 1}, dim3{256, 1, 1}, 0, tensorArg(dlogits),
		tensorArg(dweights), tensorArg(weights), tensorArg(experts), tensorArg(probs), i32Arg(rows),
		i32Arg(nExperts), i32Arg(k), b.statusArg())
}

// SoftmaxBackward accumulates dlogits += p·(dp − Σ p·dp) per row of n, the
// backward of a softmax whose output probs receives the gradient dprobs (the
// model's load-balancing loss).
func (b *Backend) SoftmaxBackward(dlogits, dprobs, probs *engine.Tensor, rows, n int) {
	c := b.begin("SoftmaxBackward")
	total := c.nonneg("rows, n", rows, n)
	c.f32("dlogits", dlogits, total)
	c.f32("dprobs", dprobs, total)
	c.f32("probs", probs, total)
	if !b.ok(c) || total == 0 {
		return
	}
	b.launch("softmax_bwd", dim3{cdiv(rows, 8), 1, 1}, dim3{256, 1, 1}, 0, tensorArg(dlogits), tensorArg(dprobs),
		tensorArg(probs), i32Arg(rows), i32Arg(n))
}

// RouterDispatch sorts the (token, slot) assignments by expert, stably, and
// writes each expert's run offsets to offsets on the device: nothing waits
// for the GPU, so a captured graph can hold it.
func (b *Backend) RouterDispatch(perm, inv, offsets, experts *engine.Tensor, rows, nExperts, k int) {
	c := b.begin("RouterDispatch")
	n := c.nonneg("rows, k", rows, k)
	c.require(rows == 0 || k >= 1, "k %d must be positive", k)
	c.require(nExperts >= 1, "nExperts %d must be positive", nExperts)
	c.supports(nExperts <= maxDispatchExperts, "nExperts %d exceeds the kernel's %d", nExperts, maxDispatchExperts)
	c.i32("perm", perm, n)
	c.i32("inv", inv, n)
	c.i32("offsets", offsets, int64(nExperts)+1)
	c.i32("experts", experts, n)
	if !b.ok(c) {
		return
	}
	if n == 0 { // every run is empty
		b.post(func() error { return b.drv.memsetD32Async(offsets.Ptr, 0, uint64(nExperts+1), b.stream) })
		return
	}
	keys, order, ok := b.sortByKey(experts.Ptr, int(n), nExperts, statusExpert)
	if !ok {
		return
	}
	g, t := elementwise(int(n))
	b.launch("dispatch_finalize", g, t, 0, ptrArg(order), i32Arg(int(n)), i32Arg(k), tensorArg(perm), tensorArg(inv))
	b.launch("dispatch_offsets", dim3{1, 1, 1}, dim3{256, 1, 1}, (nExperts+1)*4, ptrArg(keys), i32Arg(int(n)),
		i32Arg(nExperts), tensorArg(offsets))
}

// RouterLoad writes each expert's slot count and probability sum (kernel
// router_load, one block per expert).
func (b *Backend) RouterLoad(load, probs, offsets *engine.Tensor, rows, nExperts int) {
	c := b.begin("RouterLoad")
	c.nonneg("rows", rows)
	c.require(nExperts >= 1, "nExperts %d must be positive", nExperts)
	c.supports(int64(rows)*int64(nExperts) <= math.MaxInt32, "rows × nExperts %d × %d exceeds 2³¹−1", rows, nExperts)
	c.f32("load", load, 2*int64(nExperts))
	c.f32("probs", probs, int64(rows)*int64(nExperts))
	c.i32("offsets", offsets, int64(nExperts)+1)
	if !b.ok(c) {
		return
	}
	b.launch("router_load", dim3{nExperts, 1, 1}, dim3{256, 1, 1}, 0, tensorArg(load), tensorArg(probs),
		tensorArg(offsets), i32Arg(rows), i32Arg(nExperts), b.statusArg())
}

// GemmGrouped runs every group's product in one launch of sgemm_grouped,
// whose blocks read the group offsets on the device; in TF32 mode its
// twin sgemm_grouped_tf32, on the tensor cores. It is our own kernel, and
// each row's result does not depend on the rows around it (its k products
// in a fixed order): what the exact on-policy promise needs from the
// expert layers.
func (b *Backend) GemmGrouped(transB bool, rows, n, k int, a, bm *engine.Tensor, strideB int, beta float32,
	c, offsets *engine.Tensor, groups int) {
	chk := b.begin("GemmGrouped")
	b.groupedCheck(chk, rows, n, k, groups)
	chk.require(strideB >= 0, "strideB %d must not be negative", strideB)
	rowsB, colsB := k, n
	if transB {
		rowsB, colsB = n, k
	}
	a16 := b.narrow(chk, "A", "_a16", a, int64(rows)*int64(k))
	w16 := weights(chk, "B", bm, extent(0, rowsB, colsB, colsB, strideB, groups))
	withWeights16(chk, "A", a16, w16)
	chk.f32("C", c, int64(rows)*int64(n))
	chk.i32("offsets", offsets, int64(groups)+1)
	if !b.ok(chk) || rows == 0 || n == 0 || groups == 0 {
		return
	}
	b.launch("sgemm_grouped"+a16+w16+b.GEMMPrecision().suffix(), dim3{cdiv(n, 64), cdiv(rows, 64) + groups, 1}, dim3{256, 1, 1}, 0,
		boolArg(transB), i32Arg(rows), i32Arg(n), i32Arg(k), tensorArg(a), tensorArg(bm), i64Arg(int64(strideB)),
		f32Arg(beta), tensorArg(c), tensorArg(offsets), i32Arg(groups), b.statusArg())
}

// GemmGroupedSwiGLU runs both products and the SwiGLU of every group in
// one launch of sgemm_grouped_swiglu (its twin in the GEMM precision),
// which stages each tile of A once for both weights, reading A's rows
// through aRows where given.
func (b *Backend) GemmGroupedSwiGLU(rows, n, k int, a, aRows, b1, b3 *engine.Tensor, strideB int, g, u, s,
	offsets *engine.Tensor, groups int) {
	chk := b.begin("GemmGroupedSwiGLU")
	b.groupedCheck(chk, rows, n, k, groups)
	chk.require(strideB >= 0, "strideB %d must not be negative", strideB)
	arow, arows, _ := b.gatheredA(chk, a, aRows, rows, k, "")
	w16 := weights(chk, "B1", b1, extent(0, k, n, n, strideB, groups))
	chk.require(b1 == nil || b3 == nil || b1.DType == b3.DType, "B1 is %v and B3 %v: one dtype for both", dtypeOf(b1), dtypeOf(b3))
	weights(chk, "B3", b3, extent(0, k, n, n, strideB, groups))
	chk.require((g == nil) == (u == nil), "g and u must be given or left out together")
	gArg, uArg, g16 := ptrArg(0), ptrArg(0), ""
	if g != nil {
		g16 = b.narrow(chk, "g", "_g16", g, int64(rows)*int64(n))
		b.narrow(chk, "u", "_g16", u, int64(rows)*int64(n))
		chk.require(dtypeOf(g) == dtypeOf(u), "g is %v and u %v: one dtype for both", dtypeOf(g), dtypeOf(u))
		gArg, uArg = tensorArg(g), tensorArg(u)
	}
	s16 := b.narrow(chk, "s", "_s16", s, int64(rows)*int64(n))
	chk.require(g16 == "" || s16 != "", "bf16 g and u go with a bf16 s (a training workspace in bf16 mode)")
	withWeights16(chk, "s", s16, w16)
	chk.i32("offsets", offsets, int64(groups)+1)
	if !b.ok(chk) || rows == 0 || n == 0 || groups == 0 {
		return
	}
	b.launch("sgemm_grouped_swiglu"+w16+g16+s16+b.GEMMPrecision().suffix(), dim3{cdiv(n, 64), cdiv(rows, 64) + groups, 1}, dim3{256, 1, 1}, 0,
		i32Arg(rows), i32Arg(n), i32Arg(k), tensorArg(a), arow, i32Arg(arows), tensorArg(b1), tensorArg(b3), i64Arg(int64(strideB)),
		gArg, uArg, tensorArg(s), tensorArg(offsets), i32Arg(groups), b.statusArg())
}

// GemmGroupedSwiGLUBackward runs ds = dy·Wᵀ and the SwiGLU's backward of
// every group in one launch of sgemm_grouped_swiglu_bwd (its twin in the
// GEMM precision): the gradients are written by the GEMM's epilogue, ds
// only where it is not nil. In bf16 mode dy, dg and du may be bf16
// together, with bf16 weights (sgemm_grouped_swiglu_bwd_a16_w16_d16_bf16),
// and g and u with them (_a16_w16_g16_d16_bf16).
func (b *Backend) GemmGroupedSwiGLUBackward(rows, n, k int, dy, bm *engine.Tensor, strideB int, g, u, ds, dg, du,
	offsets *engine.Tensor, groups int) {
	chk := b.begin("GemmGroupedSwiGLUBackward")
	b.groupedCheck(chk, rows, n, k, groups)
	chk.require(strideB >= 0, "strideB %d must not be negative", strideB)
	a16 := b.narrow(chk, "dy", "_a16", dy, int64(rows)*int64(k))
	w16 := weights(chk, "B", bm, extent(0, n, k, k, strideB, groups))
	withWeights16(chk, "dy", a16, w16)
	chk.require(w16 == "" || a16 != "", "B is bf16 and dy float32: bf16 weights go with a bf16 dy here")
	g16 := b.narrow(chk, "g", "_g16", g, int64(rows)*int64(n))
	b.narrow(chk, "u", "_g16", u, int64(rows)*int64(n))
	if ds != nil {
		chk.f32("ds", ds, int64(rows)*int64(n))
	}
	d16 := b.narrow(chk, "dg", "_d16", dg, int64(rows)*int64(n))
	b.narrow(chk, "du", "_d16", du, int64(rows)*int64(n))
	chk.require(dtypeOf(dg) == dtypeOf(du) && (a16 == "") == (d16 == ""),
		"dy is %v, dg %v and du %v: one dtype for the three", dtypeOf(dy), dtypeOf(dg), dtypeOf(du))
	chk.require(dtypeOf(g) == dtypeOf(u) && (g16 == "" || d16 != ""),
		"g is %v and u %v: one dtype for both, and bf16 only with bf16 dy, dg and du", dtypeOf(g), dtypeOf(u))
	chk.i32("offsets", offsets, int64(groups)+1)
	if !b.ok(chk) || rows == 0 || n == 0 || groups == 0 {
		return
	}
	dsArg := ptrArg(0)
	if ds != nil {
		dsArg = tensorArg(ds)
	}
	b.launch("sgemm_grouped_swiglu_bwd"+a16+w16+g16+d16+b.GEMMPrecision().suffix(), dim3{cdiv(n, 64), cdiv(rows, 64) + groups, 1}, dim3{256, 1, 1}, 0,
		i32Arg(rows), i32Arg(n), i32Arg(k), tensorArg(dy), tensorArg(bm), i64Arg(int64(strideB)), tensorArg(g),
		tensorArg(u), dsArg, tensorArg(dg), tensorArg(du), tensorArg(offsets), i32Arg(groups), b.statusArg())
}

// GemmGroupedT accumulates every group's Aᵀ·B in one launch of
// sgemm_grouped_t, one group per grid.z, reading A's rows through aRows
// where given.
func (b *Backend) GemmGroupedT(rows, m, n int, a, aRows, bm, c, offsets *engine.Tensor, groups int) {
	chk := b.begin("GemmGroupedT")
	b.groupedCheck(chk, rows, m, n, groups)
	arow, arows, a16 := b.gatheredA(chk, a, aRows, rows, m, "_a16")
	b16 := b.narrow(chk, "B", "_b16", bm, int64(rows)*int64(n))
	chk.f32("C", c, int64(groups)*int64(m)*int64(n))
	chk.i32("offsets", offsets, int64(groups)+1)
	if !b.ok(chk) || m == 0 || n == 0 || groups == 0 {
		return
	}
	b.launch("sgemm_grouped_t"+a16+b16+b.GEMMPrecision().suffix(), dim3{cdiv(n, 64), cdiv(m, 64), groups}, dim3{256, 1, 1}, 0,
		i32Arg(rows), i32Arg(m), i32Arg(n), tensorArg(a), arow, i32Arg(arows), tensorArg(bm), tensorArg(c),
		tensorArg(offsets), i32Arg(groups), b.statusArg())
}

// weights checks a grouped product's weight operand, F32 or BF16, and
// returns the kernel-name infix of its dtype ("_w16" for BF16).
func weights(c *argCheck, name string, t *engine.Tensor, n int64) string {
	if t != nil && t.DType == engine.BF16 {
		c.bf16(name, t, n)
		return "_w16"
	}
	c.f32(name, t, n)
	return ""
}

// withWeights16 requires a grouped product's bf16 activation operand (its
// kernel-name infix act16 not empty) to come with bf16 weights: the
// bf16-storage kernels read both narrow (a workspace that keeps one reads
// its model's bf16 copy of the weights), and have no twin with float32
// weights.
func withWeights16(c *argCheck, name, act16, w16 string) {
	c.require(act16 == "" || w16 != "", "%s is bf16 and the weights float32: bf16 activations go with bf16 weights", name)
}

func dtypeOf(t *engine.Tensor) engine.DType {
	if t == nil {
		return engine.F32
	}
	return t.DType
}

// gatheredA checks a grouped product's A operand and returns the kernel's
// row-index argument, A's row count and its dtype's kernel-name infix
// (see narrow; tag "" takes float32 only): A itself (rows×width) when
// aRows is nil, or the rows of a that aRows (rows int32s) names, whose
// range the kernel checks against a's whole rows.
func (b *Backend) gatheredA(c *argCheck, a, aRows *engine.Tensor, rows, width int, tag string) (karg, int, string) {
	n := int64(rows) * int64(width)
	if aRows != nil {
		n = 0
	}
	infix := ""
	if tag == "" {
		c.f32("A", a, n)
	} else {
		infix = b.narrow(c, "A", tag, a, n)
	}
	if aRows == nil {
		return ptrArg(0), rows, infix
	}
	c.i32("aRows", aRows, int64(rows))
	if a == nil || width == 0 {
		return ptrArg(0), 0, infix
	}
	return tensorArg(aRows), a.Len() / width, infix
}

// narrow checks an operand that may be stored in bf16 where the GEMMs
// multiply in bf16 (moe keeps the tensors that only such products read in
// bf16, for half the bytes and the same bits; see engine.GEMMInput), and
// returns its kernel-name infix: tag for bf16, "" for float32. In another
// precision a bf16 operand would change the products, so no kernel takes
// one.
func (b *Backend) narrow(c *argCheck, name, tag string, t *engine.Tensor, n int64) string {
	if t == nil || t.DType != engine.BF16 {
		c.f32(name, t, n)
		return ""
	}
	c.require(b.GEMMPrecision() == GEMMBF16, "%s is bf16, which only the bf16 GEMM precision reads (this backend multiplies in %v)",
		name, b.GEMMPrecision())
	c.bf16(name, t, n)
	return tag
}

// groupedCheck checks the sizes of a grouped product and states the
// kernels' limits: int32 indices within the operands and at most 65535
// groups on grid.z.
func (b *Backend) groupedCheck(c *argCheck, rows, x, y, groups int) {
	c.require(rows >= 0 && x >= 0 && y >= 0 && groups >= 0, "negative size: rows %d, %d, %d, groups %d", rows, x, y, groups)
	c.supports(int64(rows)*int64(max(x, y)) <= math.MaxInt32 && int64(x)*int64(y) <= math.MaxInt32,
		"rows %d and widths %d, %d exceed 2³¹−1 elements", rows, x, y)
	c.supports(groups <= 65535, "groups %d exceeds 65535", groups)
}

// ---------------------------------------------------------------- gather, combine

// Gather copies out[s] = x[perm[s]] for n rows of dim floats.
func (b *Backend) Gather(out, x, perm *engine.Tensor, n, dim int) {
	c := b.begin("Gather")
	total := c.nonneg("n, dim", n, dim)
	c.require(n == 0 || dim > 0, "dim must be positive")
	c.f32("out", out, total)
	c.i32("perm", perm, int64(n))
	c.f32("x", x, int64(dim))
	if !b.ok(c) || total == 0 {
		return
	}
	b.launch("gather_fwd", dim3{n, 1, 1}, rowBlock(dim), 0, tensorArg(out), tensorArg(x), tensorArg(perm),
		i32Arg(n), i32Arg(dim), i32Arg(x.Len()/dim), b.statusArg())
}

func (b *Backend) slotsCheck(c *argCheck, rows, k, dim int) (slots int, total int64) {
	c.nonneg("rows, k, dim", rows, k, dim)
	c.require(rows == 0 || (dim > 0 && k > 0), "k and dim must be positive")
	return rows * k, int64(rows) * int64(k) * int64(dim)
}

// GatherBackward accumulates dx[t] += Σ_j dout[inv[t·k+j]].
func (b *Backend) GatherBackward(dx, dout, inv *engine.Tensor, rows, k, dim int) {
	c := b.begin("GatherBackward")
	slots, total := b.slotsCheck(c, rows, k, dim)
	c.f32("dx", dx, int64(rows)*int64(dim))
	c.f32("dout", dout, total)
	c.i32("inv", inv, int64(slots))
	if !b.ok(c) || total == 0 {
		return
	}
	b.launch("gather_bwd", dim3{rows, 1, 1}, rowBlock(dim), 0, tensorArg(dx), tensorArg(dout), tensorArg(inv),
		i32Arg(rows), i32Arg(k), i32Arg(dim), i32Arg(slots), b.statusArg())
}

// Combine accumulates out[t] += Σ_j weights[t·k+j] · y[inv[t·k+j]].
func (b *Backend) Combine(out, y, weights, inv *engine.Tensor, rows, k, dim int) {
	c := b.begin("Combine")
	slots, total := b.slotsCheck(c, rows, k, dim)
	c.f32("out", out, int64(rows)*int64(dim))
	c.f32("y", y, total)
	c.f32("weights", weights, int64(slots))
	c.i32("inv", inv, int64(slots))
	if !b.ok(c) || total == 0 {
		return
	}
	b.launch("combine_fwd", dim3{rows, 1, 1}, rowBlock(dim), 0, tensorArg(out), tensorArg(y), tensorArg(weights),
		tensorArg(inv), i32Arg(rows), i32Arg(k), i32Arg(dim), i32Arg(slots), b.statusArg())
}

// CombineBackward accumulates dy and dweights.
func (b *Backend) CombineBackward(dy, dweights, dout, y, weights, inv *engine.Tensor, rows, k, dim int) {
	c := b.begin("CombineBackward")
	slots, total := b.slotsCheck(c, rows, k, dim)
	d16 := b.narrow(c, "dy", "_d16", dy, total)
	c.f32("dweights", dweights, int64(slots))
	c.f32("dout", dout, int64(rows)*int64(dim))
	c.f32("y", y, total)
	c.f32("weights", weights, int64(slots))
	c.i32("inv", inv, int64(slots))
	if !b.ok(c) || total == 0 {
		return
	}
	b.launch("combine_bwd"+d16, dim3{rows, 1, 1}, rowBlock(dim), 0, tensorArg(dy), tensorArg(dweights), tensorArg(dout),
		tensorArg(y), tensorArg(weights), tensorArg(inv), i32Arg(rows), i32Arg(k), i32Arg(dim), i32Arg(slots),
		b.statusArg())
}

// ScatterRows copies dst[idx[i]] = src[i] for n rows of dim floats (writing
// the keys and values of a decode step into the KV cache).
func (b *Backend) ScatterRows(dst, src, idx *engine.Tensor, n, dim int) {
	c := b.begin("ScatterRows")
	total := c.nonneg("n, dim", n, dim)
	c.require(n == 0 || dim > 0, "dim must be positive")
	c.f32("src", src, total)
	c.i32("idx", idx, int64(n))
	c.f32("dst", dst, int64(dim))
	if !b.ok(c) || total == 0 {
		return
	}
	b.launch("scatter_rows", dim3{n, 1, 1}, rowBlock(dim), 0, tensorArg(dst), tensorArg(src), tensorArg(idx),
		i32Arg(n), i32Arg(dim), i32Arg(dst.Len()/dim), b.statusArg())
}

// ---------------------------------------------------------------- log-probs

func (b *Backend) vocabCheck(c *argCheck, rows, vocab int) int64 {
	n := c.nonneg("rows, vocab", rows, vocab)
	c.require(rows == 0 || vocab > 0, "vocab must be positive")
	return n
}

// TokenLogProbs computes lse and logp = logits[target] − lse per row.
func (b *Backend) TokenLogProbs(logp, lse, logits, targets *engine.Tensor, rows, vocab int) {
	c := b.begin("TokenLogProbs")
	n := b.vocabCheck(c, rows, vocab)
	c.f32("logp", logp, int64(rows))
	c.f32("lse", lse, int64(rows))
	c.f32("logits", logits, n)
	c.i32("targets", targets, int64(rows))
	if !b.ok(c) || n == 0 {
		return
	}
	b.launch("logprob_fwd", dim3{rows, 1, 1}, dim3{256, 1, 1}, 0, tensorArg(logp), tensorArg(lse), tensorArg(logits),
		tensorArg(targets), i32Arg(rows), i32Arg(vocab), b.statusArg())
}

// TokenLogProbsBackward accumulates dlogits += dlogp·(onehot(target) − softmax).
func (b *Backend) TokenLogProbsBackward(dlogits, dlogp, logits, lse, targets *engine.Tensor, rows, vocab int) {
	c := b.begin("TokenLogProbsBackward")
	n := b.vocabCheck(c, rows, vocab)
	c.f32("dlogits", dlogits, n)
	c.f32("dlogp", dlogp, int64(rows))
	c.f32("logits", logits, n)
	c.f32("lse", lse, int64(rows))
	c.i32("targets", targets, int64(rows))
	if !b.ok(c) || n == 0 {
		return
	}
	b.launch("logprob_bwd", dim3{rows, 1, 1}, dim3{256, 1, 1}, 0, tensorArg(dlogits), tensorArg(dlogp),
		tensorArg(logits), tensorArg(lse), tensorArg(targets), i32Arg(rows), i32Arg(vocab), b.statusArg())
}

// TokenLogProbsFused computes logp and lse as TokenLogProbs does and
// overwrites dlogits with dlogp·(onehot(target) − softmax), in one launch.
func (b *Backend) TokenLogProbsFused(logp, lse, dlogits, logits, targets, dlogp *engine.Tensor, rows, vocab int) {
	c := b.begin("TokenLogProbsFused")
	n := b.vocabCheck(c, rows, vocab)
	c.f32("logp", logp, int64(rows))
	c.f32("lse", lse, int64(rows))
	c.f32("dlogits", dlogits, n)
	c.f32("logits", logits, n)
	c.i32("targets", targets, int64(rows))
	c.f32("dlogp", dlogp, int64(rows))
	if !b.ok(c) || n == 0 {
		return
	}
	b.launch("logprob_fused", dim3{rows, 1, 1}, dim3{256, 1, 1}, 0, tensorArg(logp), tensorArg(lse),
		tensorArg(dlogits), tensorArg(logits), tensorArg(targets), tensorArg(dlogp), i32Arg(rows), i32Arg(vocab),
		b.statusArg())
}

// Entropy computes the entropy of softmax(logits) per row, given lse.
func (b *Backend) Entropy(ent, logits, lse *engine.Tensor, rows, vocab int) {
	c := b.begin("Entropy")
	n := b.vocabCheck(c, rows, vocab)
	c.f32("ent", ent, int64(rows))
	c.f32("logits", logits, n)
	c.f32("lse", lse, int64(rows))
	if !b.ok(c) || n == 0 {
		return
	}
	b.launch("entropy", dim3{rows, 1, 1}, dim3{256, 1, 1}, 0, tensorArg(ent), tensorArg(logits), tensorArg(lse),
		i32Arg(rows), i32Arg(vocab))
}

// ---------------------------------------------------------------- AdamW

// AdamW updates n parameters in place with decoupled weight decay on the
// first nDecay, reading the gradient as gradScale·g: the whole model's
// update, clipping included, in one launch.
func (b *Backend) AdamW(p, g, m, v *engine.Tensor, n, nDecay int, gradScale, lr, beta1, beta2, eps, weightDecay float32, step int) {
	c := b.begin("AdamW")
	c.nonneg("n", n)
	c.require(nDecay >= 0 && nDecay <= n, "nDecay %d must lie in [0, n = %d]", nDecay, n)
	c.require(step >= 1, "step %d must be at least 1", step)
	c.require(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "betas %v, %v must lie in [0, 1)", beta1, beta2)
	c.f32s(int64(n), named{"p", p}, named{"g", g}, named{"m", m}, named{"v", v})
	if !b.ok(c) || n == 0 {
		return
	}
	// The inverse bias corrections, in float64 and then rounded, as on the CPU.
	c1 := float32(1 / (1 - math.Pow(float64(beta1), float64(step))))
	c2 := float32(1 / (1 - math.Pow(float64(beta2), float64(step))))
	gr, t := elementwise(n)
	b.launch("adamw", gr, t, 0, tensorArg(p), tensorArg(g), tensorArg(m), tensorArg(v), i32Arg(n), i32Arg(nDecay),
		f32Arg(gradScale), f32Arg(lr), f32Arg(beta1), f32Arg(beta2), f32Arg(eps), f32Arg(weightDecay), f32Arg(c1),
		f32Arg(c2))
}

// ---------------------------------------------------------------- sampling

// sampleSmemKeys is SAMPLE_SMEM_KEYS in sampling.cu.
const sampleSmemKeys = 4096

// Sample draws one token per row; see sampling.cu for the exact rule (ranks
// by scaled logit with ties to the lower id, top-k, then top-p, then the
// inverse CDF over the kept tokens in id order at u).
func (b *Backend) Sample(tokens, logp, logits, u *engine.Tensor, rows, vocab int, temperature float32, topK int, topP float32) {
	c := b.begin("Sample")
	n := b.vocabCheck(c, rows, vocab)
	c.require(temperature >= 0 && !math.IsInf(float64(temperature), 0), "temperature %v must be finite and not negative", temperature)
	c.require(topK >= 0, "topK %d is negative", topK)
	c.require(topP > 0 && topP <= 1, "topP %v must lie in (0, 1]", topP)
	c.i32("tokens", tokens, int64(rows))
	c.f32("logp", logp, int64(rows))
	c.f32("logits", logits, n)
	c.f32("u", u, int64(rows))
	npow2 := 1
	for npow2 < vocab {
		npow2 <<= 1
	}
	greedy := temperature == 0
	trunc := !greedy && ((topK > 0 && topK < vocab) || topP < 1)
	if trunc && npow2 > sampleSmemKeys {
		c.nonneg("rows, vocab rounded up to a power of two", rows, npow2)
	}
	if !b.ok(c) || n == 0 {
		return
	}
	temp := temperature // logits are divided by it, as on the CPU
	if greedy {
		temp = 1
	}
	smem, scratch := 0, uintptr(0)
	if trunc {
		if npow2 <= sampleSmemKeys {
			smem = npow2 * 8
		} else {
			var ok bool
			if scratch, ok = b.scratchPtr(scratchSample, uint64(rows)*uint64(npow2)*8); !ok {
				return
			}
		}
	}
	b.launch("sample_rows", dim3{rows, 1, 1}, dim3{256, 1, 1}, smem, tensorArg(tokens), tensorArg(logp),
		tensorArg(logits), tensorArg(u), i32Arg(vocab), f32Arg(temp), boolArg(greedy), i32Arg(topK), f32Arg(topP),
		ptrArg(scratch), i32Arg(npow2))
}
