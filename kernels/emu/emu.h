// emu.h: a small CPU emulator for the CUDA subset that kernels/*.cu use, so
// their logic can be tested on a machine without a GPU (make -f
// kernels/ptx.mk kernels-emu-test).
//
// Each block runs on one OS thread, its CUDA threads as ucontext fibers
// scheduled cooperatively: a fiber runs until it reaches a barrier
// (__syncthreads, or the warp barrier inside every warp-level intrinsic) or
// returns. A barrier releases when every live thread of its scope has
// arrived; if live threads wait at different barriers of one warp or block,
// or a warp intrinsic finds a lane missing, the emulator reports a divergence
// and aborts. Because fibers in one barrier interval run in thread order,
// reading shared memory that a later thread writes in the same interval
// returns the stale value: a missing __syncthreads shows up as a wrong
// result. Blocks run one after another, so `static` storage stands in for
// __shared__ memory.
//
// What this cannot show: timing, memory-model subtleties beyond barrier
// intervals, float rounding of the GPU's intrinsics, or register and shared
// memory limits. It checks indexing, synchronization structure and the
// algorithms.
#ifndef MOERL_EMU_H
#define MOERL_EMU_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <type_traits>
#include <vector>

#define MOERL_EMU 1

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace emu {

enum Wait { NONE, BLOCK, WARP };

struct Fiber {
    ucontext_t ctx;
    bool done = false;
    Wait wait = NONE;
    unsigned tid = 0;
};

constexpr size_t kStackBytes = 256 * 1024;

struct State {
    std::vector<Fiber> fibers;
    std::vector<char*> stacks; // one per thread slot, reused by every block (never zeroed: cheap)
    ucontext_t sched;
    Fiber* cur = nullptr;
    std::function<void()> body;
    uint64_t slots[32 * 32]; // per warp, per lane exchange
    std::vector<unsigned char> smem;
};

inline State& st() {
    static State s;
    return s;
}

} // namespace emu

inline dim3 threadIdx, blockIdx, blockDim, gridDim;
#define moerl_smem (emu::st().smem.data())

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)

using std::max;
using std::min;

namespace emu {

[[noreturn]] inline void die(const char* what) {
    std::fprintf(stderr, "emu: %s (block %u,%u,%u thread %u)\n", what, blockIdx.x, blockIdx.y, blockIdx.z,
                 threadIdx.x);
    std::abort();
}

inline void yield(Wait w) {
    State& s = st();
    s.cur->wait = w;
    swapcontext(&s.cur->ctx, &s.sched);
}

inline void trampoline() {
    State& s = st();
    s.body();
    s.cur->done = true;
    s.cur->wait = NONE;
    swapcontext(&s.cur->ctx, &s.sched);
}

inline unsigned lane() { return threadIdx.x & 31; }
inline unsigned warp() { return threadIdx.x >> 5; }

// live_mask is the set of lanes of this thread's warp that have not returned.
inline unsigned live_mask() {
    State& s = st();
    unsigned m = 0, w = warp();
    for (unsigned l = 0; l < 32; l++) {
        unsigned t = w * 32 + l;
        if (t < s.fibers.size() && !s.fibers[t].done) m |= 1u << l;
    }
    return m;
}

inline void check_mask(unsigned mask) {
    unsigned live = live_mask();
    if ((mask & live) != mask) die("warp intrinsic names a lane that has returned");
}

// exchange publishes v for this lane, waits for the warp, and returns every
// lane's published value through out.
inline void exchange(uint64_t v, uint64_t* out) {
    State& s = st();
    s.slots[warp() * 32 + lane()] = v;
    yield(WARP);
    std::memcpy(out, &s.slots[warp() * 32], 32 * sizeof(uint64_t));
    yield(WARP); // nobody overwrites a slot before every lane has read it
}

template <class T> inline uint64_t bits(T v) {
    uint64_t u = 0;
    std::memcpy(&u, &v, sizeof(T));
    return u;
}
template <class T> inline T unbits(uint64_t u) {
    T v;
    std::memcpy(&v, &u, sizeof(T));
    return v;
}

inline void run_block(unsigned nthreads, const std::function<void()>& body) {
    State& s = st();
    s.fibers.assign(nthreads, Fiber{});
    while (s.stacks.size() < nthreads) s.stacks.push_back(new char[kStackBytes]);
    s.body = body;
    for (unsigned t = 0; t < nthreads; t++) {
        Fiber& f = s.fibers[t];
        f.tid = t;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = s.stacks[t];
        f.ctx.uc_stack.ss_size = kStackBytes;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, trampoline, 0);
    }
    for (;;) {
        bool any = false;
        for (auto& f : s.fibers) {
            if (f.done || f.wait != NONE) continue;
            any = true;
            s.cur = &f;
            threadIdx = dim3(f.tid);
            swapcontext(&s.sched, &f.ctx);
        }
        // Everyone is done or waiting: release a complete warp barrier first.
        bool released = false;
        for (unsigned w = 0; w * 32 < nthreads; w++) {
            bool all = true, some = false, other = false;
            for (unsigned l = 0; l < 32 && w * 32 + l < nthreads; l++) {
                Fiber& f = s.fibers[w * 32 + l];
                if (f.done) continue;
                if (f.wait == WARP) some = true;
                else { all = false; if (f.wait == BLOCK) other = true; }
            }
            if (some && all) {
                for (unsigned l = 0; l < 32 && w * 32 + l < nthreads; l++) s.fibers[w * 32 + l].wait = NONE;
                released = true;
            } else if (some && other) {
                threadIdx = dim3(w * 32);
                die("divergence: lanes of one warp wait at a warp intrinsic and at __syncthreads");
            }
        }
        if (released) continue;
        bool all = true, some = false;
        for (auto& f : s.fibers) {
            if (f.done) continue;
            if (f.wait == BLOCK) some = true;
            else all = false;
        }
        if (some && all) {
            for (auto& f : s.fibers) f.wait = NONE;
            continue;
        }
        if (!any && !some) break; // every fiber returned
        if (!any) die("deadlock: threads wait at barriers that cannot complete");
    }
}

// launch runs kernel(args...) over the grid, block by block.
template <class K, class... A>
inline void launch(dim3 grid, dim3 block, size_t smem, K kernel, A... args) {
    if (block.y != 1 || block.z != 1) die("emu: only 1-D blocks");
    if (block.x == 0 || block.x > 1024) die("emu: bad block size");
    State& s = st();
    s.smem.assign(smem + 16, 0xA5); // poisoned, like uninitialized shared memory
    gridDim = grid;
    blockDim = block;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx = dim3(x, y, z);
                run_block(block.x, [&] { kernel(args...); });
            }
}

} // namespace emu

inline void __syncthreads() { emu::yield(emu::BLOCK); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    emu::check_mask(mask);
    emu::yield(emu::WARP);
}

template <class T> inline T __shfl_sync(unsigned mask, T v, int src) {
    emu::check_mask(mask);
    uint64_t all[32];
    emu::exchange(emu::bits(v), all);
    return emu::unbits<T>(all[src & 31]);
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int m) {
    emu::check_mask(mask);
    uint64_t all[32];
    emu::exchange(emu::bits(v), all);
    return emu::unbits<T>(all[(emu::lane() ^ m) & 31]);
}
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned d) {
    emu::check_mask(mask);
    uint64_t all[32];
    emu::exchange(emu::bits(v), all);
    int src = (int)emu::lane() - (int)d;
    return src < 0 ? v : emu::unbits<T>(all[src]);
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned d) {
    emu::check_mask(mask);
    uint64_t all[32];
    emu::exchange(emu::bits(v), all);
    unsigned src = emu::lane() + d;
    return src > 31 ? v : emu::unbits<T>(all[src]);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    emu::check_mask(mask);
    uint64_t all[32];
    emu::exchange(pred ? 1 : 0, all);
    unsigned r = 0;
    for (int l = 0; l < 32; l++)
        if ((mask >> l & 1u) && all[l]) r |= 1u << l;
    return r;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline unsigned __match_any_sync(unsigned mask, int v) {
    emu::check_mask(mask);
    uint64_t all[32];
    emu::exchange((uint64_t)(uint32_t)v, all);
    unsigned r = 0;
    for (int l = 0; l < 32; l++)
        if ((mask >> l & 1u) && all[l] == (uint64_t)(uint32_t)v) r |= 1u << l;
    return r;
}

inline int atomicAdd(int* p, int v) { int o = *p; *p = o + v; return o; }
inline int atomicCAS(int* p, int cmp, int v) { int o = *p; if (o == cmp) *p = v; return o; }
inline int atomicMin(int* p, int v) { int o = *p; *p = std::min(o, v); return o; }
inline int atomicMax(int* p, int v) { int o = *p; *p = std::max(o, v); return o; }

// The round-to-nearest arithmetic intrinsics that kernels use where a product
// must not be contracted into an FMA. The emulator is built without
// contraction (no FMA on baseline x86-64), so the plain operations are exact
// stand-ins; fmaf is <cmath>'s correctly rounded fused multiply-add.
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }

inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __clz(unsigned v) { return v ? __builtin_clz(v) : 32; }

// __nv_bfloat16 (cuda_bf16.h): the bits of a bfloat16, converted to
// nearest even as the GPU's cvt.rn.bf16.f32 does (a NaN becomes a quiet
// NaN; the GPU's is the canonical one, which no GEMM input here is).
struct __nv_bfloat16 {
    unsigned short x;
};
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7f800000u) == 0x7f800000u) return {(unsigned short)((u | ((u & 0x007fffffu) ? 0x00400000u : 0u)) >> 16)};
    u += 0x7fffu + ((u >> 16) & 1u);
    return {(unsigned short)(u >> 16)};
}
inline float __bfloat162float(__nv_bfloat16 h) { return __uint_as_float((unsigned)h.x << 16); }

// The WMMA subset the tensor-core GEMM tiles use (nvcuda::wmma, m16n16k8
// with precision::tf32 and m16n16k16 with __nv_bfloat16). On a GPU a fragment is spread over the warp's lanes;
// here every thread holds the whole tile, so num_elements is the tile's
// size and an elementwise loop over x[] (the TF32 rounding) touches every
// element, as the warp does together. mma_sync adds the products in k
// order in fp32; the tensor cores' order and internal rounding differ, so
// tests compare with a tolerance, not bits. The loads and stores read and
// write whole tiles: each lane writes the same values.
namespace nvcuda {
namespace wmma {
struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
namespace precision {
struct tf32 {};
}
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
    static constexpr int rows = std::is_same_v<Use, matrix_b> ? K : M;
    static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
    static constexpr int num_elements = rows * cols;
    float x[num_elements]; // row-major
};

inline float elem_float(float v) { return v; }
inline float elem_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class Use, int M, int N, int K, class T, class L, class E>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const E* p, unsigned ldm) {
    using F = fragment<Use, M, N, K, T, L>;
    for (int r = 0; r < F::rows; r++)
        for (int c = 0; c < F::cols; c++)
            f.x[r * F::cols + c] = elem_float(std::is_same_v<L, row_major> ? p[r * ldm + c] : p[c * ldm + r]);
}

template <int M, int N, int K>
inline void fill_fragment(fragment<accumulator, M, N, K, float>& f, float v) {
    for (auto& x : f.x) x = v;
}

template <int M, int N, int K, class T, class LA, class LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
                     const fragment<matrix_b, M, N, K, T, LB>& b,
                     const fragment<accumulator, M, N, K, float>& c) {
    float out[M * N];
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = c.x[i * N + j];
            for (int p = 0; p < K; p++) s += a.x[i * K + p] * b.x[p * N + j];
            out[i * N + j] = s;
        }
    std::memcpy(d.x, out, sizeof out);
}

template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t l) {
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++) (l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * N + c];
}

// __float_to_tf32 rounds to 10 mantissa bits, to nearest with ties away from
// zero (PTX cvt.rna.tf32.f32); infinities and NaN pass unchanged.
inline float __float_to_tf32(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
    std::memcpy(&f, &u, 4);
    return f;
}
} // namespace wmma
} // namespace nvcuda

#endif
