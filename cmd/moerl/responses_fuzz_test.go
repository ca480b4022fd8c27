package main

import (
	"strings"
	"testing"
)

// FuzzParseResponses: any input parses or fails with an error naming a
// line; a parsed response always names its problem.
func FuzzParseResponses(f *testing.F) {
	for _, s := range []string{
		`{"id":"add-1","response":"<think>x</think><answer>3</answer>"}`,
		`{"index":0,"response":""}` + "\n\n" + `{"index":1,"response":"a"}`,
		`{"index":0,"response":"x","extra":1}`,
		`{"response":"no id"}`,
		`{"index":0} {"index":1}`,
		"\xff\xfe", `[1,2]`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := parseResponses(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "line ") && !strings.Contains(err.Error(), "token too long") {
				t.Errorf("error %q does not name a line", err)
			}
			return
		}
		for _, r := range rs {
			if r.ID == "" && r.Index == nil {
				t.Errorf("parsed a response with neither id nor index: %+v", r)
			}
		}
	})
}
