package task

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

func TestCanonical(t *testing.T) {
	add := Problem{Task: "add", Prompt: "add 47+385=?"}
	kk := Problem{Task: "kk", Prompt: "kk a: b is a knave. b: a and b are knaves.", Answer: "a knight,b knave"}
	cd := Problem{Task: "countdown", Prompt: "countdown 25 5 4 to 80", Answer: "(25-5)*4"}
	cdBare := Problem{Task: "countdown", Prompt: "countdown 25 5 4 to 80"} // no stored answer
	cd12 := Problem{Task: "countdown", Prompt: "countdown 8 6 4 to 12", Answer: "8*6/4"}
	cdOne := Problem{Task: "countdown", Prompt: "countdown 80 to 80", Answer: "80"}
	tests := []struct {
		name      string
		p         Problem
		answer    string
		canonical string
	}{
		{"add keeps the text", add, "432", "432"},
		{"add leading zero stays apart", add, "0432", "0432"},
		{"add space stays apart", add, " 432", " 432"},
		{"kk in order", kk, "a knight,b knave", "a knight,b knave"},
		{"kk other order", kk, "b knave,a knight", "a knight,b knave"},
		{"kk spaces", kk, "b knave,  a knight", "a knight,b knave"},
		{"kk wrong assignment", kk, "b knight,a knight", "a knight,b knight"},
		{"kk unparseable", kk, "a knight and b knave", "a knight and b knave"},
		{"kk wrong task", Problem{Task: "add", Prompt: kk.Prompt}, "b knave,a knight", "b knave,a knight"},
		{"cd the stored answer", cd, "(25-5)*4", "(25-5)*4"},
		{"cd another correct", cd, "4*(25-5)", "(25-5)*4"},
		{"cd spaced correct", cd, " 4 * ( 25 - 5 ) ", "(25-5)*4"},
		{"cd correct without a stored answer", cdBare, "4*(25-5)", "4*(25-5)"},
		{"cd fractions correct", cd12, "(6/4)*8", "8*6/4"},
		{"cd wrong value", cd, "25-5*4", "5"},
		{"cd wrong value, same value", cd, "25-4*5", "5"},
		{"cd wrong fraction", cd12, "8/6*4", "16/3"},
		{"cd wrong negative", cd12, "4-8*6", "0-44"},
		{"cd negative fraction", cd12, "4-8/6", "8/3"},
		{"cd negative fraction", cd12, "6/4-8", "0-13/2"},
		{"cd target with wrong numbers", cd, "25*4-20", "80"},
		{"cd bare target", cd, "80", "80"},
		{"cd division by zero", Problem{Task: "countdown", Prompt: "countdown 3 3 6 to 6", Answer: "6/3*3"}, "6/((3-3))", "6/(3-3)"},
		{"cd unparseable", cd, "(25-5)*4=80", "(25-5)*4=80"},
		{"cd solution-valued wrong answer", cdOne, "(80)*(80)/80", "(80)*(80)/80"},
		{"cd its solution", cdOne, "(80)", "80"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tk, err := Get(tc.p.Task)
			if err != nil {
				t.Fatal(err)
			}
			if tc.name == "kk wrong task" {
				tk = kkTask{}
			}
			if got := tk.Canonical(tc.p, tc.answer); got != tc.canonical {
				t.Errorf("Canonical(%q, %q) = %q, want %q", tc.p.Prompt, tc.answer, got, tc.canonical)
			}
			checkCanonical(t, tk, tc.p, tc.answer)
		})
	}
}

// checkCanonical checks the contract of Task.Canonical for one answer: the
// canonical form verifies as the answer does, and is its own canonical form.
func checkCanonical(t *testing.T, tk Task, p Problem, answer string) string {
	t.Helper()
	c := tk.Canonical(p, answer)
	ok, _ := tk.Verify(p, answer)
	if okC, why := tk.Verify(p, c); okC != ok {
		t.Fatalf("%s %q: answer %q verifies %v, its canonical form %q %v (%s)", tk.Name(), p.Prompt, answer, ok, c, okC, why)
	}
	if again := tk.Canonical(p, c); again != c {
		t.Fatalf("%s %q: canonical form of %q is %q, whose canonical form is %q", tk.Name(), p.Prompt, answer, c, again)
	}
	return c
}

// TestCanonicalInvariant throws many answers, right and wrong, at generated
// problems of every task and checks that no canonical form is shared by a
// correct and a wrong answer, and that the answers the verifier accepts for
// a kk or Countdown problem all share one.
func TestCanonicalInvariant(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, name := range Names() {
		tk, _ := Get(name)
		train, held := tk.Difficulties()
		for _, p := range GenerateSet(tk, 11, 40, append(train, held...)) {
			verdict := map[string]bool{} // canonical form → verdict
			var correctForms []string
			for _, a := range candidateAnswers(rng, p) {
				c := checkCanonical(t, tk, p, a)
				ok, _ := tk.Verify(p, a)
				if prev, seen := verdict[c]; seen && prev != ok {
					t.Fatalf("%s %q: canonical form %q is shared by a correct and a wrong answer (%q is %v)", name, p.Prompt, c, a, ok)
				}
				verdict[c] = ok
				if ok {
					correctForms = append(correctForms, c)
				}
			}
			if len(correctForms) < 2 {
				t.Fatalf("%s %q: only %d correct candidates", name, p.Prompt, len(correctForms))
			}
			if name == "kk" || name == "countdown" {
				for _, c := range correctForms {
					if c != correctForms[0] {
						t.Fatalf("%s %q: correct answers vote apart, as %q and %q", name, p.Prompt, correctForms[0], c)
					}
				}
			}
		}
	}
}

// candidateAnswers returns answers to p: the stored one, rewritings of it
// that stay correct, and near misses.
func candidateAnswers(rng *rand.Rand, p Problem) []string {
	out := []string{p.Answer, p.Answer, "", " ", "x", p.Answer + " ", "0" + p.Answer}
	switch p.Task {
	case "add", "mul":
		v, _ := strconv.Atoi(p.Answer)
		for d := -3; d <= 3; d++ {
			out = append(out, strconv.Itoa(v+d), "+"+strconv.Itoa(v+d))
		}
	case "kk":
		parts := strings.Split(p.Answer, ",")
		for range 30 {
			q := append([]string(nil), parts...)
			rng.Shuffle(len(q), func(i, j int) { q[i], q[j] = q[j], q[i] })
			if rng.IntN(3) == 0 { // flip one role: wrong
				i := rng.IntN(len(q))
				if strings.HasSuffix(q[i], "knight") {
					q[i] = strings.TrimSuffix(q[i], "knight") + "knave"
				} else {
					q[i] = strings.TrimSuffix(q[i], "knave") + "knight"
				}
			}
			sep := ","
			if rng.IntN(2) == 0 {
				sep = ", "
			}
			out = append(out, strings.Join(q, sep))
			if rng.IntN(4) == 0 {
				out = append(out, strings.Join(q[1:], sep)) // someone missing
			}
		}
	case "countdown":
		e, err := parseExpr(p.Answer)
		if err != nil {
			panic(err)
		}
		nums, target, _ := parseCountdownPrompt(p.Prompt)
		for range 60 {
			out = append(out, shuffleExpr(rng, e).String())
			// Random expressions over the given numbers (sometimes right by
			// chance), over all but one, or with the target as a number.
			q := append([]string(nil), nums...)
			rng.Shuffle(len(q), func(i, j int) { q[i], q[j] = q[j], q[i] })
			switch rng.IntN(4) {
			case 0:
				q = q[1:]
			case 1:
				q = append(q[1:], target)
			}
			out = append(out, randomExpr(rng, q).String())
		}
		out = append(out, target, "("+target+")", target+"*1", target+"/0")
	}
	return out
}

// shuffleExpr returns a copy of e with operands of + and * swapped at
// random and each subtree sometimes in redundant parentheses: an
// expression of the same value over the same numbers.
func shuffleExpr(rng *rand.Rand, e *exprNode) *exprNode {
	if e.op == 0 {
		return e
	}
	l, r := shuffleExpr(rng, e.l), shuffleExpr(rng, e.r)
	if (e.op == '+' || e.op == '*') && rng.IntN(2) == 0 {
		l, r = r, l
	}
	return &exprNode{op: e.op, l: l, r: r}
}

// randomExpr combines nums left to right in a random tree of random
// operators.
func randomExpr(rng *rand.Rand, nums []string) *exprNode {
	pool := make([]*exprNode, len(nums))
	for i, s := range nums {
		pool[i] = &exprNode{num: s}
	}
	for len(pool) > 1 {
		i := rng.IntN(len(pool) - 1)
		n := &exprNode{op: exprOperators[rng.IntN(len(exprOperators))], l: pool[i], r: pool[i+1]}
		pool = append(append(pool[:i:i], n), pool[i+2:]...)
	}
	return pool[0]
}
