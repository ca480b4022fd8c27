package moe

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/moerl/moerl/engine/cpu"
)

// TestStepRefusesNonFiniteGradient puts a NaN or an infinity into one
// parameter's gradient: Step must name that parameter and its layer and
// leave the weights, the moments and the step count untouched.
func TestStepRefusesNonFiniteGradient(t *testing.T) {
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(-1))} {
		m, err := New(tinyConfig(false), cpu.New(), 1)
		if err != nil {
			t.Fatal(err)
		}
		grads := make([]float32, m.NumParams())
		for i := range grads {
			grads[i] = 0.01
		}
		var target *Param
		for _, p := range m.ParamList() {
			if p.Name == "layer1.w2" {
				target = p
			}
		}
		grads[target.Off+5] = bad
		m.be.Upload(m.Grads, grads)
		before := m.HostParams()
		_, err = m.Step(1e-3, DefaultOpt)
		var nf *NonFiniteError
		if !errors.As(err, &nf) {
			t.Fatalf("Step with a %v gradient: err = %v, want a *NonFiniteError", bad, err)
		}
		if nf.What != "gradient" || nf.Tensor != "layer1.w2" || nf.Layer != 1 || nf.Index != 5 {
			t.Errorf("error %+v: want the gradient of layer1.w2 (layer 1), element 5", nf)
		}
		if !strings.Contains(err.Error(), "layer1.w2") {
			t.Errorf("message %q does not name the tensor", err)
		}
		if !slices.Equal(before, m.HostParams()) || m.OptStep != 0 {
			t.Errorf("a refused step changed the weights or the step count (%d)", m.OptStep)
		}
	}
}

// TestCheckWeights names a non-finite weight and passes finite ones.
func TestCheckWeights(t *testing.T) {
	m, err := New(tinyConfig(false), cpu.New(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.CheckWeights(); err != nil {
		t.Fatalf("fresh weights: %v", err)
	}
	w := m.HostParams()
	w[m.ParamList()[0].Off+2] = float32(math.Inf(1))
	m.be.Upload(m.Params, w)
	err = m.CheckWeights()
	var nf *NonFiniteError
	if !errors.As(err, &nf) || nf.Tensor != "embed" || nf.Layer != -1 || nf.What != "weight" {
		t.Fatalf("CheckWeights = %v, want the weight embed", err)
	}
	if err := m.LossError(math.NaN()); !errors.As(err, &nf) || nf.Tensor != "embed" {
		t.Fatalf("LossError = %v, want it to name embed", err)
	}
}
