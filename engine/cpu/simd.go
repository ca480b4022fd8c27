package cpu

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
)

//go:generate go run gen_simd.go

// simdPath is one implementation of the loops built on the exponential,
// which Go does not vectorise: the pure-Go path (the reference, and the
// fallback on every architecture) and, on amd64, generated AVX-512 and
// AVX2+FMA assembly (gen_simd.go). Callers go through the wrappers below,
// which check lengths: the assembly reads and writes through raw pointers.
//
// The assembly exponential is within 1 ulp of e^x correctly rounded on
// every one of the 2³² float32 inputs (checked once exhaustively: 0.24% of
// them are 1 ulp off, against 1.8% for exp32; TestVectorExp checks a dense
// grid), with exact 0 below −103.97, +Inf above 88.72, e^−Inf = 0 and NaN
// kept. It rounds differently from exp32 and the kernels fuse
// multiply-adds where the Go loops round twice, so a vector path differs
// from the Go path by a few ulp per element, and the ops built on them by
// under 1e-6 relative (TestSIMDPathsAgree). Every path is deterministic:
// each element's arithmetic is fixed, and the float64 sums add lanes in an
// order that depends only on the length, the same on AVX2 as on AVX-512,
// so those two paths give identical bits (TestDeterminism).
type simdPath struct {
	name string
	// expSum stores dst[i] = e^(x[i]−shift) and returns Σ dst[i] in float64;
	// dst may be x. sumExp returns the sum without storing the terms.
	expSum func(dst, x []float32, shift float32) float64
	sumExp func(x []float32, shift float32) float64
	// maxOf returns the largest element of a non-empty x.
	maxOf func(x []float32) float32
	// scale computes x *= s.
	scale func(x []float32, s float32)
	// swiglu computes out = silu(gate)·up; swigluBackward accumulates
	// dgate and dup as Backend.SwiGLUBackward does.
	swiglu         func(out, gate, up []float32)
	swigluBackward func(dgate, dup, dout, gate, up []float32)
}

// simdGo is the pure-Go path.
var simdGo = &simdPath{
	name:           "go",
	expSum:         expSumGo,
	sumExp:         sumExpGo,
	maxOf:          maxOf,
	scale:          scaleBy,
	swiglu:         swigluGo,
	swigluBackward: swigluBackwardGo,
}

var (
	simdAvailable []*simdPath // this CPU's paths, fastest first
	simdActive    atomic.Pointer[simdPath]
	simdEnvErr    error
)

func init() {
	simdAvailable = append(archSIMD(), simdGo)
	simdActive.Store(simdAvailable[0])
	if name := os.Getenv("MOERL_SIMD"); name != "" {
		if err := SetSIMDPath(name); err != nil {
			simdEnvErr = fmt.Errorf("MOERL_SIMD: %w", err)
		}
	}
}

// SIMDPaths lists the paths this CPU supports for the exponential-based
// loops (softmax, log-sum-exp, SwiGLU), fastest first: some of "avx512",
// "avx2", then "go".
func SIMDPaths() []string {
	names := make([]string, len(simdAvailable))
	for i, p := range simdAvailable {
		names[i] = p.name
	}
	return names
}

// SIMDPath reports the path the backend's exponential-based loops use.
func SIMDPath() string { return simdActive.Load().name }

// SetSIMDPath makes the exponential-based loops use the named path (one of
// SIMDPaths). The environment variable MOERL_SIMD does the same at
// start-up; MOERL_SIMD=go gives the pure-Go reference loops.
func SetSIMDPath(name string) error {
	for _, p := range simdAvailable {
		if p.name == name {
			simdActive.Store(p)
			return nil
		}
	}
	return fmt.Errorf("SIMD path %q not supported on this CPU (have %s)", name, strings.Join(SIMDPaths(), ", "))
}

// SIMDEnvErr reports why MOERL_SIMD was ignored, or nil if it was unset or
// used.
func SIMDEnvErr() error { return simdEnvErr }

// The wrappers check that every slice holds the elements the kernel will
// touch, so that a bad length panics instead of corrupting memory.

// expSum stores dst[i] = e^(x[i]−shift) and returns Σ dst[i] in float64.
func expSum(dst, x []float32, shift float32) float64 {
	return simdActive.Load().expSum(dst[:len(x)], x, shift)
}

// sumExp returns Σ e^(x[i]−shift) in float64.
func sumExp(x []float32, shift float32) float64 {
	return simdActive.Load().sumExp(x, shift)
}

// maxOfVec returns the largest element of a non-empty x. Unlike maxOf, it
// may return any NaN element's value or ignore it; callers feed the maximum
// to sums that a NaN element makes NaN anyway.
func maxOfVec(x []float32) float32 {
	if len(x) == 0 {
		panic("cpu: maximum of an empty row")
	}
	return simdActive.Load().maxOf(x)
}

// scaleVec computes x *= s.
func scaleVec(x []float32, s float32) { simdActive.Load().scale(x, s) }

// swiglu computes out = silu(gate)·up over len(out) elements.
func swiglu(out, gate, up []float32) {
	n := len(out)
	checkLen(n, len(gate), len(up))
	simdActive.Load().swiglu(out, gate[:n], up[:n])
}

// swigluBackward accumulates the SwiGLU gradients over len(dgate) elements.
func swigluBackward(dgate, dup, dout, gate, up []float32) {
	n := len(dgate)
	checkLen(n, len(dup), len(dout), len(gate), len(up))
	simdActive.Load().swigluBackward(dgate, dup[:n], dout[:n], gate[:n], up[:n])
}

func checkLen(n int, lens ...int) {
	for _, l := range lens {
		if l < n {
			panic(fmt.Sprintf("cpu: slice of %d elements where %d are needed", l, n))
		}
	}
}

func expSumGo(dst, x []float32, shift float32) float64 {
	dst = dst[:len(x)]
	var s float64
	for i, v := range x {
		e := exp32(v - shift)
		dst[i] = e
		s += float64(e)
	}
	return s
}

func sumExpGo(x []float32, shift float32) float64 {
	var s float64
	for _, v := range x {
		s += float64(exp32(v - shift))
	}
	return s
}

func swigluGo(out, gate, up []float32) {
	g, u := gate[:len(out)], up[:len(out)]
	for i, x := range g {
		out[i] = x / (1 + exp32(-x)) * u[i]
	}
}

func swigluBackwardGo(dgate, dup, dout, gate, up []float32) {
	n := len(dgate)
	du, d, g, u := dup[:n], dout[:n], gate[:n], up[:n]
	for i, x := range g {
		sig := 1 / (1 + exp32(-x))
		dgate[i] += d[i] * u[i] * sig * (1 + x*(1-sig))
		du[i] += d[i] * x * sig
	}
}
