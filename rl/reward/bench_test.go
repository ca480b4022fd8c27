package reward

import (
	"testing"

	"github.com/moerl/moerl/rl/task"
)

// BenchmarkScore scores canonical responses of every task's training
// difficulties, as a GRPO group would.
func BenchmarkScore(b *testing.B) {
	for _, name := range task.Names() {
		tk := mustTask(b, name)
		ps := task.GenerateSet(tk, 1, 64, nil)
		responses := make([]string, len(ps))
		for i, p := range ps {
			responses[i] = p.Response()
		}
		b.Run(name, func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				k := i % len(ps)
				if !Score(tk, ps[k], responses[k], Default).Correct {
					b.Fatal("canonical response scored wrong")
				}
			}
		})
	}
}
