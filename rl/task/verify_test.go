package task

import (
	"strings"
	"testing"
)

func TestVerify(t *testing.T) {
	add := Problem{Task: "add", Prompt: "add 47+385=?"}
	mul := Problem{Task: "mul", Prompt: "mul 347*86=?"}
	cd := Problem{Task: "countdown", Prompt: "countdown 25 5 4 to 80"}
	cdZero := Problem{Task: "countdown", Prompt: "countdown 3 3 6 to 6"}
	cdFrac := Problem{Task: "countdown", Prompt: "countdown 7 2 4 to 14"}
	cd12 := Problem{Task: "countdown", Prompt: "countdown 8 6 4 to 12"}
	cdHalves := Problem{Task: "countdown", Prompt: "countdown 3 1 2 1 2 to 3"}
	cdDup := Problem{Task: "countdown", Prompt: "countdown 5 5 2 to 50"}
	cdBig := Problem{Task: "countdown", Prompt: "countdown 999999999999 999999999999 999999999999 to 1"}
	kk := Problem{Task: "kk", Prompt: "kk a: b and c are knaves. b: a or c is a knight. c: b is a knight."}
	kk2 := Problem{Task: "kk", Prompt: "kk a: b is a knight. b: a is a knight."}
	deep := strings.Repeat("(", 40) + "25" + strings.Repeat(")", 40) + "-5*4"

	tests := []struct {
		name   string
		p      Problem
		answer string
		ok     bool
		reason string // a substring of the reason
	}{
		{"add correct", add, "432", true, "correct"},
		{"add wrong", add, "431", false, "got 431, want 432"},
		{"add empty", add, "", false, "empty answer"},
		{"add leading zero", add, "0432", false, "leading zero"},
		{"add plus sign", add, "+432", false, "not a number"},
		{"add spaces", add, " 432", false, "not a number"},
		{"add inner space", add, "4 32", false, "not a number"},
		{"add decimal", add, "432.0", false, "not a number"},
		{"add exponent", add, "1e3", false, "not a number"},
		{"add alternatives", add, "3 or 4", false, "not a number"},
		{"add expression", add, "47+385", false, "not a number"},
		{"add unicode digits", add, "४३२", false, "not a number"},
		{"add huge", add, strings.Repeat("9", 5000), false, "too long"},
		{"add bad prompt", Problem{Task: "add", Prompt: "add 47-385=?"}, "432", false, "bad prompt"},
		{"add other task", Problem{Task: "mul", Prompt: "add 47+385=?"}, "432", false, "not \"add\""},
		{"mul correct", mul, "29842", true, "correct"},
		{"mul wrong", mul, "29841", false, "got 29841, want 29842"},
		{"mul negative", mul, "-29842", false, "not a number"},
		{"mul bad prompt", Problem{Task: "mul", Prompt: "mul 347*86"}, "29842", false, "bad prompt"},

		{"cd correct", cd, "(25-5)*4", true, "correct"},
		{"cd other order", cd, "4*(25-5)", true, "correct"},
		{"cd spaces", cd, "( 25 - 5 ) * 4", true, "correct"},
		{"cd redundant parens", cd, "((25-5))*(4)", true, "correct"},
		{"cd another solution", cd, "25*4-5*4", false, "number 4 used 2 times"},
		{"cd reuse", cd, "(25-5)*4*4", false, "number 4 used 2 times, given 1"},
		{"cd omit", cd, "(25-5)", false, "number 4 not used"},
		{"cd not given", cd, "(25-6)*4", false, "number 6 is not given"},
		{"cd concatenated", cd, "254-5", false, "number 254 is not given"},
		{"cd juxtaposed", cd, "25 5*4", false, "missing operator"},
		{"cd implicit product", cd, "(25-5)4", false, "missing operator"},
		{"cd unary minus", cd, "-5+25*4", false, "unary '-'"},
		{"cd double minus", cd, "25--5*4", false, "unary '-'"},
		{"cd unary plus", cd, "+25-5*4", false, "unary '+'"},
		{"cd equation", cd, "(25-5)*4=80", false, "invalid character '='"},
		{"cd exponent", cd, "1e3", false, "invalid character 'e'"},
		{"cd wrong value", cd, "25-5*4", false, "got 5, want 80"},
		{"cd leading zero", cd, "(25-05)*4", false, "leading zero"},
		{"cd unclosed", cd, "(25-5*4", false, "not closed"},
		{"cd stray close", cd, "25-5)*4", false, "unexpected ')'"},
		{"cd trailing op", cd, "(25-5)*4+", false, "unexpected end"},
		{"cd empty parens", cd, "()", false, "unexpected ')'"},
		{"cd blank", cd, "   ", false, "empty expression"},
		{"cd empty", cd, "", false, "empty answer"},
		{"cd alternatives", cd, "(25-5)*4 or 80", false, "invalid character 'o'"},
		{"cd huge number", cd, "99999999999999999999999", false, "too long"},
		{"cd deep", cd, deep, false, "nested deeper"},
		{"cd long garbage", cd, strings.Repeat("1+", 5000) + "1", false, "too long"},
		{"cd division by zero", cdZero, "6/(3-3)", false, "division by zero"},
		{"cd exact division", cdZero, "6/3*3", true, "correct"},
		// Exact rationals: the grouping of a division does not matter, so
		// both of these reach 12 with 8, 6 and 4 (the case that was
		// accepted in one order and rejected in the other).
		{"cd division last", cd12, "8*6/4", true, "correct"},
		{"cd fraction first", cd12, "(6/4)*8", true, "correct"},
		{"cd fraction in the middle", cd12, "6/4*8", true, "correct"},
		{"cd divided by a fraction", cd12, "8/(4/6)", true, "correct"},
		{"cd fractional result", cd12, "8/6*4", false, "got 16/3, want 12"},
		{"cd negative fraction", cd12, "4-8*6", false, "got -44, want 12"},
		{"cd fraction times", cdFrac, "7/2*4", true, "correct"},
		{"cd exact regrouped", cdFrac, "7*4/2", true, "correct"},
		{"cd fraction of fractions", cdFrac, "7/(2/4)", true, "correct"},
		{"cd zero divisor from fractions", cdHalves, "3/(1/2-1/2)", false, "division by zero"},
		{"cd halves", cdHalves, "1/2+1/2", false, "number 3 not used"},
		{"cd halves sum", cdHalves, "3*(1/2+1/2)", true, "correct"},
		{"cd duplicates given", cdDup, "5*5*2", true, "correct"},
		{"cd duplicate once", cdDup, "5*2", false, "number 5 not used"},
		{"cd big numbers", cdBig, "999999999999/999999999999*999999999999", false, "got 999999999999, want 1"},
		{"cd big product", cdBig, "999999999999*999999999999*999999999999", false, "got 9999999999970000"},
		{"cd bad prompt", Problem{Task: "countdown", Prompt: "countdown 25 5 4 80"}, "80", false, "bad prompt"},

		{"kk correct", kk, "a knave,b knight,c knight", true, "correct"},
		{"kk any order", kk, "c knight,a knave,b knight", true, "correct"},
		{"kk spaces after commas", kk, "a knave, b knight,  c knight", true, "correct"},
		{"kk space before comma", kk, "a knave ,b knight,c knight", false, "is not"},
		{"kk wrong", kk, "a knight,b knight,c knight", false, "got a knight, want a knave"},
		{"kk missing", kk, "a knave,b knight", false, "person c missing"},
		{"kk twice", kk, "a knave,b knight,c knight,c knight", false, "person c named twice"},
		{"kk unknown person", kk, "a knave,b knight,d knight", false, "unknown person"},
		{"kk period", kk, "a knave,b knight,c knight.", false, "is not"},
		{"kk semicolons", kk, "a knave;b knight;c knight", false, "is not"},
		{"kk double space", kk, "a  knave,b knight,c knight", false, "is not"},
		{"kk sentence", kk, "a is a knave,b knight,c knight", false, "is not"},
		{"kk plural", kk, "a knaves,b knight,c knight", false, "is not"},
		{"kk alternatives", kk, "a knave or knight,b knight,c knight", false, "is not"},
		{"kk empty", kk, "", false, "empty answer"},
		{"kk two solutions", kk2, "a knight,b knight", false, "2 solutions"},
		{"kk bad statement", Problem{Task: "kk", Prompt: "kk a: b is great. b: a is a knight."}, "a knight,b knight", false, "bad prompt"},
		{"kk self statement", Problem{Task: "kk", Prompt: "kk a: a is a knave. b: a is a knight."}, "a knight,b knight", false, "bad prompt"},
		{"kk wrong speaker", Problem{Task: "kk", Prompt: "kk b: a is a knave. a: b is a knight."}, "a knight,b knave", false, "bad prompt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tk, err := Get(tc.p.Task)
			if err != nil {
				t.Fatal(err)
			}
			if tc.name == "add other task" {
				tk = addTask{}
			}
			ok, reason := tk.Verify(tc.p, tc.answer)
			if ok != tc.ok || !strings.Contains(reason, tc.reason) {
				t.Errorf("Verify(%q, %q) = %v, %q; want %v, reason containing %q", tc.p.Prompt, clip(tc.answer), ok, reason, tc.ok, tc.reason)
			}
			if len(reason) > 200 {
				t.Errorf("reason of %d bytes", len(reason))
			}
		})
	}
}

// TestKKPromptRoundTrip checks that every statement form the generator can
// write parses back to the same statement.
func TestKKPromptRoundTrip(t *testing.T) {
	for n := 2; n <= kkMaxPeople; n++ {
		for speaker := range n {
			for kind := range kkKinds {
				for _, s := range kkCandidates(speaker, n, kind) {
					got, err := parseKKStatement(strings.TrimSuffix(s.String(), "."), speaker, n)
					if err != nil || got != s {
						t.Fatalf("statement %q parsed as %+v, %v; want %+v", s, got, err, s)
					}
				}
			}
		}
	}
}

func TestExprString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"(25-5)*4", "(25-5)*4"},
		{"25-(5-4)", "25-(5-4)"},
		{"(25-5)-4", "25-5-4"},
		{"25+(5-4)", "25+5-4"},
		{"25/(5/4)", "25/(5/4)"},
		{"(25*5)/4", "25*5/4"},
		{"25*(5/4)", "25*(5/4)"},
		{"0*(1/2)", "0*(1/2)"},
		{"25*(5+4)", "25*(5+4)"},
		{"((((1))))", "1"},
	} {
		e, err := parseExpr(tc.in)
		if err != nil {
			t.Fatalf("parseExpr(%q): %v", tc.in, err)
		}
		if got := e.String(); got != tc.want {
			t.Errorf("parseExpr(%q).String() = %q, want %q", tc.in, got, tc.want)
		}
	}
}
