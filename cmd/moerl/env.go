package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/moerl/moerl/run"
)

// observer draws the run layer's progress on stderr: a status line per
// stage that is redrawn in place on a terminal.
type observer struct {
	w    io.Writer
	bars map[string]*progress
}

func (o *observer) Stage(name, what string) { fmt.Fprintf(o.w, "== %s: %s\n", name, what) }

func (o *observer) Progress(label string, done, total int, status string) {
	b, ok := o.bars[label]
	if !ok {
		b = newProgress(o.w, label, total)
		o.bars[label] = b
	}
	b.total = total
	b.update(done, status)
}

func (o *observer) EndProgress(label string) {
	if b, ok := o.bars[label]; ok {
		b.finish()
		delete(o.bars, label)
	}
}

func (o *observer) Printf(format string, a ...any) { fmt.Fprintf(o.w, format+"\n", a...) }

// runFlags are the flags every training command shares.
type runFlags struct {
	device        *string
	resume        *bool
	saveEvery     *int
	skipNonFinite *bool
}

func addRunFlags(fs *flag.FlagSet, saveEvery int) *runFlags {
	return &runFlags{
		device: fs.String("device", "auto", "compute device: auto (CUDA if a GPU and its driver are found, else the CPU), cpu or cuda"),
		resume: fs.Bool("resume", false, "continue the run in --out from its last checkpoint (its settings must be the same), or reuse it if finished"),
		saveEvery: fs.Int("save-every", saveEvery, "checkpoint every N steps, in steps (0: only at the end and when interrupted); "+
			"a crash loses at most the steps since the last checkpoint"),
		skipNonFinite: fs.Bool("skip-nonfinite", false, "skip (and count) a batch whose loss or gradient is NaN or infinite, instead of stopping the run"),
	}
}

// mode is the run folder mode the flags ask for.
func (r *runFlags) mode() run.Mode {
	if *r.resume {
		return run.Resume
	}
	return run.Fresh
}

// newEnv opens the backend and makes the run layer's environment: progress
// on stderr, a stop at the next step boundary on SIGINT or SIGTERM (the
// caller must call release), and the command that resumes the run.
func newEnv(rf *runFlags, stderr io.Writer, command string, args []string) (env *run.Env, release func(), err error) {
	if *rf.saveEvery < 0 {
		return nil, nil, usagef("--save-every must be ≥ 0, got %d", *rf.saveEvery)
	}
	be, err := openBackend(*rf.device, stderr)
	if err != nil {
		return nil, nil, err
	}
	env = run.NewEnv(be)
	env.Log = &observer{w: stderr, bars: map[string]*progress{}}
	env.SaveEvery = *rf.saveEvery
	env.SkipNonFinite = *rf.skipNonFinite
	env.Resume = resumeCommand(command, args)
	var stop <-chan struct{}
	stop, release = run.StopOnSignal()
	env.Stop = stop
	return env, release, nil
}

// resumeCommand is the command line that continues an interrupted run.
func resumeCommand(command string, args []string) string {
	parts := []string{"moerl", command}
	has := false
	for _, a := range args {
		if a == "--resume" || a == "-resume" || strings.HasPrefix(a, "--resume=") || strings.HasPrefix(a, "-resume=") {
			has = true
		}
		if strings.ContainsAny(a, " \t'\"$\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	if !has {
		parts = append(parts, "--resume")
	}
	return strings.Join(parts, " ")
}
