//go:build ignore

// gen_simd writes simd_amd64.s and simd_amd64.go: the AVX-512 and AVX2+FMA
// kernels behind the package's vector paths (see simd.go). Every kernel
// walks its slices one register of lanes at a time and finishes the last
// partial register with masked loads and stores, so a row of any length is
// one call and no lane past the end is read or written.
//
// The exponential inlined into each kernel clamps x to [−104, 89] (keeping
// NaN), reduces x = n·ln2 + r with n = round(x·log2 e) and a two-constant
// ln 2, evaluates the degree-7 Taylor series of e^r by Horner's rule with
// fused multiply-adds, and scales by 2^n: VSCALEFPS on AVX-512; on AVX2 two
// exponent-field multiplies by 2^⌊n/2⌋ and 2^(n−⌊n/2⌋), so that the first is
// exact and only the second rounds, which gives subnormal results, 0 and
// +Inf as a single rounding of p·2^n would.
//
// Run it with: go run gen_simd.go
package main

import (
	"bytes"
	"fmt"
	"go/format"
	"log"
	"math"
	"os"
)

// isa describes one vector instruction set for the generator.
type isa struct {
	name  string // suffix of the Go function names
	reg   string // register prefix: Y or Z
	width int    // float32 lanes per register
}

var isas = []isa{
	{name: "AVX512", reg: "Z", width: 16},
	{name: "AVX2", reg: "Y", width: 8},
}

// The constant table: one 32-byte row (eight copies) per constant, so the
// AVX2 kernels use a row as a memory operand and the AVX-512 kernels
// broadcast its first element into a register.
const (
	kLo = iota
	kHi
	kLog2E
	kLn2Hi
	kLn2Lo
	kC7
	kC6
	kC5
	kC4
	kC3
	kC2
	kOne
	kSign
	kNegInf
	kIota
	nConsts
)

// constBits returns the eight 32-bit words of constant row k.
func constBits(k int) [8]uint32 {
	f := func(v float64) uint32 { return math.Float32bits(float32(v)) }
	var v uint32
	switch k {
	case kLo:
		v = f(-104) // exp(−104) rounds to 0 and n = −150 stays in range
	case kHi:
		v = f(89) // exp(89) overflows and n = 128 stays in range
	case kLog2E:
		v = f(math.Log2E)
	case kLn2Hi:
		v = f(0.693145751953125) // 16 bits, so n·ln2Hi and x − n·ln2Hi are exact
	case kLn2Lo:
		v = f(math.Ln2 - 0.693145751953125)
	case kC7:
		v = f(1.0 / 5040)
	case kC6:
		v = f(1.0 / 720)
	case kC5:
		v = f(1.0 / 120)
	case kC4:
		v = f(1.0 / 24)
	case kC3:
		v = f(1.0 / 6)
	case kC2:
		v = f(0.5)
	case kOne:
		v = f(1) // also 127<<23, the exponent bias in place
	case kSign:
		v = 0x80000000
	case kNegInf:
		v = 0xff800000
	case kIota:
		return [8]uint32{0, 1, 2, 3, 4, 5, 6, 7}
	}
	return [8]uint32{v, v, v, v, v, v, v, v}
}

// gen emits one ISA's kernels; p prints an instruction.
type gen struct {
	s isa
	w *bytes.Buffer
}

func (g *gen) p(format string, args ...any) { fmt.Fprintf(g.w, "\t"+format+"\n", args...) }

func (g *gen) label(l string) { fmt.Fprintf(g.w, "%s:\n", l) }

func (g *gen) r(i int) string { return fmt.Sprintf("%s%d", g.s.reg, i) }

func (g *gen) avx512() bool { return g.s.reg == "Z" }

// AVX-512 keeps every constant but the lane indices in Z16 and up.
func (g *gen) k(c int) string {
	if g.avx512() {
		return fmt.Sprintf("Z%d", 16+c)
	}
	return fmt.Sprintf("·simdConsts+%d(SB)", 32*c)
}

// AVX2 keeps the clamp bounds in Y14 and Y15 (the NaN-preserving operand
// order of VMAXPS/VMINPS needs them in registers) and the tail mask in Y13.
const (
	avx2Lo   = "Y14"
	avx2Hi   = "Y15"
	avx2Mask = "Y13"
)

func (g *gen) clampRegs() (lo, hi string) {
	if g.avx512() {
		return g.k(kLo), g.k(kHi)
	}
	return avx2Lo, avx2Hi
}

// prologue loads the constants the exponential needs.
func (g *gen) prologue(exp bool) {
	if g.avx512() {
		for c := range nConsts {
			if c == kIota {
				continue
			}
			g.p("VBROADCASTSS ·simdConsts+%d(SB), %s", 32*c, g.k(c))
		}
		return
	}
	if exp {
		g.p("VMOVUPS %s, %s", g.k(kLo), avx2Lo)
		g.p("VMOVUPS %s, %s", g.k(kHi), avx2Hi)
	}
}

// exp computes e^x into p, destroying x; n and t are scratch.
func (g *gen) exp(x, p, n, t string) {
	lo, hi := g.clampRegs()
	// Intel's max and min return the second source when either is NaN;
	// in Go's reversed operand order that is the first operand, x.
	g.p("VMAXPS %s, %s, %s", x, lo, x)
	g.p("VMINPS %s, %s, %s", x, hi, x)
	g.p("VMULPS %s, %s, %s", g.k(kLog2E), x, n)
	if g.avx512() {
		g.p("VRNDSCALEPS $0, %s, %s", n, n)
	} else {
		g.p("VROUNDPS $0, %s, %s", n, n)
	}
	g.p("VFNMADD231PS %s, %s, %s", g.k(kLn2Hi), n, x)
	g.p("VFNMADD231PS %s, %s, %s", g.k(kLn2Lo), n, x)
	g.p("VMOVUPS %s, %s", g.k(kC6), p)
	g.p("VFMADD231PS %s, %s, %s", g.k(kC7), x, p)
	for _, c := range []int{kC5, kC4, kC3, kC2, kOne, kOne} {
		g.p("VFMADD213PS %s, %s, %s", g.k(c), x, p)
	}
	if g.avx512() {
		g.p("VSCALEFPS %s, %s, %s", n, p, p)
		return
	}
	g.p("VCVTPS2DQ %s, %s", n, n)
	g.p("VPSRAD $1, %s, %s", n, t)
	g.p("VPSUBD %s, %s, %s", t, n, n)
	g.p("VPSLLD $23, %s, %s", t, t)
	g.p("VPSLLD $23, %s, %s", n, n)
	g.p("VPADDD %s, %s, %s", g.k(kOne), t, t)
	g.p("VPADDD %s, %s, %s", g.k(kOne), n, n)
	g.p("VMULPS %s, %s, %s", t, p, p)
	g.p("VMULPS %s, %s, %s", n, p, p)
}

// access loads and stores one register of lanes, whole or masked.
type access struct {
	g      *gen
	masked bool
}

func (a access) load(mem, dst string) {
	switch {
	case !a.masked:
		a.g.p("VMOVUPS %s, %s", mem, dst)
	case a.g.avx512():
		a.g.p("VMOVUPS.Z %s, K1, %s", mem, dst)
	default:
		a.g.p("VMASKMOVPS %s, %s, %s", mem, avx2Mask, dst)
	}
}

func (a access) store(src, mem string) {
	switch {
	case !a.masked:
		a.g.p("VMOVUPS %s, %s", src, mem)
	case a.g.avx512():
		a.g.p("VMOVUPS %s, K1, %s", src, mem)
	default:
		a.g.p("VMASKMOVPS %s, %s, %s", src, avx2Mask, mem)
	}
}

// zeroInactive clears the lanes of r past the end of a masked tail.
func (a access) zeroInactive(r string) {
	if !a.masked {
		return
	}
	if a.g.avx512() {
		a.g.p("VMOVAPS.Z %s, K1, %s", r, r)
	} else {
		a.g.p("VANDPS %s, %s, %s", avx2Mask, r, r)
	}
}

// loop emits the element loop over CX elements: body(access) for each
// whole register, advancing the pointers ptrs, then once masked for the
// remaining 1..width−1 elements.
func (g *gen) loop(ptrs []string, body func(a access)) {
	w := g.s.width
	g.label("loop")
	g.p("CMPQ CX, $%d", w)
	g.p("JLT tail")
	body(access{g: g})
	for _, r := range ptrs {
		g.p("ADDQ $%d, %s", 4*w, r)
	}
	g.p("SUBQ $%d, CX", w)
	g.p("JMP loop")
	g.label("tail")
	g.p("TESTQ CX, CX")
	g.p("JZ done")
	g.makeMask()
	body(access{g: g, masked: true})
	g.label("done")
}

// makeMask sets the tail mask to the first CX lanes.
func (g *gen) makeMask() {
	if g.avx512() {
		g.p("MOVL $1, AX")
		g.p("SHLL CX, AX")
		g.p("DECL AX")
		g.p("KMOVW AX, K1")
		return
	}
	g.p("MOVQ CX, X13")
	g.p("VPBROADCASTD X13, %s", avx2Mask)
	g.p("VPCMPGTD %s, %s, %s", g.k(kIota), avx2Mask, avx2Mask)
}

// pairLoop is loop for the AVX2 sums: it takes the elements sixteen at a
// time, the first eight into accumulator set 0 and the next eight into set
// 1, so that every float64 lane sums the same elements in the same order
// as the AVX-512 kernel's, and the two paths return the same bits.
func (g *gen) pairLoop(ptrs []string, body func(a access, set int)) {
	advance := func(n int) {
		for _, r := range ptrs {
			g.p("ADDQ $%d, %s", 4*n, r)
		}
		g.p("SUBQ $%d, CX", n)
	}
	g.label("loop")
	g.p("CMPQ CX, $16")
	g.p("JLT tail")
	body(access{g: g}, 0)
	advance(8)
	body(access{g: g}, 1)
	advance(8)
	g.p("JMP loop")
	g.label("tail")
	g.p("CMPQ CX, $8")
	g.p("JLT short")
	body(access{g: g}, 0)
	advance(8)
	g.p("TESTQ CX, CX")
	g.p("JZ done")
	g.makeMask()
	body(access{g: g, masked: true}, 1)
	g.p("JMP done")
	g.label("short")
	g.p("TESTQ CX, CX")
	g.p("JZ done")
	g.makeMask()
	body(access{g: g, masked: true}, 0)
	g.label("done")
}

// sumDouble adds the float32 lanes of r, widened, into the float64
// accumulators acc0 (low half) and acc1 (high half); t is scratch.
func (g *gen) sumDouble(r int, acc0, acc1, t int) {
	if g.avx512() {
		g.p("VCVTPS2PD Y%d, Z%d", r, t)
		g.p("VADDPD Z%d, Z%d, Z%d", t, acc0, acc0)
		g.p("VEXTRACTF64X4 $1, Z%d, Y%d", r, t)
		g.p("VCVTPS2PD Y%d, Z%d", t, t)
		g.p("VADDPD Z%d, Z%d, Z%d", t, acc1, acc1)
		return
	}
	g.p("VCVTPS2PD X%d, Y%d", r, t)
	g.p("VADDPD Y%d, Y%d, Y%d", t, acc0, acc0)
	g.p("VEXTRACTF128 $1, Y%d, X%d", r, t)
	g.p("VCVTPS2PD X%d, Y%d", t, t)
	g.p("VADDPD Y%d, Y%d, Y%d", t, acc1, acc1)
}

// reduceDouble sums the accumulators in a fixed tree into X8: on AVX-512
// Z8 and Z9 (elements 16i+j and 16i+8+j in lane j); on AVX2 the same lanes
// split in two, Y8 and Y9 from set 0, Y11 and Y12 from set 1.
func (g *gen) reduceDouble() {
	const acc0, t = 8, 4
	if g.avx512() {
		g.p("VADDPD Z9, Z8, Z8")
		g.p("VEXTRACTF64X4 $1, Z8, Y%d", t)
	} else {
		g.p("VADDPD Y11, Y8, Y8")
		g.p("VADDPD Y12, Y9, Y%d", t)
	}
	g.p("VADDPD Y%d, Y%d, Y%d", t, acc0, acc0)
	g.p("VEXTRACTF128 $1, Y%d, X%d", acc0, t)
	g.p("VADDPD X%d, X%d, X%d", t, acc0, acc0)
	g.p("VPERMILPD $1, X%d, X%d", acc0, t)
	g.p("VADDSD X%d, X%d, X%d", t, acc0, acc0)
}

// kernel describes one generated function: its name without the ISA
// suffix, its Go signature, the size of its argument frame and its body.
type kernel struct {
	name  string
	sig   string
	frame int
	emit  func(g *gen, k kernel)
}

var kernels = []kernel{
	{"expSum", "(dst, x []float32, shift float32) float64", 64, (*gen).expSum},
	{"sumExp", "(x []float32, shift float32) float64", 40, (*gen).sumExp},
	{"maxOf", "(x []float32) float32", 28, (*gen).maxOf},
	{"scale", "(x []float32, s float32)", 28, (*gen).scale},
	{"swiglu", "(out, gate, up []float32)", 72, (*gen).swiglu},
	{"swigluBackward", "(dgate, dup, dout, gate, up []float32)", 120, (*gen).swigluBackward},
}

func (g *gen) header(k kernel) {
	name := k.name + g.s.name
	fmt.Fprintf(g.w, "\n// func %s%s\n", name, k.sig)
	fmt.Fprintf(g.w, "TEXT ·%s(SB), NOSPLIT, $0-%d\n", name, k.frame)
}

func (g *gen) ret() {
	g.p("VZEROUPPER")
	g.p("RET")
}

// zero clears register r.
func (g *gen) zero(r string) {
	if g.avx512() {
		g.p("VPXORQ %s, %s, %s", r, r, r)
	} else {
		g.p("VXORPD %s, %s, %s", r, r, r)
	}
}

// expSum stores dst[i] = e^(x[i]−shift) and returns their sum in float64.
func (g *gen) expSum(k kernel) { g.expSumBody(k, true) }

// sumExp returns Σ e^(x[i]−shift) in float64 without storing the terms.
func (g *gen) sumExp(k kernel) { g.expSumBody(k, false) }

// expSumBody emits expSum or sumExp. Registers: 0 x, 1 e, 2 n, 3 t,
// 4 scratch, 8, 9, 11 and 12 the float64 sums, 10 shift.
func (g *gen) expSumBody(k kernel, store bool) {
	g.header(k)
	ptrs := []string{"SI"}
	if store {
		g.p("MOVQ dst_base+0(FP), DI")
		g.p("MOVQ x_base+24(FP), SI")
		g.p("MOVQ x_len+32(FP), CX")
		g.p("VBROADCASTSS shift+48(FP), %s", g.r(10))
		ptrs = append(ptrs, "DI")
	} else {
		g.p("MOVQ x_base+0(FP), SI")
		g.p("MOVQ x_len+8(FP), CX")
		g.p("VBROADCASTSS shift+24(FP), %s", g.r(10))
	}
	g.prologue(true)
	for _, r := range []int{8, 9, 11, 12} {
		if r < 10 || !g.avx512() {
			g.zero(g.r(r))
		}
	}
	body := func(a access, set int) {
		a.load("(SI)", g.r(0))
		g.p("VSUBPS %s, %s, %s", g.r(10), g.r(0), g.r(0))
		g.exp(g.r(0), g.r(1), g.r(2), g.r(3))
		if store {
			a.store(g.r(1), "(DI)")
		}
		a.zeroInactive(g.r(1))
		g.sumDouble(1, 8+3*set, 9+3*set, 4)
	}
	if g.avx512() {
		g.loop(ptrs, func(a access) { body(a, 0) })
	} else {
		g.pairLoop(ptrs, body)
	}
	g.reduceDouble()
	g.p("VZEROUPPER")
	if store {
		g.p("MOVSD X8, ret+56(FP)")
	} else {
		g.p("MOVSD X8, ret+32(FP)")
	}
	g.p("RET")
}

// maxOf returns the largest element of a non-empty x. Registers: 0 the
// running maxima, 1 and 2 loads. The lanes of the last partial register
// past the end keep the running maxima, so they change nothing.
func (g *gen) maxOf(k kernel) {
	g.header(k)
	w := g.s.width
	g.p("MOVQ x_base+0(FP), SI")
	g.p("MOVQ x_len+8(FP), CX")
	g.p("VBROADCASTSS ·simdConsts+%d(SB), %s", 32*kNegInf, g.r(0))
	g.label("loop")
	g.p("CMPQ CX, $%d", w)
	g.p("JLT tail")
	g.p("VMAXPS (SI), %s, %s", g.r(0), g.r(0))
	g.p("ADDQ $%d, SI", 4*w)
	g.p("SUBQ $%d, CX", w)
	g.p("JMP loop")
	g.label("tail")
	g.p("TESTQ CX, CX")
	g.p("JZ done")
	if g.avx512() {
		g.p("MOVL $1, AX")
		g.p("SHLL CX, AX")
		g.p("DECL AX")
		g.p("KMOVW AX, K1")
		g.p("VMOVAPS Z0, Z1")
		g.p("VMOVUPS (SI), K1, Z1")
	} else {
		g.p("MOVQ CX, X13")
		g.p("VPBROADCASTD X13, %s", avx2Mask)
		g.p("VPCMPGTD %s, %s, %s", g.k(kIota), avx2Mask, avx2Mask)
		g.p("VMASKMOVPS (SI), %s, Y2", avx2Mask)
		g.p("VBLENDVPS %s, Y2, Y0, Y1", avx2Mask)
	}
	g.p("VMAXPS %s, %s, %s", g.r(1), g.r(0), g.r(0))
	g.label("done")
	if g.avx512() {
		g.p("VEXTRACTF64X4 $1, Z0, Y1")
		g.p("VMAXPS Y1, Y0, Y0")
	}
	g.p("VEXTRACTF128 $1, Y0, X1")
	g.p("VMAXPS X1, X0, X0")
	g.p("VPERMILPS $0x4e, X0, X1")
	g.p("VMAXPS X1, X0, X0")
	g.p("VPERMILPS $0xb1, X0, X1")
	g.p("VMAXPS X1, X0, X0")
	g.p("VZEROUPPER")
	g.p("MOVSS X0, ret+24(FP)")
	g.p("RET")
}

// scale multiplies x by s in place. Registers: 0 the lanes, 1 s.
func (g *gen) scale(k kernel) {
	g.header(k)
	g.p("MOVQ x_base+0(FP), SI")
	g.p("MOVQ x_len+8(FP), CX")
	g.p("VBROADCASTSS s+24(FP), %s", g.r(1))
	g.loop([]string{"SI"}, func(a access) {
		a.load("(SI)", g.r(0))
		g.p("VMULPS %s, %s, %s", g.r(1), g.r(0), g.r(0))
		a.store(g.r(0), "(SI)")
	})
	g.ret()
}

// swiglu stores out = gate/(1 + e^(−gate))·up, in the Go loop's order.
// Registers: 0 gate, 1 up, 2 −gate, 3 e and the result, 4 n, 5 t.
func (g *gen) swiglu(k kernel) {
	g.header(k)
	g.p("MOVQ out_base+0(FP), DI")
	g.p("MOVQ out_len+8(FP), CX")
	g.p("MOVQ gate_base+24(FP), SI")
	g.p("MOVQ up_base+48(FP), DX")
	g.prologue(true)
	g.loop([]string{"DI", "SI", "DX"}, func(a access) {
		a.load("(SI)", g.r(0))
		g.negate(g.r(0), g.r(2))
		g.exp(g.r(2), g.r(3), g.r(4), g.r(5))
		g.p("VADDPS %s, %s, %s", g.k(kOne), g.r(3), g.r(3))
		g.p("VDIVPS %s, %s, %s", g.r(3), g.r(0), g.r(3))
		a.load("(DX)", g.r(1))
		g.p("VMULPS %s, %s, %s", g.r(1), g.r(3), g.r(3))
		a.store(g.r(3), "(DI)")
	})
	g.ret()
}

// negate flips the sign bit of src into dst.
func (g *gen) negate(src, dst string) {
	if g.avx512() {
		g.p("VPXORD %s, %s, %s", g.k(kSign), src, dst)
	} else {
		g.p("VXORPS %s, %s, %s", g.k(kSign), src, dst)
	}
}

// swigluBackward accumulates dgate += dout·up·σ·(1 + gate·(1−σ)) and
// dup += dout·gate·σ with σ = 1/(1 + e^(−gate)).
// Registers: 0 gate, 1 up, 2 dout, 3 −gate, 4 e then σ, 5 n, 6 t, 7 1−σ,
// 8 dgate, 9 dup.
func (g *gen) swigluBackward(k kernel) {
	g.header(k)
	g.p("MOVQ dgate_base+0(FP), DI")
	g.p("MOVQ dgate_len+8(FP), CX")
	g.p("MOVQ dup_base+24(FP), R8")
	g.p("MOVQ dout_base+48(FP), R9")
	g.p("MOVQ gate_base+72(FP), SI")
	g.p("MOVQ up_base+96(FP), DX")
	g.prologue(true)
	g.loop([]string{"DI", "R8", "R9", "SI", "DX"}, func(a access) {
		a.load("(SI)", g.r(0))
		g.negate(g.r(0), g.r(3))
		g.exp(g.r(3), g.r(4), g.r(5), g.r(6))
		g.p("VADDPS %s, %s, %s", g.k(kOne), g.r(4), g.r(4))
		if g.avx512() {
			g.p("VDIVPS %s, %s, %s", g.r(4), g.k(kOne), g.r(4))
			g.p("VSUBPS %s, %s, %s", g.r(4), g.k(kOne), g.r(7))
		} else {
			g.p("VMOVUPS %s, %s", g.k(kOne), g.r(7))
			g.p("VDIVPS %s, %s, %s", g.r(4), g.r(7), g.r(4))
			g.p("VSUBPS %s, %s, %s", g.r(4), g.r(7), g.r(7))
		}
		g.p("VFMADD213PS %s, %s, %s", g.k(kOne), g.r(0), g.r(7))
		a.load("(R9)", g.r(2))
		a.load("(DX)", g.r(1))
		g.p("VMULPS %s, %s, %s", g.r(1), g.r(2), g.r(1))
		g.p("VMULPS %s, %s, %s", g.r(4), g.r(1), g.r(1))
		a.load("(DI)", g.r(8))
		g.p("VFMADD231PS %s, %s, %s", g.r(7), g.r(1), g.r(8))
		a.store(g.r(8), "(DI)")
		g.p("VMULPS %s, %s, %s", g.r(0), g.r(2), g.r(2))
		a.load("(R8)", g.r(9))
		g.p("VFMADD231PS %s, %s, %s", g.r(4), g.r(2), g.r(9))
		a.store(g.r(9), "(R8)")
	})
	g.ret()
}

func main() {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "// Code generated by gen_simd.go; DO NOT EDIT.\n\n")
	fmt.Fprintf(&buf, "//go:build amd64\n\n")
	fmt.Fprintf(&buf, "#include \"textflag.h\"\n\n")
	for c := range nConsts {
		for i, v := range constBits(c) {
			fmt.Fprintf(&buf, "DATA ·simdConsts+%d(SB)/4, $0x%08x\n", 32*c+4*i, v)
		}
	}
	fmt.Fprintf(&buf, "GLOBL ·simdConsts(SB), RODATA|NOPTR, $%d\n", 32*nConsts)
	for _, s := range isas {
		g := &gen{s: s, w: &buf}
		for _, k := range kernels {
			k.emit(g, k)
		}
	}
	if err := os.WriteFile("simd_amd64.s", buf.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}

	var d bytes.Buffer
	fmt.Fprintf(&d, "// Code generated by gen_simd.go; DO NOT EDIT.\n\n")
	fmt.Fprintf(&d, "//go:build amd64\n\npackage cpu\n")
	for _, s := range isas {
		for _, k := range kernels {
			fmt.Fprintf(&d, "\n//go:noescape\nfunc %s%s%s\n", k.name, s.name, k.sig)
		}
		fmt.Fprintf(&d, "\n// simd%s runs the %s kernels.\n", s.name, s.name)
		fmt.Fprintf(&d, "var simd%s = &simdPath{\n\tname: %q,\n", s.name, map[string]string{"AVX512": "avx512", "AVX2": "avx2"}[s.name])
		for _, k := range kernels {
			fmt.Fprintf(&d, "\t%s: %s%s,\n", k.name, k.name, s.name)
		}
		fmt.Fprintf(&d, "}\n")
	}
	src, err := format.Source(d.Bytes())
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile("simd_amd64.go", src, 0o644); err != nil {
		log.Fatal(err)
	}
}
