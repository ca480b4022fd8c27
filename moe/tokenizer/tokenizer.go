// Package tokenizer maps text to the token ids of moerl's models and back.
//
// A token is either one character of a declared alphabet or a special token.
// Special tokens are written literally in text as <name>: "<think>" is one
// token, not seven characters. Ids are assigned in a fixed order: the seven
// built-in specials (PAD … EndAnswer), then any extra specials given to New,
// then the alphabet's characters in the order declared.
//
// Because '<' opens a special token, '<' and '>' may not be alphabet
// characters; a '<' in text must start a known special token. This keeps
// encoding unambiguous: every valid text has exactly one tokenization, and
// Decode followed by Encode gives back the ids.
package tokenizer

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Ids of the built-in special tokens, the same in every Tokenizer.
const (
	PAD       int32 = iota // <pad>: fills a batch row after its sequence
	BOS                    // <bos>: begins a sequence
	EOS                    // <eos>: ends a sequence; sampling stops at it
	Think                  // <think>: opens the chain of thought
	EndThink               // </think>
	Answer                 // <answer>: opens the final answer
	EndAnswer              // </answer>
)

// builtins are the texts of the built-in specials, indexed by id.
var builtins = [...]string{"<pad>", "<bos>", "<eos>", "<think>", "</think>", "<answer>", "</answer>"}

// DefaultAlphabet is the alphabet of every moerl task: digits, lowercase
// letters, space, "+-*/=(),.:;?" and newline; 50 characters, so Default has
// 57 tokens. It is the one definition: the task package's Alphabet is this
// constant. It is ASCII, which the task package's byte-wise checks rely on.
const DefaultAlphabet = "0123456789abcdefghijklmnopqrstuvwxyz +-*/=(),.:;?\n"

// Tokenizer maps text to ids and back. It is immutable once built (only
// UnmarshalJSON replaces it wholesale), so it may be shared by goroutines.
// The zero value has no tokens and rejects all text.
type Tokenizer struct {
	alphabet string
	tokens   []string // the text of each id
	nSpecial int
	// ascii[c] is the id of ASCII character c plus one (0: not in the
	// alphabet), so that the zero value maps nothing.
	ascii      [utf8.RuneSelf]int32
	nonASCII   map[rune]int32
	specials   map[string]int32
	maxSpecial int // bytes of the longest special, to bound the search for '>'
}

// New builds a tokenizer for alphabet, with extraSpecials (each "<name>")
// after the built-in specials. The alphabet must be non-empty valid UTF-8
// of distinct printable characters (unicode.IsPrint, which admits the ASCII
// space but no other space) or '\n', without '<' and '>'. A special's name
// must be non-empty and printable, without spaces, '<' or '>'.
func New(alphabet string, extraSpecials ...string) (*Tokenizer, error) {
	t := &Tokenizer{
		alphabet: alphabet,
		nonASCII: make(map[rune]int32),
		specials: make(map[string]int32),
	}
	for _, s := range builtins {
		t.addSpecial(s)
	}
	for _, s := range extraSpecials {
		if err := checkSpecial(s); err != nil {
			return nil, fmt.Errorf("new tokenizer: %w", err)
		}
		if _, dup := t.specials[s]; dup {
			if slices.Contains(builtins[:], s) {
				return nil, fmt.Errorf("new tokenizer: special token %q is built in", s)
			}
			return nil, fmt.Errorf("new tokenizer: special token %q given twice", s)
		}
		t.addSpecial(s)
	}
	t.nSpecial = len(t.tokens)

	if alphabet == "" {
		return nil, fmt.Errorf("new tokenizer: empty alphabet")
	}
	first := make(map[rune]int)
	pos := 0
	for i, r := range alphabet {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(alphabet[i:]); n == 1 {
				return nil, fmt.Errorf("new tokenizer: alphabet has invalid UTF-8 byte %#02x at position %d (byte %d)", alphabet[i], pos, i)
			}
		}
		switch {
		case r == '<' || r == '>':
			return nil, fmt.Errorf("new tokenizer: alphabet has %q at position %d: '<' and '>' are reserved for special tokens", r, pos)
		case r != '\n' && !unicode.IsPrint(r):
			return nil, fmt.Errorf("new tokenizer: alphabet has non-printable character %q at position %d", r, pos)
		}
		if p, dup := first[r]; dup {
			return nil, fmt.Errorf("new tokenizer: alphabet repeats %q at position %d (first at %d)", r, pos, p)
		}
		first[r] = pos
		id := int32(len(t.tokens))
		t.tokens = append(t.tokens, string(r))
		if r < utf8.RuneSelf {
			t.ascii[r] = id + 1
		} else {
			t.nonASCII[r] = id
		}
		pos++
	}
	return t, nil
}

func (t *Tokenizer) addSpecial(s string) {
	t.specials[s] = int32(len(t.tokens))
	t.tokens = append(t.tokens, s)
	t.maxSpecial = max(t.maxSpecial, len(s))
}

// checkSpecial reports whether s has the form <name> that Encode parses.
func checkSpecial(s string) error {
	if len(s) < 3 || s[0] != '<' || s[len(s)-1] != '>' {
		return fmt.Errorf("special token %q is not of the form <name>", s)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("special token %q is not valid UTF-8", s)
	}
	for _, r := range s[1 : len(s)-1] {
		if r == '<' || r == '>' || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("special token %q has %q in its name", s, r)
		}
	}
	return nil
}

// Default returns a tokenizer of DefaultAlphabet without extra specials.
func Default() *Tokenizer {
	t, err := New(DefaultAlphabet)
	if err != nil { // DefaultAlphabet is a constant that the tests check
		panic(err)
	}
	return t
}

// VocabSize is the number of ids: specials plus alphabet characters.
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// NumSpecials is the number of special tokens, built-in and extra; they
// have the ids [0, NumSpecials()).
func (t *Tokenizer) NumSpecials() int { return t.nSpecial }

// Alphabet is the alphabet the tokenizer was built with.
func (t *Tokenizer) Alphabet() string { return t.alphabet }

// Specials returns the special tokens in id order, built-in ones first.
func (t *Tokenizer) Specials() []string { return slices.Clone(t.tokens[:t.nSpecial]) }

// ID returns the id of a token: a special token ("<think>") or a single
// alphabet character ("a").
func (t *Tokenizer) ID(token string) (int32, bool) {
	if id, ok := t.specials[token]; ok {
		return id, true
	}
	r, n := utf8.DecodeRuneInString(token)
	if n == 0 || n != len(token) {
		return 0, false
	}
	return t.runeID(r)
}

func (t *Tokenizer) runeID(r rune) (int32, bool) {
	if r < utf8.RuneSelf {
		id := t.ascii[r]
		return id - 1, id != 0
	}
	id, ok := t.nonASCII[r]
	return id, ok
}

// Token returns the text of id: a special token or one character.
func (t *Tokenizer) Token(id int32) (string, bool) {
	if id < 0 || int(id) >= len(t.tokens) {
		return "", false
	}
	return t.tokens[id], true
}

// IsSpecial reports whether id is a special token.
func (t *Tokenizer) IsSpecial(id int32) bool { return id >= 0 && int(id) < t.nSpecial }

// Encode returns the ids of s. Special tokens written in s map to their ids;
// any other character must be in the alphabet. An error names the offending
// character or text and its position, in runes and in bytes, e.g.
//
//	unknown character 'X' at position 12 (byte 12)
func (t *Tokenizer) Encode(s string) ([]int32, error) {
	return t.AppendEncode(make([]int32, 0, len(s)), s)
}

// AppendEncode appends the ids of s to dst, like Encode. On error it
// returns dst as it was.
func (t *Tokenizer) AppendEncode(dst []int32, s string) ([]int32, error) {
	start := len(dst)
	pos := 0 // in runes
	for i := 0; i < len(s); pos++ {
		c := s[i]
		if c == '<' {
			special, err := t.specialAt(s, i, pos)
			if err != nil {
				return dst[:start], err
			}
			dst = append(dst, t.specials[special])
			i += len(special)
			pos += utf8.RuneCountInString(special) - 1
			continue
		}
		if c < utf8.RuneSelf {
			id := t.ascii[c]
			if id == 0 {
				return dst[:start], fmt.Errorf("unknown character %q at position %d (byte %d)", rune(c), pos, i)
			}
			dst = append(dst, id-1)
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			return dst[:start], fmt.Errorf("invalid UTF-8 byte %#02x at position %d (byte %d)", c, pos, i)
		}
		id, ok := t.nonASCII[r]
		if !ok {
			return dst[:start], fmt.Errorf("unknown character %q at position %d (byte %d)", r, pos, i)
		}
		dst = append(dst, id)
		i += n
	}
	return dst, nil
}

// specialAt returns the special token that starts at byte i (rune pos) of s.
func (t *Tokenizer) specialAt(s string, i, pos int) (string, error) {
	// Look for the closing '>' no further than the longest special reaches,
	// so that a stray '<' in a long text costs little.
	window := s[i:min(len(s), i+max(t.maxSpecial, 1))]
	end := strings.IndexByte(window, '>')
	if end >= 0 && !strings.Contains(window[1:end], "<") {
		cand := window[:end+1]
		if _, ok := t.specials[cand]; ok {
			return cand, nil
		}
		return "", fmt.Errorf("unknown special token %q at position %d (byte %d)", cand, pos, i)
	}
	return "", fmt.Errorf("'<' at position %d (byte %d) does not start a special token", pos, i)
}

// Decode returns the text of ids, special tokens written as <name>. An id
// outside [0, VocabSize()) is an error naming it and its index.
func (t *Tokenizer) Decode(ids []int32) (string, error) {
	var b strings.Builder
	b.Grow(len(ids))
	for i, id := range ids {
		if id < 0 || int(id) >= len(t.tokens) {
			return "", fmt.Errorf("token id %d at index %d is out of range [0, %d)", id, i, len(t.tokens))
		}
		b.WriteString(t.tokens[id])
	}
	return b.String(), nil
}

// DecodeLossy is Decode with U+FFFD (�) in place of each id out of range,
// for showing what a model whose vocabulary is larger than the tokenizer's
// produced.
func (t *Tokenizer) DecodeLossy(ids []int32) string {
	var b strings.Builder
	b.Grow(len(ids))
	for _, id := range ids {
		if id < 0 || int(id) >= len(t.tokens) {
			b.WriteRune(utf8.RuneError)
			continue
		}
		b.WriteString(t.tokens[id])
	}
	return b.String()
}

// Spec is everything that defines a Tokenizer, in the form it takes in
// JSON (a checkpoint's config carries it).
type Spec struct {
	// Specials are all special tokens in id order, the built-in ones first;
	// they are stored so that a tokenizer cannot be rebuilt with other ids.
	Specials []string `json:"specials"`
	// Alphabet is the characters in id order.
	Alphabet string `json:"alphabet"`
}

// Spec returns the tokenizer's definition.
func (t *Tokenizer) Spec() Spec { return Spec{Specials: t.Specials(), Alphabet: t.alphabet} }

// FromSpec rebuilds the tokenizer that s describes. The built-in specials
// must come first and match this moerl's.
func FromSpec(s Spec) (*Tokenizer, error) {
	if len(s.Specials) < len(builtins) {
		return nil, fmt.Errorf("tokenizer spec has %d special tokens, want at least the %d built-in ones", len(s.Specials), len(builtins))
	}
	for id, want := range builtins {
		if s.Specials[id] != want {
			return nil, fmt.Errorf("tokenizer spec has special %d = %q, this moerl has %q", id, s.Specials[id], want)
		}
	}
	return New(s.Alphabet, s.Specials[len(builtins):]...)
}

// MarshalJSON writes the tokenizer's Spec.
func (t *Tokenizer) MarshalJSON() ([]byte, error) { return json.Marshal(t.Spec()) }

// UnmarshalJSON replaces t with the tokenizer that a Spec in JSON describes.
func (t *Tokenizer) UnmarshalJSON(b []byte) error {
	var s Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("tokenizer spec: %w", err)
	}
	nt, err := FromSpec(s)
	if err != nil {
		return err
	}
	*t = *nt
	return nil
}
