// attention.cu: causal multi-head softmax attention for training (forward
// and backward) and for decoding against a KV cache.
//
// Layout: q, k, v, out, dq, dk, dv are batch×seq×heads×headDim (token-major,
// heads interleaved); lse and the backward's delta are batch×heads×seq. The
// score scale is 1/sqrt(headDim), passed by the launcher. headDim ≤ 128: each
// kernel is compiled for a padded head size D ∈ {32, 64, 128} (suffix _dD) and
// zero-fills the columns past headDim, which leaves every dot product as is.
//
// Forward (attn_fwd_dD): one block per (query tile of 64, head, batch), 256
// threads; it streams key/value tiles of 64 through shared memory with an
// online softmax (running max and sum per query), so the seq×seq score matrix
// is never stored. It fuses QKᵀ, the scale, the causal mask, the softmax and
// the product with V, writes out (overwriting) and saves lse = max + log(sum)
// per query for the backward.
//
// Backward, deterministic without atomics, in three kernels:
//   attn_bwd_delta   delta = rowsum(dout ∘ out) per query;
//   attn_bwd_dkdv_dD one block per (key tile of 32, head, batch) walks the
//                    query tiles that can see it and accumulates dK and dV in
//                    registers: P = exp(S·scale − lse), dV += Pᵀ·dO,
//                    dS = P ∘ (dO·Vᵀ − delta), dK += scale·dSᵀ·Q;
//   attn_bwd_dq_dD   one block per (query tile of 64, head, batch) walks its
//                    visible key tiles and accumulates dQ += scale·dS·K.
// Recomputing P in both passes costs a second QKᵀ but gives every output
// element a single owner, hence a fixed summation order. dq, dk and dv
// accumulate (+=) into what they held.
//
// Decode (attn_decode_dD): one block per (head, sequence) of 128 threads
// computes what attn_fwd computes for the sequence's last query, bit for bit,
// so that a sampled token's log-prob is the trainer's (exactly on-policy).
// The scores of the lens[b] cached keys go to shared memory (a thread per
// key, each an FMA chain over the head in d order, as attn_fwd's); warp 0
// then walks them in attn_fwd's key tiles of 64 with attn_fwd's online
// softmax (its per-thread keys, shuffles and running max and sum); after
// each tile every thread owning an output column rescales it and adds the
// tile's p·v in key order. Tiles past the query's last key, which attn_fwd
// also visits, change nothing there (p = 0, the correction is 1), so they
// are skipped. Overwrites out.
//
// Both kernels spell their arithmetic with explicit fmaf and _rn intrinsics
// where a product meets a sum, so the compiler cannot contract the two
// kernels' expressions differently.
//
// CPU twin: engine.Backend.Attention, engine.Backend.AttentionBackward,
// engine.Backend.AttentionDecode.
#include "common.cuh"

#define ATT_THREADS 256
#define FWD_BR 64  // queries per forward block
#define FWD_BC 64  // keys per forward tile
#define BWD_BR 64  // queries per backward tile
#define BWD_BC 32  // keys per backward tile

// row_base is the offset of head h of token i of sequence b.
__device__ __forceinline__ size_t row_base(int b, int i, int h, int seq, int heads, int hd) {
    return (((size_t)b * seq + i) * heads + h) * hd;
}

// load_tile copies rows [r0, r0+nrows) of head h of sequence b into a
// shared tile of nrows×(D+1) floats, zero-filling rows past seq and columns
// past hd.
template <int D>
__device__ __forceinline__ void load_tile(float* tile, const float* src, int b, int r0, int nrows, int h, int seq,
                                          int heads, int hd) {
    for (int idx = threadIdx.x; idx < nrows * D; idx += blockDim.x) {
        const int r = idx / D, d = idx - r * D;
        const int i = r0 + r;
        float v = 0.0f;
        if (i < seq && d < hd) v = src[row_base(b, i, h, seq, heads, hd) + d];
        tile[r * (D + 1) + d] = v;
    }
}

template <int D>
__device__ __forceinline__ void attn_fwd(float* out, float* lse, const float* q, const float* k, const float* v,
                                         int seq, int heads, int hd, float scale) {
    constexpr int LD = D + 1;
    constexpr int NC = D / 16; // output columns per thread
    float* Qs = reinterpret_cast<float*>(moerl_smem);
    float* Ks = Qs + FWD_BR * LD;
    float* Vs = Ks + FWD_BC * LD;
    float* Ps = Vs + FWD_BC * LD; // FWD_BR × (FWD_BC+1)

    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const int qt = gridDim.x - 1 - blockIdx.x; // heaviest tiles first
    const int h = blockIdx.y, b = blockIdx.z;
    const int q0 = qt * FWD_BR;

    load_tile<D>(Qs, q, b, q0, FWD_BR, h, seq, heads, hd);

    float o[4][NC];
    float m[4], l[4];
#pragma unroll
    for (int rr = 0; rr < 4; rr++) {
        m[rr] = -INFINITY;
        l[rr] = 0.0f;
#pragma unroll
        for (int c = 0; c < NC; c++) o[rr][c] = 0.0f;
    }

    const int lastKey = min(q0 + FWD_BR, seq) - 1;
    const int nkt = lastKey / FWD_BC + 1;
    for (int kt = 0; kt < nkt; kt++) {
        const int k0 = kt * FWD_BC;
        __syncthreads(); // the previous tile's Ks, Vs, Ps are no longer read
        load_tile<D>(Ks, k, b, k0, FWD_BC, h, seq, heads, hd);
        load_tile<D>(Vs, v, b, k0, FWD_BC, h, seq, heads, hd);
        __syncthreads();

        float s[4][4];
#pragma unroll
        for (int rr = 0; rr < 4; rr++)
#pragma unroll
            for (int cc = 0; cc < 4; cc++) s[rr][cc] = 0.0f;
        for (int d = 0; d < D; d++) {
            float a[4], bk[4];
#pragma unroll
            for (int rr = 0; rr < 4; rr++) a[rr] = Qs[(ty + 16 * rr) * LD + d];
#pragma unroll
            for (int cc = 0; cc < 4; cc++) bk[cc] = Ks[(tx + 16 * cc) * LD + d];
#pragma unroll
            for (int rr = 0; rr < 4; rr++)
#pragma unroll
                for (int cc = 0; cc < 4; cc++) s[rr][cc] = fmaf(a[rr], bk[cc], s[rr][cc]);
        }

#pragma unroll
        for (int rr = 0; rr < 4; rr++) {
            const int i = q0 + ty + 16 * rr;
            float mx = -INFINITY;
#pragma unroll
            for (int cc = 0; cc < 4; cc++) {
                const int j = k0 + tx + 16 * cc;
                s[rr][cc] = (j <= i && j < seq) ? __fmul_rn(s[rr][cc], scale) : -INFINITY;
                mx = fmaxf(mx, s[rr][cc]);
            }
            // The 16 threads of a row are one half-warp.
#pragma unroll
            for (int off = 8; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, off));
            // The tile's part of the online softmax; attn_decode repeats it.
            // A tile whose keys the row cannot see leaves it as it was
            // (p = 0, corr = 1), so a row's result does not depend on the tiles
            // after its own.
            const float mNew = fmaxf(m[rr], mx);
            // Every row of a visited tile sees at least key k0 <= i, so mNew is
            // finite; the guard keeps a fully masked row at zero regardless.
            const float mUse = mNew == -INFINITY ? 0.0f : mNew;
            float rs = 0.0f;
#pragma unroll
            for (int cc = 0; cc < 4; cc++) {
                const float p = expf(__fsub_rn(s[rr][cc], mUse));
                s[rr][cc] = p;
                rs = __fadd_rn(rs, p);
            }
#pragma unroll
            for (int off = 8; off > 0; off >>= 1) rs = __fadd_rn(rs, __shfl_xor_sync(FULL_MASK, rs, off));
            const float corr = expf(__fsub_rn(m[rr], mUse));
            l[rr] = fmaf(l[rr], corr, rs);
            m[rr] = mNew;
#pragma unroll
            for (int c = 0; c < NC; c++) o[rr][c] = __fmul_rn(o[rr][c], corr);
#pragma unroll
            for (int cc = 0; cc < 4; cc++) Ps[(ty + 16 * rr) * (FWD_BC + 1) + tx + 16 * cc] = s[rr][cc];
        }
        __syncthreads();

        for (int j = 0; j < FWD_BC; j++) {
            float vv[NC];
#pragma unroll
            for (int c = 0; c < NC; c++) vv[c] = Vs[j * LD + tx + 16 * c];
#pragma unroll
            for (int rr = 0; rr < 4; rr++) {
                const float p = Ps[(ty + 16 * rr) * (FWD_BC + 1) + j];
#pragma unroll
                for (int c = 0; c < NC; c++) o[rr][c] = fmaf(p, vv[c], o[rr][c]);
            }
        }
    }

#pragma unroll
    for (int rr = 0; rr < 4; rr++) {
        const int i = q0 + ty + 16 * rr;
        if (i >= seq) continue;
        const float inv = 1.0f / l[rr];
        float* orow = out + row_base(b, i, h, seq, heads, hd);
#pragma unroll
        for (int c = 0; c < NC; c++) {
            const int d = tx + 16 * c;
            if (d < hd) orow[d] = __fmul_rn(o[rr][c], inv);
        }
        if (tx == 0) lse[((size_t)b * heads + h) * seq + i] = m[rr] + logf(l[rr]);
    }
}

// attn_scores_bwd computes, for the 4×2 (query, key) pairs a thread owns in
// a backward tile, P = exp(S·scale − lse) and dS = P·(dP − delta) with
// dP = dO·Vᵀ, masking pairs outside the causal triangle or the sequence.
// Qs/dOs hold BWD_BR query rows from q0, Ks/Vs BWD_BC key rows from k0.
template <int D>
__device__ __forceinline__ void attn_scores_bwd(const float* Qs, const float* dOs, const float* Ks, const float* Vs,
                                                const float* lse_s, const float* delta_s, int q0, int k0, int seq,
                                                float scale, float p[4][2], float ds[4][2]) {
    constexpr int LD = D + 1;
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    float s[4][2], dp[4][2];
#pragma unroll
    for (int rr = 0; rr < 4; rr++)
#pragma unroll
        for (int cc = 0; cc < 2; cc++) s[rr][cc] = dp[rr][cc] = 0.0f;
    for (int d = 0; d < D; d++) {
        float a[4], g[4], kk[2], vv[2];
#pragma unroll
        for (int rr = 0; rr < 4; rr++) {
            a[rr] = Qs[(ty + 16 * rr) * LD + d];
            g[rr] = dOs[(ty + 16 * rr) * LD + d];
        }
#pragma unroll
        for (int cc = 0; cc < 2; cc++) {
            kk[cc] = Ks[(tx + 16 * cc) * LD + d];
            vv[cc] = Vs[(tx + 16 * cc) * LD + d];
        }
#pragma unroll
        for (int rr = 0; rr < 4; rr++)
#pragma unroll
            for (int cc = 0; cc < 2; cc++) {
                s[rr][cc] += a[rr] * kk[cc];
                dp[rr][cc] += g[rr] * vv[cc];
            }
    }
#pragma unroll
    for (int rr = 0; rr < 4; rr++) {
        const int r = ty + 16 * rr;
        const int i = q0 + r;
#pragma unroll
        for (int cc = 0; cc < 2; cc++) {
            const int j = k0 + tx + 16 * cc;
            const bool ok = i < seq && j < seq && j <= i;
            const float pv = ok ? expf(s[rr][cc] * scale - lse_s[r]) : 0.0f;
            p[rr][cc] = pv;
            ds[rr][cc] = pv * (dp[rr][cc] - delta_s[r]);
        }
    }
}

// load_rowstats copies lse and delta of queries [q0, q0+BWD_BR) into shared memory.
__device__ __forceinline__ void load_rowstats(float* lse_s, float* delta_s, const float* lse, const float* delta,
                                              int b, int h, int q0, int seq, int heads) {
    for (int r = threadIdx.x; r < BWD_BR; r += blockDim.x) {
        const int i = q0 + r;
        const size_t at = ((size_t)b * heads + h) * seq + i;
        lse_s[r] = i < seq ? lse[at] : 0.0f;
        delta_s[r] = i < seq ? delta[at] : 0.0f;
    }
}

template <int D>
__device__ __forceinline__ void attn_bwd_dkdv(float* dk, float* dv, const float* dout, const float* q,
                                              const float* k, const float* v, const float* lse,
                                              const float* delta, int seq, int heads, int hd, float scale) {
    constexpr int LD = D + 1;
    constexpr int NC = D / 16;
    float* Ks = reinterpret_cast<float*>(moerl_smem);
    float* Vs = Ks + BWD_BC * LD;
    float* Qs = Vs + BWD_BC * LD;
    float* dOs = Qs + BWD_BR * LD;
    float* Ps = dOs + BWD_BR * LD;          // BWD_BR × (BWD_BC+1)
    float* dSs = Ps + BWD_BR * (BWD_BC + 1); // BWD_BR × (BWD_BC+1)
    float* lse_s = dSs + BWD_BR * (BWD_BC + 1);
    float* delta_s = lse_s + BWD_BR;

    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const int h = blockIdx.y, b = blockIdx.z;
    const int k0 = blockIdx.x * BWD_BC;

    load_tile<D>(Ks, k, b, k0, BWD_BC, h, seq, heads, hd);
    load_tile<D>(Vs, v, b, k0, BWD_BC, h, seq, heads, hd);

    float dK[2][NC], dV[2][NC];
#pragma unroll
    for (int e = 0; e < 2; e++)
#pragma unroll
        for (int c = 0; c < NC; c++) dK[e][c] = dV[e][c] = 0.0f;

    const int nqt = (seq + BWD_BR - 1) / BWD_BR;
    for (int qt = k0 / BWD_BR; qt < nqt; qt++) {
        const int q0 = qt * BWD_BR;
        __syncthreads(); // the previous query tile is no longer read
        load_tile<D>(Qs, q, b, q0, BWD_BR, h, seq, heads, hd);
        load_tile<D>(dOs, dout, b, q0, BWD_BR, h, seq, heads, hd);
        load_rowstats(lse_s, delta_s, lse, delta, b, h, q0, seq, heads);
        __syncthreads();

        float p[4][2], ds[4][2];
        attn_scores_bwd<D>(Qs, dOs, Ks, Vs, lse_s, delta_s, q0, k0, seq, scale, p, ds);
#pragma unroll
        for (int rr = 0; rr < 4; rr++)
#pragma unroll
            for (int cc = 0; cc < 2; cc++) {
                Ps[(ty + 16 * rr) * (BWD_BC + 1) + tx + 16 * cc] = p[rr][cc];
                dSs[(ty + 16 * rr) * (BWD_BC + 1) + tx + 16 * cc] = ds[rr][cc];
            }
        __syncthreads();

        // This thread owns keys 2·ty and 2·ty+1, columns tx + 16·c.
        for (int r = 0; r < BWD_BR; r++) {
            float gq[NC], qq[NC];
#pragma unroll
            for (int c = 0; c < NC; c++) {
                gq[c] = dOs[r * LD + tx + 16 * c];
                qq[c] = Qs[r * LD + tx + 16 * c];
            }
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float pe = Ps[r * (BWD_BC + 1) + 2 * ty + e];
                const float dse = dSs[r * (BWD_BC + 1) + 2 * ty + e];
#pragma unroll
                for (int c = 0; c < NC; c++) {
                    dV[e][c] += pe * gq[c];
                    dK[e][c] += dse * qq[c];
                }
            }
        }
    }

#pragma unroll
    for (int e = 0; e < 2; e++) {
        const int j = k0 + 2 * ty + e;
        if (j >= seq) continue;
        float* dkr = dk + row_base(b, j, h, seq, heads, hd);
        float* dvr = dv + row_base(b, j, h, seq, heads, hd);
#pragma unroll
        for (int c = 0; c < NC; c++) {
            const int d = tx + 16 * c;
            if (d < hd) {
                dkr[d] += dK[e][c] * scale;
                dvr[d] += dV[e][c];
            }
        }
    }
}

template <int D>
__device__ __forceinline__ void attn_bwd_dq(float* dq, const float* dout, const float* q, const float* k,
                                            const float* v, const float* lse, const float* delta, int seq,
                                            int heads, int hd, float scale) {
    constexpr int LD = D + 1;
    constexpr int NC = D / 16;
    float* Qs = reinterpret_cast<float*>(moerl_smem);
    float* dOs = Qs + BWD_BR * LD;
    float* Ks = dOs + BWD_BR * LD;
    float* Vs = Ks + BWD_BC * LD;
    float* dSs = Vs + BWD_BC * LD; // BWD_BR × (BWD_BC+1)
    float* lse_s = dSs + BWD_BR * (BWD_BC + 1);
    float* delta_s = lse_s + BWD_BR;

    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const int qt = gridDim.x - 1 - blockIdx.x;
    const int h = blockIdx.y, b = blockIdx.z;
    const int q0 = qt * BWD_BR;

    load_tile<D>(Qs, q, b, q0, BWD_BR, h, seq, heads, hd);
    load_tile<D>(dOs, dout, b, q0, BWD_BR, h, seq, heads, hd);
    load_rowstats(lse_s, delta_s, lse, delta, b, h, q0, seq, heads);

    float dQ[4][NC];
#pragma unroll
    for (int rr = 0; rr < 4; rr++)
#pragma unroll
        for (int c = 0; c < NC; c++) dQ[rr][c] = 0.0f;

    const int lastKey = min(q0 + BWD_BR, seq) - 1;
    const int nkt = lastKey / BWD_BC + 1;
    for (int kt = 0; kt < nkt; kt++) {
        const int k0 = kt * BWD_BC;
        __syncthreads();
        load_tile<D>(Ks, k, b, k0, BWD_BC, h, seq, heads, hd);
        load_tile<D>(Vs, v, b, k0, BWD_BC, h, seq, heads, hd);
        __syncthreads();

        float p[4][2], ds[4][2];
        attn_scores_bwd<D>(Qs, dOs, Ks, Vs, lse_s, delta_s, q0, k0, seq, scale, p, ds);
#pragma unroll
        for (int rr = 0; rr < 4; rr++)
#pragma unroll
            for (int cc = 0; cc < 2; cc++) dSs[(ty + 16 * rr) * (BWD_BC + 1) + tx + 16 * cc] = ds[rr][cc];
        __syncthreads();

        for (int j = 0; j < BWD_BC; j++) {
            float kk[NC];
#pragma unroll
            for (int c = 0; c < NC; c++) kk[c] = Ks[j * LD + tx + 16 * c];
#pragma unroll
            for (int rr = 0; rr < 4; rr++) {
                const float dsv = dSs[(ty + 16 * rr) * (BWD_BC + 1) + j];
#pragma unroll
                for (int c = 0; c < NC; c++) dQ[rr][c] += dsv * kk[c];
            }
        }
    }

#pragma unroll
    for (int rr = 0; rr < 4; rr++) {
        const int i = q0 + ty + 16 * rr;
        if (i >= seq) continue;
        float* dqr = dq + row_base(b, i, h, seq, heads, hd);
#pragma unroll
        for (int c = 0; c < NC; c++) {
            const int d = tx + 16 * c;
            if (d < hd) dqr[d] += dQ[rr][c] * scale;
        }
    }
}

#define DECODE_THREADS 128

// attn_decode is attn_fwd for the one query at position lens[b]−1 of
// sequence b, head h: the same operations on the same values in the same
// order. sc (dynamic shared memory, maxSeq floats) holds the scores, then
// the probabilities.
template <int D>
__device__ __forceinline__ void attn_decode(float* out, const float* q, const float* kc, const float* vc,
                                            const int* lens, int maxSeq, int heads, int hd, float scale,
                                            int* status) {
    __shared__ float qs[D];
    __shared__ float corr_s, l_s;
    float* sc = reinterpret_cast<float*>(moerl_smem);

    const int h = blockIdx.x, b = blockIdx.y;
    const float* qr = q + ((size_t)b * heads + h) * hd;
    for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = d < hd ? qr[d] : 0.0f;
    int L = lens[b];
    if (L < 0 || L > maxSeq) {
        if (threadIdx.x == 0) report_status(status, STATUS_DECODE_LEN);
        L = L < 0 ? 0 : maxSeq;
    }
    __syncthreads();

    // Scores, as attn_fwd's: an FMA chain over d from 0 (its zero-filled
    // columns past hd add nothing), then the scale.
    for (int j = threadIdx.x; j < L; j += blockDim.x) {
        const float* kr = kc + (((size_t)b * maxSeq + j) * heads + h) * hd;
        float s = 0.0f;
        for (int d = 0; d < hd; d++) s = fmaf(qs[d], kr[d], s);
        sc[j] = __fmul_rn(s, scale);
    }
    __syncthreads();

    // Warp 0 runs attn_fwd's softmax for one row: lane tx (its upper half
    // repeats the lower) holds keys k0 + tx + 16·cc of each tile. Thread t
    // owns output column t, which attn_fwd's thread t % 16 owns.
    const int lane = threadIdx.x & 31, tx = lane & 15;
    const bool softmax = threadIdx.x < 32;
    const int col = threadIdx.x;
    float m = -INFINITY, l = 0.0f, o = 0.0f;
    const int nkt = L > 0 ? (L - 1) / FWD_BC + 1 : 0;
    for (int kt = 0; kt < nkt; kt++) {
        const int k0 = kt * FWD_BC;
        if (softmax) {
            float s[4], mx = -INFINITY;
#pragma unroll
            for (int cc = 0; cc < 4; cc++) {
                const int j = k0 + tx + 16 * cc;
                s[cc] = j < L ? sc[j] : -INFINITY; // j < L: j <= the query's position
                mx = fmaxf(mx, s[cc]);
            }
#pragma unroll
            for (int off = 8; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, off));
            const float mNew = fmaxf(m, mx);
            const float mUse = mNew == -INFINITY ? 0.0f : mNew;
            float rs = 0.0f;
#pragma unroll
            for (int cc = 0; cc < 4; cc++) {
                const float p = expf(__fsub_rn(s[cc], mUse));
                s[cc] = p;
                rs = __fadd_rn(rs, p);
            }
#pragma unroll
            for (int off = 8; off > 0; off >>= 1) rs = __fadd_rn(rs, __shfl_xor_sync(FULL_MASK, rs, off));
            const float corr = expf(__fsub_rn(m, mUse));
            l = fmaf(l, corr, rs);
            m = mNew;
            __syncwarp(); // every lane has read its scores before the lower half overwrites them
            if (lane < 16) {
#pragma unroll
                for (int cc = 0; cc < 4; cc++) {
                    const int j = k0 + tx + 16 * cc;
                    if (j < L) sc[j] = s[cc];
                }
            }
            if (lane == 0) corr_s = corr;
        }
        __syncthreads();
        if (col < hd) {
            o = __fmul_rn(o, corr_s);
            // attn_fwd adds all 64 keys; past L its p is 0 and adds nothing.
            const int k1 = min(k0 + FWD_BC, L);
            for (int j = k0; j < k1; j++) o = fmaf(sc[j], vc[(((size_t)b * maxSeq + j) * heads + h) * hd + col], o);
        }
        __syncthreads(); // corr_s is rewritten by the next tile
    }
    if (threadIdx.x == 0) l_s = l;
    __syncthreads();
    if (col < hd) out[((size_t)b * heads + h) * hd + col] = L > 0 ? __fmul_rn(o, 1.0f / l_s) : 0.0f;
}

// attn_bwd_delta: delta[b,h,i] = Σ_d dout·out over one head row; one warp
// per (token, head) row, 8 rows per block of 256 threads.
extern "C" __global__ void __launch_bounds__(256) attn_bwd_delta(float* delta, const float* dout, const float* out,
                                                                 int batch, int seq, int heads, int hd) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); // (b·seq + i)·heads + h
    if (row >= batch * seq * heads) return;
    const float* g = dout + (size_t)row * hd;
    const float* o = out + (size_t)row * hd;
    float s = 0.0f;
    for (int d = lane; d < hd; d += 32) s += g[d] * o[d];
    s = warp_sum(s);
    if (lane == 0) {
        const int h = row % heads;
        const int bi = row / heads; // b·seq + i
        const int b = bi / seq, i = bi - b * seq;
        delta[((size_t)b * heads + h) * seq + i] = s;
    }
}

#define ATTN_ENTRIES(D)                                                                                         \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attn_fwd_d##D(                                   \
        float* out, float* lse, const float* q, const float* k, const float* v, int seq, int heads, int hd,     \
        float scale) {                                                                                          \
        attn_fwd<D>(out, lse, q, k, v, seq, heads, hd, scale);                                                  \
    }                                                                                                           \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attn_bwd_dkdv_d##D(                              \
        float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v,                \
        const float* lse, const float* delta, int seq, int heads, int hd, float scale) {                        \
        attn_bwd_dkdv<D>(dk, dv, dout, q, k, v, lse, delta, seq, heads, hd, scale);                             \
    }                                                                                                           \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attn_bwd_dq_d##D(                                \
        float* dq, const float* dout, const float* q, const float* k, const float* v, const float* lse,         \
        const float* delta, int seq, int heads, int hd, float scale) {                                          \
        attn_bwd_dq<D>(dq, dout, q, k, v, lse, delta, seq, heads, hd, scale);                                   \
    }                                                                                                           \
    extern "C" __global__ void __launch_bounds__(DECODE_THREADS) attn_decode_d##D(                             \
        float* out, const float* q, const float* kc, const float* vc, const int* lens, int maxSeq, int heads,   \
        int hd, float scale, int* status) {                                                                     \
        attn_decode<D>(out, q, kc, vc, lens, maxSeq, heads, hd, scale, status);                                 \
    }

ATTN_ENTRIES(32)
ATTN_ENTRIES(64)
ATTN_ENTRIES(128)
