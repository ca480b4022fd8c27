// rmsnorm.cu: RMSNorm, its backward, and a residual add fused with it.
//
// Forward, one warp per row: rstd = 1/sqrt(mean(x²) + eps), out = x·rstd·w;
// it fuses the row reduction, the normalization and the weight, writes out
// (overwriting) and saves rstd per row for the backward. The mean of squares
// and rstd are computed in float64, as on the CPU.
//
// Backward: with g = dout, dx += rstd·w·g − x·rstd³·(Σ g·w·x)/dim, and
// dw += Σ_rows g·x·rstd. Both accumulate. The row sum and the dw partials
// are float64. dw is reduced deterministically without atomics: block b owns
// a fixed run of rows and writes its partial sums to partial[b], then
// rmsnorm_dw_reduce adds the partials in block order. The number of blocks
// depends only on rows (see the Go launcher).
//
// Residual add and forward (residual_rmsnorm): sum = x + r, stored, and the
// forward of sum in the same pass, one warp per row as in rmsnorm_fwd. The
// model adds each attention branch to the residual stream and normalises the
// result for the FFN; fused, the stream is read once, and no copy of it is
// made first. sum may be x or r itself: a lane reads an element of x and r
// before it writes that element of sum, and reads it back only after.
//
// CPU twin: engine.Backend.RMSNorm, engine.Backend.RMSNormBackward,
// engine.Backend.ResidualRMSNorm.
#include "common.cuh"

#define RMS_MAXC 16 // columns per thread in the backward: dim <= 16·blockDim.x

// row_rstd is a row's 1/sqrt(mean(x²) + eps) from its warp's partial sums
// of squares, in float64 as on the CPU: the one formula both forwards use.
__device__ __forceinline__ float row_rstd(double ss, int dim, float eps) {
    ss = warp_sum_d(ss);
    return (float)(1.0 / sqrt(ss / (double)dim + (double)eps));
}

// rmsnorm_fwd: 256 threads, 8 rows per block.
extern "C" __global__ void __launch_bounds__(256) rmsnorm_fwd(float* out, float* rstd, const float* x,
                                                              const float* w, int rows, int dim, float eps) {
    const int lane = threadIdx.x & 31;
    const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= rows) return; // whole warps leave together
    const float* xr = x + (size_t)r * dim;
    double ss = 0.0;
    for (int d = lane; d < dim; d += 32) {
        const double v = xr[d];
        ss += v * v;
    }
    const float rs = row_rstd(ss, dim, eps);
    float* o = out + (size_t)r * dim;
    for (int d = lane; d < dim; d += 32) o[d] = xr[d] * rs * w[d];
    if (lane == 0) rstd[r] = rs;
}

// residual_rmsnorm: rmsnorm_fwd of sum = x + r, which it writes on the way;
// 256 threads, 8 rows per block. The pointers are not __restrict__: sum may
// be x or r.
extern "C" __global__ void __launch_bounds__(256) residual_rmsnorm(float* sum, float* out, float* rstd, const float* x,
                                                                   const float* r, const float* w, int rows, int dim,
                                                                   float eps) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return; // whole warps leave together
    const size_t base = (size_t)row * dim;
    float* sr = sum + base;
    double ss = 0.0;
    for (int d = lane; d < dim; d += 32) {
        const float s = x[base + d] + r[base + d];
        sr[d] = s;
        const double v = s;
        ss += v * v;
    }
    const float rs = row_rstd(ss, dim, eps);
    float* o = out + base;
    for (int d = lane; d < dim; d += 32) o[d] = sr[d] * rs * w[d]; // the lane's own writes: no barrier
    if (lane == 0) rstd[row] = rs;
}

// rmsnorm_bwd: block b handles rows [b·rowsPerBlock, (b+1)·rowsPerBlock);
// thread t owns columns t, t+blockDim.x, ... (blockDim.x a multiple of 32).
extern "C" __global__ void __launch_bounds__(256) rmsnorm_bwd(float* dx, double* partial, const float* dout,
                                                              const float* x, const float* w, const float* rstd,
                                                              int rows, int dim, int rowsPerBlock) {
    __shared__ double red[32];
    const int T = blockDim.x;
    double acc[RMS_MAXC];
#pragma unroll
    for (int c = 0; c < RMS_MAXC; c++) acc[c] = 0.0;
    const int r0 = blockIdx.x * rowsPerBlock;
    const int r1 = min(rows, r0 + rowsPerBlock);
    for (int r = r0; r < r1; r++) {
        const float* xr = x + (size_t)r * dim;
        const float* gr = dout + (size_t)r * dim;
        float xv[RMS_MAXC], gv[RMS_MAXC];
        double dot = 0.0;
#pragma unroll
        for (int c = 0; c < RMS_MAXC; c++) {
            const int d = threadIdx.x + c * T;
            xv[c] = 0.0f;
            gv[c] = 0.0f;
            if (d < dim) {
                xv[c] = xr[d];
                gv[c] = gr[d];
                dot += (double)gv[c] * (double)w[d] * (double)xv[c];
            }
        }
        dot = block_sum_d(dot, red);
        const float rs = rstd[r];
        const float k = (float)dot * rs * rs * rs / (float)dim;
        float* dxr = dx + (size_t)r * dim;
#pragma unroll
        for (int c = 0; c < RMS_MAXC; c++) {
            const int d = threadIdx.x + c * T;
            if (d < dim) {
                dxr[d] += rs * w[d] * gv[c] - xv[c] * k;
                acc[c] += (double)(gv[c] * xv[c] * rs);
            }
        }
    }
    double* pr = partial + (size_t)blockIdx.x * dim;
#pragma unroll
    for (int c = 0; c < RMS_MAXC; c++) {
        const int d = threadIdx.x + c * T;
        if (d < dim) pr[d] = acc[c];
    }
}

// rmsnorm_dw_reduce: dw[d] += Σ_b partial[b][d], b in order. One thread per d.
extern "C" __global__ void __launch_bounds__(256) rmsnorm_dw_reduce(float* dw, const double* partial, int nb, int dim) {
    const int d = blockIdx.x * blockDim.x + threadIdx.x;
    if (d >= dim) return;
    double s = 0.0;
    for (int b = 0; b < nb; b++) s += partial[(size_t)b * dim + d];
    dw[d] += (float)s;
}
