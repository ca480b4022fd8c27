package cpu

import "math"

// The vector kernels below keep several independent partial sums so that
// the floating-point add latency does not serialise the loop; the order in
// which they combine is fixed, so results stay deterministic.

// dot returns Σ a[i]·b[i]; b must be at least as long as a.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+8 <= len(a); i += 8 {
		x, y := (*[8]float32)(a[i:]), (*[8]float32)(b[i:])
		s0 += x[0]*y[0] + x[4]*y[4]
		s1 += x[1]*y[1] + x[5]*y[5]
		s2 += x[2]*y[2] + x[6]*y[6]
		s3 += x[3]*y[3] + x[7]*y[7]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// axpy computes y += alpha·x; y must be at least as long as x.
func axpy(alpha float32, x, y []float32) {
	y = y[:len(x)]
	i := 0
	for ; i+4 <= len(x); i += 4 {
		xx, yy := (*[4]float32)(x[i:]), (*[4]float32)(y[i:])
		yy[0] += alpha * xx[0]
		yy[1] += alpha * xx[1]
		yy[2] += alpha * xx[2]
		yy[3] += alpha * xx[3]
	}
	for ; i < len(x); i++ {
		y[i] += alpha * x[i]
	}
}

// addTo computes y += x; y must be at least as long as x.
func addTo(y, x []float32) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += v
	}
}

// scaleBy computes x *= s.
func scaleBy(x []float32, s float32) {
	for i := range x {
		x[i] *= s
	}
}

// maxOf returns the largest element of a non-empty x.
func maxOf(x []float32) float32 {
	m := x[0]
	for _, v := range x[1:] {
		if v > m {
			m = v
		}
	}
	return m
}

// argmax returns the index of the largest element, the lowest on ties.
func argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

// logSumExp returns log Σ exp(x) of a non-empty x with the sum in float64.
func logSumExp(x []float32) float32 {
	m := maxOfVec(x)
	return m + float32(math.Log(sumExp(x, m)))
}

const (
	log2E  float32 = math.Log2E
	ln2Hi  float32 = 0.693145751953125 // ln 2 rounded to 16 bits, so n·ln2Hi is exact
	ln2Lo  float32 = math.Ln2 - 0.693145751953125
	roundC float32 = 1 << 23 * 1.5 // adding it rounds a float32 of magnitude < 2²² to an integer
)

// exp32 is e^x in float32 within 1 ulp of the correctly rounded value (the
// tests check 2). It reduces x = n·ln2 + r with |r| ≤ ln2/2 and evaluates
// the degree-7 Taylor series of e^r, whose truncation error (< 1e-8) is
// below float32 rounding. Arguments that would leave the normal range, and
// NaN, go to math.Exp. It is small enough for the compiler to inline.
func exp32(x float32) float32 {
	if !(x >= -87 && x <= 88) {
		return expSlow(x)
	}
	n := (x*log2E + roundC) - roundC
	r := (x - n*ln2Hi) - n*ln2Lo
	r2 := r * r
	p := (1 + r) + r2*((0.5+r*(1.0/6))+r2*((1.0/24+r*(1.0/120))+r2*(1.0/720+r*(1.0/5040))))
	return p * math.Float32frombits(uint32(int32(n)+127)<<23)
}

func expSlow(x float32) float32 { return float32(math.Exp(float64(x))) }
