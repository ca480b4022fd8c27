package eval

import (
	"encoding/json"
	"math"
	"testing"
)

// FuzzTallyMajAtK reads a stored tally: an inconsistent one gives NaN, a
// consistent one a maj@k in [0, 1] that agrees with brute force.
func FuzzTallyMajAtK(f *testing.F) {
	f.Add([]byte(`{"id":"p","n":6,"correct":3,"votes":[{"answer":"a","count":3,"correct":true},{"answer":"b","count":2,"correct":false}]}`))
	f.Add([]byte(`{"n":4,"votes":[{"answer":"a","count":5,"correct":true}]}`))
	f.Add([]byte(`{"n":3,"votes":[{"answer":"a","count":1,"correct":true},{"answer":"b","count":1},{"answer":"c","count":1,"correct":true}]}`))
	f.Add([]byte(`{"n":0}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var tl Tally
		if json.Unmarshal(data, &tl) != nil || tl.N > 12 || len(tl.Votes) > 12 {
			return
		}
		if tl.Check() != nil {
			if tl.N >= 1 && !math.IsNaN(tl.MajAtK(1)) {
				t.Fatalf("inconsistent tally %+v: maj@1 = %v, want NaN", tl, tl.MajAtK(1))
			}
			return
		}
		var label []int
		correct := make([]bool, len(tl.Votes))
		for c, v := range tl.Votes {
			correct[c] = v.Correct
			for range v.Count {
				label = append(label, c)
			}
		}
		for len(label) < tl.N {
			label = append(label, -1)
		}
		for k := 1; k <= tl.N; k++ {
			got, want := tl.MajAtK(k), bruteMaj(label, correct, k)
			if !(got >= 0 && got <= 1) || math.Abs(got-want) > 1e-12 {
				t.Fatalf("%+v k=%d: maj = %v, brute force %v", tl, k, got, want)
			}
		}
	})
}
