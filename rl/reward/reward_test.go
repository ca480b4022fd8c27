package reward

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/moerl/moerl/rl/task"
)

func mustTask(t testing.TB, name string) task.Task {
	t.Helper()
	tk, err := task.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestParseScheme(t *testing.T) {
	for _, tc := range []struct {
		name                      string
		correct, wrong, malformed float64
	}{{"default", 1, 0.1, 0}, {"pm1", 1, -1, -1}} {
		s, err := ParseScheme(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if s.Correct != tc.correct || s.Wrong != tc.wrong || s.Malformed != tc.malformed || s.String() != tc.name {
			t.Errorf("ParseScheme(%q) = %+v", tc.name, s)
		}
	}
	for _, bad := range []string{"", "Default", "tinyzero"} {
		_, err := ParseScheme(bad)
		if err == nil || !strings.Contains(err.Error(), "default, pm1") {
			t.Errorf("ParseScheme(%q) error = %v, want the allowed names", bad, err)
		}
	}
}

func resp(think, answer string) string {
	return "<think>" + think + "</think><answer>" + answer + "</answer>"
}

func TestScore(t *testing.T) {
	add := task.Problem{Task: "add", Prompt: "add 47+385=?"}
	cd := task.Problem{Task: "countdown", Prompt: "countdown 25 5 4 to 80"}
	cdZero := task.Problem{Task: "countdown", Prompt: "countdown 3 3 6 to 6"}
	cdFrac := task.Problem{Task: "countdown", Prompt: "countdown 7 2 4 to 14"}
	kk := task.Problem{Task: "kk", Prompt: "kk a: b and c are knaves. b: a or c is a knight. c: b is a knight."}
	garbage := strings.Repeat("<think>x</answer>9", 20000)

	const (
		correct = iota
		wrong
		malformed
	)
	tests := []struct {
		name     string
		p        task.Problem
		response string
		outcome  int
		reason   string // a substring of the reason
	}{
		{"correct", add, resp("7+5=12,4+8+1=13,0+3+1=4", "432"), correct, "correct"},
		{"empty think", add, resp("", "432"), correct, "correct"},
		{"answer spaces trimmed", add, resp("", "  432 \n"), correct, "correct"},
		{"trailing eos", add, resp("", "432") + "<eos>", correct, "correct"},
		{"trailing pads", add, resp("", "432") + "<eos><pad><pad>", correct, "correct"},
		{"newline in think", add, resp("a\nb", "432"), correct, "correct"},
		{"wrong", add, resp("", "431"), wrong, "wrong answer: got 431, want 432"},
		{"two alternatives", add, resp("", "3 or 4"), wrong, "wrong answer: "},
		{"answer with text", add, resp("", "the answer is 432"), wrong, "wrong answer"},
		{"exponent", add, resp("", "1e3"), wrong, "wrong answer"},
		{"huge number", add, resp("", strings.Repeat("9", 100000)), wrong, "wrong answer"},
		{"empty answer", add, resp("x", ""), malformed, "empty answer"},
		{"blank answer", add, resp("x", "  "), malformed, "empty answer"},
		{"empty response", add, "", malformed, "malformed: empty response"},
		{"only eos", add, "<eos>", malformed, "malformed: empty response"},
		{"two answer blocks", add, resp("", "432") + "<answer>432</answer>", malformed, "malformed: 2 answer blocks"},
		{"two closes", add, resp("", "432</answer>"), malformed, "malformed: 2 answer blocks"},
		{"two think blocks", add, "<think>a</think>" + resp("b", "432"), malformed, "malformed: 2 think blocks"},
		{"repeated think tag", add, "<think><think>a</think><answer>432</answer>", malformed, "malformed: 2 think blocks"},
		{"missing think", add, "<answer>432</answer>", malformed, "malformed: missing <think>"},
		{"unclosed think", add, "<think>a<answer>432</answer>", malformed, "malformed: missing </think>"},
		{"missing answer", add, "<think>432</think>", malformed, "malformed: missing <answer>"},
		{"unclosed answer", add, "<think>a</think><answer>432", malformed, "malformed: missing </answer>"},
		{"answer before think", add, "<answer>432</answer><think>a</think>", malformed, "malformed: answer block before or inside"},
		{"answer inside think", add, "<think>a<answer>432</answer></think>", malformed, "malformed: answer block before or inside"},
		{"nested crosswise", add, "<think>a<answer>432</think></answer>", malformed, "malformed: answer block before or inside"},
		{"closing before opening", add, "</think><think><answer>432</answer>", malformed, "malformed: </think> before <think>"},
		{"answer tags reversed", add, "<think>a</think></answer>432<answer>", malformed, "malformed: </answer> before <answer>"},
		{"text before think", add, "sure: " + resp("", "432"), malformed, "malformed: text before <think>"},
		{"space before think", add, " " + resp("", "432"), malformed, "malformed: text before <think>"},
		{"space between blocks", add, "<think>a</think> <answer>432</answer>", malformed, "malformed: text between </think> and <answer>"},
		{"newline between blocks", add, "<think>a</think>\n<answer>432</answer>", malformed, "malformed: text between"},
		{"text after answer", add, resp("", "432") + " done", malformed, "malformed: text after </answer>"},
		{"newline after answer", add, resp("", "432") + "\n", malformed, "malformed: text after </answer>"},
		{"text after eos", add, resp("", "432") + "<eos>x", malformed, "malformed: <eos> inside"},
		{"eos inside think", add, resp("a<eos>b", "432"), malformed, "malformed: <eos> inside"},
		{"pad inside answer", add, resp("", "43<pad>2"), malformed, "malformed: <pad> inside"},
		{"uppercase tags", add, "<THINK>a</THINK><ANSWER>432</ANSWER>", malformed, "malformed: missing <think>"},
		{"long garbage", add, garbage, malformed, "malformed: "},

		{"cd correct", cd, resp("25-5=20,20*4=80", "(25-5)*4"), correct, "correct"},
		{"cd spaces", cd, resp("", " ( 25 - 5 ) * 4 "), correct, "correct"},
		{"cd reuses a number", cd, resp("", "(25-5)*4*4"), wrong, "wrong answer: number 4 used 2 times, given 1"},
		{"cd omits a number", cd, resp("", "25*4"), wrong, "wrong answer: number 5 not used"},
		{"cd number not given", cd, resp("", "(25-5)*4+0"), wrong, "wrong answer: number 0 is not given"},
		{"cd unary minus", cd, resp("", "-5+25*4"), wrong, "wrong answer: unary '-'"},
		{"cd equation", cd, resp("", "(25-5)*4=80"), wrong, "wrong answer: invalid character '='"},
		{"cd only target", cd, resp("", "80"), wrong, "wrong answer: number 80 is not given"},
		{"cd exponent", cd, resp("", "1e3"), wrong, "wrong answer: invalid character 'e'"},
		{"cd huge", cd, resp("", strings.Repeat("9", 50)+"*25-5*4"), wrong, "wrong answer: "},
		{"cd long", cd, resp("", strings.Repeat("25*", 100000)+"1"), wrong, "too long"},
		{"cd division by zero", cdZero, resp("", "6/(3-3)"), wrong, "wrong answer: division by zero"},
		{"cd fraction on the way", cdFrac, resp("", "7/2*4"), correct, "correct"},
		{"cd fractional value", cdFrac, resp("", "7/4*2"), wrong, "wrong answer: got 7/2, want 14"},

		{"kk correct", kk, resp("a+:b-c-x;a-:b+:c+ok", "a knave,b knight,c knight"), correct, "correct"},
		{"kk any order", kk, resp("", "b knight, c knight, a knave"), correct, "correct"},
		{"kk wrong", kk, resp("", "a knave,b knight,c knave"), wrong, "wrong answer: got c knave, want c knight"},
		{"kk incomplete", kk, resp("", "a knave"), wrong, "wrong answer: person b missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tk := mustTask(t, tc.p.Task)
			for _, s := range []Scheme{Default, PM1} {
				r := Score(tk, tc.p, tc.response, s)
				want := []float64{s.Correct, s.Wrong, s.Malformed}[tc.outcome]
				if r.Reward != want || r.Correct != (tc.outcome == correct) || r.WellFormed != (tc.outcome != malformed) ||
					!strings.Contains(r.Reason, tc.reason) {
					t.Errorf("Score(%s) = %+v; want reward %v, reason containing %q", s, clipResult(r), want, tc.reason)
				}
				if !r.WellFormed && r.Answer != "" {
					t.Errorf("malformed response has answer %q", r.Answer)
				}
				if len(r.Reason) > 200 {
					t.Errorf("reason of %d bytes", len(r.Reason))
				}
			}
		})
	}
}

func clipResult(r Result) Result {
	if len(r.Answer) > 40 {
		r.Answer = r.Answer[:40] + "..."
	}
	return r
}

func TestScoreNilTask(t *testing.T) {
	r := Score(nil, task.Problem{}, resp("", "1"), Default)
	if r.Correct || r.Reward != Default.Wrong {
		t.Errorf("Score(nil task) = %+v", r)
	}
}

func TestScoreOtherTasksProblem(t *testing.T) {
	p := task.Problem{Task: "mul", Prompt: "mul 2*3=?"}
	r := Score(mustTask(t, "add"), p, resp("", "6"), PM1)
	if r.Correct || r.Reward != -1 || !strings.Contains(r.Reason, "task") {
		t.Errorf("Score with the wrong task = %+v", r)
	}
}

// TestScoreCanonical checks that every task's canonical response scores as
// correct under both schemes, and that corrupting it in ways a model might
// is never rewarded as correct.
func TestScoreCanonical(t *testing.T) {
	for _, name := range task.Names() {
		tk := mustTask(t, name)
		tr, ho := tk.Difficulties()
		for _, p := range task.GenerateSet(tk, 5, 400, append(tr, ho...)) {
			if r := Score(tk, p, p.Response(), Default); !r.Correct || r.Reward != 1 || r.Answer != p.Answer {
				t.Fatalf("%s %q: canonical response scored %+v", name, p.Prompt, r)
			}
			if r := Score(tk, p, p.Response()+"<eos>", PM1); !r.Correct || r.Reward != 1 {
				t.Fatalf("%s %q: canonical response with <eos> scored %+v", name, p.Prompt, r)
			}
			for _, bad := range []string{
				p.Response() + p.Response(),
				"<think>" + p.CoT + "</think><answer>" + p.Answer + " or " + p.Answer + "</answer>",
				"<think>" + p.CoT + "</think><answer>" + p.Answer + p.Answer + "</answer>",
				"<think>" + p.CoT + "<answer>" + p.Answer + "</answer>",
				p.CoT + p.Response(),
			} {
				if r := Score(tk, p, bad, Default); r.Correct {
					t.Fatalf("%s %q: %q scored correct", name, p.Prompt, bad)
				}
			}
		}
	}
}

func TestExtractAnswer(t *testing.T) {
	for _, tc := range []struct {
		response, answer string
		ok               bool
	}{
		{resp("x", " 42 "), "42", true},
		{resp("x", "3 or 4"), "3 or 4", true},
		{resp("x", ""), "", false},
		{resp("x", "42") + "x", "", false},
		{"42", "", false},
	} {
		answer, ok := ExtractAnswer(tc.response)
		if answer != tc.answer || ok != tc.ok {
			t.Errorf("ExtractAnswer(%q) = %q, %v; want %q, %v", tc.response, answer, ok, tc.answer, tc.ok)
		}
	}
	think, answer, err := ParseResponse(resp("a+:b-ok", "a knight"))
	if think != "a+:b-ok" || answer != "a knight" || err != nil {
		t.Errorf("ParseResponse = %q, %q, %v", think, answer, err)
	}
}

func FuzzScore(f *testing.F) {
	seeds := []string{
		resp("7+5=12", "432"), resp("", ""), resp("x", "3 or 4"), "<think></think><answer>(25-5)*4</answer><eos>",
		"<think><answer></answer></think>", "</answer><answer></think><think>", "", "<eos><pad>",
		resp("a", "a knave,b knight"), resp("", "-5+25*4"), resp("", "((((((1"),
	}
	for i, s := range seeds {
		f.Add(uint8(i), uint64(i), s)
	}
	names := task.Names()
	f.Fuzz(func(t *testing.T, which uint8, seed uint64, response string) {
		tk := mustTask(t, names[int(which)%len(names)])
		p := tk.Generate(rand.New(rand.NewPCG(seed, 0)), int(which>>2)%6)
		for _, s := range []Scheme{Default, PM1} {
			r := Score(tk, p, response, s)
			if r.Correct && !r.WellFormed {
				t.Fatalf("correct but not well formed: %+v", r)
			}
			switch {
			case r.Correct && r.Reward != s.Correct,
				!r.Correct && r.WellFormed && r.Reward != s.Wrong,
				!r.WellFormed && r.Reward != s.Malformed:
				t.Fatalf("reward %v does not match %+v under %s", r.Reward, r, s)
			}
			if r.Reason == "" {
				t.Fatal("empty reason")
			}
			answer, ok := ExtractAnswer(response)
			if ok != r.WellFormed || answer != r.Answer {
				t.Fatalf("ExtractAnswer = %q, %v but Score = %+v", answer, ok, r)
			}
			if r.WellFormed && (answer != strings.TrimSpace(answer) || answer == "") {
				t.Fatalf("answer %q not trimmed or empty", answer)
			}
		}
	})
}
