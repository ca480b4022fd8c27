package cpu

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/moerl/moerl/engine"
)

// Tolerances: a float32 forward against its float64 reference, and a
// float32 backward against float64 central differences.
const (
	fwdTol  = 1e-6
	gradTol = 1e-5
)

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x5eed)) }

// randVec draws n values uniform in [-scale, scale).
func randVec(r *rand.Rand, n int, scale float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32((2*r.Float64() - 1) * scale)
	}
	return x
}

func randInts(r *rand.Rand, n, limit int) []int32 {
	x := make([]int32, n)
	for i := range x {
		x[i] = int32(r.IntN(limit))
	}
	return x
}

// tf and ti wrap copies of host data as tensors.
func tf(data []float32) *engine.Tensor {
	t := engine.HostF32(len(data))
	copy(t.F, data)
	return t
}

func ti(data []int32) *engine.Tensor {
	t := engine.HostI32(len(data))
	copy(t.I, data)
	return t
}

func f64s(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}

// relErr is ‖got − want‖ / ‖want‖ (or the absolute error when want is 0).
func relErr(got []float32, want []float64) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var d, n float64
	for i, w := range want {
		e := float64(got[i]) - w
		d += e * e
		n += w * w
	}
	if n == 0 {
		return math.Sqrt(d)
	}
	return math.Sqrt(d / n)
}

func checkClose(t *testing.T, name string, got []float32, want []float64, tol float64) {
	t.Helper()
	e := relErr(got, want)
	if !(e <= tol) {
		t.Errorf("%s: relative error %.3g > %.1g", name, e, tol)
	}
	t.Logf("%s: relative error %.3g", name, e)
}

// numGrad is the central-difference gradient of loss at x (x is restored).
func numGrad(x []float64, loss func() float64) []float64 {
	const h = 1e-6
	g := make([]float64, len(x))
	for i, v := range x {
		x[i] = v + h
		lp := loss()
		x[i] = v - h
		lm := loss()
		x[i] = v
		g[i] = (lp - lm) / (2 * h)
	}
	return g
}

// checkGrad compares a backward's gradient with central differences of loss
// with respect to x (the float64 copy of the input that loss reads).
func checkGrad(t *testing.T, name string, got []float32, x []float64, loss func() float64) {
	t.Helper()
	checkClose(t, name+" gradient", got, numGrad(x, loss), gradTol)
}

// linear returns Σ c·y, the random linear functional the gradient checks use.
func linear(c []float32, y []float64) float64 {
	var s float64
	for i, v := range y {
		s += float64(c[i]) * v
	}
	return s
}

// checkAccumulates runs backward a second time and checks that each gradient
// doubled: backward ops add into what is there.
func checkAccumulates(t *testing.T, name string, backward func(), grads ...[]float32) {
	t.Helper()
	first := make([][]float64, len(grads))
	for i, g := range grads {
		first[i] = make([]float64, len(g))
		for j, v := range g {
			first[i][j] = 2 * float64(v)
		}
	}
	backward()
	for i, g := range grads {
		checkClose(t, name+" run twice", g, first[i], 1e-6)
	}
}

// mustPanic checks that f panics with a message containing want.
func mustPanic(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if r == nil {
			t.Errorf("no panic, want one mentioning %q", want)
			return
		}
		if msg, _ := r.(string); !strings.Contains(msg, want) {
			t.Errorf("panic %v, want one mentioning %q", r, want)
		}
	}()
	f()
}

// wrap and wrapI make tensors that share the slice, for outputs the test
// reads back.
func wrap(x []float32) *engine.Tensor {
	return &engine.Tensor{Shape: []int{len(x)}, DType: engine.F32, F: x}
}

func wrapI(x []int32) *engine.Tensor {
	return &engine.Tensor{Shape: []int{len(x)}, DType: engine.I32, I: x}
}
