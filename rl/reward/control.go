package reward

import (
	"fmt"
	"strings"
)

// Control replaces the verifier's verdict by another before a response is
// rewarded, for the spurious-reward experiments of Shao et al., "Spurious
// Rewards: Rethinking Training Signals in RLVR" (arXiv 2506.10947): does
// RL still improve a model when its reward carries no information, or
// only the format, or the opposite of the truth?
type Control string

// The controls.
const (
	// NoControl rewards the verifier's verdict.
	NoControl Control = "none"
	// Random rewards a fair coin per response (the paper's random reward,
	// Bernoulli(γ = 0.5)), whatever the response says.
	Random Control = "random"
	// FormatOnly rewards every well-formed response as correct (the
	// paper's format reward, which checks only that an answer is given in
	// the required form).
	FormatOnly Control = "format-only"
	// Inverted rewards a well-formed wrong answer as correct and a correct
	// one as wrong (the paper's incorrect reward).
	Inverted Control = "inverted"
)

var controls = []Control{NoControl, Random, FormatOnly, Inverted}

// ControlNames returns the names ParseControl accepts.
func ControlNames() []string {
	names := make([]string, len(controls))
	for i, c := range controls {
		names[i] = string(c)
	}
	return names
}

// ParseControl returns the control of the given name; the empty name is
// NoControl.
func ParseControl(name string) (Control, error) {
	if name == "" {
		return NoControl, nil
	}
	for _, c := range controls {
		if string(c) == name {
			return c, nil
		}
	}
	return "", fmt.Errorf("unknown reward control %q (allowed: %s)", name, strings.Join(ControlNames(), ", "))
}

// Apply returns the reward under scheme s of a response scored r, and the
// verdict the control gives it (rewarded as correct or not), which is what
// shaping and filtering that read correctness should see. heads is the
// response's coin (Coin), read only by Random. A rewarded response earns
// s.Correct; one that is not earns s.Wrong if it is well formed and
// s.Malformed otherwise, except under Random, which ignores the response
// and gives s.Malformed on tails so that its reward takes two values, as
// the paper's 0/1 does under the default scheme.
func (c Control) Apply(r Result, s Scheme, heads bool) (reward float64, rewarded bool) {
	switch c {
	case Random:
		if heads {
			return s.Correct, true
		}
		return s.Malformed, false
	case FormatOnly:
		rewarded = r.WellFormed || r.Correct
	case Inverted:
		if r.Correct {
			return s.Wrong, false
		}
		rewarded = r.WellFormed
	default:
		return r.Reward, r.Correct
	}
	switch {
	case rewarded:
		return s.Correct, true
	case r.WellFormed:
		return s.Wrong, false
	}
	return s.Malformed, false
}

// Coin is the fair coin of response i of sampling round round (0-based
// within the step) of RL step step (0-based) of a run seeded with seed. It
// is a hash of the four, not a draw from a stream, so a run resumed from a
// checkpoint tosses the same coins without saving any state, and the
// coins do not depend on how many responses earlier steps sampled.
func Coin(seed uint64, step, round, i int) bool {
	h := seed
	for _, x := range []int{step, round, i} {
		h = mix64(h ^ mix64(uint64(x)+0x9e3779b97f4a7c15))
	}
	return h>>63 == 1
}

// mix64 is SplitMix64's finalizer (Steele, Lea and Flood 2014), a
// bijection of 64-bit words whose output bits each depend on every input
// bit.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
