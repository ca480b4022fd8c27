// gemm.cu: the fallback SGEMM, used when cuBLAS is absent or MOERL_CUBLAS=off
// (sgemm_tiled, and sgemm_tiled_tf32 in TF32 mode), and the grouped SGEMMs
// of the MoE experts, used always.
//
// Row-major C = alpha·op(A)·op(B) + beta·C for a batch of matrices (grid.z),
// op(X) = X or Xᵀ, with op(A) m×k, op(B) k×n, row strides lda, ldb, ldc and
// batch strides in elements. beta = 0 overwrites C without reading it, so a C
// that held NaN comes out clean. Tiles of 64×64 outputs per block of 256
// threads, 4×4 per thread, the k dimension in steps of 16 through shared
// memory; each output adds its k products in increasing k, the same order on
// every run and wherever its row sits in its tile. No fusion; C is
// overwritten (or scaled by beta and added to).
//
// The grouped forms take their groups' row ranges from offsets on the
// device (RouterDispatch writes them), so the experts of a layer run in one
// launch per projection with no host round trip:
//
//   sgemm_grouped    C_g = A_g·op(B_g) + beta·C_g on the rows
//                    [offsets[g], offsets[g+1]) of A and C, B_g at g·strideB.
//                    grid.y walks (group, 64-row tile) pairs: there are at
//                    most cdiv(rows, 64) + groups of them, and each block
//                    finds its pair by walking the offsets (groups is small);
//                    blocks past the last pair return at once.
//   sgemm_grouped_t  C_g += A_gᵀ·B_g summed over the group's rows, one
//                    group per grid.z: the expert weights' gradients.
//
// sgemm_grouped_t and sgemm_grouped_swiglu may read A through row indices
// (arow, not null): row r of A is row arow[r] of the arows rows at A, so
// the experts' inputs are read from the tokens' rows in dispatch order
// without a gathered copy. A block checks its indices before it reads
// (STATUS_GATHER_INDEX; it then leaves its outputs alone).
//
// Offsets that fall or pass rows record STATUS_GROUP_OFFSETS and leave the
// output as it was.
//
// Each grouped kernel has a _tf32 twin, launched in TF32 mode (the mode in
// which cuBLAS runs the other GEMMs): the same tiles and shared-memory
// staging, the products on the tensor cores through WMMA m16n16k8, the
// inputs rounded to TF32 (10 mantissa bits, round to nearest) and the sums
// in fp32. Each of the 8 warps owns a 16×32 strip of the 64×64 tile; the
// accumulators go through shared memory so that alpha, beta and the edges
// are applied as in the fp32 tile. An output's sum still depends on its
// row alone, never on where the row sits, so the batch invariance holds.
//
//   sgemm_grouped_swiglu  the experts' first layer: g = A_g·W1_g and
//                    u = A_g·W3_g from one staging of A, and s = silu(g)·u
//                    (swiglu.cu's expression) written with them (g and u
//                    only where G is not null: a sampler does not keep them).
//   sgemm_grouped_swiglu_bwd  its backward's first half: ds = dy·W2ᵀ as
//                    sgemm_grouped (transB) computes it, and in the epilogue
//                    dgate and dup through the SwiGLU (swiglu_bwd's
//                    expressions), overwritten.
//
// The _w16 kernels read bf16 weights, and in the bf16 precision the _a16,
// _b16, _s16 and _d16 ones read or write bf16 operands (the tensors that
// only these products read; see the end of the file). Operand element
// types are template parameters (TA, TB, TS, TD), read and written through
// common.cuh's load_elem and store_elem.
//
// CPU twin: engine.Backend.Gemm, engine.Backend.GemmBatched,
// engine.Backend.GemmGrouped, engine.Backend.GemmGroupedT,
// engine.Backend.GemmGroupedSwiGLU, engine.Backend.GemmGroupedSwiGLUBackward.
#include "common.cuh"

#ifndef MOERL_EMU
#include <cuda_bf16.h>
#include <mma.h>
#endif

#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_BK 16

using namespace nvcuda;

// The precisions of a GEMM's products. PREC_FP32 is the CUDA-core tile;
// the others run on the tensor cores (WMMA) and differ in what they stage:
// TF32 stages fp32 and rounds each fragment it loads (m16n16k8), BF16
// rounds each input to bfloat16 as it is staged, to nearest even, and
// stages half the bytes (m16n16k16). Both sum in fp32.
enum { PREC_FP32, PREC_TF32, PREC_BF16 };

// tc is a precision's staging element, its row padding (a multiple of
// what WMMA needs of a leading dimension, and off the bank period), its
// WMMA k and fragment element type, and round, applied to a loaded
// fragment.
template <int P> struct tc {
    typedef float elem;
    static constexpr int pad = 4, K = 8;
    typedef wmma::precision::tf32 frag;
    template <class F> __device__ static void round(F& f) {
#pragma unroll
        for (int t = 0; t < f.num_elements; t++) f.x[t] = wmma::__float_to_tf32(f.x[t]);
    }
};
template <> struct tc<PREC_BF16> {
    typedef __nv_bfloat16 elem;
    static constexpr int pad = 8, K = 16;
    typedef __nv_bfloat16 frag;
    template <class F> __device__ static void round(F&) {} // rounded when staged
};

// to_elem stores v as a staging element.
__device__ __forceinline__ void to_elem(float& d, float v) { d = v; }
__device__ __forceinline__ void to_elem(__nv_bfloat16& d, float v) { d = __float2bfloat16_rn(v); }

// Staging is double-buffered through registers: each thread loads its
// share of the next k-slice of A and B from global memory (load_a,
// load_b) before the block computes on the slice in shared memory, and
// stores it there (store_a, store_b) after, so the loads' latency hides
// behind the arithmetic. Every value staged and every product is what it
// was without the prefetch, in the same order: the bits do not change.
// A block has 256 threads, so each holds STAGE_N elements of a slice.
#define STAGE_N (GEMM_BM * GEMM_BK / 256)

// a_slot is where element i of this thread's share of an A slice sits in
// the 64×16 slice of op(A): row r, column kk, walking the stored matrix
// along its contiguous dimension.
__device__ __forceinline__ void a_slot(int transA, int i, int* r, int* kk) {
    const int idx = threadIdx.x + i * 256;
    if (transA) {
        *kk = idx / GEMM_BM;
        *r = idx % GEMM_BM;
    } else {
        *r = idx / GEMM_BK;
        *kk = idx % GEMM_BK;
    }
}

// b_slot is the same for the 16×64 slice of op(B): row kk, column c.
__device__ __forceinline__ void b_slot(int transB, int i, int* kk, int* c) {
    const int idx = threadIdx.x + i * 256;
    if (transB) {
        *c = idx / GEMM_BK;
        *kk = idx % GEMM_BK;
    } else {
        *kk = idx / GEMM_BN;
        *c = idx % GEMM_BN;
    }
}

// load_a fetches this thread's share of the 64×16 slice of op(A) at
// (row0, k0), zero past the edges. With arow, stored row i of A is row
// arow[i] of the memory at A: the operand gathered as it is read, never
// copied. Every tile function below takes arow last and hands it here.
template <class TA>
__device__ __forceinline__ void load_a(int transA, int m, int k, const TA* A, int lda, int row0, int k0,
                                       float (&ra)[STAGE_N], const int* arow) {
#pragma unroll
    for (int i = 0; i < STAGE_N; i++) {
        int r, kk;
        a_slot(transA, i, &r, &kk);
        const int gi = row0 + r, gk = k0 + kk;
        float v = 0.0f;
        if (gi < m && gk < k) {
            const int sr = transA ? gk : gi;
            const size_t row = arow ? (size_t)arow[sr] : (size_t)sr;
            v = load_elem(A[row * lda + (transA ? gi : gk)]);
        }
        ra[i] = v;
    }
}

// store_a puts a loaded A share into shared memory, k-major (As[kk][r]).
template <class E, int LD>
__device__ __forceinline__ void store_a(int transA, E (*As)[LD], const float (&ra)[STAGE_N]) {
#pragma unroll
    for (int i = 0; i < STAGE_N; i++) {
        int r, kk;
        a_slot(transA, i, &r, &kk);
        to_elem(As[kk][r], ra[i]);
    }
}

// load_b fetches this thread's share of the 16×64 slice of op(B) at
// (k0, col0), zero past the edges.
template <class TB>
__device__ __forceinline__ void load_b(int transB, int n, int k, const TB* B, int ldb, int col0, int k0,
                                       float (&rb)[STAGE_N]) {
#pragma unroll
    for (int i = 0; i < STAGE_N; i++) {
        int kk, c;
        b_slot(transB, i, &kk, &c);
        const int gk = k0 + kk, gj = col0 + c;
        float v = 0.0f;
        if (gk < k && gj < n) v = load_elem(transB ? B[(size_t)gj * ldb + gk] : B[(size_t)gk * ldb + gj]);
        rb[i] = v;
    }
}

// store_b puts a loaded B share into shared memory, k-major (Bs[kk][c]).
template <class E, int LD>
__device__ __forceinline__ void store_b(int transB, E (*Bs)[LD], const float (&rb)[STAGE_N]) {
#pragma unroll
    for (int i = 0; i < STAGE_N; i++) {
        int kk, c;
        b_slot(transB, i, &kk, &c);
        to_elem(Bs[kk][c], rb[i]);
    }
}

// slice_ab is a tile's staging of A and B: the operands, and this thread's
// share of the next k-slice in registers. load fetches the slice at k0,
// store puts it in shared memory, so a k-loop reads
//
//	load(0); for each k0 { store; sync; load(k0 + BK) unless last; compute; sync }
template <class TA, class TB> struct slice_ab {
    int transA, transB, m, n, k;
    const TA* A;
    int lda;
    const TB* B;
    int ldb, row0, col0;
    const int* arow;
    float ra[STAGE_N], rb[STAGE_N];
    __device__ __forceinline__ void load(int k0) {
        load_a(transA, m, k, A, lda, row0, k0, ra, arow);
        load_b(transB, n, k, B, ldb, col0, k0, rb);
    }
    template <class E, int LD> __device__ __forceinline__ void store(E (*As)[LD], E (*Bs)[LD]) const {
        store_a(transA, As, ra);
        store_b(transB, Bs, rb);
    }
};

// slice_abb is slice_ab with two B operands read against one A (the
// experts' W1 and W3), neither transposed.
template <class TB> struct slice_abb {
    int m, n, k;
    const float* A;
    int lda;
    const TB *B1, *B3;
    int ldb, row0, col0;
    const int* arow;
    float ra[STAGE_N], rb1[STAGE_N], rb3[STAGE_N];
    __device__ __forceinline__ void load(int k0) {
        load_a(0, m, k, A, lda, row0, k0, ra, arow);
        load_b(0, n, k, B1, ldb, col0, k0, rb1);
        load_b(0, n, k, B3, ldb, col0, k0, rb3);
    }
    template <class E, int LD> __device__ __forceinline__ void store(E (*As)[LD], E (*B1s)[LD], E (*B3s)[LD]) const {
        store_a(0, As, ra);
        store_b(0, B1s, rb1);
        store_b(0, B3s, rb3);
    }
};

// store_epi is the plain GEMM epilogue: C = alpha·acc + beta·C (beta 0
// overwrites without reading).
struct store_epi {
    float alpha, beta;
    float* C;
    int ldc;
    __device__ __forceinline__ void operator()(int gi, int gj, float acc) const {
        float* c = C + (size_t)gi * ldc + gj;
        float v = alpha * acc;
        if (beta != 0.0f) v += beta * *c;
        *c = v;
    }
};

// swiglu_bwd_epi is the epilogue of the product ds = dy·W2ᵀ in the experts'
// backward: it writes ds (unless DS is null: the model does not read it
// again) and, through the SwiGLU, dgate and dup, with swiglu_bwd's
// expressions added to 0 (the bits of swiglu_bwd accumulating into zeroed
// gradients), stored as TD.
template <class TD, class TG> struct swiglu_bwd_epi {
    const TG *G, *U;
    float* DS;
    TD *DG, *DU;
    int ld;
    __device__ __forceinline__ void operator()(int gi, int gj, float acc) const {
        const size_t o = (size_t)gi * ld + gj;
        const float d = 1.0f * acc, g = load_elem(G[o]), u = load_elem(U[o]); // alpha 1, as store_epi
        const float s = 1.0f / (1.0f + expf(-g));
        if (DS) DS[o] = d;
        store_elem(DG + o, 0.0f + d * u * s * (1.0f + g * (1.0f - s)));
        store_elem(DU + o, 0.0f + d * g * s);
    }
};

// gemm_tile_epi computes the 64×64 tile of op(A)·op(B) whose first output
// is (row0, col0) and hands each output in range to epi.
template <class Epi, class TA, class TB>
__device__ __forceinline__ void gemm_tile_epi(int transA, int transB, int m, int n, int k, const TA* A, int lda,
                                              const TB* B, int ldb, int row0, int col0, float (*As)[GEMM_BM + 4],
                                              float (*Bs)[GEMM_BN + 4], const Epi& epi, const int* arow = nullptr) {
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;

    slice_ab<TA, TB> next{transA, transB, m, n, k, A, lda, B, ldb, row0, col0, arow};
    next.load(0);
#pragma unroll 1
    for (int k0 = 0; k0 < k; k0 += GEMM_BK) {
        next.store(As, Bs);
        __syncthreads();
        if (k0 + GEMM_BK < k) next.load(k0 + GEMM_BK); // in flight while this slice is computed
#pragma unroll
        for (int kk = 0; kk < GEMM_BK; kk++) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; j++) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int gi = row0 + ty + 16 * i;
        if (gi >= m) continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int gj = col0 + tx + 16 * j;
            if (gj >= n) continue;
            epi(gi, gj, acc[i][j]);
        }
    }
}

// gemm_tile computes the 64×64 tile of C whose first output is (row0, col0).
template <class TA, class TB>
__device__ __forceinline__ void gemm_tile(int transA, int transB, int m, int n, int k, float alpha, const TA* A,
                                          int lda, const TB* B, int ldb, float beta, float* C, int ldc, int row0,
                                          int col0, float (*As)[GEMM_BM + 4], float (*Bs)[GEMM_BN + 4],
                                          const int* arow = nullptr) {
    gemm_tile_epi(transA, transB, m, n, k, A, lda, B, ldb, row0, col0, As, Bs, store_epi{alpha, beta, C, ldc}, arow);
}

// gemm_tile_epi_tc is gemm_tile_epi on the tensor cores in precision P
// (see the top of the file); Cs is a 64×64 staging tile.
template <int P, class Epi, class TA, class TB>
__device__ __forceinline__ void gemm_tile_epi_tc(int transA, int transB, int m, int n, int k, const TA* A,
                                                 int lda, const TB* B, int ldb, int row0, int col0,
                                                 typename tc<P>::elem (*As)[GEMM_BM + tc<P>::pad],
                                                 typename tc<P>::elem (*Bs)[GEMM_BN + tc<P>::pad],
                                                 float (*Cs)[GEMM_BN + 4], const Epi& epi,
                                                 const int* arow = nullptr) {
    typedef tc<P> T;
    const int warp = threadIdx.x >> 5, wr = warp >> 1, wc = warp & 1;
    wmma::fragment<wmma::accumulator, 16, 16, T::K, float> acc[2];
    wmma::fill_fragment(acc[0], 0.0f);
    wmma::fill_fragment(acc[1], 0.0f);
    slice_ab<TA, TB> next{transA, transB, m, n, k, A, lda, B, ldb, row0, col0, arow};
    next.load(0);
#pragma unroll 1
    for (int k0 = 0; k0 < k; k0 += GEMM_BK) {
        next.store(As, Bs);
        __syncthreads();
        if (k0 + GEMM_BK < k) next.load(k0 + GEMM_BK); // in flight while this slice is computed
#pragma unroll
        for (int kk = 0; kk < GEMM_BK; kk += T::K) {
            // As[kk][r] holds A(r, kk): column-major; Bs[kk][c] holds B(kk, c): row-major.
            wmma::fragment<wmma::matrix_a, 16, 16, T::K, typename T::frag, wmma::col_major> fa;
            wmma::load_matrix_sync(fa, &As[kk][wr * 16], GEMM_BM + T::pad);
            T::round(fa);
#pragma unroll
            for (int j = 0; j < 2; j++) {
                wmma::fragment<wmma::matrix_b, 16, 16, T::K, typename T::frag, wmma::row_major> fb;
                wmma::load_matrix_sync(fb, &Bs[kk][wc * 32 + j * 16], GEMM_BN + T::pad);
                T::round(fb);
                wmma::mma_sync(acc[j], fa, fb, acc[j]);
            }
        }
        __syncthreads();
    }
    wmma::store_matrix_sync(&Cs[wr * 16][wc * 32], acc[0], GEMM_BN + 4, wmma::mem_row_major);
    wmma::store_matrix_sync(&Cs[wr * 16][wc * 32 + 16], acc[1], GEMM_BN + 4, wmma::mem_row_major);
    __syncthreads();
    for (int idx = threadIdx.x; idx < GEMM_BM * GEMM_BN; idx += blockDim.x) {
        const int i = idx / GEMM_BN, j = idx % GEMM_BN, gi = row0 + i, gj = col0 + j;
        if (gi >= m || gj >= n) continue;
        epi(gi, gj, Cs[i][j]);
    }
}

// gemm_tile_tc is gemm_tile on the tensor cores.
template <int P, class TA, class TB>
__device__ __forceinline__ void gemm_tile_tc(int transA, int transB, int m, int n, int k, float alpha,
                                             const TA* A, int lda, const TB* B, int ldb, float beta, float* C,
                                             int ldc, int row0, int col0,
                                             typename tc<P>::elem (*As)[GEMM_BM + tc<P>::pad],
                                             typename tc<P>::elem (*Bs)[GEMM_BN + tc<P>::pad],
                                             float (*Cs)[GEMM_BN + 4], const int* arow = nullptr) {
    gemm_tile_epi_tc<P>(transA, transB, m, n, k, A, lda, B, ldb, row0, col0, As, Bs, Cs,
                        store_epi{alpha, beta, C, ldc}, arow);
}

// gemm_tile_swiglu computes, for the 64×64 tile at (row0, col0), g = A·B1
// and u = A·B3 (A m×k, B1 and B3 k×n, none transposed) from one staging of
// A, and writes g, u and s = silu(g)·u, with swiglu_fwd's expression: the
// bits of gemm_tile twice and swiglu_fwd, in one pass.
template <bool KeepGU, class TB, class TS, class TG>
__device__ __forceinline__ void gemm_tile_swiglu(int m, int n, int k, const float* A, int lda, const TB* B1,
                                                 const TB* B3, int ldb, TG* G, TG* U, TS* S, int ldc,
                                                 int row0, int col0, float (*As)[GEMM_BM + 4],
                                                 float (*B1s)[GEMM_BN + 4], float (*B3s)[GEMM_BN + 4],
                                                 const int* arow = nullptr) {
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    float acc1[4][4], acc3[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc1[i][j] = acc3[i][j] = 0.0f;

    slice_abb<TB> next{m, n, k, A, lda, B1, B3, ldb, row0, col0, arow};
    next.load(0);
#pragma unroll 1
    for (int k0 = 0; k0 < k; k0 += GEMM_BK) {
        next.store(As, B1s, B3s);
        __syncthreads();
        if (k0 + GEMM_BK < k) next.load(k0 + GEMM_BK); // in flight while this slice is computed
#pragma unroll
        for (int kk = 0; kk < GEMM_BK; kk++) {
            float a[4], b1[4], b3[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                b1[j] = B1s[kk][tx + 16 * j];
                b3[j] = B3s[kk][tx + 16 * j];
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    acc1[i][j] += a[i] * b1[j];
                    acc3[i][j] += a[i] * b3[j];
                }
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int gi = row0 + ty + 16 * i;
        if (gi >= m) continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int gj = col0 + tx + 16 * j;
            if (gj >= n) continue;
            const size_t o = (size_t)gi * ldc + gj;
            const float g = 1.0f * acc1[i][j], u = 1.0f * acc3[i][j]; // alpha 1, as gemm_tile
            if constexpr (KeepGU) {
                store_elem(G + o, g);
                store_elem(U + o, u);
            }
            store_elem(S + o, g / (1.0f + expf(-g)) * u);
        }
    }
}

// gemm_tile_swiglu_tc is gemm_tile_swiglu on the tensor cores (as
// gemm_tile_tc), C1s and C3s its staging tiles.
template <int P, bool KeepGU, class TB, class TS, class TG>
__device__ __forceinline__ void gemm_tile_swiglu_tc(int m, int n, int k, const float* A, int lda, const TB* B1,
                                                    const TB* B3, int ldb, TG* G, TG* U, TS* S, int ldc,
                                                    int row0, int col0,
                                                    typename tc<P>::elem (*As)[GEMM_BM + tc<P>::pad],
                                                    typename tc<P>::elem (*B1s)[GEMM_BN + tc<P>::pad],
                                                    typename tc<P>::elem (*B3s)[GEMM_BN + tc<P>::pad],
                                                    float (*C1s)[GEMM_BN + 4], float (*C3s)[GEMM_BN + 4],
                                                    const int* arow = nullptr) {
    typedef tc<P> T;
    const int warp = threadIdx.x >> 5, wr = warp >> 1, wc = warp & 1;
    wmma::fragment<wmma::accumulator, 16, 16, T::K, float> acc1[2], acc3[2];
#pragma unroll
    for (int j = 0; j < 2; j++) {
        wmma::fill_fragment(acc1[j], 0.0f);
        wmma::fill_fragment(acc3[j], 0.0f);
    }
    slice_abb<TB> next{m, n, k, A, lda, B1, B3, ldb, row0, col0, arow};
    next.load(0);
#pragma unroll 1
    for (int k0 = 0; k0 < k; k0 += GEMM_BK) {
        next.store(As, B1s, B3s);
        __syncthreads();
        if (k0 + GEMM_BK < k) next.load(k0 + GEMM_BK); // in flight while this slice is computed
#pragma unroll
        for (int kk = 0; kk < GEMM_BK; kk += T::K) {
            wmma::fragment<wmma::matrix_a, 16, 16, T::K, typename T::frag, wmma::col_major> fa;
            wmma::load_matrix_sync(fa, &As[kk][wr * 16], GEMM_BM + T::pad);
            T::round(fa);
#pragma unroll
            for (int j = 0; j < 2; j++) {
                wmma::fragment<wmma::matrix_b, 16, 16, T::K, typename T::frag, wmma::row_major> fb;
                wmma::load_matrix_sync(fb, &B1s[kk][wc * 32 + j * 16], GEMM_BN + T::pad);
                T::round(fb);
                wmma::mma_sync(acc1[j], fa, fb, acc1[j]);
                wmma::load_matrix_sync(fb, &B3s[kk][wc * 32 + j * 16], GEMM_BN + T::pad);
                T::round(fb);
                wmma::mma_sync(acc3[j], fa, fb, acc3[j]);
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < 2; j++) {
        wmma::store_matrix_sync(&C1s[wr * 16][wc * 32 + j * 16], acc1[j], GEMM_BN + 4, wmma::mem_row_major);
        wmma::store_matrix_sync(&C3s[wr * 16][wc * 32 + j * 16], acc3[j], GEMM_BN + 4, wmma::mem_row_major);
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < GEMM_BM * GEMM_BN; idx += blockDim.x) {
        const int i = idx / GEMM_BN, j = idx % GEMM_BN, gi = row0 + i, gj = col0 + j;
        if (gi >= m || gj >= n) continue;
        const size_t o = (size_t)gi * ldc + gj;
        const float g = 1.0f * C1s[i][j], u = 1.0f * C3s[i][j];
        if constexpr (KeepGU) {
            store_elem(G + o, g);
            store_elem(U + o, u);
        }
        store_elem(S + o, g / (1.0f + expf(-g)) * u);
    }
}

extern "C" __global__ void __launch_bounds__(256) sgemm_tiled(int transA, int transB, int m, int n, int k,
                                                              float alpha, const float* A, int lda, long long strideA,
                                                              const float* B, int ldb, long long strideB, float beta,
                                                              float* C, int ldc, long long strideC) {
    __shared__ float As[GEMM_BK][GEMM_BM + 4];
    __shared__ float Bs[GEMM_BK][GEMM_BN + 4];
    gemm_tile(transA, transB, m, n, k, alpha, A + blockIdx.z * strideA, lda, B + blockIdx.z * strideB, ldb, beta,
              C + blockIdx.z * strideC, ldc, blockIdx.y * GEMM_BM, blockIdx.x * GEMM_BN, As, Bs);
}

// tiled is the fallback tile kernel's body on the tensor cores in
// precision P: sgemm_tiled_tf32 and sgemm_tiled_bf16. Like every kernel of
// this file, an output's sum depends only on its row of op(A) and column
// of op(B), so a decode step and a training forward give the same bits,
// which cuBLAS does not promise.
template <int P>
__device__ __forceinline__ void tiled_tc(int transA, int transB, int m, int n, int k, float alpha, const float* A,
                                         int lda, long long strideA, const float* B, int ldb, long long strideB,
                                         float beta, float* C, int ldc, long long strideC) {
    __align__(32) __shared__ typename tc<P>::elem As[GEMM_BK][GEMM_BM + tc<P>::pad];
    __align__(32) __shared__ typename tc<P>::elem Bs[GEMM_BK][GEMM_BN + tc<P>::pad];
    __align__(32) __shared__ float Cs[GEMM_BM][GEMM_BN + 4];
    gemm_tile_tc<P>(transA, transB, m, n, k, alpha, A + blockIdx.z * strideA, lda, B + blockIdx.z * strideB, ldb,
                    beta, C + blockIdx.z * strideC, ldc, blockIdx.y * GEMM_BM, blockIdx.x * GEMM_BN, As, Bs, Cs);
}

#define TILED_ARGS                                                                                                 \
    int transA, int transB, int m, int n, int k, float alpha, const float *A, int lda, long long strideA,         \
        const float *B, int ldb, long long strideB, float beta, float *C, int ldc, long long strideC

extern "C" __global__ void __launch_bounds__(256) sgemm_tiled_tf32(TILED_ARGS) {
    tiled_tc<PREC_TF32>(transA, transB, m, n, k, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_tiled_bf16(TILED_ARGS) {
    tiled_tc<PREC_BF16>(transA, transB, m, n, k, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC);
}

// group_rows returns group g's first row and row count, or false (after
// recording STATUS_GROUP_OFFSETS) when the offsets are not a valid split of
// rows. Every thread of a block reads the same offsets, so all of them
// return together.
__device__ __forceinline__ bool group_rows(const int* offsets, int g, int rows, int* status, int* lo, int* cnt) {
    const int a = offsets[g], b = offsets[g + 1];
    if (a < 0 || b < a || b > rows) {
        if (threadIdx.x == 0) report_status(status, STATUS_GROUP_OFFSETS);
        return false;
    }
    *lo = a;
    *cnt = b - a;
    return true;
}

// group_tile finds the (group, 64-row tile) pair of this block's
// blockIdx.y: the group, the tile's first row and its rows (to the group's
// end), or false when the block is past the last pair or the offsets are
// bad (reported).
__device__ __forceinline__ bool group_tile(const int* offsets, int groups, int rows, int* status, int* group,
                                           int* r0, int* m) {
    int t = blockIdx.y;
    for (int g = 0; g < groups; g++) {
        int lo, cnt;
        if (!group_rows(offsets, g, rows, status, &lo, &cnt)) return false;
        const int tiles = (cnt + GEMM_BM - 1) / GEMM_BM;
        if (t < tiles) {
            *group = g;
            *r0 = lo + t * GEMM_BM;
            *m = lo + cnt - *r0;
            return true;
        }
        t -= tiles;
    }
    return false;
}

// grouped_rows is sgemm_grouped's body: grid (cdiv(n, 64), cdiv(rows, 64) +
// groups), 256 threads.
template <int P, class TA, class TB>
__device__ __forceinline__ void grouped_rows(int transB, int rows, int n, int k, const TA* A, const TB* B,
                                             long long strideB, float beta, float* C, const int* offsets,
                                             int groups, int* status) {
    __align__(32) __shared__ typename tc<P>::elem As[GEMM_BK][GEMM_BM + tc<P>::pad];
    __align__(32) __shared__ typename tc<P>::elem Bs[GEMM_BK][GEMM_BN + tc<P>::pad];
    __align__(32) __shared__ float Cs[P == PREC_FP32 ? 1 : GEMM_BM][GEMM_BN + 4];
    int g, r0, m;
    if (!group_tile(offsets, groups, rows, status, &g, &r0, &m)) return;
    const TA* a = A + (size_t)r0 * k;
    const TB* b = B + g * strideB;
    float* c = C + (size_t)r0 * n;
    if constexpr (P != PREC_FP32)
        gemm_tile_tc<P>(0, transB, m, n, k, 1.0f, a, k, b, transB ? k : n, beta, c, n, 0, blockIdx.x * GEMM_BN, As, Bs,
                       Cs);
    else
        gemm_tile(0, transB, m, n, k, 1.0f, a, k, b, transB ? k : n, beta, c, n, 0, blockIdx.x * GEMM_BN, As, Bs);
}

// rows_in_range reports, to every thread of the block, whether the n row
// indices at idx lie in [0, lim), recording STATUS_GATHER_INDEX when one
// does not: a gathered operand's indices are checked once per block,
// before any is read.
__device__ __forceinline__ bool rows_in_range(const int* idx, int n, int lim, int* status) {
    __shared__ int bad;
    if (threadIdx.x == 0) bad = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        if ((unsigned)idx[i] >= (unsigned)lim) bad = 1;
    __syncthreads();
    const bool ok = bad == 0;
    if (!ok && threadIdx.x == 0) report_status(status, STATUS_GATHER_INDEX);
    return ok;
}

// grouped_swiglu is sgemm_grouped_swiglu's body: g = A_g·B1_g, u = A_g·B3_g
// and s = silu(g)·u on each group's rows, grid as grouped_rows'. With arow
// (rows entries), row r of A is row arow[r] of the arows×k matrix at A.
template <int P, class TB, class TS, class TG>
__device__ __forceinline__ void grouped_swiglu(int rows, int n, int k, const float* A, const int* arow, int arows,
                                               const TB* B1, const TB* B3, long long strideB, TG* G, TG* U,
                                               TS* S, const int* offsets, int groups, int* status) {
    __align__(32) __shared__ typename tc<P>::elem As[GEMM_BK][GEMM_BM + tc<P>::pad];
    __align__(32) __shared__ typename tc<P>::elem B1s[GEMM_BK][GEMM_BN + tc<P>::pad];
    __align__(32) __shared__ typename tc<P>::elem B3s[GEMM_BK][GEMM_BN + tc<P>::pad];
    __align__(32) __shared__ float C1s[P == PREC_FP32 ? 1 : GEMM_BM][GEMM_BN + 4];
    __align__(32) __shared__ float C3s[P == PREC_FP32 ? 1 : GEMM_BM][GEMM_BN + 4];
    int g, r0, m;
    if (!group_tile(offsets, groups, rows, status, &g, &r0, &m)) return;
    const int* ar = nullptr;
    const float* a = A + (size_t)r0 * k;
    if (arow) {
        if (!rows_in_range(arow + r0, min(m, GEMM_BM), arows, status)) return;
        ar = arow + r0;
        a = A;
    }
    const size_t o = (size_t)r0 * n;
    // G and U are null together, in a forward that no backward follows
    // (nothing reads them): each case is its own instance of the tile, so
    // the test costs no registers inside it.
    const TB *b1 = B1 + g * strideB, *b3 = B3 + g * strideB;
    const int c0 = blockIdx.x * GEMM_BN;
    if constexpr (P != PREC_FP32) {
        if (G)
            gemm_tile_swiglu_tc<P, true>(m, n, k, a, k, b1, b3, n, G + o, U + o, S + o, n, 0, c0, As, B1s, B3s, C1s, C3s, ar);
        else
            gemm_tile_swiglu_tc<P, false>(m, n, k, a, k, b1, b3, n, G, U, S + o, n, 0, c0, As, B1s, B3s, C1s, C3s, ar);
    } else {
        if (G)
            gemm_tile_swiglu<true>(m, n, k, a, k, b1, b3, n, G + o, U + o, S + o, n, 0, c0, As, B1s, B3s, ar);
        else
            gemm_tile_swiglu<false>(m, n, k, a, k, b1, b3, n, G, U, S + o, n, 0, c0, As, B1s, B3s, ar);
    }
}

// grouped_t is sgemm_grouped_t's body: grid (cdiv(n, 64), cdiv(m, 64),
// groups), 256 threads; arow as grouped_swiglu's (A arows×m).
template <int P, class TA, class TB>
__device__ __forceinline__ void grouped_t(int rows, int m, int n, const TA* A, const int* arow, int arows,
                                          const TB* B, float* C, const int* offsets, int groups, int* status) {
    __align__(32) __shared__ typename tc<P>::elem As[GEMM_BK][GEMM_BM + tc<P>::pad];
    __align__(32) __shared__ typename tc<P>::elem Bs[GEMM_BK][GEMM_BN + tc<P>::pad];
    __align__(32) __shared__ float Cs[P == PREC_FP32 ? 1 : GEMM_BM][GEMM_BN + 4];
    const int g = blockIdx.z;
    int lo, cnt;
    if (g >= groups || !group_rows(offsets, g, rows, status, &lo, &cnt) || cnt == 0) return;
    const int* ar = nullptr;
    const TA* a = A + (size_t)lo * m;
    if (arow) {
        if (!rows_in_range(arow + lo, cnt, arows, status)) return;
        ar = arow + lo;
        a = A;
    }
    const TB* b = B + (size_t)lo * n;
    float* c = C + (size_t)g * m * n;
    if constexpr (P != PREC_FP32)
        gemm_tile_tc<P>(1, 0, m, n, cnt, 1.0f, a, m, b, n, 1.0f, c, n, blockIdx.y * GEMM_BM, blockIdx.x * GEMM_BN, As,
                        Bs, Cs, ar);
    else
        gemm_tile(1, 0, m, n, cnt, 1.0f, a, m, b, n, 1.0f, c, n, blockIdx.y * GEMM_BM, blockIdx.x * GEMM_BN, As, Bs,
                  ar);
}

#define GROUPED_ROWS_ARGS_AB(TA, TB)                                                                       \
    int transB, int rows, int n, int k, const TA *A, const TB *B, long long strideB, float beta, float *C, \
        const int *offsets, int groups, int *status
#define GROUPED_ROWS_ARGS(TB) GROUPED_ROWS_ARGS_AB(float, TB)
#define GROUPED_T_ARGS_AB(TA, TB)                                                                                 \
    int rows, int m, int n, const TA *A, const int *arow, int arows, const TB *B, float *C, const int *offsets, \
        int groups, int *status
#define GROUPED_T_ARGS GROUPED_T_ARGS_AB(float, float)

extern "C" __global__ void __launch_bounds__(256) sgemm_grouped(GROUPED_ROWS_ARGS(float)) {
    grouped_rows<PREC_FP32>(transB, rows, n, k, A, B, strideB, beta, C, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_tf32(GROUPED_ROWS_ARGS(float)) {
    grouped_rows<PREC_TF32>(transB, rows, n, k, A, B, strideB, beta, C, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_bf16(GROUPED_ROWS_ARGS(float)) {
    grouped_rows<PREC_BF16>(transB, rows, n, k, A, B, strideB, beta, C, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_t(GROUPED_T_ARGS) {
    grouped_t<PREC_FP32>(rows, m, n, A, arow, arows, B, C, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_t_tf32(GROUPED_T_ARGS) {
    grouped_t<PREC_TF32>(rows, m, n, A, arow, arows, B, C, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_t_bf16(GROUPED_T_ARGS) {
    grouped_t<PREC_BF16>(rows, m, n, A, arow, arows, B, C, offsets, groups, status);
}

// grouped_swiglu_bwd is sgemm_grouped_swiglu_bwd's body: ds_g = dy_g·W2_gᵀ
// (W2_g n×k at g·strideB) on each group's rows, and through the SwiGLU
// dgate and dup, grid as grouped_rows'.
template <int P, class TA, class TW, class TD, class TG>
__device__ __forceinline__ void grouped_swiglu_bwd(int rows, int n, int k, const TA* DY, const TW* W2,
                                                   long long strideB, const TG* G, const TG* U, float* DS,
                                                   TD* DG, TD* DU, const int* offsets, int groups, int* status) {
    __align__(32) __shared__ typename tc<P>::elem As[GEMM_BK][GEMM_BM + tc<P>::pad];
    __align__(32) __shared__ typename tc<P>::elem Bs[GEMM_BK][GEMM_BN + tc<P>::pad];
    __align__(32) __shared__ float Cs[P == PREC_FP32 ? 1 : GEMM_BM][GEMM_BN + 4];
    int g, r0, m;
    if (!group_tile(offsets, groups, rows, status, &g, &r0, &m)) return;
    const size_t o = (size_t)r0 * n;
    const swiglu_bwd_epi<TD, TG> epi{G + o, U + o, DS ? DS + o : nullptr, DG + o, DU + o, n};
    if constexpr (P != PREC_FP32)
        gemm_tile_epi_tc<P>(0, 1, m, n, k, DY + (size_t)r0 * k, k, W2 + g * strideB, k, 0, blockIdx.x * GEMM_BN, As, Bs,
                           Cs, epi);
    else
        gemm_tile_epi(0, 1, m, n, k, DY + (size_t)r0 * k, k, W2 + g * strideB, k, 0, blockIdx.x * GEMM_BN, As, Bs, epi);
}

#define GROUPED_SWIGLU_ARGS_GS(TB, TG, TS)                                                                     \
    int rows, int n, int k, const float *A, const int *arow, int arows, const TB *B1, const TB *B3,                 \
        long long strideB, TG *G, TG *U, TS *S, const int *offsets, int groups, int *status
#define GROUPED_SWIGLU_ARGS_S(TB, TS) GROUPED_SWIGLU_ARGS_GS(TB, float, TS)
#define GROUPED_SWIGLU_ARGS(TB) GROUPED_SWIGLU_ARGS_S(TB, float)

// The float32 SwiGLU tiles need about 128 registers a thread; with a bare
// __launch_bounds__(256), ptxas held them to 128 and spilled (8 bytes of
// stack) once the epilogue gained its case without g and u. A minimum of one
// block lets it take what it needs: 126–128, still two blocks an SM.
extern "C" __global__ void __launch_bounds__(256, 1) sgemm_grouped_swiglu(GROUPED_SWIGLU_ARGS(float)) {
    grouped_swiglu<PREC_FP32>(rows, n, k, A, arow, arows, B1, B3, strideB, G, U, S, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_swiglu_tf32(GROUPED_SWIGLU_ARGS(float)) {
    grouped_swiglu<PREC_TF32>(rows, n, k, A, arow, arows, B1, B3, strideB, G, U, S, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_swiglu_bf16(GROUPED_SWIGLU_ARGS(float)) {
    grouped_swiglu<PREC_BF16>(rows, n, k, A, arow, arows, B1, B3, strideB, G, U, S, offsets, groups, status);
}

#define GROUPED_SWIGLU_BWD_ARGS_AWGD(TA, TW, TG, TD)                                                        \
    int rows, int n, int k, const TA *DY, const TW *W2, long long strideB, const TG *G, const TG *U, \
        float *DS, TD *DG, TD *DU, const int *offsets, int groups, int *status
#define GROUPED_SWIGLU_BWD_ARGS GROUPED_SWIGLU_BWD_ARGS_AWGD(float, float, float, float)

extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_swiglu_bwd(GROUPED_SWIGLU_BWD_ARGS) {
    grouped_swiglu_bwd<PREC_FP32>(rows, n, k, DY, W2, strideB, G, U, DS, DG, DU, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_swiglu_bwd_tf32(GROUPED_SWIGLU_BWD_ARGS) {
    grouped_swiglu_bwd<PREC_TF32>(rows, n, k, DY, W2, strideB, G, U, DS, DG, DU, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_swiglu_bwd_bf16(GROUPED_SWIGLU_BWD_ARGS) {
    grouped_swiglu_bwd<PREC_BF16>(rows, n, k, DY, W2, strideB, G, U, DS, DG, DU, offsets, groups, status);
}

// The _w16 kernels are sgemm_grouped and sgemm_grouped_swiglu with their
// weights (B, B1, B3) stored in bf16, widened exactly as they are read:
// a decode step in bf16 mode reads its experts' weights from a bf16 copy,
// half the bytes of the fp32 master weights, with the products' bits
// unchanged (staging rounds the fp32 weights to the same bf16 values).
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_w16(GROUPED_ROWS_ARGS(bf16)) {
    grouped_rows<PREC_FP32>(transB, rows, n, k, A, B, strideB, beta, C, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256, 1) sgemm_grouped_swiglu_w16(GROUPED_SWIGLU_ARGS(bf16)) {
    grouped_swiglu<PREC_FP32>(rows, n, k, A, arow, arows, B1, B3, strideB, G, U, S, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_w16_tf32(GROUPED_ROWS_ARGS(bf16)) {
    grouped_rows<PREC_TF32>(transB, rows, n, k, A, B, strideB, beta, C, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_swiglu_w16_tf32(GROUPED_SWIGLU_ARGS(bf16)) {
    grouped_swiglu<PREC_TF32>(rows, n, k, A, arow, arows, B1, B3, strideB, G, U, S, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_w16_bf16(GROUPED_ROWS_ARGS(bf16)) {
    grouped_rows<PREC_BF16>(transB, rows, n, k, A, B, strideB, beta, C, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_swiglu_w16_bf16(GROUPED_SWIGLU_ARGS(bf16)) {
    grouped_swiglu<PREC_BF16>(rows, n, k, A, arow, arows, B1, B3, strideB, G, U, S, offsets, groups, status);
}

// The kernels below are for bf16 storage: in bf16 mode the tensors that
// only these products read, the experts' SwiGLU output and the gradients
// dy, dgate and dup, are kept in bf16 (moe's Acts), with the same bits as
// in float32, because staging rounds a float to the bf16 value that
// store_elem wrote. Their infixes name what is bf16: _a16 A (or dy), _w16
// the weights, _b16 B, _s16 the SwiGLU output, _d16 dgate and dup. They
// exist in the bf16 precision only, and a bf16 activation always comes
// with bf16 weights: the workspace that keeps one reads the model's bf16
// copy of the weights (moe's Model.w16), so no twin with float32 weights
// is needed.
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_a16_w16_bf16(GROUPED_ROWS_ARGS_AB(bf16, bf16)) {
    grouped_rows<PREC_BF16>(transB, rows, n, k, A, B, strideB, beta, C, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_swiglu_w16_s16_bf16(GROUPED_SWIGLU_ARGS_S(bf16, bf16)) {
    grouped_swiglu<PREC_BF16>(rows, n, k, A, arow, arows, B1, B3, strideB, G, U, S, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_t_a16_bf16(GROUPED_T_ARGS_AB(bf16, float)) {
    grouped_t<PREC_BF16>(rows, m, n, A, arow, arows, B, C, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_t_b16_bf16(GROUPED_T_ARGS_AB(float, bf16)) {
    grouped_t<PREC_BF16>(rows, m, n, A, arow, arows, B, C, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_t_a16_b16_bf16(GROUPED_T_ARGS_AB(bf16, bf16)) {
    grouped_t<PREC_BF16>(rows, m, n, A, arow, arows, B, C, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_swiglu_bwd_a16_w16_d16_bf16(GROUPED_SWIGLU_BWD_ARGS_AWGD(bf16, bf16, float, bf16)) {
    grouped_swiglu_bwd<PREC_BF16>(rows, n, k, DY, W2, strideB, G, U, DS, DG, DU, offsets, groups, status);
}

// The _g16 kernels keep the experts' gate and up values in bf16 too (a
// training workspace in bf16 mode): the forward's s is computed from the
// float values before they are stored, so the forward's results do not
// change; the backward reads them rounded, at bf16's precision.
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_swiglu_w16_g16_s16_bf16(GROUPED_SWIGLU_ARGS_GS(bf16, bf16, bf16)) {
    grouped_swiglu<PREC_BF16>(rows, n, k, A, arow, arows, B1, B3, strideB, G, U, S, offsets, groups, status);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_grouped_swiglu_bwd_a16_w16_g16_d16_bf16(GROUPED_SWIGLU_BWD_ARGS_AWGD(bf16, bf16, bf16, bf16)) {
    grouped_swiglu_bwd<PREC_BF16>(rows, n, k, DY, W2, strideB, G, U, DS, DG, DU, offsets, groups, status);
}
