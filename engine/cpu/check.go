package cpu

import (
	"fmt"
	"unsafe"

	"github.com/moerl/moerl/engine"
)

// The checks below guard against buffers shorter than the shapes say. On the
// CPU Go's bounds checks would catch the overrun anyway, but deep inside a
// kernel; a device backend would corrupt memory instead. They cost one
// comparison per operand per call.

// f32 returns the first n float32 elements of t, panicking if t has fewer.
func f32(op, name string, t *engine.Tensor, n int) []float32 {
	if n < 0 || len(t.F) < n {
		panic(sizeError(op, name, "float32", t, len(t.F), n))
	}
	return t.F[:n:n]
}

// i32 returns the first n int32 elements of t, panicking if t has fewer.
func i32(op, name string, t *engine.Tensor, n int) []int32 {
	if n < 0 || len(t.I) < n {
		panic(sizeError(op, name, "int32", t, len(t.I), n))
	}
	return t.I[:n:n]
}

// bf16 returns the first n bfloat16 elements of t, panicking if t has fewer.
func bf16(op, name string, t *engine.Tensor, n int) []uint16 {
	if n < 0 || len(t.BF) < n {
		panic(sizeError(op, name, "bfloat16", t, len(t.BF), n))
	}
	return t.BF[:n:n]
}

// f32Exact is f32 for the host copies, whose lengths must match exactly.
func f32Exact(op, name string, t *engine.Tensor, n int) []float32 {
	if len(t.F) != n {
		panic(fmt.Sprintf("cpu: %s: %s %v has %d float32 elements, the host slice %d", op, name, t, len(t.F), n))
	}
	return t.F
}

func i32Exact(op, name string, t *engine.Tensor, n int) []int32 {
	if len(t.I) != n {
		panic(fmt.Sprintf("cpu: %s: %s %v has %d int32 elements, the host slice %d", op, name, t, len(t.I), n))
	}
	return t.I
}

func sizeError(op, name, kind string, t *engine.Tensor, have, need int) string {
	if need < 0 {
		return fmt.Sprintf("cpu: %s: negative size %d for %s", op, need, name)
	}
	return fmt.Sprintf("cpu: %s: %s %v has %d %s elements, need %d", op, name, t, have, kind, need)
}

// checkIndex panics unless 0 ≤ i < n; what names the index for the message.
func checkIndex(op, what string, i int32, n int) {
	if i < 0 || int(i) >= n {
		panic(fmt.Sprintf("cpu: %s: %s %d out of range [0, %d)", op, what, i, n))
	}
}

// addrs is the address range [lo, hi) of s's elements.
func addrs(s []float32) (lo, hi uintptr) {
	lo = uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	return lo, lo + uintptr(len(s))*unsafe.Sizeof(float32(0))
}

// sameStart reports whether a and b begin at the same element (an op that
// allows an output to be its input exactly checks this first).
func sameStart(a, b []float32) bool {
	return len(a) > 0 && len(b) > 0 && unsafe.SliceData(a) == unsafe.SliceData(b)
}

// region is a named argument's elements, for the overlap checks.
type region struct {
	name string
	s    []float32
}

// disjoint panics unless a and b share no element: an output over another
// argument of an op that forbids it, which Go's bounds checks would never
// catch.
func disjoint(op string, a, b region) {
	if len(a.s) == 0 || len(b.s) == 0 {
		return
	}
	alo, ahi := addrs(a.s)
	blo, bhi := addrs(b.s)
	if alo < bhi && blo < ahi {
		panic(fmt.Sprintf("cpu: %s: %s overlaps %s", op, a.name, b.name))
	}
}
