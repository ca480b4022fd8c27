package report

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
)

// Metrics is one run's per-step log (its metrics.jsonl), held column by
// column.
type Metrics struct {
	// Steps is the x of each row: its "step" field, or its 1-based line
	// number when no line has one. Rows are in increasing step order with
	// one row per step.
	Steps []float64
	// Fields names the numeric fields ("step" excluded) in the order they
	// first appear. true and false count as numbers, 1 and 0.
	Fields []string
	// Values holds each field of Fields, aligned with Steps: NaN where a
	// line lacks the field or holds null or a non-number there.
	Values map[string][]float64
	// Other names the fields that never held a number (strings, arrays,
	// objects); they are listed in a report, not plotted.
	Other []string
	// Notes says what the parser tolerated: an unfinished last line, steps
	// logged twice.
	Notes []string
}

// Has reports whether field has at least one finite value.
func (m *Metrics) Has(field string) bool {
	if m == nil {
		return false
	}
	for _, v := range m.Values[field] {
		if !math.IsNaN(v) {
			return true
		}
	}
	return false
}

// ReadMetrics reads a metrics.jsonl file; see ParseMetrics.
func ReadMetrics(path string) (*Metrics, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseMetrics(f, path)
}

// ParseMetrics reads JSON Lines of per-step metrics: each line one JSON
// object, fields of any name (unknown ones are kept). It is strict about
// the format: a line that is not one JSON object, a number out of float64's
// range, a field given twice in a line, a non-numeric "step", or a line
// without "step" among lines with one is an error "name:line: …". Blank
// lines are skipped. Two things are tolerated and noted in Notes: a last
// line with no newline that does not parse (a run still writing it, or
// killed mid-write), and steps logged more than once, of which the later
// line is kept (a resumed run that did not truncate its log).
func ParseMetrics(r io.Reader, name string) (*Metrics, error) {
	m := &Metrics{Values: map[string][]float64{}}
	other := map[string]bool{} // fields seen with a non-number
	var hasStep []bool
	br := bufio.NewReader(r)
	rows := 0
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s:%d: %w", name, lineNo, err)
		}
		eof := err != nil
		if len(bytes.TrimSpace(line)) > 0 {
			fields, order, perr := parseLine(line)
			if perr != nil {
				if eof && !bytes.HasSuffix(line, []byte("\n")) {
					m.Notes = append(m.Notes, fmt.Sprintf("%s:%d: unfinished last line (no newline, %v): ignored", name, lineNo, perr))
					break
				}
				return nil, fmt.Errorf("%s:%d: %w", name, lineNo, perr)
			}
			step, ok := fields["step"]
			if ok && (step.kind != numberValue || math.IsNaN(step.num)) {
				return nil, fmt.Errorf("%s:%d: \"step\" is not a number", name, lineNo)
			}
			if rows > 0 && ok != hasStep[0] {
				return nil, fmt.Errorf("%s:%d: line has %s \"step\" field, unlike the first line", name, lineNo, map[bool]string{true: "a", false: "no"}[ok])
			}
			hasStep = append(hasStep, ok)
			if ok {
				m.Steps = append(m.Steps, step.num)
			} else {
				m.Steps = append(m.Steps, float64(rows+1))
			}
			for _, k := range order {
				if k == "step" {
					continue
				}
				v := fields[k]
				if v.kind == otherValue {
					other[k] = true
				}
				col, seen := m.Values[k]
				if v.kind != numberValue {
					if !seen {
						continue
					}
				} else if !seen {
					col = make([]float64, rows, rows+1)
					for i := range col {
						col[i] = math.NaN()
					}
					m.Fields = append(m.Fields, k)
				}
				val := math.NaN()
				if v.kind == numberValue {
					val = v.num
				}
				m.Values[k] = append(col, val)
			}
			rows++
			for _, k := range m.Fields {
				if len(m.Values[k]) < rows {
					m.Values[k] = append(m.Values[k], math.NaN())
				}
			}
		}
		if eof {
			break
		}
	}
	for k := range other {
		if _, numeric := m.Values[k]; !numeric {
			m.Other = append(m.Other, k)
		}
	}
	slices.Sort(m.Other)
	m.dedupe(name)
	return m, nil
}

// dedupe orders the rows by step and keeps the last line of each step.
func (m *Metrics) dedupe(name string) {
	n := len(m.Steps)
	if n < 2 {
		return
	}
	sorted := true
	for i := 1; i < n; i++ {
		if !(m.Steps[i] > m.Steps[i-1]) {
			sorted = false
			break
		}
	}
	if sorted {
		return
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return m.Steps[idx[a]] < m.Steps[idx[b]] })
	keep := idx[:0:0]
	repeated := 0
	for i, j := range idx {
		if i+1 < n && m.Steps[idx[i+1]] == m.Steps[j] {
			repeated++
			continue // a later line of the same step follows
		}
		keep = append(keep, j)
	}
	steps := make([]float64, len(keep))
	for i, j := range keep {
		steps[i] = m.Steps[j]
	}
	m.Steps = steps
	for k, col := range m.Values {
		c := make([]float64, len(keep))
		for i, j := range keep {
			c[i] = col[j]
		}
		m.Values[k] = c
	}
	if repeated > 0 {
		m.Notes = append(m.Notes, fmt.Sprintf("%s: %d lines repeat an earlier step (a resumed run?): the later line of each step is kept", name, repeated))
	} else {
		m.Notes = append(m.Notes, fmt.Sprintf("%s: steps out of order: sorted", name))
	}
}

type valueKind int

const (
	nullValue valueKind = iota
	numberValue
	otherValue // string, array or object
)

type value struct {
	kind valueKind
	num  float64
}

// parseLine decodes one JSON object, keeping its field order.
func parseLine(line []byte) (map[string]value, []string, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, fmt.Errorf("not JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, fmt.Errorf("not a JSON object")
	}
	fields := map[string]value{}
	var order []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("bad JSON: %w", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, nil, fmt.Errorf("bad JSON: field name %v", tok)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, fmt.Errorf("field %q: bad JSON: %w", key, err)
		}
		if _, dup := fields[key]; dup {
			return nil, nil, fmt.Errorf("field %q given twice", key)
		}
		v, err := classify(raw)
		if err != nil {
			return nil, nil, fmt.Errorf("field %q: %w", key, err)
		}
		fields[key] = v
		order = append(order, key)
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, nil, fmt.Errorf("bad JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("more than one JSON value on the line")
	}
	return fields, order, nil
}

func classify(raw json.RawMessage) (value, error) {
	s := string(bytes.TrimSpace(raw))
	switch {
	case s == "null":
		return value{kind: nullValue}, nil
	case s == "true":
		return value{numberValue, 1}, nil
	case s == "false":
		return value{numberValue, 0}, nil
	case s[0] == '"' || s[0] == '[' || s[0] == '{':
		return value{kind: otherValue}, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return value{}, fmt.Errorf("number %s out of range", s)
	}
	return value{numberValue, f}, nil
}
