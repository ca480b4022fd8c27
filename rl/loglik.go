package rl

import (
	"fmt"
	"math"

	"github.com/moerl/moerl/moe"
)

// LogLikelihood returns, for each prompt and response (token ids; the
// prompt with its <bos>), the mean log-probability per response token under
// m at temperature 1: the measure of 2504.13837's sharpening analysis, where
// responses of an RL model scored by the base model are compared with the
// base model's own. A response that does not fit the context is cut at it;
// an empty one scores NaN.
func LogLikelihood(m *moe.Model, prompts, responses [][]int32) ([]float64, error) {
	if len(prompts) != len(responses) {
		return nil, fmt.Errorf("log-likelihood: %d prompts, %d responses", len(prompts), len(responses))
	}
	const chunk = 256
	out := make([]float64, len(prompts))
	var acts *moe.Acts
	defer func() {
		if acts != nil {
			acts.Free(m.Backend())
		}
	}()
	for lo := 0; lo < len(prompts); lo += chunk {
		hi := min(lo+chunk, len(prompts))
		T := 0
		for i := lo; i < hi; i++ {
			T = max(T, len(prompts[i])+len(responses[i]))
		}
		T = min((T+7)/8*8, m.Cfg.MaxSeq)
		if acts == nil || acts.B != hi-lo || acts.T != T {
			if acts != nil {
				acts.Free(m.Backend())
			}
			acts = m.NewActs(hi-lo, T)
		}
		ids, tgt := make([]int32, (hi-lo)*T), make([]int32, (hi-lo)*T)
		for i := lo; i < hi; i++ {
			row := ids[(i-lo)*T : (i-lo+1)*T]
			trow := tgt[(i-lo)*T : (i-lo+1)*T]
			full := append(append([]int32(nil), prompts[i]...), responses[i]...)
			for j := 0; j+1 < len(full) && j+1 < T; j++ {
				row[j], trow[j] = full[j], full[j+1]
			}
		}
		logp := m.Forward(acts, ids, tgt, moe.ForwardOptions{})
		for i := lo; i < hi; i++ {
			p := len(prompts[i])
			var sum float64
			n := 0
			// Response token j is predicted at position p − 1 + j.
			for j := range responses[i] {
				at := p - 1 + j
				if at+1 >= T {
					break
				}
				sum += float64(logp[(i-lo)*T+at])
				n++
			}
			if n == 0 {
				out[i] = math.NaN()
				continue
			}
			out[i] = sum / float64(n)
		}
	}
	return out, nil
}
