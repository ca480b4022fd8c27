package task

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"strconv"
	"strings"
)

// countdownTask is the Countdown numbers game: combine every given number
// exactly once with + - * / and parentheses to reach the target.
//
// Rules: the expression is evaluated in exact rationals and its value must
// be exactly the target. Unlike the game, intermediate results may be
// fractions, zero or negative (as in TinyZero and Reasoning Gym, see
// exprNode.eval), so (6/4)*8 reaches 12 as 8*6/4 does; a divisor must be
// nonzero. The generator's own solutions keep every step a positive
// integer. The answer is an expression such as "(25-5)*4",
// parsed strictly (see parseExpr): numbers used must be exactly the given
// multiset.
//
// Difficulty = how many numbers (3 for training, 4 held out). Numbers are
// 1–25, targets 1–100, and intermediate results of the canonical solution
// at most 1000. Prompt "countdown 25 5 4 to 80". The CoT is a search trace:
// zero to two failed attempts, each a full chain of steps whose final value
// misses the target, then the solution chain, chains separated by ";" and
// steps by ",": "25+5=30,30*4=120;25-5=20,20*4=80". The answer writes the
// solution chain as an expression with the fewest parentheses. At 3 numbers
// a problem plus its response is at most 95 tokens (132 at 4).
type countdownTask struct{}

const (
	cdMaxNumber = 25
	cdMaxTarget = 100
	cdMaxValue  = 1000
	cdMaxFails  = 2
	// cdMaxChainTries bounds the redraws of a failed attempt that hit the
	// target by chance.
	cdMaxChainTries = 20
	cdPromptPrefix  = "countdown "
)

func (countdownTask) Name() string                               { return "countdown" }
func (countdownTask) Difficulties() (train []int, heldOut []int) { return []int{3}, []int{4} }

// DifficultyRange stops at 5 numbers, whose traces still fit 256 tokens.
func (countdownTask) DifficultyRange() (lo, hi int) { return 2, 5 }

// cdStep is one step "a op b=r" of a chain.
type cdStep struct {
	a, b, r int
	op      byte
}

func (s cdStep) String() string { return fmt.Sprintf("%d%c%d=%d", s.a, s.op, s.b, s.r) }

func (t countdownTask) Generate(rng *rand.Rand, difficulty int) Problem {
	lo, hi := t.DifficultyRange()
	n := clamp(difficulty, lo, hi)
	nums := make([]int, n)
	var solution []cdStep
	var tree *exprNode
	for {
		for i := range nums {
			nums[i] = 1 + rng.IntN(cdMaxNumber)
		}
		var ok bool
		solution, tree, ok = randomChain(rng, nums)
		if ok && solution[len(solution)-1].r <= cdMaxTarget {
			break
		}
	}
	target := solution[len(solution)-1].r

	var cot strings.Builder
	fails := rng.IntN(cdMaxFails + 1)
	for range fails {
		for range cdMaxChainTries {
			chain, _, ok := randomChain(rng, nums)
			if ok && chain[len(chain)-1].r != target {
				writeChain(&cot, chain)
				cot.WriteByte(';')
				break
			}
		}
	}
	writeChain(&cot, solution)

	var prompt strings.Builder
	prompt.WriteString(cdPromptPrefix)
	for _, v := range nums {
		prompt.WriteString(strconv.Itoa(v) + " ")
	}
	prompt.WriteString("to " + strconv.Itoa(target))
	return newProblem(t.Name(), n, fmt.Sprintf("nums%d", n), prompt.String(), cot.String(), tree.String())
}

// randomChain combines random pairs of the pool with random valid
// operations until one value is left. It fails if a value exceeds
// cdMaxValue. Steps keep values positive: subtraction only from a larger
// number, division only when exact.
func randomChain(rng *rand.Rand, nums []int) ([]cdStep, *exprNode, bool) {
	type item struct {
		v int
		n *exprNode
	}
	pool := make([]item, len(nums))
	for i, v := range nums {
		pool[i] = item{v, &exprNode{num: strconv.Itoa(v)}}
	}
	var steps []cdStep
	for len(pool) > 1 {
		i := rng.IntN(len(pool))
		j := rng.IntN(len(pool) - 1)
		if j >= i {
			j++
		}
		a, b := pool[i], pool[j]
		ops := []byte{'+', '*'}
		if a.v > b.v {
			ops = append(ops, '-')
		}
		if a.v%b.v == 0 {
			ops = append(ops, '/')
		}
		op := ops[rng.IntN(len(ops))]
		var r int
		switch op {
		case '+':
			r = a.v + b.v
		case '-':
			r = a.v - b.v
		case '*':
			r = a.v * b.v
		case '/':
			r = a.v / b.v
		}
		if r > cdMaxValue {
			return nil, nil, false
		}
		steps = append(steps, cdStep{a: a.v, b: b.v, r: r, op: op})
		next := pool[:0:0]
		for k, it := range pool {
			if k != i && k != j {
				next = append(next, it)
			}
		}
		pool = append(next, item{r, &exprNode{op: op, l: a.n, r: b.n}})
	}
	return steps, pool[0].n, true
}

func writeChain(b *strings.Builder, chain []cdStep) {
	for i, s := range chain {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s.String())
	}
}

func (t countdownTask) Verify(p Problem, answer string) (bool, string) {
	if p.Task != t.Name() {
		return false, wrongTask(p, t.Name())
	}
	nums, target, err := parseCountdownPrompt(p.Prompt)
	if err != nil {
		return false, "bad prompt: " + err.Error()
	}
	if answer == "" {
		return false, "empty answer"
	}
	e, err := parseExpr(answer)
	if err != nil {
		return false, err.Error()
	}
	if err := checkMultiset(e.numbers(nil), nums); err != nil {
		return false, err.Error()
	}
	v, err := e.eval()
	if err != nil {
		return false, err.Error()
	}
	if !v.IsInt() || v.Num().String() != target {
		return false, fmt.Sprintf("got %s, want %s", clip(v.RatString()), target)
	}
	return true, "correct"
}

// Canonical maps every verified expression to one answer, the problem's
// own (p.Answer, when it verifies; otherwise the expression's written form
// is kept, which verifies alike). A wrong expression that evaluates votes
// as its exact value, written as an expression ("7/2", "0-3"), so wrong
// expressions of one value vote together; a wrong expression whose value is
// the target (wrong numbers) thus votes as the bare target, which does not
// verify, apart from the correct class. An expression that does not
// evaluate (division by zero) votes as its written form, and text that does
// not parse as itself. Each form is checked to keep Verify's verdict; one
// that would not (a value form that happens to be a solution, as for
// "countdown 80 to 80") falls back to the answer's own text.
func (t countdownTask) Canonical(p Problem, answer string) string {
	ok, _ := t.Verify(p, answer)
	if ok {
		if good, _ := t.Verify(p, p.Answer); good {
			return p.Answer
		}
	}
	e, err := parseExpr(answer)
	if err != nil {
		return answer
	}
	c := e.String()
	if !ok {
		if v, err := e.eval(); err == nil {
			c = ratExpr(v)
		}
	}
	if same, _ := t.Verify(p, c); same != ok {
		return answer
	}
	return c
}

// ratExpr writes v as an expression of natural numbers that parseExpr reads
// back to v: "12", "7/2", "0-3", "0-7/2".
func ratExpr(v *big.Rat) string {
	var b strings.Builder
	if v.Sign() < 0 {
		b.WriteString("0-")
	}
	b.WriteString(new(big.Int).Abs(v.Num()).String())
	if !v.IsInt() {
		b.WriteString("/" + v.Denom().String())
	}
	return b.String()
}

// parseCountdownPrompt reads "countdown N1 N2 ... to T".
func parseCountdownPrompt(prompt string) (nums []string, target string, err error) {
	body, ok := strings.CutPrefix(prompt, cdPromptPrefix)
	if !ok {
		return nil, "", fmt.Errorf("prompt %q does not start with %q", clip(prompt), cdPromptPrefix)
	}
	fields := strings.Split(body, " ")
	if len(fields) < 3 || fields[len(fields)-2] != "to" {
		return nil, "", fmt.Errorf("prompt %q is not \"countdown N... to T\"", clip(prompt))
	}
	nums, target = fields[:len(fields)-2], fields[len(fields)-1]
	for _, s := range append([]string{target}, nums...) {
		if err := checkNaturalSyntax(s); err != nil {
			return nil, "", err
		}
		if len(s) > maxNumberLen {
			return nil, "", fmt.Errorf("number %s is too long", clip(s))
		}
	}
	return nums, target, nil
}

// checkMultiset reports how the numbers used differ from those given.
func checkMultiset(used, given []string) error {
	count := make(map[string]int, len(given))
	for _, s := range given {
		count[s]++
	}
	uses := make(map[string]int, len(used))
	for _, s := range used {
		uses[s]++
		if count[s] == 0 {
			return fmt.Errorf("number %s is not given", s)
		}
	}
	for _, s := range used {
		if uses[s] > count[s] {
			return fmt.Errorf("number %s used %d times, given %d", s, uses[s], count[s])
		}
	}
	for _, s := range given {
		if uses[s] < count[s] {
			return fmt.Errorf("number %s not used", s)
		}
	}
	return nil
}
