package task

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// maxLineBytes bounds one JSONL line; problems are a few hundred bytes.
const maxLineBytes = 1 << 20

// WriteJSONL writes one problem per line as JSON.
func WriteJSONL(w io.Writer, ps []Problem) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for i, p := range ps {
		if err := enc.Encode(p); err != nil {
			return fmt.Errorf("write problem %d (%s): %w", i, p.ID, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write problems: %w", err)
	}
	return nil
}

// ReadJSONL reads problems written by WriteJSONL, skipping blank lines. It
// checks each problem: a known task, prompt, CoT and answer in the
// alphabet, no unknown fields, and a stored answer that the task verifies
// (which also checks that the prompt is well formed). A missing ID is
// filled in from the prompt. Errors name the line.
func ReadJSONL(r io.Reader) ([]Problem, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLineBytes)
	var ps []Problem
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		p, err := decodeProblem(b)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		ps = append(ps, p)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d: longer than %d bytes", line+1, maxLineBytes)
		}
		return nil, fmt.Errorf("read problems after line %d: %w", line, err)
	}
	return ps, nil
}

func decodeProblem(b []byte) (Problem, error) {
	var p Problem
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, fmt.Errorf("decode problem: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return p, errors.New("text after the JSON object")
	}
	t, err := Get(p.Task)
	if err != nil {
		return p, err
	}
	if p.ID == "" {
		p.ID = problemID(p.Task, p.Prompt)
	}
	for _, f := range []struct{ name, text string }{{"prompt", p.Prompt}, {"cot", p.CoT}, {"answer", p.Answer}} {
		if err := CheckAlphabet(f.text); err != nil {
			return p, fmt.Errorf("problem %s: %s: %w", p.ID, f.name, err)
		}
	}
	if ok, why := t.Verify(p, p.Answer); !ok {
		return p, fmt.Errorf("problem %s: stored answer does not verify: %s", p.ID, why)
	}
	return p, nil
}
