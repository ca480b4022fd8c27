package moe

import "github.com/moerl/moerl/engine"

// graphs are the recorded steps of one workspace: on a backend that
// records graphs (engine.Capturer, the CUDA backend), a step whose device
// work repeats — a decode step, a training forward or backward — costs the
// host one launch instead of one per op. A graph holds the addresses of
// the workspace's tensors and the settings baked into its ops, so it lives
// and dies with its workspace and is looked up by a key that names those
// settings.
type graphs struct {
	rec   map[any]engine.Graph
	tried map[any]bool // the key ran once directly (true), or its capture failed (false)
}

// run queues step's ops: directly, or as key's graph — run directly the
// first time (which sizes the ops' scratch memory), recorded the second,
// replayed from then on. A key whose capture fails runs directly from then
// on; a backend with an error pending records nothing and keeps the error
// for its next Sync.
func (gs *graphs) run(be engine.Backend, key any, step func()) {
	c, ok := be.(engine.Capturer)
	if !ok {
		step()
		return
	}
	g := gs.rec[key]
	if g == nil {
		if gs.tried == nil {
			gs.rec, gs.tried = map[any]engine.Graph{}, map[any]bool{}
		}
		again, seen := gs.tried[key]
		if !seen {
			gs.tried[key] = true
		}
		if !seen || !again {
			step()
			return
		}
		var err error
		if g, err = c.CaptureGraph(step); err != nil {
			gs.tried[key] = false
			step()
			return
		}
		gs.rec[key] = g
	}
	if err := g.Launch(); err != nil { // a closed backend: let the ops report it
		g.Close()
		delete(gs.rec, key)
		step()
	}
}

// close frees every graph.
func (gs *graphs) close() {
	for _, g := range gs.rec {
		g.Close()
	}
	gs.rec, gs.tried = nil, nil
}
