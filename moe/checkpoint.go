package moe

import (
	"encoding/json"
	"fmt"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe/tokenizer"
)

// CheckpointKind marks a moerl model checkpoint.
const CheckpointKind = "moerl-model"

// RunState is the training state a checkpoint carries besides the weights:
// enough to continue a run so that it ends bitwise-identical to one never
// stopped.
type RunState struct {
	Stage   string            `json:"stage"`    // "pretrain", "sft", "rl", ...
	Step    int               `json:"step"`     // steps done
	OptStep int               `json:"opt_step"` // AdamW steps (bias correction)
	RNG     map[string][]byte `json:"rng,omitempty"`
	Config  json.RawMessage   `json:"config,omitempty"` // the run's settings
	Extra   json.RawMessage   `json:"extra,omitempty"`  // stage-specific state
}

// checkpointConfig is the checkpoint's Config document.
type checkpointConfig struct {
	Model     Config               `json:"model"`
	Tokenizer *tokenizer.Tokenizer `json:"tokenizer"`
}

// SaveCheckpoint writes the model, its tokenizer and the run state to path
// atomically (the previous file survives any failure). With optimizer, the
// AdamW moments are saved too, so the run can resume.
func (m *Model) SaveCheckpoint(path string, tok *tokenizer.Tokenizer, st RunState, optimizer bool) error {
	cfg, err := json.Marshal(checkpointConfig{Model: m.Cfg, Tokenizer: tok})
	if err != nil {
		return fmt.Errorf("save checkpoint %s: %w", path, err)
	}
	st.OptStep = m.OptStep
	state, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("save checkpoint %s: %w", path, err)
	}
	ck := &engine.Checkpoint{Kind: CheckpointKind, Config: cfg, State: state}
	params := m.HostParams()
	for _, p := range m.lay.params {
		ck.Add(p.Name, p.Shape, params[p.Off:p.Off+p.Len()])
	}
	if optimizer {
		m.mustTrain("SaveCheckpoint with the optimizer")
		mm, vv := make([]float32, m.lay.total), make([]float32, m.lay.total)
		m.be.Download(mm, m.M)
		m.be.Download(vv, m.V)
		ck.Add("adamw.m", []int{m.lay.total}, mm)
		ck.Add("adamw.v", []int{m.lay.total}, vv)
	}
	return engine.Save(path, ck)
}

// LoadCheckpoint reads a checkpoint onto a backend. The optimizer moments
// are restored when the file has them. Errors name the file and the problem
// (not a checkpoint, corrupt, of another kind, a config that makes no model
// or too large a one, a tensor missing, extra or of the wrong shape).
//
// Nothing is decompressed before the header has been found to describe
// exactly the model its config makes: the kind, the config (validated, and
// so bounded by MaxParams), the tokenizer and the run state are checked
// first, then the index against the parameters that config lays out (and
// the optional AdamW moments). A file cannot make the loader allocate more
// than the model it declares, which MaxParams bounds, and the file's own
// bytes for the check.
func LoadCheckpoint(path string, be engine.Backend) (*Model, *tokenizer.Tokenizer, RunState, error) {
	return loadCheckpoint(path, be, true)
}

// LoadFrozen is LoadCheckpoint for a model that will only Forward and
// Generate (an RL reference, a reward model that scores, an evaluated
// model): it allocates no gradients or moments, three times the
// parameters' memory, and leaves the file's moments unused.
func LoadFrozen(path string, be engine.Backend) (*Model, *tokenizer.Tokenizer, RunState, error) {
	return loadCheckpoint(path, be, false)
}

func loadCheckpoint(path string, be engine.Backend, trainable bool) (*Model, *tokenizer.Tokenizer, RunState, error) {
	f, err := engine.Open(path)
	if err != nil {
		return nil, nil, RunState{}, err
	}
	defer f.Close()
	cc, st, lay, err := checkHeader(f.Header())
	if err != nil {
		return nil, nil, RunState{}, fmt.Errorf("load checkpoint %s: %w", path, err)
	}
	ck, err := f.Read()
	if err != nil {
		return nil, nil, RunState{}, err
	}
	m := newEmpty(cc.Model, be, trainable)
	host := make([]float32, lay.total)
	for _, p := range lay.params {
		w, err := ck.F32(p.Name, p.Shape...)
		if err != nil { // the index was matched: not expected
			return nil, nil, RunState{}, fmt.Errorf("load checkpoint %s: %w", path, err)
		}
		copy(host[p.Off:], w)
	}
	be.Upload(m.Params, host)
	if _, err := ck.Tensor("adamw.m"); err == nil && trainable {
		for name, dst := range map[string]*engine.Tensor{"adamw.m": m.M, "adamw.v": m.V} {
			w, err := ck.F32(name, lay.total)
			if err != nil {
				return nil, nil, RunState{}, fmt.Errorf("load checkpoint %s: %w", path, err)
			}
			be.Upload(dst, w)
		}
		m.OptStep = st.OptStep
	}
	return m, cc.Tokenizer, st, nil
}

// checkHeader checks everything a model checkpoint declares before its
// tensors are read, and returns the config, the run state and the layout
// of the parameters that the index matches.
func checkHeader(h *engine.Header) (checkpointConfig, RunState, *layout, error) {
	var (
		cc checkpointConfig
		st RunState
	)
	fail := func(format string, a ...any) (checkpointConfig, RunState, *layout, error) {
		return cc, st, nil, fmt.Errorf(format, a...)
	}
	if h.Kind != CheckpointKind {
		return fail("holds %q, not a model (%s)", h.Kind, CheckpointKind)
	}
	if err := json.Unmarshal(h.Config, &cc); err != nil {
		return fail("bad config: %v", err)
	}
	if err := cc.Model.Validate(); err != nil {
		return fail("%v", err)
	}
	if cc.Tokenizer == nil {
		return fail("no tokenizer")
	}
	if cc.Tokenizer.VocabSize() > cc.Model.Vocab {
		return fail("tokenizer has %d tokens, model vocab is %d", cc.Tokenizer.VocabSize(), cc.Model.Vocab)
	}
	if err := json.Unmarshal(h.State, &st); err != nil {
		return fail("bad training state: %v", err)
	}
	lay := newLayout(cc.Model)
	want := make([]engine.TensorSpec, 0, len(lay.params)+2)
	for _, p := range lay.params {
		want = append(want, engine.TensorSpec{Name: p.Name, DType: engine.F32, Shape: p.Shape})
	}
	for _, name := range []string{"adamw.m", "adamw.v"} {
		want = append(want, engine.TensorSpec{Name: name, DType: engine.F32, Shape: []int{lay.total}, Optional: true})
	}
	if err := h.Match(want); err != nil {
		return fail("its tensors are not those of its model config: %w", err)
	}
	_, hasM := h.Tensor("adamw.m")
	_, hasV := h.Tensor("adamw.v")
	if hasM != hasV {
		return fail("its tensors are not those of its model config: it has only one of the AdamW moments adamw.m and adamw.v")
	}
	// Match has fixed the payload's decompressed size to what the config
	// needs; this bounds what a small file may claim to hold.
	if lay.total > sparseParams && h.PayloadBytes < 4*int64(lay.total)/maxWeightRatio {
		return fail("its payload of %d bytes is too small for the %d parameters its config declares: weights do not compress below 1/%d of their %d bytes", h.PayloadBytes, lay.total, maxWeightRatio, 4*int64(lay.total))
	}
	return cc, st, lay, nil
}

// A file small enough to be crafted can still declare, honestly, a large
// model of zeros, which compress without limit: 2^30 parameters with their
// moments are 12 GiB, and 400 KB of zstd. Weights do not compress so: zstd
// leaves float32 weights, freshly initialised or trained, at 80-95% of
// their size (TestWeightsBarelyCompress). So above sparseParams the payload
// must hold at least 1/maxWeightRatio of the weights' bytes, and a file can
// make the loader allocate at most about 128 times its own size (32 bytes a
// parameter: the tensors read, a host copy, weights, gradients and moments
// on the backend).
const (
	sparseParams   = 1 << 22 // 16 MiB of weights
	maxWeightRatio = 16
)

// ReadCheckpointInfo reads a model checkpoint's model configuration and
// run state from its header, checked as LoadCheckpoint checks them,
// without decompressing a tensor.
func ReadCheckpointInfo(path string) (Config, RunState, error) {
	f, err := engine.Open(path)
	if err != nil {
		return Config{}, RunState{}, err
	}
	defer f.Close()
	cc, st, _, err := checkHeader(f.Header())
	if err != nil {
		return Config{}, RunState{}, fmt.Errorf("load checkpoint %s: %w", path, err)
	}
	return cc.Model, st, nil
}
