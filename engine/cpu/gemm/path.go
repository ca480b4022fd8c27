package gemm

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
)

// microKernel computes one rows×nr tile, rows fixed by the kernel:
//
//	C[i][j] = alpha·Σ_{p<kc} A(i,p)·B(p,j) + beta·C[i][j]
//
// with A(i,p) = a[i·rsA + p·csA], B(p,j) = b[p·rsB + j], C[i][j] =
// c[i·ldc + j]. Each sum starts at zero and adds the products in p order
// with one fused multiply-add each (one multiply and one add in Go), then
// alpha·sum and beta·C are rounded separately and added. beta = 0 does not
// read C.
type microKernel func(kc int, a []float32, rsA, csA int, b []float32, rsB int, c []float32, ldc int, alpha, beta float32)

// impl is one kernel family and the blocking tuned for it.
type impl struct {
	name    string
	mr, nr  int           // full tile
	kernels []microKernel // kernels[r-1] computes r rows, r = 1..mr
	kcMax   int           // longest k block summed in registers
	mcMax   int           // rows per C tile before splitting for parallelism
	// packAliasedB packs an untransposed B whose row stride is a multiple
	// of 4 KiB rather than reading it in place.
	packAliasedB bool
}

// maxTile bounds mr·nr over every impl, sizing the scratch tiles.
const maxTile = 14 * 32

var (
	available []*impl // this CPU's paths, fastest first
	active    atomic.Pointer[impl]
	envErr    error
)

func init() {
	available = append(archImpls(), goImpl)
	for _, p := range available {
		// The assembly writes scratch tiles through raw pointers: a tile
		// larger than the scratch would corrupt memory, not panic.
		if p.mr*p.nr > maxTile || len(p.kernels) != p.mr {
			panic(fmt.Sprintf("gemm: path %s has a %d×%d tile and %d kernels", p.name, p.mr, p.nr, len(p.kernels)))
		}
	}
	active.Store(available[0])
	if name := os.Getenv("MOERL_GEMM"); name != "" {
		if err := SetPath(name); err != nil {
			envErr = fmt.Errorf("MOERL_GEMM: %w", err)
		}
	}
}

// Paths lists the kernel paths this CPU supports, fastest first: some of
// "avx512", "avx2", then "go".
func Paths() []string {
	names := make([]string, len(available))
	for i, p := range available {
		names[i] = p.name
	}
	return names
}

// Path reports the kernel path Sgemm uses.
func Path() string { return active.Load().name }

// SetPath makes Sgemm use the named kernel path (one of Paths). The
// environment variable MOERL_GEMM does the same at start-up.
func SetPath(name string) error {
	for _, p := range available {
		if p.name == name {
			active.Store(p)
			return nil
		}
	}
	return fmt.Errorf("gemm path %q not supported on this CPU (have %s)", name, strings.Join(Paths(), ", "))
}

// EnvErr reports why MOERL_GEMM was ignored, or nil if it was unset or used.
func EnvErr() error { return envErr }
