package task

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func FuzzCountdownParse(f *testing.F) {
	for _, s := range []string{
		"(25-5)*4", "4*(25-5)", " 1 + 2 ", "-5", "2 5", "1e3", "((((1))))", "6/(3-3)", "7/2",
		"", "(", ")", "1+", "99999999999999", "(1+2)*(3-4)/5", strings.Repeat("(", 40) + "1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := parseExpr(s)
		if err != nil {
			return
		}
		// The canonical writing parses back to the same tree shape and value.
		out := e.String()
		e2, err := parseExpr(out)
		if err != nil {
			t.Fatalf("String() of %q is %q, which does not parse: %v", s, out, err)
		}
		if e2.String() != out {
			t.Fatalf("%q -> %q -> %q", s, out, e2.String())
		}
		if !slices.Equal(e.numbers(nil), e2.numbers(nil)) {
			t.Fatalf("numbers changed: %q -> %q", s, out)
		}
		v1, err1 := e.eval()
		v2, err2 := e2.eval()
		if (err1 == nil) != (err2 == nil) || err1 == nil && v1.Cmp(v2) != 0 {
			t.Fatalf("%q = %v, %v but %q = %v, %v", s, v1, err1, out, v2, err2)
		}
	})
}

func FuzzReadJSONL(f *testing.F) {
	var buf bytes.Buffer
	if err := WriteJSONL(&buf, goldenSet()[:6]); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte(`{"task":"add","prompt":"add 1+2=?","answer":"3"}`))
	f.Add([]byte(`{"task":"kk","prompt":"kk a: b is a knight. b: a is a knave.","answer":"a knave,b knave"}`))
	f.Add([]byte(`{"task":"countdown","prompt":"countdown 1 2 to 3","answer":"1+2","meta":{"a":[1,{}]}}`))
	f.Add([]byte("\n\n{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := ReadJSONL(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, p := range ps {
			tk, err := Get(p.Task)
			if err != nil {
				t.Fatalf("accepted unknown task %q", p.Task)
			}
			if ok, why := tk.Verify(p, p.Answer); !ok {
				t.Fatalf("accepted a problem whose answer fails: %s", why)
			}
		}
		var out bytes.Buffer
		if err := WriteJSONL(&out, ps); err != nil {
			t.Fatal(err)
		}
		back, err := ReadJSONL(&out)
		if err != nil {
			t.Fatalf("written problems do not read back: %v", err)
		}
		if !slices.EqualFunc(ps, back, problemsEqual) {
			t.Fatal("round trip changed the problems")
		}
	})
}

// FuzzVerify throws arbitrary answers at every task.
func FuzzVerify(f *testing.F) {
	for _, s := range []string{"432", "(25-5)*4", "a knight,b knave", "", " ", "0", "-1", "a knight,a knight"} {
		f.Add(uint8(0), uint64(1), s)
	}
	names := Names()
	f.Fuzz(func(t *testing.T, which uint8, seed uint64, answer string) {
		tk, _ := Get(names[int(which)%len(names)])
		p := GenerateSet(tk, seed, 1, nil)[0]
		ok, why := tk.Verify(p, answer)
		if why == "" {
			t.Fatal("empty reason")
		}
		if ok && tk.Name() != "countdown" && tk.Name() != "kk" && answer != p.Answer {
			t.Fatalf("accepted %q, canonical %q", answer, p.Answer)
		}
	})
}

// FuzzCanonical: for any answer to a generated problem of any task, the
// canonical form verifies as the answer does (so answers sharing a form
// share a verdict) and is its own canonical form.
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{"432", "0432", "(25-5)*4", "4*(25-5)", "8/6*4", "6/(3-3)", "a knight,b knave", "b knave, a knight", "", " 7 "} {
		f.Add(uint8(0), uint64(1), s)
		f.Add(uint8(2), uint64(5), s)
	}
	names := Names()
	f.Fuzz(func(t *testing.T, which uint8, seed uint64, answer string) {
		tk, _ := Get(names[int(which)%len(names)])
		p := GenerateSet(tk, seed, 1, nil)[0]
		for _, a := range []string{answer, p.Answer} {
			c := tk.Canonical(p, a)
			ok, _ := tk.Verify(p, a)
			if okC, _ := tk.Verify(p, c); okC != ok {
				t.Fatalf("%q verifies %v, its canonical form %q %v", a, ok, c, okC)
			}
			if again := tk.Canonical(p, c); again != c {
				t.Fatalf("canonical form of %q is %q, whose canonical form is %q", a, c, again)
			}
		}
	})
}
