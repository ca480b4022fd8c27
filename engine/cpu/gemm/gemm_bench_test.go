package gemm

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// BenchmarkSgemm compares Sgemm on its current path (MOERL_GEMM selects
// one) with gonum's pure-Go Sgemm at the model's shapes and a square one.
func BenchmarkSgemm(b *testing.B) {
	shapes := append(modelShapes[:len(modelShapes):len(modelShapes)], shape{1024, 1024, 1024, false, false})
	rng := rand.New(rand.NewPCG(5, 6))
	for _, s := range shapes {
		o := newOperands(s, 0, rng)
		name := fmt.Sprintf("%dx%dx%d_%s", s.m, s.n, s.k, transName(s))
		flops := 2 * float64(s.m) * float64(s.n) * float64(s.k)
		b.Run(name+"/moerl-"+Path(), func(b *testing.B) {
			for b.Loop() {
				o.sgemm(Sgemm, 1, 0, o.c)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(name+"/gonum", func(b *testing.B) {
			tA, tB := blas.NoTrans, blas.NoTrans
			if s.transA {
				tA = blas.Trans
			}
			if s.transB {
				tB = blas.Trans
			}
			var impl gonum.Implementation
			for b.Loop() {
				impl.Sgemm(tA, tB, s.m, s.n, s.k, 1, o.a, o.lda, o.b, o.ldb, 0, o.c, o.ldc)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

func transName(s shape) string {
	name := []byte("NN")
	if s.transA {
		name[0] = 'T'
	}
	if s.transB {
		name[1] = 'T'
	}
	return string(name)
}
