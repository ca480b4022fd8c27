package tokenizer

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDefault(t *testing.T) {
	tok := Default()
	if got := tok.VocabSize(); got != 57 {
		t.Fatalf("VocabSize = %d, want 57", got)
	}
	if tok.NumSpecials() != 7 || tok.Alphabet() != DefaultAlphabet || utf8.RuneCountInString(DefaultAlphabet) != 50 {
		t.Fatalf("NumSpecials %d, alphabet %q", tok.NumSpecials(), tok.Alphabet())
	}
	want := map[string]int32{
		"<pad>": PAD, "<bos>": BOS, "<eos>": EOS, "<think>": Think, "</think>": EndThink,
		"<answer>": Answer, "</answer>": EndAnswer,
		"0": 7, "9": 16, "a": 17, "z": 42, " ": 43, "+": 44, "?": 55, "\n": 56,
	}
	for s, id := range want {
		if got, ok := tok.ID(s); !ok || got != id {
			t.Errorf("ID(%q) = %d, %v; want %d", s, got, ok, id)
		}
		if got, ok := tok.Token(id); !ok || got != s {
			t.Errorf("Token(%d) = %q, %v; want %q", id, got, ok, s)
		}
	}
	for _, s := range []string{"", "ab", "A", "<", "<foo>", "é"} {
		if id, ok := tok.ID(s); ok {
			t.Errorf("ID(%q) = %d, want none", s, id)
		}
	}
	for _, id := range []int32{-1, 57, 1 << 30} {
		if s, ok := tok.Token(id); ok {
			t.Errorf("Token(%d) = %q, want none", id, s)
		}
	}
	if !tok.IsSpecial(EndAnswer) || tok.IsSpecial(7) || tok.IsSpecial(-1) {
		t.Error("IsSpecial is wrong at the boundary")
	}
	if got := tok.Specials(); !slices.Equal(got, builtins[:]) {
		t.Errorf("Specials = %q", got)
	}
}

func TestEncodeDecode(t *testing.T) {
	tok, err := New("abc é\n", "<sep>", "<ø>")
	if err != nil {
		t.Fatal(err)
	}
	// ids: specials 0..6, <sep>=7, <ø>=8, then a=9 b=10 c=11 ' '=12 é=13 '\n'=14
	tests := []struct {
		text string
		ids  []int32
	}{
		{"", []int32{}},
		{"abc", []int32{9, 10, 11}},
		{"é a\n", []int32{13, 12, 9, 14}},
		{"<bos>ab<eos>", []int32{BOS, 9, 10, EOS}},
		{"<think>a</think><answer>b</answer>", []int32{Think, 9, EndThink, Answer, 10, EndAnswer}},
		{"<sep><ø><pad><pad>", []int32{7, 8, PAD, PAD}},
		{"<think><think>", []int32{Think, Think}},
	}
	for _, tc := range tests {
		ids, err := tok.Encode(tc.text)
		if err != nil || !slices.Equal(ids, tc.ids) {
			t.Errorf("Encode(%q) = %v, %v; want %v", tc.text, ids, err, tc.ids)
			continue
		}
		text, err := tok.Decode(ids)
		if err != nil || text != tc.text {
			t.Errorf("Decode(%v) = %q, %v; want %q", ids, text, err, tc.text)
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	tok := Default()
	tests := []struct {
		text, want string
	}{
		{"what is 2+2? X", `unknown character 'X' at position 13 (byte 13)`},
		{"Hello", `unknown character 'H' at position 0 (byte 0)`},
		{"a\tb", `unknown character '\t' at position 1 (byte 1)`},
		{"café au lait", `unknown character 'é' at position 3 (byte 3)`},
		{"éé a X", `unknown character 'é' at position 0 (byte 0)`},
		{"ab<think>cd€", `unknown character '€' at position 11 (byte 11)`},
		{"<think>ü", `unknown character 'ü' at position 7 (byte 7)`},
		{"1 <foo> 2", `unknown special token "<foo>" at position 2 (byte 2)`},
		{"<THINK>", `unknown special token "<THINK>" at position 0 (byte 0)`},
		{"2 < 3", `'<' at position 2 (byte 2) does not start a special token`},
		{"a<", `'<' at position 1 (byte 1) does not start a special token`},
		{"<<think>", `'<' at position 0 (byte 0) does not start a special token`},
		{"<thinking about it a lot>", `'<' at position 0 (byte 0) does not start a special token`},
		{"3 > 2", `unknown character '>' at position 2 (byte 2)`},
		{"ok\xffno", `invalid UTF-8 byte 0xff at position 2 (byte 2)`},
		{"a\xc3", `invalid UTF-8 byte 0xc3 at position 1 (byte 1)`},
	}
	for _, tc := range tests {
		ids, err := tok.Encode(tc.text)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Encode(%q) = %v, %v; want error %q", tc.text, ids, err, tc.want)
		}
	}
	// Positions count runes, not bytes, also across multi-byte characters
	// and special tokens.
	wide, err := New(DefaultAlphabet+"é€", "<ø>")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ text, want string }{
		{"éé aX", `unknown character 'X' at position 4 (byte 6)`},
		{"€<think>é<ø>ü", `unknown character 'ü' at position 12 (byte 16)`},
		{"é€<ø><x>", `unknown special token "<x>" at position 5 (byte 9)`},
		{"é\xc3", `invalid UTF-8 byte 0xc3 at position 1 (byte 2)`},
	} {
		ids, err := wide.Encode(tc.text)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Encode(%q) = %v, %v; want error %q", tc.text, ids, err, tc.want)
		}
	}
	// AppendEncode leaves dst as it was on error.
	dst := []int32{1, 2}
	got, err := tok.AppendEncode(dst, "ab!")
	if err == nil || !slices.Equal(got, []int32{1, 2}) {
		t.Errorf("AppendEncode = %v, %v", got, err)
	}
	got, err = tok.AppendEncode(dst, "ab")
	if err != nil || !slices.Equal(got, []int32{1, 2, 17, 18}) {
		t.Errorf("AppendEncode = %v, %v", got, err)
	}
}

func TestDecodeErrors(t *testing.T) {
	tok := Default()
	tests := []struct {
		ids  []int32
		want string
	}{
		{[]int32{57}, "token id 57 at index 0 is out of range [0, 57)"},
		{[]int32{7, 8, -1}, "token id -1 at index 2 is out of range [0, 57)"},
		{[]int32{BOS, 63}, "token id 63 at index 1 is out of range [0, 57)"},
	}
	for _, tc := range tests {
		s, err := tok.Decode(tc.ids)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Decode(%v) = %q, %v; want error %q", tc.ids, s, err, tc.want)
		}
	}
	if got := tok.DecodeLossy([]int32{Think, 17, 63, -5, EndThink}); got != "<think>a\uFFFD\uFFFD</think>" {
		t.Errorf("DecodeLossy = %q", got)
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		alphabet string
		extra    []string
		want     string
	}{
		{"", nil, "empty alphabet"},
		{"abca", nil, `alphabet repeats 'a' at position 3 (first at 0)`},
		{"éaé", nil, `alphabet repeats 'é' at position 2 (first at 0)`},
		{"ab<", nil, `alphabet has '<' at position 2: '<' and '>' are reserved`},
		{">", nil, `alphabet has '>' at position 0`},
		{"a\tb", nil, `non-printable character '\t' at position 1`},
		{"a\u00a0", nil, `non-printable character '\u00a0' at position 1`},
		{"a\x00", nil, `non-printable character '\x00'`},
		{"a\xffb", nil, `invalid UTF-8 byte 0xff at position 1 (byte 1)`},
		{"ab", []string{"sep"}, `special token "sep" is not of the form <name>`},
		{"ab", []string{"<>"}, `special token "<>" is not of the form <name>`},
		{"ab", []string{"<a b>"}, `special token "<a b>" has ' ' in its name`},
		{"ab", []string{"<a<b>"}, `special token "<a<b>" has '<' in its name`},
		{"ab", []string{"<a\xff>"}, `not valid UTF-8`},
		{"ab", []string{"<think>"}, `special token "<think>" is built in`},
		{"ab", []string{"<sep>", "<sep>"}, `special token "<sep>" given twice`},
	}
	for _, tc := range tests {
		tok, err := New(tc.alphabet, tc.extra...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "new tokenizer: ") {
			t.Errorf("New(%q, %q) = %v, %v; want error containing %q", tc.alphabet, tc.extra, tok, err, tc.want)
		}
	}
}

func TestZeroValue(t *testing.T) {
	var tok Tokenizer
	if _, err := tok.Encode("a"); err == nil {
		t.Error("zero Tokenizer encoded 'a'")
	}
	if _, err := tok.Encode("<pad>"); err == nil {
		t.Error("zero Tokenizer encoded <pad>")
	}
	if _, err := tok.Decode([]int32{0}); err == nil {
		t.Error("zero Tokenizer decoded 0")
	}
	if tok.VocabSize() != 0 {
		t.Error("zero Tokenizer has tokens")
	}
}

func TestJSON(t *testing.T) {
	orig, err := New("xyz é\n", "<sep>")
	if err != nil {
		t.Fatal(err)
	}
	// As a field of a larger config, the way a checkpoint carries it.
	type config struct {
		Vocab     int        `json:"vocab"`
		Tokenizer *Tokenizer `json:"tokenizer"`
	}
	b, err := json.Marshal(config{Vocab: 64, Tokenizer: orig})
	if err != nil {
		t.Fatal(err)
	}
	var back config
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Tokenizer == nil || back.Tokenizer.VocabSize() != orig.VocabSize() || back.Tokenizer.Alphabet() != orig.Alphabet() ||
		!slices.Equal(back.Tokenizer.Specials(), orig.Specials()) {
		t.Fatalf("round trip through %s gave %+v", b, back.Tokenizer)
	}
	text := "<bos><think>x y</think><sep><answer>é\n</answer><eos>"
	a, _ := orig.Encode(text)
	c, err := back.Tokenizer.Encode(text)
	if err != nil || !slices.Equal(a, c) {
		t.Fatalf("rebuilt tokenizer encodes %v, %v; want %v", c, err, a)
	}

	bad := []struct{ json, want string }{
		{`{"specials":["<pad>"],"alphabet":"ab"}`, "has 1 special tokens, want at least the 7 built-in ones"},
		{`{"specials":["<pad>","<eos>","<bos>","<think>","</think>","<answer>","</answer>"],"alphabet":"ab"}`, `special 1 = "<eos>", this moerl has "<bos>"`},
		{`{"specials":["<pad>","<bos>","<eos>","<think>","</think>","<answer>","</answer>"],"alphabet":"aa"}`, "alphabet repeats"},
		{`{"specials":["<pad>","<bos>","<eos>","<think>","</think>","<answer>","</answer>","sep"],"alphabet":"ab"}`, "not of the form"},
		{`{"specials":"<pad>"}`, "tokenizer spec: "},
		{`null`, "want at least the 7"},
	}
	for _, tc := range bad {
		var tok Tokenizer
		if err := json.Unmarshal([]byte(tc.json), &tok); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Unmarshal(%s) = %v, want error containing %q", tc.json, err, tc.want)
		}
	}
}

func FuzzEncode(f *testing.F) {
	for _, s := range []string{
		"", "what is 12+30?\n", "<bos><think>12+30=42</think><answer>42</answer><eos>",
		"<", "<think", "<foo>", "a>b", "é", "\xff", "<<think>>", "</answer></answer>", "<sep>",
	} {
		f.Add(s)
	}
	tok, err := New(DefaultAlphabet+"é", "<sep>")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ids, err := tok.Encode(s)
		if err != nil {
			if !strings.Contains(err.Error(), "position ") {
				t.Fatalf("Encode(%q): error %q gives no position", s, err)
			}
			return
		}
		for _, id := range ids {
			if id < 0 || int(id) >= tok.VocabSize() {
				t.Fatalf("Encode(%q) gave id %d", s, id)
			}
		}
		back, err := tok.Decode(ids)
		if err != nil || back != s {
			t.Fatalf("Decode(Encode(%q)) = %q, %v", s, back, err)
		}
		if len(ids) > utf8.RuneCountInString(s) {
			t.Fatalf("Encode(%q) gave %d ids for %d runes", s, len(ids), utf8.RuneCountInString(s))
		}
	})
}

func FuzzNew(f *testing.F) {
	f.Add(DefaultAlphabet, "")
	f.Add("abc", "<sep>")
	f.Add("é€ ", "<a>|<b>")
	f.Add("aa", "")
	f.Add("a<", "<x>")
	f.Add("ab", "<think>")
	f.Add("\xff", "<\xff>")
	f.Fuzz(func(t *testing.T, alphabet, extra string) {
		var extras []string
		if extra != "" {
			extras = strings.Split(extra, "|")
		}
		tok, err := New(alphabet, extras...)
		if err != nil {
			if tok != nil {
				t.Fatal("New returned a tokenizer and an error")
			}
			return
		}
		nSpecial := len(builtins) + len(extras)
		if tok.NumSpecials() != nSpecial || tok.VocabSize() != nSpecial+utf8.RuneCountInString(alphabet) {
			t.Fatalf("New(%q, %q): %d specials, %d tokens", alphabet, extras, tok.NumSpecials(), tok.VocabSize())
		}
		// Each special and each character encodes to its own id, in order.
		all := make([]int32, tok.VocabSize())
		for i := range all {
			all[i] = int32(i)
		}
		text, err := tok.Decode(all)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := tok.Encode(text)
		if err != nil || !slices.Equal(ids, all) {
			t.Fatalf("Encode(Decode(all ids)) = %v, %v", ids, err)
		}
		for i, s := range extras {
			if id, ok := tok.ID(s); !ok || id != int32(len(builtins)+i) {
				t.Fatalf("ID(%q) = %d, %v", s, id, ok)
			}
		}
		// JSON rebuilds the same tokenizer.
		b, err := json.Marshal(tok)
		if err != nil {
			t.Fatal(err)
		}
		var back Tokenizer
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("Unmarshal(%s): %v", b, err)
		}
		if back.Alphabet() != alphabet || !slices.Equal(back.Specials(), tok.Specials()) {
			t.Fatalf("JSON round trip: %q %q, want %q %q", back.Alphabet(), back.Specials(), alphabet, tok.Specials())
		}
		if ids, err := back.Encode(text); err != nil || !slices.Equal(ids, all) {
			t.Fatalf("rebuilt tokenizer: %v, %v", ids, err)
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	tok := Default()
	s := strings.Repeat("<think>12*34=408, 408+5=413</think><answer>413</answer>\n", 20)
	dst := make([]int32, 0, len(s))
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		var err error
		if dst, err = tok.AppendEncode(dst[:0], s); err != nil {
			b.Fatal(err)
		}
	}
}
