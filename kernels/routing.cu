// routing.cu: the kernels RL adds to the model's forward and backward —
// routing replay and the entropy bonus's backward.
//
// router_replay, one thread per token: for a row whose replay[r·k] is not
// negative, experts = the row's k replayed ids and weights = their
// probabilities (from router_topk_fwd on the same logits) over their sum,
// the sum in float64 in replay order as router_topk_fwd sums its own
// choice, so replaying the experts router_topk_fwd chose rewrites the same
// bits. A replayed id outside [0, nExperts) or repeated in its row leaves
// the row as it was and reports STATUS_EXPERT. Routing replay is R3
// (arXiv 2510.11370): the training forward uses the experts the rollout
// used; router_topk_bwd is the backward of either choice.
//
// entropy_bwd, one block per row: dlogits += dent·(−p·(log p + H)) with
// log p = logits − lse and H = ent (the outputs of logprob_fwd and
// entropy), each term in float64; a row with dent = 0 is skipped.
//
// CPU twin: engine.Backend.RouterReplay, engine.Backend.EntropyBackward.
#include "common.cuh"

// router_replay: 256 threads, one per row.
extern "C" __global__ void __launch_bounds__(256) router_replay(float* weights, int* experts, const float* probs,
                                                                const int* replay, int rows, int nE, int k,
                                                                int* status) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const int* rr = replay + (size_t)r * k;
    if (rr[0] < 0) return;
    const float* pr = probs + (size_t)r * nE;
    double S = 0.0;
    for (int j = 0; j < k; j++) {
        const int e = rr[j];
        bool bad = e < 0 || e >= nE;
        for (int i = 0; i < j && !bad; i++) bad = rr[i] == e;
        if (bad) {
            report_status(status, STATUS_EXPERT);
            return;
        }
        S += (double)pr[e];
    }
    for (int j = 0; j < k; j++) {
        const int e = rr[j];
        experts[(size_t)r * k + j] = e;
        weights[(size_t)r * k + j] = (float)((double)pr[e] / S);
    }
}

// entropy_bwd: one block of 256 threads per row.
extern "C" __global__ void __launch_bounds__(256) entropy_bwd(float* dlogits, const float* dent, const float* logits,
                                                              const float* lse, const float* ent, int rows,
                                                              int vocab) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    const double g = dent[r];
    if (g == 0.0) return;
    const float L = lse[r];
    const double H = ent[r];
    const float* lr = logits + (size_t)r * vocab;
    float* dl = dlogits + (size_t)r * vocab;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        const float lp = lr[j] - L;
        const float p = expf(lp);
        dl[j] += (float)(-g * (double)p * ((double)lp + H));
    }
}
