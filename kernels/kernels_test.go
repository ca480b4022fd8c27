package kernels

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moerl/moerl/engine"
)

// TestModulesMatchPTX holds Modules equal to the .entry declarations of the
// embedded PTX, so a kernel renamed in a .cu file without `make ptx`, or a
// name mistyped in the list, fails here rather than on a GPU.
func TestModulesMatchPTX(t *testing.T) {
	seen := map[string]string{}
	for _, m := range Modules {
		ptx, err := PTX(m.Name)
		if err != nil {
			t.Fatal(err)
		}
		entries, err := Entries(ptx)
		if err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
		var got []string
		for _, e := range entries {
			got = append(got, e.Name)
			if len(e.Params) == 0 {
				t.Errorf("%s: kernel %s parsed with no parameters", m.Name, e.Name)
			}
			if e.MaxThreads == 0 {
				t.Errorf("%s: kernel %s has no __launch_bounds__", m.Name, e.Name)
			}
		}
		want := slices.Clone(m.Kernels)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("module %s: PTX defines %v, Modules lists %v", m.Name, got, want)
		}
		for _, k := range m.Kernels {
			if other, dup := seen[k]; dup {
				t.Errorf("kernel %s is listed in modules %s and %s", k, other, m.Name)
			}
			seen[k] = m.Name
		}
	}
	files, err := ptxFiles.ReadDir("ptx")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(f.Name(), ".ptx")
		if !slices.ContainsFunc(Modules, func(m Module) bool { return m.Name == name }) {
			t.Errorf("embedded ptx/%s is not in Modules", f.Name())
		}
	}
}

// TestSourcesHaveTwins checks that every .cu file has its PTX and opens
// with a comment naming the engine.Backend methods it must match.
func TestSourcesHaveTwins(t *testing.T) {
	methods := map[string]bool{}
	bt := reflect.TypeFor[engine.Backend]()
	for i := range bt.NumMethod() {
		methods[bt.Method(i).Name] = true
	}
	twin := regexp.MustCompile(`engine\.Backend\.([A-Za-z0-9]+)`)
	sources, err := filepath.Glob("*.cu")
	if err != nil {
		t.Fatal(err)
	}
	if len(sources) == 0 {
		t.Skip("the .cu sources are not here (a test binary run elsewhere)")
	}
	if len(sources) != len(Modules) {
		t.Errorf("%d .cu files, %d modules", len(sources), len(Modules))
	}
	for _, src := range sources {
		name := strings.TrimSuffix(src, ".cu")
		if _, err := PTX(name); err != nil {
			t.Errorf("%s has no embedded PTX (run make ptx): %v", src, err)
		}
		text, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		// The header is the leading run of // comment lines.
		var header strings.Builder
		for _, line := range strings.Split(string(text), "\n") {
			if !strings.HasPrefix(line, "//") {
				break
			}
			header.WriteString(line + "\n")
		}
		h := strings.Join(strings.Fields(strings.ReplaceAll(header.String(), "//", " ")), " ")
		if !strings.Contains(h, "CPU twin:") {
			t.Errorf("%s: header does not name its CPU twin (a \"CPU twin:\" line)", src)
			continue
		}
		_, after, _ := strings.Cut(h, "CPU twin:")
		found := twin.FindAllStringSubmatch(after, -1)
		if len(found) == 0 {
			t.Errorf("%s: CPU twin line names no engine.Backend method", src)
		}
		for _, m := range found {
			if !methods[m[1]] {
				t.Errorf("%s: CPU twin engine.Backend.%s is not a Backend method", src, m[1])
			}
		}
	}
}

func TestEntriesParse(t *testing.T) {
	ptx := []byte(`
.visible .entry k1(
	.param .u64 k1_param_0,
	.param .u32 k1_param_1,
	.param .f32 k1_param_2,
	.param .u64 k1_param_3
)
.maxntid 256, 1, 1
{
	ret;
}
.visible .entry k2()
{
}
.entry k3(
	.param .f64 k3_param_0)
.maxntid 32, 2, 1
{
}
`)
	got, err := Entries(ptx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{Name: "k1", Params: []ParamType{U64, U32, F32, U64}, MaxThreads: 256},
		{Name: "k2"},
		{Name: "k3", Params: []ParamType{F64}, MaxThreads: 64},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Entries = %+v, want %+v", got, want)
	}
	for _, bad := range []string{
		".visible .entry k(\n\t.param .u8 x\n)",
		".visible .entry k(\n\t.param .u32 x,",
		".visible .entry k(\n)\n.maxntid 0, 1, 1",
		".visible .entry (\n)",
	} {
		if _, err := Entries([]byte(bad)); err == nil {
			t.Errorf("Entries(%q) succeeded, want an error", bad)
		}
	}
}

func FuzzEntries(f *testing.F) {
	for _, m := range Modules[:3] {
		ptx, err := PTX(m.Name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(ptx)
	}
	f.Add([]byte(".visible .entry k(\n\t.param .u64 a\n)\n.maxntid 128\n"))
	f.Fuzz(func(t *testing.T, ptx []byte) {
		entries, err := Entries(ptx)
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.Name == "" || e.MaxThreads < 0 {
				t.Fatalf("bad entry %+v", e)
			}
			for _, p := range e.Params {
				if p.Size() != 4 && p.Size() != 8 {
					t.Fatalf("bad parameter %v", p)
				}
			}
		}
	})
}
