package cpu

import "testing"

// TestEntropyBackward checks dH/dlogits = −p⊙(log p + H) against central
// differences of the float64 entropy, rows with a zero gradient untouched,
// and that it accumulates.
func TestEntropyBackward(t *testing.T) {
	b := New()
	r := newRand(41)
	const rows, vocab = 5, 13
	logits := randVec(r, rows*vocab, 3)
	lse, ent := make([]float32, rows), make([]float32, rows)
	b.TokenLogProbs(wrap(make([]float32, rows)), wrap(lse), tf(logits), ti(make([]int32, rows)), rows, vocab)
	b.Entropy(wrap(ent), tf(logits), wrap(lse), rows, vocab)
	c := randVec(r, rows, 1)
	c[3] = 0
	dl := make([]float32, rows*vocab)
	backward := func() { b.EntropyBackward(wrap(dl), tf(c), tf(logits), wrap(lse), wrap(ent), rows, vocab) }
	backward()
	x64 := f64s(logits)
	checkGrad(t, "EntropyBackward", dl, x64, func() float64 { return linear(c, refEntropy(x64, rows, vocab)) })
	for i := 3 * vocab; i < 4*vocab; i++ {
		if dl[i] != 0 {
			t.Fatalf("row 3 has dent 0 but dlogits[%d] = %v", i, dl[i])
		}
	}
	checkAccumulates(t, "EntropyBackward", backward, dl)
}
