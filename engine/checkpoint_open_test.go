package engine

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// zeroFrame is a zstd frame that decompresses to n zero bytes, built of RLE
// blocks of 128 KiB (4 bytes each): 4 GiB take 128 KiB, a compression
// ratio of 32768, beyond what any real encoder reaches. The frame header
// states the content size and a 128 KiB window, as an honest encoder would.
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

// bombHeader is an index declaring one f32 tensor of n bytes.
func bombHeader(kind string, n int64) string {
	return fmt.Sprintf(`{"kind":%q,"tensors":[{"name":"zeros","dtype":"f32","shape":[%d],"offset":0,"length":%d}]}`, kind, n/4, n)
}

// allocated is the number of bytes f allocates on the heap.
func allocated(f func()) uint64 {
	runtime.GC()
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestOpenHeader(t *testing.T) {
	c := sampleCheckpoint()
	path := filepath.Join(t.TempDir(), "c.ck")
	if err := Save(path, c); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := f.Header()
	if h.Kind != c.Kind || !bytes.Equal(h.Config, c.Config) || !bytes.Equal(h.State, c.State) {
		t.Fatalf("header %q %s %s", h.Kind, h.Config, h.State)
	}
	if len(h.Tensors) != len(c.Tensors) {
		t.Fatalf("index has %d tensors, want %d", len(h.Tensors), len(c.Tensors))
	}
	var off int64
	for i, e := range h.Tensors {
		w := c.Tensors[i]
		if e.Name != w.Name || e.DType != w.DType() || !slices.Equal(e.Shape, w.Shape) || e.Offset != off || e.Length != int64(4*w.Len()) {
			t.Fatalf("index entry %d is %+v, want %s %s%v at %d", i, e, w.Name, w.DType(), w.Shape, off)
		}
		off += e.Length
	}
	if h.RawBytes() != off {
		t.Fatalf("RawBytes %d, want %d", h.RawBytes(), off)
	}
	if e, ok := h.Tensor("ids"); !ok || e.DType != I32 || !slices.Equal(e.Shape, []int{4}) {
		t.Fatalf("Tensor(ids) = %+v %v", e, ok)
	}
	if _, ok := h.Tensor("nope"); ok {
		t.Fatal("Tensor(nope) found")
	}
	// What the caller does to the header does not change what is read.
	h.Tensors[0].Length, h.Tensors[0].Shape[0] = 1<<40, 99
	got, err := f.Read()
	if err != nil {
		t.Fatal(err)
	}
	checkSame(t, got, c)
}

func TestHeaderMatch(t *testing.T) {
	h := &Header{Tensors: []TensorInfo{
		{Name: "w", DType: F32, Shape: []int{2, 3}, Length: 24},
		{Name: "ids", DType: I32, Shape: []int{4}, Offset: 24, Length: 16},
		{Name: "s", DType: F32, Shape: []int{}, Offset: 40, Length: 4},
	}}
	base := []TensorSpec{{Name: "w", DType: F32, Shape: []int{2, 3}}, {Name: "ids", DType: I32, Shape: []int{4}}, {Name: "s", DType: F32}}
	edit := func(f func(w []TensorSpec) []TensorSpec) []TensorSpec {
		w := slices.Clone(base)
		return f(w)
	}
	tests := []struct {
		name string
		want []TensorSpec
		msg  string // "" when it matches
	}{
		{"exact", base, ""},
		{"optional absent", edit(func(w []TensorSpec) []TensorSpec {
			return append(w, TensorSpec{Name: "m", DType: F32, Shape: []int{6}, Optional: true})
		}), ""},
		{"optional present", edit(func(w []TensorSpec) []TensorSpec { w[1].Optional = true; return w }), ""},
		{"extra in the index", base[:2], `the index declares tensor "s" (f32 []), which is not expected`},
		{"missing", edit(func(w []TensorSpec) []TensorSpec {
			return append(w, TensorSpec{Name: "b", DType: F32, Shape: []int{3}})
		}), `tensor "b" (f32 [3]) is missing`},
		{"wrong dtype", edit(func(w []TensorSpec) []TensorSpec { w[1].DType = F32; return w }), `tensor "ids" is i32, want f32`},
		{"wrong shape", edit(func(w []TensorSpec) []TensorSpec { w[0].Shape = []int{3, 2}; return w }), `tensor "w" has shape [2 3], want [3 2]`},
		{"scalar is not [1]", edit(func(w []TensorSpec) []TensorSpec { w[2].Shape = []int{1}; return w }), `tensor "s" has shape [], want [1]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := h.Match(tc.want)
			if tc.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || err.Error() != tc.msg || !errors.Is(err, ErrMismatch) {
				t.Fatalf("got %v, want %q wrapping ErrMismatch", err, tc.msg)
			}
		})
	}
}

func TestLoadExpect(t *testing.T) {
	c := sampleCheckpoint()
	path := filepath.Join(t.TempDir(), "c.ck")
	if err := Save(path, c); err != nil {
		t.Fatal(err)
	}
	var saw *Header
	got, err := LoadExpect(path, func(h *Header) error { saw = h; return nil })
	if err != nil {
		t.Fatal(err)
	}
	checkSame(t, got, c)
	if saw == nil || saw.Kind != c.Kind || len(saw.Tensors) != len(c.Tensors) {
		t.Fatalf("the expectation saw %+v", saw)
	}

	errNo := errors.New("not this one")
	_, err = LoadExpect(path, func(h *Header) error { return errNo })
	checkOneSentinel(t, err, ErrMismatch, "refused")
	if !errors.Is(err, errNo) || err.Error() != "load checkpoint "+path+": not this one" {
		t.Fatalf("got %q", err)
	}
	// A refusal that is a Match error reads the same.
	_, err = LoadExpect(path, func(h *Header) error { return h.Match(nil) })
	checkOneSentinel(t, err, ErrMismatch, "Match")
	if want := "load checkpoint " + path + `: the index declares tensor "w" (f32 [2 3]), which is not expected`; err.Error() != want {
		t.Fatalf("got %q, want %q", err, want)
	}
	if _, err := LoadExpect(path, nil); err == nil {
		t.Fatal("LoadExpect without an expectation succeeded")
	}

	// DecodeExpect is the same on a stream.
	data := encodeBytes(t, c)
	got, err = DecodeExpect(bytes.NewReader(data), func(h *Header) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	checkSame(t, got, c)
	_, err = DecodeExpect(bytes.NewReader(data), func(h *Header) error { return errNo })
	checkOneSentinel(t, err, ErrMismatch, "DecodeExpect")
	if err.Error() != "decode checkpoint: not this one" {
		t.Fatalf("got %q", err)
	}
}

// TestCraftedBomb is the case that set this off: a small file with a valid
// checksum and zstd frame whose index declares one tensor of 4 GiB of
// zeros. A reader that states what it expects refuses it before it
// decompresses a byte, and allocates about what the file itself holds.
// (Before the expectation existed, Load decompressed it all: a 33 KB file
// declaring 1 GiB took 4 s and 3.1 GB of allocations; this one, 12.5 GB.)
func TestCraftedBomb(t *testing.T) {
	const n = 4 << 30
	data := assemble(bombHeader("model", n), zeroFrame(n))
	path := writeFile(t, "bomb.ck", data)
	small := []TensorSpec{{Name: "zeros", DType: F32, Shape: []int{16}}}

	var err error
	start := time.Now()
	alloc := allocated(func() {
		_, err = LoadExpect(path, func(h *Header) error { return h.Match(small) })
	})
	took := time.Since(start)
	t.Logf("file of %d bytes declaring %d: refused in %v, %d bytes allocated", len(data), int64(n), took, alloc)
	checkOneSentinel(t, err, ErrMismatch, "bomb")
	if want := "load checkpoint " + path + `: tensor "zeros" has shape [1073741824], want [16]`; err.Error() != want {
		t.Fatalf("got %q, want %q", err, want)
	}
	if alloc > 4<<20 {
		t.Errorf("refusing the file allocated %d bytes", alloc)
	}

	// Open alone reads the header as cheaply.
	alloc = allocated(func() {
		var f *CheckpointFile
		if f, err = Open(path); err == nil {
			if f.Header().RawBytes() != n {
				t.Errorf("RawBytes = %d", f.Header().RawBytes())
			}
			f.Close()
		}
	})
	if err != nil || alloc > 4<<20 {
		t.Errorf("Open: %v, %d bytes allocated", err, alloc)
	}
	t.Logf("Open: %d bytes allocated", alloc)

	// A payload that holds less than its index claims costs what it holds,
	// also to a reader that states no expectation: here 1 MiB of 4 GiB.
	short := zeroFrame(1 << 20)
	binary.LittleEndian.PutUint64(short[6:], n) // the frame claims 4 GiB too
	path = writeFile(t, "short.ck", assemble(bombHeader("model", n), short))
	alloc = allocated(func() { _, err = Load(path) })
	t.Logf("Load of a 4 GiB claim holding 1 MiB: %d bytes allocated", alloc)
	checkOneSentinel(t, err, ErrCorrupt, "short bomb")
	if want := "load checkpoint " + path + ": corrupt: payload ends before the 4294967296 bytes the index declares: its zstd frame holds less than its header states"; err.Error() != want {
		t.Fatalf("got %q, want %q", err, want)
	}
	if alloc > 32<<20 {
		t.Errorf("Load allocated %d bytes for a payload of 1 MiB", alloc)
	}
}

// TestBrokenFilesAllocateLittle: no broken file makes the reader allocate
// much more than the file's own size.
func TestBrokenFilesAllocateLittle(t *testing.T) {
	good := encodeBytes(t, sampleCheckpoint())
	future := slices.Clone(good)
	binary.LittleEndian.PutUint32(future[8:], 2)
	longHeader := slices.Clone(good)
	binary.LittleEndian.PutUint64(longHeader[12:], maxHeaderBytes)
	longPayload := slices.Clone(good)
	binary.LittleEndian.PutUint64(longPayload[20:], maxPayloadBytes)
	flipped := slices.Clone(good)
	flipped[len(flipped)/2] ^= 1
	files := map[string][]byte{
		"wrong magic":        append([]byte("GGUF\x03\x00\x00\x00"), good[8:]...),
		"future version":     future,
		"header length 4MiB": longHeader,
		"payload 16 TiB":     longPayload,
		"flipped byte":       flipped,
		"trailing bytes":     append(slices.Clone(good), 0),
		"overlap": assemble(`{"tensors":[{"name":"a","dtype":"f32","shape":[2],"offset":0,"length":8},{"name":"b","dtype":"f32","shape":[2],"offset":4,"length":8}]}`,
			zeroFrame(12)),
		"index past the data": assemble(bombHeader("x", 1<<30), zstdStream(make([]byte, 8))),
		"frame says 4 GiB":    assemble(bombHeader("x", 8), zeroFrame(4<<30)),
	}
	for _, n := range []int{0, 3, 12, prefixSize, prefixSize + 10, len(good) / 2, len(good) - 1} {
		files[fmt.Sprintf("truncated to %d bytes", n)] = good[:n]
	}
	for name, data := range files {
		t.Run(name, func(t *testing.T) {
			path := writeFile(t, "c.ck", data)
			var err error
			alloc := allocated(func() { _, err = Load(path) })
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if !strings.HasPrefix(err.Error(), "load checkpoint "+path+": ") {
				t.Fatalf("error %q does not name the file", err)
			}
			t.Logf("%d bytes allocated: %v", alloc, err)
			if limit := uint64(2*len(data)) + 1<<20; alloc > limit {
				t.Errorf("%d bytes allocated for a file of %d (%v)", alloc, len(data), err)
			}
		})
	}
}

// TestReadChangedFile: a file rewritten between Open and Read is reported,
// not loaded.
func TestReadChangedFile(t *testing.T) {
	data := encodeBytes(t, sampleCheckpoint())
	path := writeFile(t, "c.ck", data)
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	changed := slices.Clone(data)
	changed[len(changed)-6] ^= 1 // in the payload
	if err := os.WriteFile(path, changed, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = f.Read()
	checkOneSentinel(t, err, ErrChecksum, "changed")
	if !strings.HasPrefix(err.Error(), "load checkpoint "+path+": checksum mismatch: the file changed since it was opened") {
		t.Fatalf("got %q", err)
	}
}

// FuzzOpen fuzzes the file reader (Open, Header, Read) and checks that it
// agrees with the stream decoder: what one reads the other reads the same.
func FuzzOpen(f *testing.F) {
	good := encodeBytes(f, sampleCheckpoint())
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(append(slices.Clone(good), 1))
	f.Add(assemble(`{"tensors":[{"name":"a","dtype":"f32","shape":[2],"offset":0,"length":8}]}`, zstdFrame(make([]byte, 8))))
	f.Add(assemble(bombHeader("x", 1<<16), zeroFrame(1<<16)))
	f.Add(assemble(bombHeader("x", 1<<16), zeroFrame(1<<10)))
	f.Add(assemble(`{"kind":"k","tensors":[]}`, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		cf, err := openAt(bytes.NewReader(data), int64(len(data)))
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
		exact := cf.Header().RawBytes() <= 1<<20 // a fuzzed index may claim terabytes
		got, err := cf.read(exact)
		want, werr := Decode(bytes.NewReader(data))
		if (err == nil) != (werr == nil) {
			t.Fatalf("Read: %v, Decode: %v", err, werr)
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || !errors.Is(werr, ErrCorrupt) {
				t.Fatalf("Read: %v, Decode: %v", err, werr)
			}
			return
		}
		checkSame(t, got, want)
	})
}

// TestHeaderJSON: a header is its JSON documents as written.
func TestHeaderJSON(t *testing.T) {
	c := &Checkpoint{Kind: "k", Config: json.RawMessage(`{"a":1}`)}
	f, err := openAt(bytes.NewReader(encodeBytes(t, c)), int64(len(encodeBytes(t, c))))
	if err != nil {
		t.Fatal(err)
	}
	if h := f.Header(); string(h.Config) != `{"a":1}` || h.State != nil || len(h.Tensors) != 0 || h.RawBytes() != 0 {
		t.Fatalf("got %+v", h)
	}
}
