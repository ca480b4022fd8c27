// emu_lib.cc: the emulated kernels as a shared library with one C entry
// point, moerl_emu_launch, shaped like cuLaunchKernel. engine/cuda's tests
// load it (MOERL_EMU_LIB) into their fake driver, so the Go launchers run
// every kernel, with their own grids and arguments, on the CPU emulator and
// can be compared with the CPU backend end to end:
//
//   make -f kernels/ptx.mk kernels-emu-gotest
#include "emu.h"

#include "../adamw.cu"
#include "../attention.cu"
#include "../cast.cu"
#include "../embedding.cu"
#include "../gather.cu"
#include "../gemm.cu"
#include "../logprob.cu"
#include "../reduce.cu"
#include "../rmsnorm.cu"
#include "../rope.cu"
#include "../router.cu"
#include "../routing.cu"
#include "../sampling.cu"
#include "../sort.cu"
#include "../swiglu.cu"

#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>

namespace {

using Entry = std::function<void(void**)>;

template <class... A, size_t... I> void invoke(void (*f)(A...), void** p, std::index_sequence<I...>) {
    f(*reinterpret_cast<std::remove_cv_t<A>*>(p[I])...);
}

// wrap turns a kernel into a call that reads its arguments the way the
// driver does: params[i] points to argument i, stored at its own size.
template <class... A> Entry wrap(void (*f)(A...)) {
    return [f](void** p) { invoke(f, p, std::index_sequence_for<A...>{}); };
}

#define K(name) {#name, wrap(name)}

const std::unordered_map<std::string, Entry>& table() {
    static const std::unordered_map<std::string, Entry> t = {
        K(adamw), K(add_f32), K(router_load), K(sgemm_grouped), K(sgemm_grouped_t), K(sgemm_grouped_tf32), K(sgemm_grouped_t_tf32), K(sgemm_tiled_tf32), K(sgemm_grouped_swiglu), K(sgemm_grouped_swiglu_tf32), K(sgemm_grouped_swiglu_bwd), K(sgemm_grouped_swiglu_bwd_tf32), K(attn_bwd_delta), K(combine_bwd), K(combine_fwd), K(dispatch_finalize),
        K(dispatch_offsets), K(embedding_bwd_apply), K(embedding_fwd), K(entropy), K(entropy_bwd), K(gather_bwd), K(gather_fwd),
        K(logprob_bwd), K(logprob_fused), K(logprob_fwd), K(rmsnorm_bwd), K(rmsnorm_dw_reduce), K(rmsnorm_fwd), K(residual_rmsnorm), K(rope_bwd),
        K(rope_fwd), K(router_replay), K(router_topk_bwd), K(router_topk_fwd), K(sample_rows), K(scale_f32), K(scatter_rows),
        K(sgemm_tiled), K(softmax_bwd), K(sort_count), K(sort_keys), K(sort_place), K(sort_scan),
        K(sumsq_final), K(sumsq_partial), K(swiglu_bwd), K(swiglu_fwd),
        K(cast_f32_bf16), K(cast_bf16_f32), K(sgemm_tiled_bf16), K(sgemm_grouped_bf16), K(sgemm_grouped_t_bf16),
        K(sgemm_grouped_swiglu_bf16), K(sgemm_grouped_swiglu_bwd_bf16), K(sgemm_grouped_w16), K(sgemm_grouped_w16_tf32),
        K(sgemm_grouped_w16_bf16), K(sgemm_grouped_swiglu_w16), K(sgemm_grouped_swiglu_w16_tf32),
        K(sgemm_grouped_swiglu_w16_bf16), K(sgemm_grouped_a16_w16_bf16),
        K(sgemm_grouped_swiglu_w16_s16_bf16), K(sgemm_grouped_t_a16_bf16), K(sgemm_grouped_t_b16_bf16),
        K(sgemm_grouped_t_a16_b16_bf16), K(sgemm_grouped_swiglu_bwd_a16_w16_d16_bf16), K(combine_bwd_d16),
        K(sgemm_grouped_swiglu_w16_g16_s16_bf16), K(sgemm_grouped_swiglu_bwd_a16_w16_g16_d16_bf16),
        K(attn_fwd_d32), K(attn_bwd_dkdv_d32), K(attn_bwd_dq_d32), K(attn_decode_d32),
        K(attn_fwd_d64), K(attn_bwd_dkdv_d64), K(attn_bwd_dq_d64), K(attn_decode_d64),
        K(attn_fwd_d128), K(attn_bwd_dkdv_d128), K(attn_bwd_dq_d128), K(attn_decode_d128),
    };
    return t;
}

} // namespace

// moerl_emu_launch runs kernel name over the grid and returns 0, or 1 when
// no kernel has that name. It returns when the kernel has finished.
extern "C" int moerl_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                unsigned bz, unsigned smem, void** params) {
    auto it = table().find(name);
    if (it == table().end()) return 1;
    const Entry& e = it->second;
    emu::launch(dim3(gx, gy, gz), dim3(bx, by, bz), smem, [&] { e(params); });
    return 0;
}
