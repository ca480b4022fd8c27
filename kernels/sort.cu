// sort.cu: a stable counting sort of item indices by a small integer key,
// one 8-bit digit per pass (a least-significant-digit radix sort over several
// passes).
//
// RouterDispatch sorts the rows·k (token, slot) assignments by expert, and
// EmbeddingBackward sorts token positions by token id, so that each output row
// is then accumulated by one thread block in increasing position order: no
// float atomics, the same result on every run, and the same summation order
// as the CPU's sequential loop. A pass is three kernels:
//
//   sort_count  each block counts the digits of its contiguous segment;
//   sort_scan   one block turns the digit-major count table into each
//               (digit, block)'s first output slot (an exclusive prefix sum);
//   sort_place  one warp per segment walks its items in order and writes each
//               to its slot, ranking equal digits within a warp by lane, so
//               equal keys keep their input order.
//
// Integer counting only; nothing here accumulates into caller memory.
//
// CPU twin: engine.Backend.RouterDispatch and engine.Backend.EmbeddingBackward
// (this is their sorting step, which has no Backend method of its own).
#include "common.cuh"

#define SORT_RADIX 256

__device__ __forceinline__ int sort_digit(const int* keys, int item, int shift) {
    return (keys[item] >> shift) & (SORT_RADIX - 1);
}

// sort_keys: keys[i] = in[i] when it lies in [0, limit), else limit (and
// the status word gets code). Sorting the sanitized keys keeps bad entries in
// one run after every valid key, so they can never split a valid run.
extern "C" __global__ void __launch_bounds__(256) sort_keys(const int* in, int* keys, int n, int limit,
                                                            int* status, int code) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        int v = in[i];
        bool ok = v >= 0 && v < limit;
        if (!ok) report_status(status, code);
        keys[i] = ok ? v : limit;
    }
}

// sort_count: counts[digit*gridDim.x + blockIdx.x] = occurrences of digit in
// items [blockIdx.x*seg, min(n, (blockIdx.x+1)*seg)) of the current order
// (in_order, or the identity when in_order is null). 256 threads.
extern "C" __global__ void __launch_bounds__(256) sort_count(const int* keys, const int* in_order, int n,
                                                             int shift, int seg, int* counts) {
    __shared__ int hist[SORT_RADIX];
    for (int d = threadIdx.x; d < SORT_RADIX; d += blockDim.x) hist[d] = 0;
    __syncthreads();
    const int begin = blockIdx.x * seg;
    const int end = min(n, begin + seg);
    for (int idx = begin + threadIdx.x; idx < end; idx += blockDim.x) {
        int item = in_order ? in_order[idx] : idx;
        atomicAdd(&hist[sort_digit(keys, item, shift)], 1);
    }
    __syncthreads();
    for (int d = threadIdx.x; d < SORT_RADIX; d += blockDim.x) counts[d * gridDim.x + blockIdx.x] = hist[d];
}

// sort_scan: replaces counts[0..len) by its exclusive prefix sum. One block
// of 256 threads walks the table in chunks.
extern "C" __global__ void __launch_bounds__(256) sort_scan(int* counts, int len) {
    __shared__ int red[32];
    int carry = 0;
    for (int c0 = 0; c0 < len; c0 += blockDim.x) {
        int i = c0 + threadIdx.x;
        int v = i < len ? counts[i] : 0;
        int total;
        int incl = block_inclusive_scan_int(v, red, &total);
        if (i < len) counts[i] = carry + incl - v;
        carry += total;
    }
}

// sort_place: one warp per segment (launched with 32 threads and the same
// grid and seg as sort_count) writes out_order[slot] = item.
extern "C" __global__ void __launch_bounds__(32) sort_place(const int* keys, const int* in_order, int* out_order,
                                                            int n, int shift, int seg, const int* offsets) {
    __shared__ int cur[SORT_RADIX];
    const int lane = threadIdx.x;
    for (int d = lane; d < SORT_RADIX; d += 32) cur[d] = offsets[d * gridDim.x + blockIdx.x];
    __syncwarp();
    const int begin = blockIdx.x * seg;
    const int end = min(n, begin + seg);
    const unsigned lt = (1u << lane) - 1u;
    for (int base = begin; base < end; base += 32) {
        const int idx = base + lane;
        const bool valid = idx < end;
        int item = 0, digit = SORT_RADIX + lane; // invalid lanes match nobody
        if (valid) {
            item = in_order ? in_order[idx] : idx;
            digit = sort_digit(keys, item, shift);
        }
        const unsigned peers = __match_any_sync(FULL_MASK, digit);
        if (valid) out_order[cur[digit] + __popc(peers & lt)] = item;
        __syncwarp();
        // The highest lane of each group of equal digits advances its cursor.
        if (valid && lane == 31 - __clz(peers)) cur[digit] += __popc(peers);
        __syncwarp();
    }
}
