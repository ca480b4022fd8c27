// logprob.cu: per-token log-probabilities of targets under softmax(logits),
// their backward, and the entropy of each row's softmax.
//
// logprob_fwd, one block per row: lse = log Σ exp(logits) (max-shifted, the
// exponentials summed in float64) and logp = logits[target] − lse; it fuses the
// log-softmax with the target gather, so the rows×vocab log-softmax is never
// stored. logprob_bwd accumulates dlogits += dlogp·(onehot(target) −
// exp(logits − lse)) (as dlogits − dlogp·p, then + dlogp at the target). entropy writes −Σ p·log p = Σ p·(lse − logits), summed
// in float64. logp, lse and ent are overwritten.
//
// CPU twin: engine.Backend.TokenLogProbs, engine.Backend.TokenLogProbsBackward,
// engine.Backend.Entropy.
#include "common.cuh"

// logprob_fwd: one block of 256 threads per row.
extern "C" __global__ void __launch_bounds__(256) logprob_fwd(float* logp, float* lse, const float* logits,
                                                              const int* targets, int rows, int vocab, int* status) {
    __shared__ float red[32];
    __shared__ double redd[32];
    const int r = blockIdx.x;
    if (r >= rows) return;
    const float* lr = logits + (size_t)r * vocab;
    float mx;
    const float L = row_lse(lr, vocab, 1.0f, red, redd, &mx);
    if (threadIdx.x == 0) {
        const int t = targets[r];
        lse[r] = L;
        if (t >= 0 && t < vocab) {
            logp[r] = lr[t] - L;
        } else {
            report_status(status, STATUS_TARGET);
            logp[r] = 0.0f;
        }
    }
}

// logprob_bwd: one block of 256 threads per row.
extern "C" __global__ void __launch_bounds__(256) logprob_bwd(float* dlogits, const float* dlogp, const float* logits,
                                                              const float* lse, const int* targets, int rows,
                                                              int vocab, int* status) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    const int t = targets[r];
    if (t < 0 || t >= vocab) {
        if (threadIdx.x == 0) report_status(status, STATUS_TARGET);
        return;
    }
    const float g = dlogp[r], L = lse[r];
    const float* lr = logits + (size_t)r * vocab;
    float* dl = dlogits + (size_t)r * vocab;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        float d = dl[j] - g * expf(lr[j] - L);
        if (j == t) d += g; // the CPU's order: subtract g·p, then add g at the target
        dl[j] = d;
    }
}

// entropy: one block of 256 threads per row.
extern "C" __global__ void __launch_bounds__(256) entropy(float* ent, const float* logits, const float* lse, int rows,
                                                          int vocab) {
    __shared__ double redd[32];
    const int r = blockIdx.x;
    if (r >= rows) return;
    const float L = lse[r];
    const float* lr = logits + (size_t)r * vocab;
    double s = 0.0;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        const float x = lr[j];
        const float p = expf(x - L);
        s += (double)p * (double)(L - x);
    }
    s = block_sum_d(s, redd);
    if (threadIdx.x == 0) ent[r] = (float)s;
}
