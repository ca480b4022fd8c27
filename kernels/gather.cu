// gather.cu: moving token rows to and from expert order, and mixing the
// expert outputs back per token.
//
// gather_fwd:  out[s] = x[perm[s]]                          (overwrites out)
// gather_bwd:  dx[t] += dout[inv[t·k+j]] for j = 0..k−1     (accumulates)
// combine_fwd: out[t] += weights[t·k+j]·y[inv[t·k+j]]      (accumulates)
// combine_bwd: dy[inv[t·k+j]] += weights[t·k+j]·dout[t] and
//              dweights[t·k+j] += dout[t]·y[inv[t·k+j]]     (accumulate)
// scatter_rows: dst[idx[i]] = src[i]                        (overwrites rows)
//
// Every backward is a gather over inv, one block per token, so each output
// element has exactly one writer and adds its terms in j order, the CPU's
// order: no atomics, the same bits on every run. (combine_bwd writes dy rows
// through inv, which RouterDispatch makes a permutation, so its rows are
// disjoint too.) Indices out of range are reported through the status word
// and skipped.
//
// CPU twin: engine.Backend.Gather, engine.Backend.GatherBackward,
// engine.Backend.Combine, engine.Backend.CombineBackward,
// engine.Backend.ScatterRows.
#include "common.cuh"

// gather_fwd: one block per output row s.
extern "C" __global__ void __launch_bounds__(256) gather_fwd(float* out, const float* x, const int* perm, int n,
                                                             int dim, int xrows, int* status) {
    const int s = blockIdx.x;
    if (s >= n) return;
    const int src = perm[s];
    const bool ok = src >= 0 && src < xrows;
    if (!ok && threadIdx.x == 0) report_status(status, STATUS_GATHER_INDEX);
    float* o = out + (size_t)s * dim;
    const float* xr = x + (size_t)(ok ? src : 0) * dim;
    for (int d = threadIdx.x; d < dim; d += blockDim.x) o[d] = ok ? xr[d] : 0.0f;
}

// inv_ok checks the k slots of token t and reports a bad one.
__device__ __forceinline__ bool inv_ok(const int* inv, int t, int k, int nslots, int* status) {
    bool ok = true;
    for (int j = 0; j < k; j++) {
        const int s = inv[(size_t)t * k + j];
        ok = ok && s >= 0 && s < nslots;
    }
    if (!ok && threadIdx.x == 0) report_status(status, STATUS_GATHER_INDEX);
    return ok;
}

// gather_bwd: one block per token t.
extern "C" __global__ void __launch_bounds__(256) gather_bwd(float* dx, const float* dout, const int* inv, int rows,
                                                             int k, int dim, int nslots, int* status) {
    const int t = blockIdx.x;
    if (t >= rows || !inv_ok(inv, t, k, nslots, status)) return;
    const int* it = inv + (size_t)t * k;
    float* dxr = dx + (size_t)t * dim;
    for (int d = threadIdx.x; d < dim; d += blockDim.x) {
        float acc = dxr[d];
        for (int j = 0; j < k; j++) acc += dout[(size_t)it[j] * dim + d];
        dxr[d] = acc;
    }
}

// combine_fwd: one block per token t.
extern "C" __global__ void __launch_bounds__(256) combine_fwd(float* out, const float* y, const float* weights,
                                                              const int* inv, int rows, int k, int dim, int nslots,
                                                              int* status) {
    const int t = blockIdx.x;
    if (t >= rows || !inv_ok(inv, t, k, nslots, status)) return;
    const int* it = inv + (size_t)t * k;
    const float* wt = weights + (size_t)t * k;
    float* o = out + (size_t)t * dim;
    for (int d = threadIdx.x; d < dim; d += blockDim.x) {
        float acc = o[d];
        for (int j = 0; j < k; j++) acc += wt[j] * y[(size_t)it[j] * dim + d];
        o[d] = acc;
    }
}

// combine_bwd: one block of 256 threads per token t; the block's threads
// update the k dy rows, then warp w computes the dot products of slots
// j = w, w+8, ... combine_bwd_d16 keeps dy in bf16 (each row is one slot's,
// added to once: bf16 of the float sum, as a float dy rounded later).
template <class TD>
__device__ __forceinline__ void combine_bwd_body(TD* dy, float* dweights, const float* dout, const float* y,
                                                 const float* weights, const int* inv, int rows, int k, int dim,
                                                 int nslots, int* status) {
    const int t = blockIdx.x;
    if (t >= rows || !inv_ok(inv, t, k, nslots, status)) return;
    const int* it = inv + (size_t)t * k;
    const float* g = dout + (size_t)t * dim;
    for (int j = 0; j < k; j++) {
        const float w = weights[(size_t)t * k + j];
        TD* dyr = dy + (size_t)it[j] * dim;
        for (int d = threadIdx.x; d < dim; d += blockDim.x) store_elem(dyr + d, load_elem(dyr[d]) + w * g[d]);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int j = warp; j < k; j += nw) {
        const float* yr = y + (size_t)it[j] * dim;
        float s = 0.0f;
        for (int d = lane; d < dim; d += 32) s += g[d] * yr[d];
        s = warp_sum(s);
        if (lane == 0) dweights[(size_t)t * k + j] += s;
    }
}

#define COMBINE_BWD_ARGS(TD)                                                                                       \
    TD *dy, float *dweights, const float *dout, const float *y, const float *weights, const int *inv, int rows, \
        int k, int dim, int nslots, int *status

extern "C" __global__ void __launch_bounds__(256) combine_bwd(COMBINE_BWD_ARGS(float)) {
    combine_bwd_body(dy, dweights, dout, y, weights, inv, rows, k, dim, nslots, status);
}
extern "C" __global__ void __launch_bounds__(256) combine_bwd_d16(COMBINE_BWD_ARGS(bf16)) {
    combine_bwd_body(dy, dweights, dout, y, weights, inv, rows, k, dim, nslots, status);
}

// scatter_rows: one block per source row i.
extern "C" __global__ void __launch_bounds__(256) scatter_rows(float* dst, const float* src, const int* idx, int n,
                                                               int dim, int dstRows, int* status) {
    const int i = blockIdx.x;
    if (i >= n) return;
    const int r = idx[i];
    if (r < 0 || r >= dstRows) {
        if (threadIdx.x == 0) report_status(status, STATUS_GATHER_INDEX);
        return;
    }
    float* o = dst + (size_t)r * dim;
    const float* s = src + (size_t)i * dim;
    for (int d = threadIdx.x; d < dim; d += blockDim.x) o[d] = s[d];
}
