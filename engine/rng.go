package engine

import (
	"fmt"
	"math/rand/v2"
)

// RNG is a seeded random stream whose state can be saved in a checkpoint and
// restored exactly. Each purpose (init, data, sampling) gets its own stream,
// so drawing more numbers for one never shifts another.
type RNG struct {
	pcg *rand.PCG
	*rand.Rand
}

// Stream identifiers, mixed into the seed so that streams differ.
const (
	StreamInit uint64 = iota + 1
	StreamData
	StreamSample
	StreamEval
)

// NewRNG returns the stream of the given purpose for a run seed.
func NewRNG(seed, stream uint64) *RNG {
	pcg := rand.NewPCG(seed, stream*0x9e3779b97f4a7c15+0x632be59bd9b4e019)
	return &RNG{pcg: pcg, Rand: rand.New(pcg)}
}

// State returns the stream's state for a checkpoint.
func (r *RNG) State() []byte {
	b, err := r.pcg.MarshalBinary()
	if err != nil { // PCG.MarshalBinary cannot fail
		panic(err)
	}
	return b
}

// SetState restores a state returned by State.
func (r *RNG) SetState(b []byte) error {
	if err := r.pcg.UnmarshalBinary(b); err != nil {
		return fmt.Errorf("restore rng state: %w", err)
	}
	return nil
}

// Normal32 draws a float32 from N(0, std²).
func (r *RNG) Normal32(std float32) float32 { return float32(r.NormFloat64()) * std }
