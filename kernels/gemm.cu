// gemm.cu: the fallback SGEMM, used when cuBLAS is absent or MOERL_CUBLAS=off.
//
// Row-major C = alpha·op(A)·op(B) + beta·C for a batch of matrices (grid.z),
// op(X) = X or Xᵀ, with op(A) m×k, op(B) k×n, row strides lda, ldb, ldc and
// batch strides in elements. beta = 0 overwrites C without reading it, so a C
// that held NaN comes out clean. Tiles of 64×64 outputs per block of 256
// threads, 4×4 per thread, the k dimension in steps of 16 through shared
// memory; each output adds its k products in increasing k, the same order on
// every run. No fusion; C is overwritten (or scaled by beta and added to).
//
// CPU twin: engine.Backend.Gemm, engine.Backend.GemmBatched.
#include "common.cuh"

#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_BK 16

extern "C" __global__ void __launch_bounds__(256) sgemm_tiled(int transA, int transB, int m, int n, int k,
                                                              float alpha, const float* A, int lda, long long strideA,
                                                              const float* B, int ldb, long long strideB, float beta,
                                                              float* C, int ldc, long long strideC) {
    __shared__ float As[GEMM_BK][GEMM_BM + 4];
    __shared__ float Bs[GEMM_BK][GEMM_BN + 4];
    A += blockIdx.z * strideA;
    B += blockIdx.z * strideB;
    C += blockIdx.z * strideC;
    const int row0 = blockIdx.y * GEMM_BM, col0 = blockIdx.x * GEMM_BN;
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < k; k0 += GEMM_BK) {
        for (int idx = threadIdx.x; idx < GEMM_BM * GEMM_BK; idx += blockDim.x) {
            // Walk the stored matrix along its contiguous dimension.
            int r, kk;
            if (transA) {
                kk = idx / GEMM_BM;
                r = idx % GEMM_BM;
            } else {
                r = idx / GEMM_BK;
                kk = idx % GEMM_BK;
            }
            const int gi = row0 + r, gk = k0 + kk;
            float v = 0.0f;
            if (gi < m && gk < k) v = transA ? A[(size_t)gk * lda + gi] : A[(size_t)gi * lda + gk];
            As[kk][r] = v;
        }
        for (int idx = threadIdx.x; idx < GEMM_BK * GEMM_BN; idx += blockDim.x) {
            int c, kk;
            if (transB) {
                c = idx / GEMM_BK;
                kk = idx % GEMM_BK;
            } else {
                kk = idx / GEMM_BN;
                c = idx % GEMM_BN;
            }
            const int gk = k0 + kk, gj = col0 + c;
            float v = 0.0f;
            if (gk < k && gj < n) v = transB ? B[(size_t)gj * ldb + gk] : B[(size_t)gk * ldb + gj];
            Bs[kk][c] = v;
        }
        __syncthreads();
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
            float* c = C + (size_t)gi * ldc + gj;
            float v = alpha * acc[i][j];
            if (beta != 0.0f) v += beta * *c;
            *c = v;
        }
    }
}
