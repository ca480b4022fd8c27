package cuda

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"github.com/ebitengine/purego"
)

// blas is the part of cuBLAS the backend uses. libcublas implements it over
// the shared library; the tests substitute a fake that computes the
// column-major product on the host, which checks the row-major mapping.
type blas interface {
	library() string
	create() (uintptr, error)
	destroy(h uintptr) error
	setStream(h, stream uintptr) error
	setMathMode(h uintptr, mode int) error
	setWorkspace(h, ptr uintptr, bytes uint64) error
	version(h uintptr) (int, error)
	gemmEx(h uintptr, transa, transb, m, n, k int, alpha float32, a uintptr, lda int,
		b uintptr, ldb int, beta float32, c uintptr, ldc int, compute int) error
	gemmStridedBatchedEx(h uintptr, transa, transb, m, n, k int, alpha float32, a uintptr, lda int, strideA int64,
		b uintptr, ldb int, strideB int64, beta float32, c uintptr, ldc int, strideC int64, batch, compute int) error
}

// cuBLAS constants (cublas_api.h, library_types.h).
const (
	blasOpN              = 0  // CUBLAS_OP_N
	blasOpT              = 1  // CUBLAS_OP_T
	blasDefaultMath      = 0  // CUBLAS_DEFAULT_MATH
	blasTF32TensorOpMath = 3  // CUBLAS_TF32_TENSOR_OP_MATH
	blasComputeF32       = 68 // CUBLAS_COMPUTE_32F
	blasComputeF32TF32   = 77 // CUBLAS_COMPUTE_32F_FAST_TF32
	blasComputeF32BF16   = 75 // CUBLAS_COMPUTE_32F_FAST_16BF
	cudaR32F             = 0  // CUDA_R_32F
	blasGemmDefault      = -1 // CUBLAS_GEMM_DEFAULT
)

// blasWorkspaceBytes is the workspace given to cuBLAS up front, so that it
// never allocates during graph capture (32 MiB is NVIDIA's advice for Hopper).
const blasWorkspaceBytes = 32 << 20

// libcublas calls a cuBLAS shared library through purego.
type libcublas struct {
	path                                                    string
	fnCreate, fnDestroy, fnSetStream, fnSetMathMode         uintptr
	fnSetWorkspace, fnGetVersion, fnGemmEx, fnGemmStridedEx uintptr
}

// cublasCandidates are the library names tried in order.
var cublasCandidates = []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"}

// openCublas opens cuBLAS as MOERL_CUBLAS says: "off" (or "0", "none")
// disables it, a path opens that file only, and unset tries
// libcublas.so.13, .12, .11 and libcublas.so. It returns a nil blas and a
// reason when cuBLAS is not to be used or not found; an error only when a
// path given in MOERL_CUBLAS cannot be used.
func openCublas() (blas, string, error) {
	env := strings.TrimSpace(os.Getenv("MOERL_CUBLAS"))
	switch strings.ToLower(env) {
	case "off", "0", "none", "false":
		return nil, "cuBLAS off (MOERL_CUBLAS=" + env + ")", nil
	}
	names := cublasCandidates
	if env != "" {
		names = []string{env}
	}
	var tried []string
	for _, name := range names {
		h, err := purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_LOCAL)
		if err != nil {
			tried = append(tried, err.Error())
			continue
		}
		l, err := bindCublas(h, name)
		if err != nil {
			purego.Dlclose(h)
			if env != "" {
				return nil, "", fmt.Errorf("MOERL_CUBLAS=%s: %w", env, err)
			}
			tried = append(tried, err.Error())
			continue
		}
		return l, "", nil
	}
	if env != "" {
		return nil, "", fmt.Errorf("MOERL_CUBLAS=%s: cannot open it: %s", env, strings.Join(tried, "; "))
	}
	return nil, "cuBLAS not found (" + strings.Join(cublasCandidates[:3], ", ") + ")", nil
}

func bindCublas(h uintptr, path string) (*libcublas, error) {
	l := &libcublas{path: path}
	syms := []struct {
		dst      *uintptr
		name     string
		optional bool
	}{
		{&l.fnCreate, "cublasCreate_v2", false},
		{&l.fnDestroy, "cublasDestroy_v2", false},
		{&l.fnSetStream, "cublasSetStream_v2", false},
		{&l.fnSetMathMode, "cublasSetMathMode", false},
		{&l.fnGetVersion, "cublasGetVersion_v2", false},
		{&l.fnGemmEx, "cublasGemmEx", false},
		{&l.fnGemmStridedEx, "cublasGemmStridedBatchedEx", false},
		{&l.fnSetWorkspace, "cublasSetWorkspace_v2", true},
	}
	for _, s := range syms {
		p, err := purego.Dlsym(h, s.name)
		if err != nil || p == 0 {
			if s.optional {
				continue
			}
			return nil, fmt.Errorf("%s lacks %s", path, s.name)
		}
		*s.dst = p
	}
	return l, nil
}

var blasStatusNames = map[int]string{
	0: "CUBLAS_STATUS_SUCCESS", 1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED",
	7: "CUBLAS_STATUS_INVALID_VALUE", 8: "CUBLAS_STATUS_ARCH_MISMATCH", 11: "CUBLAS_STATUS_MAPPING_ERROR",
	13: "CUBLAS_STATUS_EXECUTION_FAILED", 14: "CUBLAS_STATUS_INTERNAL_ERROR", 15: "CUBLAS_STATUS_NOT_SUPPORTED",
	16: "CUBLAS_STATUS_LICENSE_ERROR",
}

// call invokes a cuBLAS function; see libcuda.call for uintptrescapes.
//
//go:uintptrescapes
func (l *libcublas) call(fn uintptr, name string, args func() string, a ...uintptr) error {
	r, _, _ := purego.SyscallN(fn, a...)
	code := int(int32(r))
	if code == 0 {
		return nil
	}
	status, ok := blasStatusNames[code]
	if !ok {
		status = "cublasStatus(" + strconv.Itoa(code) + ")"
	}
	call := name + "()"
	if args != nil {
		call = name + "(" + args() + ")"
	}
	return &Error{Call: call, Code: code, Name: status}
}

func (l *libcublas) library() string { return l.path }

func (l *libcublas) create() (uintptr, error) {
	var h uintptr
	err := l.call(l.fnCreate, "cublasCreate_v2", nil, uintptr(unsafe.Pointer(&h)))
	return h, err
}

func (l *libcublas) destroy(h uintptr) error { return l.call(l.fnDestroy, "cublasDestroy_v2", nil, h) }

func (l *libcublas) setStream(h, stream uintptr) error {
	return l.call(l.fnSetStream, "cublasSetStream_v2", nil, h, stream)
}

func (l *libcublas) setMathMode(h uintptr, mode int) error {
	return l.call(l.fnSetMathMode, "cublasSetMathMode", func() string { return strconv.Itoa(mode) }, h, uintptr(mode))
}

func (l *libcublas) setWorkspace(h, ptr uintptr, bytes uint64) error {
	if l.fnSetWorkspace == 0 {
		return nil // an old cuBLAS: it manages its own workspace
	}
	return l.call(l.fnSetWorkspace, "cublasSetWorkspace_v2", itoa(bytes), h, ptr, uintptr(bytes))
}

func (l *libcublas) version(h uintptr) (int, error) {
	var v int32
	err := l.call(l.fnGetVersion, "cublasGetVersion_v2", nil, h, uintptr(unsafe.Pointer(&v)))
	return int(v), err
}

// ival passes a C int (possibly negative) in a 64-bit argument slot: the
// callee reads the low 32 bits, from a register or from the stack.
func ival(v int) uintptr { return uintptr(uint32(int32(v))) }

func (l *libcublas) gemmEx(h uintptr, transa, transb, m, n, k int, alpha float32, a uintptr, lda int,
	b uintptr, ldb int, beta float32, c uintptr, ldc int, compute int) error {
	return l.call(l.fnGemmEx, "cublasGemmEx",
		func() string {
			return fmt.Sprintf("op %d %d, m %d n %d k %d, ld %d %d %d", transa, transb, m, n, k, lda, ldb, ldc)
		},
		h, ival(transa), ival(transb), ival(m), ival(n), ival(k), uintptr(unsafe.Pointer(&alpha)),
		a, ival(cudaR32F), ival(lda), b, ival(cudaR32F), ival(ldb), uintptr(unsafe.Pointer(&beta)),
		c, ival(cudaR32F), ival(ldc), ival(compute), ival(blasGemmDefault))
}

func (l *libcublas) gemmStridedBatchedEx(h uintptr, transa, transb, m, n, k int, alpha float32, a uintptr, lda int,
	strideA int64, b uintptr, ldb int, strideB int64, beta float32, c uintptr, ldc int, strideC int64,
	batch, compute int) error {
	return l.call(l.fnGemmStridedEx, "cublasGemmStridedBatchedEx",
		func() string {
			return fmt.Sprintf("op %d %d, m %d n %d k %d, ld %d %d %d, batch %d", transa, transb, m, n, k, lda, ldb, ldc, batch)
		},
		h, ival(transa), ival(transb), ival(m), ival(n), ival(k), uintptr(unsafe.Pointer(&alpha)),
		a, ival(cudaR32F), ival(lda), uintptr(strideA), b, ival(cudaR32F), ival(ldb), uintptr(strideB),
		uintptr(unsafe.Pointer(&beta)), c, ival(cudaR32F), ival(ldc), uintptr(strideC), ival(batch),
		ival(compute), ival(blasGemmDefault))
}
