package cpu

import (
	"math"
	"sort"
)

// Plain float64 loops that define what each op computes; the tests hold
// the float32 kernels to them.

func refGemm(transA, transB bool, m, n, k int, alpha float64, a []float64, offA, lda int,
	b []float64, offB, ldb int, beta float64, c []float64, offC, ldc int) {
	for i := range m {
		for j := range n {
			var s float64
			for p := range k {
				ai, bi := offA+i*lda+p, offB+p*ldb+j
				if transA {
					ai = offA + p*lda + i
				}
				if transB {
					bi = offB + j*ldb + p
				}
				av, bv := a[ai], b[bi]
				s += av * bv
			}
			at := offC + i*ldc + j
			if beta == 0 {
				c[at] = alpha * s
			} else {
				c[at] = alpha*s + beta*c[at]
			}
		}
	}
}

func refRMSNorm(x, w []float64, rows, dim int, eps float64) (out, rstd []float64) {
	out, rstd = make([]float64, rows*dim), make([]float64, rows)
	for r := range rows {
		var ss float64
		for j := range dim {
			ss += x[r*dim+j] * x[r*dim+j]
		}
		rstd[r] = 1 / math.Sqrt(ss/float64(dim)+eps)
		for j := range dim {
			out[r*dim+j] = x[r*dim+j] * rstd[r] * w[j]
		}
	}
	return out, rstd
}

func refRoPE(x []float64, pos []int32, rows, heads, hd int, theta float64) []float64 {
	out := append([]float64(nil), x...)
	half := hd / 2
	for r := range rows {
		for h := range heads {
			for i := range half {
				ang := float64(pos[r]) * math.Pow(theta, -2*float64(i)/float64(hd))
				a := (r*heads+h)*hd + i
				x1, x2 := x[a], x[a+half]
				out[a] = x1*math.Cos(ang) - x2*math.Sin(ang)
				out[a+half] = x1*math.Sin(ang) + x2*math.Cos(ang)
			}
		}
	}
	return out
}

func refAttention(q, k, v []float64, batch, seq, heads, hd int) (out, lse []float64) {
	out, lse = make([]float64, len(q)), make([]float64, batch*heads*seq)
	at := func(b, t, h int) int { return ((b*seq+t)*heads + h) * hd }
	for b := range batch {
		for h := range heads {
			for i := range seq {
				s := make([]float64, i+1)
				m := math.Inf(-1)
				for j := range s {
					for d := range hd {
						s[j] += q[at(b, i, h)+d] * k[at(b, j, h)+d]
					}
					s[j] /= math.Sqrt(float64(hd))
					m = max(m, s[j])
				}
				var l float64
				for j := range s {
					s[j] = math.Exp(s[j] - m)
					l += s[j]
				}
				for j := range s {
					for d := range hd {
						out[at(b, i, h)+d] += s[j] / l * v[at(b, j, h)+d]
					}
				}
				lse[(b*heads+h)*seq+i] = m + math.Log(l)
			}
		}
	}
	return out, lse
}

func refSwiGLU(g, u []float64) []float64 {
	out := make([]float64, len(g))
	for i := range g {
		out[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
	}
	return out
}

func refSoftmax(x []float64, rows, n int) []float64 {
	p := make([]float64, len(x))
	for r := range rows {
		row := x[r*n : (r+1)*n]
		m := math.Inf(-1)
		for _, v := range row {
			m = max(m, v)
		}
		var s float64
		for i, v := range row {
			p[r*n+i] = math.Exp(v - m)
			s += p[r*n+i]
		}
		for i := range row {
			p[r*n+i] /= s
		}
	}
	return p
}

// refRouter returns the renormalised top-k weights and the experts, ranked
// by probability with ties to the lower index.
func refRouter(logits []float64, rows, nExperts, k int) (weights []float64, experts []int32, probs []float64) {
	probs = refSoftmax(logits, rows, nExperts)
	for r := range rows {
		p := probs[r*nExperts : (r+1)*nExperts]
		idx := make([]int, nExperts)
		for i := range idx {
			idx[i] = i
		}
		sort.SliceStable(idx, func(a, b int) bool { return p[idx[a]] > p[idx[b]] })
		var s float64
		for _, e := range idx[:k] {
			s += p[e]
		}
		for _, e := range idx[:k] {
			experts = append(experts, int32(e))
			weights = append(weights, p[e]/s)
		}
	}
	return weights, experts, probs
}

func refLogSumExp(x []float64) float64 {
	m := math.Inf(-1)
	for _, v := range x {
		m = max(m, v)
	}
	var s float64
	for _, v := range x {
		s += math.Exp(v - m)
	}
	return m + math.Log(s)
}

func refLogProbs(logits []float64, targets []int32, vocab int) (logp, lse []float64) {
	for r, t := range targets {
		l := refLogSumExp(logits[r*vocab : (r+1)*vocab])
		lse = append(lse, l)
		logp = append(logp, logits[r*vocab+int(t)]-l)
	}
	return logp, lse
}

func refEntropy(logits []float64, rows, vocab int) []float64 {
	p := refSoftmax(logits, rows, vocab)
	h := make([]float64, rows)
	for i, v := range p {
		if v > 0 {
			h[i/vocab] -= v * math.Log(v)
		}
	}
	return h
}

func refGather(x []float64, perm []int32, dim int) []float64 {
	var out []float64
	for _, t := range perm {
		out = append(out, x[int(t)*dim:(int(t)+1)*dim]...)
	}
	return out
}

func refCombine(y, w []float64, inv []int32, rows, k, dim int) []float64 {
	out := make([]float64, rows*dim)
	for t := range rows {
		for j := range k {
			s := int(inv[t*k+j])
			for d := range dim {
				out[t*dim+d] += w[t*k+j] * y[s*dim+d]
			}
		}
	}
	return out
}
