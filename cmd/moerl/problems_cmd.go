package main

import (
	"io"

	"github.com/moerl/moerl/rl/task"
)

func runProblems(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("problems", `Write generated problems, with their canonical chain of thought and
answer, as JSONL (for 'moerl eval --problems', 'moerl reward', or to read).`, stderr)
	pf := addProblemFlags(fs, 10)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *pf.file != "" {
		return usagef("--problems reads a file; this command writes one (use --task)")
	}
	ps, err := pf.load()
	if err != nil {
		return err
	}
	return task.WriteJSONL(stdout, ps)
}
