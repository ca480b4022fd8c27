package task

import (
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// exprNode is a node of an arithmetic expression over natural numbers.
type exprNode struct {
	op   byte   // '+', '-', '*', '/', or 0 for a number
	num  string // the number's digits, when op is 0
	l, r *exprNode
}

// Limits that keep hostile input cheap: a countdown answer is short.
const (
	maxExprLen    = 256
	maxExprDepth  = 32
	maxNumberLen  = 12
	exprOperators = "+-*/"
)

// parseExpr parses an expression strictly. The grammar is
//
//	sum     = product { ("+" | "-") product }
//	product = factor { ("*" | "/") factor }
//	factor  = number | "(" sum ")"
//
// with spaces allowed between tokens only. Numbers are plain decimals
// without leading zeros; there is no unary minus or plus, so "-5" and "2 5"
// are errors.
func parseExpr(s string) (*exprNode, error) {
	if len(s) > maxExprLen {
		return nil, fmt.Errorf("expression of %d bytes is too long", len(s))
	}
	p := &exprParser{s: s}
	p.skipSpace()
	if p.pos == len(s) {
		return nil, errors.New("empty expression")
	}
	n, err := p.sum()
	if err != nil {
		return nil, err
	}
	if p.pos < len(s) {
		return nil, p.unexpected()
	}
	return n, nil
}

type exprParser struct {
	s     string
	pos   int
	depth int
}

func (p *exprParser) skipSpace() {
	for p.pos < len(p.s) && p.s[p.pos] == ' ' {
		p.pos++
	}
}

// peekOp returns the operator at the next token if it is one of ops.
func (p *exprParser) peekOp(ops string) (byte, bool) {
	p.skipSpace()
	if p.pos < len(p.s) && strings.IndexByte(ops, p.s[p.pos]) >= 0 {
		return p.s[p.pos], true
	}
	return 0, false
}

func (p *exprParser) sum() (*exprNode, error) {
	l, err := p.product()
	if err != nil {
		return nil, err
	}
	for {
		op, ok := p.peekOp("+-")
		if !ok {
			return l, nil
		}
		p.pos++
		r, err := p.product()
		if err != nil {
			return nil, err
		}
		l = &exprNode{op: op, l: l, r: r}
	}
}

func (p *exprParser) product() (*exprNode, error) {
	l, err := p.factor()
	if err != nil {
		return nil, err
	}
	for {
		op, ok := p.peekOp("*/")
		if !ok {
			return l, nil
		}
		p.pos++
		r, err := p.factor()
		if err != nil {
			return nil, err
		}
		l = &exprNode{op: op, l: l, r: r}
	}
}

func (p *exprParser) factor() (*exprNode, error) {
	p.skipSpace()
	if p.pos == len(p.s) {
		return nil, errors.New("unexpected end of expression")
	}
	switch c := p.s[p.pos]; {
	case c >= '0' && c <= '9':
		start := p.pos
		for p.pos < len(p.s) && p.s[p.pos] >= '0' && p.s[p.pos] <= '9' {
			p.pos++
		}
		num := p.s[start:p.pos]
		if len(num) > maxNumberLen {
			return nil, fmt.Errorf("number at byte %d is too long", start)
		}
		if len(num) > 1 && num[0] == '0' {
			return nil, fmt.Errorf("number %s at byte %d has a leading zero", num, start)
		}
		return &exprNode{num: num}, nil
	case c == '(':
		if p.depth == maxExprDepth {
			return nil, fmt.Errorf("parentheses nested deeper than %d", maxExprDepth)
		}
		open := p.pos
		p.pos++
		p.depth++
		n, err := p.sum()
		if err != nil {
			return nil, err
		}
		p.depth--
		if p.pos == len(p.s) || p.s[p.pos] != ')' {
			if p.pos < len(p.s) {
				return nil, p.unexpected()
			}
			return nil, fmt.Errorf("parenthesis at byte %d is not closed", open)
		}
		p.pos++
		return n, nil
	case c == '-' || c == '+':
		return nil, fmt.Errorf("unary %q at byte %d is not allowed", c, p.pos)
	default:
		return nil, p.unexpected()
	}
}

// unexpected describes the byte at p.pos, where no valid token can start.
func (p *exprParser) unexpected() error {
	c := p.s[p.pos]
	switch {
	case c >= '0' && c <= '9', c == '(':
		return fmt.Errorf("missing operator before byte %d", p.pos)
	case c == ')' || strings.IndexByte(exprOperators, c) >= 0:
		return fmt.Errorf("unexpected %q at byte %d", c, p.pos)
	default:
		return fmt.Errorf("invalid character %q at byte %d", c, p.pos)
	}
}

// numbers appends the expression's numbers, left to right, to dst.
func (n *exprNode) numbers(dst []string) []string {
	if n.op == 0 {
		return append(dst, n.num)
	}
	return n.r.numbers(n.l.numbers(dst))
}

// eval computes the expression exactly, in rationals: intermediate
// fractions are allowed, so 8*6/4 and (6/4)*8 both give 12. TinyZero
// (verl/utils/reward_score/countdown.py, Python float eval) and Reasoning
// Gym (reasoning_gym/games/countdown.py, sympy) accept both as well; unlike
// them moerl compares the exact value, without a float tolerance or a
// truncation to an integer. Division by zero is an error; negative
// intermediate results are allowed.
func (n *exprNode) eval() (*big.Rat, error) {
	if n.op == 0 {
		v, ok := new(big.Rat).SetString(n.num)
		if !ok {
			return nil, fmt.Errorf("bad number %q", n.num)
		}
		return v, nil
	}
	a, err := n.l.eval()
	if err != nil {
		return nil, err
	}
	b, err := n.r.eval()
	if err != nil {
		return nil, err
	}
	switch n.op {
	case '+':
		return a.Add(a, b), nil
	case '-':
		return a.Sub(a, b), nil
	case '*':
		return a.Mul(a, b), nil
	}
	if b.Sign() == 0 {
		return nil, fmt.Errorf("division by zero in %s", clip(n.String()))
	}
	return a.Quo(a, b), nil
}

// String writes the expression with the fewest parentheses that keep its
// structure.
func (n *exprNode) String() string {
	var b strings.Builder
	n.write(&b)
	return b.String()
}

func (n *exprNode) write(b *strings.Builder) {
	if n.op == 0 {
		b.WriteString(n.num)
		return
	}
	n.l.writeOperand(b, n.op, false)
	b.WriteByte(n.op)
	n.r.writeOperand(b, n.op, true)
}

// writeOperand writes n as an operand of parent, in parentheses where
// reading with precedence, left to right, would regroup it to another
// value. a+(b-c) is written a+b-c. a*(b/c) keeps its parentheses although
// in rationals it equals a*b/c: that rule dates from integer-only division,
// and keeping it keeps every generated answer the same text as before.
func (n *exprNode) writeOperand(b *strings.Builder, parent byte, right bool) {
	paren := n.op != 0 && (precedence(n.op) < precedence(parent) ||
		right && precedence(n.op) == precedence(parent) && (parent == '-' || parent == '/' || n.op == '/'))
	if paren {
		b.WriteByte('(')
	}
	n.write(b)
	if paren {
		b.WriteByte(')')
	}
}

func precedence(op byte) int {
	if op == '+' || op == '-' {
		return 1
	}
	return 2
}
