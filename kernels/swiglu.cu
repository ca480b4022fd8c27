// swiglu.cu: the SwiGLU activation, out = silu(gate)·up, and its backward.
//
// silu(g) = g·σ(g) with σ(g) = 1/(1+exp(−g)). The forward fuses the sigmoid,
// the product with gate and the product with up into one pass; the backward
// computes both input gradients in one pass and recomputes σ instead of
// saving it. Gradients accumulate: dgate += dout·up·σ·(1 + g·(1−σ)),
// dup += dout·silu(g). The forward overwrites out.
//
// CPU twin: engine.Backend.SwiGLU, engine.Backend.SwiGLUBackward.
#include "common.cuh"

// The expressions keep the CPU's association order, so the two differ only
// by the exponential's rounding (and FMA contraction).

extern "C" __global__ void __launch_bounds__(256) swiglu_fwd(float* out, const float* gate, const float* up, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

extern "C" __global__ void __launch_bounds__(256) swiglu_bwd(float* dgate, float* dup, const float* dout,
                                                             const float* gate, const float* up, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const float g = gate[i], u = up[i], d = dout[i];
        const float s = 1.0f / (1.0f + expf(-g));
        dgate[i] += d * u * s * (1.0f + g * (1.0f - s));
        dup[i] += d * g * s;
    }
}
