package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/moerl/moerl/rl/task"
)

// problemFlags choose evaluation or training problems: a JSONL file, or
// problems generated from a task.
type problemFlags struct {
	file, task, diffs *string
	count             *int
	heldOut           *bool
	seed              *uint64
}

func addProblemFlags(fs *flag.FlagSet, defaultCount int) *problemFlags {
	return &problemFlags{
		file:    fs.String("problems", "", "JSONL file of problems (as written by 'moerl problems'); else generated from --task"),
		task:    fs.String("task", "add", "task: "+strings.Join(task.Names(), ", ")),
		diffs:   fs.String("difficulties", "", "comma-separated difficulties (default: the task's training bins)"),
		count:   fs.Int("count", defaultCount, "problems to generate per difficulty"),
		heldOut: fs.Bool("held-out", false, "also generate the task's held-out (harder) difficulties"),
		seed:    fs.Uint64("problem-seed", 1000, "seed of generated problems (distinct from training's)"),
	}
}

// parseDifficulties reads "2,3" into a list, checking each against the task.
func parseDifficulties(t task.Task, s string) ([]int, error) {
	if s == "" {
		train, _ := t.Difficulties()
		return train, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		d, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, usagef("--difficulties %q: %q is not an integer", s, f)
		}
		if err := task.CheckDifficulty(t, d); err != nil {
			return nil, usageError{fmt.Errorf("--difficulties: %w", err)}
		}
		out = append(out, d)
	}
	return out, nil
}

func (f *problemFlags) load() ([]task.Problem, error) {
	if *f.file != "" {
		r, err := os.Open(*f.file)
		if err != nil {
			return nil, fmt.Errorf("read problems: %w", err)
		}
		defer r.Close()
		ps, err := task.ReadJSONL(r)
		if err != nil {
			return nil, fmt.Errorf("problems %s: %w", *f.file, err)
		}
		if len(ps) == 0 {
			return nil, fmt.Errorf("problems %s: no problems", *f.file)
		}
		return ps, nil
	}
	t, err := task.Get(*f.task)
	if err != nil {
		return nil, usageError{fmt.Errorf("--task: %w", err)}
	}
	if *f.count <= 0 {
		return nil, usagef("--count must be positive, got %d", *f.count)
	}
	diffs, err := parseDifficulties(t, *f.diffs)
	if err != nil {
		return nil, err
	}
	if *f.heldOut {
		_, held := t.Difficulties()
		diffs = append(diffs, held...)
	}
	var ps []task.Problem
	for _, d := range diffs {
		ps = append(ps, task.GenerateSet(t, *f.seed+uint64(d), *f.count, []int{d})...)
	}
	return ps, nil
}
