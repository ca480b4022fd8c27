// router.cu: the top-k softmax router and its backward, plus the two small
// steps of expert dispatch around the sort in sort.cu.
//
// router_topk_fwd, one warp per token: probs = softmax(logits) (the sum in
// float64; saved for the backward and the load-balancing loss), then k rounds of a warp argmax that
// prefers the larger probability and, on a tie, the lower expert index; the
// chosen experts go out in decreasing order with weights = p / Σ p over the
// chosen (summed in choice order). It fuses the softmax, the selection and the
// renormalisation; probs, experts and weights are overwritten.
//
// router_topk_bwd accumulates into dlogits the gradient through the
// renormalisation (dp_j = (dw_j − Σ_i dw_i·w_i) / Σ_i p_i) and the softmax
// (dlogit_e = p_e·(dp_e − Σ_j p_j·dp_j)), in float64. softmax_bwd
// accumulates a plain softmax backward (for a loss on the probabilities
// themselves, the load-balancing loss), its row sum in float64.
//
// Dispatch: sort_keys (sort.cu) checks the experts, the sort orders the
// (token, slot) assignments by expert stably, dispatch_finalize writes
// perm[s] = token of sorted slot s and inv[token·k+j] = slot, and
// dispatch_offsets counts each expert's run (integer counts, exact) into the
// nExperts+1 offsets, which stay on the device for the grouped expert GEMMs
// (gemm.cu) and router_load.
//
// router_load, one block per expert: load[e] = its slot count from the
// offsets and load[nE+e] = Σ_r probs[r·nE+e], the load-balancing loss's two
// factors. The sum is in float64 (each thread strided over rows, then the
// block in warp order: fixed for a given block size), so it differs from
// the CPU's row-order float64 sum only below float32's rounding.
//
// CPU twin: engine.Backend.RouterTopK, engine.Backend.RouterTopKBackward,
// engine.Backend.RouterDispatch, engine.Backend.RouterLoad,
// engine.Backend.SoftmaxBackward.
#include "common.cuh"

#define ROUTER_MAXC 32 // experts per lane: nExperts <= 1024

// router_topk_fwd: 256 threads, one warp per row; k <= 32 and k <= nE.
extern "C" __global__ void __launch_bounds__(256) router_topk_fwd(float* weights, int* experts, float* probs,
                                                                  const float* logits, int rows, int nE, int k) {
    const int lane = threadIdx.x & 31;
    const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= rows) return;
    const float* lr = logits + (size_t)r * nE;
    float val[ROUTER_MAXC];
    float mx = -INFINITY;
#pragma unroll
    for (int c = 0; c < ROUTER_MAXC; c++) {
        const int e = lane + 32 * c;
        val[c] = e < nE ? lr[e] : -INFINITY;
        mx = fmaxf(mx, val[c]);
    }
    mx = warp_max(mx);
    double s = 0.0;
#pragma unroll
    for (int c = 0; c < ROUTER_MAXC; c++) {
        const int e = lane + 32 * c;
        val[c] = e < nE ? expf(val[c] - mx) : 0.0f;
        s += (double)val[c];
    }
    const double inv = 1.0 / warp_sum_d(s);
    float* pr = probs + (size_t)r * nE;
#pragma unroll
    for (int c = 0; c < ROUTER_MAXC; c++) {
        const int e = lane + 32 * c;
        if (e < nE) {
            val[c] = (float)((double)val[c] * inv);
            pr[e] = val[c];
        }
    }

    unsigned taken = 0;
    float myp = 0.0f;
    int mye = 0;
    for (int j = 0; j < k; j++) {
        float bv = -1.0f; // below every probability
        int be = 0x7fffffff;
#pragma unroll
        for (int c = 0; c < ROUTER_MAXC; c++) {
            const int e = lane + 32 * c;
            // e grows with c, so a strict > keeps the lower index on ties.
            if (e < nE && !((taken >> c) & 1u) && val[c] > bv) {
                bv = val[c];
                be = e;
            }
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            const float ov = __shfl_xor_sync(FULL_MASK, bv, off);
            const int oe = __shfl_xor_sync(FULL_MASK, be, off);
            if (ov > bv || (ov == bv && oe < be)) {
                bv = ov;
                be = oe;
            }
        }
        if (be < nE && (be & 31) == lane) taken |= 1u << (be >> 5);
        if (lane == j) {
            myp = bv;
            mye = be;
        }
    }
    double S = 0.0;
    for (int j = 0; j < k; j++) S += (double)__shfl_sync(FULL_MASK, myp, j);
    if (lane < k) {
        weights[(size_t)r * k + lane] = (float)((double)myp / S);
        experts[(size_t)r * k + lane] = mye;
    }
}

// router_topk_bwd: 256 threads, one warp per row.
extern "C" __global__ void __launch_bounds__(256) router_topk_bwd(float* dlogits, const float* dweights,
                                                                  const float* weights, const int* experts,
                                                                  const float* probs, int rows, int nE, int k,
                                                                  int* status) {
    const int lane = threadIdx.x & 31;
    const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= rows) return;
    int mye = 0;
    if (lane < k) mye = experts[(size_t)r * k + lane];
    const bool bad = lane < k && (mye < 0 || mye >= nE);
    if (__any_sync(FULL_MASK, bad)) {
        if (lane == 0) report_status(status, STATUS_EXPERT);
        return;
    }
    // In float64 throughout, in the CPU's order (sums over j in order).
    const float* pr = probs + (size_t)r * nE;
    double myw = 0.0, mydw = 0.0, myp = 0.0;
    if (lane < k) {
        myw = weights[(size_t)r * k + lane];
        mydw = dweights[(size_t)r * k + lane];
        myp = pr[mye];
    }
    double S = 0.0, a = 0.0;
    for (int j = 0; j < k; j++) {
        S += __shfl_sync(FULL_MASK, myp, j);
        a += __shfl_sync(FULL_MASK, mydw, j) * __shfl_sync(FULL_MASK, myw, j);
    }
    const double dp = lane < k ? (mydw - a) / S : 0.0;
    double bsum = 0.0;
    for (int j = 0; j < k; j++) bsum += __shfl_sync(FULL_MASK, myp, j) * __shfl_sync(FULL_MASK, dp, j);

    double g[ROUTER_MAXC];
#pragma unroll
    for (int c = 0; c < ROUTER_MAXC; c++) g[c] = -bsum;
    for (int j = 0; j < k; j++) {
        const int ej = __shfl_sync(FULL_MASK, mye, j);
        const double dpj = __shfl_sync(FULL_MASK, dp, j);
#pragma unroll
        for (int c = 0; c < ROUTER_MAXC; c++)
            if (ej == lane + 32 * c) g[c] += dpj;
    }
    float* dl = dlogits + (size_t)r * nE;
#pragma unroll
    for (int c = 0; c < ROUTER_MAXC; c++) {
        const int e = lane + 32 * c;
        if (e < nE) dl[e] += (float)((double)pr[e] * g[c]);
    }
}

// softmax_bwd: dlogits += p·(dp − Σ p·dp) per row of n; one warp per row.
extern "C" __global__ void __launch_bounds__(256) softmax_bwd(float* dlogits, const float* dprobs, const float* probs,
                                                              int rows, int n) {
    const int lane = threadIdx.x & 31;
    const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= rows) return;
    const float* p = probs + (size_t)r * n;
    const float* dp = dprobs + (size_t)r * n;
    double dot = 0.0;
    for (int e = lane; e < n; e += 32) dot += (double)p[e] * (double)dp[e];
    dot = warp_sum_d(dot);
    float* dl = dlogits + (size_t)r * n;
    for (int e = lane; e < n; e += 32) dl[e] += (float)((double)p[e] * ((double)dp[e] - dot));
}

// dispatch_offsets: offsets[e] = number of keys < e, for e in [0, nE]; keys
// are the sanitized experts (a bad one is nE and counts nowhere). One block
// of 256 threads, nE+1 ints of dynamic shared memory.
extern "C" __global__ void __launch_bounds__(256) dispatch_offsets(const int* keys, int n, int nE, int* offsets) {
    int* cnt = reinterpret_cast<int*>(moerl_smem);
    for (int e = threadIdx.x; e <= nE; e += blockDim.x) cnt[e] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) atomicAdd(&cnt[keys[i]], 1);
    __syncthreads();
    if (threadIdx.x == 0) {
        int run = 0;
        for (int e = 0; e < nE; e++) {
            offsets[e] = run;
            run += cnt[e];
        }
        offsets[nE] = run;
    }
}

// dispatch_finalize: perm[s] = order[s] / k (the token), inv[order[s]] = s.
extern "C" __global__ void __launch_bounds__(256) dispatch_finalize(const int* order, int n, int k, int* perm,
                                                                    int* inv) {
    for (int s = blockIdx.x * blockDim.x + threadIdx.x; s < n; s += gridDim.x * blockDim.x) {
        const int a = order[s];
        perm[s] = a / k;
        inv[a] = s;
    }
}

// router_load: grid nE, 256 threads.
extern "C" __global__ void __launch_bounds__(256) router_load(float* load, const float* probs, const int* offsets,
                                                              int rows, int nE, int* status) {
    __shared__ double red[32];
    const int e = blockIdx.x;
    double s = 0.0;
    for (int r = threadIdx.x; r < rows; r += blockDim.x) s += (double)probs[(size_t)r * nE + e];
    s = block_sum_d(s, red);
    if (threadIdx.x == 0) {
        const int a = offsets[e], b = offsets[e + 1];
        if (a < 0 || b < a) {
            report_status(status, STATUS_GROUP_OFFSETS);
            return;
        }
        load[e] = (float)(b - a);
        load[nE + e] = (float)s;
    }
}
