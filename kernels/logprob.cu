// logprob.cu: per-token log-probabilities of targets under softmax(logits),
// their backward, both in one pass, and the entropy of each row's softmax.
//
// logprob_fwd, one block per row: lse = log Σ exp(logits) (max-shifted, the
// exponentials summed in float64) and logp = logits[target] − lse; it fuses the
// log-softmax with the target gather, so the rows×vocab log-softmax is never
// stored. logprob_bwd accumulates dlogits += dlogp·(onehot(target) −
// exp(logits − lse)) (as dlogits − dlogp·p, then + dlogp at the target).
// logprob_fused is logprob_fwd and then logprob_bwd's row into zeros, in one
// block per row, for a dlogp known before the forward (llm.c's fused
// classifier): the same functions compute both, so its bits are the two
// kernels' with dlogits zeroed, and a step reads the logits once less and
// neither zeroes nor reads dlogits. entropy writes −Σ p·log p = Σ p·(lse −
// logits), summed in float64. logp, lse, ent and logprob_fused's dlogits
// are overwritten.
//
// CPU twin: engine.Backend.TokenLogProbs, engine.Backend.TokenLogProbsBackward,
// engine.Backend.TokenLogProbsFused, engine.Backend.Entropy.
#include "common.cuh"

// logprob_row is one row of logprob_fwd, in every thread of the block: it
// returns lse, and thread 0 writes logp and lse (logp 0, and a status
// report, for a target outside [0, vocab)).
__device__ __forceinline__ float logprob_row(float* logp, float* lse, const float* lr, const int* targets, int r,
                                             int vocab, int* status, float* red, double* redd) {
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
    return L;
}

// logprob_grad_row is one row of logprob_bwd: dl = base − g·exp(lr − L), then
// + g at the target, base dl's own value when accumulating and 0 when not
// (0 − x keeps the sign rules of a zeroed dl: +0 where g·p is ±0).
template <bool ACCUMULATE>
__device__ __forceinline__ void logprob_grad_row(float* dl, const float* lr, float g, float L, int t, int vocab) {
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        const float base = ACCUMULATE ? dl[j] : 0.0f;
        float d = base - g * expf(lr[j] - L);
        if (j == t) d += g; // the CPU's order: subtract g·p, then add g at the target
        dl[j] = d;
    }
}

// logprob_fwd: one block of 256 threads per row.
extern "C" __global__ void __launch_bounds__(256) logprob_fwd(float* logp, float* lse, const float* logits,
                                                              const int* targets, int rows, int vocab, int* status) {
    __shared__ float red[32];
    __shared__ double redd[32];
    const int r = blockIdx.x;
    if (r >= rows) return;
    logprob_row(logp, lse, logits + (size_t)r * vocab, targets, r, vocab, status, red, redd);
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
    logprob_grad_row<true>(dlogits + (size_t)r * vocab, logits + (size_t)r * vocab, dlogp[r], lse[r], t, vocab);
}

// logprob_fused: one block of 256 threads per row. A row whose target is out
// of range gets no gradient, as in logprob_bwd.
extern "C" __global__ void __launch_bounds__(256) logprob_fused(float* logp, float* lse, float* dlogits,
                                                                const float* logits, const int* targets,
                                                                const float* dlogp, int rows, int vocab, int* status) {
    __shared__ float red[32];
    __shared__ double redd[32];
    const int r = blockIdx.x;
    if (r >= rows) return;
    const float* lr = logits + (size_t)r * vocab;
    const float L = logprob_row(logp, lse, lr, targets, r, vocab, status, red, redd);
    const int t = targets[r];
    if (t < 0 || t >= vocab) return; // logprob_row reported it
    logprob_grad_row<false>(dlogits + (size_t)r * vocab, lr, dlogp[r], L, t, vocab);
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
