// emu_test.cc: runs every kernel of kernels/*.cu on the CPU emulator (emu.h)
// with the launch shapes engine/cuda uses, and compares the results with
// plain float64 references written from the engine.Backend contract.
//
//   make -f kernels/ptx.mk kernels-emu-test
//
// It checks indexing, barriers, warp intrinsics and the algorithms (sort
// stability, online softmax, top-k ties, the sampler's selection rule), not
// the GPU's rounding or speed: that needs the GPU tests in engine/cuda.
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

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <string>

static int failures = 0;
static std::mt19937_64 rng(20251126);

#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            failures++;                                                                                      \
            std::printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                \
            std::printf(__VA_ARGS__);                                                                        \
            std::printf("\n");                                                                               \
        }                                                                                                    \
    } while (0)

static std::vector<float> randn(size_t n, float std = 1.0f) {
    std::normal_distribution<float> d(0.0f, std);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}
static std::vector<int> randint(size_t n, int lo, int hi) {
    std::uniform_int_distribution<int> d(lo, hi - 1);
    std::vector<int> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// relerr is ‖a − b‖ / ‖b‖ (or ‖a‖ when b is zero), NaN when a has a NaN.
template <class A, class B> static double relerr(const A& a, const B& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); i++) {
        if (std::isnan((double)a[i])) return NAN;
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

#define CHECK_CLOSE(name, got, want, tol)                                                                    \
    do {                                                                                                     \
        double e_ = relerr(got, want);                                                                       \
        CHECK(e_ <= (tol), "%s: relative error %.3g > %.1g", name, e_, (double)(tol));                       \
        if (e_ == e_) std::printf("  %-34s rel err %.2e\n", name, e_);                                      \
    } while (0)

static unsigned cdiv(long a, long b) { return (unsigned)((a + b - 1) / b); }
static unsigned block_for(int dim) { return (unsigned)std::min(256, std::max(32, (dim + 31) / 32 * 32)); }

static const float NaN = std::nanf("");

// ---------------------------------------------------------------- reduce

static void test_reduce() {
    std::printf("reduce\n");
    int n = 5000;
    auto y = randn(n), x = randn(n), y0 = y;
    emu::launch(dim3(cdiv(n, 256)), dim3(256), 0, add_f32, y.data(), (const float*)x.data(), n);
    std::vector<double> want(n);
    for (int i = 0; i < n; i++) want[i] = (double)y0[i] + x[i];
    CHECK_CLOSE("add_f32", y, want, 1e-7);
    auto s = y;
    emu::launch(dim3(4), dim3(256), 0, scale_f32, s.data(), n, 0.37f);
    for (int i = 0; i < n; i++) want[i] = (double)y[i] * 0.37f;
    CHECK_CLOSE("scale_f32", s, want, 1e-7);

    for (int nn : {1, 255, 5000, 70001}) {
        auto v = randn(nn);
        int G = std::min(1024, std::max(1, (int)cdiv(nn, 2048)));
        std::vector<double> partial(G, NaN), out(1, NaN);
        emu::launch(dim3(G), dim3(256), 0, sumsq_partial, (const float*)v.data(), nn, partial.data());
        emu::launch(dim3(1), dim3(256), 0, sumsq_final, (const double*)partial.data(), G, out.data());
        double ref = 0;
        for (float f : v) ref += (double)f * f;
        CHECK(std::fabs(out[0] - ref) <= 1e-12 * ref, "sumsq n=%d: %.17g want %.17g", nn, out[0], ref);
    }
}

// ---------------------------------------------------------------- adamw, swiglu

static void test_adamw_swiglu() {
    std::printf("adamw, swiglu\n");
    int n = 3000;
    auto p = randn(n), g = randn(n), m = randn(n, 0.1f), v = randn(n, 0.1f);
    for (auto& e : v) e = std::fabs(e);
    auto p0 = p, m0 = m, v0 = v;
    float lr = 1e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
    int step = 7;
    double bc1 = 1 - std::pow(0.9f, step), bc2 = 1 - std::pow(0.95f, step);
    float c1 = (float)(1 / bc1), c2 = (float)(1 / bc2);
    // Decay on the first nDecay parameters only, and a clip scale.
    int nDecay = 2100;
    float scale = 0.4f;
    emu::launch(dim3(cdiv(n, 256)), dim3(256), 0, adamw, p.data(), (const float*)g.data(), m.data(), v.data(), n,
                nDecay, scale, lr, b1, b2, eps, wd, c1, c2);
    std::vector<double> wp(n), wm(n), wv(n);
    for (int i = 0; i < n; i++) {
        double gi = (double)g[i] * scale;
        double mi = 0.9f * m0[i] + (1 - 0.9f) * gi, vi = 0.95f * v0[i] + (1 - 0.95f) * gi * gi;
        wm[i] = mi;
        wv[i] = vi;
        wp[i] = p0[i] - 1e-3 * ((mi / bc1) / (std::sqrt(vi / bc2) + 1e-8) + (i < nDecay ? 0.1 : 0.0) * p0[i]);
    }
    CHECK_CLOSE("adamw p", p, wp, 1e-6);
    CHECK_CLOSE("adamw m", m, wm, 1e-6);
    CHECK_CLOSE("adamw v", v, wv, 1e-6);

    auto gate = randn(n, 3), up = randn(n), out = std::vector<float>(n, NaN);
    emu::launch(dim3(cdiv(n, 256)), dim3(256), 0, swiglu_fwd, out.data(), (const float*)gate.data(),
                (const float*)up.data(), n);
    std::vector<double> want(n), wdg(n), wdu(n);
    auto dout = randn(n), dg = randn(n), du = randn(n), dg0 = dg, du0 = du;
    for (int i = 0; i < n; i++) {
        double gg = gate[i], s = 1 / (1 + std::exp(-gg));
        want[i] = gg * s * up[i];
        wdg[i] = dg0[i] + dout[i] * up[i] * s * (1 + gg * (1 - s));
        wdu[i] = du0[i] + dout[i] * gg * s;
    }
    CHECK_CLOSE("swiglu_fwd", out, want, 1e-6);
    emu::launch(dim3(cdiv(n, 256)), dim3(256), 0, swiglu_bwd, dg.data(), du.data(), (const float*)dout.data(),
                (const float*)gate.data(), (const float*)up.data(), n);
    CHECK_CLOSE("swiglu_bwd dgate", dg, wdg, 1e-6);
    CHECK_CLOSE("swiglu_bwd dup", du, wdu, 1e-6);
}

// ---------------------------------------------------------------- sort

// stable_sort_emu runs the launcher's pass sequence and returns the order.
static std::vector<int> stable_sort_emu(const std::vector<int>& in, int limit, int* status, int code,
                                        std::vector<int>* keysOut) {
    int n = (int)in.size();
    std::vector<int> keys(n, -7);
    emu::launch(dim3(cdiv(n, 256)), dim3(256), 0, sort_keys, in.data(), keys.data(), n, limit, status, code);
    int bits = 1;
    while ((1 << bits) <= limit) bits++; // keys lie in [0, limit]
    int seg = std::max(1024, (int)cdiv(n, 1024));
    int nb = (int)cdiv(n, seg);
    std::vector<int> counts(256 * nb), a(n, -1), b(n, -1);
    const int* inOrder = nullptr;
    std::vector<int>* out = &a;
    for (int shift = 0; shift < bits; shift += 8) {
        emu::launch(dim3(nb), dim3(256), 0, sort_count, (const int*)keys.data(), inOrder, n, shift, seg,
                    counts.data());
        emu::launch(dim3(1), dim3(256), 0, sort_scan, counts.data(), 256 * nb);
        emu::launch(dim3(nb), dim3(32), 0, sort_place, (const int*)keys.data(), inOrder, out->data(), n, shift, seg,
                    (const int*)counts.data());
        inOrder = out->data();
        out = out == &a ? &b : &a;
    }
    if (keysOut) *keysOut = keys;
    return std::vector<int>(inOrder, inOrder + n);
}

static void test_sort() {
    std::printf("sort\n");
    for (int n : {1, 31, 1000, 3000, 40000}) {
        for (int limit : {4, 256, 700, 70000}) {
            auto in = randint(n, 0, limit);
            int status = 0;
            auto order = stable_sort_emu(in, limit, &status, 9, nullptr);
            std::vector<int> want(n);
            for (int i = 0; i < n; i++) want[i] = i;
            std::stable_sort(want.begin(), want.end(), [&](int x, int y) { return in[x] < in[y]; });
            CHECK(order == want, "stable sort n=%d limit=%d differs", n, limit);
            CHECK(status == 0, "sort status %d", status);
        }
    }
    std::vector<int> bad = {3, -1, 2, 9, 3};
    int status = 0;
    auto order = stable_sort_emu(bad, 4, &status, 9, nullptr);
    CHECK(status == 9, "bad key not reported: %d", status);
    CHECK((order == std::vector<int>{2, 0, 4, 1, 3}), "bad keys not sorted last");
}

// ---------------------------------------------------------------- embedding

static void test_embedding() {
    std::printf("embedding\n");
    for (int vocab : {50, 300}) {
        int rows = 700, dim = 40;
        auto table = randn((size_t)vocab * dim);
        auto ids = randint(rows, 0, vocab);
        for (int i = 0; i < rows; i += 7) ids[i] = 3; // a frequent token
        std::vector<float> out(rows * dim, NaN);
        int status = 0;
        emu::launch(dim3(rows), dim3(block_for(dim)), 0, embedding_fwd, out.data(), (const float*)table.data(),
                    (const int*)ids.data(), rows, dim, vocab, &status);
        std::vector<float> want(rows * dim);
        for (int i = 0; i < rows; i++)
            for (int d = 0; d < dim; d++) want[i * dim + d] = table[ids[i] * dim + d];
        CHECK(out == want, "embedding_fwd vocab=%d differs", vocab);

        auto dout = randn(rows * dim), dtable = randn((size_t)vocab * dim), wt = dtable;
        for (int i = 0; i < rows; i++)
            for (int d = 0; d < dim; d++) wt[ids[i] * dim + d] += dout[i * dim + d]; // float, CPU order
        std::vector<int> keys;
        auto order = stable_sort_emu(ids, vocab, &status, STATUS_EMBED_ID, &keys);
        emu::launch(dim3(rows), dim3(block_for(dim)), 0, embedding_bwd_apply, dtable.data(),
                    (const float*)dout.data(), (const int*)keys.data(), (const int*)order.data(), rows, dim, vocab);
        CHECK(dtable == wt, "embedding backward vocab=%d is not bitwise the sequential sum", vocab);
        CHECK(status == 0, "status %d", status);
    }
    // A bad id is reported, gives a zero row, and is skipped by the backward.
    std::vector<int> ids = {1, 7, 0};
    std::vector<float> table = {1, 2, 3, 4}, out(6, NaN);
    int status = 0;
    emu::launch(dim3(3), dim3(32), 0, embedding_fwd, out.data(), (const float*)table.data(), (const int*)ids.data(),
                3, 2, 2, &status);
    CHECK(status == STATUS_EMBED_ID && out[2] == 0 && out[3] == 0 && out[0] == 3, "bad id forward");
}

// ---------------------------------------------------------------- rmsnorm

static void test_rmsnorm() {
    std::printf("rmsnorm\n");
    for (auto [rows, dim] : {std::pair{37, 64}, std::pair{2100, 24}, std::pair{9, 600}}) {
        float eps = 1e-5f;
        auto x = randn((size_t)rows * dim), w = randn(dim);
        std::vector<float> out(rows * dim, NaN), rstd(rows, NaN);
        emu::launch(dim3(cdiv(rows, 8)), dim3(256), 0, rmsnorm_fwd, out.data(), rstd.data(), (const float*)x.data(),
                    (const float*)w.data(), rows, dim, eps);
        std::vector<double> wo(rows * dim), wr(rows);
        for (int r = 0; r < rows; r++) {
            double ss = 0;
            for (int d = 0; d < dim; d++) ss += (double)x[r * dim + d] * x[r * dim + d];
            wr[r] = 1 / std::sqrt(ss / dim + eps);
            for (int d = 0; d < dim; d++) wo[r * dim + d] = x[r * dim + d] * wr[r] * w[d];
        }
        CHECK_CLOSE("rmsnorm_fwd out", out, wo, 1e-6);
        CHECK_CLOSE("rmsnorm_fwd rstd", rstd, wr, 1e-6);

        // residual_rmsnorm on fresh inputs: sum is the float32 adds, out and rstd
        // rmsnorm_fwd's bits on sum; in place over x or r it gives the same bits.
        {
            auto x0 = randn((size_t)rows * dim), r0 = randn((size_t)rows * dim);
            std::vector<float> wsum(rows * dim), wout(rows * dim, NaN), wrs(rows, NaN);
            for (size_t i = 0; i < wsum.size(); i++) wsum[i] = x0[i] + r0[i];
            emu::launch(dim3(cdiv(rows, 8)), dim3(256), 0, rmsnorm_fwd, wout.data(), wrs.data(),
                        (const float*)wsum.data(), (const float*)w.data(), rows, dim, eps);
            std::vector<double> ro(rows * dim), rr(rows);
            for (int r = 0; r < rows; r++) {
                double ss = 0;
                for (int d = 0; d < dim; d++) ss += (double)wsum[r * dim + d] * wsum[r * dim + d];
                rr[r] = 1 / std::sqrt(ss / dim + eps);
                for (int d = 0; d < dim; d++) ro[r * dim + d] = wsum[r * dim + d] * rr[r] * w[d];
            }
            for (const char* over : {"none", "x", "r"}) {
                auto xs = x0, rs = r0;
                std::vector<float> sum(rows * dim, NaN), o(rows * dim, NaN), st(rows, NaN);
                float* dst = over[0] == 'x' ? xs.data() : over[0] == 'r' ? rs.data() : sum.data();
                emu::launch(dim3(cdiv(rows, 8)), dim3(256), 0, residual_rmsnorm, dst, o.data(), st.data(),
                            (const float*)xs.data(), (const float*)rs.data(), (const float*)w.data(), rows, dim, eps);
                std::vector<float> got(dst, dst + (size_t)rows * dim);
                CHECK(got == wsum, "residual_rmsnorm %dx%d sum over %s: not the float32 adds", rows, dim, over);
                CHECK(o == wout && st == wrs, "residual_rmsnorm %dx%d sum over %s: not rmsnorm_fwd's bits", rows, dim, over);
                if (over[0] == 'n') {
                    CHECK_CLOSE("residual_rmsnorm out", o, ro, 1e-6);
                    CHECK_CLOSE("residual_rmsnorm rstd", st, rr, 1e-6);
                }
            }
        }

        auto dout = randn((size_t)rows * dim), dx = randn((size_t)rows * dim), dw = randn(dim);
        std::vector<double> wdx(dx.begin(), dx.end()), wdw(dw.begin(), dw.end());
        for (int r = 0; r < rows; r++) {
            double dot = 0, rs = rstd[r];
            for (int d = 0; d < dim; d++) dot += (double)dout[r * dim + d] * w[d] * x[r * dim + d];
            for (int d = 0; d < dim; d++) {
                wdx[r * dim + d] += rs * w[d] * dout[r * dim + d] - rs * rs * rs * x[r * dim + d] * dot / dim;
                wdw[d] += (double)dout[r * dim + d] * x[r * dim + d] * rs;
            }
        }
        unsigned T = block_for(dim);
        int rpb = std::max(1, (int)cdiv(rows, 1024));
        int nb = (int)cdiv(rows, rpb);
        std::vector<double> partial((size_t)nb * dim, NaN);
        emu::launch(dim3(nb), dim3(T), 0, rmsnorm_bwd, dx.data(), partial.data(), (const float*)dout.data(),
                    (const float*)x.data(), (const float*)w.data(), (const float*)rstd.data(), rows, dim, rpb);
        emu::launch(dim3(cdiv(dim, 256)), dim3(256), 0, rmsnorm_dw_reduce, dw.data(), (const double*)partial.data(),
                    nb, dim);
        CHECK_CLOSE("rmsnorm_bwd dx", dx, wdx, 1e-5);
        CHECK_CLOSE("rmsnorm_bwd dw", dw, wdw, 1e-5);
    }
}

// ---------------------------------------------------------------- rope

static void test_rope() {
    std::printf("rope\n");
    int rows = 50, heads = 3, hd = 16;
    float theta = 10000;
    auto x = randn((size_t)rows * heads * hd), x0 = x;
    auto pos = randint(rows, 0, 4000);
    emu::launch(dim3(cdiv(rows * hd / 2, 256)), dim3(256), 0, rope_fwd, x.data(), (const int*)pos.data(), rows,
                heads, hd, theta);
    std::vector<double> want(x.size());
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < hd / 2; i++) {
                double a = pos[r] * std::pow((double)theta, -2.0 * i / hd);
                double x1 = x0[(r * heads + h) * hd + i], x2 = x0[(r * heads + h) * hd + i + hd / 2];
                want[(r * heads + h) * hd + i] = x1 * std::cos(a) - x2 * std::sin(a);
                want[(r * heads + h) * hd + i + hd / 2] = x1 * std::sin(a) + x2 * std::cos(a);
            }
    CHECK_CLOSE("rope_fwd", x, want, 1e-6);
    emu::launch(dim3(cdiv(rows * hd / 2, 256)), dim3(256), 0, rope_bwd, x.data(), (const int*)pos.data(), rows,
                heads, hd, theta);
    CHECK_CLOSE("rope_bwd(rope_fwd(x)) = x", x, x0, 1e-6);
}

// ---------------------------------------------------------------- attention

static size_t attn_fwd_smem(int D) { return (size_t)(3 * 64 * (D + 1) + 64 * 65) * 4; }
static size_t attn_dkdv_smem(int D) { return (size_t)(2 * 32 * (D + 1) + 2 * 64 * (D + 1) + 2 * 64 * 33 + 128) * 4; }
static size_t attn_dq_smem(int D) { return (size_t)(2 * 64 * (D + 1) + 2 * 32 * (D + 1) + 64 * 33 + 128) * 4; }

template <int D> struct Attn;
#define ATTN_TEST_ENTRIES(D)                                                                                 \
    template <> struct Attn<D> {                                                                             \
        static constexpr auto fwd = attn_fwd_d##D;                                                           \
        static constexpr auto dkdv = attn_bwd_dkdv_d##D;                                                     \
        static constexpr auto dq = attn_bwd_dq_d##D;                                                         \
        static constexpr auto decode = attn_decode_d##D;                                                     \
    };
ATTN_TEST_ENTRIES(32)
ATTN_TEST_ENTRIES(64)
ATTN_TEST_ENTRIES(128)

template <int D>
static void run_attention(int batch, int seq, int heads, int hd) {
    char name[96];
    size_t n = (size_t)batch * seq * heads * hd;
    auto q = randn(n), k = randn(n), v = randn(n);
    float scale = (float)(1 / std::sqrt((double)hd));
    std::vector<float> out(n, NaN), lse((size_t)batch * heads * seq, NaN);
    auto at = [&](int b, int i, int h) { return (((size_t)b * seq + i) * heads + h) * hd; };
    emu::launch(dim3(cdiv(seq, 64), heads, batch), dim3(256), attn_fwd_smem(D), Attn<D>::fwd, out.data(),
                lse.data(), (const float*)q.data(), (const float*)k.data(), (const float*)v.data(), seq, heads, hd,
                scale);

    std::vector<double> wo(n), wl(lse.size()), P((size_t)batch * heads * seq * seq);
    auto pat = [&](int b, int h, int i, int j) -> double& { return P[(((size_t)b * heads + h) * seq + i) * seq + j]; };
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < seq; i++) {
                std::vector<double> s(i + 1);
                double m = -INFINITY;
                for (int j = 0; j <= i; j++) {
                    double dot = 0;
                    for (int d = 0; d < hd; d++) dot += (double)q[at(b, i, h) + d] * k[at(b, j, h) + d];
                    s[j] = dot * scale;
                    m = std::max(m, s[j]);
                }
                double sum = 0;
                for (int j = 0; j <= i; j++) sum += std::exp(s[j] - m);
                wl[((size_t)b * heads + h) * seq + i] = m + std::log(sum);
                for (int j = 0; j <= i; j++) pat(b, h, i, j) = std::exp(s[j] - m) / sum;
                for (int d = 0; d < hd; d++) {
                    double o = 0;
                    for (int j = 0; j <= i; j++) o += pat(b, h, i, j) * v[at(b, j, h) + d];
                    wo[at(b, i, h) + d] = o;
                }
            }
    std::snprintf(name, sizeof name, "attn_fwd_d%d out (seq %d hd %d)", D, seq, hd);
    CHECK_CLOSE(name, out, wo, 1e-5);
    std::snprintf(name, sizeof name, "attn_fwd_d%d lse", D);
    CHECK_CLOSE(name, lse, wl, 1e-6);

    // Backward.
    auto dout = randn(n), dq = randn(n), dk = randn(n), dv = randn(n);
    std::vector<double> wdq(dq.begin(), dq.end()), wdk(dk.begin(), dk.end()), wdv(dv.begin(), dv.end());
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < seq; i++) {
                std::vector<double> dp(i + 1);
                double delta = 0;
                for (int j = 0; j <= i; j++) {
                    double s = 0;
                    for (int d = 0; d < hd; d++) s += (double)dout[at(b, i, h) + d] * v[at(b, j, h) + d];
                    dp[j] = s;
                    delta += pat(b, h, i, j) * s;
                }
                for (int j = 0; j <= i; j++) {
                    double p = pat(b, h, i, j), ds = p * (dp[j] - delta);
                    for (int d = 0; d < hd; d++) {
                        wdq[at(b, i, h) + d] += scale * ds * k[at(b, j, h) + d];
                        wdk[at(b, j, h) + d] += scale * ds * q[at(b, i, h) + d];
                        wdv[at(b, j, h) + d] += p * dout[at(b, i, h) + d];
                    }
                }
            }
    std::vector<float> delta(lse.size(), NaN);
    emu::launch(dim3(cdiv((long)batch * seq * heads, 8)), dim3(256), 0, attn_bwd_delta, delta.data(),
                (const float*)dout.data(), (const float*)out.data(), batch, seq, heads, hd);
    emu::launch(dim3(cdiv(seq, 32), heads, batch), dim3(256), attn_dkdv_smem(D), Attn<D>::dkdv, dk.data(),
                dv.data(), (const float*)dout.data(), (const float*)q.data(), (const float*)k.data(),
                (const float*)v.data(), (const float*)lse.data(), (const float*)delta.data(), seq, heads, hd, scale);
    emu::launch(dim3(cdiv(seq, 64), heads, batch), dim3(256), attn_dq_smem(D), Attn<D>::dq, dq.data(),
                (const float*)dout.data(), (const float*)q.data(), (const float*)k.data(), (const float*)v.data(),
                (const float*)lse.data(), (const float*)delta.data(), seq, heads, hd, scale);
    std::snprintf(name, sizeof name, "attn_bwd_d%d dq", D);
    CHECK_CLOSE(name, dq, wdq, 1e-5);
    std::snprintf(name, sizeof name, "attn_bwd_d%d dk", D);
    CHECK_CLOSE(name, dk, wdk, 1e-5);
    std::snprintf(name, sizeof name, "attn_bwd_d%d dv", D);
    CHECK_CLOSE(name, dv, wdv, 1e-5);

    // Decode: the last query of each sequence against a cache of maxSeq
    // positions, lens[b] of them valid.
    int maxSeq = seq + 5;
    std::vector<float> kc((size_t)batch * maxSeq * heads * hd, NaN), vc(kc.size(), NaN);
    std::vector<int> lens(batch);
    std::vector<float> qd((size_t)batch * heads * hd), od(qd.size(), NaN);
    std::vector<double> wod(qd.size());
    for (int b = 0; b < batch; b++) {
        lens[b] = 1 + (b * 7 + seq / 2) % seq;
        int L = lens[b];
        for (int j = 0; j < L; j++)
            for (int h = 0; h < heads; h++)
                for (int d = 0; d < hd; d++) {
                    kc[(((size_t)b * maxSeq + j) * heads + h) * hd + d] = k[at(b, j, h) + d];
                    vc[(((size_t)b * maxSeq + j) * heads + h) * hd + d] = v[at(b, j, h) + d];
                }
        for (int h = 0; h < heads; h++)
            for (int d = 0; d < hd; d++) {
                qd[((size_t)b * heads + h) * hd + d] = q[at(b, L - 1, h) + d];
                wod[((size_t)b * heads + h) * hd + d] = wo[at(b, L - 1, h) + d];
            }
    }
    int status = 0;
    emu::launch(dim3(heads, batch), dim3(128), (size_t)maxSeq * 4, Attn<D>::decode, od.data(),
                (const float*)qd.data(), (const float*)kc.data(), (const float*)vc.data(), (const int*)lens.data(),
                maxSeq, heads, hd, scale, &status);
    std::snprintf(name, sizeof name, "attn_decode_d%d", D);
    CHECK_CLOSE(name, od, wod, 1e-5);
    CHECK(status == 0, "decode status %d", status);
    // And bit for bit attn_fwd's row (sampling is exactly on-policy).
    int differ = 0;
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++)
            for (int d = 0; d < hd; d++) {
                float want = out[at(b, lens[b] - 1, h) + d], got = od[((size_t)b * heads + h) * hd + d];
                if (std::memcmp(&want, &got, sizeof want) != 0) differ++;
            }
    CHECK(differ == 0, "attn_decode_d%d (seq %d hd %d): %d outputs differ from attn_fwd's bits", D, seq, hd, differ);
}

static void test_attention() {
    std::printf("attention\n");
    run_attention<32>(2, 70, 2, 32);
    run_attention<64>(1, 130, 2, 48);
    run_attention<128>(1, 65, 1, 128);
    run_attention<32>(1, 1, 1, 2);
}

// ---------------------------------------------------------------- router

static void test_router() {
    std::printf("router\n");
    int rows = 45, nE = 40, k = 3;
    auto logits = randn((size_t)rows * nE);
    // Ties: row 0 has all-equal logits, row 1 two equal maxima.
    for (int e = 0; e < nE; e++) logits[e] = 0.5f;
    logits[nE + 7] = logits[nE + 3] = 9.0f;
    std::vector<float> w(rows * k, NaN), probs(rows * nE, NaN);
    std::vector<int> ex(rows * k, -1);
    emu::launch(dim3(cdiv(rows, 8)), dim3(256), 0, router_topk_fwd, w.data(), ex.data(), probs.data(),
                (const float*)logits.data(), rows, nE, k);
    std::vector<double> wp(rows * nE), ww(rows * k);
    std::vector<int> wex(rows * k);
    for (int r = 0; r < rows; r++) {
        double m = -INFINITY, s = 0;
        for (int e = 0; e < nE; e++) m = std::max(m, (double)logits[r * nE + e]);
        for (int e = 0; e < nE; e++) s += std::exp(logits[r * nE + e] - m);
        std::vector<int> idx(nE);
        for (int e = 0; e < nE; e++) {
            wp[r * nE + e] = std::exp(logits[r * nE + e] - m) / s;
            idx[e] = e;
        }
        // Rank by the kernel's float probabilities: larger first, lower index on ties.
        std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return probs[r * nE + a] > probs[r * nE + b]; });
        double sel = 0;
        for (int j = 0; j < k; j++) sel += probs[r * nE + idx[j]];
        for (int j = 0; j < k; j++) {
            wex[r * k + j] = idx[j];
            ww[r * k + j] = probs[r * nE + idx[j]] / sel;
        }
    }
    CHECK_CLOSE("router_topk_fwd probs", probs, wp, 1e-6);
    CHECK(ex == wex, "router_topk_fwd experts differ (ties: lower index first)");
    CHECK(ex[0] == 0 && ex[1] == 1 && ex[2] == 2 && ex[k] == 3 && ex[k + 1] == 7, "tie rule");
    CHECK_CLOSE("router_topk_fwd weights", w, ww, 1e-6);

    auto dw = randn(rows * k), dl = randn(rows * nE);
    std::vector<double> wdl(dl.begin(), dl.end());
    for (int r = 0; r < rows; r++) {
        double S = 0, dotw = 0, dot2 = 0;
        for (int j = 0; j < k; j++) {
            S += probs[r * nE + ex[r * k + j]];
            dotw += (double)dw[r * k + j] * w[r * k + j];
        }
        std::vector<double> g(nE, 0.0);
        for (int j = 0; j < k; j++) g[ex[r * k + j]] = (dw[r * k + j] - dotw) / S;
        for (int e = 0; e < nE; e++) dot2 += probs[r * nE + e] * g[e];
        for (int e = 0; e < nE; e++) wdl[r * nE + e] += probs[r * nE + e] * (g[e] - dot2);
    }
    int status = 0;
    emu::launch(dim3(cdiv(rows, 8)), dim3(256), 0, router_topk_bwd, dl.data(), (const float*)dw.data(),
                (const float*)w.data(), (const int*)ex.data(), (const float*)probs.data(), rows, nE, k, &status);
    CHECK_CLOSE("router_topk_bwd", dl, wdl, 1e-5);

    auto dp = randn(rows * nE), ds = randn(rows * nE);
    std::vector<double> wds(ds.begin(), ds.end());
    for (int r = 0; r < rows; r++) {
        double dot = 0;
        for (int e = 0; e < nE; e++) dot += (double)probs[r * nE + e] * dp[r * nE + e];
        for (int e = 0; e < nE; e++) wds[r * nE + e] += probs[r * nE + e] * (dp[r * nE + e] - dot);
    }
    emu::launch(dim3(cdiv(rows, 8)), dim3(256), 0, softmax_bwd, ds.data(), (const float*)dp.data(),
                (const float*)probs.data(), rows, nE);
    CHECK_CLOSE("softmax_bwd", ds, wds, 1e-5);

    // Dispatch.
    int n = rows * k;
    std::vector<int> keys;
    auto order = stable_sort_emu(ex, nE, &status, STATUS_EXPERT, &keys);
    std::vector<int> perm(n, -1), inv(n, -1), offsets(nE + 1, -1);
    emu::launch(dim3(cdiv(n, 256)), dim3(256), 0, dispatch_finalize, (const int*)order.data(), n, k, perm.data(),
                inv.data());
    emu::launch(dim3(1), dim3(256), (size_t)(nE + 1) * 4, dispatch_offsets, (const int*)keys.data(), n, nE,
                offsets.data());
    std::vector<int> wperm, winv(n), woff(nE + 1, 0);
    for (int e = 0; e < nE; e++) {
        woff[e] = (int)wperm.size();
        for (int t = 0; t < rows; t++)
            for (int j = 0; j < k; j++)
                if (ex[t * k + j] == e) {
                    winv[t * k + j] = (int)wperm.size();
                    wperm.push_back(t);
                }
    }
    woff[nE] = n;
    CHECK(perm == wperm, "dispatch perm");
    CHECK(inv == winv, "dispatch inv");
    CHECK(offsets == woff, "dispatch offsets");
    CHECK(status == 0, "status %d", status);

    // The load-balancing loss's factors from those offsets.
    std::vector<float> load(2 * nE, NaN);
    emu::launch(dim3(nE), dim3(256), 0, router_load, load.data(), (const float*)probs.data(),
                (const int*)offsets.data(), rows, nE, &status);
    std::vector<double> wload(2 * nE, 0.0);
    for (int e = 0; e < nE; e++) {
        wload[e] = woff[e + 1] - woff[e];
        for (int r = 0; r < rows; r++) wload[nE + e] += probs[r * nE + e];
    }
    CHECK_CLOSE("router_load", load, wload, 1e-6);
    CHECK(status == 0, "status %d", status);
}

// ---------------------------------------------------------------- routing

static void test_routing() {
    std::printf("routing\n");
    int rows = 37, nE = 12, k = 3;
    auto logits = randn((size_t)rows * nE, 2);
    std::vector<float> w(rows * k, NaN), probs(rows * nE, NaN);
    std::vector<int> ex(rows * k, -1);
    emu::launch(dim3(cdiv(rows, 8)), dim3(256), 0, router_topk_fwd, w.data(), ex.data(), probs.data(),
                (const float*)logits.data(), rows, nE, k);
    // Replaying the router's own choice rewrites its weights bit for bit.
    auto w0 = w;
    int status = 0;
    emu::launch(dim3(cdiv(rows, 256)), dim3(256), 0, router_replay, w.data(), ex.data(), (const float*)probs.data(),
                (const int*)ex.data(), rows, nE, k, &status);
    CHECK(std::memcmp(w.data(), w0.data(), w.size() * 4) == 0, "router_replay of the own choice changed the weights");
    // Other experts: the softmax over the replayed logits; every third row keeps its choice.
    std::vector<int> rep(rows * k), wex = ex;
    std::vector<double> ww(w0.begin(), w0.end());
    for (int r = 0; r < rows; r++) {
        std::vector<int> perm(nE);
        for (int e = 0; e < nE; e++) perm[e] = e;
        std::shuffle(perm.begin(), perm.end(), rng);
        for (int j = 0; j < k; j++) rep[r * k + j] = r % 3 == 2 ? -1 : perm[j];
        if (r % 3 == 2) continue;
        double s = 0;
        for (int j = 0; j < k; j++) s += std::exp((double)logits[r * nE + perm[j]]);
        for (int j = 0; j < k; j++) {
            wex[r * k + j] = perm[j];
            ww[r * k + j] = std::exp((double)logits[r * nE + perm[j]]) / s;
        }
    }
    emu::launch(dim3(cdiv(rows, 256)), dim3(256), 0, router_replay, w.data(), ex.data(), (const float*)probs.data(),
                (const int*)rep.data(), rows, nE, k, &status);
    CHECK(ex == wex, "router_replay experts");
    CHECK_CLOSE("router_replay weights", w, ww, 1e-6);
    CHECK(status == 0, "status %d", status);
    rep[1] = rep[0]; // a repeated expert: reported, the row left alone
    auto ex1 = ex;
    emu::launch(dim3(cdiv(rows, 256)), dim3(256), 0, router_replay, w.data(), ex.data(), (const float*)probs.data(),
                (const int*)rep.data(), rows, nE, k, &status);
    CHECK(status == STATUS_EXPERT && ex == ex1, "router_replay with a repeated expert: status %d", status);

    for (int vocab : {7, 1000}) {
        int n = 20;
        auto x = randn((size_t)n * vocab, 3);
        auto targets = randint(n, 0, vocab);
        std::vector<float> logp(n), lse(n), ent(n);
        int st = 0;
        emu::launch(dim3(n), dim3(256), 0, logprob_fwd, logp.data(), lse.data(), (const float*)x.data(),
                    (const int*)targets.data(), n, vocab, &st);
        emu::launch(dim3(n), dim3(256), 0, entropy, ent.data(), (const float*)x.data(), (const float*)lse.data(), n,
                    vocab);
        auto dent = randn(n), dl = randn((size_t)n * vocab);
        dent[3] = 0;
        std::vector<double> wdl(dl.begin(), dl.end());
        for (int r = 0; r < n; r++) {
            double m = -INFINITY, s = 0, h = 0;
            for (int j = 0; j < vocab; j++) m = std::max(m, (double)x[r * vocab + j]);
            for (int j = 0; j < vocab; j++) s += std::exp(x[r * vocab + j] - m);
            double L = m + std::log(s);
            for (int j = 0; j < vocab; j++) h -= std::exp(x[r * vocab + j] - L) * (x[r * vocab + j] - L);
            for (int j = 0; j < vocab; j++) {
                double lp = x[r * vocab + j] - L;
                wdl[r * vocab + j] += dent[r] * -std::exp(lp) * (lp + h);
            }
        }
        emu::launch(dim3(n), dim3(256), 0, entropy_bwd, dl.data(), (const float*)dent.data(), (const float*)x.data(),
                    (const float*)lse.data(), (const float*)ent.data(), n, vocab);
        CHECK_CLOSE("entropy_bwd", dl, wdl, 1e-6);
    }
}

// ---------------------------------------------------------------- gather, combine

static void test_gather_combine() {
    std::printf("gather, combine\n");
    int rows = 60, k = 3, dim = 70, n = rows * k;
    std::vector<int> inv(n), perm(n);
    for (int i = 0; i < n; i++) inv[i] = i;
    std::shuffle(inv.begin(), inv.end(), rng);
    for (int a = 0; a < n; a++) perm[inv[a]] = a / k;
    auto x = randn((size_t)rows * dim);
    std::vector<float> xp((size_t)n * dim, NaN);
    int status = 0;
    emu::launch(dim3(n), dim3(block_for(dim)), 0, gather_fwd, xp.data(), (const float*)x.data(),
                (const int*)perm.data(), n, dim, rows, &status);
    std::vector<float> wxp((size_t)n * dim);
    for (int s = 0; s < n; s++)
        for (int d = 0; d < dim; d++) wxp[s * dim + d] = x[perm[s] * dim + d];
    CHECK(xp == wxp, "gather_fwd");

    auto dxp = randn((size_t)n * dim), dx = randn((size_t)rows * dim);
    auto wdx = dx;
    for (int t = 0; t < rows; t++)
        for (int j = 0; j < k; j++)
            for (int d = 0; d < dim; d++) wdx[t * dim + d] += dxp[inv[t * k + j] * dim + d];
    emu::launch(dim3(rows), dim3(block_for(dim)), 0, gather_bwd, dx.data(), (const float*)dxp.data(),
                (const int*)inv.data(), rows, k, dim, n, &status);
    CHECK(dx == wdx, "gather_bwd is not bitwise the sequential sum");

    auto y = randn((size_t)n * dim), wts = randn(n), out = randn((size_t)rows * dim);
    auto wout = out;
    for (int t = 0; t < rows; t++)
        for (int d = 0; d < dim; d++) {
            float acc = wout[t * dim + d];
            for (int j = 0; j < k; j++) acc += wts[t * k + j] * y[inv[t * k + j] * dim + d];
            wout[t * dim + d] = acc;
        }
    emu::launch(dim3(rows), dim3(block_for(dim)), 0, combine_fwd, out.data(), (const float*)y.data(),
                (const float*)wts.data(), (const int*)inv.data(), rows, k, dim, n, &status);
    CHECK_CLOSE("combine_fwd", out, wout, 1e-6);

    auto dout = randn((size_t)rows * dim), dy = randn((size_t)n * dim), dwts = randn(n);
    std::vector<double> wdy(dy.begin(), dy.end()), wdw(dwts.begin(), dwts.end());
    for (int t = 0; t < rows; t++)
        for (int j = 0; j < k; j++) {
            int s = inv[t * k + j];
            for (int d = 0; d < dim; d++) {
                wdy[s * dim + d] += (double)wts[t * k + j] * dout[t * dim + d];
                wdw[t * k + j] += (double)dout[t * dim + d] * y[s * dim + d];
            }
        }
    emu::launch(dim3(rows), dim3(block_for(dim)), 0, combine_bwd, dy.data(), dwts.data(), (const float*)dout.data(),
                (const float*)y.data(), (const float*)wts.data(), (const int*)inv.data(), rows, k, dim, n, &status);
    CHECK_CLOSE("combine_bwd dy", dy, wdy, 1e-6);
    CHECK_CLOSE("combine_bwd dweights", dwts, wdw, 1e-5);
    CHECK(status == 0, "status %d", status);

    std::vector<float> dst((size_t)rows * dim, 1.5f);
    std::vector<int> idx = {5, 2, 9};
    auto src = randn(3 * dim);
    emu::launch(dim3(3), dim3(block_for(dim)), 0, scatter_rows, dst.data(), (const float*)src.data(),
                (const int*)idx.data(), 3, dim, rows, &status);
    CHECK(dst[5 * dim] == src[0] && dst[2 * dim + 1] == src[dim + 1] && dst[9 * dim + dim - 1] == src[3 * dim - 1] &&
              dst[0] == 1.5f,
          "scatter_rows");
    idx[1] = rows;
    emu::launch(dim3(3), dim3(block_for(dim)), 0, scatter_rows, dst.data(), (const float*)src.data(),
                (const int*)idx.data(), 3, dim, rows, &status);
    CHECK(status == STATUS_GATHER_INDEX, "scatter_rows bad index not reported");
}

// ---------------------------------------------------------------- logprob

static void test_logprob() {
    std::printf("logprob\n");
    for (int vocab : {7, 128, 1000}) {
        int rows = 20;
        auto logits = randn((size_t)rows * vocab, 3);
        auto targets = randint(rows, 0, vocab);
        std::vector<float> logp(rows, NaN), lse(rows, NaN), ent(rows, NaN);
        int status = 0;
        emu::launch(dim3(rows), dim3(256), 0, logprob_fwd, logp.data(), lse.data(), (const float*)logits.data(),
                    (const int*)targets.data(), rows, vocab, &status);
        emu::launch(dim3(rows), dim3(256), 0, entropy, ent.data(), (const float*)logits.data(),
                    (const float*)lse.data(), rows, vocab);
        std::vector<double> wl(rows), wlp(rows), we(rows);
        for (int r = 0; r < rows; r++) {
            double m = -INFINITY, s = 0, h = 0;
            for (int j = 0; j < vocab; j++) m = std::max(m, (double)logits[r * vocab + j]);
            for (int j = 0; j < vocab; j++) s += std::exp(logits[r * vocab + j] - m);
            wl[r] = m + std::log(s);
            wlp[r] = logits[r * vocab + targets[r]] - wl[r];
            for (int j = 0; j < vocab; j++) {
                double lp = logits[r * vocab + j] - wl[r];
                h -= std::exp(lp) * lp;
            }
            we[r] = h;
        }
        CHECK_CLOSE("logprob_fwd lse", lse, wl, 1e-6);
        CHECK_CLOSE("logprob_fwd logp", logp, wlp, 1e-6);
        CHECK_CLOSE("entropy", ent, we, 1e-6);
        auto dlogp = randn(rows), dl = randn((size_t)rows * vocab);
        std::vector<double> wdl(dl.begin(), dl.end());
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < vocab; j++)
                wdl[r * vocab + j] +=
                    dlogp[r] * ((j == targets[r] ? 1.0 : 0.0) - std::exp(logits[r * vocab + j] - wl[r]));
        emu::launch(dim3(rows), dim3(256), 0, logprob_bwd, dl.data(), (const float*)dlogp.data(),
                    (const float*)logits.data(), (const float*)lse.data(), (const int*)targets.data(), rows, vocab,
                    &status);
        CHECK_CLOSE("logprob_bwd", dl, wdl, 1e-6);
        CHECK(status == 0, "status %d", status);

        // logprob_fused over a poisoned dlogits: the float64 reference, and
        // the bits of logprob_fwd with logprob_bwd into zeros, which the
        // model's step had before; a zero dlogp (a masked token) gives +0.
        dlogp[1] = 0.0f;
        std::vector<float> flp(rows, NaN), flse(rows, NaN), fdl((size_t)rows * vocab, NaN),
            zdl((size_t)rows * vocab, 0.0f);
        std::vector<double> wfdl((size_t)rows * vocab);
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < vocab; j++)
                wfdl[r * vocab + j] =
                    dlogp[r] * ((j == targets[r] ? 1.0 : 0.0) - std::exp(logits[r * vocab + j] - wl[r]));
        emu::launch(dim3(rows), dim3(256), 0, logprob_fused, flp.data(), flse.data(), fdl.data(),
                    (const float*)logits.data(), (const int*)targets.data(), (const float*)dlogp.data(), rows, vocab,
                    &status);
        emu::launch(dim3(rows), dim3(256), 0, logprob_bwd, zdl.data(), (const float*)dlogp.data(),
                    (const float*)logits.data(), (const float*)lse.data(), (const int*)targets.data(), rows, vocab,
                    &status);
        CHECK_CLOSE("logprob_fused lse", flse, wl, 1e-6);
        CHECK_CLOSE("logprob_fused logp", flp, wlp, 1e-6);
        CHECK_CLOSE("logprob_fused dlogits", fdl, wfdl, 1e-6);
        CHECK(std::memcmp(flp.data(), logp.data(), rows * 4) == 0 &&
                  std::memcmp(flse.data(), lse.data(), rows * 4) == 0 &&
                  std::memcmp(fdl.data(), zdl.data(), fdl.size() * 4) == 0,
              "logprob_fused vocab=%d is not bitwise logprob_fwd and logprob_bwd into zeros", vocab);
        bool plus = true;
        for (int j = 0; j < vocab; j++) plus = plus && fdl[vocab + j] == 0.0f && !std::signbit(fdl[vocab + j]);
        CHECK(plus, "logprob_fused: a zero dlogp gives other than +0");
        CHECK(status == 0, "status %d", status);

        targets[3] = vocab;
        emu::launch(dim3(rows), dim3(256), 0, logprob_fused, flp.data(), flse.data(), fdl.data(),
                    (const float*)logits.data(), (const int*)targets.data(), (const float*)dlogp.data(), rows, vocab,
                    &status);
        CHECK(status == STATUS_TARGET && flp[3] == 0.0f, "logprob_fused: a bad target not reported");
        status = 0;
    }
}

// ---------------------------------------------------------------- sampling

// sample_ref is the documented rule, in float64.
static int sample_ref(const float* lr, int vocab, float T, int topK, float topP, float u) {
    if (T == 0) {
        int b = 0;
        for (int i = 1; i < vocab; i++)
            if (lr[i] > lr[b]) b = i;
        return b;
    }
    std::vector<double> x(vocab);
    double m = -INFINITY;
    for (int i = 0; i < vocab; i++) {
        x[i] = lr[i] / T;
        m = std::max(m, x[i]);
    }
    std::vector<int> rank(vocab);
    for (int i = 0; i < vocab; i++) rank[i] = i;
    std::stable_sort(rank.begin(), rank.end(), [&](int a, int b) { return x[a] > x[b]; });
    int c = (topK > 0 && topK < vocab) ? topK : vocab;
    if (topP < 1) {
        double Mk = 0;
        for (int r = 0; r < c; r++) Mk += std::exp(x[rank[r]] - m);
        double cum = 0;
        for (int r = 0; r < c; r++) {
            cum += std::exp(x[rank[r]] - m);
            if (cum >= topP * Mk) {
                c = r + 1;
                break;
            }
        }
    }
    std::vector<bool> kept(vocab, false);
    for (int r = 0; r < c; r++) kept[rank[r]] = true;
    double W = 0;
    for (int i = 0; i < vocab; i++)
        if (kept[i]) W += std::exp(x[i] - m);
    double cum = 0;
    int last = 0;
    for (int i = 0; i < vocab; i++)
        if (kept[i]) {
            cum += std::exp(x[i] - m);
            last = i;
            if (cum > u * W) return i;
        }
    return last;
}

static void test_sampling() {
    std::printf("sampling\n");
    struct Case {
        int vocab;
        float T;
        int topK;
        float topP;
    } cases[] = {{128, 1, 0, 1}, {128, 0.7f, 5, 1}, {128, 1.3f, 0, 0.8f}, {128, 1, 10, 0.5f}, {128, 0, 0, 1},
                 {5000, 1, 40, 0.9f}, {300, 1, 0, 1}, {1, 1, 1, 0.5f}, {64, 1, 64, 1}};
    for (auto& c : cases) {
        int rows = 24;
        // Well separated: logits spaced by at least 0.05, shuffled.
        std::vector<float> logits((size_t)rows * c.vocab);
        for (int r = 0; r < rows; r++) {
            std::vector<int> order(c.vocab);
            for (int i = 0; i < c.vocab; i++) order[i] = i;
            std::shuffle(order.begin(), order.end(), rng);
            for (int i = 0; i < c.vocab; i++) logits[r * c.vocab + order[i]] = -4.0f + 0.05f * i * 100.0f / c.vocab;
        }
        std::uniform_real_distribution<float> ud(0.0f, 1.0f);
        std::vector<float> u(rows);
        for (auto& e : u) e = ud(rng);
        std::vector<int> tok(rows, -1);
        std::vector<float> lp(rows, NaN);
        bool greedy = c.T == 0;
        float T = greedy ? 1.0f : c.T;
        int npow2 = 1;
        while (npow2 < c.vocab) npow2 <<= 1;
        bool trunc = (c.topK > 0 && c.topK < c.vocab) || c.topP < 1;
        bool inSmem = npow2 <= SAMPLE_SMEM_KEYS;
        std::vector<unsigned long long> scratch(trunc && !inSmem ? (size_t)rows * npow2 : 0);
        emu::launch(dim3(rows), dim3(256), trunc && inSmem ? (size_t)npow2 * 8 : 0, sample_rows, tok.data(),
                    lp.data(), (const float*)logits.data(), (const float*)u.data(), c.vocab, T, (int)greedy,
                    c.topK, c.topP, scratch.empty() ? nullptr : scratch.data(), npow2);
        int bad = 0;
        std::vector<double> wlp(rows);
        std::vector<float> glp(rows);
        for (int r = 0; r < rows; r++) {
            const float* lr = &logits[(size_t)r * c.vocab];
            int want = sample_ref(lr, c.vocab, c.T, c.topK, c.topP, u[r]);
            if (tok[r] != want) bad++;
            double m = -INFINITY, s = 0;
            for (int i = 0; i < c.vocab; i++) m = std::max(m, (double)(lr[i] / T));
            for (int i = 0; i < c.vocab; i++) s += std::exp(lr[i] / T - m);
            wlp[r] = lr[want] / T - (m + std::log(s));
            glp[r] = lp[r];
        }
        CHECK(bad == 0, "sampling vocab=%d T=%g topK=%d topP=%g: %d of %d tokens differ", c.vocab, c.T, c.topK,
              c.topP, bad, rows);
        CHECK_CLOSE("sample_rows logp", glp, wlp, 1e-6);
    }
    // Greedy ties go to the lower id.
    std::vector<float> lg = {1, 3, 3, 2};
    std::vector<int> tok(1, -1);
    std::vector<float> lp(1), u = {0.5f};
    emu::launch(dim3(1), dim3(256), 0, sample_rows, tok.data(), lp.data(), (const float*)lg.data(),
                (const float*)u.data(), 4, 1.0f, 1, 0, 1.0f, (unsigned long long*)nullptr, 4);
    CHECK(tok[0] == 1, "greedy tie: got %d", tok[0]);
    // Top-k ties go to the lower id: of four equal logits, top-2 keeps ids 0, 1.
    std::vector<float> eq = {2, 2, 2, 2};
    for (float uu : {0.1f, 0.9f}) {
        u[0] = uu;
        emu::launch(dim3(1), dim3(256), 32, sample_rows, tok.data(), lp.data(), (const float*)eq.data(),
                    (const float*)u.data(), 4, 1.0f, 0, 2, 1.0f, (unsigned long long*)nullptr, 4);
        CHECK(tok[0] == (uu < 0.5f ? 0 : 1), "top-k tie u=%g: got %d", uu, tok[0]);
    }
}

// ---------------------------------------------------------------- gemm

static void test_gemm() {
    std::printf("gemm\n");
    for (int tA = 0; tA < 2; tA++)
        for (int tB = 0; tB < 2; tB++)
            for (float beta : {0.0f, 0.5f}) {
                int m = 67, n = 45, k = 33, batch = 2;
                int lda = (tA ? m : k) + 3, ldb = (tB ? k : n) + 1, ldc = n + 2;
                long long sA = (long long)(tA ? k : m) * lda + 5, sB = (long long)(tB ? n : k) * ldb,
                          sC = (long long)m * ldc + 1;
                auto A = randn(sA * batch), B = randn(sB * batch), C = randn(sC * batch);
                if (beta == 0)
                    for (auto& c : C) c = NaN;
                const auto C0 = C;
                std::vector<double> want(C.begin(), C.end());
                float alpha = 1.25f;
                for (int z = 0; z < batch; z++)
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < n; j++) {
                            double s = 0;
                            for (int p = 0; p < k; p++) {
                                double a = tA ? A[z * sA + p * lda + i] : A[z * sA + i * lda + p];
                                double b = tB ? B[z * sB + j * ldb + p] : B[z * sB + p * ldb + j];
                                s += a * b;
                            }
                            double& c = want[z * sC + i * ldc + j];
                            c = alpha * s + (beta != 0 ? beta * c : 0.0);
                        }
                emu::launch(dim3(cdiv(n, 64), cdiv(m, 64), batch), dim3(256), 0, sgemm_tiled, tA, tB, m, n, k, alpha,
                            (const float*)A.data(), lda, sA, (const float*)B.data(), ldb, sB, beta, C.data(), ldc,
                            sC);
                // Only the written elements are compared when C held NaN.
                std::vector<float> got;
                std::vector<double> ref;
                for (int z = 0; z < batch; z++)
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < n; j++) {
                            got.push_back(C[z * sC + i * ldc + j]);
                            ref.push_back(want[z * sC + i * ldc + j]);
                        }
                char name[64];
                std::snprintf(name, sizeof name, "sgemm_tiled tA=%d tB=%d beta=%g", tA, tB, beta);
                CHECK_CLOSE(name, got, ref, 1e-6);

                // The TF32 twin, against float64 on the TF32-rounded inputs.
                auto C2 = C0;
                std::vector<double> want2(C0.begin(), C0.end());
                for (int z = 0; z < batch; z++)
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < n; j++) {
                            double s = 0;
                            for (int p = 0; p < k; p++) {
                                float a = tA ? A[z * sA + p * lda + i] : A[z * sA + i * lda + p];
                                float b = tB ? B[z * sB + j * ldb + p] : B[z * sB + p * ldb + j];
                                s += (double)nvcuda::wmma::__float_to_tf32(a) * nvcuda::wmma::__float_to_tf32(b);
                            }
                            double& c = want2[z * sC + i * ldc + j];
                            c = alpha * s + (beta != 0 ? beta * c : 0.0);
                        }
                emu::launch(dim3(cdiv(n, 64), cdiv(m, 64), batch), dim3(256), 0, sgemm_tiled_tf32, tA, tB, m, n, k,
                            alpha, (const float*)A.data(), lda, sA, (const float*)B.data(), ldb, sB, beta, C2.data(),
                            ldc, sC);
                std::vector<float> got2;
                std::vector<double> ref2;
                bool kept = true; // what lies between the written elements is left alone
                for (size_t x = 0; x < C2.size(); x++) {
                    const long r = (long)(x % sC), i = r / ldc, j = r % ldc;
                    if (i < m && j < n) {
                        got2.push_back(C2[x]);
                        ref2.push_back(want2[x]);
                    } else if (!(C2[x] == C0[x] || (std::isnan(C2[x]) && std::isnan(C0[x])))) {
                        kept = false;
                    }
                }
                std::snprintf(name, sizeof name, "sgemm_tiled_tf32 tA=%d tB=%d beta=%g", tA, tB, beta);
                CHECK_CLOSE(name, got2, ref2, 1e-6);
                CHECK(kept, "%s wrote outside C's m×n", name);
            }
}

// test_gemm_grouped checks sgemm_grouped and sgemm_grouped_t against float64
// on uneven groups (one empty, one spanning two row tiles), and that offsets
// which fall are reported and leave C alone.
static void test_gemm_grouped() {
    std::printf("gemm grouped\n");
    const std::vector<int> off = {0, 37, 37, 120, 165, 170};
    const int G = (int)off.size() - 1, rows = off[G], n = 70, k = 33;
    auto A = randn((size_t)rows * k), B = randn((size_t)G * k * n);
    for (int tB = 0; tB < 2; tB++)
        for (float beta : {0.0f, 1.0f}) {
            auto C = randn((size_t)rows * n);
            if (beta == 0)
                for (auto& c : C) c = NaN;
            std::vector<double> want(C.begin(), C.end());
            for (int g = 0; g < G; g++)
                for (int i = off[g]; i < off[g + 1]; i++)
                    for (int j = 0; j < n; j++) {
                        double s = 0;
                        for (int p = 0; p < k; p++)
                            s += (double)A[i * k + p] * (tB ? B[g * k * n + j * k + p] : B[g * k * n + p * n + j]);
                        want[i * n + j] = s + (beta != 0 ? want[i * n + j] : 0.0);
                    }
            int status = 0;
            emu::launch(dim3(cdiv(n, 64), cdiv(rows, 64) + G), dim3(256), 0, sgemm_grouped, tB, rows, n, k,
                        (const float*)A.data(), (const float*)B.data(), (long long)k * n, beta, C.data(),
                        off.data(), G, &status);
            char name[64];
            std::snprintf(name, sizeof name, "sgemm_grouped tB=%d beta=%g", tB, beta);
            CHECK_CLOSE(name, C, want, 1e-6);
            CHECK(status == 0, "%s: status %d", name, status);
        }

    // The TF32 twins: against float64 on the TF32-rounded inputs (the
    // indexing, to fp32 summation error), and within TF32's bound of the
    // unrounded product.
    auto tf32 = [](std::vector<float> v) {
        for (auto& x : v) x = nvcuda::wmma::__float_to_tf32(x);
        return v;
    };
    const auto Ar = tf32(A), Br = tf32(B);
    for (int tB = 0; tB < 2; tB++)
        for (float beta : {0.0f, 1.0f}) {
            auto C = randn((size_t)rows * n);
            std::vector<double> want(C.begin(), C.end()), exact(C.begin(), C.end());
            for (int g = 0; g < G; g++)
                for (int i = off[g]; i < off[g + 1]; i++)
                    for (int j = 0; j < n; j++) {
                        double s = 0, e = 0;
                        for (int p = 0; p < k; p++) {
                            const size_t bi = tB ? g * k * n + j * k + p : g * k * n + p * n + j;
                            s += (double)Ar[i * k + p] * Br[bi];
                            e += (double)A[i * k + p] * B[bi];
                        }
                        want[i * n + j] = s + (beta != 0 ? want[i * n + j] : 0.0);
                        exact[i * n + j] = e + (beta != 0 ? exact[i * n + j] : 0.0);
                    }
            int status = 0;
            emu::launch(dim3(cdiv(n, 64), cdiv(rows, 64) + G), dim3(256), 0, sgemm_grouped_tf32, tB, rows, n, k,
                        (const float*)A.data(), (const float*)B.data(), (long long)k * n, beta, C.data(),
                        off.data(), G, &status);
            char name[64];
            std::snprintf(name, sizeof name, "sgemm_grouped_tf32 tB=%d beta=%g", tB, beta);
            CHECK_CLOSE(name, C, want, 1e-6);
            std::snprintf(name, sizeof name, "  ... against fp32 inputs");
            CHECK_CLOSE(name, C, exact, 2e-3);
            CHECK(status == 0, "%s: status %d", name, status);
        }

    // The fused first layer: g and u must be sgemm_grouped's bits and s
    // swiglu_fwd's of them (fp32), and the TF32 twin within TF32's bound.
    auto B3 = randn((size_t)G * k * n);
    for (int tf = 0; tf < 2; tf++) {
        std::vector<float> g1(rows * n, NaN), u1(rows * n, NaN), s1(rows * n, NaN);
        std::vector<float> g2(rows * n, NaN), u2(rows * n, NaN), s2(rows * n, NaN);
        int status = 0;
        auto grouped = tf ? sgemm_grouped_tf32 : sgemm_grouped;
        emu::launch(dim3(cdiv(n, 64), cdiv(rows, 64) + G), dim3(256), 0, grouped, 0, rows, n, k, (const float*)A.data(),
                    (const float*)B.data(), (long long)k * n, 0.0f, g1.data(), off.data(), G, &status);
        emu::launch(dim3(cdiv(n, 64), cdiv(rows, 64) + G), dim3(256), 0, grouped, 0, rows, n, k, (const float*)A.data(),
                    (const float*)B3.data(), (long long)k * n, 0.0f, u1.data(), off.data(), G, &status);
        emu::launch(dim3(cdiv(rows * n, 256)), dim3(256), 0, swiglu_fwd, s1.data(), (const float*)g1.data(),
                    (const float*)u1.data(), rows * n);
        emu::launch(dim3(cdiv(n, 64), cdiv(rows, 64) + G), dim3(256), 0,
                    tf ? sgemm_grouped_swiglu_tf32 : sgemm_grouped_swiglu, rows, n, k, (const float*)A.data(),
                    (const int*)nullptr, 0, (const float*)B.data(), (const float*)B3.data(), (long long)k * n, g2.data(), u2.data(), s2.data(),
                    off.data(), G, &status);
        const char* name = tf ? "sgemm_grouped_swiglu_tf32" : "sgemm_grouped_swiglu";
        if (tf) {
            CHECK_CLOSE(name, s2, s1, 1e-6); // the same TF32 products, summed alike
        } else {
            CHECK(g2 == g1 && u2 == u1 && s2 == s1, "%s: not the bits of sgemm_grouped twice and swiglu_fwd", name);
            std::printf("  %-34s bit for bit the unfused kernels\n", name);
        }
        CHECK(status == 0, "%s: status %d", name, status);
    }

    // Its backward's first half: ds = dy·W2ᵀ and the SwiGLU's gradients,
    // against sgemm_grouped (transB) and swiglu_bwd into zeroed gradients.
    // Here dy is A (rows×k) and W2_g the n×k matrix at g·k·n of B.
    auto Gt = randn((size_t)rows * n), Ut = randn((size_t)rows * n);
    for (int tf = 0; tf < 2; tf++) {
        std::vector<float> ds1(rows * n, NaN), dg1(rows * n, 0.0f), du1(rows * n, 0.0f);
        std::vector<float> ds2(rows * n, NaN), dg2(rows * n, NaN), du2(rows * n, NaN);
        int status = 0;
        emu::launch(dim3(cdiv(n, 64), cdiv(rows, 64) + G), dim3(256), 0, tf ? sgemm_grouped_tf32 : sgemm_grouped, 1,
                    rows, n, k, (const float*)A.data(), (const float*)B.data(), (long long)k * n, 0.0f, ds1.data(),
                    off.data(), G, &status);
        emu::launch(dim3(cdiv(rows * n, 256)), dim3(256), 0, swiglu_bwd, dg1.data(), du1.data(),
                    (const float*)ds1.data(), (const float*)Gt.data(), (const float*)Ut.data(), rows * n);
        emu::launch(dim3(cdiv(n, 64), cdiv(rows, 64) + G), dim3(256), 0,
                    tf ? sgemm_grouped_swiglu_bwd_tf32 : sgemm_grouped_swiglu_bwd, rows, n, k, (const float*)A.data(),
                    (const float*)B.data(), (long long)k * n, (const float*)Gt.data(), (const float*)Ut.data(),
                    ds2.data(), dg2.data(), du2.data(), off.data(), G, &status);
        const char* name = tf ? "sgemm_grouped_swiglu_bwd_tf32" : "sgemm_grouped_swiglu_bwd";
        CHECK(ds2 == ds1 && dg2 == dg1 && du2 == du1, "%s: not the bits of sgemm_grouped and swiglu_bwd", name);
        std::printf("  %-34s bit for bit the unfused kernels\n", name);
        CHECK(status == 0, "%s: status %d", name, status);
    }

    auto Bt = randn((size_t)rows * n), Ct = randn((size_t)G * k * n);
    std::vector<double> want(Ct.begin(), Ct.end());
    for (int g = 0; g < G; g++)
        for (int p = 0; p < k; p++)
            for (int j = 0; j < n; j++)
                for (int i = off[g]; i < off[g + 1]; i++)
                    want[(size_t)g * k * n + p * n + j] += (double)A[i * k + p] * Bt[i * n + j];
    int status = 0;
    emu::launch(dim3(cdiv(n, 64), cdiv(k, 64), G), dim3(256), 0, sgemm_grouped_t, rows, k, n, (const float*)A.data(),
                (const int*)nullptr, 0, (const float*)Bt.data(), Ct.data(), off.data(), G, &status);
    CHECK_CLOSE("sgemm_grouped_t", Ct, want, 1e-6);
    CHECK(status == 0, "sgemm_grouped_t: status %d", status);

    const auto Btr = tf32(Bt);
    auto Ct2 = randn((size_t)G * k * n);
    std::vector<double> want2(Ct2.begin(), Ct2.end());
    for (int g = 0; g < G; g++)
        for (int p = 0; p < k; p++)
            for (int j = 0; j < n; j++)
                for (int i = off[g]; i < off[g + 1]; i++)
                    want2[(size_t)g * k * n + p * n + j] += (double)Ar[i * k + p] * Btr[i * n + j];
    emu::launch(dim3(cdiv(n, 64), cdiv(k, 64), G), dim3(256), 0, sgemm_grouped_t_tf32, rows, k, n,
                (const float*)A.data(), (const int*)nullptr, 0, (const float*)Bt.data(), Ct2.data(), off.data(), G,
                &status);
    CHECK_CLOSE("sgemm_grouped_t_tf32", Ct2, want2, 1e-6);
    CHECK(status == 0, "sgemm_grouped_t_tf32: status %d", status);

    const std::vector<int> bad = {0, 50, 40, 120, 165, 170};
    auto C = randn((size_t)rows * n), before = C;
    emu::launch(dim3(cdiv(n, 64), cdiv(rows, 64) + G), dim3(256), 0, sgemm_grouped, 0, rows, n, k,
                (const float*)A.data(), (const float*)B.data(), (long long)k * n, 0.0f, C.data(), bad.data(), G,
                &status);
    CHECK(status == STATUS_GROUP_OFFSETS, "sgemm_grouped with falling offsets: status %d, want %d", status,
          STATUS_GROUP_OFFSETS);
    // Groups before the fall may be written; the fall itself and after not.
    bool kept = true;
    for (int i = 50; i < rows; i++)
        for (int j = 0; j < n; j++) kept = kept && C[i * n + j] == before[i * n + j];
    CHECK(kept, "sgemm_grouped wrote rows past offsets that fall");
}

// test_gemm_bf16 checks the bf16 twins: against float64 on the
// bf16-rounded inputs (the indexing and staging, to fp32 summation error),
// within bf16's bound of the unrounded product, and the fused kernels
// against the unfused bf16 kernels. It also checks the casts.
static void test_gemm_bf16() {
    std::printf("gemm bf16, cast\n");
    auto bf = [](std::vector<float> v) {
        for (auto& x : v) x = __bfloat162float(__float2bfloat16_rn(x));
        return v;
    };
    {
        // cast_f32_bf16 and back is the rounding, bf16_bits is __float2bfloat16_rn on finite inputs.
        auto x = randn(5000, 30.0f);
        std::vector<bf16> h(x.size());
        std::vector<float> back(x.size(), NaN);
        emu::launch(dim3(cdiv(x.size(), 256)), dim3(256), 0, cast_f32_bf16, h.data(), (const float*)x.data(),
                    (int)x.size());
        emu::launch(dim3(cdiv(x.size(), 256)), dim3(256), 0, cast_bf16_f32, back.data(), (const bf16*)h.data(),
                    (int)x.size());
        CHECK(back == bf(x), "cast_f32_bf16 then cast_bf16_f32: not the nearest-even bf16 values");
        std::printf("  %-34s bit for bit the rounding\n", "cast_f32_bf16, cast_bf16_f32");
    }

    // sgemm_tiled_bf16, every transpose, beta 0 over NaN and beta 1.
    for (int tA = 0; tA < 2; tA++)
        for (int tB = 0; tB < 2; tB++)
            for (float beta : {0.0f, 1.0f}) {
                const int m = 70, n = 45, k = 37;
                auto A = randn((size_t)m * k), B = randn((size_t)k * n), C = randn((size_t)m * n);
                if (beta == 0)
                    for (auto& c : C) c = NaN;
                const auto Ar = bf(A), Br = bf(B);
                const int lda = tA ? m : k, ldb = tB ? k : n;
                std::vector<double> want(C.begin(), C.end()), exact(C.begin(), C.end());
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++) {
                        double s = 0, e = 0;
                        for (int p = 0; p < k; p++) {
                            const size_t ai = tA ? (size_t)p * lda + i : (size_t)i * lda + p;
                            const size_t bi = tB ? (size_t)j * ldb + p : (size_t)p * ldb + j;
                            s += (double)Ar[ai] * Br[bi];
                            e += (double)A[ai] * B[bi];
                        }
                        want[i * n + j] = 0.5 * s + (beta != 0 ? want[i * n + j] : 0.0);
                        exact[i * n + j] = 0.5 * e + (beta != 0 ? exact[i * n + j] : 0.0);
                    }
                emu::launch(dim3(cdiv(n, 64), cdiv(m, 64), 1), dim3(256), 0, sgemm_tiled_bf16, tA, tB, m, n, k, 0.5f,
                            (const float*)A.data(), lda, 0LL, (const float*)B.data(), ldb, 0LL, beta, C.data(), n, 0LL);
                char name[64];
                std::snprintf(name, sizeof name, "sgemm_tiled_bf16 tA=%d tB=%d beta=%g", tA, tB, beta);
                CHECK_CLOSE(name, C, want, 1e-6);
                std::snprintf(name, sizeof name, "  ... against fp32 inputs");
                CHECK_CLOSE(name, C, exact, 1e-2);
            }

    // The grouped twins on uneven groups (one empty, one over two row tiles).
    const std::vector<int> off = {0, 37, 37, 120, 165, 170};
    const int G = (int)off.size() - 1, rows = off[G], n = 70, k = 33;
    auto A = randn((size_t)rows * k), B = randn((size_t)G * k * n), B3 = randn((size_t)G * k * n);
    const auto Ar = bf(A), Br = bf(B);
    for (int tB = 0; tB < 2; tB++) {
        std::vector<float> C(rows * n, NaN);
        std::vector<double> want(C.size()), exact(C.size());
        for (int g = 0; g < G; g++)
            for (int i = off[g]; i < off[g + 1]; i++)
                for (int j = 0; j < n; j++) {
                    double s = 0, e = 0;
                    for (int p = 0; p < k; p++) {
                        const size_t bi = tB ? g * k * n + j * k + p : g * k * n + p * n + j;
                        s += (double)Ar[i * k + p] * Br[bi];
                        e += (double)A[i * k + p] * B[bi];
                    }
                    want[i * n + j] = s;
                    exact[i * n + j] = e;
                }
        int status = 0;
        emu::launch(dim3(cdiv(n, 64), cdiv(rows, 64) + G), dim3(256), 0, sgemm_grouped_bf16, tB, rows, n, k,
                    (const float*)A.data(), (const float*)B.data(), (long long)k * n, 0.0f, C.data(), off.data(), G,
                    &status);
        char name[64];
        std::snprintf(name, sizeof name, "sgemm_grouped_bf16 tB=%d", tB);
        CHECK_CLOSE(name, C, want, 1e-6);
        std::snprintf(name, sizeof name, "  ... against fp32 inputs");
        CHECK_CLOSE(name, C, exact, 1e-2);
        CHECK(status == 0, "sgemm_grouped_bf16: status %d", status);
    }
    {
        // The fused first layer and its backward against the unfused bf16 kernels.
        std::vector<float> g1(rows * n, NaN), u1(rows * n, NaN), s1(rows * n, NaN);
        std::vector<float> g2(rows * n, NaN), u2(rows * n, NaN), s2(rows * n, NaN);
        int status = 0;
        emu::launch(dim3(cdiv(n, 64), cdiv(rows, 64) + G), dim3(256), 0, sgemm_grouped_bf16, 0, rows, n, k,
                    (const float*)A.data(), (const float*)B.data(), (long long)k * n, 0.0f, g1.data(), off.data(), G,
                    &status);
        emu::launch(dim3(cdiv(n, 64), cdiv(rows, 64) + G), dim3(256), 0, sgemm_grouped_bf16, 0, rows, n, k,
                    (const float*)A.data(), (const float*)B3.data(), (long long)k * n, 0.0f, u1.data(), off.data(), G,
                    &status);
        emu::launch(dim3(cdiv(rows * n, 256)), dim3(256), 0, swiglu_fwd, s1.data(), (const float*)g1.data(),
                    (const float*)u1.data(), rows * n);
        emu::launch(dim3(cdiv(n, 64), cdiv(rows, 64) + G), dim3(256), 0, sgemm_grouped_swiglu_bf16, rows, n, k,
                    (const float*)A.data(), (const int*)nullptr, 0, (const float*)B.data(), (const float*)B3.data(),
                    (long long)k * n,
                    g2.data(), u2.data(), s2.data(), off.data(), G, &status);
        CHECK_CLOSE("sgemm_grouped_swiglu_bf16", s2, s1, 1e-6);
        CHECK(status == 0, "sgemm_grouped_swiglu_bf16: status %d", status);

        auto Gt = randn((size_t)rows * n), Ut = randn((size_t)rows * n);
        std::vector<float> ds1(rows * n, NaN), dg1(rows * n, 0.0f), du1(rows * n, 0.0f);
        std::vector<float> ds2(rows * n, NaN), dg2(rows * n, NaN), du2(rows * n, NaN);
        emu::launch(dim3(cdiv(n, 64), cdiv(rows, 64) + G), dim3(256), 0, sgemm_grouped_bf16, 1, rows, n, k,
                    (const float*)A.data(), (const float*)B.data(), (long long)k * n, 0.0f, ds1.data(), off.data(), G,
                    &status);
        emu::launch(dim3(cdiv(rows * n, 256)), dim3(256), 0, swiglu_bwd, dg1.data(), du1.data(),
                    (const float*)ds1.data(), (const float*)Gt.data(), (const float*)Ut.data(), rows * n);
        emu::launch(dim3(cdiv(n, 64), cdiv(rows, 64) + G), dim3(256), 0, sgemm_grouped_swiglu_bwd_bf16, rows, n, k,
                    (const float*)A.data(), (const float*)B.data(), (long long)k * n, (const float*)Gt.data(),
                    (const float*)Ut.data(), ds2.data(), dg2.data(), du2.data(), off.data(), G, &status);
        CHECK(ds2 == ds1 && dg2 == dg1 && du2 == du1,
              "sgemm_grouped_swiglu_bwd_bf16: not the bits of sgemm_grouped_bf16 and swiglu_bwd");
        std::printf("  %-34s bit for bit the unfused kernels\n", "sgemm_grouped_swiglu_bwd_bf16");
        CHECK(status == 0, "sgemm_grouped_swiglu_bwd_bf16: status %d", status);
    }
    {
        // The weight gradients: C_g += A_gᵀ·B_g over each group's rows.
        auto Bt = randn((size_t)rows * n), Ct = randn((size_t)G * k * n);
        const auto Btr = bf(Bt);
        std::vector<double> want(Ct.begin(), Ct.end()), exact(Ct.begin(), Ct.end());
        for (int g = 0; g < G; g++)
            for (int p = 0; p < k; p++)
                for (int j = 0; j < n; j++)
                    for (int i = off[g]; i < off[g + 1]; i++) {
                        want[(size_t)g * k * n + p * n + j] += (double)Ar[i * k + p] * Btr[i * n + j];
                        exact[(size_t)g * k * n + p * n + j] += (double)A[i * k + p] * Bt[i * n + j];
                    }
        int status = 0;
        emu::launch(dim3(cdiv(n, 64), cdiv(k, 64), G), dim3(256), 0, sgemm_grouped_t_bf16, rows, k, n,
                    (const float*)A.data(), (const int*)nullptr, 0, (const float*)Bt.data(), Ct.data(), off.data(), G,
                    &status);
        CHECK_CLOSE("sgemm_grouped_t_bf16", Ct, want, 1e-6);
        CHECK_CLOSE("  ... against fp32 inputs", Ct, exact, 1e-2);
        CHECK(status == 0, "sgemm_grouped_t_bf16: status %d", status);
    }
}

// test_gemm_gathered checks that sgemm_grouped_swiglu and sgemm_grouped_t,
// reading A through row indices, give the bits of gather_fwd followed by
// the same kernel on the gathered copy, in every precision, and that an
// index out of range is reported and leaves the output alone.
static void test_gemm_gathered() {
    std::printf("gemm gathered\n");
    const std::vector<int> off = {0, 37, 37, 120, 165, 170};
    const int G = (int)off.size() - 1, rows = off[G], n = 70, k = 33, tokens = 90;
    auto X = randn((size_t)tokens * k), B1 = randn((size_t)G * k * n), B3 = randn((size_t)G * k * n);
    auto perm = randint(rows, 0, tokens);
    std::vector<float> Xp((size_t)rows * k, NaN);
    int status = 0;
    emu::launch(dim3(rows), dim3(block_for(k)), 0, gather_fwd, Xp.data(), (const float*)X.data(),
                (const int*)perm.data(), rows, k, tokens, &status);
    using swiglu_t = decltype(&sgemm_grouped_swiglu);
    using gt_t = decltype(&sgemm_grouped_t);
    const struct {
        const char* name;
        swiglu_t sw;
        gt_t t;
    } precs[] = {{"fp32", sgemm_grouped_swiglu, sgemm_grouped_t},
                 {"tf32", sgemm_grouped_swiglu_tf32, sgemm_grouped_t_tf32},
                 {"bf16", sgemm_grouped_swiglu_bf16, sgemm_grouped_t_bf16}};
    auto Dy = randn((size_t)rows * n);
    for (const auto& p : precs) {
        std::vector<float> g1(rows * n, NaN), u1(rows * n, NaN), s1(rows * n, NaN);
        std::vector<float> g2(rows * n, NaN), u2(rows * n, NaN), s2(rows * n, NaN);
        const dim3 grid(cdiv(n, 64), cdiv(rows, 64) + G);
        emu::launch(grid, dim3(256), 0, p.sw, rows, n, k, (const float*)Xp.data(), (const int*)nullptr, 0,
                    (const float*)B1.data(), (const float*)B3.data(), (long long)k * n, g1.data(), u1.data(), s1.data(),
                    off.data(), G, &status);
        emu::launch(grid, dim3(256), 0, p.sw, rows, n, k, (const float*)X.data(), (const int*)perm.data(), tokens,
                    (const float*)B1.data(), (const float*)B3.data(), (long long)k * n, g2.data(), u2.data(), s2.data(),
                    off.data(), G, &status);
        CHECK(g2 == g1 && u2 == u1 && s2 == s1, "sgemm_grouped_swiglu (%s), gathered: not the bits of the gathered copy",
              p.name);
        std::vector<float> c1((size_t)G * k * n, 0.0f), c2((size_t)G * k * n, 0.0f);
        emu::launch(dim3(cdiv(n, 64), cdiv(k, 64), G), dim3(256), 0, p.t, rows, k, n, (const float*)Xp.data(),
                    (const int*)nullptr, 0, (const float*)Dy.data(), c1.data(), off.data(), G, &status);
        emu::launch(dim3(cdiv(n, 64), cdiv(k, 64), G), dim3(256), 0, p.t, rows, k, n, (const float*)X.data(),
                    (const int*)perm.data(), tokens, (const float*)Dy.data(), c2.data(), off.data(), G, &status);
        CHECK(c2 == c1, "sgemm_grouped_t (%s), gathered: not the bits of the gathered copy", p.name);
        CHECK(status == 0, "gathered (%s): status %d", p.name, status);
        std::printf("  %-34s bit for bit the gathered copy (%s)\n", "sgemm_grouped_swiglu, _t", p.name);
    }
    auto bad = perm;
    bad[50] = tokens; // one past the token rows
    std::vector<float> c((size_t)G * k * n, 0.0f);
    emu::launch(dim3(cdiv(n, 64), cdiv(k, 64), G), dim3(256), 0, sgemm_grouped_t, rows, k, n, (const float*)X.data(),
                (const int*)bad.data(), tokens, (const float*)Dy.data(), c.data(), off.data(), G, &status);
    CHECK(status == STATUS_GATHER_INDEX, "sgemm_grouped_t with an index past the rows: status %d, want %d", status,
          STATUS_GATHER_INDEX);
    bool untouched = true;
    for (int p = 0; p < k * n; p++) untouched = untouched && c[(size_t)2 * k * n + p] == 0.0f; // group 2 holds row 50
    CHECK(untouched, "sgemm_grouped_t with a bad index wrote the group that holds it");
}

int main() {
    test_reduce();
    test_adamw_swiglu();
    test_sort();
    test_embedding();
    test_rmsnorm();
    test_rope();
    test_attention();
    test_router();
    test_routing();
    test_gather_combine();
    test_logprob();
    test_sampling();
    test_gemm();
    test_gemm_grouped();
    test_gemm_bf16();
    test_gemm_gathered();
    if (failures) {
        std::printf("emu-test: %d failures\n", failures);
        return 1;
    }
    std::printf("emu-test: all kernels match their references\n");
    return 0;
}
