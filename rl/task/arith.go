package task

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"strconv"
	"strings"
)

// addTask is multi-digit addition with a column-wise scratchpad, least
// significant column first.
//
// Difficulty d: one operand has exactly d digits, the other 1 to d.
// Prompt "add 47+385=?"; CoT "7+5=12,4+8+1=13,0+3+1=4" (one step per
// column; a missing digit is 0 and "+1" is the carry from the previous
// column); answer "432", which is the last step's sum followed by the units
// digits of the earlier steps in reverse. At d=3 a problem plus its
// response is at most 45 tokens (each tag one token; 69 at d=5).
type addTask struct{}

func (addTask) Name() string                               { return "add" }
func (addTask) Difficulties() (train []int, heldOut []int) { return []int{2, 3}, []int{4, 5} }

// DifficultyRange keeps held-out sizes far below the context length.
func (addTask) DifficultyRange() (lo, hi int) { return 1, 20 }

func (t addTask) Generate(rng *rand.Rand, difficulty int) Problem {
	lo, hi := t.DifficultyRange()
	d := clamp(difficulty, lo, hi)
	a := randomNatural(rng, d)
	b := randomNatural(rng, 1+rng.IntN(d))
	if rng.IntN(2) == 1 {
		a, b = b, a
	}
	var cot strings.Builder
	sum := addColumns(&cot, a, b)
	return newProblem(t.Name(), d, fmt.Sprintf("digits%d", d), "add "+a+"+"+b+"=?", cot.String(), sum)
}

func (t addTask) Verify(p Problem, answer string) (bool, string) {
	if p.Task != t.Name() {
		return false, wrongTask(p, t.Name())
	}
	a, b, err := parseBinaryPrompt(p.Prompt, "add ", '+')
	if err != nil {
		return false, "bad prompt: " + err.Error()
	}
	return checkNatural(answer, new(big.Int).Add(a, b))
}

// Canonical returns answer itself: Verify accepts only the canonical
// decimal, so every other text ("0432", " 432") is a wrong answer of its
// own and must not vote with the right one.
func (addTask) Canonical(_ Problem, answer string) string { return answer }

// mulTask is multiplication of a multi-digit number by a one- or two-digit
// number with a digit-by-digit scratchpad.
//
// Difficulty d: the multiplicand has exactly d digits; the multiplier is 2–9
// or 10–99 with equal chance. Prompt "mul 347*86=?". The CoT multiplies the
// multiplicand by each multiplier digit, least significant first, in steps
// "x*y+carry=product" ("7*6=42,4*6+4=28,3*6+2=20"). With a one-digit
// multiplier that is the whole CoT and the answer is assembled from it as in
// add. With two digits each partial product is written out after a colon
// (the tens one with its trailing zero), stages are separated by ";", and
// the partial products are summed in add's column format:
// "7*6=42,4*6+4=28,3*6+2=20:2082;7*8=56,4*8+5=37,3*8+3=27:27760;2+0=2,..."
// At d=3 a problem plus its response is at most 120 tokens (182 at d=5).
type mulTask struct{}

func (mulTask) Name() string                               { return "mul" }
func (mulTask) Difficulties() (train []int, heldOut []int) { return []int{2, 3}, []int{4, 5} }

// DifficultyRange stops where a 2-digit multiplier's scratchpad would pass
// 256 tokens.
func (mulTask) DifficultyRange() (lo, hi int) { return 1, 6 }

func (t mulTask) Generate(rng *rand.Rand, difficulty int) Problem {
	lo, hi := t.DifficultyRange()
	d := clamp(difficulty, lo, hi)
	a := randomNatural(rng, d)
	var b string
	if rng.IntN(2) == 0 {
		b = strconv.Itoa(2 + rng.IntN(8))
	} else {
		b = strconv.Itoa(10 + rng.IntN(90))
	}
	var cot strings.Builder
	var answer string
	if len(b) == 1 {
		answer = mulDigit(&cot, a, int(b[0]-'0'))
	} else {
		p0 := mulDigit(&cot, a, int(b[1]-'0'))
		cot.WriteString(":" + p0 + ";")
		p1 := mulDigit(&cot, a, int(b[0]-'0'))
		if p1 != "0" {
			p1 += "0"
		}
		cot.WriteString(":" + p1 + ";")
		answer = addColumns(&cot, p0, p1)
	}
	return newProblem(t.Name(), d, fmt.Sprintf("digits%d", d), "mul "+a+"*"+b+"=?", cot.String(), answer)
}

func (t mulTask) Verify(p Problem, answer string) (bool, string) {
	if p.Task != t.Name() {
		return false, wrongTask(p, t.Name())
	}
	a, b, err := parseBinaryPrompt(p.Prompt, "mul ", '*')
	if err != nil {
		return false, "bad prompt: " + err.Error()
	}
	return checkNatural(answer, new(big.Int).Mul(a, b))
}

// Canonical returns answer itself, as for add.
func (mulTask) Canonical(_ Problem, answer string) string { return answer }

// randomNatural returns a random n-digit decimal without leading zeros.
func randomNatural(rng *rand.Rand, n int) string {
	b := make([]byte, n)
	b[0] = byte('1' + rng.IntN(9))
	for i := 1; i < n; i++ {
		b[i] = byte('0' + rng.IntN(10))
	}
	return string(b)
}

// digitAt returns the i-th digit of a decimal counting from the least
// significant, or 0 past its length.
func digitAt(s string, i int) int {
	if i >= len(s) {
		return 0
	}
	return int(s[len(s)-1-i] - '0')
}

// assemble turns per-column results, least significant first, into the
// number they spell: the last result in full and the units of the others.
func assemble(results []int) string {
	var b []byte
	for i := len(results) - 1; i >= 0; i-- {
		if i == len(results)-1 {
			b = strconv.AppendInt(b, int64(results[i]), 10)
		} else {
			b = append(b, byte('0'+results[i]%10))
		}
	}
	s := strings.TrimLeft(string(b), "0")
	if s == "" {
		return "0"
	}
	return s
}

// addColumns writes the column steps of a+b to cot and returns the sum.
func addColumns(cot *strings.Builder, a, b string) string {
	n := max(len(a), len(b))
	results := make([]int, n)
	carry := 0
	for i := range n {
		x, y := digitAt(a, i), digitAt(b, i)
		s := x + y + carry
		if i > 0 {
			cot.WriteByte(',')
		}
		fmt.Fprintf(cot, "%d+%d", x, y)
		if carry > 0 {
			cot.WriteString("+1")
		}
		fmt.Fprintf(cot, "=%d", s)
		results[i] = s
		carry = s / 10
	}
	return assemble(results)
}

// mulDigit writes the steps of a*y to cot and returns the product.
func mulDigit(cot *strings.Builder, a string, y int) string {
	results := make([]int, len(a))
	carry := 0
	for i := range len(a) {
		x := digitAt(a, i)
		s := x*y + carry
		if i > 0 {
			cot.WriteByte(',')
		}
		fmt.Fprintf(cot, "%d*%d", x, y)
		if carry > 0 {
			fmt.Fprintf(cot, "+%d", carry)
		}
		fmt.Fprintf(cot, "=%d", s)
		results[i] = s
		carry = s / 10
	}
	return assemble(results)
}

// maxPromptDigits bounds the operands read from a prompt, so that a
// hand-made problem cannot make Verify do huge arithmetic.
const maxPromptDigits = 100

// parseBinaryPrompt reads the operands of a prompt "<prefix>A<op>B=?".
func parseBinaryPrompt(prompt, prefix string, op byte) (a, b *big.Int, err error) {
	body, ok := strings.CutPrefix(prompt, prefix)
	if !ok {
		return nil, nil, fmt.Errorf("prompt %q does not start with %q", clip(prompt), prefix)
	}
	body, ok = strings.CutSuffix(body, "=?")
	if !ok {
		return nil, nil, fmt.Errorf("prompt %q does not end with \"=?\"", clip(prompt))
	}
	left, right, ok := strings.Cut(body, string(op))
	if !ok {
		return nil, nil, fmt.Errorf("prompt %q has no %q", clip(prompt), op)
	}
	if a, err = parseNatural(left); err != nil {
		return nil, nil, err
	}
	if b, err = parseNatural(right); err != nil {
		return nil, nil, err
	}
	return a, b, nil
}

// parseNatural parses a canonical decimal: digits only, no sign, no
// leading zero.
func parseNatural(s string) (*big.Int, error) {
	if err := checkNaturalSyntax(s); err != nil {
		return nil, err
	}
	n, _ := new(big.Int).SetString(s, 10)
	return n, nil
}

func checkNaturalSyntax(s string) error {
	if s == "" {
		return fmt.Errorf("empty number")
	}
	if len(s) > maxPromptDigits {
		return fmt.Errorf("number of %d digits is too long", len(s))
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return fmt.Errorf("%q is not a number", clip(s))
		}
	}
	if len(s) > 1 && s[0] == '0' {
		return fmt.Errorf("%q has a leading zero", clip(s))
	}
	return nil
}

// checkNatural compares an answer with the true value; the answer must be
// written canonically.
func checkNatural(answer string, want *big.Int) (bool, string) {
	if answer == "" {
		return false, "empty answer"
	}
	if err := checkNaturalSyntax(answer); err != nil {
		return false, err.Error()
	}
	if w := want.String(); answer != w {
		return false, fmt.Sprintf("got %s, want %s", clip(answer), w)
	}
	return true, "correct"
}
