package task

import (
	"math/rand/v2"
	"testing"
)

func BenchmarkGenerate(b *testing.B) {
	for _, name := range Names() {
		tk, _ := Get(name)
		_, heldOut := tk.Difficulties()
		d := heldOut[len(heldOut)-1]
		b.Run(name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			for b.Loop() {
				tk.Generate(rng, d)
			}
		})
	}
}
