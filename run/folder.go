package run

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Mode says what Open does with a folder that already holds a run.
type Mode int

const (
	// Fresh refuses a folder that already holds a run: a finished
	// checkpoint or result is never overwritten by accident.
	Fresh Mode = iota
	// Resume continues the run in the folder if it has the same key
	// (settings and inputs), reports a finished one as done, and refuses one
	// with another key, naming what differs.
	Resume
	// Reuse is Resume for the stages of a pipeline or a study: a run with
	// another key is moved aside (never deleted) and the stage runs afresh.
	Reuse
)

// State is what Open found.
type State int

const (
	New     State = iota // nothing there: the stage starts from step 0
	Partial              // a run with the same key stopped before its end: continue it
	Done                 // a finished run with the same key: reuse its result
)

func (s State) String() string {
	return [...]string{"new", "partial", "done"}[s]
}

// Run statuses recorded in run.json.
const (
	StatusRunning     = "running"
	StatusInterrupted = "interrupted"
	StatusFailed      = "failed"
	StatusDone        = "done"
)

// Input is an input checkpoint of a stage: its path and the SHA-256 of its
// contents, so that a stage is reused only on the very same input.
type Input struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

// Record is run.json: what ran, with which settings and inputs, and how far
// it got.
type Record struct {
	Kind     string           `json:"kind"`
	Key      string           `json:"key"` // digest of kind, settings and inputs
	Settings json.RawMessage  `json:"settings"`
	Inputs   map[string]Input `json:"inputs,omitempty"` // by role: init, teacher, reward_model, …
	Device   string           `json:"device,omitempty"`
	Status   string           `json:"status"`
	Step     int              `json:"step"`  // steps done (stages that train in steps)
	Steps    int              `json:"steps"` // steps in all
	Skipped  int              `json:"skipped_steps,omitempty"`
	Seconds  float64          `json:"seconds"` // summed over every session of the run
	Error    string           `json:"error,omitempty"`
	// Summary is the stage's own account of its result (final loss,
	// samples kept, …).
	Summary json.RawMessage `json:"summary,omitempty"`
}

// Folder is a run folder opened for one stage.
type Folder struct {
	Dir   string
	Rec   Record
	State State
	// Replaced is where Open moved a run with other settings (Reuse mode),
	// or "".
	Replaced string
	opened   time.Time
	before   float64 // Rec.Seconds when opened
}

// RecordFile and MetricsFile are the names of a run folder's own files.
const (
	RecordFile  = "run.json"
	MetricsFile = "metrics.jsonl"
)

// Open opens dir for a stage of the given kind, settings (any value that
// marshals to JSON) and input checkpoints (role → path). It computes the
// stage's key, compares it with the run already in dir, and acts as mode
// says; then it records the stage as running.
func Open(dir, kind string, settings any, inputs map[string]string, mode Mode) (*Folder, error) {
	rec := Record{Kind: kind, Status: StatusRunning}
	var err error
	if rec.Settings, err = json.Marshal(settings); err != nil {
		return nil, fmt.Errorf("run %s: settings: %w", dir, err)
	}
	if len(inputs) > 0 {
		rec.Inputs = map[string]Input{}
		for _, role := range slices.Sorted(maps.Keys(inputs)) {
			sum, err := fileDigest(inputs[role])
			if err != nil {
				return nil, fmt.Errorf("run %s: input %s: %w", dir, role, err)
			}
			rec.Inputs[role] = Input{Path: inputs[role], SHA256: sum}
		}
	}
	rec.Key = key(rec)
	f := &Folder{Dir: dir, Rec: rec, opened: time.Now()}

	old, err := ReadRecord(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := checkEmpty(dir); err != nil {
			return nil, err
		}
	case err != nil && mode != Reuse:
		return nil, err
	case err != nil: // unreadable run.json: keep it, but out of the way
		if f.Replaced, err = moveAside(dir, "unreadable"); err != nil {
			return nil, err
		}
	case old.Key == rec.Key && mode == Fresh:
		return nil, fmt.Errorf("%s holds this run already (%s, step %d of %d): pass --resume to continue or reuse it, or choose another --out",
			dir, old.Status, old.Step, old.Steps)
	case old.Key == rec.Key:
		f.Rec.Step, f.Rec.Steps, f.Rec.Seconds, f.Rec.Skipped, f.Rec.Summary = old.Step, old.Steps, old.Seconds, old.Skipped, old.Summary
		f.State = Partial
		if old.Status == StatusDone {
			f.State = Done
			f.Rec.Status = StatusDone
		}
	case mode == Fresh:
		return nil, fmt.Errorf("%s holds another run (%s): choose another --out", dir, old.Kind)
	case mode == Resume:
		return nil, fmt.Errorf("cannot resume %s: the run there has other settings or inputs:\n  %s",
			dir, strings.Join(Differences(*old, rec), "\n  "))
	default:
		if f.Replaced, err = moveAside(dir, old.Key[:min(8, len(old.Key))]); err != nil {
			return nil, err
		}
	}
	f.before = f.Rec.Seconds
	if f.State == Done {
		return f, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create run folder: %w", err)
	}
	if err := f.write(); err != nil {
		return nil, err
	}
	return f, nil
}

// checkEmpty refuses a folder that holds files of a run but no run.json
// (made by hand, or by an older moerl): Open will not write over them.
func checkEmpty(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("run folder: %w", err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() && (strings.HasSuffix(e.Name(), ".ck") || e.Name() == MetricsFile) {
			return fmt.Errorf("%s holds %s but no %s: it is not a run this moerl can resume; choose another --out", dir, e.Name(), RecordFile)
		}
	}
	return nil
}

// moveAside renames dir to dir.replaced-TAG (or -TAG-2, …), keeping an
// earlier run's results when a stage must run again with other settings.
func moveAside(dir, tag string) (string, error) {
	clean := filepath.Clean(dir)
	for i := 1; ; i++ {
		to := clean + ".replaced-" + tag
		if i > 1 {
			to += fmt.Sprintf("-%d", i)
		}
		if _, err := os.Stat(to); errors.Is(err, fs.ErrNotExist) {
			if err := os.Rename(clean, to); err != nil {
				return "", fmt.Errorf("move the earlier run aside: %w", err)
			}
			return to, nil
		}
	}
}

// ReadRecord reads dir's run.json.
func ReadRecord(dir string) (*Record, error) {
	path := filepath.Join(dir, RecordFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Key == "" || r.Kind == "" {
		return nil, fmt.Errorf("%s was written by an older moerl (no key): it cannot be resumed; choose another --out", path)
	}
	return &r, nil
}

// key digests what a stage's result depends on.
func key(r Record) string {
	h := sha256.New()
	fmt.Fprintf(h, "moerl run key 1\nkind %s\n", r.Kind)
	var compact bytes.Buffer
	json.Compact(&compact, r.Settings)
	h.Write(compact.Bytes())
	for _, role := range slices.Sorted(maps.Keys(r.Inputs)) {
		fmt.Fprintf(h, "\ninput %s %s", role, r.Inputs[role].SHA256)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fileDigest is the hex SHA-256 of a file's contents.
func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Differences lists what differs between two records, one "field: a → b"
// per line, settings compared field by field.
func Differences(a, b Record) []string {
	var out []string
	if a.Kind != b.Kind {
		out = append(out, fmt.Sprintf("kind: %s → %s", a.Kind, b.Kind))
	}
	fa, fb := flatten(a.Settings), flatten(b.Settings)
	for _, k := range slices.Sorted(maps.Keys(union(fa, fb))) {
		va, oka := fa[k]
		vb, okb := fb[k]
		switch {
		case !oka:
			out = append(out, fmt.Sprintf("%s: (absent) → %s", k, vb))
		case !okb:
			out = append(out, fmt.Sprintf("%s: %s → (absent)", k, va))
		case va != vb:
			out = append(out, fmt.Sprintf("%s: %s → %s", k, va, vb))
		}
	}
	for _, role := range slices.Sorted(maps.Keys(union(a.Inputs, b.Inputs))) {
		ia, ib := a.Inputs[role], b.Inputs[role]
		if ia.SHA256 != ib.SHA256 {
			out = append(out, fmt.Sprintf("input %s: %s (%.12s) → %s (%.12s)", role, ia.Path, ia.SHA256, ib.Path, ib.SHA256))
		}
	}
	if len(out) == 0 {
		out = append(out, "(the keys differ, but no setting does: a run of another moerl version)")
	}
	return out
}

func union[V any](a, b map[string]V) map[string]bool {
	u := map[string]bool{}
	for k := range a {
		u[k] = true
	}
	for k := range b {
		u[k] = true
	}
	return u
}

// flatten maps each leaf of a JSON document to its path ("rl.algo.kl_coef").
func flatten(doc json.RawMessage) map[string]string {
	out := map[string]string{}
	var v any
	if json.Unmarshal(doc, &v) != nil {
		return out
	}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		if m, ok := v.(map[string]any); ok && len(m) > 0 {
			for k, x := range m {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				walk(p, x)
			}
			return
		}
		b, _ := json.Marshal(v)
		out[prefix] = string(b)
	}
	walk("", v)
	return out
}

// Path is a file of the run folder.
func (f *Folder) Path(name string) string { return filepath.Join(f.Dir, name) }

// write saves run.json atomically.
func (f *Folder) write() error {
	f.Rec.Seconds = f.before + time.Since(f.opened).Seconds()
	data, err := json.MarshalIndent(f.Rec, "", "  ")
	if err != nil {
		return fmt.Errorf("run %s: %w", f.Dir, err)
	}
	return WriteFileAtomic(f.Path(RecordFile), append(data, '\n'))
}

// Progress records the steps done (after a checkpoint).
func (f *Folder) Progress(step, steps, skipped int) error {
	f.Rec.Step, f.Rec.Steps, f.Rec.Skipped = step, steps, skipped
	return f.write()
}

// Finish marks the run done, with the stage's summary of its result.
func (f *Folder) Finish(summary any) error {
	if summary != nil {
		data, err := json.Marshal(summary)
		if err != nil {
			return fmt.Errorf("run %s: summary: %w", f.Dir, err)
		}
		f.Rec.Summary = data
	}
	f.Rec.Status, f.Rec.Error = StatusDone, ""
	f.State = Done
	return f.write()
}

// Stopped records that the run ended early: interrupted, or failed with err.
func (f *Folder) Stopped(status string, err error) {
	f.Rec.Status = status
	if err != nil {
		f.Rec.Error = err.Error()
	}
	f.write() // best effort: the error being reported matters more
}

// SetDevice records the device the run computes on.
func (f *Folder) SetDevice(d string) { f.Rec.Device = d }

// WriteFileAtomic writes through a temporary file in the same folder, a
// sync and a rename, so that a finished result is never half-overwritten:
// on any failure the previous file is intact and the temporary one removed.
func WriteFileAtomic(path string, data []byte) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// MetricsWriter appends one JSON line per step to metrics.jsonl.
type MetricsWriter struct {
	path string
	f    *os.File
	w    *bufio.Writer
}

// Metrics opens metrics.jsonl for the steps after step: lines of later
// steps (written after the checkpoint a run resumes from) are cut, and a
// run that starts at 0 starts an empty file.
func (f *Folder) Metrics(step int) (*MetricsWriter, error) {
	path := f.Path(MetricsFile)
	if step == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	} else if err := truncateMetrics(path, step); err != nil {
		return nil, err
	}
	file, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return newMetricsWriter(path, file), nil
}

func newMetricsWriter(path string, f *os.File) *MetricsWriter {
	return &MetricsWriter{path: path, f: f, w: bufio.NewWriter(f)}
}

// Write appends v as one JSON line. Lines are flushed at every step, so a
// crash loses none that were reported.
func (m *MetricsWriter) Write(v any) error {
	line, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("write metrics %s: %w", m.path, err)
	}
	m.w.Write(line)
	m.w.WriteByte('\n')
	if err := m.w.Flush(); err != nil {
		return fmt.Errorf("write metrics %s: %w", m.path, err)
	}
	return nil
}

// Close closes the file.
func (m *MetricsWriter) Close() error {
	ferr := m.w.Flush()
	if err := m.f.Close(); ferr == nil {
		ferr = err
	}
	if ferr != nil {
		return fmt.Errorf("write metrics %s: %w", m.path, ferr)
	}
	return nil
}

// truncateMetrics drops the lines of a metrics file past step, through an
// atomic rewrite so that a failure leaves the file as it was.
func truncateMetrics(path string, step int) error {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("metrics: %s is not a regular file", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	var keep bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	for sc.Scan() {
		var s struct {
			Step int `json:"step"`
		}
		if json.Unmarshal(sc.Bytes(), &s) == nil && s.Step <= step {
			keep.Write(sc.Bytes())
			keep.WriteByte('\n')
		}
	}
	if bytes.Equal(keep.Bytes(), data) {
		return nil
	}
	return WriteFileAtomic(path, keep.Bytes())
}
