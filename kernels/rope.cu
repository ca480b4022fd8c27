// rope.cu: rotary position embedding, applied in place, and its transpose.
//
// x is rows×heads×headDim; row r is at position pos[r]. For i < headDim/2 the
// pair (x[i], x[i+headDim/2]) of every head rotates by the angle
// pos·theta^(−2i/headDim): (x1, x2) → (x1·c − x2·s, x1·s + x2·c). The
// backward rotates by the opposite angle (the transpose). One thread owns a
// (row, i) pair, computes its angle and cos/sin once in float64 (an angle of
// a few thousand radians loses ~1e-4 in float32) and rotates that pair in
// every head. Both overwrite x in place; neither accumulates.
//
// CPU twin: engine.Backend.RoPE, engine.Backend.RoPEBackward.
#include "common.cuh"

__device__ __forceinline__ void rope_apply(float* x, const int* pos, int rows, int heads, int hd, float theta,
                                           float sign) {
    const int half = hd >> 1;
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= rows * half) return;
    const int r = idx / half, i = idx - r * half;
    const double freq = pow((double)theta, -2.0 * (double)i / (double)hd);
    double s, c;
    sincos((double)pos[r] * freq, &s, &c);
    const float cf = (float)c, sf = sign * (float)s;
    float* xr = x + (size_t)r * heads * hd;
    for (int h = 0; h < heads; h++) {
        float* p = xr + h * hd;
        const float x1 = p[i], x2 = p[i + half];
        p[i] = x1 * cf - x2 * sf;
        p[i + half] = x1 * sf + x2 * cf;
    }
}

extern "C" __global__ void __launch_bounds__(256) rope_fwd(float* x, const int* pos, int rows, int heads, int hd,
                                                           float theta) {
    rope_apply(x, pos, rows, heads, hd, theta, 1.0f);
}

extern "C" __global__ void __launch_bounds__(256) rope_bwd(float* dx, const int* pos, int rows, int heads, int hd,
                                                           float theta) {
    rope_apply(dx, pos, rows, heads, hd, theta, -1.0f);
}
