package cpu

import (
	"fmt"
	"math"
	"testing"
)

func TestGemm(t *testing.T) {
	b := New()
	r := newRand(1)
	const m, n, k = 5, 7, 9
	for _, transA := range []bool{false, true} {
		for _, transB := range []bool{false, true} {
			for _, beta := range []float32{0, 0.5} {
				name := fmt.Sprintf("transA=%v transB=%v beta=%v", transA, transB, beta)
				ar, ac := dims(transA, m, k)
				br, bc := dims(transB, k, n)
				offA, lda := 4, ac+3
				offB, ldb := 2, bc+1
				offC, ldc := 3, n+2
				a := randVec(r, offA+ar*lda, 1)
				bm := randVec(r, offB+br*ldb, 1)
				c := randVec(r, offC+m*ldc+1, 1)
				if beta == 0 { // beta 0 must overwrite, NaN included
					for i := range m {
						for j := range n {
							c[offC+i*ldc+j] = float32(math.NaN())
						}
					}
				}
				want := f64s(c)
				refGemm(transA, transB, m, n, k, 1.5, f64s(a), offA, lda, f64s(bm), offB, ldb, float64(beta), want, offC, ldc)
				ct := tf(c)
				b.Gemm(transA, transB, m, n, k, 1.5, tf(a), offA, lda, tf(bm), offB, ldb, beta, ct, offC, ldc)
				checkClose(t, name, ct.F, want, fwdTol)
			}
		}
	}
}

func TestGemmBatched(t *testing.T) {
	b := New()
	r := newRand(2)
	const m, n, k, batch = 4, 3, 5, 3
	for _, tc := range []struct {
		name    string
		strideC int
		beta    float32
	}{
		{"separate outputs", m*n + 2, 0.25},
		{"shared output accumulates", 0, 1},
	} {
		for _, transA := range []bool{false, true} {
			ar, ac := dims(transA, m, k)
			strideA, strideB := ar*ac+1, k*n+3
			a := randVec(r, 1+batch*strideA, 1)
			bm := randVec(r, 2+batch*strideB, 1)
			c := randVec(r, 5+batch*tc.strideC+m*n, 1)
			want := f64s(c)
			for i := range batch {
				refGemm(transA, false, m, n, k, 0.5, f64s(a), 1+i*strideA, ac, f64s(bm), 2+i*strideB, n,
					float64(tc.beta), want, 5+i*tc.strideC, n)
			}
			ct := tf(c)
			b.GemmBatched(transA, false, m, n, k, 0.5, tf(a), 1, ac, strideA, tf(bm), 2, n, strideB,
				tc.beta, ct, 5, n, tc.strideC, batch)
			checkClose(t, fmt.Sprintf("%s transA=%v", tc.name, transA), ct.F, want, fwdTol)
		}
	}
}

func TestAddScaleSumSquares(t *testing.T) {
	b := New()
	r := newRand(3)
	for _, n := range []int{0, 1, 7, 40000} {
		x, y := randVec(r, n+3, 1), randVec(r, n+3, 1)
		want := f64s(y)
		var ss float64
		for i := range n {
			want[i] += float64(x[i])
			ss += float64(x[i]) * float64(x[i])
		}
		yt := tf(y)
		b.Add(yt, tf(x), n)
		checkClose(t, fmt.Sprintf("Add n=%d", n), yt.F, want, 1e-7)
		if got := b.SumSquares(tf(x), n); math.Abs(got-ss) > 1e-12*max(ss, 1) {
			t.Errorf("SumSquares n=%d = %v, want %v", n, got, ss)
		}
		for i := range n {
			want[i] *= -0.5
		}
		b.Scale(yt, n, -0.5)
		checkClose(t, fmt.Sprintf("Scale n=%d", n), yt.F, want, 1e-7)
	}
}

func TestGemmEmptyK(t *testing.T) {
	b := New()
	for _, beta := range []float32{0, 0.5} {
		c := []float32{1, 2, 3, 4, 5, 6}
		b.Gemm(false, false, 2, 2, 0, 1, wrap(nil), 0, 0, wrap(nil), 0, 0, beta, wrap(c), 0, 3)
		want := []float64{float64(beta), 2 * float64(beta), 3, 4 * float64(beta), 5 * float64(beta), 6}
		checkClose(t, fmt.Sprintf("k=0 beta=%v", beta), c, want, 0)
	}
}
