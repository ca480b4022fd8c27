// Package task holds moerl's synthetic reasoning tasks: problem generators
// with a difficulty knob, the canonical chain of thought (CoT) used to
// pretrain the base model, and strict verifiers of an extracted answer,
// which the RL rewards and the pass@k evaluation rely on.
//
// Every task writes prompts, CoTs and answers in the tokenizer's alphabet
// (see Alphabet), and keeps a problem plus its whole response short enough
// for the model's small context. A response has the R1-Zero form
//
//	<think>CoT</think><answer>answer</answer>
//
// where the four tags are special tokens of the tokenizer.
//
// The tasks (lengths count one token per character and per tag, for a
// problem plus its canonical response):
//
//	add        difficulty = digits (train 2-3, held out 4-5), <= 45 tokens at 3
//	           prompt "add 47+385=?"  cot "7+5=12,4+8+1=13,0+3+1=4"  answer "432"
//	mul        difficulty = digits of the multiplicand, times 2-9 or 10-99
//	           (train 2-3, held out 4-5), <= 120 tokens at 3
//	           prompt "mul 347*86=?"
//	           cot "7*6=42,4*6+4=28,3*6+2=20:2082;7*8=56,4*8+5=37,3*8+3=27:27760;
//	                2+0=2,8+6=14,0+7+1=8,2+7=9,0+2=2"  answer "29842"
//	countdown  difficulty = how many numbers (train 3, held out 4), <= 95 tokens at 3
//	           prompt "countdown 25 5 4 to 80"
//	           cot "25+5=30,30*4=120;25-5=20,20*4=80"  answer "(25-5)*4"
//	kk         difficulty = how many people (train 2-3, held out 4-5), <= 127 tokens at 3
//	           prompt "kk a: b and c are knaves. b: a or c is a knight. c: b is a knight."
//	           cot "a+:b-c-x;a-:b+:c+ok"  answer "a knave,b knight,c knight"
//
// The comments on each task's type give the exact formats and rules. Tasks
// are stateless and safe for concurrent use.
package task

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/moerl/moerl/moe/tokenizer"
)

// Alphabet is every character a prompt, CoT or answer may contain: the
// tokenizer's default alphabet, which is defined there (the lower package)
// so that the two cannot drift apart. The tokenizer rejects anything else.
const Alphabet = tokenizer.DefaultAlphabet

// alphabetSet[c] reports whether byte c is in Alphabet, which is ASCII
// (TestCheckAlphabet checks it), so a byte test suffices.
var alphabetSet = func() (set [256]bool) {
	for i := 0; i < len(Alphabet); i++ {
		set[Alphabet[i]] = true
	}
	return set
}()

// Response tags of the R1-Zero template. The tokenizer maps each to one
// special token; in strings they appear literally.
const (
	ThinkOpen   = "<think>"
	ThinkClose  = "</think>"
	AnswerOpen  = "<answer>"
	AnswerClose = "</answer>"
)

// Problem is one generated problem with its canonical solution.
type Problem struct {
	// Task is the name of the task that generated the problem and verifies
	// answers to it.
	Task string `json:"task"`
	// ID is the task name and a hash of the prompt, so equal problems share
	// an ID (which lets callers find duplicates and train/test overlap).
	ID string `json:"id"`
	// Difficulty is the value of the task's difficulty knob.
	Difficulty int `json:"difficulty"`
	// Bin labels the difficulty in reports, such as "digits3".
	Bin    string `json:"bin"`
	Prompt string `json:"prompt"`
	// CoT is the canonical chain of thought, without the think tags.
	CoT string `json:"cot"`
	// Answer is the canonical answer, without the answer tags.
	Answer string `json:"answer"`
	// Meta holds optional extra facts for analysis; verifiers never read it,
	// so a problem read back from JSON (where numbers become float64)
	// verifies the same.
	Meta map[string]any `json:"meta,omitempty"`
}

// Response is the canonical response: the CoT and the answer in the
// R1-Zero template.
func (p Problem) Response() string {
	return ThinkOpen + p.CoT + ThinkClose + AnswerOpen + p.Answer + AnswerClose
}

// Task generates and verifies problems of one kind.
type Task interface {
	// Name is the task's registry name.
	Name() string
	// Generate draws a problem of the given difficulty. The result depends
	// only on the rng's state. A difficulty outside the task's supported
	// range is clamped into it (see CheckDifficulty), and the problem
	// records the difficulty actually used.
	Generate(rng *rand.Rand, difficulty int) Problem
	// Verify reports whether answer, the text inside the answer block as
	// already extracted and trimmed, solves p, and a short reason. It
	// derives the truth from p.Prompt alone and is strict: no substring
	// search, no lenient number formats.
	Verify(p Problem, answer string) (correct bool, reason string)
	// Canonical returns the form in which answer, as Verify takes it, votes
	// in maj@k: answers that mean the same for p share it (kk: the same
	// assignment in any order; Countdown: every verified expression). It
	// keeps Verify's verdict, Verify(p, Canonical(p, a)) = Verify(p, a), so
	// two answers with the same canonical form are both correct or both
	// wrong. Text that does not parse is its own canonical form.
	Canonical(p Problem, answer string) string
	// Difficulties returns the difficulties used for training and the
	// harder held-out ones used to test generalization.
	Difficulties() (train []int, heldOut []int)
}

// RangedTask is implemented by tasks that know the difficulties they can
// generate; all of this package's tasks do.
type RangedTask interface {
	Task
	// DifficultyRange returns the smallest and largest supported difficulty.
	DifficultyRange() (lo, hi int)
}

// CheckDifficulty returns an error if t cannot generate problems of
// difficulty d (where Generate would clamp it).
func CheckDifficulty(t Task, d int) error {
	r, ok := t.(RangedTask)
	if !ok {
		return nil
	}
	lo, hi := r.DifficultyRange()
	if d < lo || d > hi {
		return fmt.Errorf("task %s: difficulty %d outside the supported range %d..%d", t.Name(), d, lo, hi)
	}
	return nil
}

var registry = map[string]Task{
	"add":       addTask{},
	"mul":       mulTask{},
	"countdown": countdownTask{},
	"kk":        kkTask{},
}

// Get returns the task registered under name.
func Get(name string) (Task, error) {
	t, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("unknown task %q (known: %s)", name, strings.Join(Names(), ", "))
	}
	return t, nil
}

// Names returns the registered task names, sorted.
func Names() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// setStream is the PCG stream of GenerateSet, fixed so that a seed alone
// determines a set.
const setStream = 0x7461736b73657473

// GenerateSet draws n problems from t with a PCG generator seeded by seed.
// Difficulties are used in turn (problem i has difficulties[i%len]), so the
// bins are balanced; an empty list means the task's training difficulties.
// Sets may contain duplicates, which share an ID.
func GenerateSet(t Task, seed uint64, n int, difficulties []int) []Problem {
	if n <= 0 {
		return nil
	}
	if len(difficulties) == 0 {
		difficulties, _ = t.Difficulties()
	}
	rng := rand.New(rand.NewPCG(seed, setStream))
	ps := make([]Problem, n)
	for i := range ps {
		ps[i] = t.Generate(rng, difficulties[i%len(difficulties)])
	}
	return ps
}

// CheckAlphabet returns an error naming the first character of s that is
// outside Alphabet.
func CheckAlphabet(s string) error {
	for i := 0; i < len(s); i++ {
		if !inAlphabet(s[i]) {
			return fmt.Errorf("character %q at byte %d is outside the alphabet", s[i], i)
		}
	}
	return nil
}

func inAlphabet(c byte) bool { return alphabetSet[c] }

// newProblem fills in the fields every task sets the same way.
func newProblem(task string, difficulty int, bin, prompt, cot, answer string) Problem {
	return Problem{
		Task:       task,
		ID:         problemID(task, prompt),
		Difficulty: difficulty,
		Bin:        bin,
		Prompt:     prompt,
		CoT:        cot,
		Answer:     answer,
	}
}

func problemID(task, prompt string) string {
	h := fnv.New64a()
	h.Write([]byte(prompt))
	return fmt.Sprintf("%s-%016x", task, h.Sum64())
}

func clamp(d, lo, hi int) int {
	return min(max(d, lo), hi)
}

// clip shortens s for use in a reason, so that garbage answers do not
// flood logs.
func clip(s string) string {
	const n = 24
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// wrongTask is the reason Verify gives for a problem of another task.
func wrongTask(p Problem, name string) string {
	return fmt.Sprintf("problem is for task %q, not %q", p.Task, name)
}
