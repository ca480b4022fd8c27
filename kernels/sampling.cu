// sampling.cu: drawing one token per row from temperature-scaled logits with
// top-k and top-p (nucleus) truncation, given one uniform u in [0,1) per row.
//
// One block of 256 threads per row. With x = logits/T:
//  1. lse = log Σ exp(x) (row_lse, the same code and block size as
//     TokenLogProbs), so the returned log-prob x[token] − lse is the one
//     TokenLogProbs computes from logits divided by T.
//  2. Truncation (only when topK ∈ (0, vocab) or topP < 1): tokens are ranked
//     by x, larger first, ties to the lower token id (a bitonic sort of
//     (x, id) keys in shared memory, or in global scratch when the vocabulary
//     exceeds SAMPLE_SMEM_KEYS). Top-k keeps ranks < topK. Top-p then keeps
//     the smallest rank prefix whose probability mass, renormalised over the
//     top-k set, reaches topP (the token that crosses it included).
//  3. Inverse CDF in token-id order over the kept set, with unnormalised
//     weights p = exp(x − max) summed in float64: the token is the lowest id
//     whose cumulative kept weight exceeds u·(total kept weight); if rounding
//     leaves none, the highest kept id of non-zero weight.
// Temperature 0 is greedy: the argmax of the raw logits (ties to the lower
// id), with log-prob logits[token] − log Σ exp(logits). Every sum is a block
// scan in a fixed order. This is the CPU's rule step for step (engine/cpu
// sample.go); tokens and logp are overwritten.
//
// CPU twin: engine.Backend.Sample.
#include "common.cuh"

#define SAMPLE_SMEM_KEYS 4096 // keys that fit the 32 KiB of dynamic shared memory

__device__ __forceinline__ unsigned long long sample_key(float x, int id) {
    const unsigned u = __float_as_uint(x);
    const unsigned ord = (u & 0x80000000u) ? ~u : (u | 0x80000000u); // monotonic in x
    return ((unsigned long long)ord << 32) | (unsigned long long)(0xffffffffu - (unsigned)id);
}

__device__ __forceinline__ int key_id(unsigned long long key) {
    return (int)(0xffffffffu - (unsigned)(key & 0xffffffffull));
}

// bitonic_sort_desc sorts keys[0..n) (n a power of two) in decreasing order.
__device__ void bitonic_sort_desc(unsigned long long* keys, int n) {
    for (int size = 2; size <= n; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = threadIdx.x; i < n; i += blockDim.x) {
                const int j = i ^ stride;
                if (j > i) {
                    const unsigned long long a = keys[i], b = keys[j];
                    const bool desc = (i & size) == 0;
                    if (desc ? a < b : a > b) {
                        keys[i] = b;
                        keys[j] = a;
                    }
                }
            }
            __syncthreads();
        }
    }
}

// sample_rows: grid = rows, 256 threads. scratch is null when the keys live
// in dynamic shared memory (npow2 8-byte keys), else rows×npow2 keys.
extern "C" __global__ void __launch_bounds__(256) sample_rows(int* tokens, float* logp, const float* logits,
                                                              const float* u, int vocab, float T, int greedy,
                                                              int topK, float topP, unsigned long long* scratch,
                                                              int npow2) {
    __shared__ float red[32];
    __shared__ double redd[32];
    __shared__ int ired[32];
    __shared__ int found;
    const int r = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const float* lr = logits + (size_t)r * vocab;

    if (greedy) {
        float bv = -INFINITY;
        int bi = vocab;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            const float v = lr[i];
            if (bi == vocab || v > bv) {
                bv = v;
                bi = i;
            }
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            const float ov = __shfl_xor_sync(FULL_MASK, bv, off);
            const int oi = __shfl_xor_sync(FULL_MASK, bi, off);
            if (oi < vocab && (bi == vocab || ov > bv || (ov == bv && oi < bi))) {
                bv = ov;
                bi = oi;
            }
        }
        if (lane == 0) {
            red[warp] = bv;
            ired[warp] = bi;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int w = 1; w < nw; w++) {
                const int oi = ired[w];
                const float ov = red[w];
                if (oi < vocab && (bi == vocab || ov > bv || (ov == bv && oi < bi))) {
                    bv = ov;
                    bi = oi;
                }
            }
            found = bi;
        }
        __syncthreads();
        const int tok = found;
        float mx;
        const float L = row_lse(lr, vocab, 1.0f, red, redd, &mx);
        if (threadIdx.x == 0) {
            tokens[r] = tok;
            logp[r] = lr[tok] - L;
        }
        return;
    }

    float mx;
    const float L = row_lse(lr, vocab, T, red, redd, &mx);

    unsigned long long thr = 0; // keep every token
    const bool cutK = topK > 0 && topK < vocab;
    if (cutK || topP < 1.0f) {
        unsigned long long* keys =
            scratch ? scratch + (size_t)r * npow2 : reinterpret_cast<unsigned long long*>(moerl_smem);
        for (int i = threadIdx.x; i < npow2; i += blockDim.x) keys[i] = i < vocab ? sample_key(lr[i] / T, i) : 0ull;
        __syncthreads();
        bitonic_sort_desc(keys, npow2);
        const int ck = cutK ? topK : vocab;
        int c = ck;
        if (topP < 1.0f) {
            double carry = 0.0;
            for (int c0 = 0; c0 < ck; c0 += blockDim.x) {
                const int rk = c0 + threadIdx.x;
                const double p = rk < ck ? (double)expf(lr[key_id(keys[rk])] / T - mx) : 0.0;
                double tot;
                block_inclusive_scan_d(p, redd, &tot);
                carry += tot;
            }
            const double target = (double)topP * carry;
            if (threadIdx.x == 0) found = ck - 1;
            carry = 0.0;
            for (int c0 = 0; c0 < ck; c0 += blockDim.x) {
                const int rk = c0 + threadIdx.x;
                const double p = rk < ck ? (double)expf(lr[key_id(keys[rk])] / T - mx) : 0.0;
                double tot;
                const double incl = block_inclusive_scan_d(p, redd, &tot);
                if (rk < ck && carry + incl >= target) atomicMin(&found, rk);
                __syncthreads();
                if (found < c0 + (int)blockDim.x && found < ck - 1) break; // uniform: all read after the barrier
                carry += tot;
            }
            __syncthreads();
            c = found + 1;
        }
        thr = keys[c - 1];
        __syncthreads();
    }

    // Inverse CDF in id order over the kept tokens (key >= thr).
    if (threadIdx.x == 0) found = -1;
    __syncthreads();
    double carry = 0.0;
    for (int c0 = 0; c0 < vocab; c0 += blockDim.x) {
        const int i = c0 + threadIdx.x;
        double p = 0.0;
        if (i < vocab) {
            const float x = lr[i] / T;
            if (sample_key(x, i) >= thr) {
                p = (double)expf(x - mx);
                if (p > 0.0) atomicMax(&found, i);
            }
        }
        double tot;
        block_inclusive_scan_d(p, redd, &tot);
        carry += tot;
    }
    __syncthreads();
    const int lastKept = found;
    const double target = (double)u[r] * carry;
    __syncthreads();
    if (threadIdx.x == 0) found = vocab;
    carry = 0.0;
    for (int c0 = 0; c0 < vocab; c0 += blockDim.x) {
        const int i = c0 + threadIdx.x;
        double p = 0.0;
        if (i < vocab) {
            const float x = lr[i] / T;
            if (sample_key(x, i) >= thr) p = (double)expf(x - mx);
        }
        double tot;
        const double incl = block_inclusive_scan_d(p, redd, &tot);
        if (p > 0.0 && carry + incl > target) atomicMin(&found, i);
        __syncthreads();
        if (found < vocab) break; // uniform: all read after the barrier
        carry += tot;
    }
    __syncthreads();
    const int tok = found < vocab ? found : lastKept;
    if (threadIdx.x == 0) {
        tokens[r] = tok;
        logp[r] = lr[tok] / T - L;
    }
}
