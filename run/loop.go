package run

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
)

// Observer is told what the stages do, for a progress display. cmd/moerl
// draws it; tests use Quiet.
type Observer interface {
	// Stage announces a stage: its name and a line on what it does.
	Stage(name, what string)
	// Progress reports done of total steps of a stage, with a short status.
	Progress(label string, done, total int, status string)
	// EndProgress ends a stage's progress line.
	EndProgress(label string)
	// Printf writes a line of information.
	Printf(format string, a ...any)
}

// Quiet is an Observer that shows nothing.
type Quiet struct{}

func (Quiet) Stage(string, string)              {}
func (Quiet) Progress(string, int, int, string) {}
func (Quiet) EndProgress(string)                {}
func (Quiet) Printf(string, ...any)             {}

// Env is what every stage computes with.
type Env struct {
	Backend engine.Backend
	Tok     *tokenizer.Tokenizer
	Log     Observer
	// Stop, once closed, asks the running stage to checkpoint at the next
	// step boundary and return an *Interrupted. Nil never stops.
	Stop <-chan struct{}
	// SkipNonFinite skips a batch whose loss or gradient is not finite
	// (counting it) instead of stopping the run.
	SkipNonFinite bool
	// SaveEvery is the checkpoint cadence in steps (0: at the end and when
	// stopped only). A crash loses at most the steps since the last one.
	SaveEvery int
	// Resume is how a stage reports the command that continues it, e.g.
	// "moerl pretrain --out runs/p --resume".
	Resume string
}

// NewEnv is an Env on a backend with the default tokenizer and no display.
func NewEnv(be engine.Backend) *Env {
	return &Env{Backend: be, Tok: tokenizer.Default(), Log: Quiet{}, SaveEvery: 100}
}

func (e *Env) stopped() bool {
	if e.Stop == nil {
		return false
	}
	select {
	case <-e.Stop:
		return true
	default:
		return false
	}
}

// Interrupted is the error of a stage stopped by a signal after it saved
// its checkpoint.
type Interrupted struct {
	Dir         string
	Step, Steps int
	Resume      string // the command that continues the run, if known
}

func (e *Interrupted) Error() string {
	msg := fmt.Sprintf("interrupted at step %d of %d; checkpoint saved in %s", e.Step, e.Steps, e.Dir)
	if e.Resume != "" {
		msg += "; continue with: " + e.Resume
	}
	return msg
}

// StopOnSignal returns a channel closed at the first SIGINT or SIGTERM; a
// second one ends the process at once (exit code 130), for a user who will
// not wait for the step to finish. release restores the default handling.
func StopOnSignal() (stop <-chan struct{}, release func()) {
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	quit := make(chan struct{})
	var once sync.Once
	go func() {
		select {
		case <-ch:
		case <-quit:
			return
		}
		close(done)
		select {
		case <-ch:
			os.Exit(130)
		case <-quit:
		}
	}()
	return done, func() {
		once.Do(func() {
			signal.Stop(ch)
			close(quit)
		})
	}
}

// Stepper is a stage that trains in steps: Loop drives it.
type Stepper interface {
	// Done is the number of steps taken, Total the number to take.
	Done() int
	Total() int
	// Step takes step Done()+1. Its result's Stats is the metrics line.
	Step() (StepResult, error)
	// Save checkpoints everything needed to continue from Done().
	Save() error
	// Models are the models the stage trains, whose weights Loop checks
	// after every step.
	Models() []*moe.Model
}

// StepResult is what one step reports.
type StepResult struct {
	Stats  any    // written to metrics.jsonl (must have a "step" field)
	Status string // a short line for the progress display
	// Skipped says the step's batch was not trained on, because its loss
	// or gradient was not finite and Env.SkipNonFinite asked to go on.
	Skipped bool
}

// maxSkippedInARow stops a run that skips batch after batch: weights or
// data that make every loss non-finite will not heal by themselves.
const maxSkippedInARow = 10

// Loop runs s to its last step in folder f: metrics, checkpoints at the
// cadence, a backend sync and a weight check at every step boundary, and a
// checkpoint before returning *Interrupted when env.Stop is closed. A
// failed step leaves the last checkpoint as it was.
func Loop(env *Env, f *Folder, label string, s Stepper) error {
	mw, err := f.Metrics(s.Done())
	if err != nil {
		return err
	}
	defer mw.Close()
	fail := func(err error) error {
		f.Stopped(StatusFailed, err)
		return err
	}
	skipped, inARow := f.Rec.Skipped, 0
	saved := s.Done()
	save := func() error {
		if err := s.Save(); err != nil {
			return fail(err)
		}
		saved = s.Done()
		return f.Progress(s.Done(), s.Total(), skipped)
	}
	for s.Done() < s.Total() {
		if env.stopped() {
			if err := save(); err != nil {
				return err
			}
			env.Log.EndProgress(label)
			f.Stopped(StatusInterrupted, nil)
			return &Interrupted{Dir: f.Dir, Step: s.Done(), Steps: s.Total(), Resume: env.Resume}
		}
		step := s.Done() + 1
		res, err := s.Step()
		// The device's error, if any, is the cause of whatever a step
		// then noticed on the host: it comes first.
		if serr := env.Backend.Sync(); serr != nil {
			err = serr
		}
		for _, m := range s.Models() {
			if err != nil {
				break
			}
			err = m.CheckWeights()
		}
		if err != nil {
			env.Log.EndProgress(label)
			return fail(fmt.Errorf("%s step %d: %w (%s)", label, step, err, kept(saved, f)))
		}
		if err := mw.Write(res.Stats); err != nil {
			return fail(err)
		}
		if res.Skipped {
			skipped++
			inARow++
			if inARow >= maxSkippedInARow {
				env.Log.EndProgress(label)
				return fail(fmt.Errorf("%s step %d: %d batches in a row had a non-finite loss or gradient; stopping (%s)",
					label, step, inARow, kept(saved, f)))
			}
		} else {
			inARow = 0
		}
		status := res.Status
		if skipped > 0 {
			status += fmt.Sprintf(" skipped %d", skipped)
		}
		env.Log.Progress(label, s.Done(), s.Total(), status)
		if env.SaveEvery > 0 && s.Done()%env.SaveEvery == 0 && s.Done() < s.Total() {
			if err := save(); err != nil {
				return err
			}
		}
	}
	env.Log.EndProgress(label)
	return save()
}

// kept says which checkpoint a failed run leaves.
func kept(saved int, f *Folder) string {
	if saved == 0 {
		return "no checkpoint was written; the folder holds this run's metrics and run.json"
	}
	return fmt.Sprintf("the last checkpoint, step %d, is kept in %s", saved, f.Dir)
}

// IsNonFinite reports whether err is (or wraps) a non-finite loss,
// gradient or weight.
func IsNonFinite(err error) bool {
	var nf *moe.NonFiniteError
	return errors.As(err, &nf)
}
