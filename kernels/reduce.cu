// reduce.cu: elementwise vector ops and the sum of squares.
//
// add_f32 computes y += x, scale_f32 computes x *= s (in place). sumsq_partial
// and sumsq_final compute Σ x² in float64: a fixed grid of blocks each reduces
// a fixed, grid-strided share of the elements, and one block then adds the
// per-block partials in block order, so the result is the same on every run
// and on every device. Nothing is fused. Outputs are overwritten except y of
// add_f32, which accumulates.
//
// CPU twin: engine.Backend.Add, engine.Backend.Scale, engine.Backend.SumSquares.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256) add_f32(float* y, const float* x, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] += x[i];
}

extern "C" __global__ void __launch_bounds__(256) scale_f32(float* x, int n, float s) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        x[i] *= s;
}

// sumsq_partial: partial[blockIdx.x] = Σ x[i]² over the block's grid-strided
// share. Launched with 256 threads.
extern "C" __global__ void __launch_bounds__(256) sumsq_partial(const float* x, int n, double* partial) {
    __shared__ double red[32];
    double s = 0.0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        double v = (double)x[i];
        s += v * v;
    }
    s = block_sum_d(s, red);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// sumsq_final: out[0] = Σ partial[0..g), one block of 256 threads.
extern "C" __global__ void __launch_bounds__(256) sumsq_final(const double* partial, int g, double* out) {
    __shared__ double red[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < g; i += blockDim.x) s += partial[i];
    s = block_sum_d(s, red);
    if (threadIdx.x == 0) out[0] = s;
}
