package cpu

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"testing"
)

// sampleRows samples rows copies of one logits row with stratified
// u = (i+½)/rows, so that token frequencies approximate the sampling
// distribution to within about 1/rows.
func sampleRows(logits []float32, rows int, temperature float32, topK int, topP float32) (tokens []int32, logp []float32) {
	vocab := len(logits)
	x := make([]float32, 0, rows*vocab)
	u := make([]float32, rows)
	for i := range rows {
		x = append(x, logits...)
		u[i] = (float32(i) + 0.5) / float32(rows)
	}
	tokens, logp = make([]int32, rows), make([]float32, rows)
	New().Sample(wrapI(tokens), wrap(logp), tf(x), tf(u), rows, vocab, temperature, topK, topP)
	return tokens, logp
}

// refSampleDist is the distribution Sample draws from: softmax(x/T) cut to
// the topK best, then to the shortest prefix reaching topP, renormalised.
func refSampleDist(logits []float32, temperature float64, topK int, topP float64) []float64 {
	z := make([]float64, len(logits))
	for i, v := range logits {
		z[i] = float64(v) / temperature
	}
	p := refSoftmax(z, 1, len(z))
	idx := make([]int, len(p))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return p[idx[a]] > p[idx[b]] })
	keep := len(idx)
	if topK > 0 && topK < keep {
		keep = topK
	}
	var sum float64
	for _, i := range idx[:keep] {
		sum += p[i]
	}
	if topP < 1 {
		var cum float64
		for j, i := range idx[:keep] {
			cum += p[i] / sum
			if cum >= topP {
				keep = j + 1
				break
			}
		}
	}
	q := make([]float64, len(p))
	sum = 0
	for _, i := range idx[:keep] {
		q[i] = p[i]
		sum += p[i]
	}
	for i := range q {
		q[i] /= sum
	}
	return q
}

func TestSampleDistribution(t *testing.T) {
	logits := []float32{0.5, 2, -1, 1.2, 0.1, 1.9, -0.3, 0.8}
	const rows = 20000
	for _, tc := range []struct {
		temperature float32
		topK        int
		topP        float32
	}{
		{1, 0, 1}, {0.7, 0, 1}, {1.3, 3, 1}, {1, 0, 0.8}, {0.9, 5, 0.6},
	} {
		name := fmt.Sprintf("T=%v topK=%d topP=%v", tc.temperature, tc.topK, tc.topP)
		tokens, logp := sampleRows(logits, rows, tc.temperature, tc.topK, tc.topP)
		want := refSampleDist(logits, float64(tc.temperature), tc.topK, float64(tc.topP))
		freq := make([]float64, len(logits))
		for _, tok := range tokens {
			freq[tok] += 1.0 / rows
		}
		for i := range freq {
			if math.Abs(freq[i]-want[i]) > 2.0/rows {
				t.Errorf("%s: token %d frequency %.5f, want %.5f", name, i, freq[i], want[i])
			}
		}
		full := refSampleDist(logits, float64(tc.temperature), 0, 1)
		for i, tok := range tokens {
			if w := math.Log(full[tok]); math.Abs(float64(logp[i])-w) > 1e-5 {
				t.Fatalf("%s: logp of token %d = %v, want %v", name, tok, logp[i], w)
			}
		}
	}
}

func TestSampleArgmax(t *testing.T) {
	logits := []float32{0.5, 2, -1, 2, 0.1, 1.9}
	const best = 1 // tied with 3: the lower id wins
	lse := refLogSumExp(f64s(logits))
	for _, tc := range []struct {
		name        string
		temperature float32
		topK        int
		topP        float32
		wantLogp    float64
	}{
		{"greedy", 0, 0, 1, 2 - lse},
		{"topK=1", 1, 1, 1, 2 - lse},
		{"tiny topP", 1, 0, 1e-6, 2 - lse},
		{"topK=1 hot", 2, 1, 1, 1 - refLogSumExp(f64s([]float32{0.25, 1, -0.5, 1, 0.05, 0.95}))},
	} {
		tokens, logp := sampleRows(logits, 50, tc.temperature, tc.topK, tc.topP)
		for i, tok := range tokens {
			if tok != best {
				t.Fatalf("%s: row %d sampled %d, want %d", tc.name, i, tok, best)
			}
			if math.Abs(float64(logp[i])-tc.wantLogp) > 1e-6 {
				t.Fatalf("%s: logp %v, want %v", tc.name, logp[i], tc.wantLogp)
			}
		}
	}
}

func TestSampleLogpMatchesTokenLogProbs(t *testing.T) {
	// At temperature 1 the sampler's log-probability is what the trainer
	// recomputes, to the bit.
	b := New()
	logits := randVec(newRand(31), 6*16, 3)
	u := randVec(newRand(32), 6, 0.5)
	for i := range u {
		u[i] += 0.5
	}
	tokens, logp := make([]int32, 6), make([]float32, 6)
	b.Sample(wrapI(tokens), wrap(logp), tf(logits), tf(u), 6, 16, 1, 0, 1)
	again, lse := make([]float32, 6), make([]float32, 6)
	b.TokenLogProbs(wrap(again), wrap(lse), tf(logits), wrapI(tokens), 6, 16)
	if !slices.Equal(logp, again) {
		t.Errorf("Sample logp %v, TokenLogProbs %v", logp, again)
	}
}
