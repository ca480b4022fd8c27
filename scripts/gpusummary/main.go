// Command gpusummary writes the one-page answer of a GPU run: it reads what
// the bundle's run.sh left in its work folder (steps.tsv, one log per step,
// moerl bench's JSON per model, the PyTorch peer's JSON, ncu's CSV) and writes
// summary.md and summary.json (and moerl_bench.json, every workload in one
// list) to the output folder.
//
// Usage (run.sh calls it):
//
//	gpusummary -work DIR -out DIR [-require] [-gpu "H200, 580.65, 143771 MiB"] [-budget 560]
//
// steps.tsv has one line per step: name, kind (test, bench, peer, run, or
// extra: a variant timing whose skip or timeout for want of time leaves
// the verdict alone),
// the exit status (or "skip"), seconds, the log's path, the time limit in
// seconds, and a note. A test step's log is a Go test binary's -test.v
// output, whose "--- PASS/FAIL/SKIP" lines (tests and subtests) it counts.
//
// The verdict is PASS only when CUDA was required (MOERL_REQUIRE_CUDA=1:
// GPU tests fail rather than skip), every step ran and exited 0 and no test
// failed; FAIL when anything failed; NO GPU when CUDA was not required and
// nothing failed — such a run says nothing about the GPU.
package main

import (
	"bufio"
	"cmp"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	work := flag.String("work", "", "run.sh's work folder (steps.tsv, logs, JSON files)")
	out := flag.String("out", "", "folder to write summary.md, summary.json and moerl_bench.json to")
	require := flag.Bool("require", false, "CUDA was required (MOERL_REQUIRE_CUDA=1)")
	gpu := flag.String("gpu", "", "the GPU, as nvidia-smi names it")
	budget := flag.Int("budget", 0, "the run's time budget in seconds")
	flag.Parse()
	if *work == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: gpusummary -work DIR -out DIR [-require] [-gpu NAME] [-budget S]")
		os.Exit(2)
	}
	s, err := collect(*work, *require, *gpu, *budget)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gpusummary:", err)
		os.Exit(1)
	}
	s.Date = time.Now().UTC().Format(time.RFC3339)
	if err := write(s, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gpusummary:", err)
		os.Exit(1)
	}
}

// Summary is summary.json.
type Summary struct {
	Date        string       `json:"date"`
	GPU         string       `json:"gpu"`
	RequireCUDA bool         `json:"require_cuda"`
	Verdict     string       `json:"verdict"` // PASS, FAIL or NO GPU
	BudgetS     int          `json:"budget_s,omitempty"`
	Seconds     int          `json:"seconds"`
	Steps       []Step       `json:"steps"`
	Bench       []BenchRow   `json:"bench"`
	BenchBF16   []BenchRow   `json:"bench_bf16,omitempty"` // moerl --bf16 (bf16-moe.json) beside the peer
	Profile     *Profile     `json:"profile,omitempty"`    // ncu over a moe-tiny training step (ncu.csv)
	Moerl       []MoerlBench `json:"moerl_bench"`          // every moerl bench workload, raw
	Peer        PeerInfo     `json:"peer"`
}

// Step is one step of run.sh.
type Step struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	Status  string `json:"status"` // pass, fail, timeout, skip
	RC      int    `json:"rc"`
	Seconds int    `json:"seconds"`
	LimitS  int    `json:"limit_s,omitempty"`
	Note    string `json:"note,omitempty"`
	log     string
	// Tests are a test binary's counts (tests and subtests).
	Tests *TestCounts `json:"tests,omitempty"`
}

// TestCounts are the results a Go test binary printed with -test.v.
type TestCounts struct {
	Pass    int      `json:"pass"`
	Fail    int      `json:"fail"`
	Skip    int      `json:"skip"`
	Failed  []string `json:"failed,omitempty"`
	Skipped []string `json:"skipped,omitempty"` // "TestX: reason", top-level tests only
	Panic   string   `json:"panic,omitempty"`
}

// MoerlBench is one workload of moerl bench --json (cmd/moerl's benchResult).
type MoerlBench struct {
	Workload     string  `json:"workload"`
	Config       string  `json:"config"`
	Device       string  `json:"device"`
	GEMM         string  `json:"gemm"`
	TokensPerS   float64 `json:"tokens_per_s"`
	MsPerStep    float64 `json:"ms_per_step,omitempty"`
	GFLOPs       float64 `json:"model_gflop_per_s,omitempty"`
	SPerStep     float64 `json:"s_per_step,omitempty"`
	GenShare     float64 `json:"gen_share,omitempty"`
	WaitShare    float64 `json:"wait_share,omitempty"`
	PeakMemBytes int64   `json:"peak_mem_bytes,omitempty"`
	BlockSteps   int     `json:"block_steps,omitempty"`
	Shape        string  `json:"shape"`
	Error        string  `json:"error,omitempty"`
}

// PeerInfo is what the peer's JSON says about itself.
type PeerInfo struct {
	Found        bool   `json:"found"`
	Torch        string `json:"torch,omitempty"`
	Transformers string `json:"transformers,omitempty"`
	GPU          string `json:"gpu,omitempty"`
}

// BenchRow puts moerl and the peer side by side for one workload. Ratios
// are moerl's speed over the peer's: for train the peer's ms/step over
// moerl's (the same B×T batch; the two count tokens differently by one per
// row), for generate generated tokens/s.
type BenchRow struct {
	Config       string  `json:"config"`
	Workload     string  `json:"workload"`
	Moerl        float64 `json:"moerl_tokens_per_s,omitempty"`
	MoerlMs      float64 `json:"moerl_ms_per_step,omitempty"`
	MoerlGEMM    string  `json:"moerl_gemm,omitempty"`
	MoerlPeakMem int64   `json:"moerl_peak_mem_bytes,omitempty"`
	GenShare     float64 `json:"moerl_gen_share,omitempty"`
	WaitShare    float64 `json:"moerl_wait_share,omitempty"` // the host's share of the wall time spent waiting for the GPU
	MoerlError   string  `json:"moerl_error,omitempty"`
	PeerFP32     float64 `json:"peer_fp32_tokens_per_s,omitempty"`
	PeerFP32Ms   float64 `json:"peer_fp32_ms_per_step,omitempty"`
	PeerBF16     float64 `json:"peer_bf16_tokens_per_s,omitempty"`
	PeerBF16Ms   float64 `json:"peer_bf16_ms_per_step,omitempty"`
	// The peer's peak memory (peer_mem.py adds it): for train, of its fp32
	// and its bf16 run; for generate, of its one run, in PeerFP32PeakMem.
	PeerFP32PeakMem int64   `json:"peer_fp32_peak_mem_bytes,omitempty"`
	PeerBF16PeakMem int64   `json:"peer_bf16_peak_mem_bytes,omitempty"`
	PeerError       string  `json:"peer_error,omitempty"`
	RatioFP32       float64 `json:"ratio_vs_peer_fp32,omitempty"`
	RatioBF16       float64 `json:"ratio_vs_peer_bf16,omitempty"`
}

// benchConfigs and benchWorkloads are BENCH.md's GPU table, in its order.
var (
	benchConfigs   = []string{"moe-micro", "moe-tiny", "moe-small"}
	benchWorkloads = []string{"train", "generate", "rl-step"}
)

func collect(work string, require bool, gpu string, budget int) (*Summary, error) {
	s := &Summary{GPU: gpu, RequireCUDA: require, BudgetS: budget, Steps: []Step{}, Bench: []BenchRow{}, Moerl: []MoerlBench{}}
	steps, err := readSteps(filepath.Join(work, "steps.tsv"))
	if err != nil {
		return nil, err
	}
	for _, st := range steps {
		s.Seconds += st.Seconds
		if st.Kind == "test" && st.Status != "skip" {
			st.Tests = countTests(st.log)
			if st.Status == "pass" && st.Tests.Pass+st.Tests.Fail+st.Tests.Skip == 0 {
				st.Status, st.Note = "fail", join(st.Note, "no test results in the log")
			}
		}
		s.Steps = append(s.Steps, st)
	}
	benchFiles, _ := filepath.Glob(filepath.Join(work, "bench-*.json"))
	slices.Sort(benchFiles)
	for _, f := range benchFiles {
		rs, err := readMoerlBench(f)
		if err != nil {
			// No workload ran: the file's error stands for all of them.
			s.Moerl = append(s.Moerl, MoerlBench{Workload: "*", Config: strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "bench-"), ".json"),
				Error: err.Error()})
			continue
		}
		s.Moerl = append(s.Moerl, rs...)
	}
	peer, info, err := readPeer(filepath.Join(work, "torch_moe_bench.json"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		info.Found = false
		peer = map[string]peerEntry{}
		s.Steps = append(s.Steps, Step{Name: "read the peer's JSON", Kind: "peer", Status: "fail", RC: 1, Note: err.Error()})
	}
	s.Peer = info
	s.Bench = benchRows(s.Moerl, peer, require)
	if f, err := os.Open(filepath.Join(work, "ncu.csv")); err == nil {
		p, err := readProfile(f)
		f.Close()
		if err != nil {
			s.Steps = append(s.Steps, Step{Name: "read ncu.csv", Kind: "run", Status: "fail", RC: 1, Note: err.Error()})
		} else {
			s.Profile = p
		}
	}
	// The bf16 run's rows, where it measured them: a table of its own,
	// against the peer's bf16 (train) and its one generate number.
	if rs, err := readMoerlBench(filepath.Join(work, "bf16-moe.json")); err == nil {
		for _, r := range benchRows(rs, peer, false) {
			if r.MoerlError != "not measured" {
				s.BenchBF16 = append(s.BenchBF16, r)
			}
		}
	}
	s.Verdict = verdict(s)
	return s, nil
}

// Profile is ncu's GPU time per kernel, summed over every launch it
// profiled (kernels inside CUDA graphs included), largest first.
type Profile struct {
	TotalUs float64         `json:"total_us"`
	Kernels []ProfileKernel `json:"kernels"`
}

// ProfileKernel is one kernel's share of the profiled GPU time.
type ProfileKernel struct {
	Name     string  `json:"name"`
	Launches int     `json:"launches"`
	Us       float64 `json:"us"`
	Share    float64 `json:"share"`
}

// readProfile reads ncu --csv --metrics gpu__time_duration.sum output:
// lines before the header ("==PROF==" notes) are skipped, the columns
// are found by name ("Kernel Name", "Metric Name", "Metric Unit", "Metric
// Value"), values may carry thousands separators, and a kernel's name is
// cut at its argument list or template arguments, so that cuBLAS's
// instantiations of one kernel count together.
func readProfile(r io.Reader) (*Profile, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var col map[string]int
	byName := map[string]*ProfileKernel{}
	p := &Profile{}
	for sc.Scan() {
		line := sc.Text()
		if col == nil {
			if strings.Contains(line, `"Kernel Name"`) && strings.Contains(line, `"Metric Value"`) {
				col = map[string]int{}
				for i, h := range csvFields(line) {
					col[h] = i
				}
			}
			continue
		}
		f := csvFields(line)
		get := func(name string) string {
			if i, ok := col[name]; ok && i < len(f) {
				return f[i]
			}
			return ""
		}
		if get("Metric Name") != "gpu__time_duration.sum" {
			continue
		}
		v, err := strconv.ParseFloat(strings.ReplaceAll(get("Metric Value"), ",", ""), 64)
		if err != nil {
			return nil, fmt.Errorf("ncu.csv: metric value %q: %v", get("Metric Value"), err)
		}
		scale, ok := map[string]float64{"nsecond": 1e-3, "ns": 1e-3, "usecond": 1, "us": 1, "msecond": 1e3, "ms": 1e3,
			"second": 1e6, "s": 1e6}[get("Metric Unit")]
		if !ok {
			return nil, fmt.Errorf("ncu.csv: unknown time unit %q", get("Metric Unit"))
		}
		name := get("Kernel Name")
		if i := strings.IndexAny(name, "(<"); i > 0 {
			name = name[:i]
		}
		k := byName[name]
		if k == nil {
			k = &ProfileKernel{Name: name}
			byName[name] = k
		}
		k.Launches++
		k.Us += v * scale
		p.TotalUs += v * scale
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("ncu.csv: %v", err)
	}
	if col == nil {
		return nil, fmt.Errorf("ncu.csv: no header with \"Kernel Name\" and \"Metric Value\"")
	}
	for _, k := range byName {
		if p.TotalUs > 0 {
			k.Share = k.Us / p.TotalUs
		}
		p.Kernels = append(p.Kernels, *k)
	}
	slices.SortFunc(p.Kernels, func(a, b ProfileKernel) int {
		return cmp.Or(cmp.Compare(b.Us, a.Us), strings.Compare(a.Name, b.Name))
	})
	return p, nil
}

// csvFields splits one line of ncu's CSV, whose every field is quoted.
func csvFields(line string) []string {
	rd := csv.NewReader(strings.NewReader(line))
	rd.LazyQuotes = true
	f, err := rd.Read()
	if err != nil {
		return nil
	}
	return f
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// readSteps parses steps.tsv.
func readSteps(path string) ([]Step, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []Step
	for i, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) < 6 {
			return nil, fmt.Errorf("%s line %d: %d fields, want at least 6", path, i+1, len(f))
		}
		st := Step{Name: f[0], Kind: f[1], log: f[4]}
		st.Seconds, _ = strconv.Atoi(f[3])
		st.LimitS, _ = strconv.Atoi(f[5])
		if len(f) > 6 {
			st.Note = strings.Join(f[6:], " ")
		}
		switch rc, err := strconv.Atoi(f[2]); {
		case f[2] == "skip":
			st.Status = "skip"
		case err != nil:
			return nil, fmt.Errorf("%s line %d: exit status %q", path, i+1, f[2])
		case rc == 0:
			st.Status = "pass"
		case rc == 124 || rc == 137:
			st.RC, st.Status = rc, "timeout"
			st.Note = join(st.Note, fmt.Sprintf("killed at its %d s limit", st.LimitS))
		default:
			st.RC, st.Status = rc, "fail"
		}
		out = append(out, st)
	}
	return out, nil
}

var (
	resultLine = regexp.MustCompile(`^(\s*)--- (PASS|FAIL|SKIP): (\S+)`)
	runLine    = regexp.MustCompile(`^=== (?:RUN|CONT|PAUSE)\s+(\S+)`)
	logLine    = regexp.MustCompile(`^\s+\S+\.go:\d+: (.*)`)
)

// countTests counts a -test.v log's results; a missing log counts nothing.
// With -test.v a test's log lines come between its "=== RUN" line and its
// result, so a skipped test's reason is the first of them.
func countTests(path string) *TestCounts {
	c := &TestCounts{}
	f, err := os.Open(path)
	if err != nil {
		c.Panic = "no log: " + err.Error()
		return c
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<22)
	running := ""                   // the test whose output this is
	firstLog := map[string]string{} // test → its first log line
	for sc.Scan() {
		line := sc.Text()
		if m := runLine.FindStringSubmatch(line); m != nil {
			running = m[1]
			continue
		}
		if m := resultLine.FindStringSubmatch(line); m != nil {
			switch m[2] {
			case "PASS":
				c.Pass++
			case "FAIL":
				c.Fail++
				c.Failed = append(c.Failed, m[3])
			case "SKIP":
				c.Skip++
				if m[1] == "" {
					c.Skipped = append(c.Skipped, strings.TrimRight(m[3]+": "+firstLog[m[3]], ": "))
				}
			}
			continue
		}
		if m := logLine.FindStringSubmatch(line); m != nil && running != "" {
			if _, seen := firstLog[running]; !seen {
				firstLog[running] = m[1]
			}
		}
		if strings.HasPrefix(line, "panic: ") && c.Panic == "" {
			c.Panic = strings.TrimPrefix(line, "panic: ")
		}
	}
	return c
}

type moerlBenchFile struct {
	Error     string       `json:"error"`
	Workloads []MoerlBench `json:"workloads"`
}

func readMoerlBench(path string) ([]MoerlBench, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f moerlBenchFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%s: %v", filepath.Base(path), err)
	}
	if len(f.Workloads) == 0 && f.Error != "" {
		return nil, errors.New(f.Error)
	}
	return f.Workloads, nil
}

// peerEntry is one of the peer's results: numbers, or the error it hit.
type peerEntry struct {
	MsPerStep float64 `json:"ms_per_step"`
	TokPerS   float64 `json:"tok_per_s"`
	GenTokPS  float64 `json:"gen_tok_per_s"`
	PeakMem   int64   `json:"peak_mem_bytes"` // added by peer_mem.py
	Err       string  `json:"-"`
}

// readPeer reads torch_moe_bench.json: "train/<config>/<fp32|bf16>/eager"
// and "gen/<config>" are objects, or strings with the error they hit.
func readPeer(path string) (map[string]peerEntry, PeerInfo, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return map[string]peerEntry{}, PeerInfo{}, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, PeerInfo{}, fmt.Errorf("%s: %v", filepath.Base(path), err)
	}
	info := PeerInfo{Found: true}
	out := map[string]peerEntry{}
	for k, v := range raw {
		var str string
		if json.Unmarshal(v, &str) == nil {
			switch k {
			case "torch":
				info.Torch = str
			case "transformers":
				info.Transformers = str
			case "gpu":
				info.GPU = str
			default:
				out[k] = peerEntry{Err: str}
			}
			continue
		}
		var e peerEntry
		if json.Unmarshal(v, &e) == nil {
			out[k] = e
		}
	}
	return out, info, nil
}

// benchRows lines moerl's workloads up with the peer's. Every row of
// BENCH.md's GPU table is there when CUDA was required (missing ones say
// so); otherwise the rows either side measured.
func benchRows(moerl []MoerlBench, peer map[string]peerEntry, require bool) []BenchRow {
	type key struct{ config, workload string }
	have := map[key]bool{}
	byKey := map[key]MoerlBench{}
	for _, r := range moerl {
		k := key{r.Config, r.Workload}
		byKey[k], have[k] = r, true
	}
	for k := range peer {
		p := strings.Split(k, "/")
		switch {
		case len(p) == 4 && p[0] == "train":
			have[key{p[1], "train"}] = true
		case len(p) == 2 && p[0] == "gen":
			have[key{p[1], "generate"}] = true
		}
	}
	if require {
		for _, c := range benchConfigs[1:] {
			for _, w := range benchWorkloads {
				have[key{c, w}] = true
			}
		}
	}
	rows := []BenchRow{}
	for _, c := range benchConfigs {
		for _, w := range benchWorkloads {
			k := key{c, w}
			if !have[k] {
				continue
			}
			row := BenchRow{Config: c, Workload: w}
			if m, ok := byKey[k]; ok {
				row.Moerl, row.MoerlMs, row.MoerlGEMM, row.MoerlPeakMem, row.GenShare, row.WaitShare, row.MoerlError =
					m.TokensPerS, m.MsPerStep, m.GEMM, m.PeakMemBytes, m.GenShare, m.WaitShare, m.Error
			} else if m, ok := byKey[key{c, "*"}]; ok {
				row.MoerlError = m.Error
			} else {
				row.MoerlError = "not measured"
			}
			switch w {
			case "train":
				fp, okf := peer["train/"+c+"/fp32/eager"]
				bf, okb := peer["train/"+c+"/bf16/eager"]
				row.PeerFP32, row.PeerFP32Ms, row.PeerBF16, row.PeerBF16Ms = fp.TokPerS, fp.MsPerStep, bf.TokPerS, bf.MsPerStep
				row.PeerFP32PeakMem, row.PeerBF16PeakMem = fp.PeakMem, bf.PeakMem
				row.PeerError = join(fp.Err, bf.Err)
				if !okf && !okb {
					row.PeerError = "not measured"
				}
				if row.MoerlError == "" && row.MoerlMs > 0 {
					row.RatioFP32 = ratio(row.PeerFP32Ms, row.MoerlMs)
					row.RatioBF16 = ratio(row.PeerBF16Ms, row.MoerlMs)
				}
			case "generate":
				g, ok := peer["gen/"+c]
				row.PeerFP32, row.PeerFP32PeakMem, row.PeerError = g.GenTokPS, g.PeakMem, g.Err
				if !ok {
					row.PeerError = "not measured"
				}
				if row.MoerlError == "" {
					row.RatioFP32 = ratio(row.Moerl, row.PeerFP32)
				}
			default:
				row.PeerError = "no peer workload"
			}
			rows = append(rows, row)
		}
	}
	return rows
}

// moerlCell is the row's moerl tokens/s, or its error in bold.
func (r BenchRow) moerlCell() string {
	if r.MoerlError != "" {
		return "**" + cell(short(r.MoerlError)) + "**"
	}
	return rate(r.Moerl)
}

func ratio(a, b float64) float64 {
	if a <= 0 || b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return 0
	}
	return a / b
}

func verdict(s *Summary) string {
	failed := false
	for _, st := range s.Steps {
		// An extra step (a variant timing, run last as the budget allows)
		// that ran out of time proves no fault; one that failed does.
		timedOut := st.Status == "timeout" && st.Kind != "extra"
		failed = failed || st.Status == "fail" || timedOut || (st.Tests != nil && (st.Tests.Fail > 0 || st.Tests.Panic != ""))
	}
	for _, r := range s.Moerl {
		failed = failed || r.Error != ""
	}
	switch {
	case failed:
		return "FAIL"
	case !s.RequireCUDA:
		return "NO GPU"
	}
	for _, st := range s.Steps {
		if st.Status == "skip" && st.Kind != "extra" {
			return "FAIL" // a step that never ran proves nothing
		}
	}
	return "PASS"
}

func write(s *Summary, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "summary.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	mb, _ := json.MarshalIndent(map[string]any{"workloads": s.Moerl}, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "moerl_bench.json"), append(mb, '\n'), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "summary.md"))
	if err != nil {
		return err
	}
	markdown(f, s)
	return f.Close()
}

func markdown(w io.Writer, s *Summary) {
	fmt.Fprintf(w, "# moerl GPU run, %s: %s\n\n", s.Date, s.Verdict)
	gpu := s.GPU
	if gpu == "" {
		gpu = "none found (nvidia-smi gave nothing)"
	}
	fmt.Fprintf(w, "GPU: %s  \n", gpu)
	if s.RequireCUDA {
		fmt.Fprintf(w, "MOERL_REQUIRE_CUDA=1: a GPU test that cannot reach CUDA fails instead of skipping.  \n")
	} else {
		fmt.Fprintf(w, "MOERL_REQUIRE_CUDA unset: GPU tests skip where CUDA is unavailable. **This run proves nothing about the GPU.**  \n")
	}
	fmt.Fprintf(w, "Time: %d s of steps", s.Seconds)
	if s.BudgetS > 0 {
		fmt.Fprintf(w, " (budget %d s)", s.BudgetS)
	}
	fmt.Fprintf(w, "\n\n## Steps\n\n| step | result | time | tests pass / fail / skip | note |\n|---|---|---|---|---|\n")
	for _, st := range s.Steps {
		res := st.Status
		if st.RC != 0 {
			res = fmt.Sprintf("%s (exit %d)", st.Status, st.RC)
		}
		if st.Status != "pass" && st.Status != "skip" {
			res = "**" + res + "**"
		}
		tests := ""
		if t := st.Tests; t != nil {
			tests = fmt.Sprintf("%d / %d / %d", t.Pass, t.Fail, t.Skip)
		}
		note := st.Note
		if st.Tests != nil && st.Tests.Panic != "" {
			note = join(note, "panic: "+st.Tests.Panic)
		}
		fmt.Fprintf(w, "| %s | %s | %d s | %s | %s |\n", st.Name, res, st.Seconds, tests, cell(note))
	}
	fmt.Fprintf(w, "\n## moerl and the PyTorch peer\n\n")
	if s.Peer.Found {
		fmt.Fprintf(w, "Peer: HF transformers %s `Qwen3MoeForCausalLM`, torch %s, eager, TF32 allowed, on %s.\n", s.Peer.Transformers, s.Peer.Torch, s.Peer.GPU)
	} else {
		fmt.Fprintf(w, "Peer: no torch_moe_bench.json (not run, or it failed: see its step).\n")
	}
	fmt.Fprintf(w, "Ratios are moerl's speed over the peer's (train: the peer's ms/step over moerl's, same batch). ")
	fmt.Fprintf(w, "Waits: the share of moerl's timed wall time its host spent waiting for the GPU (near 1: GPU-bound; near 0: host-bound).\n\n")
	fmt.Fprintf(w, "| config | workload | moerl tok/s | moerl ms/step | GEMM | waits | peak mem | peer fp32 tok/s | peer bf16 tok/s | × fp32 | × bf16 |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range s.Bench {
		moerl := r.moerlCell()
		ms := num(r.MoerlMs, "%.1f")
		if r.Workload == "rl-step" && r.GenShare > 0 {
			ms += fmt.Sprintf(" (%.0f%% generating)", 100*r.GenShare)
		}
		peer := rate(r.PeerFP32)
		if r.PeerFP32 == 0 && r.PeerError != "" {
			peer = cell(short(r.PeerError))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Config, r.Workload, moerl, ms, r.MoerlGEMM,
			num(r.WaitShare, "%.2f"), memVs(r.MoerlPeakMem, r.PeerFP32PeakMem), peer, rate(r.PeerBF16), num(r.RatioFP32, "%.2f×"),
			num(r.RatioBF16, "%.2f×"))
	}
	fmt.Fprintf(w, "\nPeak memory: moerl's caching allocator's blocks in use (the model included), and in brackets the peer's "+
		"torch.cuda.max_memory_allocated over the same workload (fp32 here, bf16 below; run.sh runs the peer through peer_mem.py), "+
		"✔ where moerl's is no more (BENCH.md's target).\n")
	if len(s.BenchBF16) > 0 {
		fmt.Fprintf(w, "\n### moerl with --bf16 (GEMM products in bf16, bf16-moe.json)\n\n")
		fmt.Fprintf(w, "| config | workload | moerl tok/s | moerl ms/step | GEMM | waits | peak mem | peer tok/s (train: bf16) | × peer |\n")
		fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|\n")
		for _, r := range s.BenchBF16 {
			moerl := r.moerlCell()
			peer, x, pm := rate(r.PeerFP32), num(r.RatioFP32, "%.2f×"), r.PeerFP32PeakMem // generate: the peer's one run
			if r.Workload == "train" {
				peer, x, pm = rate(r.PeerBF16), num(r.RatioBF16, "%.2f×"), r.PeerBF16PeakMem
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Config, r.Workload, moerl, num(r.MoerlMs, "%.1f"),
				r.MoerlGEMM, num(r.WaitShare, "%.2f"), memVs(r.MoerlPeakMem, pm), peer, x)
		}
	}
	if p := s.Profile; p != nil && len(p.Kernels) > 0 {
		fmt.Fprintf(w, "\n## GPU time by kernel (ncu, moe-tiny training)\n\n")
		fmt.Fprintf(w, "%.0f µs over %d distinct kernels: every launch ncu profiled (run.sh profiles one training step).\n\n",
			p.TotalUs, len(p.Kernels))
		fmt.Fprintf(w, "| kernel | launches | µs | share |\n|---|---|---|---|\n")
		const top = 20
		var rest ProfileKernel
		for i, k := range p.Kernels {
			if i >= top {
				rest.Launches += k.Launches
				rest.Us += k.Us
				rest.Share += k.Share
				continue
			}
			fmt.Fprintf(w, "| %s | %d | %.1f | %.1f%% |\n", cell(k.Name), k.Launches, k.Us, 100*k.Share)
		}
		if rest.Launches > 0 {
			fmt.Fprintf(w, "| (%d others) | %d | %.1f | %.1f%% |\n", len(p.Kernels)-top, rest.Launches, rest.Us, 100*rest.Share)
		}
	}
	var fails []string
	for _, st := range s.Steps {
		if t := st.Tests; t != nil {
			for _, n := range t.Failed {
				fails = append(fails, st.Name+": "+n)
			}
		}
	}
	if len(fails) > 0 {
		fmt.Fprintf(w, "\n## Failed tests\n\n")
		for _, f := range fails {
			fmt.Fprintf(w, "- %s\n", f)
		}
	}
	var skips []string
	for _, st := range s.Steps {
		if t := st.Tests; t != nil {
			for _, n := range t.Skipped {
				skips = append(skips, st.Name+": "+n)
			}
		}
	}
	if len(skips) > 0 {
		fmt.Fprintf(w, "\n## Skipped tests\n\n")
		for _, sk := range skips {
			fmt.Fprintf(w, "- %s\n", short(sk))
		}
	}
	for _, st := range s.Steps {
		if st.Status == "pass" || st.Status == "skip" {
			continue
		}
		fmt.Fprintf(w, "\n## Log of %s (its end)\n\n```\n%s```\n", st.Name, tail(st.log, 30))
	}
}

func cell(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ") }

func short(s string) string {
	if len(s) > 160 {
		return s[:157] + "..."
	}
	return s
}

func rate(v float64) string {
	switch {
	case v <= 0:
		return ""
	case v >= 1e6:
		return fmt.Sprintf("%.2f M", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1f k", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func num(v float64, format string) string {
	if v <= 0 {
		return ""
	}
	return fmt.Sprintf(format, v)
}

func mem(b int64) string {
	if b <= 0 {
		return ""
	}
	return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
}

// memVs is moerl's peak memory and, where the peer measured its own, the
// peer's in brackets with ✔ where moerl's is no more, ✘ where it is.
func memVs(moerl, peer int64) string {
	if moerl <= 0 || peer <= 0 {
		return mem(moerl)
	}
	mark := "✔"
	if moerl > peer {
		mark = "✘"
	}
	return fmt.Sprintf("%s (peer %s %s)", mem(moerl), mem(peer), mark)
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")\n"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		if len(l) > 300 {
			lines[i] = l[:297] + "..."
		}
	}
	return strings.Join(lines, "\n") + "\n"
}
