package task

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// kkTask is Knights and Knaves: knights always tell the truth, knaves
// always lie; from one statement per person, tell who is which.
//
// Difficulty = how many people (2–3 for training, 4–5 held out), named a,
// b, c, ... Each person makes one statement about one other person or about
// two people (possibly including the speaker):
//
//	b is a knight.        b is a knave.
//	b and c are knights.  b and c are knaves.
//	b or c is a knight.   b or c is a knave.
//	b and c are alike.    b and c differ.
//
// The generator draws a hidden assignment, then statements consistent with
// it, until brute force over all assignments finds it the only solution.
// Prompt "kk a: b and c are knaves. b: a or c is a knight. c: b is a knight."
//
// The answer lists every person once as "a knight,b knave,c knight". The
// verifier accepts any order and spaces after the commas, nothing else.
//
// The CoT is a depth-first case analysis with propagation: "a+" means a is
// a knight, "a-" a knave. "a+:" is an assumption (the first unknown person,
// knight first); the literals after it are forced, each by one statement
// that the known roles leave only one way to satisfy; "x" marks a
// contradiction (a statement that cannot be satisfied), ";" starts the
// knave alternative of the latest open assumption, and "ok" ends the branch
// where everyone is known and every statement holds. Literals before the
// first assumption follow from the statements alone. For the prompt above:
// "a+:b-c-x;a-:b+:c+ok". At 3 people a problem plus its response is at
// most 127 tokens (217 at 5).
type kkTask struct{}

const (
	kkPrefix    = "kk "
	kkMaxPeople = 5
	// kkMaxDraws bounds the statement draws for one hidden assignment before
	// a new one is drawn.
	kkMaxDraws = 50
)

func (kkTask) Name() string                               { return "kk" }
func (kkTask) Difficulties() (train []int, heldOut []int) { return []int{2, 3}, []int{4, 5} }

// DifficultyRange stops at 5 people, whose prompt and answer already take
// about 150 tokens.
func (kkTask) DifficultyRange() (lo, hi int) { return 2, kkMaxPeople }

type kkKind int

const (
	kkIs     kkKind = iota // x is a knight (positive) / knave
	kkBoth                 // x and y are knights / knaves
	kkEither               // x or y is a knight / knave
	kkAlike                // x and y are alike (positive) / differ
	kkKinds
)

// kkStatement is the statement of one speaker about x (and y).
type kkStatement struct {
	speaker  int
	kind     kkKind
	x, y     int
	positive bool // "knight(s)" or "alike", rather than "knave(s)" or "differ"
}

// holds reports whether the statement is true when knight[i] says whether
// person i is a knight.
func (s kkStatement) holds(knight []bool) bool {
	switch s.kind {
	case kkIs:
		return knight[s.x] == s.positive
	case kkBoth:
		return knight[s.x] == s.positive && knight[s.y] == s.positive
	case kkEither:
		return knight[s.x] == s.positive || knight[s.y] == s.positive
	default:
		return (knight[s.x] == knight[s.y]) == s.positive
	}
}

// consistent reports whether the speaker's role fits the statement's truth.
func (s kkStatement) consistent(knight []bool) bool {
	return s.holds(knight) == knight[s.speaker]
}

func (s kkStatement) people() []int {
	if s.kind == kkIs {
		return []int{s.speaker, s.x}
	}
	return []int{s.speaker, s.x, s.y}
}

func personName(i int) string { return string(rune('a' + i)) }

func (s kkStatement) String() string {
	x, y := personName(s.x), personName(s.y)
	var body string
	switch s.kind {
	case kkIs:
		body = x + " is a " + roleName(s.positive)
	case kkBoth:
		body = x + " and " + y + " are " + roleName(s.positive) + "s"
	case kkEither:
		body = x + " or " + y + " is a " + roleName(s.positive)
	default:
		if s.positive {
			body = x + " and " + y + " are alike"
		} else {
			body = x + " and " + y + " differ"
		}
	}
	return personName(s.speaker) + ": " + body + "."
}

func roleName(knight bool) string {
	if knight {
		return "knight"
	}
	return "knave"
}

// kkCandidates lists every statement the speaker could make about n people,
// in a fixed order.
func kkCandidates(speaker, n int, kind kkKind) []kkStatement {
	var out []kkStatement
	for _, pos := range []bool{true, false} {
		if kind == kkIs {
			for x := range n {
				if x != speaker {
					out = append(out, kkStatement{speaker: speaker, kind: kind, x: x, positive: pos})
				}
			}
			continue
		}
		for x := range n {
			for y := x + 1; y < n; y++ {
				out = append(out, kkStatement{speaker: speaker, kind: kind, x: x, y: y, positive: pos})
			}
		}
	}
	return out
}

func (t kkTask) Generate(rng *rand.Rand, difficulty int) Problem {
	lo, hi := t.DifficultyRange()
	n := clamp(difficulty, lo, hi)
	hidden := make([]bool, n)
	stmts := make([]kkStatement, n)
	for {
		for i := range hidden {
			hidden[i] = rng.IntN(2) == 0
		}
		for range kkMaxDraws {
			for i := range stmts {
				stmts[i] = drawStatement(rng, i, hidden)
			}
			if sols := kkSolutions(stmts); len(sols) == 1 {
				return t.problem(n, stmts, hidden)
			}
		}
	}
}

// drawStatement picks a kind, then a statement of that kind that the
// speaker's hidden role allows. Some kind always has one (a statement about
// one other person, in one polarity or the other).
func drawStatement(rng *rand.Rand, speaker int, hidden []bool) kkStatement {
	for {
		var fit []kkStatement
		for _, s := range kkCandidates(speaker, len(hidden), kkKind(rng.IntN(int(kkKinds)))) {
			if s.consistent(hidden) {
				fit = append(fit, s)
			}
		}
		if len(fit) > 0 {
			return fit[rng.IntN(len(fit))]
		}
	}
}

func (t kkTask) problem(n int, stmts []kkStatement, solution []bool) Problem {
	var prompt strings.Builder
	prompt.WriteString(kkPrefix)
	for i, s := range stmts {
		if i > 0 {
			prompt.WriteByte(' ')
		}
		prompt.WriteString(s.String())
	}
	return newProblem(t.Name(), n, fmt.Sprintf("people%d", n), prompt.String(), kkTrace(stmts, n), kkAnswer(solution))
}

func kkAnswer(knight []bool) string {
	parts := make([]string, len(knight))
	for i, k := range knight {
		parts[i] = personName(i) + " " + roleName(k)
	}
	return strings.Join(parts, ",")
}

// kkSolutions returns every assignment consistent with all statements,
// by brute force.
func kkSolutions(stmts []kkStatement) [][]bool {
	n := len(stmts)
	var sols [][]bool
	for mask := range 1 << n {
		knight := make([]bool, n)
		for i := range knight {
			knight[i] = mask>>i&1 == 1
		}
		ok := true
		for _, s := range stmts {
			if !s.consistent(knight) {
				ok = false
				break
			}
		}
		if ok {
			sols = append(sols, knight)
		}
	}
	return sols
}

// Roles in a partial assignment.
const (
	kkUnknown int8 = iota
	kkKnight
	kkKnave
)

// kkTrace writes the canonical case analysis of a puzzle with a unique
// solution.
func kkTrace(stmts []kkStatement, n int) string {
	var b strings.Builder
	roles := make([]int8, n)
	if !kkPropagate(stmts, roles, &b) {
		b.WriteString("x") // unreachable for a solvable puzzle
		return b.String()
	}
	if kkComplete(roles) {
		b.WriteString("ok")
		return b.String()
	}
	kkSearch(stmts, roles, &b)
	return b.String()
}

// kkSearch assumes the first unknown person is a knight, then a knave, and
// recurses; it reports whether it found a full consistent assignment.
func kkSearch(stmts []kkStatement, roles []int8, b *strings.Builder) bool {
	p := 0
	for roles[p] != kkUnknown {
		p++
	}
	for i, role := range []int8{kkKnight, kkKnave} {
		if i > 0 {
			b.WriteByte(';')
		}
		r := append([]int8(nil), roles...)
		r[p] = role
		b.WriteString(kkLiteral(p, role) + ":")
		if !kkPropagate(stmts, r, b) {
			b.WriteString("x")
			continue
		}
		if kkComplete(r) {
			b.WriteString("ok")
			return true
		}
		if kkSearch(stmts, r, b) {
			return true
		}
	}
	return false
}

func kkLiteral(p int, role int8) string {
	if role == kkKnight {
		return personName(p) + "+"
	}
	return personName(p) + "-"
}

func kkComplete(roles []int8) bool {
	for _, r := range roles {
		if r == kkUnknown {
			return false
		}
	}
	return true
}

// kkPropagate makes every statement locally consistent: for each statement
// it tries all roles of its unknown people, and a person who has the same
// role in every consistent completion is forced to it (written to b). It
// repeats until nothing changes and reports false on a contradiction.
func kkPropagate(stmts []kkStatement, roles []int8, b *strings.Builder) bool {
	knight := make([]bool, len(roles))
	for changed := true; changed; {
		changed = false
		for _, s := range stmts {
			var unknown []int
			for _, p := range s.people() {
				if roles[p] == kkUnknown && !containsInt(unknown, p) {
					unknown = append(unknown, p)
				}
			}
			for p, r := range roles {
				knight[p] = r == kkKnight
			}
			// canBe[k][0] / [1]: some consistent completion has unknown[k] a
			// knight / a knave.
			canBe := make([][2]bool, len(unknown))
			found := false
			for mask := range 1 << len(unknown) {
				for k, p := range unknown {
					knight[p] = mask>>k&1 == 1
				}
				if !s.consistent(knight) {
					continue
				}
				found = true
				for k, p := range unknown {
					if knight[p] {
						canBe[k][0] = true
					} else {
						canBe[k][1] = true
					}
				}
			}
			if !found {
				return false
			}
			for k, p := range unknown {
				if canBe[k][0] && canBe[k][1] {
					continue
				}
				role := kkKnight
				if !canBe[k][0] {
					role = kkKnave
				}
				roles[p] = role
				b.WriteString(kkLiteral(p, role))
				changed = true
			}
		}
	}
	return true
}

func containsInt(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func (t kkTask) Verify(p Problem, answer string) (bool, string) {
	if p.Task != t.Name() {
		return false, wrongTask(p, t.Name())
	}
	stmts, err := parseKKPrompt(p.Prompt)
	if err != nil {
		return false, "bad prompt: " + err.Error()
	}
	sols := kkSolutions(stmts)
	if len(sols) != 1 {
		return false, fmt.Sprintf("bad prompt: puzzle has %d solutions", len(sols))
	}
	if answer == "" {
		return false, "empty answer"
	}
	got, err := parseKKAnswer(answer, len(stmts))
	if err != nil {
		return false, err.Error()
	}
	for i, k := range sols[0] {
		if got[i] != k {
			return false, fmt.Sprintf("got %s %s, want %s %s", personName(i), roleName(got[i]), personName(i), roleName(k))
		}
	}
	return true, "correct"
}

// Canonical writes a parseable answer as the assignment it names, people
// in order and no spaces after the commas ("b knave, a knight" becomes
// "a knight,b knave"); Verify's verdict depends on the assignment alone.
// Anything else, including any answer to a malformed prompt, is returned
// unchanged.
func (t kkTask) Canonical(p Problem, answer string) string {
	if p.Task != t.Name() {
		return answer
	}
	stmts, err := parseKKPrompt(p.Prompt)
	if err != nil {
		return answer
	}
	knight, err := parseKKAnswer(answer, len(stmts))
	if err != nil {
		return answer
	}
	return kkAnswer(knight)
}

// parseKKAnswer reads "a knight,b knave,...": every one of n people exactly
// once, any order, optional spaces after commas.
func parseKKAnswer(answer string, n int) ([]bool, error) {
	knight := make([]bool, n)
	seen := make([]bool, n)
	for i, part := range strings.Split(answer, ",") {
		if i > 0 {
			part = strings.TrimLeft(part, " ")
		}
		name, role, ok := strings.Cut(part, " ")
		if !ok || len(name) != 1 || (role != "knight" && role != "knave") {
			return nil, fmt.Errorf("%q is not \"<person> knight\" or \"<person> knave\"", clip(part))
		}
		p := int(name[0]) - 'a'
		if p < 0 || p >= n {
			return nil, fmt.Errorf("unknown person %q", name)
		}
		if seen[p] {
			return nil, fmt.Errorf("person %s named twice", name)
		}
		seen[p] = true
		knight[p] = role == "knight"
	}
	for p, ok := range seen {
		if !ok {
			return nil, fmt.Errorf("person %s missing", personName(p))
		}
	}
	return knight, nil
}

// parseKKPrompt reads the statements of a prompt; the speakers must be a,
// b, c, ... in order.
func parseKKPrompt(prompt string) ([]kkStatement, error) {
	body, ok := strings.CutPrefix(prompt, kkPrefix)
	if !ok {
		return nil, fmt.Errorf("prompt %q does not start with %q", clip(prompt), kkPrefix)
	}
	body, ok = strings.CutSuffix(body, ".")
	if !ok {
		return nil, fmt.Errorf("prompt %q does not end with \".\"", clip(prompt))
	}
	texts := strings.Split(body, ". ")
	if len(texts) > kkMaxPeople {
		return nil, fmt.Errorf("%d statements, at most %d allowed", len(texts), kkMaxPeople)
	}
	n := len(texts)
	stmts := make([]kkStatement, n)
	for i, text := range texts {
		s, err := parseKKStatement(text, i, n)
		if err != nil {
			return nil, fmt.Errorf("statement %d: %w", i+1, err)
		}
		stmts[i] = s
	}
	return stmts, nil
}

func parseKKStatement(text string, speaker, n int) (kkStatement, error) {
	s := kkStatement{speaker: speaker}
	words := strings.Split(text, " ")
	if words[0] != personName(speaker)+":" {
		return s, fmt.Errorf("%q does not start with %q", clip(text), personName(speaker)+":")
	}
	person := func(w string) (int, bool) {
		if len(w) != 1 || w[0] < 'a' || int(w[0]-'a') >= n {
			return 0, false
		}
		return int(w[0] - 'a'), true
	}
	w := words[1:]
	bad := fmt.Errorf("%q is not a known statement form", clip(text))
	var ok1, ok2 bool
	switch {
	case len(w) == 4 && w[1] == "is" && w[2] == "a" && (w[3] == "knight" || w[3] == "knave"):
		s.kind, s.positive = kkIs, w[3] == "knight"
		s.x, ok1 = person(w[0])
		ok2 = ok1 && s.x != speaker
	case len(w) == 5 && w[1] == "and" && w[3] == "are" && (w[4] == "knights" || w[4] == "knaves"):
		s.kind, s.positive = kkBoth, w[4] == "knights"
		s.x, ok1 = person(w[0])
		s.y, ok2 = person(w[2])
	case len(w) == 6 && w[1] == "or" && w[3] == "is" && w[4] == "a" && (w[5] == "knight" || w[5] == "knave"):
		s.kind, s.positive = kkEither, w[5] == "knight"
		s.x, ok1 = person(w[0])
		s.y, ok2 = person(w[2])
	case len(w) == 5 && w[1] == "and" && w[3] == "are" && w[4] == "alike":
		s.kind, s.positive = kkAlike, true
		s.x, ok1 = person(w[0])
		s.y, ok2 = person(w[2])
	case len(w) == 4 && w[1] == "and" && w[3] == "differ":
		s.kind, s.positive = kkAlike, false
		s.x, ok1 = person(w[0])
		s.y, ok2 = person(w[2])
	default:
		return s, bad
	}
	if !ok1 || !ok2 || (s.kind != kkIs && s.x >= s.y) {
		return s, bad
	}
	return s, nil
}
