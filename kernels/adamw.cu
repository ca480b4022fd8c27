// adamw.cu: the AdamW optimizer step, one fused elementwise pass over the
// whole model.
//
// For each parameter: g = s·g (the global-norm clip scale, rounded to
// float32 as a separate Scale would round it), m = β1·m + (1−β1)·g,
// v = β2·v + (1−β2)·g², p −= lr·(wd·p + m·c1 / (sqrt(v·c2) + eps)), with
// wd applied to the first nDecay parameters only (the model's matrices;
// the norm gains after them take none) and the inverse bias corrections
// c1 = 1/(1−β1^step), c2 = 1/(1−β2^step) computed on the host in float64
// and rounded to float32, as the CPU does. It fuses the clip, the moment
// updates, the bias correction, the decoupled weight decay and the
// parameter update into one read and one write of p, m and v, and one
// launch per step. p, m and v are updated in place; g is only read.
//
// CPU twin: engine.Backend.AdamW.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256) adamw(float* p, const float* g, float* m, float* v, int n,
                                                        int nDecay, float gradScale, float lr, float beta1,
                                                        float beta2, float eps, float wd, float c1, float c2) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        // __fmul_rn keeps the scaled gradient rounded on its own, never
        // contracted into the moment updates' multiply-adds.
        const float gi = __fmul_rn(g[i], gradScale);
        const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const float u = mi * c1 / (sqrtf(vi * c2) + eps);
        const float pi = p[i];
        p[i] = pi - lr * ((i < nDecay ? wd : 0.0f) * pi + u);
    }
}
