// Package reward turns a sampled response into a scalar reward for RL: a
// strict, rule-based check of the R1-Zero response format
//
//	<think>chain of thought</think><answer>answer</answer>
//
// followed by the task's verifier on the extracted answer. No partial credit
// is found by searching the text: the answer block is the whole answer.
package reward

import (
	"errors"
	"fmt"
	"strings"

	"github.com/moerl/moerl/rl/task"
)

// Result is the outcome of scoring one response.
type Result struct {
	// Reward is the scalar reward under the scheme used.
	Reward float64
	// Correct reports that the response is well formed and its answer
	// verifies.
	Correct bool
	// WellFormed reports that the response has the required format with a
	// non-empty answer.
	WellFormed bool
	// Answer is the extracted, trimmed answer; empty unless WellFormed.
	Answer string
	// Reason explains the outcome: "correct", "wrong answer: ...",
	// "malformed: ..." or "empty answer".
	Reason string
}

// Scheme says what reward each outcome earns.
type Scheme struct {
	// Name is the scheme's name for ParseScheme.
	Name string
	// Correct is the reward of a correct answer; Wrong that of a well-formed
	// response with a wrong answer; Malformed that of any other response.
	Correct, Wrong, Malformed float64
}

// The schemes ParseScheme knows.
var (
	// Default is TinyZero's: 1 for a correct answer, 0.1 for a well-formed
	// response with a wrong one, 0 otherwise.
	Default = Scheme{Name: "default", Correct: 1, Wrong: 0.1, Malformed: 0}
	// PM1 is DAPO's: +1 for a correct answer, -1 otherwise.
	PM1 = Scheme{Name: "pm1", Correct: 1, Wrong: -1, Malformed: -1}
)

var schemes = []Scheme{Default, PM1}

// SchemeNames returns the names ParseScheme accepts.
func SchemeNames() []string {
	names := make([]string, len(schemes))
	for i, s := range schemes {
		names[i] = s.Name
	}
	return names
}

// ParseScheme returns the scheme of the given name.
func ParseScheme(name string) (Scheme, error) {
	for _, s := range schemes {
		if s.Name == name {
			return s, nil
		}
	}
	return Scheme{}, fmt.Errorf("unknown reward scheme %q (allowed: %s)", name, strings.Join(SchemeNames(), ", "))
}

// String returns the scheme's name.
func (s Scheme) String() string { return s.Name }

// ErrEmptyAnswer is returned by ParseResponse for a well-formed response
// whose answer block is empty or blank. Such a response is scored as
// malformed and does not vote in maj@k: it commits to nothing.
var ErrEmptyAnswer = errors.New("empty answer")

// Special tokens' texts that a caller may leave at the end of a response.
var trailingTokens = []string{"<eos>", "<pad>"}

// ParseResponse splits a response into its chain of thought and its answer
// (trimmed of surrounding whitespace). The response must be exactly one
// think block immediately followed by exactly one answer block, with
// nothing before, between or after them, except that trailing "<eos>" and
// "<pad>" texts are stripped. The error says what is wrong.
func ParseResponse(response string) (think, answer string, err error) {
	r := response
	for trimmed := true; trimmed; {
		trimmed = false
		for _, tok := range trailingTokens {
			if s, ok := strings.CutSuffix(r, tok); ok {
				r, trimmed = s, true
			}
		}
	}
	if r == "" {
		return "", "", errors.New("empty response")
	}
	for _, tok := range trailingTokens {
		if strings.Contains(r, tok) {
			return "", "", fmt.Errorf("%s inside the response", tok)
		}
	}
	for _, tag := range []struct {
		open, close, block string
	}{{task.ThinkOpen, task.ThinkClose, "think"}, {task.AnswerOpen, task.AnswerClose, "answer"}} {
		opens, closes := strings.Count(r, tag.open), strings.Count(r, tag.close)
		switch {
		case opens > 1 || closes > 1:
			return "", "", fmt.Errorf("%d %s blocks", max(opens, closes), tag.block)
		case opens == 0:
			return "", "", fmt.Errorf("missing %s", tag.open)
		case closes == 0:
			return "", "", fmt.Errorf("missing %s", tag.close)
		}
	}
	thinkOpen := strings.Index(r, task.ThinkOpen)
	thinkClose := strings.Index(r, task.ThinkClose)
	answerOpen := strings.Index(r, task.AnswerOpen)
	answerClose := strings.Index(r, task.AnswerClose)
	switch {
	case thinkClose < thinkOpen:
		return "", "", fmt.Errorf("%s before %s", task.ThinkClose, task.ThinkOpen)
	case answerClose < answerOpen:
		return "", "", fmt.Errorf("%s before %s", task.AnswerClose, task.AnswerOpen)
	case answerOpen < thinkClose:
		return "", "", errors.New("answer block before or inside the think block")
	case thinkOpen > 0:
		return "", "", fmt.Errorf("text before %s", task.ThinkOpen)
	case answerOpen != thinkClose+len(task.ThinkClose):
		return "", "", fmt.Errorf("text between %s and %s", task.ThinkClose, task.AnswerOpen)
	case answerClose+len(task.AnswerClose) != len(r):
		return "", "", fmt.Errorf("text after %s", task.AnswerClose)
	}
	think = r[thinkOpen+len(task.ThinkOpen) : thinkClose]
	answer = strings.TrimSpace(r[answerOpen+len(task.AnswerOpen) : answerClose])
	if answer == "" {
		return think, "", ErrEmptyAnswer
	}
	return think, answer, nil
}

// ExtractAnswer returns the answer of a well-formed response, for maj@k
// voting; ok is false for a malformed response or an empty answer, which do
// not vote.
func ExtractAnswer(response string) (answer string, ok bool) {
	_, answer, err := ParseResponse(response)
	return answer, err == nil
}

// Score checks a response to problem p of task t and rewards it under
// scheme s.
func Score(t task.Task, p task.Problem, response string, s Scheme) Result {
	_, answer, err := ParseResponse(response)
	switch {
	case errors.Is(err, ErrEmptyAnswer):
		return Result{Reward: s.Malformed, Reason: err.Error()}
	case err != nil:
		return Result{Reward: s.Malformed, Reason: "malformed: " + err.Error()}
	case t == nil:
		return Result{Reward: s.Wrong, WellFormed: true, Answer: answer, Reason: "wrong answer: no task to verify with"}
	}
	ok, why := t.Verify(p, answer)
	if !ok {
		return Result{Reward: s.Wrong, WellFormed: true, Answer: answer, Reason: "wrong answer: " + why}
	}
	return Result{Reward: s.Correct, Correct: true, WellFormed: true, Answer: answer, Reason: "correct"}
}
