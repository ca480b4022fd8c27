package engine

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"
	"gorgonia.org/tensor"
)

var update = flag.Bool("update", false, "rewrite the files in testdata/checkpoints")

var sentinels = []error{ErrNotCheckpoint, ErrVersion, ErrTruncated, ErrChecksum, ErrCorrupt}

// sampleCheckpoint holds every kind of tensor the format must carry,
// including float bit patterns that a lossy path would change.
func sampleCheckpoint() *Checkpoint {
	c := &Checkpoint{
		Kind:   "moerl-model",
		Config: json.RawMessage(`{"dim":8,"vocab":64,"tokenizer":{"alphabet":"ab"}}`),
		State:  json.RawMessage(`{"step":3,"rng":"AAEC"}`),
	}
	nan := math.Float32frombits(0x7fc01234) // a NaN with a payload
	c.Add("w", []int{2, 3}, []float32{1, -2.5, float32(math.Copysign(0, -1)), float32(math.Inf(1)), nan, 1e-45})
	c.AddI32("ids", []int{4}, []int32{0, -1, math.MaxInt32, math.MinInt32})
	c.Add("scalar", nil, []float32{3.25})
	c.Add("empty", []int{0, 5}, nil)
	c.AddI32("emptyi", []int{0}, nil)
	c.Add("bias", []int{3}, []float32{0.1, 0.2, 0.3})
	return c
}

func encodeBytes(t testing.TB, c *Checkpoint) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Encode(&b, c); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// checkSame fails unless got holds what want holds, comparing floats by bits.
func checkSame(t *testing.T, got, want *Checkpoint) {
	t.Helper()
	if got.Kind != want.Kind || !bytes.Equal(got.Config, want.Config) || !bytes.Equal(got.State, want.State) {
		t.Fatalf("got kind %q config %s state %s, want %q %s %s", got.Kind, got.Config, got.State, want.Kind, want.Config, want.State)
	}
	if len(got.Tensors) != len(want.Tensors) {
		t.Fatalf("got %d tensors, want %d", len(got.Tensors), len(want.Tensors))
	}
	for i, w := range want.Tensors {
		g := got.Tensors[i]
		if g.Name != w.Name || g.DType() != w.DType() || !slices.Equal(g.Shape, w.Shape) {
			t.Fatalf("tensor %d: got %q %s%v, want %q %s%v", i, g.Name, g.DType(), g.Shape, w.Name, w.DType(), w.Shape)
		}
		if (g.F == nil) != (w.F == nil) || (g.I == nil) != (w.I == nil) {
			t.Fatalf("tensor %q: got F nil %v I nil %v, want %v %v", g.Name, g.F == nil, g.I == nil, w.F == nil, w.I == nil)
		}
		if !slices.Equal(g.I, w.I) {
			t.Fatalf("tensor %q: got %v, want %v", g.Name, g.I, w.I)
		}
		if len(g.F) != len(w.F) {
			t.Fatalf("tensor %q: got %d floats, want %d", g.Name, len(g.F), len(w.F))
		}
		for j := range w.F {
			if math.Float32bits(g.F[j]) != math.Float32bits(w.F[j]) {
				t.Fatalf("tensor %q[%d]: got bits %#x, want %#x", g.Name, j, math.Float32bits(g.F[j]), math.Float32bits(w.F[j]))
			}
		}
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	onlyScalar := &Checkpoint{Kind: "k"}
	onlyScalar.AddI32("step", []int{}, []int32{7})
	tests := []struct {
		name string
		c    *Checkpoint
	}{
		{"sample", sampleCheckpoint()},
		{"no tensors, no config", &Checkpoint{Kind: "moerl-model"}},
		{"nothing at all", &Checkpoint{}},
		{"null config", &Checkpoint{Config: json.RawMessage("null"), State: json.RawMessage(`[]`)}},
		{"one i32 scalar", onlyScalar},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(bytes.NewReader(encodeBytes(t, tc.c)))
			if err != nil {
				t.Fatal(err)
			}
			checkSame(t, got, tc.c)

			path := filepath.Join(t.TempDir(), "c.ck")
			if err := Save(path, tc.c); err != nil {
				t.Fatal(err)
			}
			got, err = Load(path)
			if err != nil {
				t.Fatal(err)
			}
			checkSame(t, got, tc.c)
		})
	}
}

func TestCheckpointDeterministic(t *testing.T) {
	a := encodeBytes(t, sampleCheckpoint())
	b := encodeBytes(t, sampleCheckpoint())
	if !bytes.Equal(a, b) {
		t.Fatal("two encodings of the same checkpoint differ")
	}
	back, err := Decode(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	if c := encodeBytes(t, back); !bytes.Equal(a, c) {
		t.Fatal("re-encoding a decoded checkpoint changes its bytes")
	}
	// JSON whitespace is not content.
	spaced := sampleCheckpoint()
	spaced.Config = json.RawMessage("{\n  \"dim\": 8, \"vocab\": 64,\n  \"tokenizer\": {\"alphabet\": \"ab\"}\n}")
	if c := encodeBytes(t, spaced); !bytes.Equal(a, c) {
		t.Fatal("indenting the config changes the encoding")
	}
	// A change of one bit in a tensor must change the bytes.
	flipped := sampleCheckpoint()
	flipped.Tensors[5].F[0] = math.Float32frombits(math.Float32bits(flipped.Tensors[5].F[0]) ^ 1)
	if c := encodeBytes(t, flipped); bytes.Equal(a, c) {
		t.Fatal("a changed tensor encodes to the same bytes")
	}
}

func TestEncodeRejectsBadCheckpoint(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *Checkpoint)
		want string
	}{
		{"duplicate name", func(c *Checkpoint) { c.Add("w", []int{1}, []float32{1}) }, `tensor "w" appears twice`},
		{"length mismatch", func(c *Checkpoint) { c.Add("x", []int{2, 2}, []float32{1, 2, 3}) }, `tensor "x" has 3 elements, its shape [2 2] has 4`},
		{"negative dim", func(c *Checkpoint) { c.Add("x", []int{-1, 2}, nil) }, `tensor "x": negative dimension`},
		{"overflowing shape", func(c *Checkpoint) { c.Add("x", []int{1 << 30, 1 << 30, 1 << 30}, nil) }, "too many elements"},
		{"both F and I", func(c *Checkpoint) {
			c.Tensors = append(c.Tensors, &NamedTensor{Name: "x", Shape: []int{1}, F: []float32{1}, I: []int32{1}})
		}, `tensor "x" has both F and I`},
		{"empty name", func(c *Checkpoint) { c.Add("", []int{1}, []float32{1}) }, "non-empty"},
		{"invalid UTF-8 name", func(c *Checkpoint) { c.Add("a\xff", []int{1}, []float32{1}) }, "UTF-8"},
		{"nil tensor", func(c *Checkpoint) { c.Tensors = append(c.Tensors, nil) }, "tensor 6 is nil"},
		{"bad config", func(c *Checkpoint) { c.Config = json.RawMessage(`{"dim":`) }, "config is not valid JSON"},
		{"bad state", func(c *Checkpoint) { c.State = json.RawMessage(`nope`) }, "state is not valid JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := sampleCheckpoint()
			tc.edit(c)
			err := Encode(io.Discard, c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
			path := filepath.Join(t.TempDir(), "c.ck")
			if err := Save(path, c); err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("Save: got %v, want an error naming %s", err, path)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("failed Save left %s: %v", path, err)
			}
		})
	}
}

// checkOneSentinel fails unless err is non-nil and wraps exactly want among
// the sentinels.
func checkOneSentinel(t *testing.T, err, want error, context string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", context, want)
	}
	for _, s := range sentinels {
		if errors.Is(err, s) != (s == want) {
			t.Fatalf("%s: error %q: errors.Is(%v) = %v", context, err, s, errors.Is(err, s))
		}
	}
}

func TestDecodeTruncatedEverywhere(t *testing.T) {
	full := encodeBytes(t, sampleCheckpoint())
	for n := 0; n < len(full); n++ {
		_, err := Decode(bytes.NewReader(full[:n]))
		checkOneSentinel(t, err, ErrTruncated, fmt.Sprintf("first %d of %d bytes", n, len(full)))
		if !strings.Contains(err.Error(), "truncated: ") {
			t.Fatalf("%d bytes: error %q does not say truncated", n, err)
		}
	}
	// Load knows the file's size; it must agree.
	dir := t.TempDir()
	for _, n := range []int{0, 5, 20, 27, 28, 60, len(full) - 10, len(full) - 1} {
		path := filepath.Join(dir, fmt.Sprintf("t%d.ck", n))
		if err := os.WriteFile(path, full[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		checkOneSentinel(t, err, ErrTruncated, path)
		if !strings.HasPrefix(err.Error(), "load checkpoint "+path+": truncated: ") {
			t.Fatalf("error %q does not start with the file and the problem", err)
		}
	}
}

func TestDecodeFlippedByte(t *testing.T) {
	full := encodeBytes(t, sampleCheckpoint())
	for i := range full {
		broken := slices.Clone(full)
		broken[i] ^= 0x10
		_, err := Decode(bytes.NewReader(broken))
		ctx := fmt.Sprintf("byte %d of %d flipped", i, len(full))
		switch {
		case i < 8:
			checkOneSentinel(t, err, ErrNotCheckpoint, ctx)
		case i < 12:
			checkOneSentinel(t, err, ErrVersion, ctx)
		case i < prefixSize:
			// A length grows (the stream then ends early) or shrinks (the
			// checksum then covers other bytes): either way an error.
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrChecksum) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s: got %v", ctx, err)
			}
		default: // header, payload and checksum alike
			checkOneSentinel(t, err, ErrChecksum, ctx)
			if !strings.Contains(err.Error(), "checksum mismatch: stored CRC-32C 0x") {
				t.Fatalf("%s: error %q", ctx, err)
			}
		}
	}
}

// assemble builds a checkpoint file around the given header and payload with
// a correct checksum, for content that Encode would never write.
func assemble(header string, payload []byte) []byte {
	b := []byte(checkpointMagic)
	b = binary.LittleEndian.AppendUint32(b, CheckpointVersion)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(header)))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(payload)))
	b = append(b, header...)
	b = append(b, payload...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
}

func zstdFrame(raw []byte) []byte {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		panic(err)
	}
	defer enc.Close()
	return enc.EncodeAll(raw, nil)
}

// zstdStream compresses raw as the streaming encoder does, with no content
// size in the frame header, so that only decompressing finds its size. Its
// window is the smallest unless opts say otherwise.
func zstdStream(raw []byte, opts ...zstd.EOption) []byte {
	var b bytes.Buffer
	enc, err := zstd.NewWriter(&b, append([]zstd.EOption{zstd.WithWindowSize(zstd.MinWindowSize)}, opts...)...)
	if err != nil {
		panic(err)
	}
	if _, err := enc.Write(raw); err != nil {
		panic(err)
	}
	if err := enc.Close(); err != nil {
		panic(err)
	}
	return b.Bytes()
}

func TestDecodeBrokenPrefix(t *testing.T) {
	good := encodeBytes(t, sampleCheckpoint())
	with := func(off int, v uint64, size int) []byte {
		b := slices.Clone(good)
		if size == 4 {
			binary.LittleEndian.PutUint32(b[off:], uint32(v))
		} else {
			binary.LittleEndian.PutUint64(b[off:], v)
		}
		return b
	}
	tests := []struct {
		name string
		data []byte
		want error
		msg  string
	}{
		{"wrong magic", append([]byte("GGUF\x03\x00\x00\x00"), good[8:]...), ErrNotCheckpoint, `not a moerl checkpoint (starts with "GGUF\x03\x00\x00\x00")`},
		{"short non-checkpoint", []byte("hi"), ErrNotCheckpoint, `starts with "hi"`},
		{"text file", []byte("step,loss\n1,2.5\n"), ErrNotCheckpoint, "not a moerl checkpoint"},
		{"future version", with(8, 7, 4), ErrVersion, "format version 7, this moerl reads 1"},
		{"version 0", with(8, 0, 4), ErrVersion, "format version 0, this moerl reads 1"},
		{"huge header length", with(12, 1<<62, 8), ErrCorrupt, "header length 4611686018427387904 is outside [1, 4194304]"},
		{"max header length", with(12, math.MaxUint64, 8), ErrCorrupt, "header length"},
		{"zero header length", with(12, 0, 8), ErrCorrupt, "header length 0"},
		{"huge payload length", with(20, 1<<60, 8), ErrCorrupt, "payload length 1152921504606846976 exceeds"},
		{"header longer than the stream", with(12, 1<<20, 8), ErrTruncated, "truncated: header has"},
		{"payload longer than the stream", with(20, 1<<30, 8), ErrTruncated, "truncated: payload has"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(bytes.NewReader(tc.data))
			checkOneSentinel(t, err, tc.want, tc.name)
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not contain %q", err, tc.msg)
			}
		})
	}
}

// TestDecodeCorruptContent covers files whose checksum matches but whose
// content is inconsistent: what a buggy or hostile writer could produce.
func TestDecodeCorruptContent(t *testing.T) {
	eight := zstdFrame(make([]byte, 8))
	tests := []struct {
		name    string
		header  string
		payload []byte
		msg     string
	}{
		{"header not JSON", `{"kind":`, eight, "header is not valid JSON"},
		{"header trailing garbage", `{"tensors":[]} x`, nil, "header is not valid JSON"},
		{"header wrong type", `{"tensors":{}}`, nil, "header is not valid JSON"},
		{"duplicate names", `{"tensors":[{"name":"a","dtype":"f32","shape":[1],"offset":0,"length":4},{"name":"a","dtype":"f32","shape":[1],"offset":4,"length":4}]}`, eight, `tensor "a" appears twice`},
		{"empty name", `{"tensors":[{"name":"","dtype":"f32","shape":[2],"offset":0,"length":8}]}`, eight, "tensor 0 has an empty name"},
		{"bad dtype", `{"tensors":[{"name":"a","dtype":"f16","shape":[4],"offset":0,"length":8}]}`, eight, `dtype "f16"`},
		{"length not shape", `{"tensors":[{"name":"a","dtype":"f32","shape":[3],"offset":0,"length":8}]}`, eight, "length 8 bytes, its shape [3] needs 12"},
		{"negative dim", `{"tensors":[{"name":"a","dtype":"f32","shape":[-2],"offset":0,"length":-8}]}`, eight, "negative dimension"},
		{"huge shape", `{"tensors":[{"name":"a","dtype":"i32","shape":[1099511627776,1099511627776],"offset":0,"length":8}]}`, eight, "too many elements"},
		{"negative offset", `{"tensors":[{"name":"a","dtype":"f32","shape":[2],"offset":-4,"length":8}]}`, eight, "offset -4 out of range"},
		{"huge offset", `{"tensors":[{"name":"a","dtype":"f32","shape":[2],"offset":9223372036854775800,"length":8}]}`, eight, `tensor "a" at offset 9223372036854775800 leaves a gap of 9223372036854775800 bytes`},
		{"first tensor not at 0", `{"tensors":[{"name":"a","dtype":"f32","shape":[2],"offset":4,"length":8}]}`, eight, `tensor "a" at offset 4 leaves a gap of 4 bytes after the tensor before it`},
		{"gap", `{"tensors":[{"name":"a","dtype":"f32","shape":[1],"offset":0,"length":4},{"name":"b","dtype":"f32","shape":[],"offset":8,"length":4}]}`, zstdStream(make([]byte, 12)), `tensor "b" at offset 8 leaves a gap of 4 bytes`},
		{"overlap", `{"tensors":[{"name":"a","dtype":"f32","shape":[2],"offset":0,"length":8},{"name":"b","dtype":"f32","shape":[2],"offset":4,"length":8}]}`, eight, `tensor "b" at offset 4 overlaps the tensor before it, which ends at 8`},
		{"same bytes", `{"tensors":[{"name":"a","dtype":"i32","shape":[1],"offset":0,"length":4},{"name":"b","dtype":"f32","shape":[],"offset":0,"length":4}]}`, eight, `tensor "b" at offset 0 overlaps the tensor before it, which ends at 4`},
		{"index runs past the data", `{"tensors":[{"name":"a","dtype":"f32","shape":[2],"offset":0,"length":8},{"name":"b","dtype":"f32","shape":[2],"offset":8,"length":8}]}`, zstdStream(make([]byte, 8)), "decompresses to 8 bytes, the index declares 16"},
		{"frame declares less than the index", `{"tensors":[{"name":"a","dtype":"f32","shape":[1024],"offset":0,"length":4096}]}`, zstdFrame(make([]byte, 2048)), "the payload's zstd frame declares 2048 bytes, the index 4096"},
		{"frame declares more than the index", `{"tensors":[{"name":"a","dtype":"f32","shape":[1],"offset":0,"length":4}]}`, zstdFrame(make([]byte, 1<<20)), "the payload's zstd frame declares 1048576 bytes, the index 4"},
		{"payload decompresses to more", `{"tensors":[{"name":"a","dtype":"f32","shape":[1],"offset":0,"length":4}]}`, zstdStream(make([]byte, 1<<20)), "decompresses to more than the 4 bytes"},
		{"window larger than the index allows", `{"tensors":[{"name":"a","dtype":"f32","shape":[1],"offset":0,"length":4}]}`, zstdStream(make([]byte, 1<<20), zstd.WithWindowSize(1<<20)), "the payload's zstd window of 1048576 bytes exceeds the 1024 that the index's 4 bytes allow"},
		{"payload where none is declared", `{"tensors":[]}`, eight, "decompresses to more than the 0 bytes"},
		{"payload not zstd", `{"tensors":[{"name":"a","dtype":"f32","shape":[2],"offset":0,"length":8}]}`, []byte("not zstd at all"), "corrupt: payload: "},
		{"payload missing", `{"tensors":[{"name":"a","dtype":"f32","shape":[2],"offset":0,"length":8}]}`, nil, "decompresses to 0 bytes, the index declares 8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(bytes.NewReader(assemble(tc.header, tc.payload)))
			checkOneSentinel(t, err, ErrCorrupt, tc.name)
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not contain %q", err, tc.msg)
			}
		})
	}

	// A frame concatenated after a valid one must not slip past the bound.
	two := append(zstdFrame(make([]byte, 8)), zstdFrame(make([]byte, 8))...)
	_, err := Decode(bytes.NewReader(assemble(`{"tensors":[{"name":"a","dtype":"f32","shape":[2],"offset":0,"length":8}]}`, two)))
	checkOneSentinel(t, err, ErrCorrupt, "two frames")

	// Unknown header fields are ignored, and the index's order is the
	// payload's.
	c, err := Decode(bytes.NewReader(assemble(`{"kind":"x","future":1,"tensors":[{"name":"b","dtype":"f32","shape":[],"offset":0,"length":4},{"name":"a","dtype":"i32","shape":[1],"offset":4,"length":4}]}`,
		zstdFrame([]byte{1, 0, 0, 0, 2, 0, 0, 0}))))
	if err != nil {
		t.Fatal(err)
	}
	if math.Float32bits(c.Tensors[0].F[0]) != 1 || c.Tensors[1].I[0] != 2 {
		t.Fatalf("got %v %v", c.Tensors[0].F, c.Tensors[1].I)
	}
}

func TestLoadTrailingData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.ck")
	if err := os.WriteFile(path, append(encodeBytes(t, sampleCheckpoint()), "xyz"...), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	checkOneSentinel(t, err, ErrCorrupt, path)
	if want := "load checkpoint " + path + ": corrupt: 3 bytes after the checksum"; err.Error() != want {
		t.Fatalf("got %q, want %q", err, want)
	}
	// Decode reads one checkpoint and leaves what follows.
	r := bytes.NewReader(append(encodeBytes(t, sampleCheckpoint()), "xyz"...))
	if _, err := Decode(r); err != nil {
		t.Fatal(err)
	}
	if rest, _ := io.ReadAll(r); string(rest) != "xyz" {
		t.Fatalf("after Decode the reader holds %q", rest)
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.ck")
	_, err := Load(path)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v", err)
	}
}

// faultyFile is a temporary file that fails the way a full disk does: its
// writes fail with ENOSPC once writeLeft bytes have gone through (never
// when writeLeft < 0), and its Sync and Close return the errors set.
type faultyFile struct {
	*os.File
	writeLeft         int
	syncErr, closeErr error
}

func (f *faultyFile) Write(p []byte) (int, error) {
	if f.writeLeft >= 0 && len(p) > f.writeLeft {
		k, _ := f.File.Write(p[:f.writeLeft])
		f.writeLeft = 0
		return k, &fs.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	if f.writeLeft >= 0 {
		f.writeLeft -= len(p)
	}
	return f.File.Write(p)
}

func (f *faultyFile) Sync() error {
	if f.syncErr != nil {
		return &fs.PathError{Op: "sync", Path: f.Name(), Err: f.syncErr}
	}
	return f.File.Sync()
}

func (f *faultyFile) Close() error {
	err := f.File.Close()
	if f.closeErr != nil {
		return &fs.PathError{Op: "close", Path: f.Name(), Err: f.closeErr}
	}
	return err
}

// withCreateTemp replaces Save's temporary-file maker for one test.
func withCreateTemp(t *testing.T, create func(dir, pattern string) (tempFile, error)) {
	old := createTemp
	createTemp = create
	t.Cleanup(func() { createTemp = old })
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// savedOnce saves sampleCheckpoint to dir/model.ck and returns the path and
// the file's bytes.
func savedOnce(t *testing.T) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "model.ck")
	if err := Save(path, sampleCheckpoint()); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"model.ck"}) {
		t.Fatalf("after Save the directory holds %v", names)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, b
}

// checkKept fails unless path still holds old, loads, and has no temporary
// file beside it.
func checkKept(t *testing.T, path string, old []byte, context string) {
	t.Helper()
	if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, old) {
		t.Fatalf("%s: the previous file changed (%v)", context, err)
	}
	if _, err := Load(path); err != nil {
		t.Fatalf("%s: the previous file no longer loads: %v", context, err)
	}
	if names := dirNames(t, filepath.Dir(path)); !slices.Equal(names, []string{"model.ck"}) {
		t.Fatalf("%s: the directory holds %v", context, names)
	}
}

// TestSaveFullDisk: a disk that fills up part-way through the write, or
// that reports it only at sync or close (as NFS and delayed allocation do),
// leaves the previous checkpoint as it was, and the error names the file
// and the cause.
func TestSaveFullDisk(t *testing.T) {
	path, old := savedOnce(t)
	next := sampleCheckpoint()
	next.State = json.RawMessage(`{"step":4}`)
	size := len(encodeBytes(t, next))
	type fault struct {
		name string
		file func(f *os.File) *faultyFile
		op   string
	}
	var faults []fault
	for _, n := range []int{0, 1, 27, 100, size / 2, size - 1} {
		faults = append(faults, fault{fmt.Sprintf("write fails after %d of %d bytes", n, size),
			func(f *os.File) *faultyFile { return &faultyFile{File: f, writeLeft: n} }, "write"})
	}
	faults = append(faults,
		fault{"sync fails", func(f *os.File) *faultyFile { return &faultyFile{File: f, writeLeft: -1, syncErr: syscall.ENOSPC} }, "sync"},
		fault{"close fails", func(f *os.File) *faultyFile { return &faultyFile{File: f, writeLeft: -1, closeErr: syscall.ENOSPC} }, "close"},
		fault{"sync fails with EIO", func(f *os.File) *faultyFile { return &faultyFile{File: f, writeLeft: -1, syncErr: syscall.EIO} }, "sync"},
	)
	for _, fl := range faults {
		t.Run(fl.name, func(t *testing.T) {
			withCreateTemp(t, func(dir, pattern string) (tempFile, error) {
				f, err := os.CreateTemp(dir, pattern)
				if err != nil {
					return nil, err
				}
				return fl.file(f), nil
			})
			err := Save(path, next)
			if err == nil {
				t.Fatal("Save succeeded")
			}
			cause := syscall.ENOSPC
			if strings.Contains(fl.name, "EIO") {
				cause = syscall.EIO
			}
			if !errors.Is(err, cause) {
				t.Fatalf("error %q does not wrap %v", err, cause)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "save checkpoint "+path+": ") || !strings.Contains(msg, fl.op+" "+filepath.Dir(path)+"/.model.ck.tmp-") || !strings.HasSuffix(msg, ": "+cause.Error()) {
				t.Fatalf("error %q does not name the file, the operation and the cause", msg)
			}
			checkKept(t, path, old, fl.name)
		})
	}

	// Without the fault the new checkpoint replaces the old.
	if err := Save(path, next); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	checkSame(t, got, next)
	if names := dirNames(t, filepath.Dir(path)); !slices.Equal(names, []string{"model.ck"}) {
		t.Fatalf("after Save the directory holds %v", names)
	}
}

// TestSaveUnwritableDir: a folder in which no file can be created (here as
// os.CreateTemp reports it for a read-only folder, which root could write
// into anyway) leaves the previous checkpoint alone.
func TestSaveUnwritableDir(t *testing.T) {
	path, old := savedOnce(t)
	withCreateTemp(t, func(dir, pattern string) (tempFile, error) {
		return nil, &fs.PathError{Op: "open", Path: filepath.Join(dir, strings.Replace(pattern, "*", "123", 1)), Err: syscall.EACCES}
	})
	err := Save(path, &Checkpoint{Kind: "other"})
	want := "save checkpoint " + path + ": open " + filepath.Dir(path) + "/.model.ck.tmp-123: permission denied"
	if err == nil || err.Error() != want || !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("got %v, want %q", err, want)
	}
	checkKept(t, path, old, "unwritable folder")
}

// TestSaveReadOnlyDir is TestSaveUnwritableDir with a real read-only
// folder, for a user who is not root.
func TestSaveReadOnlyDir(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes into read-only directories")
	}
	path, old := savedOnce(t)
	dir := filepath.Dir(path)
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(dir, 0o755)
	err := Save(path, &Checkpoint{Kind: "other"})
	if !errors.Is(err, fs.ErrPermission) || !strings.HasPrefix(err.Error(), "save checkpoint "+path+": open "+dir+"/.model.ck.tmp-") {
		t.Fatalf("got %v", err)
	}
	checkKept(t, path, old, "read-only folder")
}

func TestSaveMissingDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "such", "model.ck")
	err := Save(path, sampleCheckpoint())
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v", err)
	}
}

func TestCheckpointLookup(t *testing.T) {
	c := sampleCheckpoint()
	if _, err := c.Tensor("nope"); err == nil || !strings.Contains(err.Error(), `no tensor "nope"`) {
		t.Fatalf("got %v", err)
	}
	if tt, err := c.Tensor("ids"); err != nil || tt.DType() != I32 || tt.Len() != 4 {
		t.Fatalf("got %v %v", tt, err)
	}
	if f, err := c.F32("bias", 3); err != nil || !slices.Equal(f, []float32{0.1, 0.2, 0.3}) {
		t.Fatalf("got %v %v", f, err)
	}
	if f, err := c.F32("scalar"); err != nil || !slices.Equal(f, []float32{3.25}) {
		t.Fatalf("got %v %v", f, err)
	}
	if i, err := c.I32("ids", 4); err != nil || i[2] != math.MaxInt32 {
		t.Fatalf("got %v %v", i, err)
	}
	errs := []struct {
		err  error
		want string
	}{
		{second(c.F32("bias", 1, 3)), `tensor "bias" has shape [3], want [1 3]`},
		{second(c.F32("ids", 4)), `tensor "ids" is i32, want f32`},
		{second(c.I32("w", 2, 3)), `tensor "w" is f32, want i32`},
		{second(c.I32("gone")), `no tensor "gone"`},
	}
	for _, e := range errs {
		if e.err == nil || !strings.Contains(e.err.Error(), e.want) {
			t.Errorf("got %v, want %q", e.err, e.want)
		}
	}
}

func second[T any](_ T, err error) error { return err }

func TestCheckpointDense(t *testing.T) {
	c := sampleCheckpoint()
	d, err := c.Dense("bias")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal([]int(d.Shape()), []int{3}) || d.Dtype() != tensor.Float32 || !slices.Equal(d.Data().([]float32), []float32{0.1, 0.2, 0.3}) {
		t.Fatalf("got %v %v %v", d.Shape(), d.Dtype(), d.Data())
	}
	// A copy: changing the Dense leaves the checkpoint as it was.
	d.Data().([]float32)[0] = 9
	if c.Tensors[5].F[0] != 0.1 {
		t.Fatal("Dense shares memory with the checkpoint")
	}

	d, err = c.Dense("w")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal([]int(d.Shape()), []int{2, 3}) {
		t.Fatalf("got shape %v", d.Shape())
	}
	if v, err := d.At(1, 0); err != nil || !math.IsInf(float64(v.(float32)), 1) {
		t.Fatalf("w[1,0] = %v %v, want +Inf", v, err)
	}

	d, err = c.Dense("ids")
	if err != nil {
		t.Fatal(err)
	}
	if d.Dtype() != tensor.Int32 || !slices.Equal(d.Data().([]int32), []int32{0, -1, math.MaxInt32, math.MinInt32}) {
		t.Fatalf("got %v %v", d.Dtype(), d.Data())
	}

	d, err = c.Dense("scalar")
	if err != nil || !d.IsScalar() || d.ScalarValue().(float32) != 3.25 {
		t.Fatalf("scalar: got %v %v", d, err)
	}

	for name, want := range map[string]string{"empty": "no elements", "emptyi": "no elements", "nope": `no tensor "nope"`} {
		if _, err := c.Dense(name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Dense(%q): got %v, want %q", name, err, want)
		}
	}
	c.Tensors = append(c.Tensors, &NamedTensor{Name: "bad", Shape: []int{2, 2}, F: []float32{1}})
	if _, err := c.Dense("bad"); err == nil || !strings.Contains(err.Error(), "1 elements for shape [2 2]") {
		t.Errorf("got %v", err)
	}
}

// testdataFiles are the files in testdata/checkpoints and what loading each
// must report (nil: it loads).
func testdataFiles(t testing.TB) map[string]struct {
	data []byte
	want error
} {
	tiny := &Checkpoint{Kind: "moerl-model", Config: json.RawMessage(`{"dim":2}`), State: json.RawMessage(`{"step":1}`)}
	tiny.Add("w", []int{2, 2}, []float32{1, 2, 3, 4})
	tiny.AddI32("ids", []int{3}, []int32{5, 6, 7})
	good := encodeBytes(t, tiny)
	badSum := slices.Clone(good)
	badSum[len(badSum)-1] ^= 0xff
	future := slices.Clone(good)
	binary.LittleEndian.PutUint32(future[8:], CheckpointVersion+1)
	return map[string]struct {
		data []byte
		want error
	}{
		"tiny.ck":      {good, nil},
		"truncated.ck": {good[:len(good)/2], ErrTruncated},
		"badmagic.ck":  {append([]byte("MOERLCX\x00"), good[8:]...), ErrNotCheckpoint},
		"badsum.ck":    {badSum, ErrChecksum},
		"version2.ck":  {future, ErrVersion},
		"trailing.ck":  {append(slices.Clone(good), "\n"...), ErrCorrupt},
		"overlap.ck": {assemble(`{"kind":"moerl-model","tensors":[{"name":"w","dtype":"f32","shape":[2,2],"offset":0,"length":16},{"name":"ids","dtype":"i32","shape":[3],"offset":8,"length":12}]}`,
			zstdFrame(make([]byte, 20))), ErrCorrupt},
		"shortpayload.ck": {assemble(`{"kind":"moerl-model","tensors":[{"name":"w","dtype":"f32","shape":[2,2],"offset":0,"length":16},{"name":"ids","dtype":"i32","shape":[3],"offset":16,"length":12}]}`,
			zstdStream(make([]byte, 20))), ErrCorrupt},
	}
}

// TestWriteTestdata regenerates testdata/checkpoints with -update.
func TestWriteTestdata(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite testdata/checkpoints")
	}
	dir := filepath.Join("..", "testdata", "checkpoints")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, f := range testdataFiles(t) {
		if err := os.WriteFile(filepath.Join(dir, name), f.data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLoadTestdata(t *testing.T) {
	for name, f := range testdataFiles(t) {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("..", "testdata", "checkpoints", name)
			c, err := Load(path)
			if f.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if w, err := c.F32("w", 2, 2); err != nil || !slices.Equal(w, []float32{1, 2, 3, 4}) {
					t.Fatalf("w = %v %v", w, err)
				}
				if ids, err := c.I32("ids", 3); err != nil || !slices.Equal(ids, []int32{5, 6, 7}) {
					t.Fatalf("ids = %v %v", ids, err)
				}
				return
			}
			checkOneSentinel(t, err, f.want, path)
			if !strings.HasPrefix(err.Error(), "load checkpoint "+path+": ") {
				t.Fatalf("error %q does not name the file first", err)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	good := encodeBytes(f, sampleCheckpoint())
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(good[:prefixSize])
	flipped := slices.Clone(good)
	flipped[40] ^= 1
	f.Add(flipped)
	f.Add(append([]byte("XOERLCK\x00"), good[8:]...))
	f.Add(assemble(`{"tensors":[{"name":"a","dtype":"f32","shape":[2],"offset":0,"length":8}]}`, zstdFrame(make([]byte, 8))))
	f.Add(assemble(`{"tensors":[{"name":"a","dtype":"i32","shape":[1],"offset":0,"length":4}]}`, zstdFrame(make([]byte, 1<<16))))
	f.Add(assemble(`{"kind":"k","tensors":[]}`, nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(bytes.NewReader(data))
		if err != nil {
			n := 0
			for _, s := range sentinels {
				if errors.Is(err, s) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("error %q wraps %d sentinels", err, n)
			}
			return
		}
		// What decodes is a valid checkpoint: it encodes, and decodes back
		// to itself.
		b := encodeBytes(t, c)
		again, err := Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("re-decoding: %v", err)
		}
		checkSame(t, again, c)
	})
}

// FuzzDecodeContent fuzzes what lies behind the checksum, which FuzzDecode
// rarely gets past: the header and payload of a file whose checksum is
// right, through both the stream decoder and the file reader (Open's
// header path, then Read).
func FuzzDecodeContent(f *testing.F) {
	f.Add(`{"kind":"k","tensors":[{"name":"a","dtype":"f32","shape":[2],"offset":0,"length":8}]}`, zstdFrame(make([]byte, 8)))
	f.Add(`{"tensors":[{"name":"a","dtype":"i32","shape":[],"offset":4,"length":4},{"name":"b","dtype":"f32","shape":[0,3],"offset":0,"length":0}]}`, zstdFrame([]byte{1, 2, 3, 4, 5, 6, 7, 8}))
	f.Add(`{"config":{"x":[1,2]},"state":null,"tensors":[]}`, []byte{})
	f.Add(`{"tensors":[{"name":"a","dtype":"f32","shape":[1],"offset":0,"length":4}]}`, zstdFrame(make([]byte, 1<<12)))
	f.Add(`{"tensors":[{"name":"a","dtype":"f32","shape":[1],"offset":0,"length":4}]}`, []byte("\x28\xb5\x2f\xfd garbage"))
	f.Add(`{"tensors":[{"name":"a","dtype":"f32","shape":[2],"offset":0,"length":8},{"name":"b","dtype":"i32","shape":[1],"offset":4,"length":4}]}`, zstdFrame(make([]byte, 12)))
	f.Add(`{"tensors":[{"name":"a","dtype":"f32","shape":[1073741824],"offset":0,"length":4294967296}]}`, zstdStream(make([]byte, 64)))
	f.Fuzz(func(t *testing.T, header string, payload []byte) {
		data := assemble(header, payload)
		c, err := Decode(bytes.NewReader(data))
		// The file reader, through Open's header path, agrees.
		var fc *Checkpoint
		cf, ferr := openAt(bytes.NewReader(data), int64(len(data)))
		if ferr == nil {
			fc, ferr = cf.read(cf.Header().RawBytes() <= 1<<20)
		}
		if (err == nil) != (ferr == nil) {
			t.Fatalf("Decode: %v, the file reader: %v", err, ferr)
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || !errors.Is(ferr, ErrCorrupt) {
				t.Fatalf("errors %q and %q are not ErrCorrupt", err, ferr)
			}
			return
		}
		checkSame(t, fc, c)
		again, err := Decode(bytes.NewReader(encodeBytes(t, c)))
		if err != nil {
			t.Fatalf("re-decoding: %v", err)
		}
		checkSame(t, again, c)
	})
}

func benchCheckpoint() *Checkpoint {
	rng := NewRNG(1, StreamInit)
	w := make([]float32, 4<<20)
	for i := range w {
		w[i] = rng.Normal32(0.02)
	}
	c := &Checkpoint{Kind: "bench"}
	c.Add("w", []int{len(w)}, w)
	c.Add("m", []int{len(w)}, make([]float32, len(w))) // zeros, like fresh AdamW moments
	return c
}

func BenchmarkEncode(b *testing.B) {
	c := benchCheckpoint()
	b.SetBytes(2 * 4 * 4 << 20)
	for b.Loop() {
		if err := Encode(io.Discard, c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	data := encodeBytes(b, benchCheckpoint())
	b.ReportMetric(float64(len(data))/(2*4*4<<20), "compressed/raw")
	b.SetBytes(2 * 4 * 4 << 20)
	for b.Loop() {
		if _, err := Decode(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}
