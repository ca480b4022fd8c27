package task

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// checkedPerDifficulty is how many problems each task generates per
// difficulty in the exhaustive tests.
const checkedPerDifficulty = 2000

func allDifficulties(t Task) []int {
	tr, ho := t.Difficulties()
	return append(slices.Clone(tr), ho...)
}

func TestRegistry(t *testing.T) {
	if got, want := Names(), []string{"add", "countdown", "kk", "mul"}; !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	for _, name := range Names() {
		tk, err := Get(name)
		if err != nil {
			t.Fatal(err)
		}
		if tk.Name() != name {
			t.Errorf("Get(%q).Name() = %q", name, tk.Name())
		}
		tr, ho := tk.Difficulties()
		if len(tr) == 0 || len(ho) == 0 || slices.Max(tr) >= slices.Min(ho) {
			t.Errorf("%s: held-out difficulties %v are not all harder than training %v", name, ho, tr)
		}
		for _, d := range append(tr, ho...) {
			if err := CheckDifficulty(tk, d); err != nil {
				t.Errorf("%s: own difficulty %d: %v", name, d, err)
			}
		}
	}
	_, err := Get("sudoku")
	if err == nil {
		t.Fatal("Get(sudoku) succeeded")
	}
	for _, name := range Names() {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not list %q", err, name)
		}
	}
}

func TestCheckDifficultyAndClamp(t *testing.T) {
	for _, name := range Names() {
		tk, _ := Get(name)
		lo, hi := tk.(RangedTask).DifficultyRange()
		for _, d := range []int{lo - 1, hi + 1, -100} {
			if CheckDifficulty(tk, d) == nil {
				t.Errorf("%s: CheckDifficulty(%d) = nil, range %d..%d", name, d, lo, hi)
			}
		}
		rng := rand.New(rand.NewPCG(1, 2))
		if p := tk.Generate(rng, hi+50); p.Difficulty != hi {
			t.Errorf("%s: Generate(%d).Difficulty = %d, want clamped %d", name, hi+50, p.Difficulty, hi)
		}
		if p := tk.Generate(rng, lo-50); p.Difficulty != lo {
			t.Errorf("%s: Generate(%d).Difficulty = %d, want clamped %d", name, lo-50, p.Difficulty, lo)
		}
	}
}

func TestGenerateSetDeterministic(t *testing.T) {
	for _, name := range Names() {
		tk, _ := Get(name)
		a := GenerateSet(tk, 42, 50, nil)
		b := GenerateSet(tk, 42, 50, nil)
		c := GenerateSet(tk, 43, 50, nil)
		if !slices.EqualFunc(a, b, problemsEqual) {
			t.Errorf("%s: same seed gave different sets", name)
		}
		if slices.EqualFunc(a, c, problemsEqual) {
			t.Errorf("%s: seeds 42 and 43 gave the same set", name)
		}
		train, _ := tk.Difficulties()
		for i, p := range a {
			if want := train[i%len(train)]; p.Difficulty != want {
				t.Fatalf("%s: problem %d has difficulty %d, want %d (round robin)", name, i, p.Difficulty, want)
			}
		}
	}
	if ps := GenerateSet(addTask{}, 1, 0, nil); ps != nil {
		t.Errorf("GenerateSet(n=0) = %v", ps)
	}
}

func problemsEqual(a, b Problem) bool {
	return a.Task == b.Task && a.ID == b.ID && a.Difficulty == b.Difficulty && a.Bin == b.Bin &&
		a.Prompt == b.Prompt && a.CoT == b.CoT && a.Answer == b.Answer
}

// TestCanonicalSolutions generates many problems of every task and
// difficulty and checks that each is well formed, uses only the alphabet,
// fits the context, verifies its own answer, and has a CoT whose every step
// is right (checked by a task-specific replay that does not share the
// generator's code).
func TestCanonicalSolutions(t *testing.T) {
	cotCheckers := map[string]func(Problem) error{
		"add": checkAddCoT, "mul": checkMulCoT, "countdown": checkCountdownCoT, "kk": checkKKCoT,
	}
	for _, name := range Names() {
		tk, _ := Get(name)
		lo, hi := tk.(RangedTask).DifficultyRange()
		for d := lo; d <= hi; d++ {
			n := checkedPerDifficulty
			if !slices.Contains(allDifficulties(tk), d) {
				n = 200
			}
			for i, p := range GenerateSet(tk, uint64(d), n, []int{d}) {
				where := fmt.Sprintf("%s d=%d problem %d %q", name, d, i, p.Prompt)
				if p.Task != name || p.Difficulty != d || p.Bin == "" || p.ID != problemID(name, p.Prompt) {
					t.Fatalf("%s: bad fields %+v", where, p)
				}
				for _, s := range []string{p.Prompt, p.CoT, p.Answer} {
					if err := CheckAlphabet(s); err != nil {
						t.Fatalf("%s: %v", where, err)
					}
					if s == "" {
						t.Fatalf("%s: empty field in %+v", where, p)
					}
				}
				if tokens := responseTokens(p); tokens > 256 {
					t.Fatalf("%s: %d tokens, more than 256", where, tokens)
				}
				if ok, why := tk.Verify(p, p.Answer); !ok {
					t.Fatalf("%s: canonical answer %q rejected: %s", where, p.Answer, why)
				}
				if err := cotCheckers[name](p); err != nil {
					t.Fatalf("%s: CoT %q: %v", where, p.CoT, err)
				}
			}
		}
	}
}

// responseTokens counts a problem and its canonical response in tokens:
// one per character, one per tag.
func responseTokens(p Problem) int { return len(p.Prompt) + len(p.CoT) + len(p.Answer) + 4 }

// trainBudget is the most tokens a problem of a training difficulty may
// take, prompt and response together.
var trainBudget = map[string]int{"add": 48, "mul": 120, "countdown": 100, "kk": 128}

// TestLengths logs the length table (go test -run Lengths -v) and holds the
// training difficulties to their budgets.
func TestLengths(t *testing.T) {
	t.Log("task       diff  max  mean  (tokens: prompt + CoT + answer + 4 tags)")
	for _, name := range Names() {
		tk, _ := Get(name)
		train, _ := tk.Difficulties()
		for _, d := range allDifficulties(tk) {
			maxLen, sum := 0, 0
			ps := GenerateSet(tk, 7, checkedPerDifficulty, []int{d})
			for _, p := range ps {
				n := responseTokens(p)
				maxLen = max(maxLen, n)
				sum += n
			}
			t.Logf("%-10s %4d %4d %5.1f", name, d, maxLen, float64(sum)/float64(len(ps)))
			if slices.Contains(train, d) && maxLen > trainBudget[name] {
				t.Errorf("%s difficulty %d: up to %d tokens, budget %d", name, d, maxLen, trainBudget[name])
			}
		}
	}
}

func TestCheckAlphabet(t *testing.T) {
	if err := CheckAlphabet(Alphabet); err != nil {
		t.Fatal(err)
	}
	// CheckAlphabet tests bytes, which is right only for an ASCII alphabet.
	for i := 0; i < len(Alphabet); i++ {
		if Alphabet[i] >= 0x80 {
			t.Fatalf("Alphabet has non-ASCII byte %#x at %d", Alphabet[i], i)
		}
	}
	for _, s := range []string{"A", "<think>", "a_b", "é", "\t", "!"} {
		if CheckAlphabet(s) == nil {
			t.Errorf("CheckAlphabet(%q) = nil", s)
		}
	}
}

func TestResponse(t *testing.T) {
	p := Problem{CoT: "7+5=12", Answer: "12"}
	if got, want := p.Response(), "<think>7+5=12</think><answer>12</answer>"; got != want {
		t.Errorf("Response() = %q, want %q", got, want)
	}
}

var (
	addStepRE = regexp.MustCompile(`^(\d)\+(\d)(\+1)?=(\d+)$`)
	mulStepRE = regexp.MustCompile(`^(\d)\*(\d)(?:\+(\d))?=(\d+)$`)
	cdStepRE  = regexp.MustCompile(`^(\d+)([-+*/])(\d+)=(\d+)$`)
)

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

// nthDigit is the i-th digit of s from the right, 0 past its length.
func nthDigit(s string, i int) int {
	if i >= len(s) {
		return 0
	}
	return int(s[len(s)-1-i] - '0')
}

// spelled is the number that column results spell: the last one in full,
// then the units of the others from the most significant column down.
func spelled(results []int) string {
	s := strconv.Itoa(results[len(results)-1])
	for i := len(results) - 2; i >= 0; i-- {
		s += strconv.Itoa(results[i] % 10)
	}
	n, _ := new(big.Int).SetString(s, 10)
	return n.String()
}

// replayAdd checks column steps of a+b and returns the sum they spell.
func replayAdd(a, b, steps string) (string, error) {
	parts := strings.Split(steps, ",")
	if len(parts) != max(len(a), len(b)) {
		return "", fmt.Errorf("%d steps for %s+%s", len(parts), a, b)
	}
	results := make([]int, len(parts))
	carry := 0
	for i, st := range parts {
		m := addStepRE.FindStringSubmatch(st)
		if m == nil {
			return "", fmt.Errorf("step %q malformed", st)
		}
		x, y, s := atoi(m[1]), atoi(m[2]), atoi(m[4])
		c := 0
		if m[3] != "" {
			c = 1
		}
		if x != nthDigit(a, i) || y != nthDigit(b, i) || c != carry || s != x+y+c {
			return "", fmt.Errorf("step %d %q wrong for %s+%s", i, st, a, b)
		}
		results[i], carry = s, s/10
	}
	return spelled(results), nil
}

// replayMul checks the steps of a*y and returns the product they spell.
func replayMul(a string, y int, steps string) (string, error) {
	parts := strings.Split(steps, ",")
	if len(parts) != len(a) {
		return "", fmt.Errorf("%d steps for %s*%d", len(parts), a, y)
	}
	results := make([]int, len(parts))
	carry := 0
	for i, st := range parts {
		m := mulStepRE.FindStringSubmatch(st)
		if m == nil {
			return "", fmt.Errorf("step %q malformed", st)
		}
		x, yy, s := atoi(m[1]), atoi(m[2]), atoi(m[4])
		c := 0
		if m[3] != "" {
			c = atoi(m[3])
			if c == 0 {
				return "", fmt.Errorf("step %q shows a zero carry", st)
			}
		}
		if x != nthDigit(a, i) || yy != y || c != carry || s != x*y+c {
			return "", fmt.Errorf("step %d %q wrong for %s*%d", i, st, a, y)
		}
		results[i], carry = s, s/10
	}
	return spelled(results), nil
}

func operands(prompt, prefix, op string) (string, string) {
	body := strings.TrimSuffix(strings.TrimPrefix(prompt, prefix), "=?")
	a, b, _ := strings.Cut(body, op)
	return a, b
}

func checkAddCoT(p Problem) error {
	a, b := operands(p.Prompt, "add ", "+")
	if len(a) != p.Difficulty && len(b) != p.Difficulty || max(len(a), len(b)) != p.Difficulty {
		return fmt.Errorf("operands do not have %d digits", p.Difficulty)
	}
	sum, err := replayAdd(a, b, p.CoT)
	if err != nil {
		return err
	}
	if sum != p.Answer {
		return fmt.Errorf("steps spell %s, answer %s", sum, p.Answer)
	}
	return nil
}

func checkMulCoT(p Problem) error {
	a, b := operands(p.Prompt, "mul ", "*")
	if len(a) != p.Difficulty {
		return fmt.Errorf("multiplicand does not have %d digits", p.Difficulty)
	}
	if len(b) == 1 {
		prod, err := replayMul(a, atoi(b), p.CoT)
		if err != nil {
			return err
		}
		if prod != p.Answer {
			return fmt.Errorf("steps spell %s, answer %s", prod, p.Answer)
		}
		return nil
	}
	stages := strings.Split(p.CoT, ";")
	if len(stages) != 3 {
		return fmt.Errorf("%d stages, want 3", len(stages))
	}
	var partials [2]string
	for k, y := range []int{nthDigit(b, 0), nthDigit(b, 1)} {
		steps, partial, ok := strings.Cut(stages[k], ":")
		if !ok {
			return fmt.Errorf("stage %d has no partial product", k)
		}
		prod, err := replayMul(a, y, steps)
		if err != nil {
			return err
		}
		if k == 1 && prod != "0" {
			prod += "0"
		}
		if prod != partial {
			return fmt.Errorf("stage %d spells %s, writes %s", k, prod, partial)
		}
		partials[k] = partial
	}
	sum, err := replayAdd(partials[0], partials[1], stages[2])
	if err != nil {
		return err
	}
	if sum != p.Answer {
		return fmt.Errorf("sum spells %s, answer %s", sum, p.Answer)
	}
	return nil
}

func checkCountdownCoT(p Problem) error {
	fields := strings.Fields(strings.TrimPrefix(p.Prompt, "countdown "))
	target := atoi(fields[len(fields)-1])
	var nums []int
	for _, f := range fields[:len(fields)-2] {
		nums = append(nums, atoi(f))
	}
	if len(nums) != p.Difficulty {
		return fmt.Errorf("%d numbers, difficulty %d", len(nums), p.Difficulty)
	}
	chains := strings.Split(p.CoT, ";")
	if len(chains) > cdMaxFails+1 {
		return fmt.Errorf("%d chains", len(chains))
	}
	for ci, chain := range chains {
		pool := slices.Clone(nums)
		take := func(v int) bool {
			i := slices.Index(pool, v)
			if i < 0 {
				return false
			}
			pool = slices.Delete(pool, i, i+1)
			return true
		}
		for _, st := range strings.Split(chain, ",") {
			m := cdStepRE.FindStringSubmatch(st)
			if m == nil {
				return fmt.Errorf("step %q malformed", st)
			}
			a, op, b, r := atoi(m[1]), m[2], atoi(m[3]), atoi(m[4])
			if !take(a) || !take(b) {
				return fmt.Errorf("step %q uses a number not in the pool", st)
			}
			var want int
			switch op {
			case "+":
				want = a + b
			case "-":
				want = a - b
			case "*":
				want = a * b
			case "/":
				if b == 0 || a%b != 0 {
					return fmt.Errorf("step %q divides inexactly", st)
				}
				want = a / b
			}
			if r != want || r <= 0 {
				return fmt.Errorf("step %q is wrong", st)
			}
			pool = append(pool, r)
		}
		if len(pool) != 1 {
			return fmt.Errorf("chain %q leaves %v", chain, pool)
		}
		if last := ci == len(chains)-1; last != (pool[0] == target) {
			return fmt.Errorf("chain %d %q ends at %d, target %d, last chain %v", ci, chain, pool[0], target, last)
		}
	}
	return nil
}

// checkKKCoT replays the case analysis against the brute-force solution:
// a forced literal must agree with the solution whenever the current
// assumptions do, "x" must come only where the assumptions rule the
// solution out, and "ok" only with everyone assigned as in the solution.
func checkKKCoT(p Problem) error {
	stmts, err := parseKKPrompt(p.Prompt)
	if err != nil {
		return err
	}
	sols := kkSolutions(stmts)
	if len(sols) != 1 {
		return fmt.Errorf("%d solutions", len(sols))
	}
	sol := sols[0]
	type level struct {
		person   int
		knight   bool
		literals map[int]bool
	}
	root := map[int]bool{}
	var stack []level
	assumptionsHold := func() bool {
		for _, l := range stack {
			if sol[l.person] != l.knight {
				return false
			}
		}
		return true
	}
	known := func() map[int]bool {
		m := map[int]bool{}
		for k, v := range root {
			m[k] = v
		}
		for _, l := range stack {
			m[l.person] = l.knight
			for k, v := range l.literals {
				m[k] = v
			}
		}
		return m
	}
	cot := p.CoT
	for i := 0; i < len(cot); {
		switch {
		case strings.HasPrefix(cot[i:], "ok"):
			if i+2 != len(cot) {
				return fmt.Errorf("text after ok")
			}
			if !assumptionsHold() {
				return fmt.Errorf("ok under assumptions that contradict the solution")
			}
			m := known()
			if len(m) != len(sol) {
				return fmt.Errorf("ok with %d of %d people known", len(m), len(sol))
			}
			return nil
		case cot[i] == 'x':
			if assumptionsHold() {
				return fmt.Errorf("contradiction at byte %d under assumptions the solution satisfies", i)
			}
			i++
			if i == len(cot) || cot[i] != ';' {
				return fmt.Errorf("no alternative after contradiction at byte %d", i)
			}
			i++
			// The next assumption must be the knave side of an open knight
			// assumption; the deeper levels are exhausted.
			if i+2 >= len(cot) || cot[i+1] != '-' || cot[i+2] != ':' {
				return fmt.Errorf("byte %d: alternative is not a knave assumption", i)
			}
			who := int(cot[i] - 'a')
			for len(stack) > 0 && stack[len(stack)-1].person != who {
				stack = stack[:len(stack)-1]
			}
			if len(stack) == 0 || !stack[len(stack)-1].knight {
				return fmt.Errorf("byte %d: no open knight assumption on %c", i, cot[i])
			}
			stack[len(stack)-1] = level{person: who, knight: false, literals: map[int]bool{}}
			i += 3
		case i+1 < len(cot) && cot[i] >= 'a' && cot[i] < 'a'+byte(len(sol)) && (cot[i+1] == '+' || cot[i+1] == '-'):
			who, knight := int(cot[i]-'a'), cot[i+1] == '+'
			if _, dup := known()[who]; dup {
				return fmt.Errorf("byte %d: %c assigned twice", i, cot[i])
			}
			if i+2 < len(cot) && cot[i+2] == ':' {
				if !knight {
					return fmt.Errorf("byte %d: first assumption on %c is knave", i, cot[i])
				}
				stack = append(stack, level{person: who, knight: true, literals: map[int]bool{}})
				i += 3
				continue
			}
			if assumptionsHold() && sol[who] != knight {
				return fmt.Errorf("byte %d: literal %s does not follow", i, cot[i:i+2])
			}
			if len(stack) == 0 {
				root[who] = knight
			} else {
				stack[len(stack)-1].literals[who] = knight
			}
			i += 2
		default:
			return fmt.Errorf("unexpected byte %d %q", i, cot[i])
		}
	}
	return fmt.Errorf("trace does not end with ok")
}
