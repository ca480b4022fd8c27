package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"

	"github.com/moerl/moerl/rl/reward"
	"github.com/moerl/moerl/rl/task"
)

func runReward(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("reward", `Score responses with the rule-based reward, for debugging rewards: prints
one JSON line per response with reward, correct, well_formed, the parsed
answer and the reason. --responses is JSONL of {"id" or "index", "response"}.`, stderr)
	pf := addProblemFlags(fs, 32)
	responses := fs.String("responses", "", "JSONL of responses (required)")
	scheme := fs.String("scheme", "default", "reward scheme: default (1 / 0.1 / 0) or pm1 (+1 / −1)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *responses == "" {
		return usagef("--responses is required")
	}
	sc, err := reward.ParseScheme(*scheme)
	if err != nil {
		return usageError{fmt.Errorf("--scheme: %w", err)}
	}
	problems, err := pf.load()
	if err != nil {
		return err
	}
	rs, err := readResponses(*responses)
	if err != nil {
		return err
	}
	index := indexProblems(problems)
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // keep "</answer>" readable in reasons
	for j, r := range rs {
		i, err := index.match(r)
		if err != nil {
			return fmt.Errorf("response %d: %w", j+1, err)
		}
		t, err := task.Get(problems[i].Task)
		if err != nil {
			return err
		}
		res := reward.Score(t, problems[i], r.Response, sc)
		if err := enc.Encode(map[string]any{"id": problems[i].ID, "reward": res.Reward, "correct": res.Correct,
			"well_formed": res.WellFormed, "answer": res.Answer, "reason": res.Reason}); err != nil {
			return err
		}
	}
	return nil
}
