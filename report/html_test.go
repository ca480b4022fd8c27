package report

import (
	"bytes"
	"crypto/sha256"
	"encoding/xml"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHTML(t *testing.T) {
	runs, err := Load(studyFixture(t))
	if err != nil {
		t.Fatal(err)
	}
	page, err := HTML(runs, Options{Smooth: 5})
	if err != nil {
		t.Fatal(err)
	}
	n := checkXML(t, page)
	// base: loss, aux_loss, grad_norm, lr, tokens, tokens_per_s (6);
	// RL: 19 known fields logged + new_thing (20); evaluation: pass@k,
	// maj@k, one bin (3)
	if n["svg"] != 6+20+3 || n["script"] != 0 || n["img"] != 0 || n["link"] != 0 {
		t.Errorf("elements %v: want 29 inline SVGs and nothing loaded", n)
	}
	// nothing outside the page: no src or href attribute, no url()
	d := xml.NewDecoder(bytes.NewReader(page))
	d.Entity = xml.HTMLEntity
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			for _, a := range se.Attr {
				if a.Name.Local == "src" || a.Name.Local == "href" {
					t.Errorf("<%s %s=%q> loads a resource", se.Name.Local, a.Name.Local, a.Value)
				}
			}
		}
	}
	if bytes.Contains(page, []byte("url(")) || bytes.Contains(page, []byte("@import")) {
		t.Error("the page's CSS loads a resource")
	}
	for _, want := range []string{
		"<h2>Pretraining and fine-tuning</h2>", "<h2>Reinforcement learning</h2>", "<h2>Evaluation</h2>",
		"<h3>Routing</h3>", "<h3>Other metrics</h3>", `aria-label="new_thing"`, `aria-label="KL to the reference policy"`,
		"pass@k (16 problems, n = 8)", "pass@k, bin digits2 (8 problems)", "moving average over 5 steps",
		"<summary>grpo: ", "&#34;preset&#34;: &#34;grpo&#34;",
	} {
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("page lacks %q", want)
		}
	}
}

func TestMarkdown(t *testing.T) {
	runs, err := Load(studyFixture(t))
	if err != nil {
		t.Fatal(err)
	}
	md, err := Markdown(runs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := string(md)
	for _, want := range []string{
		"| base | pretrain | 60 | 16 problems, n = 8 |",
		"### grpo (rl, 30 steps)",
		"| `loss` | cross-entropy (nats/token) | 3.807 | 1.055 | 1.055 | 3.807 |",
		"| `reward_mean` | reward per response | 0.0952 | 0.9502 | 0.0952 | 0.9502 |",
		"| `routing_disagreement` |",
		"Other metrics (plotted in the HTML page): new\\_thing",
		"## pass@k (16 problems, n = 8)\n\n| k | base | grpo | ppo |",
		"| 1 | 0.2500 | 0.4000 | 0.3000 |",
		"## maj@k",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("markdown lacks %q:\n%s", want, s)
		}
	}
}

// TestWrite: the report lands in the folder, atomically (no temporary
// file left), and no run file changes.
func TestWrite(t *testing.T) {
	dir := studyFixture(t)
	before := tree(t, dir)
	runs, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // a second report replaces the first
		htmlPath, mdPath, err := Write(dir, runs, Options{Smooth: 3})
		if err != nil {
			t.Fatal(err)
		}
		if htmlPath != filepath.Join(dir, HTMLFile) || mdPath != filepath.Join(dir, MarkdownFile) {
			t.Errorf("wrote %s and %s", htmlPath, mdPath)
		}
	}
	after := tree(t, dir)
	for path, sum := range before {
		if after[path] != sum {
			t.Errorf("%s changed", path)
		}
	}
	for path := range after {
		if _, ok := before[path]; !ok && path != HTMLFile && path != MarkdownFile {
			t.Errorf("left %s behind", path)
		}
	}
	// a new folder is made
	out := filepath.Join(t.TempDir(), "a", "b")
	if _, _, err := Write(out, runs, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, HTMLFile)); err != nil {
		t.Error(err)
	}
	if _, _, err := Write(out, runs, Options{Smooth: -1}); err == nil {
		t.Error("negative smoothing accepted")
	}
}

// tree maps each file under dir to its content's hash.
func tree(t *testing.T, dir string) map[string][32]byte {
	out := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		rel, _ := filepath.Rel(dir, path)
		out[rel] = sha256.Sum256(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLongRunThinned: a long log is drawn from at most maxPoints points
// per curve (bucket means), so the page stays small.
func TestLongRunThinned(t *testing.T) {
	n := 5 * maxPoints / 2
	x := make([]float64, n)
	for i := range x {
		x[i] = float64(i)
	}
	x[7] = nan
	got := thin(x)
	if len(got) != 1 || len(got[0]) != maxPoints {
		t.Fatalf("thin kept %d points of %d", len(got[0]), n)
	}
	// buckets of 2 or 3 points, NaN ignored
	if got[0][0] != 0.5 || got[0][3] != 8.5 || got[0][maxPoints-1] != float64(n-2) {
		t.Errorf("bucket means %v … %v", got[0][:4], got[0][maxPoints-1])
	}

	dir := t.TempDir()
	writeFile(t, dir, "long/metrics.jsonl", lmLog(n))
	runs, err := Load(filepath.Join(dir, "long"))
	if err != nil {
		t.Fatal(err)
	}
	page, err := HTML(runs, Options{Smooth: 50})
	if err != nil {
		t.Fatal(err)
	}
	checkXML(t, page)
	if len(page) > 2<<20 {
		t.Errorf("page of a %d-step run is %d bytes", n, len(page))
	}
}
