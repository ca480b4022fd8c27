package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReportCommand: exit code 2 for a usage mistake, 1 for a bad RUN
// (named in the message), 0 and both files written for a good one, with
// flags before or after the folders.
func TestReportCommand(t *testing.T) {
	root := t.TempDir()
	run := filepath.Join(root, "study", "rl")
	if err := os.MkdirAll(run, 0o755); err != nil {
		t.Fatal(err)
	}
	log := `{"step":1,"reward_mean":0.1,"accuracy":0.1,"loss":0.2}` + "\n" + `{"step":2,"reward_mean":0.3,"accuracy":0.2,"loss":0.1}` + "\n"
	if err := os.WriteFile(filepath.Join(run, "metrics.jsonl"), []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		code int
		want string // in stderr
	}{
		{[]string{"report"}, 2, "no RUN folder given"},
		{[]string{"report", "--smooth", "-2", run}, 2, "--smooth -2"},
		{[]string{"report", "--smooth", "x", run}, 2, `invalid value "x" for flag -smooth`},
		{[]string{"report", "--bogus", run}, 2, "flag provided but not defined: -bogus"},
		{[]string{"report", filepath.Join(root, "nope")}, 1, filepath.Join(root, "nope") + ": no such folder"},
		{[]string{"report", filepath.Join(root, "empty")}, 1, filepath.Join(root, "empty") + ": no runs in it"},
		{[]string{"report", run, filepath.Join(root, "empty")}, 1, "empty: no runs in it"},
	}
	for _, c := range cases {
		code, _, stderr := moerl(t, c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("moerl %s: exit %d, stderr %q; want exit %d and %q", strings.Join(c.args, " "), code, stderr, c.code, c.want)
		}
	}

	out := filepath.Join(root, "out")
	code, stdout, stderr := moerl(t, "report", filepath.Join(root, "study"), "--smooth", "3", "--out", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, f := range []string{"report.html", "report.md"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("no %s: %v", f, err)
		}
	}
	if !strings.Contains(stdout, "rl") || !strings.Contains(stdout, "wrote "+filepath.Join(out, "report.html")) {
		t.Errorf("stdout %q", stdout)
	}
	// default: into the first RUN
	if code, _, stderr := moerl(t, "report", run); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(run, "report.md")); err != nil {
		t.Error(err)
	}
}
