package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moerl/moerl/rl/eval"
	"github.com/moerl/moerl/rl/task"
)

func response(answer string) string { return "<think></think><answer>" + answer + "</answer>" }

func index(i int) *int { return &i }

func TestScoreGiven(t *testing.T) {
	add := task.Problem{Task: "add", ID: "a", Prompt: "add 47+385=?", Answer: "432", Bin: "digits3"}
	other := task.Problem{Task: "add", ID: "b", Prompt: "add 1+2=?", Answer: "3"}
	kk := task.Problem{Task: "kk", ID: "k", Prompt: "kk a: b is a knave. b: a and b are knaves.", Answer: "a knight,b knave"}

	t.Run("problem without responses", func(t *testing.T) {
		rs := []givenResponse{{ID: "a", Response: response("432")}}
		_, err := scoreGiven([]task.Problem{add, other}, rs)
		if err == nil || !strings.Contains(err.Error(), "problem 1 (id b) has no responses") {
			t.Errorf("error %v, want one naming problem 1 (id b)", err)
		}
	})
	t.Run("several without responses", func(t *testing.T) {
		_, err := scoreGiven([]task.Problem{add, other, kk}, []givenResponse{{ID: "k", Response: response("x")}})
		if err == nil || !strings.Contains(err.Error(), "problem 0 (id a) has no responses, nor have 1 other problems") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("duplicated id", func(t *testing.T) {
		// Problems 0 and 2 share an id: the map used to keep only the last,
		// so problem 0 silently got nothing.
		ps := []task.Problem{add, other, add}
		rs := []givenResponse{{ID: "a", Response: response("432")}, {ID: "b", Response: response("3")}}
		_, err := scoreGiven(ps, rs)
		if err == nil || !strings.Contains(err.Error(), `response 1: id "a" names problems 0 and 2`) {
			t.Errorf("error %v, want one naming problems 0 and 2", err)
		}
		// Answered by index, duplicates are fine.
		rs = []givenResponse{{Index: index(0), Response: response("432")}, {Index: index(1), Response: response("3")}, {Index: index(2), Response: response("431")}}
		s, err := scoreGiven(ps, rs)
		if err != nil || len(s) != 3 || !s[0].Correct[0] || s[2].Correct[0] {
			t.Errorf("by index: %+v, %v", s, err)
		}
		// A duplicate left unanswered says why.
		_, err = scoreGiven(ps, rs[:2])
		if err == nil || !strings.Contains(err.Error(), "problem 2 (id a) has no responses (problems 0 and 2 share its id") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("canonical answers", func(t *testing.T) {
		rs := []givenResponse{
			{ID: "k", Response: response("a knave,b knight")},
			{ID: "k", Response: response("a knave,b knight")},
			{ID: "k", Response: response("a knight,b knave")},
			{ID: "k", Response: response("a knight,b knave")},
			{ID: "k", Response: response("b knave, a knight")},
			{ID: "k", Response: "<answer>a knight,b knave</answer>"}, // malformed: no vote
		}
		s, err := scoreGiven([]task.Problem{kk}, rs)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"a knave,b knight", "a knave,b knight", "a knight,b knave", "a knight,b knave", "a knight,b knave", ""}
		if !slicesEqual(s[0].Answers, want) {
			t.Errorf("answers %q, want %q", s[0].Answers, want)
		}
		r, err := eval.Summarize(s, []int{6})
		if err != nil || r.MajAtK[6] != 1 {
			t.Errorf("maj@6 = %v, %v; want 1", r.MajAtK[6], err)
		}
	})
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestEvalCommand(t *testing.T) {
	dir := t.TempDir()
	kk := task.Problem{Task: "kk", ID: "k", Prompt: "kk a: b is a knave. b: a and b are knaves.", Answer: "a knight,b knave", CoT: "a+:b-ok"}
	add := task.Problem{Task: "add", ID: "a", Prompt: "add 1+2=?", Answer: "3", CoT: "1+2=3"}
	var pb bytes.Buffer
	if err := task.WriteJSONL(&pb, []task.Problem{kk, add}); err != nil {
		t.Fatal(err)
	}
	pf := filepath.Join(dir, "p.jsonl")
	os.WriteFile(pf, pb.Bytes(), 0o644)
	lines := []string{}
	for _, a := range []string{"a knave,b knight", "a knave,b knight", "a knight,b knave", "a knight,b knave", "b knave,a knight"} {
		js, _ := json.Marshal(givenResponse{ID: "k", Response: response(a)})
		lines = append(lines, string(js))
	}
	js, _ := json.Marshal(givenResponse{Index: index(1), Response: response("3")})
	lines = append(lines, string(js))
	rf := filepath.Join(dir, "r.jsonl")
	os.WriteFile(rf, []byte(strings.Join(lines, "\n")), 0o644)

	var out, errb bytes.Buffer
	if code := moerlMain([]string{"eval", "--problems", pf, "--responses", rf, "--json"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rep eval.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	// n = 1 for the add problem, so k = 1 only; kk's maj@1 is 3/5.
	if rep.Problems != 2 || rep.MajSubsets != eval.MajExact || rep.MajAtK[1] != (0.6+1)/2 {
		t.Errorf("report %+v", rep)
	}

	// The kk problem alone in a problem file with add unanswered.
	os.WriteFile(rf, []byte(strings.Join(lines[:5], "\n")), 0o644)
	out.Reset()
	errb.Reset()
	if code := moerlMain([]string{"eval", "--problems", pf, "--responses", rf}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "problem 1 (id a) has no responses") {
		t.Errorf("unanswered problem: exit %d, %q", code, errb.String())
	}

	for _, bad := range [][]string{{"--top-k", "-1"}, {"--top-p", "1.5"}, {"--top-p", "-0.1"}} {
		errb.Reset()
		args := append([]string{"eval", "--problems", pf, "--responses", rf}, bad...)
		if code := moerlMain(args, &out, &errb); code != 2 || !strings.Contains(errb.String(), bad[0]) {
			t.Errorf("%v: exit %d, %q", bad, code, errb.String())
		}
	}
}

// TestEvalFlagsDocumented checks that every flag's help says something and
// that the sampling flags say their allowed values.
func TestEvalFlagsDocumented(t *testing.T) {
	var out, errb bytes.Buffer
	moerlMain([]string{"eval", "--help"}, &out, &errb)
	help := errb.String() + out.String()
	for _, want := range []string{"-top-k", "k ≥ 0", "-top-p", "[0, 1]", "-temperature", "≥ 0", "-max-new", "tokens", "-seed", "-n ", "--ckpt"} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q:\n%s", want, help)
		}
	}
	// Each flag line "  -name type" is followed by its description, indented
	// by four spaces and a tab.
	flagLine := regexp.MustCompile(`(?m)^  -(\S+).*\n((?:    \t\S.*\n)?)`)
	matches := flagLine.FindAllStringSubmatch(help, -1)
	if len(matches) < 15 {
		t.Fatalf("found %d flags in the help:\n%s", len(matches), help)
	}
	for _, m := range matches {
		if strings.TrimSpace(m[2]) == "" {
			t.Errorf("flag -%s has no description", m[1])
		}
	}
}
