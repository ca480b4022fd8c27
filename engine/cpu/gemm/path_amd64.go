package gemm

import "golang.org/x/sys/cpu"

//go:generate go run gen_kernels.go

// The tile shapes fill the register files: 14×32 uses 28 of the 32 zmm
// registers for C, 6×16 uses 12 of the 16 ymm. kcMax keeps a kc×nr panel
// of B within L1; mcMax keeps a tile's rows of A within L2. Both were
// measured flat to within a few percent from kc 128 to 512 and tiles of
// 84 to 336 rows on a 2-core AMD EPYC (Zen 5). There, reading a B with
// rows 4 KiB apart in place cost the 16-wide AVX2 panels 25% and the
// 32-wide AVX-512 panels nothing, hence packAliasedB.
var (
	avx512Impl = &impl{name: "avx512", mr: 14, nr: 32, kernels: kernelsAVX512, kcMax: 256, mcMax: 168}
	avx2Impl   = &impl{name: "avx2", mr: 6, nr: 16, kernels: kernelsAVX2, kcMax: 256, mcMax: 96, packAliasedB: true}
)

// archImpls lists the assembly paths this CPU can run, fastest first.
func archImpls() []*impl {
	var s []*impl
	if cpu.X86.HasAVX512F {
		s = append(s, avx512Impl)
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		s = append(s, avx2Impl)
	}
	return s
}
