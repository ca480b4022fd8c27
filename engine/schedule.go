package engine

import "math"

// Schedule is linear warm-up to Peak over Warmup steps, then cosine decay to
// Min at step Total (constant at Min after).
type Schedule struct {
	Peak, Min     float64
	Warmup, Total int
}

// LR is the learning rate at a 0-based step.
func (s Schedule) LR(step int) float64 {
	if s.Warmup > 0 && step < s.Warmup {
		return s.Peak * float64(step+1) / float64(s.Warmup)
	}
	if step >= s.Total || s.Total <= s.Warmup {
		return s.Min
	}
	p := float64(step-s.Warmup) / float64(s.Total-s.Warmup)
	return s.Min + 0.5*(s.Peak-s.Min)*(1+math.Cos(math.Pi*p))
}

// ClipScale is the factor that brings a gradient of global norm `norm` down
// to maxNorm (1 when it is already within, or when maxNorm ≤ 0).
func ClipScale(norm, maxNorm float64) float64 {
	if maxNorm <= 0 || norm <= maxNorm || math.IsNaN(norm) {
		return 1
	}
	return maxNorm / (norm + 1e-6)
}
