// embedding.cu: token embedding lookup and its backward.
//
// Forward: out[i] = table[ids[i]] (rows rows of dim floats), overwriting out.
// Backward: dtable[ids[i]] += dout[i], accumulating. The backward is
// deterministic without float atomics: sort.cu first sorts the positions i
// stably by id (sort_keys maps a bad id to vocab, after every valid one), then embedding_bwd_apply gives each distinct id to one block,
// which adds that id's rows in increasing i, starting from the existing
// dtable row. That is the CPU's summation order (for i in order:
// dtable[ids[i]] += dout[i]), so the two agree to the bit. An id outside
// [0, vocab) is reported through the status word and skipped.
//
// CPU twin: engine.Backend.Embedding, engine.Backend.EmbeddingBackward.
#include "common.cuh"

// embedding_fwd: one block per row.
extern "C" __global__ void __launch_bounds__(256) embedding_fwd(float* out, const float* table, const int* ids,
                                                                int rows, int dim, int vocab, int* status) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    const int id = ids[r];
    const bool ok = id >= 0 && id < vocab;
    if (!ok && threadIdx.x == 0) report_status(status, STATUS_EMBED_ID);
    float* o = out + (size_t)r * dim;
    const float* t = table + (size_t)(ok ? id : 0) * dim;
    for (int d = threadIdx.x; d < dim; d += blockDim.x) o[d] = ok ? t[d] : 0.0f;
}

// embedding_bwd_apply: one block per sorted position s; the block at the
// first position of each run of equal keys accumulates the whole run. keys
// are the ids as sanitized by sort_keys, order the stable sort of positions.
extern "C" __global__ void __launch_bounds__(256) embedding_bwd_apply(float* dtable, const float* dout,
                                                                      const int* keys, const int* order,
                                                                      int rows, int dim, int vocab) {
    const int s = blockIdx.x;
    if (s >= rows) return;
    const int id = keys[order[s]];
    if (id >= vocab) return; // bad ids (already reported by sort_keys)
    if (s > 0 && keys[order[s - 1]] == id) return; // not the first of its run
    int e = s + 1;
    while (e < rows && keys[order[e]] == id) e++;
    float* dt = dtable + (size_t)id * dim;
    for (int d = threadIdx.x; d < dim; d += blockDim.x) {
        float acc = dt[d];
        for (int t = s; t < e; t++) acc += dout[(size_t)order[t] * dim + d];
        dt[d] = acc;
    }
}
