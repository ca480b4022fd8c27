// Package cpu is moerl's reference Backend: every engine.Backend op on host
// tensors, in float32 storage, parallel over the CPU cores. Matrix products,
// attention's included, go through gemm.Sgemm; the loops built on the
// exponential (softmax, log-sum-exp, SwiGLU) through AVX-512 or AVX2
// kernels where the CPU has them (see SIMDPath; MOERL_SIMD=go selects the
// pure-Go reference loops); the rest are Go loops. Sums where rounding
// would show (norms, softmax denominators, SumSquares) are in float64.
//
// Work is split into chunks whose size depends only on the shapes, every
// output element is written by one goroutine in a fixed order, and every
// reduction across chunks is summed in chunk order, so results are bitwise
// identical whatever GOMAXPROCS is.
package cpu

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"

	"github.com/moerl/moerl/engine"
	"golang.org/x/sys/cpu"
)

// Backend runs the engine ops on the host CPU. The zero value is ready to
// use, and one Backend may be used from several goroutines at once.
type Backend struct {
	deviceOnce sync.Once
	device     string

	rope    ropeCache
	scratch sync.Pool // *engine.Tensor: the grouped products' gathered inputs
}

var _ engine.Backend = (*Backend)(nil)

// New returns a CPU backend.
func New() *Backend { return &Backend{} }

// Name returns "cpu".
func (*Backend) Name() string { return "cpu" }

// Device describes the processor: model, logical core count and the widest
// SIMD extension it offers.
func (b *Backend) Device() string {
	b.deviceOnce.Do(func() {
		b.device = fmt.Sprintf("%s, %d cores, %s", cpuModel(), runtime.NumCPU(), simdLevel())
	})
	return b.device
}

// cpuModel reads the model name from /proc/cpuinfo, falling back to the
// architecture where that file does not exist (non-Linux systems).
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			key, val, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(key) {
			case "model name", "Model", "cpu model":
				if v := strings.TrimSpace(val); v != "" {
					return v
				}
			}
		}
	}
	return runtime.GOARCH + " CPU"
}

func simdLevel() string {
	switch {
	case cpu.X86.HasAVX512F:
		return "AVX-512"
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		return "AVX2+FMA"
	case cpu.X86.HasAVX:
		return "AVX"
	case cpu.X86.HasSSE2:
		return "SSE2"
	case cpu.ARM64.HasSVE:
		return "SVE"
	case cpu.ARM64.HasASIMD:
		return "NEON"
	}
	return "no SIMD"
}

// New allocates a zeroed host tensor of dtype d.
func (*Backend) New(d engine.DType, shape ...int) *engine.Tensor { return engine.Host(d, shape...) }

// NewF32 allocates a zeroed host float32 tensor.
func (*Backend) NewF32(shape ...int) *engine.Tensor { return engine.HostF32(shape...) }

// NewI32 allocates a zeroed host int32 tensor.
func (*Backend) NewI32(shape ...int) *engine.Tensor { return engine.HostI32(shape...) }

// Free drops the tensor's buffer, so that a later use fails loudly instead
// of reading stale data.
func (*Backend) Free(t *engine.Tensor) {
	t.F, t.I, t.BF = nil, nil, nil
}

// Upload copies src into dst, which must have the same length.
func (*Backend) Upload(dst *engine.Tensor, src []float32) {
	copy(f32Exact("Upload", "dst", dst, len(src)), src)
}

// UploadI32 copies src into dst, which must have the same length.
func (*Backend) UploadI32(dst *engine.Tensor, src []int32) {
	copy(i32Exact("UploadI32", "dst", dst, len(src)), src)
}

// Download copies src into dst, which must have the same length.
func (*Backend) Download(dst []float32, src *engine.Tensor) {
	copy(dst, f32Exact("Download", "src", src, len(dst)))
}

// DownloadI32 copies src into dst, which must have the same length.
func (*Backend) DownloadI32(dst []int32, src *engine.Tensor) {
	copy(dst, i32Exact("DownloadI32", "src", src, len(dst)))
}

// Zero sets every element of t to 0.
func (*Backend) Zero(t *engine.Tensor) {
	clear(t.F)
	clear(t.I)
	clear(t.BF)
}

// Copy copies src into dst; both must have the same type and length.
func (*Backend) Copy(dst, src *engine.Tensor) {
	if dst.DType != src.DType || len(dst.F) != len(src.F) || len(dst.I) != len(src.I) || len(dst.BF) != len(src.BF) {
		panic(fmt.Sprintf("cpu: Copy: dst %v and src %v differ in type or length", dst, src))
	}
	copy(dst.F, src.F)
	copy(dst.I, src.I)
	copy(dst.BF, src.BF)
}

// Cast converts n elements between F32 and BF16 (see engine.Backend).
func (*Backend) Cast(dst, src *engine.Tensor, n int) {
	const op = "Cast"
	switch {
	case src.DType == engine.F32 && dst.DType == engine.BF16:
		s, d := f32(op, "src", src, n), bf16(op, "dst", dst, n)
		parallelFor(n, grain(1), func(lo, hi int) {
			for i := lo; i < hi; i++ {
				d[i] = engine.BF16Bits(s[i])
			}
		})
	case src.DType == engine.BF16 && dst.DType == engine.F32:
		s, d := bf16(op, "src", src, n), f32(op, "dst", dst, n)
		parallelFor(n, grain(1), func(lo, hi int) {
			for i := lo; i < hi; i++ {
				d[i] = engine.BF16Float(s[i])
			}
		})
	default:
		panic(fmt.Sprintf("cpu: Cast: from %v to %v; Cast converts between f32 and bf16", src, dst))
	}
}

// Sync returns nil: every CPU op has finished when it returns.
func (*Backend) Sync() error { return nil }
