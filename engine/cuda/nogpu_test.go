package cuda

// Tests that need no GPU: the launchers against the PTX through the fake
// driver, the GEMM mapping through the fake cuBLAS, the argument packing,
// the allocator, the validation of bad calls, capture, and Available on a
// machine without CUDA.

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/kernels"
)

func newFake(t *testing.T, withBlas bool) (*Backend, *fakeDriver, *fakeBlas) {
	t.Helper()
	f := newFakeDriver()
	var bl blas
	var fb *fakeBlas
	if withBlas {
		fb = &fakeBlas{drv: f}
		bl = fb
	}
	b, err := newBackend(f, bl, "cuBLAS off (test)", 0)
	if err != nil {
		t.Fatalf("newBackend on the fake driver: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b, f, fb
}

// TestAvailableWithoutGPU checks that a machine without CUDA gets a clear
// error, not a crash: from Available and from New.
func TestAvailableWithoutGPU(t *testing.T) {
	err := Available()
	if err == nil {
		t.Skip("CUDA is available here; this test is for machines without it")
	}
	t.Logf("skip reason the GPU tests print: %v", err)
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("Available() = %v, want an error wrapping ErrUnavailable", err)
	}
	if !strings.HasPrefix(err.Error(), "CUDA unavailable: ") {
		t.Errorf("Available() = %q, want it to start with %q", err, "CUDA unavailable: ")
	}
	b, nerr := New()
	if b != nil || nerr == nil || !errors.Is(nerr, ErrUnavailable) {
		t.Errorf("New() = %v, %v; want nil and the unavailable error", b, nerr)
	}
}

// TestLibrariesWithoutDevice calls the real libcuda and cuBLAS through
// purego where they are installed but no GPU is (as on a build machine with
// the toolkit): out-parameters, error names and the cuBLAS status path.
func TestLibrariesWithoutDevice(t *testing.T) {
	if Available() == nil {
		t.Skip("a GPU is present; the GPU tests cover the libraries")
	}
	l, err := openLibcuda()
	if err != nil {
		t.Skipf("no driver library: %v", err)
	}
	v, err := l.driverVersion()
	if err != nil || v < 1000 {
		t.Errorf("cuDriverGetVersion = %d, %v", v, err)
	}
	for code, want := range map[int]string{cudaErrorOutOfMemory: "CUDA_ERROR_OUT_OF_MEMORY",
		cudaErrorNoDevice: "CUDA_ERROR_NO_DEVICE", 12345: "CUresult(12345)"} {
		if got := l.errorName(code); got != want {
			t.Errorf("errorName(%d) = %q, want %q", code, got, want)
		}
	}
	t.Logf("libcuda.so.1: driver API %d.%d", v/1000, v%1000/10)
	bl, why, err := openCublas()
	if err != nil || bl == nil {
		t.Logf("cuBLAS: %s %v", why, err)
		return
	}
	h, err := bl.create()
	var cerr *Error
	if err == nil {
		bl.destroy(h)
		t.Errorf("cublasCreate_v2 succeeded without a device")
	} else if !errors.As(err, &cerr) || !strings.HasPrefix(cerr.Name, "CUBLAS_STATUS_") {
		t.Errorf("cublasCreate_v2 without a device: %v, want a CUBLAS_STATUS_ error", err)
	}
	t.Logf("%s: cublasCreate_v2 without a device: %v", bl.library(), err)
}

// TestLauncherNamesInPTX reads this package's source and checks that every
// kernel name a launcher passes to launch is an entry of the embedded PTX
// (a name built as "prefix"+suffix must match some entry's prefix).
func TestLauncherNamesInPTX(t *testing.T) {
	entries := map[string]bool{}
	for _, m := range kernels.Modules {
		ptx, err := kernels.PTX(m.Name)
		if err != nil {
			t.Fatal(err)
		}
		es, err := kernels.Entries(ptx)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			entries[e.Name] = true
		}
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(files, "ops.go") {
		t.Skip("the package's sources are not here (a test binary run elsewhere)")
	}
	fset := token.NewFileSet()
	calls := 0
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "launch" || len(call.Args) == 0 {
				return true
			}
			calls++
			pos := fset.Position(call.Pos())
			switch arg := call.Args[0].(type) {
			case *ast.BasicLit:
				name, _ := strconv.Unquote(arg.Value)
				if !entries[name] {
					t.Errorf("%s: launch(%q): no such kernel in the embedded PTX", pos, name)
				}
			case *ast.BinaryExpr:
				x := arg.X // the leftmost operand of "prefix" + a + b + …
				for b, ok := x.(*ast.BinaryExpr); ok; b, ok = x.(*ast.BinaryExpr) {
					x = b.X
				}
				lit, ok := x.(*ast.BasicLit)
				if !ok {
					t.Errorf("%s: kernel name is not a literal prefix plus a suffix", pos)
					return true
				}
				prefix, _ := strconv.Unquote(lit.Value)
				found := false
				for e := range entries {
					found = found || strings.HasPrefix(e, prefix)
				}
				if !found {
					t.Errorf("%s: no kernel in the PTX starts with %q", pos, prefix)
				}
			case *ast.Ident:
				// A variable (the RoPE launcher's); its values are literals
				// passed at the call sites, checked by TestEveryKernelLaunches.
			default:
				t.Errorf("%s: launch with a kernel name of form %T", pos, arg)
			}
			return true
		})
	}
	if calls < 30 {
		t.Errorf("found only %d launch calls; did the launcher's name change?", calls)
	}
}

// exercise calls every Backend op at small valid shapes (several variants
// where the launcher picks different kernels).
func exercise(t *testing.T, be engine.Backend) {
	t.Helper()
	f := func(shape ...int) *engine.Tensor { return be.NewF32(shape...) }
	i := func(n int, vals ...int32) *engine.Tensor {
		x := be.NewI32(n)
		if len(vals) > 0 {
			be.UploadI32(x, vals)
		}
		return x
	}
	be.Gemm(false, false, 5, 6, 7, 1, f(5*7), 0, 7, f(7*6), 0, 6, 0, f(5*6), 0, 6)
	be.Gemm(true, true, 5, 6, 7, 1, f(7*5), 0, 5, f(6*7), 0, 7, 0.5, f(5*6), 0, 6)
	be.Gemm(false, false, 3, 3, 0, 1, f(9), 0, 3, f(9), 0, 3, 0.5, f(9), 0, 3)
	be.GemmBatched(false, true, 4, 5, 6, 1, f(3*24), 0, 6, 24, f(3*30), 0, 6, 30, 0, f(3*20), 0, 5, 20, 3)
	x := f(100)
	be.Add(x, f(100), 100)
	be.Scale(x, 100, 2)
	_ = be.SumSquares(x, 100)
	be.Zero(x)
	be.Copy(x, f(100))

	be.Embedding(f(3*4), f(10*4), i(3, 1, 2, 1), 3, 4)
	be.EmbeddingBackward(f(10*4), f(3*4), i(3, 1, 2, 1), 3, 4)
	be.EmbeddingBackward(f(300*4), f(3*4), i(3, 299, 2, 1), 3, 4) // two radix passes
	be.RMSNorm(f(6*8), f(6), f(6*8), f(8), 6, 8, 1e-5)
	be.RMSNormBackward(f(6*8), f(8), f(6*8), f(6*8), f(8), f(6), 6, 8)
	be.ResidualRMSNorm(f(6*8), f(6*8), f(6), f(6*8), f(6*8), f(8), 6, 8, 1e-5)
	be.RoPE(f(2*3*8), i(2, 0, 5), 2, 3, 8, 10000)
	be.RoPEBackward(f(2*3*8), i(2, 0, 5), 2, 3, 8, 10000)
	for _, hd := range []int{16, 64, 128} {
		n := 2 * 5 * 3 * hd
		be.Attention(f(n), f(2*3*5), f(n), f(n), f(n), 2, 5, 3, hd)
		be.AttentionBackward(f(n), f(n), f(n), f(n), f(n), f(n), f(n), f(n), f(2*3*5), 2, 5, 3, hd)
		be.AttentionDecode(f(2*3*hd), f(2*3*hd), f(2*9*3*hd), f(2*9*3*hd), i(2, 4, 9), 2, 9, 3, hd)
	}
	be.SwiGLU(f(10), f(10), f(10), 10)
	be.SwiGLUBackward(f(10), f(10), f(10), f(10), f(10), 10)
	be.RouterTopK(f(4*2), i(4*2), f(4*8), f(4*8), 4, 8, 2)
	be.RouterTopKBackward(f(4*8), f(4*2), f(4*2), i(4*2, 0, 1, 2, 3, 4, 5, 6, 7), f(4*8), 4, 8, 2)
	be.SoftmaxBackward(f(4*8), f(4*8), f(4*8), 4, 8)
	offsets := i(9, 0, 1, 2, 3, 4, 5, 6, 7, 8)
	be.RouterDispatch(i(8), i(8), i(9), i(8, 0, 1, 2, 3, 4, 5, 6, 7), 4, 8, 2)
	be.RouterLoad(f(16), f(4*8), offsets, 4, 8)
	be.GemmGrouped(false, 8, 5, 3, f(8*3), f(8*3*5), 15, 0, f(8*5), offsets, 8)
	be.GemmGrouped(true, 8, 5, 3, f(8*3), f(8*3*5), 15, 1, f(8*5), offsets, 8)
	be.GemmGroupedT(8, 3, 5, f(8*3), nil, f(8*5), f(8*3*5), offsets, 8)
	be.GemmGroupedSwiGLU(8, 5, 3, f(8*3), nil, f(8*3*5), f(8*3*5), 15, f(8*5), f(8*5), f(8*5), offsets, 8)
	gathered := i(8, 0, 0, 1, 1, 2, 2, 3, 3) // 4 tokens' rows, twice each
	be.GemmGroupedT(8, 3, 5, f(4*3), gathered, f(8*5), f(8*3*5), offsets, 8)
	be.GemmGroupedSwiGLU(8, 5, 3, f(4*3), gathered, f(8*3*5), f(8*3*5), 15, f(8*5), f(8*5), f(8*5), offsets, 8)
	be.GemmGroupedSwiGLUBackward(8, 5, 3, f(8*3), f(8*3*5), 15, f(8*5), f(8*5), f(8*5), f(8*5), f(8*5), offsets, 8)
	if cb, ok := be.(*Backend); ok { // the GEMM kernels' twins in the other precisions
		was := cb.GEMMPrecision()
		for _, p := range []GEMMPrecision{GEMMFP32, GEMMTF32, GEMMBF16} {
			if p == was {
				continue
			}
			if err := cb.SetGEMMPrecision(p); err != nil {
				t.Fatal(err)
			}
			be.GemmGrouped(false, 8, 5, 3, f(8*3), f(8*3*5), 15, 0, f(8*5), offsets, 8)
			be.GemmGroupedT(8, 3, 5, f(8*3), nil, f(8*5), f(8*3*5), offsets, 8)
			be.GemmGroupedSwiGLU(8, 5, 3, f(8*3), nil, f(8*3*5), f(8*3*5), 15, f(8*5), f(8*5), f(8*5), offsets, 8)
			be.GemmGroupedSwiGLUBackward(8, 5, 3, f(8*3), f(8*3*5), 15, f(8*5), f(8*5), f(8*5), f(8*5), f(8*5), offsets, 8)
			be.Gemm(false, true, 5, 6, 7, 1, f(5*7), 0, 7, f(6*7), 0, 7, 0, f(5*6), 0, 6)
		}
		for _, p := range []GEMMPrecision{GEMMFP32, GEMMTF32, GEMMBF16} { // bf16 weights, every precision
			if err := cb.SetGEMMPrecision(p); err != nil {
				t.Fatal(err)
			}
			w := be.New(engine.BF16, 8*3*5)
			be.GemmGrouped(false, 8, 5, 3, f(8*3), w, 15, 0, f(8*5), offsets, 8)
			be.GemmGroupedSwiGLU(8, 5, 3, f(8*3), nil, w, w, 15, f(8*5), f(8*5), f(8*5), offsets, 8)
		}
		if err := cb.SetGEMMPrecision(GEMMBF16); err != nil { // bf16 storage of what only bf16 GEMMs read
			t.Fatal(err)
		}
		h16 := func(n int) *engine.Tensor { return be.New(engine.BF16, n) }
		w := h16(8 * 3 * 5)
		be.GemmGroupedSwiGLU(8, 5, 3, f(8*3), nil, w, w, 15, f(8*5), f(8*5), h16(8*5), offsets, 8)
		be.GemmGrouped(false, 8, 5, 3, h16(8*3), w, 15, 0, f(8*5), offsets, 8)
		be.GemmGroupedT(8, 3, 5, h16(8*3), nil, f(8*5), f(8*3*5), offsets, 8)
		be.GemmGroupedT(8, 3, 5, f(4*3), gathered, h16(8*5), f(8*3*5), offsets, 8)
		be.GemmGroupedT(8, 3, 5, h16(8*3), nil, h16(8*5), f(8*3*5), offsets, 8)
		be.GemmGroupedSwiGLUBackward(8, 5, 3, h16(8*3), w, 15, f(8*5), f(8*5), nil, h16(8*5), h16(8*5), offsets, 8)
		be.GemmGroupedSwiGLU(8, 5, 3, f(8*3), nil, w, w, 15, h16(8*5), h16(8*5), h16(8*5), offsets, 8)
		be.GemmGroupedSwiGLUBackward(8, 5, 3, h16(8*3), w, 15, h16(8*5), h16(8*5), nil, h16(8*5), h16(8*5), offsets, 8)
		be.CombineBackward(h16(8*5), f(8), f(4*5), f(8*5), f(8), i(8, 0, 1, 2, 3, 4, 5, 6, 7), 4, 2, 5)
		if err := cb.SetGEMMPrecision(was); err != nil {
			t.Fatal(err)
		}
	}
	be.Gather(f(8*5), f(4*5), i(8, 0, 0, 1, 1, 2, 2, 3, 3), 8, 5)
	inv := i(8, 0, 1, 2, 3, 4, 5, 6, 7)
	be.GatherBackward(f(4*5), f(8*5), inv, 4, 2, 5)
	be.Combine(f(4*5), f(8*5), f(8), inv, 4, 2, 5)
	be.CombineBackward(f(8*5), f(8), f(4*5), f(8*5), f(8), inv, 4, 2, 5)
	be.ScatterRows(f(10*5), f(2*5), i(2, 7, 3), 2, 5)
	be.TokenLogProbs(f(3), f(3), f(3*11), i(3, 1, 2, 10), 3, 11)
	be.TokenLogProbsBackward(f(3*11), f(3), f(3*11), f(3), i(3, 1, 2, 10), 3, 11)
	be.TokenLogProbsFused(f(3), f(3), f(3*11), f(3*11), i(3, 1, 2, 10), f(3), 3, 11)
	be.Entropy(f(3), f(3*11), f(3), 3, 11)
	be.AdamW(f(10), f(10), f(10), f(10), 10, 7, 0.5, 1e-3, 0.9, 0.95, 1e-8, 0.1, 3)
	h := be.New(engine.BF16, 5) // bf16: 2-byte elements in the casts, the copy and an odd view's memset
	be.Cast(h, f(5), 5)
	be.Cast(f(5), h, 5)
	be.Copy(be.New(engine.BF16, 5), h)
	be.Zero(h.View(1, 3))
	for _, s := range []struct {
		vocab, topK int
		temp, topP  float32
	}{{11, 0, 1, 1}, {11, 3, 0.7, 1}, {11, 0, 1, 0.5}, {11, 0, 0, 1}, {5000, 40, 1, 0.9}} {
		be.Sample(i(2), f(2), f(2*s.vocab), f(2), 2, s.vocab, s.temp, s.topK, s.topP)
	}
	// kernels/routing.cu (engine/cuda/routing.go).
	be.RouterReplay(f(4*2), i(4*2), f(4*8), i(4*2, 1, 0, -1, -1, 7, 2, 3, 4), 4, 8, 2)
	be.EntropyBackward(f(3*11), f(3), f(3*11), f(3), f(3), 3, 11)
}

// TestEveryKernelLaunches runs every op on the fake driver: each launch is
// checked against its kernel's PTX (parameter count, types, sizes,
// alignment, pointers into device memory, block and shared-memory limits),
// and every kernel of every module must be launched by some op, with and
// without cuBLAS.
func TestEveryKernelLaunches(t *testing.T) {
	b, f, _ := newFake(t, false)
	exercise(t, b)
	if err := b.Sync(); err != nil {
		t.Fatalf("ops on the fake driver: %v", err)
	}
	got := f.launched()
	t.Logf("%d launches of %d kernels", len(f.launches), len(got))

	b2, f2, fb := newFake(t, true)
	exercise(t, b2)
	if err := b2.Sync(); err != nil {
		t.Fatalf("ops on the fake driver with cuBLAS: %v", err)
	}
	for k, n := range f2.launched() {
		got[k] += n
	}
	for _, m := range kernels.Modules {
		for _, k := range m.Kernels {
			if got[k] == 0 {
				t.Errorf("kernel %s (module %s) is never launched", k, m.Name)
			}
		}
	}
	if n := f2.launched()["sgemm_tiled"]; n != 1 {
		t.Errorf("with cuBLAS, the fallback GEMM ran %d times, want once (for k = 0)", n)
	}
	if len(fb.computes) != 5 { // exercise's 3, and its 2 in the other precisions
		t.Errorf("cuBLAS got %d GEMM calls, want 5", len(fb.computes))
	}
}

// TestGemmRowMajorThroughCublas holds the backend's mapping of row-major
// GEMMs onto column-major cuBLAS against a direct row-major product: every
// transpose combination, padded row strides, offsets, beta 0 over NaN, and
// batches.
func TestGemmRowMajorThroughCublas(t *testing.T) {
	b, _, fb := newFake(t, true)
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		ta, tb           bool
		m, n, k, batch   int
		alpha, beta      float32
		padA, padB, padC int
	}{
		{false, false, 3, 4, 5, 1, 1, 0, 0, 0, 0},
		{true, false, 3, 4, 5, 1, 1.5, 0.5, 2, 1, 3},
		{false, true, 4, 3, 2, 1, -1, 0, 1, 0, 2},
		{true, true, 5, 2, 3, 1, 0.5, 2, 0, 3, 0},
		{false, true, 2, 3, 4, 3, 1, 0, 1, 2, 1},
		{true, false, 3, 2, 4, 2, 1, 1, 0, 0, 2},
	} {
		rowsA, colsA := tc.m, tc.k
		if tc.ta {
			rowsA, colsA = tc.k, tc.m
		}
		rowsB, colsB := tc.k, tc.n
		if tc.tb {
			rowsB, colsB = tc.n, tc.k
		}
		lda, ldb, ldc := colsA+tc.padA, colsB+tc.padB, tc.n+tc.padC
		offA, offB, offC := 3, 1, 2
		sA, sB, sC := rowsA*lda+1, rowsB*ldb+2, tc.m*ldc+3
		A := randSlice(r, offA+tc.batch*sA)
		B := randSlice(r, offB+tc.batch*sB)
		C := randSlice(r, offC+tc.batch*sC)
		if tc.beta == 0 {
			for i := range C {
				C[i] = float32(math.NaN())
			}
		}
		want := make([]float64, len(C))
		for i, v := range C {
			want[i] = float64(v)
		}
		for z := 0; z < tc.batch; z++ {
			for i := 0; i < tc.m; i++ {
				for j := 0; j < tc.n; j++ {
					var s float64
					for p := 0; p < tc.k; p++ {
						ia, ib := offA+z*sA+i*lda+p, offB+z*sB+p*ldb+j
						if tc.ta {
							ia = offA + z*sA + p*lda + i
						}
						if tc.tb {
							ib = offB + z*sB + j*ldb + p
						}
						a, bv := A[ia], B[ib]
						s += float64(a) * float64(bv)
					}
					c := &want[offC+z*sC+i*ldc+j]
					v := float64(tc.alpha) * s
					if tc.beta != 0 {
						v += float64(tc.beta) * *c
					}
					*c = v
				}
			}
		}
		ta, tb, tcT := b.NewF32(len(A)), b.NewF32(len(B)), b.NewF32(len(C))
		b.Upload(ta, A)
		b.Upload(tb, B)
		b.Upload(tcT, C)
		if tc.batch == 1 {
			b.Gemm(tc.ta, tc.tb, tc.m, tc.n, tc.k, tc.alpha, ta, offA, lda, tb, offB, ldb, tc.beta, tcT, offC, ldc)
		} else {
			b.GemmBatched(tc.ta, tc.tb, tc.m, tc.n, tc.k, tc.alpha, ta, offA, lda, sA, tb, offB, ldb, sB,
				tc.beta, tcT, offC, ldc, sC, tc.batch)
		}
		got := make([]float32, len(C))
		b.Download(got, tcT)
		if err := b.Sync(); err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		for i := range got {
			w := want[i]
			if math.IsNaN(w) != math.IsNaN(float64(got[i])) || (!math.IsNaN(w) && math.Abs(float64(got[i])-w) > 1e-5*(1+math.Abs(w))) {
				t.Errorf("%+v: C[%d] = %v, want %v", tc, i, got[i], w)
				break
			}
		}
	}
	if err := b.SetTF32(true); err != nil {
		t.Fatal(err)
	}
	b.Gemm(false, false, 1, 1, 1, 1, b.NewF32(1), 0, 1, b.NewF32(1), 0, 1, 0, b.NewF32(1), 0, 1)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if fb.mathMode != blasTF32TensorOpMath || fb.computes[len(fb.computes)-1] != blasComputeF32TF32 {
		t.Errorf("SetTF32(true): math mode %d, compute type %d", fb.mathMode, fb.computes[len(fb.computes)-1])
	}
	if !strings.Contains(b.Device(), "TF32") {
		t.Errorf("Device() = %q does not say TF32", b.Device())
	}
	if err := b.SetGEMMPrecision(GEMMBF16); err != nil {
		t.Fatal(err)
	}
	b.Gemm(false, false, 1, 1, 1, 1, b.NewF32(1), 0, 1, b.NewF32(1), 0, 1, 0, b.NewF32(1), 0, 1)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if fb.mathMode != blasDefaultMath || fb.computes[len(fb.computes)-1] != blasComputeF32BF16 || !strings.Contains(b.Device(), "bf16") {
		t.Errorf("SetGEMMPrecision(GEMMBF16): math mode %d, compute type %d, Device() %q", fb.mathMode,
			fb.computes[len(fb.computes)-1], b.Device())
	}
}

// TestGEMMPrecisionSetting: TF32 is on by default from compute capability
// 8.0 (the peer's "fp32" runs TF32 too), off before; MOERL_TF32 and
// MOERL_BF16 override it, and an unknown value, or both asking, is an
// error from New, not a guess.
func TestGEMMPrecisionSetting(t *testing.T) {
	for _, tc := range []struct {
		cc        [2]int
		tf32, bf  string
		want      GEMMPrecision
		mode, cmp int
	}{
		{[2]int{9, 0}, "", "", GEMMTF32, blasTF32TensorOpMath, blasComputeF32TF32},
		{[2]int{8, 0}, "", "", GEMMTF32, blasTF32TensorOpMath, blasComputeF32TF32},
		{[2]int{7, 5}, "", "", GEMMFP32, blasDefaultMath, blasComputeF32},
		{[2]int{9, 0}, "0", "", GEMMFP32, blasDefaultMath, blasComputeF32},
		{[2]int{9, 0}, "off", "", GEMMFP32, blasDefaultMath, blasComputeF32},
		{[2]int{7, 5}, "1", "", GEMMTF32, blasTF32TensorOpMath, blasComputeF32TF32},
		{[2]int{9, 0}, "true", "", GEMMTF32, blasTF32TensorOpMath, blasComputeF32TF32},
		{[2]int{9, 0}, "", "1", GEMMBF16, blasDefaultMath, blasComputeF32BF16},
		{[2]int{9, 0}, "0", "on", GEMMBF16, blasDefaultMath, blasComputeF32BF16},
		{[2]int{9, 0}, "", "0", GEMMTF32, blasTF32TensorOpMath, blasComputeF32TF32},
	} {
		t.Setenv("MOERL_TF32", tc.tf32)
		t.Setenv("MOERL_BF16", tc.bf)
		f := newFakeDriver()
		f.cc = tc.cc
		fb := &fakeBlas{drv: f}
		b, err := newBackend(f, fb, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		b.Gemm(false, false, 1, 1, 1, 1, b.NewF32(1), 0, 1, b.NewF32(1), 0, 1, 0, b.NewF32(1), 0, 1)
		if err := b.Sync(); err != nil {
			t.Fatal(err)
		}
		if b.GEMMPrecision() != tc.want || fb.mathMode != tc.mode || fb.computes[0] != tc.cmp {
			t.Errorf("sm_%d%d MOERL_TF32=%q MOERL_BF16=%q: %v, math mode %d, compute type %d; want %v", tc.cc[0], tc.cc[1],
				tc.tf32, tc.bf, b.GEMMPrecision(), fb.mathMode, fb.computes[0], tc.want)
		}
		if !strings.Contains(b.Device(), ", "+tc.want.String()+")") {
			t.Errorf("Device() = %q does not say %v", b.Device(), tc.want)
		}
		b.Close()
	}
	for _, tc := range []struct{ tf32, bf, want string }{
		{"maybe", "", `MOERL_TF32="maybe"`},
		{"", "half", `MOERL_BF16="half"`},
		{"1", "1", "MOERL_BF16=1 and MOERL_TF32=1"},
	} {
		t.Setenv("MOERL_TF32", tc.tf32)
		t.Setenv("MOERL_BF16", tc.bf)
		if _, err := newBackend(newFakeDriver(), nil, "", 0); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("MOERL_TF32=%q MOERL_BF16=%q: %v, want an error naming %s", tc.tf32, tc.bf, err, tc.want)
		}
	}
	// Without cuBLAS, the fallback kernel runs float32 unless MOERL_TF32=1
	// or MOERL_BF16=1 asks for a twin, whatever the GPU.
	for _, tc := range []struct {
		tf32, bf string
		want     GEMMPrecision
	}{{"", "", GEMMFP32}, {"1", "", GEMMTF32}, {"", "1", GEMMBF16}} {
		t.Setenv("MOERL_TF32", tc.tf32)
		t.Setenv("MOERL_BF16", tc.bf)
		b, f, _ := newFake(t, false)
		b.Gemm(false, false, 2, 2, 2, 1, b.NewF32(4), 0, 2, b.NewF32(4), 0, 2, 0, b.NewF32(4), 0, 2)
		if err := b.Sync(); err != nil {
			t.Fatal(err)
		}
		kernel := "sgemm_tiled" + tc.want.suffix()
		if b.GEMMPrecision() != tc.want || f.launched()[kernel] != 1 || !strings.Contains(b.Device(), tc.want.String()) {
			t.Errorf("without cuBLAS, MOERL_TF32=%q MOERL_BF16=%q: %v, launches %v, Device() %q; want %v", tc.tf32, tc.bf,
				b.GEMMPrecision(), f.launched(), b.Device(), tc.want)
		}
	}
}

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

// TestPackArgs checks the argument block: a pointer table, then each value
// at its natural size and alignment.
func TestPackArgs(t *testing.T) {
	buf := make([]uint64, argBufBytes/8)
	base := unsafe.Pointer(&buf[0])
	k := &kernel{name: "k", params: []kernels.ParamType{kernels.U64, kernels.U32, kernels.F32, kernels.U64, kernels.U32, kernels.U64}}
	args := []karg{ptrArg(0x1122334455667788), i32Arg(-3), f32Arg(1.5), i64Arg(-2), i32Arg(7), ptrArg(0)}
	p, err := packArgs(base, k, args)
	if err != nil {
		t.Fatal(err)
	}
	wantOff := []int{256, 264, 268, 272, 280, 288}
	for i, off := range wantOff {
		slot := *(*uintptr)(unsafe.Add(p, i*8))
		if got := int(slot - uintptr(base)); got != off {
			t.Errorf("argument %d at offset %d, want %d", i, got, off)
		}
	}
	if v := *(*uint64)(unsafe.Add(base, 256)); v != 0x1122334455667788 {
		t.Errorf("pointer stored as %#x", v)
	}
	if v := *(*int32)(unsafe.Add(base, 264)); v != -3 {
		t.Errorf("int stored as %d", v)
	}
	if v := *(*float32)(unsafe.Add(base, 268)); v != 1.5 {
		t.Errorf("float stored as %v", v)
	}
	if v := *(*int64)(unsafe.Add(base, 272)); v != -2 {
		t.Errorf("int64 stored as %d", v)
	}
	for _, bad := range [][]karg{
		args[:5],
		{i32Arg(1), i32Arg(-3), f32Arg(1.5), i64Arg(-2), i32Arg(7), ptrArg(0)},
		{ptrArg(1), f32Arg(1), f32Arg(1.5), i64Arg(-2), i32Arg(7), ptrArg(0)},
	} {
		if _, err := packArgs(base, k, bad); err == nil {
			t.Errorf("packArgs(%v) succeeded, want a type or count error", bad)
		}
	}
}

// TestAllocatorReuse: after one warm-up step, a repeated step allocates
// nothing new from the driver, and the statistics add up.
func TestAllocatorReuse(t *testing.T) {
	b, f, _ := newFake(t, false)
	step := func() {
		var ts []*engine.Tensor
		for _, n := range []int{1, 100, 1000, 300_000, 1 << 20} {
			ts = append(ts, b.NewF32(n), b.NewI32(n))
		}
		b.Add(ts[6], ts[4], 1000)
		for _, x := range ts {
			b.Free(x)
		}
	}
	step()
	warm := b.MemStats()
	for range 5 {
		step()
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	st := b.MemStats()
	if st.Allocs != warm.Allocs {
		t.Errorf("cuMemAlloc calls went from %d to %d after warm-up", warm.Allocs, st.Allocs)
	}
	if st.InUse != 0 || st.Cached == 0 || st.Reserved != st.InUse+st.Cached || st.Peak < 8<<20 {
		t.Errorf("stats after freeing everything: %+v", st)
	}
	allocsBefore := f.allocs
	if err := b.Trim(); err != nil {
		t.Fatal(err)
	}
	if st := b.MemStats(); st.Cached != 0 || st.Frees == 0 {
		t.Errorf("after Trim: %+v", st)
	}
	if f.allocs != allocsBefore {
		t.Errorf("Trim allocated")
	}
	// A freed tensor is refused: using it, or freeing a view, is a bug that
	// panics at the call (and never touches reused memory); freeing it
	// again does nothing.
	x := b.NewF32(10)
	b.Free(x)
	b.Free(x)
	mustPanic(t, "cuda: Add: y has no device memory", func() { b.Add(x, x, 10) })
	v := b.NewF32(10)
	mustPanic(t, "cuda: Free: device pointer", func() { b.Free(v.View(2, 4)) })
	if err := b.Sync(); err != nil {
		t.Errorf("Sync after the refused calls: %v", err)
	}
}

// mustPanic runs fn and checks that it panics with a message containing want.
func mustPanic(t *testing.T, want string, fn func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if r == nil {
			t.Errorf("no panic, want one containing %q", want)
			return
		}
		if msg := fmt.Sprint(r); !strings.Contains(msg, want) {
			t.Errorf("panic %q, want one containing %q", msg, want)
		}
	}()
	fn()
}

// TestAllocatorOutOfMemory: on CUDA_ERROR_OUT_OF_MEMORY the cache goes back
// to the driver and the allocation is retried; a request that cannot fit is
// an error naming the call.
func TestAllocatorOutOfMemory(t *testing.T) {
	b, f, _ := newFake(t, false)
	f.memLimit = f.memUsed + 8<<20
	x := b.NewF32(1 << 20) // 4 MiB
	b.Free(x)
	y := b.NewF32(1<<20 + 1000) // another size class: needs the cached block freed
	if err := b.Sync(); err != nil || y.Ptr == 0 {
		t.Fatalf("allocation after trimming the cache: %v", err)
	}
	z := b.NewF32(4 << 20)
	err := b.Sync()
	if z.Ptr != 0 || err == nil || !strings.Contains(err.Error(), "cuMemAlloc_v2(16777216): CUDA_ERROR_OUT_OF_MEMORY") {
		t.Errorf("oversized allocation: ptr %#x, Sync() = %v", z.Ptr, err)
	}
	var cerr *Error
	if !errors.As(err, &cerr) || cerr.Code != cudaErrorOutOfMemory {
		t.Errorf("error %v does not unwrap to *Error with the CUresult", err)
	}
}

// TestMisusePanics: a broken precondition panics at the call, naming the op
// and the argument, and launches nothing; the calls the CPU backend shares
// are in TestMisuseContract. Here, what only a device backend can get wrong.
func TestMisusePanics(t *testing.T) {
	b, f, _ := newFake(t, false)
	x := b.NewF32(16)
	host := engine.HostF32(16)
	off := b.NewI32(2)
	h := b.New(engine.BF16, 16)
	for _, tc := range []struct {
		want string
		prec GEMMPrecision // the GEMM precision the call is made in
		call func()
	}{
		{"cuda: Add: y is a host tensor", GEMMFP32, func() { b.Add(host, x, 16) }},
		{"cuda: Add: x is nil", GEMMFP32, func() { b.Add(x, nil, 4) }},
		{"cuda: NewF32[2 -1]: negative dimension", GEMMFP32, func() { b.NewF32(2, -1) }},
		{"cuda: Cast: from f32 to i32", GEMMFP32, func() { b.Cast(b.NewI32(4), x, 4) }},
		{"cuda: Cast: src is a host tensor", GEMMFP32, func() { b.Cast(b.New(engine.BF16, 4), host, 4) }},
		{"cuda: Sample: topP 0 must lie in (0, 1]", GEMMFP32, func() { b.Sample(b.NewI32(1), x, x, x, 1, 4, 1, 0, 0) }},
		{"cuda: AdamW: betas 1, 0.95 must lie in [0, 1)", GEMMFP32, func() { b.AdamW(x, x, x, x, 4, 4, 1, 1e-3, 1, 0.95, 1e-8, 0, 1) }},
		{"cuda: AdamW: nDecay 5 must lie in [0, n = 4]", GEMMFP32, func() { b.AdamW(x, x, x, x, 4, 5, 1, 1e-3, 0.9, 0.95, 1e-8, 0, 1) }},
		// bf16 storage: only the bf16 GEMM precision reads it (b multiplies in float32).
		{"cuda: GemmGrouped: A is bf16, which only the bf16 GEMM precision reads", GEMMFP32, func() {
			b.GemmGrouped(false, 2, 2, 2, b.New(engine.BF16, 4), x, 4, 0, x, off, 1)
		}},
		{"cuda: CombineBackward: dy is bf16, which only the bf16 GEMM precision reads", GEMMFP32, func() {
			b.CombineBackward(b.New(engine.BF16, 4), x, x, x, x, b.NewI32(2), 1, 2, 2)
		}},
		// In bf16 mode, bf16 activations go with bf16 weights: the kernels
		// read both narrow, or neither.
		{"cuda: GemmGrouped: A is bf16 and the weights float32", GEMMBF16, func() {
			b.GemmGrouped(false, 2, 2, 2, h, x, 4, 0, x, off, 1)
		}},
		{"cuda: GemmGroupedSwiGLU: s is bf16 and the weights float32", GEMMBF16, func() {
			b.GemmGroupedSwiGLU(2, 2, 2, x, nil, x, x, 4, nil, nil, h, off, 1)
		}},
		{"cuda: GemmGroupedSwiGLUBackward: dy is bf16 and the weights float32", GEMMBF16, func() {
			b.GemmGroupedSwiGLUBackward(2, 2, 2, h, x, 4, x, x, nil, h, h, off, 1)
		}},
		{"cuda: GemmGroupedSwiGLUBackward: B is bf16 and dy float32", GEMMBF16, func() {
			b.GemmGroupedSwiGLUBackward(2, 2, 2, x, h, 4, x, x, nil, x, x, off, 1)
		}},
	} {
		if err := b.SetGEMMPrecision(tc.prec); err != nil {
			t.Fatal(err)
		}
		before := len(f.launches)
		mustPanic(t, tc.want, tc.call)
		if len(f.launches) != before {
			t.Errorf("%q: a kernel was launched anyway", tc.want)
		}
	}
	if err := b.Sync(); err != nil {
		t.Errorf("Sync after the panics: %v, want nil (nothing was queued)", err)
	}
}

// TestUnsupportedIsError: a shape the CUDA kernels cannot take, though the
// CPU can (a model this backend cannot run, which may come from a user's
// configuration), is no panic but an *Unsupported error at the next Sync,
// and the work queued after it is dropped until then.
func TestUnsupportedIsError(t *testing.T) {
	b, f, _ := newFake(t, false)
	x := b.NewF32(64 * 160)
	ids := b.NewI32(64)
	for _, tc := range []struct {
		want string
		call func()
	}{
		{"Attention: headDim 160 exceeds 128", func() { b.Attention(x, x, x, x, x, 1, 1, 1, 160) }},
		{"RMSNormBackward: dim 5000 exceeds the kernel's 4096", func() { b.RMSNormBackward(x, x, x, x, x, x, 0, 5000) }},
		{"RouterTopK: k 40 exceeds the kernel's 32", func() { b.RouterTopK(x, ids, x, x, 1, 64, 40) }},
		{"NewF32: shape [65536 65536] has more than 2³¹−1 elements", func() { b.NewF32(1<<16, 1<<16) }},
	} {
		tc.call()
		before := len(f.launches)
		b.Add(x, x, 16) // dropped: an error is pending
		got := []float32{7}
		b.Download(got, x.View(0, 1))
		err := b.Sync()
		var u *Unsupported
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.As(err, &u) {
			t.Errorf("want an *Unsupported error containing %q, Sync() = %v", tc.want, err)
		}
		if len(f.launches) != before || got[0] != 0 {
			t.Errorf("%q: work after the error ran (%d launches, Download gave %v, want 0)", tc.want, len(f.launches)-before, got[0])
		}
	}
	if err := b.Sync(); err != nil {
		t.Errorf("Sync after reporting: %v, want nil (errors are cleared once reported)", err)
	}
}

// TestKernelStatusReported: a bad index a kernel found (written to the
// status word) comes out of Sync once, by name.
func TestKernelStatusReported(t *testing.T) {
	b, f, _ := newFake(t, false)
	f.mu.Lock()
	copy(f.resolve(b.status, 4), []byte{statusTarget, 0, 0, 0})
	f.mu.Unlock()
	if err := b.Sync(); err == nil || !strings.Contains(err.Error(), "TokenLogProbs") {
		t.Errorf("Sync() = %v, want the target-out-of-range report", err)
	}
	if err := b.Sync(); err != nil {
		t.Errorf("second Sync() = %v, want the status cleared", err)
	}
}

// TestHostDeviceCopies: Upload, Download, Copy and Zero move the right
// bytes, and new tensors are zeroed.
func TestHostDeviceCopies(t *testing.T) {
	b, _, _ := newFake(t, false)
	x, y := b.NewF32(5), b.NewF32(5)
	got := make([]float32, 5)
	b.Download(got, x)
	if !slices.Equal(got, make([]float32, 5)) {
		t.Errorf("NewF32 not zeroed: %v", got)
	}
	b.Upload(x, []float32{1, 2, 3, 4, 5})
	b.Copy(y, x)
	b.Download(got, y)
	if !slices.Equal(got, []float32{1, 2, 3, 4, 5}) {
		t.Errorf("Upload+Copy+Download = %v", got)
	}
	b.Zero(y)
	b.Download(got, y)
	if !slices.Equal(got, make([]float32, 5)) {
		t.Errorf("Zero: %v", got)
	}
	ids := b.NewI32(3)
	b.UploadI32(ids, []int32{-1, 7, 9})
	gi := make([]int32, 3)
	b.DownloadI32(gi, ids)
	if !slices.Equal(gi, []int32{-1, 7, 9}) {
		t.Errorf("UploadI32+DownloadI32 = %v", gi)
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if b.Name() != "cuda" || !strings.Contains(b.Device(), "Fake H100") || !strings.Contains(b.Device(), "fallback GEMM") {
		t.Errorf("Name, Device = %q, %q", b.Name(), b.Device())
	}
	if d, err := b.Time(func() { b.Zero(x) }); err != nil || d <= 0 {
		t.Errorf("Time = %v, %v", d, err)
	}
}

// TestCaptureRules: a captured sequence replays; host work inside Capture is
// an error, not a hang.
func TestCaptureRules(t *testing.T) {
	b, f, _ := newFake(t, false)
	x := b.NewF32(8)
	b.Upload(x, []float32{1, 1, 1, 1, 1, 1, 1, 1})
	g, err := b.Capture(func() {
		b.Zero(x)
		b.Scale(x, 8, 3)
	})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]float32, 8)
	b.Download(got, x)
	if got[0] != 1 {
		t.Errorf("captured work ran during Capture: x[0] = %v", got[0])
	}
	launches := len(f.launches)
	if err := g.Launch(); err != nil {
		t.Fatal(err)
	}
	b.Download(got, x)
	if got[0] != 0 {
		t.Errorf("after Launch, x[0] = %v, want 0 (the captured Zero)", got[0])
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if len(f.launches) != launches {
		// The fake records kernel launches when they are captured; a replay
		// runs the recorded stream work only.
		t.Logf("replay launched %d kernels directly", len(f.launches)-launches)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		want string
		fn   func()
	}{
		{"Download during Capture", func() { b.Download(got, x) }},
		{"NewF32 during Capture", func() { b.NewF32(4) }},
		{"SumSquares during Capture", func() { b.SumSquares(x, 8) }},
		{"Sync during Capture", func() { b.Sync() }},
	} {
		_, err := b.Capture(bad.fn)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Capture with %s: err = %v", bad.want, err)
		}
	}
	if err := b.Sync(); err != nil {
		t.Errorf("Sync after the failed captures: %v", err)
	}
	// A pending error is not Capture's to take: it stays for Sync.
	b.fail(errors.New("an earlier fault"))
	if _, err := b.Capture(func() { b.Zero(x) }); err == nil || !strings.Contains(err.Error(), "pending") {
		t.Errorf("Capture with an error pending: err = %v", err)
	}
	if err := b.Sync(); err == nil || !strings.Contains(err.Error(), "an earlier fault") {
		t.Errorf("Sync after a refused capture = %v, want the earlier fault", err)
	}
}

// recordTB records what a test helper asks of its test instead of doing it.
type recordTB struct {
	testing.TB
	fatal, skip string
}

func (r *recordTB) Helper()                   {}
func (r *recordTB) Fatalf(f string, a ...any) { r.fatal = fmt.Sprintf(f, a...) }
func (r *recordTB) Skip(a ...any)             { r.skip = fmt.Sprint(a...) }

// TestRequireCUDA: without CUDA a GPU test skips, naming why; with
// MOERL_REQUIRE_CUDA=1 it fails instead.
func TestRequireCUDA(t *testing.T) {
	if Available() == nil {
		t.Skip("CUDA is available here")
	}
	for _, env := range []string{"", "1"} {
		t.Setenv("MOERL_REQUIRE_CUDA", env)
		r := &recordTB{TB: t}
		skipWithoutCUDA(r)
		if env == "1" && !strings.Contains(r.fatal, "MOERL_REQUIRE_CUDA=1 but CUDA unavailable: ") {
			t.Errorf("MOERL_REQUIRE_CUDA=1: Fatalf(%q), want the unavailable error", r.fatal)
		}
		if env == "" && (r.fatal != "" || !strings.HasPrefix(r.skip, "CUDA unavailable: ")) {
			t.Errorf("MOERL_REQUIRE_CUDA unset: Fatalf(%q), Skip(%q); want a skip", r.fatal, r.skip)
		}
	}
}

// TestWaitTime: the time the host blocks in stream synchronizations, in
// downloads and in Sync, adds up in WaitTime.
func TestWaitTime(t *testing.T) {
	b, f, _ := newFake(t, false)
	x := b.NewF32(4)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.syncDelay = 3 * time.Millisecond
	f.mu.Unlock()
	w0 := b.WaitTime()
	b.Download(make([]float32, 4), x) // one synchronization
	if err := b.Sync(); err != nil {  // two
		t.Fatal(err)
	}
	if got := b.WaitTime() - w0; got < 9*time.Millisecond {
		t.Errorf("three 3 ms synchronizations added %v to WaitTime", got)
	}
}
