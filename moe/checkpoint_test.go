package moe

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/engine/cpu"
	"github.com/moerl/moerl/moe/tokenizer"
)

// entry is a tensor of a crafted checkpoint's index.
type entry struct {
	Name  string `json:"name"`
	DType string `json:"dtype"`
	Shape []int  `json:"shape"`
}

// zeroFrame is a zstd frame of n zero bytes made of 128 KiB RLE blocks
// (4 bytes each), so that a file can honestly declare gigabytes in
// kilobytes.
func zeroFrame(n int64) []byte {
	// The window is what an honest encoder picks: n rounded up to a power
	// of two, from 1 KiB to 128 KiB, the largest block.
	log := 10
	for log < 17 && int64(1)<<log < n {
		log++
	}
	b := binary.LittleEndian.AppendUint32(nil, 0xFD2FB528)
	b = append(b, 0xC0, byte(log-10)<<3) // 8-byte content size, no single segment; the window
	b = binary.LittleEndian.AppendUint64(b, uint64(n))
	for first := true; n > 0 || first; first = false {
		k := min(n, int64(1)<<log)
		n -= k
		h := uint32(k) << 3 // an empty raw block, or
		if k > 0 {
			h |= 1 << 1 // an RLE block
		}
		if n == 0 {
			h |= 1 // the last
		}
		b = append(b, byte(h), byte(h>>8), byte(h>>16))
		if k > 0 {
			b = append(b, 0)
		}
	}
	return b
}

// craft writes a checkpoint file with a valid checksum and zstd frame
// (zeros) around any header, as a buggy or hostile writer could.
func craft(t testing.TB, kind, config, state string, index []entry) string {
	t.Helper()
	type located struct {
		entry
		Offset int64 `json:"offset"`
		Length int64 `json:"length"`
	}
	var raw int64
	tensors := make([]located, len(index))
	for i, e := range index {
		n := int64(4)
		for _, d := range e.Shape {
			n *= int64(d)
		}
		tensors[i] = located{e, raw, n}
		raw += n
	}
	header, err := json.Marshal(map[string]any{"kind": kind, "config": json.RawMessage(config), "state": json.RawMessage(state), "tensors": tensors})
	if err != nil {
		t.Fatal(err)
	}
	payload := zeroFrame(raw)
	b := []byte("MOERLCK\x00")
	b = binary.LittleEndian.AppendUint32(b, engine.CheckpointVersion)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(header)))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(payload)))
	b = append(append(b, header...), payload...)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
	path := filepath.Join(t.TempDir(), "crafted.ck")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// modelIndex is the index of a model checkpoint of cfg, with the AdamW
// moments when opt.
func modelIndex(cfg Config, opt bool) []entry {
	lay := newLayout(cfg)
	var idx []entry
	for _, p := range lay.params {
		idx = append(idx, entry{p.Name, "f32", p.Shape})
	}
	if opt {
		idx = append(idx, entry{"adamw.m", "f32", []int{lay.total}}, entry{"adamw.v", "f32", []int{lay.total}})
	}
	return idx
}

func configJSON(t testing.TB, cfg Config, tok *tokenizer.Tokenizer) string {
	t.Helper()
	b, err := json.Marshal(checkpointConfig{Model: cfg, Tokenizer: tok})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func heapAllocated(f func()) uint64 {
	runtime.GC()
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

// TestLoadCheckpointRefusesBeforeReading: a file whose header does not
// describe exactly the model of its config is refused with an error naming
// the file and the problem, before any tensor is decompressed, however
// much the file claims: the loader allocates little more than the file.
func TestLoadCheckpointRefusesBeforeReading(t *testing.T) {
	tok := tokenizer.Default()
	cfg := tinyConfig(false)
	cfg.Vocab = tok.VocabSize()
	good := configJSON(t, cfg, tok)
	state := `{"stage":"pretrain","step":3}`
	total := newLayout(cfg).total
	idx := modelIndex(cfg, true)
	edit := func(f func(idx []entry) []entry) []entry { return f(slices.Clone(idx)) }
	with := func(f func(c *Config)) string {
		c := cfg
		f(&c)
		return configJSON(t, c, tok)
	}
	const four = 1 << 30 // elements of a 4 GiB f32 tensor
	tiny, _ := Preset("moe-tiny")
	tiny.Vocab = tok.VocabSize()
	tests := []struct {
		name, kind, config, state string
		index                     []entry
		want                      string
	}{
		{"another kind declaring 4 GiB", "model", `{}`, `{}`, []entry{{"zeros", "f32", []int{four}}}, `holds "model", not a model (moerl-model)`},
		{"no kind", "", good, state, idx, `holds "", not a model (moerl-model)`},
		{"a 10^12-parameter model", CheckpointKind, with(func(c *Config) { c.DModel, c.Vocab, c.Heads = 1<<19, 1<<20, 2 }), state,
			[]entry{{"embed", "f32", []int{16}}}, "model config: 3.299e+12 parameters exceed the limit of 1073741824 (moe.MaxParams)"},
		{"a billion layers", CheckpointKind, with(func(c *Config) { c.Layers = 1e9 }), state, idx, "model config: layers 1000000000 exceeds the limit of 1024"},
		{"a context of 2^40", CheckpointKind, with(func(c *Config) { c.MaxSeq = 1 << 40 }), state, idx, "model config: max_seq 1099511627776 exceeds the limit of 65536"},
		{"a config that makes no model", CheckpointKind, with(func(c *Config) { c.Heads = 3 }), state, idx, "model config: d_model 16 is not a multiple of heads 3"},
		{"config not an object", CheckpointKind, `[1,2]`, state, idx, "bad config: json: cannot unmarshal array"},
		{"no tokenizer", CheckpointKind, `{"model":` + string(mustJSON(cfg)) + `}`, state, idx, "no tokenizer"},
		{"a tokenizer larger than the vocab", CheckpointKind, with(func(c *Config) { c.Vocab = 4 }), state,
			modelIndex(Config{Vocab: 4, DModel: 16, Layers: 2, Heads: 2, Experts: 3, TopK: 2, ExpertHidden: 12, MaxSeq: 8}, false),
			fmt.Sprintf("tokenizer has %d tokens, model vocab is 4", tok.VocabSize())},
		{"bad state", CheckpointKind, good, `"step 3"`, idx, "bad training state: json: cannot unmarshal string"},
		{"an extra 4 GiB tensor", CheckpointKind, good, state, edit(func(i []entry) []entry { return append(i, entry{"zeros", "f32", []int{four}}) }),
			`its tensors are not those of its model config: the index declares tensor "zeros" (f32 [1073741824]), which is not expected`},
		{"a 4 GiB embedding", CheckpointKind, good, state, edit(func(i []entry) []entry { i[0].Shape = []int{four / 16, 16}; return i }),
			fmt.Sprintf(`tensor "embed" has shape [67108864 16], want [%d 16]`, cfg.Vocab)},
		{"a tensor of the wrong shape", CheckpointKind, good, state, edit(func(i []entry) []entry { i[1].Shape = []int{16, 8}; return i }),
			`tensor "layer0.wq" has shape [16 8], want [16 16]`},
		{"a tensor missing", CheckpointKind, good, state, edit(func(i []entry) []entry { return slices.Delete(i, 9, 10) }),
			`tensor "layer1.wq" (f32 [16 16]) is missing`},
		{"a tensor of the wrong dtype", CheckpointKind, good, state, edit(func(i []entry) []entry { i[0].DType = "i32"; return i }),
			`tensor "embed" is i32, want f32`},
		{"one moment only", CheckpointKind, good, state, edit(func(i []entry) []entry { return i[:len(i)-1] }),
			"it has only one of the AdamW moments adamw.m and adamw.v"},
		{"moments of the wrong size", CheckpointKind, good, state, edit(func(i []entry) []entry { i[len(i)-1].Shape = []int{four}; return i }),
			fmt.Sprintf(`tensor "adamw.v" has shape [1073741824], want [%d]`, total)},
		{"a large model of zeros in a few KB", CheckpointKind, configJSON(t, tiny, tok), state, modelIndex(tiny, true),
			fmt.Sprintf("its payload of %d bytes is too small for the %d parameters its config declares: weights do not compress below 1/16 of their %d bytes", len(zeroFrame(int64(12*newLayout(tiny).total))), newLayout(tiny).total, 4*newLayout(tiny).total)},
		{"a dense model's tensors", CheckpointKind, good, state, modelIndex(tinyConfig(true), false),
			`tensor "embed" has shape [16 16], want [` + fmt.Sprint(cfg.Vocab) + ` 16]`},
	}
	be := cpu.New()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := craft(t, tc.kind, tc.config, tc.state, tc.index)
			st, _ := os.Stat(path)
			var err error
			alloc := heapAllocated(func() { _, _, _, err = LoadCheckpoint(path, be) })
			if err == nil {
				t.Fatal("loaded")
			}
			prefix := "load checkpoint " + path + ": "
			if msg := err.Error(); !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, tc.want) {
				t.Fatalf("got %q, want %q after the file's name", msg, tc.want)
			}
			t.Logf("file of %d bytes: %d bytes allocated to refuse it", st.Size(), alloc)
			if alloc > 4<<20 {
				t.Errorf("refusing a file of %d bytes allocated %d", st.Size(), alloc)
			}
		})
	}

	// The same index with zeros for every tensor loads.
	m, _, rs, err := LoadCheckpoint(craft(t, CheckpointKind, good, state, idx), be)
	if err != nil {
		t.Fatal(err)
	}
	if rs.Step != 3 || slices.ContainsFunc(m.HostParams(), func(v float32) bool { return v != 0 }) {
		t.Fatalf("step %d, params not all zero", rs.Step)
	}
}

// TestWeightsBarelyCompress: the payload of a real checkpoint is far above
// the 1/maxWeightRatio of its weights' bytes that LoadCheckpoint demands of
// a large model.
func TestWeightsBarelyCompress(t *testing.T) {
	tok := tokenizer.Default()
	cfg, _ := Preset("moe-micro")
	cfg.Vocab = tok.VocabSize()
	m, err := New(cfg, cpu.New(), 1)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "m.ck")
	if err := m.SaveCheckpoint(path, tok, RunState{}, true); err != nil {
		t.Fatal(err)
	}
	f, err := engine.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ratio := float64(f.Header().PayloadBytes) / float64(4*m.NumParams())
	t.Logf("payload is %.3f of the weights' bytes (moments of zeros included)", ratio)
	if ratio < 8.0/maxWeightRatio {
		t.Errorf("a fresh model's payload is only %.3f of its weights' bytes", ratio)
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// TestLoadCheckpointV1 loads a checkpoint written by moerl before the
// loader checked headers (commit ebf8834): the format has not changed.
func TestLoadCheckpointV1(t *testing.T) {
	path := filepath.Join("..", "testdata", "checkpoints", "model-v1.ck")
	be := cpu.New()
	m, tok, st, err := LoadCheckpoint(path, be)
	if err != nil {
		t.Fatal(err)
	}
	cfg := tinyConfig(false)
	cfg.Vocab = tokenizer.Default().VocabSize()
	if d := m.Cfg.Diff(cfg); len(d) != 0 || tok.VocabSize() != cfg.Vocab {
		t.Fatalf("config differs: %v", d)
	}
	if st.Stage != "pretrain" || st.Step != 3 || !slices.Equal(st.RNG["data"], []byte{1, 2, 3}) {
		t.Fatalf("state %+v", st)
	}
	want, err := New(cfg, be, 7)
	if err != nil {
		t.Fatal(err)
	}
	a, b := m.HostParams(), want.HostParams()
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("parameter %d is %v, want %v", i, a[i], b[i])
		}
	}
}

// TestLoadCheckpointBrokenFile: a model checkpoint damaged on disk names the
// file and what is wrong with it.
func TestLoadCheckpointBrokenFile(t *testing.T) {
	tok := tokenizer.Default()
	cfg := tinyConfig(false)
	cfg.Vocab = tok.VocabSize()
	be := cpu.New()
	m, err := New(cfg, be, 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "m.ck")
	if err := m.SaveCheckpoint(path, tok, RunState{Stage: "sft"}, false); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte { b := slices.Clone(good); b[i] ^= 0x40; return b }
	future := slices.Clone(good)
	binary.LittleEndian.PutUint32(future[8:], 2)
	tests := []struct {
		name string
		data []byte
		want string
		is   error
	}{
		{"empty", nil, "truncated: file has 0 bytes, the fixed prefix alone is 28", engine.ErrTruncated},
		{"cut in the prefix", good[:20], "truncated: file has 20 bytes", engine.ErrTruncated},
		{"cut in the header", good[:100], "truncated: header has 72 of", engine.ErrTruncated},
		{"cut in the payload", good[:len(good)/2], "truncated: payload has", engine.ErrTruncated},
		{"cut in the checksum", good[:len(good)-2], "truncated: checksum has 2 of 4 bytes", engine.ErrTruncated},
		{"a flipped header byte", flip(60), "checksum mismatch: stored CRC-32C", engine.ErrChecksum},
		{"a flipped payload byte", flip(len(good) - 100), "checksum mismatch: stored CRC-32C", engine.ErrChecksum},
		{"wrong magic", append([]byte("PK\x03\x04\x00\x00\x00\x00"), good[8:]...), `not a moerl checkpoint (starts with "PK\x03\x04\x00\x00\x00\x00")`, engine.ErrNotCheckpoint},
		{"a future version", future, "format version 2, this moerl reads 1", engine.ErrVersion},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "broken.ck")
			if err := os.WriteFile(p, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			var err error
			alloc := heapAllocated(func() { _, _, _, err = LoadCheckpoint(p, be) })
			if !errors.Is(err, tc.is) || !strings.HasPrefix(err.Error(), "load checkpoint "+p+": "+tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if limit := uint64(2*len(tc.data)) + 1<<20; alloc > limit {
				t.Errorf("%d bytes allocated for a file of %d", alloc, len(tc.data))
			}
		})
	}
}

// FuzzCheckHeader fuzzes what a model checkpoint's header says about the
// model: kind, config and state. Whatever it accepts is a model no larger
// than the bounds whose index matches.
func FuzzCheckHeader(f *testing.F) {
	tok := tokenizer.Default()
	cfg := tinyConfig(false)
	cfg.Vocab = tok.VocabSize()
	f.Add(CheckpointKind, configJSON(f, cfg, tok), `{"step":1}`)
	big := cfg
	big.DModel, big.Vocab = 1<<20, 1<<20
	f.Add(CheckpointKind, configJSON(f, big, tok), `{}`)
	f.Add(CheckpointKind, `{"model":{"vocab":1e300}}`, `{}`)
	f.Add("model", `{}`, `{}`)
	idx := modelIndex(cfg, false)
	var tensors []engine.TensorInfo
	var off int64
	for _, e := range idx {
		n := int64(4 * engine.Numel(e.Shape))
		tensors = append(tensors, engine.TensorInfo{Name: e.Name, DType: engine.F32, Shape: e.Shape, Offset: off, Length: n})
		off += n
	}
	f.Fuzz(func(t *testing.T, kind, config, state string) {
		h := &engine.Header{Kind: kind, Config: json.RawMessage(config), State: json.RawMessage(state), Tensors: tensors}
		cc, _, lay, err := checkHeader(h)
		if err != nil {
			return
		}
		if cc.Model.Validate() != nil || lay.total > MaxParams || lay.total != int(cc.Model.paramCount()) {
			t.Fatalf("accepted %+v with %d parameters", cc.Model, lay.total)
		}
	})
}
