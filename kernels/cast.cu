// cast.cu: conversions between float32 and bfloat16 storage.
//
// cast_f32_bf16 rounds each element to nearest, ties to even, through
// bf16_bits; cast_bf16_f32 widens exactly. They are memory-bound passes of
// one read and one write per element: the bf16 working copy of the fp32
// master weights after an optimizer step, a bf16-rounded rollout model,
// and the way a bf16 tensor's values reach the host.
//
// CPU twin: engine.Backend.Cast.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256) cast_f32_bf16(bf16* dst, const float* src, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        dst[i] = bf16_bits(src[i]);
}

extern "C" __global__ void __launch_bounds__(256) cast_bf16_f32(float* dst, const bf16* src, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        dst[i] = bf16_float(src[i]);
}
