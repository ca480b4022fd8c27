package eval

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"sync"
	"text/tabwriter"
)

// ProblemSamples is the n sampled answers to one problem.
type ProblemSamples struct {
	// ID names the problem.
	ID string
	// Bin is the problem's difficulty or held-out bin; "" is in no bin.
	Bin string
	// Answers are the parsed answers in their task's canonical form
	// (task.Task.Canonical), so that answers that mean the same vote
	// together in maj@k; "" where none could be parsed.
	Answers []string
	// Valid marks the well-formed samples, whose answers vote in maj@k; nil
	// means every non-empty answer is valid.
	Valid []bool
	// Correct marks the samples whose answer is right.
	Correct []bool
}

// Report is the evaluation of a set of problems: metric means over problems,
// for each k.
type Report struct {
	// Problems is the number of problems.
	Problems int `json:"problems"`
	// N is the number of samples per problem (the smallest, if they differ).
	N int `json:"n"`
	// PassAtK, MajAtK and MeanAtK map k to the mean over problems.
	PassAtK map[int]float64 `json:"pass_at_k"`
	MajAtK  map[int]float64 `json:"maj_at_k"`
	MeanAtK map[int]float64 `json:"mean_at_k"`
	// MajSubsets says how maj@k averages over subsets of the n samples:
	// MajExact.
	MajSubsets string `json:"maj_subsets"`
	// Bins holds the same report for the problems of each non-empty bin.
	Bins map[string]Report `json:"bins,omitempty"`
}

// MajExact is Report.MajSubsets for exact maj@k, the expectation over
// every k-subset of the samples with ties split (see Tally.MajAtK).
const MajExact = "exact: all k-subsets, ties split"

// Options configures Summarize.
type Options struct {
	// Ks are the k to report; nil means Ks(n).
	Ks []int
}

// Summarize evaluates problems at ks (nil: 1, 2, 4, …, n). See
// Options.Summarize.
func Summarize(problems []ProblemSamples, ks []int) (Report, error) {
	return Options{Ks: ks}.Summarize(problems)
}

// Summarize evaluates problems: for each k, the means over problems of
// pass@k, exact maj@k and mean@k, overall and per bin. Every k must be at
// most the number of samples of every problem, and the answers must be
// canonical (see TallyOf).
func (o Options) Summarize(problems []ProblemSamples) (Report, error) {
	if len(problems) == 0 {
		return Report{}, errors.New("summarize: no problems")
	}
	minN := -1
	tallies := make([]Tally, len(problems))
	for i, p := range problems {
		n := len(p.Correct)
		if n == 0 {
			return Report{}, fmt.Errorf("summarize: problem %d (%q) has no samples", i, p.ID)
		}
		if len(p.Answers) != n || (p.Valid != nil && len(p.Valid) != n) {
			return Report{}, fmt.Errorf("summarize: problem %d (%q) has %d answers, %d validity flags, %d correctness flags",
				i, p.ID, len(p.Answers), len(p.Valid), n)
		}
		t, err := TallyOf(p)
		if err != nil {
			return Report{}, fmt.Errorf("summarize: problem %d: %w", i, err)
		}
		tallies[i] = t
		if minN < 0 || n < minN {
			minN = n
		}
	}
	ks := o.Ks
	if ks == nil {
		ks = Ks(minN)
	}
	ks = slices.Compact(slices.Sorted(slices.Values(ks)))
	if len(ks) == 0 {
		return Report{}, errors.New("summarize: no k to report")
	}
	if ks[0] < 1 || ks[len(ks)-1] > minN {
		return Report{}, fmt.Errorf("summarize: k must be in [1, %d], the fewest samples of a problem; got %v", minN, ks)
	}

	// scores[i][j] are problem i's pass, maj and mean at ks[j].
	type score struct{ pass, maj, mean float64 }
	scores := make([][]score, len(problems))
	// Problems are independent, and exact maj@k is the costly part: spread
	// them over the CPUs. Each result goes to its own slot, so the report
	// does not depend on the scheduling.
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(problems)) {
		wg.Go(func() {
			for i := range next {
				maj := tallies[i].MajAtKs(ks)
				scores[i] = make([]score, len(ks))
				for j, k := range ks {
					scores[i][j] = score{tallies[i].PassAtK(k), maj[j], MeanAtK(problems[i].Correct, k)}
				}
			}
		})
	}
	for i := range problems {
		next <- i
	}
	close(next)
	wg.Wait()

	summarize := func(members []int) Report {
		r := Report{
			Problems:   len(members),
			PassAtK:    make(map[int]float64, len(ks)),
			MajAtK:     make(map[int]float64, len(ks)),
			MeanAtK:    make(map[int]float64, len(ks)),
			MajSubsets: MajExact,
		}
		for _, i := range members {
			if n := len(problems[i].Correct); r.N == 0 || n < r.N {
				r.N = n
			}
		}
		for j, k := range ks {
			var s score
			for _, i := range members {
				s.pass += scores[i][j].pass
				s.maj += scores[i][j].maj
				s.mean += scores[i][j].mean
			}
			m := float64(len(members))
			r.PassAtK[k], r.MajAtK[k], r.MeanAtK[k] = s.pass/m, s.maj/m, s.mean/m
		}
		return r
	}

	all := make([]int, len(problems))
	bins := make(map[string][]int)
	for i, p := range problems {
		all[i] = i
		if p.Bin != "" {
			bins[p.Bin] = append(bins[p.Bin], i)
		}
	}
	r := summarize(all)
	if len(bins) > 0 {
		r.Bins = make(map[string]Report, len(bins))
		for name, members := range bins {
			r.Bins[name] = summarize(members)
		}
	}
	return r, nil
}

// DeltaSE is the sampling-efficiency gap of Yue et al. (2504.13837):
// pass@n of the base model minus pass@1 of the RL model, n being base's
// sample count. Both reports must contain those k.
func DeltaSE(base, rl Report) (float64, error) {
	pn, ok := base.PassAtK[base.N]
	if !ok {
		return 0, fmt.Errorf("ΔSE: base report has no pass@%d (its n)", base.N)
	}
	p1, ok := rl.PassAtK[1]
	if !ok {
		return 0, errors.New("ΔSE: RL report has no pass@1")
	}
	return pn - p1, nil
}

// SolvedIDs returns the IDs of the problems with at least one correct
// sample, sorted: comparing two models' sets shows whether the problems one
// solves are a subset of the other's.
func SolvedIDs(problems []ProblemSamples) []string {
	var ids []string
	for _, p := range problems {
		if slices.Contains(p.Correct, true) {
			ids = append(ids, p.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// Table writes the report as text: a header line, then one row per k with
// pass@k and maj@k, then the same for each bin in name order.
func (r Report) Table(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	write := func(title string, r Report) {
		fmt.Fprintf(tw, "%s: %d problems, n=%d, maj@k %s\n", title, r.Problems, r.N, r.MajSubsets)
		fmt.Fprintf(tw, "k\tpass@k\tmaj@k\t\n")
		for _, k := range slices.Sorted(maps.Keys(r.PassAtK)) {
			fmt.Fprintf(tw, "%d\t%.4f\t%.4f\t\n", k, r.PassAtK[k], r.MajAtK[k])
		}
	}
	write("all", r)
	for _, name := range slices.Sorted(maps.Keys(r.Bins)) {
		fmt.Fprintln(tw)
		write("bin "+name, r.Bins[name])
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write eval table: %w", err)
	}
	return nil
}
