package moe

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/moerl/moerl/engine"
)

// Model is a set of parameters on a backend, their gradients and AdamW
// moments, all as flat buffers so that the optimizer, gradient clipping and
// checkpoints each touch one tensor.
type Model struct {
	Cfg Config
	be  engine.Backend
	lay *layout

	Params, Grads *engine.Tensor // flat, lay.total elements
	M, V          *engine.Tensor // AdamW moments
	OptStep       int            // AdamW steps taken

	pv, gv map[*Param]*engine.Tensor // views into Params and Grads

	// AuxLoss is the load-balancing loss of the last Forward, summed over
	// layers, before its coefficient.
	AuxLoss float64
	// ZLoss is the router z-loss of the last Forward, summed over layers,
	// before its coefficient; computed only when Cfg.RouterZLossCoef > 0.
	ZLoss float64

	gen *generator // Generate's workspace, kept between calls
	// w16 is a bf16 copy of Params, on a backend whose GEMMs round their
	// inputs to bf16 (engine.GEMMInput): the experts' grouped products read
	// it instead of the float32 weights, half the bytes for the same
	// products. Made by the first workspace that wants it (weights16),
	// shared by every workspace, and cast from Params wherever they may
	// have changed since: at the start of each Forward and each Generate
	// call (Params never change during one). nil elsewhere.
	w16 *engine.Tensor
}

// weights16 returns the model's bf16 copy of its weights (Model.w16),
// allocating it, where the experts' products round to bf16; else nil.
// The copy's contents are those of the last cast.
func (m *Model) weights16() *engine.Tensor {
	if m.gemmInput() != engine.BF16 {
		return nil
	}
	if m.w16 == nil {
		m.w16 = m.be.New(engine.BF16, m.lay.total)
	}
	return m.w16
}

// New builds a model with seeded initial weights on a backend.
func New(cfg Config, be engine.Backend, seed uint64) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := newEmpty(cfg, be, true)
	host := make([]float32, m.lay.total)
	m.lay.init(host, engine.NewRNG(seed, engine.StreamInit))
	be.Upload(m.Params, host)
	return m, nil
}

// newEmpty allocates a model's buffers, uninitialised: the parameters, and
// for a trainable model the gradients and AdamW moments.
func newEmpty(cfg Config, be engine.Backend, trainable bool) *Model {
	lay := newLayout(cfg)
	m := &Model{Cfg: cfg, be: be, lay: lay, Params: be.NewF32(lay.total),
		pv: map[*Param]*engine.Tensor{}, gv: map[*Param]*engine.Tensor{}}
	if trainable {
		m.Grads, m.M, m.V = be.NewF32(lay.total), be.NewF32(lay.total), be.NewF32(lay.total)
	}
	for _, p := range lay.params {
		m.pv[p] = m.Params.View(p.Off, p.Shape...)
		if trainable {
			m.gv[p] = m.Grads.View(p.Off, p.Shape...)
		}
	}
	return m
}

// Frozen reports whether the model has no gradients or moments (NewFrozen,
// LoadFrozen, Freeze): it can Forward and Generate, not train.
func (m *Model) Frozen() bool { return m.Grads == nil }

// Freeze frees the gradients and AdamW moments, three times the
// parameters' memory, of a model that will only Forward and Generate
// (a reference, a sampler, a scorer).
func (m *Model) Freeze() {
	for _, t := range []*engine.Tensor{m.Grads, m.M, m.V} {
		if t != nil {
			m.be.Free(t)
		}
	}
	m.Grads, m.M, m.V = nil, nil, nil
	clear(m.gv)
}

// mustTrain panics, naming op, on a frozen model: training one is a bug in
// the caller, not a user's mistake.
func (m *Model) mustTrain(op string) {
	if m.Frozen() {
		panic("moe: " + op + " on a frozen model (no gradients or optimizer moments: see Model.Freeze)")
	}
}

// Backend is the backend the model computes on.
func (m *Model) Backend() engine.Backend { return m.be }

// NumParams is the total number of parameters.
func (m *Model) NumParams() int { return m.lay.total }

// ParamList lists the parameters in buffer order.
func (m *Model) ParamList() []*Param { return m.lay.params }

// ZeroGrad clears the gradients before a backward pass.
func (m *Model) ZeroGrad() {
	m.mustTrain("ZeroGrad")
	m.be.Zero(m.Grads)
}

// OptConfig is AdamW with global-norm clipping.
type OptConfig struct {
	Beta1, Beta2, Eps, WeightDecay float64
	ClipNorm                       float64 // 0: no clipping
}

// DefaultOpt is AdamW(0.9, 0.95, 1e-8), weight decay 0.1, clip 1.0.
var DefaultOpt = OptConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, ClipNorm: 1}

// Step clips the gradient to o.ClipNorm and takes one AdamW step at
// learning rate lr. It returns the gradient norm before clipping. A
// gradient holding NaN or ±Inf takes no step: the weights, the moments and
// the step count stay as they were, and the error (a *NonFiniteError)
// names the first parameter whose gradient is not finite, so a run can
// either stop there or skip the batch.
func (m *Model) Step(lr float64, o OptConfig) (float64, error) {
	m.mustTrain("Step")
	be, n := m.be, m.lay.total
	norm := sqrt(be.SumSquares(m.Grads, n))
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return norm, m.nonFinite("gradient", m.gv)
	}
	// One AdamW call covers the whole model: the matrices come first and
	// take weight decay, the norm gains after them do not, and the clip
	// scale is applied as the gradient is read.
	m.OptStep++
	be.AdamW(m.Params, m.Grads, m.M, m.V, n, m.lay.nDecay, float32(engine.ClipScale(norm, o.ClipNorm)),
		float32(lr), float32(o.Beta1), float32(o.Beta2), float32(o.Eps), float32(o.WeightDecay), m.OptStep)
	return norm, nil
}

// NonFiniteError reports a NaN or an infinity in one of a model's tensors.
type NonFiniteError struct {
	// What is "weight", "gradient" or "loss".
	What string
	// Tensor names the parameter ("layer1.w2", "embed", …); for a loss it
	// names the first weight that is not finite, or is empty when every
	// weight is finite.
	Tensor string
	// Layer is the transformer layer the tensor belongs to, or -1 for the
	// embedding, the head, the final norm and a loss.
	Layer int
	// Index is the first offending element within the tensor, Value its value.
	Index int
	Value float32
}

func (e *NonFiniteError) Error() string {
	if e.Tensor == "" {
		return fmt.Sprintf("%s is not finite (every weight is finite)", e.What)
	}
	where := e.Tensor
	if e.Layer >= 0 {
		where = fmt.Sprintf("%s (layer %d)", e.Tensor, e.Layer)
	}
	return fmt.Sprintf("%s of %s is not finite: element %d is %v", e.What, where, e.Index, e.Value)
}

// LossError is the error for a loss that is not finite: it names the first
// weight that is not finite, which is usually the cause, or says that every
// weight is finite (then the forward pass overflowed).
func (m *Model) LossError(loss float64) error {
	if err := m.CheckWeights(); err != nil {
		return fmt.Errorf("loss is %v: %w", loss, err)
	}
	return &NonFiniteError{What: fmt.Sprintf("loss (%v)", loss), Layer: -1}
}

// CheckWeights returns a *NonFiniteError naming the first parameter that
// holds NaN or ±Inf, or nil. It costs one reduction when every weight is
// finite.
func (m *Model) CheckWeights() error {
	if s := m.be.SumSquares(m.Params, m.lay.total); !math.IsNaN(s) && !math.IsInf(s, 0) {
		return nil
	}
	return m.nonFinite("weight", m.pv)
}

// nonFinite downloads each parameter's slice of a buffer in order and
// describes the first element that is not finite. A sum of squares can
// overflow to +Inf on finite but huge values; then the largest element is
// named instead.
func (m *Model) nonFinite(what string, views map[*Param]*engine.Tensor) error {
	var worst *NonFiniteError
	var worstAbs float32
	for _, p := range m.lay.params {
		host := make([]float32, p.Len())
		m.be.Download(host, views[p])
		for i, v := range host {
			f := float64(v)
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return &NonFiniteError{What: what, Tensor: p.Name, Layer: paramLayer(p.Name), Index: i, Value: v}
			}
			if a := float32(math.Abs(f)); a > worstAbs {
				worstAbs = a
				worst = &NonFiniteError{What: what + " (sum of squares overflows)", Tensor: p.Name, Layer: paramLayer(p.Name), Index: i, Value: v}
			}
		}
	}
	if worst != nil {
		return worst
	}
	return &NonFiniteError{What: what, Layer: -1}
}

// paramLayer reads the layer number from a parameter name "layer<i>.…".
func paramLayer(name string) int {
	rest, ok := strings.CutPrefix(name, "layer")
	if !ok {
		return -1
	}
	num, _, _ := strings.Cut(rest, ".")
	i, err := strconv.Atoi(num)
	if err != nil {
		return -1
	}
	return i
}

// ResetOptimizer clears the AdamW moments and step count (Kimi's mirror
// descent may start each iteration from a fresh optimizer).
func (m *Model) ResetOptimizer() {
	m.mustTrain("ResetOptimizer")
	m.be.Zero(m.M)
	m.be.Zero(m.V)
	m.OptStep = 0
}

// CopyWeightsFrom copies another model's parameters (same config) into m.
func (m *Model) CopyWeightsFrom(src *Model) error {
	if src.Cfg != m.Cfg {
		return fmt.Errorf("copy weights: configs differ")
	}
	m.be.Copy(m.Params, src.Params)
	return nil
}

// NewCritic makes a value model from a policy: the same trunk, with its
// weights copied, and a scalar value head initialised to zero (so the first
// values are 0 and the critic starts from the policy's features).
func NewCritic(policy *Model) (*Model, error) {
	cfg := policy.Cfg
	cfg.ValueHead = true
	c := newEmpty(cfg, policy.be, true)
	src := policy.HostParams()
	dst := make([]float32, c.lay.total)
	for i, p := range c.lay.params {
		if p == c.lay.head {
			continue
		}
		q := policy.lay.params[i]
		copy(dst[p.Off:p.Off+p.Len()], src[q.Off:q.Off+q.Len()])
	}
	c.be.Upload(c.Params, dst)
	return c, nil
}

// HostParams downloads the parameters.
func (m *Model) HostParams() []float32 {
	out := make([]float32, m.lay.total)
	m.be.Download(out, m.Params)
	return out
}

// HostGrads downloads the gradients.
func (m *Model) HostGrads() []float32 {
	m.mustTrain("HostGrads")
	out := make([]float32, m.lay.total)
	m.be.Download(out, m.Grads)
	return out
}

// NewFrozen makes a model of cfg on be with zeroed weights and no memory
// for gradients or optimizer moments: it can Forward and Generate (set its
// weights with CopyWeightsFrom or by uploading Params), not Backward or
// Step. An RL trainer samples from one when the rollout's weights differ
// from the policy's (a dialled-in mismatch).
func NewFrozen(cfg Config, be engine.Backend) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newEmpty(cfg, be, false), nil
}

// Free releases the model's backend memory (weights, their bf16 copy,
// gradients, moments and the sampler's workspace); the model must not be
// used after.
func (m *Model) Free() {
	m.FreeSampler()
	for _, t := range []*engine.Tensor{m.Params, m.w16, m.Grads, m.M, m.V} {
		if t != nil {
			m.be.Free(t)
		}
	}
	m.Params, m.w16, m.Grads, m.M, m.V = nil, nil, nil, nil, nil
}
