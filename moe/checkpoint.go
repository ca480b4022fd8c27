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
// (not a checkpoint, corrupt, a tensor missing or of the wrong shape).
func LoadCheckpoint(path string, be engine.Backend) (*Model, *tokenizer.Tokenizer, RunState, error) {
	var st RunState
	ck, err := engine.Load(path)
	if err != nil {
		return nil, nil, st, err
	}
	fail := func(format string, a ...any) (*Model, *tokenizer.Tokenizer, RunState, error) {
		return nil, nil, st, fmt.Errorf("load checkpoint %s: %s", path, fmt.Sprintf(format, a...))
	}
	if ck.Kind != CheckpointKind {
		return fail("holds %q, not a model (%s)", ck.Kind, CheckpointKind)
	}
	var cc checkpointConfig
	if err := json.Unmarshal(ck.Config, &cc); err != nil {
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
	if err := json.Unmarshal(ck.State, &st); err != nil {
		return fail("bad training state: %v", err)
	}
	m := newEmpty(cc.Model, be)
	host := make([]float32, m.lay.total)
	for _, p := range m.lay.params {
		w, err := ck.F32(p.Name, p.Shape...)
		if err != nil {
			return fail("%v", err)
		}
		copy(host[p.Off:], w)
	}
	be.Upload(m.Params, host)
	if _, err := ck.Tensor("adamw.m"); err == nil {
		for name, dst := range map[string]*engine.Tensor{"adamw.m": m.M, "adamw.v": m.V} {
			w, err := ck.F32(name, m.lay.total)
			if err != nil {
				return fail("%v", err)
			}
			be.Upload(dst, w)
		}
		m.OptStep = st.OptStep
	}
	return m, cc.Tokenizer, st, nil
}
