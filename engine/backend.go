package engine

// Backend computes every op the model, the sampler and the optimizer need.
// The CPU backend (engine/cpu) is the reference; the CUDA backend
// (engine/cuda) must match it to float32 rounding.
//
// Shapes are passed as ints and tensors are flat buffers, so one buffer can
// hold several logical tensors (Gemm takes element offsets). Unless an op
// says otherwise, backward ops accumulate (+=) into the gradients they write.
//
// Errors. Both backends keep one contract, so that code that runs right on
// one runs right on the other:
//
//   - A call that breaks an op's preconditions is a bug in the caller and
//     panics at the call, on both backends, with a message that starts with
//     the backend and the op ("cpu: Gemm: …", "cuda: Gemm: …"): a nil
//     tensor, one of the wrong type or shorter than the shapes say, a
//     negative size, a host tensor given to a device backend or a freed
//     tensor, an argument outside the range its op documents (k above
//     nExperts, step below 1, an odd head dimension, offsets of the wrong
//     length), outputs that overlap where the op forbids it. Nothing is
//     queued, so the backend stays usable. What users give — flags,
//     prompts, configurations, checkpoints — is validated above the
//     backend (moe.Config.Validate, Model.Generate, the commands),
//     so a user's input never reaches one of these panics.
//   - An index out of range inside the data (a token id, a target, an
//     expert, a row of Gather or ScatterRows, a decode length) is a bug of
//     the same kind, but a device backend finds it only when its kernel
//     runs. The CPU panics at the op; CUDA returns it from the next Sync,
//     naming the op.
//   - What the caller cannot rule out is an error, never a panic: a failed
//     driver or cuBLAS call (a launch failure, out of memory), or a shape
//     beyond a backend's kernels that the CPU takes (CUDA: a head dimension
//     above 128; cuda.Unsupported). A device backend keeps the first such
//     error, drops the work queued after it (a Download then fills its
//     destination with zeros, so host loops see in-range ids and finite
//     numbers), and returns it from the next Sync, which clears it. The CPU
//     has none: its Sync returns nil.
//
// Hence: call Sync where results leave the backend for good — at the end of
// every training step (run.Loop does), of a generate call and of an
// evaluation — and stop on its error. When Sync returns one, every result
// since the previous Sync is undefined.
type Backend interface {
	// Name is "cpu" or "cuda"; Device describes the hardware in words.
	Name() string
	Device() string

	// New allocates a zeroed tensor of dtype d on the backend, its bytes
	// counted by d.Size(); NewF32 and NewI32 are New(F32, …) and
	// New(I32, …).
	New(d DType, shape ...int) *Tensor
	NewF32(shape ...int) *Tensor
	NewI32(shape ...int) *Tensor
	// Free returns a tensor's memory; the tensor must not be used after.
	Free(t *Tensor)
	// Upload and Download copy between host slices and a backend tensor of
	// the same length (the F32 forms for F32 tensors, the I32 forms for I32).
	// Download waits for the work that writes src; with an error pending it
	// writes zeros (see Errors above).
	Upload(dst *Tensor, src []float32)
	UploadI32(dst *Tensor, src []int32)
	Download(dst []float32, src *Tensor)
	DownloadI32(dst []int32, src *Tensor)
	// BF16 tensors have no host copies of their own: Cast them to F32.
	//
	// Zero sets every element to 0. Copy copies src into dst (same dtype
	// and length).
	Zero(t *Tensor)
	Copy(dst, src *Tensor)
	// Cast converts n elements of src into dst, between F32 and BF16 either
	// way: to BF16 rounds to nearest, ties to even, as engine.BF16Bits does
	// (so every backend gives the same bits), and to F32 is exact. It
	// makes a bf16 working copy of fp32 master weights, and it is the way
	// a BF16 tensor's values reach the host.
	Cast(dst, src *Tensor, n int)
	// Sync waits for queued work and returns the first error since the
	// previous Sync (see Errors above), clearing it.
	Sync() error

	// Gemm computes C = alpha·op(A)·op(B) + beta·C on row-major matrices,
	// with op(A) m×k, op(B) k×n, C m×n. op(X) is X or its transpose;
	// lda, ldb, ldc are row strides of the stored matrices, and the off
	// arguments are element offsets into the buffers. beta = 0 overwrites C
	// (even where it held NaN).
	Gemm(transA, transB bool, m, n, k int, alpha float32,
		a *Tensor, offA, lda int, b *Tensor, offB, ldb int,
		beta float32, c *Tensor, offC, ldc int)
	// GemmBatched runs batch Gemms whose operands start stride elements apart.
	GemmBatched(transA, transB bool, m, n, k int, alpha float32,
		a *Tensor, offA, lda, strideA int, b *Tensor, offB, ldb, strideB int,
		beta float32, c *Tensor, offC, ldc, strideC int, batch int)

	// GemmGrouped runs one product per group g < groups on the block of
	// rows [offsets[g], offsets[g+1]) of A (rows×k) and C (rows×n):
	// C_g = A_g·op(B_g) + beta·C_g, with B_g the k×n matrix (n×k stored,
	// when transB) that starts at element g·strideB of b. offsets holds
	// groups+1 int32s on the backend, non-decreasing from 0 to rows, so a
	// device backend reads them where RouterDispatch wrote them, with no
	// host round trip. Each row's outputs sum their k products in the
	// order Gemm does, whatever the other groups hold. It is the MoE
	// layer's expert projections (transB false) and their input gradients
	// (transB true), every expert in one call. b may be BF16 (weights kept
	// in bf16), read widened to float32, which is exact; so may a, on a
	// backend whose GEMMs round to bf16 (see GEMMInput), which may then
	// require a BF16 b (the CUDA backend does: a workspace that keeps its
	// activations narrow reads its weights narrow too).
	GemmGrouped(transB bool, rows, n, k int, a, b *Tensor, strideB int, beta float32, c, offsets *Tensor, groups int)
	// GemmGroupedT accumulates, per group, C_g += A_gᵀ·B_g over the
	// group's rows of A (rows×m) and B (rows×n), C_g the m×n matrix that
	// starts at element g·m·n of c: the expert weights' gradients. With
	// aRows (rows int32s) not nil, row r of A is row aRows[r] of a, as if
	// Gather had made A first (the bits are the same): the experts' inputs
	// read through the dispatch permutation, never copied. a and b may be
	// BF16 as GemmGrouped's a.
	GemmGroupedT(rows, m, n int, a, aRows, b, c, offsets *Tensor, groups int)
	// GemmGroupedSwiGLU is the MoE experts' first layer in one call: per
	// group, g = A_g·B1_g and u = A_g·B3_g as GemmGrouped (transB false,
	// beta 0) computes them, and s = silu(g)·u as SwiGLU does; g, u and s
	// are rows×n. aRows is as GemmGroupedT's: with it, A is gathered from
	// the rows of a as it is read. b1 and b3 may be BF16, as GemmGrouped's
	// b; s may be BF16 as GemmGrouped's a (and with b1, b3 as a with b),
	// and is then written rounded to nearest even. g and u may both be
	// nil, for a forward that no backward follows: only s is written. They
	// may be BF16 together, with a BF16 s (see ActivationStorage): s is
	// computed from the unrounded values.
	GemmGroupedSwiGLU(rows, n, k int, a, aRows, b1, b3 *Tensor, strideB int, g, u, s, offsets *Tensor, groups int)
	// GemmGroupedSwiGLUBackward is the first half of that layer's
	// backward in one call: ds = dy·B_gᵀ per group, as GemmGrouped
	// (transB true, beta 0) computes it, with dy rows×k and B_g the n×k
	// matrix at g·strideB, then dg and du through the SwiGLU of g and u,
	// as SwiGLUBackward computes them into zeroed gradients (dg and du are
	// overwritten, not accumulated); ds, g, u, dg and du are rows×n. ds
	// may be nil (not kept); dy, dg and du may be BF16 together, as
	// GemmGrouped's a with b (dg and du written rounded; on the CUDA
	// backend b is BF16 exactly when they are), and with them g and u
	// (read widened).
	GemmGroupedSwiGLUBackward(rows, n, k int, dy, b *Tensor, strideB int, g, u, ds, dg, du, offsets *Tensor, groups int)

	// Add computes y += x over n elements. Scale computes x *= s.
	Add(y, x *Tensor, n int)
	Scale(x *Tensor, n int, s float32)
	// SumSquares returns Σ x² over n elements, accumulated in float64 in a
	// fixed order.
	SumSquares(x *Tensor, n int) float64

	// Embedding gathers out[i] = table[ids[i]] for rows rows of dim floats.
	Embedding(out, table, ids *Tensor, rows, dim int)
	// EmbeddingBackward accumulates dtable[ids[i]] += dout[i].
	EmbeddingBackward(dtable, dout, ids *Tensor, rows, dim int)

	// RMSNorm computes out = x / sqrt(mean(x²) + eps) · w per row and saves
	// the reciprocal rms per row in rstd for the backward.
	RMSNorm(out, rstd, x, w *Tensor, rows, dim int, eps float32)
	RMSNormBackward(dx, dw, dout, x, w, rstd *Tensor, rows, dim int)
	// ResidualRMSNorm adds a branch to the residual stream and normalises
	// the result in one pass over the rows, so that a device reads them
	// once: sum = x + r (rows×dim), then out and rstd from sum as RMSNorm
	// computes them, bit for bit what Add and RMSNorm give on the same
	// backend. sum may be x or r itself (an in-place residual add): each of
	// its elements depends on the same element of x and r alone. Otherwise
	// the tensors it writes (sum, out, rstd) share no memory with one
	// another or with x, r and w, because out depends on a whole row of sum
	// and writing it over an input would be right under one order of the
	// reads and writes only.
	ResidualRMSNorm(sum, out, rstd, x, r, w *Tensor, rows, dim int, eps float32)

	// RoPE rotates x in place: x is rows×heads×headDim, row r at position
	// pos[r]; the first and second halves of each head form the pairs
	// (x1, x2) → (x1·cos − x2·sin, x1·sin + x2·cos), angle pos·theta^(−2i/headDim).
	RoPE(x, pos *Tensor, rows, heads, headDim int, theta float32)
	// RoPEBackward rotates a gradient in place by the opposite angle
	// (the transpose of RoPE). It overwrites, it does not accumulate.
	RoPEBackward(dx, pos *Tensor, rows, heads, headDim int, theta float32)

	// Attention is causal softmax attention with scale 1/sqrt(headDim).
	// q, k, v and out are batch×seq×heads×headDim; lse (batch×heads×seq)
	// receives the log-sum-exp of each query's scores for the backward.
	Attention(out, lse, q, k, v *Tensor, batch, seq, heads, headDim int)
	AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse *Tensor, batch, seq, heads, headDim int)
	// AttentionDecode attends one new query per sequence to a KV cache:
	// q and out are batch×heads×headDim, kc and vc are batch×maxSeq×heads×headDim,
	// and sequence b attends to its first lens[b] cached positions
	// (the new token's own key and value already written there).
	AttentionDecode(out, q, kc, vc, lens *Tensor, batch, maxSeq, heads, headDim int)

	// SwiGLU computes out = silu(gate) · up over n elements.
	SwiGLU(out, gate, up *Tensor, n int)
	SwiGLUBackward(dgate, dup, dout, gate, up *Tensor, n int)

	// RouterTopK takes router logits (rows×nExperts), saves their softmax in
	// probs, picks the k largest probabilities per row (ties: lower expert
	// index first) into experts (rows×k, in decreasing order) and their
	// renormalised probabilities into weights (rows×k, summing to 1).
	RouterTopK(weights, experts, probs, logits *Tensor, rows, nExperts, k int)
	// RouterTopKBackward accumulates into dlogits the gradient that flows
	// through the renormalised weights and the softmax.
	RouterTopKBackward(dlogits, dweights, weights, experts, probs *Tensor, rows, nExperts, k int)
	// RouterReplay replaces, in every row r whose replay[r·k] is not
	// negative, the choice RouterTopK made from the same probs: experts
	// takes the row's k replayed ids (distinct, in [0, nExperts), in the
	// order given) and weights their probabilities renormalised to sum 1,
	// summed in that order as RouterTopK sums its own choice, so a row
	// replaying the experts RouterTopK chose gets its weights bit for bit.
	// Rows whose replay[r·k] is negative keep RouterTopK's choice. Routing
	// replay (R3, arXiv 2510.11370) trains through the experts a rollout
	// used; RouterTopKBackward is the backward of either choice.
	RouterReplay(weights, experts, probs, replay *Tensor, rows, nExperts, k int)
	// RouterDispatch sorts the rows·k (token, slot) assignments by expert,
	// stably in (token, slot) order: perm[s] is the token of sorted slot s,
	// inv[token·k+j] the sorted slot of the token's j-th choice, and
	// offsets (nExperts+1 int32s, on the backend) the start of each
	// expert's run, for GemmGrouped and RouterLoad.
	RouterDispatch(perm, inv, offsets, experts *Tensor, rows, nExperts, k int)
	// RouterLoad writes what one MoE layer's load-balancing loss needs:
	// load[e] = offsets[e+1] − offsets[e], the slots RouterDispatch gave
	// expert e, and load[nExperts+e] = Σ_r probs[r·nExperts+e], summed in
	// float64 in row order, for e < nExperts. It stays on the backend, so
	// the host fetches every layer's in one copy.
	RouterLoad(load, probs, offsets *Tensor, rows, nExperts int)
	// Gather copies out[s] = x[perm[s]] for n rows of dim floats.
	Gather(out, x, perm *Tensor, n, dim int)
	// GatherBackward accumulates dx[t] += Σ_j dout[inv[t·k+j]] for rows tokens.
	GatherBackward(dx, dout, inv *Tensor, rows, k, dim int)
	// Combine accumulates out[t] += Σ_j weights[t·k+j] · y[inv[t·k+j]].
	Combine(out, y, weights, inv *Tensor, rows, k, dim int)
	// CombineBackward accumulates dy[inv[t·k+j]] += weights[t·k+j]·dout[t]
	// and dweights[t·k+j] += dout[t]·y[inv[t·k+j]]. dy may be BF16 as
	// GemmGrouped's a: each row gets the float sum rounded.
	CombineBackward(dy, dweights, dout, y, weights, inv *Tensor, rows, k, dim int)

	// ScatterRows copies dst[idx[r]] = src[r] for rows rows of dim floats
	// (idx distinct): it appends keys and values to a KV cache.
	ScatterRows(dst, src, idx *Tensor, rows, dim int)
	// SoftmaxBackward accumulates into dlogits the gradient through
	// probs = softmax(logits) per row: probs ⊙ (dprobs − Σ probs⊙dprobs).
	SoftmaxBackward(dlogits, dprobs, probs *Tensor, rows, n int)

	// TokenLogProbs computes, per row, lse = log Σ exp(logits) and
	// logp = logits[target] − lse (rows×vocab logits, rows targets).
	TokenLogProbs(logp, lse, logits, targets *Tensor, rows, vocab int)
	// TokenLogProbsBackward accumulates dlogits += dlogp·(onehot(target) − softmax).
	TokenLogProbsBackward(dlogits, dlogp, logits, lse, targets *Tensor, rows, vocab int)
	// TokenLogProbsFused is the two above in one pass over the logits, for
	// a loss whose dlogp is known before the forward (cross-entropy on
	// given targets; llm.c's fused classifier): it writes logp and lse as
	// TokenLogProbs does and overwrites dlogits with
	// dlogp·(onehot(target) − softmax), the bits TokenLogProbsBackward
	// accumulates into zeroed dlogits, so neither the zeroing nor a second
	// read of the logits is needed.
	TokenLogProbsFused(logp, lse, dlogits, logits, targets, dlogp *Tensor, rows, vocab int)
	// Entropy computes the entropy of softmax(logits) per row, given lse.
	Entropy(ent, logits, lse *Tensor, rows, vocab int)
	// EntropyBackward accumulates the gradient through Entropy's ent =
	// H = −Σ p log p, p = softmax(logits): dlogits += dent·(−p⊙(log p + H)),
	// given lse and ent of the same logits.
	EntropyBackward(dlogits, dent, logits, lse, ent *Tensor, rows, vocab int)

	// AdamW updates n parameters in place with decoupled weight decay,
	// which applies to the first nDecay of them (a model keeps its matrices
	// first and its norm gains after, so the whole model is one call): m, v
	// the moments, step ≥ 1 the 1-based step for bias correction. It reads
	// the gradient as gradScale·g, rounded to float32 as Scale rounds it,
	// so global-norm clipping costs no pass of its own; g is not written.
	AdamW(p, g, m, v *Tensor, n, nDecay int, gradScale, lr, beta1, beta2, eps, weightDecay float32, step int)

	// Sample draws one token per row from softmax(logits/temperature),
	// restricted to the topK most likely tokens (0: all) and then to the
	// smallest set whose probability reaches topP (1: all), using the
	// uniform u[r] in [0,1). It writes the token and its log-probability
	// under the untruncated softmax(logits/temperature) (what the trainer
	// recomputes). temperature 0 means greedy.
	Sample(tokens, logp, logits, u *Tensor, rows, vocab int, temperature float32, topK int, topP float32)
}

// GEMMInput is a backend whose GEMMs round their inputs to a narrower
// dtype before multiplying (the CUDA backend in bf16 mode). Tensors that
// only GEMMs read, stored in that dtype, then give the same products from
// fewer bytes: the sampler keeps a copy of the experts' weights in it, and
// a workspace keeps the experts' SwiGLU output and the gradients of their
// products in it (the grouped ops above take them as BF16). GEMMInputDType
// is F32 when the inputs are not rounded to a storage dtype.
type GEMMInput interface {
	GEMMInputDType() DType
}

// ActivationStorage is a backend that keeps, in a narrower dtype, the
// activations a backward reads elementwise rather than through a GEMM (the
// experts' gate and up values; the CUDA backend in bf16 mode, where
// ActivationDType is BF16). Unlike GEMMInput's tensors this changes
// results: not the forward's, which computes from the values before they
// are stored, but the backward's, which reads them rounded.
// ActivationDType is F32 where they are kept as they are.
type ActivationStorage interface {
	ActivationDType() DType
}

// Graph is a recorded sequence of a backend's ops that Launch replays on
// the tensors it was recorded on, with their contents at launch time.
type Graph interface {
	// Launch queues the recorded ops; errors surface at the next Sync.
	Launch() error
	// Close frees the graph.
	Close() error
}

// Capturer is a backend that can record ops into a Graph (CUDA graphs):
// replaying a step costs the host one call instead of one per op. The CPU
// backend is not one. CaptureGraph runs nothing: it records what fn queues,
// and fails, leaving the backend usable, when fn does host work (allocates,
// copies to or from the host, waits). Run fn once directly before capturing
// it, so that the scratch memory its ops need exists.
type Capturer interface {
	CaptureGraph(fn func()) (Graph, error)
}
