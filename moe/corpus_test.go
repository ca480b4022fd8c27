package moe

import (
	"bytes"
	"strings"
	"testing"

	"github.com/moerl/moerl/moe/tokenizer"
)

func TestParseCorpus(t *testing.T) {
	tok := tokenizer.Default()
	c, err := ParseCorpus(strings.NewReader("ab=ab\r\n\n  \nq\\nr\n"), "corpus x", tok)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Docs) != 2 || len(c.Docs[1]) != 5 { // <bos> q \n r <eos>
		t.Errorf("docs %v", c.Docs)
	}
	_, err = ParseCorpus(strings.NewReader("ok\n\nfine\nBad\n"), "corpus x", tok)
	if err == nil || !strings.Contains(err.Error(), "corpus x line 4: unknown character 'B'") {
		t.Errorf("error %v: want it to name line 4 and 'B'", err)
	}
	if _, err := ParseCorpus(strings.NewReader("\n\n"), "corpus x", tok); err == nil {
		t.Error("an empty corpus was accepted")
	}
}

// FuzzParseCorpus: any input gives documents framed by <bos> … <eos>, or
// an error that names the corpus.
func FuzzParseCorpus(f *testing.F) {
	for _, s := range []string{"ab=ab\n", "a<think>b</think>\n", "\xff\n", "x\\n\\ny", "<nope>", ""} {
		f.Add([]byte(s))
	}
	tok := tokenizer.Default()
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCorpus(bytes.NewReader(data), "corpus fuzz", tok)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "corpus fuzz") {
				t.Errorf("error %q does not name the corpus", err)
			}
			return
		}
		for _, d := range c.Docs {
			if len(d) < 2 || d[0] != tokenizer.BOS || d[len(d)-1] != tokenizer.EOS {
				t.Errorf("document %v is not framed by <bos> … <eos>", d)
			}
		}
	})
}
