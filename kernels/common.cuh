// common.cuh: helpers shared by every kernel family.
//
// Reductions here are deterministic: a warp reduces with an xor butterfly
// (each step adds the same pair of values on both partner lanes, and float
// addition is commutative, so every lane ends with the same bits), and a block
// reduces its warps' partials in warp order. The result depends on the block
// size, which the Go launchers fix per kernel, never on the device or on
// scheduling.
//
// Kernels that read indices from device memory (token ids, expert ids,
// permutations, targets, cache lengths) check their range and, instead of
// reading or writing out of bounds, record the first problem in a status word
// that Backend.Sync reports. The codes below are mirrored in engine/cuda.
#ifndef MOERL_COMMON_CUH
#define MOERL_COMMON_CUH

#define FULL_MASK 0xffffffffu

enum {
    STATUS_OK = 0,
    STATUS_EMBED_ID = 1,    // Embedding/EmbeddingBackward: id outside [0, vocab)
    STATUS_GATHER_INDEX = 2, // Gather/GatherBackward/Combine*/ScatterRows: index out of range
    STATUS_TARGET = 3,      // TokenLogProbs*: target outside [0, vocab)
    STATUS_EXPERT = 4,      // RouterDispatch/RouterTopKBackward: expert outside [0, nExperts)
    STATUS_DECODE_LEN = 5,  // AttentionDecode: lens[b] outside [0, maxSeq]
    STATUS_GROUP_OFFSETS = 6 // GemmGrouped*/RouterLoad: offsets that fall or pass the rows
};

#ifndef MOERL_EMU
// One dynamic shared-memory array per module, reinterpreted by each kernel
// (declaring it with different element types in one file is an error).
extern __shared__ __align__(16) unsigned char moerl_smem[];
#endif

// bf16 is the storage type of a bfloat16 element: its raw bits, the upper
// half of a float32. bf16_bits rounds to nearest, ties to even (a NaN kept
// quiet, past the largest finite value to ±Inf), and bf16_float widens
// exactly; they are engine.BF16Bits and engine.BF16Float bit for bit, so a
// Cast agrees with the CPU's on every input, NaNs included.
typedef unsigned short bf16;

__device__ __forceinline__ bf16 bf16_bits(float x) {
    unsigned b = __float_as_uint(x);
    if ((b & 0x7f800000u) == 0x7f800000u) {
        if (b & 0x007fffffu) b |= 0x00400000u;
        return (bf16)(b >> 16);
    }
    b += 0x7fffu + ((b >> 16) & 1u);
    return (bf16)(b >> 16);
}

__device__ __forceinline__ float bf16_float(bf16 h) { return __uint_as_float((unsigned)h << 16); }

// load_elem and store_elem read and write an element of a tensor stored as
// float or bf16, as float: the one place a kernel's storage type meets its
// arithmetic. Loading bf16 widens exactly; storing rounds to nearest even
// (bf16_bits), the value a bf16 GEMM's staging rounds the float to, so a
// tensor that only such GEMMs read can be stored narrow with no product
// changed.
__device__ __forceinline__ float load_elem(float v) { return v; }
__device__ __forceinline__ float load_elem(bf16 v) { return bf16_float(v); }
__device__ __forceinline__ void store_elem(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_elem(bf16* p, float v) { *p = bf16_bits(v); }

__device__ __forceinline__ void report_status(int* status, int code) {
    atomicCAS(status, 0, code);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// block_sum returns the sum of v over the block to every thread. Every
// thread of the block must call it; blockDim.x must be a multiple of 32.
// red must hold 32 elements of shared memory.
__device__ __forceinline__ float block_sum(float v, float* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); // red may still be read by a previous call
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = lane < nw ? red[lane] : 0.0f;
    return warp_sum(t);
}

__device__ __forceinline__ double block_sum_d(double v, double* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    double t = lane < nw ? red[lane] : 0.0;
    return warp_sum_d(t);
}

__device__ __forceinline__ float block_max(float v, float* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = lane < nw ? red[lane] : -INFINITY;
    return warp_max(t);
}

// block_inclusive_scan returns the inclusive prefix sum of v in thread order
// and sets *total to the block's sum (the same bits as the last thread's
// prefix). red must hold 32 floats of shared memory.
__device__ __forceinline__ float block_inclusive_scan(float v, float* red, float* total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nw = blockDim.x >> 5;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        float n = __shfl_up_sync(FULL_MASK, v, o);
        if (lane >= o) v += n;
    }
    __syncthreads();
    if (lane == 31) red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float w = lane < nw ? red[lane] : 0.0f;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            float n = __shfl_up_sync(FULL_MASK, w, o);
            if (lane >= o) w += n;
        }
        if (lane < nw) red[lane] = w; // inclusive prefix of warp totals
    }
    __syncthreads();
    if (warp > 0) v += red[warp - 1];
    *total = red[nw - 1];
    return v;
}

// block_inclusive_scan_d is block_inclusive_scan in float64.
__device__ __forceinline__ double block_inclusive_scan_d(double v, double* red, double* total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nw = blockDim.x >> 5;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        double n = __shfl_up_sync(FULL_MASK, v, o);
        if (lane >= o) v += n;
    }
    __syncthreads();
    if (lane == 31) red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        double w = lane < nw ? red[lane] : 0.0;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            double n = __shfl_up_sync(FULL_MASK, w, o);
            if (lane >= o) w += n;
        }
        if (lane < nw) red[lane] = w;
    }
    __syncthreads();
    if (warp > 0) v += red[warp - 1];
    *total = red[nw - 1];
    return v;
}

// block_inclusive_scan_int is block_inclusive_scan for ints.
__device__ __forceinline__ int block_inclusive_scan_int(int v, int* red, int* total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nw = blockDim.x >> 5;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int n = __shfl_up_sync(FULL_MASK, v, o);
        if (lane >= o) v += n;
    }
    __syncthreads();
    if (lane == 31) red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        int w = lane < nw ? red[lane] : 0;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            int n = __shfl_up_sync(FULL_MASK, w, o);
            if (lane >= o) w += n;
        }
        if (lane < nw) red[lane] = w;
    }
    __syncthreads();
    if (warp > 0) v += red[warp - 1];
    *total = red[nw - 1];
    return v;
}

// row_lse returns log Σ_i exp(x[i]/T) over n elements as max + log(sum),
// the exponentials summed in float64 (the CPU's logSumExp), with the row's
// maximum of x/T in *rowmax. Every thread of the block must call it and gets
// the same bits. TokenLogProbs (T = 1, and x/1 is x) and Sample use it with
// the same block size, so they agree to the bit on the same logits.
__device__ __forceinline__ float row_lse(const float* x, int n, float T, float* red, double* redd,
                                         float* rowmax) {
    float m = -INFINITY;
    for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, x[i] / T);
    m = block_max(m, red);
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += (double)expf(x[i] / T - m);
    s = block_sum_d(s, redd);
    *rowmax = m;
    return m + (float)log(s);
}

#endif
