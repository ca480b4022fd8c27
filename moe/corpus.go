package moe

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe/tokenizer"
)

// Corpus is a list of tokenized documents, each <bos> text <eos>, from which
// training batches draw rows at random.
type Corpus struct {
	Docs [][]int32
}

// EncodeCorpus tokenizes documents; an error names the document (1-based)
// and the problem.
func EncodeCorpus(docs []string, tok *tokenizer.Tokenizer) (*Corpus, error) {
	return encodeDocs(docs, nil, tok, "document")
}

// encodeDocs tokenizes docs; lines, if given, are their line numbers for
// error messages, which start with where.
func encodeDocs(docs []string, lines []int, tok *tokenizer.Tokenizer, where string) (*Corpus, error) {
	c := &Corpus{}
	for i, d := range docs {
		ids, err := tok.Encode(d)
		if err != nil {
			n := i + 1
			if lines != nil {
				n = lines[i]
			}
			return nil, fmt.Errorf("%s %d: %w", where, n, err)
		}
		doc := append([]int32{tokenizer.BOS}, ids...)
		c.Docs = append(c.Docs, append(doc, tokenizer.EOS))
	}
	if len(c.Docs) == 0 {
		return nil, fmt.Errorf("corpus has no documents")
	}
	return c, nil
}

// ReadCorpus reads a text file with one document per line (blank lines
// skipped; the literal text `\n` in a line stands for a newline inside the
// document) and tokenizes it.
func ReadCorpus(path string, tok *tokenizer.Tokenizer) (*Corpus, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read corpus: %w", err)
	}
	defer f.Close()
	return ParseCorpus(f, "corpus "+path, tok)
}

// ParseCorpus reads a corpus as ReadCorpus does from r; errors start with
// name and the line number.
func ParseCorpus(r io.Reader, name string, tok *tokenizer.Tokenizer) (*Corpus, error) {
	var docs []string
	var lines []int
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		docs = append(docs, strings.ReplaceAll(line, `\n`, "\n"))
		lines = append(lines, n)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s has no documents", name)
	}
	return encodeDocs(docs, lines, tok, name+" line")
}

// Batch draws rows documents at random with rng into a batch of T tokens.
func (c *Corpus) Batch(rng *engine.RNG, rows, T int) *Batch {
	docs := make([][]int32, rows)
	for r := range docs {
		docs[r] = c.Docs[rng.IntN(len(c.Docs))]
	}
	return NewBatch(docs, T, tokenizer.PAD)
}

// SyntheticKinds are the built-in toy corpora.
var SyntheticKinds = []string{"reverse", "copy"}

// Synthetic makes n documents of a toy task: "reverse" (`abc=cba`) or
// "copy" (`abc=abc`), 3 to 12 letters from a–h, deterministic from seed.
func Synthetic(kind string, n int, seed uint64) ([]string, error) {
	if kind != "reverse" && kind != "copy" {
		return nil, fmt.Errorf("unknown synthetic corpus %q (known: %s)", kind, strings.Join(SyntheticKinds, ", "))
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	docs := make([]string, n)
	for i := range docs {
		w := make([]byte, 3+rng.IntN(10))
		for j := range w {
			w[j] = byte('a' + rng.IntN(8))
		}
		out := append([]byte(nil), w...)
		if kind == "reverse" {
			for a, b := 0, len(out)-1; a < b; a, b = a+1, b-1 {
				out[a], out[b] = out[b], out[a]
			}
		}
		docs[i] = string(w) + "=" + string(out)
	}
	return docs, nil
}
