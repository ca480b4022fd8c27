package rl

import (
	"testing"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/engine/cpu"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl/reward"
	"github.com/moerl/moerl/rl/task"
)

func TestCanonicalAnswer(t *testing.T) {
	kk, _ := task.Get("kk")
	p := task.Problem{Task: "kk", Prompt: "kk a: b is a knave. b: a and b are knaves.", Answer: "a knight,b knave"}
	tests := []struct {
		res  reward.Result
		want string
	}{
		{reward.Score(kk, p, "<think></think><answer>b knave, a knight</answer>", reward.Default), "a knight,b knave"},
		{reward.Score(kk, p, "<think></think><answer>b knight,a knight</answer>", reward.Default), "a knight,b knight"},
		{reward.Score(kk, p, "<think></think><answer>b knave,a knight</answer>tail", reward.Default), ""},
		// Truncated: the answer text is kept but the response does not vote.
		{reward.Result{Answer: "a knight,b knave"}, ""},
	}
	for _, tc := range tests {
		if got := CanonicalAnswer(kk, p, tc.res); got != tc.want {
			t.Errorf("CanonicalAnswer(%+v) = %q, want %q", tc.res, got, tc.want)
		}
	}
}

// TestSampleProblemsShape samples from an untrained model, with the top-k
// and top-p cuts on, and checks that every problem gets its n samples.
func TestSampleProblemsShape(t *testing.T) {
	tok := tokenizer.Default()
	cfg := moe.Config{Vocab: tok.VocabSize(), DModel: 16, Layers: 1, Heads: 2, Experts: 2, TopK: 1, ExpertHidden: 16,
		MaxSeq: 48, RopeTheta: 10000, NormEps: 1e-6, InitStd: 0.05}
	m, err := moe.New(cfg, cpu.New(), 1)
	if err != nil {
		t.Fatal(err)
	}
	add, _ := task.Get("add")
	problems := task.GenerateSet(add, 1, 3, []int{1})
	opts := EvalOptions{N: 4, Temperature: 0.6, TopK: 5, TopP: 0.95, MaxNew: 6, Batch: 8}
	got, err := SampleProblems(m, tok, problems, opts, engine.NewRNG(1, engine.StreamEval))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(problems) {
		t.Fatalf("%d results for %d problems", len(got), len(problems))
	}
	for i, s := range got {
		if s.ID != problems[i].ID || len(s.Answers) != 4 || len(s.Valid) != 4 || len(s.Correct) != 4 {
			t.Errorf("problem %d: %+v", i, s)
		}
	}
	if _, err := SampleProblems(m, tok, []task.Problem{{Task: "nope", ID: "x"}}, opts, engine.NewRNG(1, engine.StreamEval)); err == nil {
		t.Error("unknown task: no error")
	}
}
