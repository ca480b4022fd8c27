package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets a test run this binary as moerl itself: with
// MOERL_BE_MOERL=1 it is the command line, so tests can signal and kill a
// real process.
func TestMain(m *testing.M) {
	if os.Getenv("MOERL_BE_MOERL") == "1" {
		os.Exit(moerlMain(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// moerlProcess starts this test binary as moerl with args.
func moerlProcess(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "MOERL_BE_MOERL=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &out
}

// waitForLines waits until a metrics file has at least n lines.
func waitForLines(t *testing.T, path string, n int, cmd *exec.Cmd) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(path)
		if bytes.Count(data, []byte("\n")) >= n {
			return
		}
		if cmd.ProcessState != nil {
			t.Fatal("the process ended early")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never reached %d lines", path, n)
}

var tinyPretrain = []string{"pretrain", "--synthetic", "copy", "--docs", "300", "--d-model", "32", "--expert-hidden", "32",
	"--layers", "1", "--batch", "8", "--seq-len", "32", "--steps", "300", "--device", "cpu"}

// TestInterruptAndResume signals a real pretraining process: SIGINT (and,
// in a second run, SIGTERM) makes it write a checkpoint at the next step
// boundary and exit saying how to resume; the resumed run ends with the
// same checkpoint bytes as one never stopped. A SIGKILL between
// checkpoints loses only the steps since the last one.
func TestInterruptAndResume(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	whole := filepath.Join(dir, "whole")
	if code, _, stderr := moerl(t, append(tinyPretrain, "--out", whole)...); code != 0 {
		t.Fatal(stderr)
	}
	want, _ := os.ReadFile(filepath.Join(whole, "model.ck"))
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		out := filepath.Join(dir, sig.String())
		cmd, log := moerlProcess(t, append(tinyPretrain, "--out", out, "--save-every", "0")...)
		waitForLines(t, filepath.Join(out, "metrics.jsonl"), 5, cmd)
		cmd.Process.Signal(sig)
		err := cmd.Wait()
		code := cmd.ProcessState.ExitCode()
		if code != 130 || !strings.Contains(log.String(), "interrupted at step") || !strings.Contains(log.String(), "--resume") {
			t.Fatalf("%v: exit %d (%v), output:\n%s", sig, code, err, log)
		}
		rec, err := os.ReadFile(filepath.Join(out, "run.json"))
		if err != nil || !strings.Contains(string(rec), `"status": "interrupted"`) {
			t.Errorf("%v: run.json %s (%v)", sig, rec, err)
		}
		cmd, log = moerlProcess(t, append(tinyPretrain, "--out", out, "--save-every", "0", "--resume")...)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%v: resume: %v\n%s", sig, err, log)
		}
		got, _ := os.ReadFile(filepath.Join(out, "model.ck"))
		if !bytes.Equal(got, want) {
			t.Errorf("%v: the resumed run's checkpoint differs from the uninterrupted run's", sig)
		}
	}

	// A kill between checkpoints: the run resumes from the last one.
	out := filepath.Join(dir, "killed")
	cmd, _ := moerlProcess(t, append(tinyPretrain, "--out", out, "--save-every", "4")...)
	waitForLines(t, filepath.Join(out, "metrics.jsonl"), 10, cmd)
	cmd.Process.Kill()
	cmd.Wait()
	cmd, log := moerlProcess(t, append(tinyPretrain, "--out", out, "--save-every", "4", "--resume")...)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("resume after a kill: %v\n%s", err, log)
	}
	if !strings.Contains(log.String(), "resuming at step") {
		t.Errorf("the killed run did not resume from a checkpoint:\n%s", log)
	}
	got, _ := os.ReadFile(filepath.Join(out, "model.ck"))
	if !bytes.Equal(got, want) {
		t.Error("the run resumed after a kill differs from the uninterrupted run")
	}
	m, _ := os.ReadFile(filepath.Join(out, "metrics.jsonl"))
	if n := bytes.Count(m, []byte("\n")); n != 300 {
		t.Errorf("metrics after the kill and resume: %d lines, want 300", n)
	}
}
