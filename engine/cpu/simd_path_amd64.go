package cpu

import "golang.org/x/sys/cpu"

// archSIMD lists the assembly paths this CPU can run, fastest first. The
// AVX-512 kernels use only AVX-512F instructions besides AVX ones on the
// low registers.
func archSIMD() []*simdPath {
	var s []*simdPath
	if cpu.X86.HasAVX512F {
		s = append(s, simdAVX512)
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		s = append(s, simdAVX2)
	}
	return s
}
