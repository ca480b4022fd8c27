package engine

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"
	"gorgonia.org/tensor"
)

// A checkpoint file is, in order:
//
//	offset  size  field
//	0       8     magic "MOERLCK\x00"
//	8       4     format version, uint32 little-endian (1)
//	12      8     header length H, uint64 little-endian
//	20      8     payload length P, uint64 little-endian (compressed bytes)
//	28      H     header, JSON (see checkpointHeader)
//	28+H    P     tensor payload, one zstd frame
//	28+H+P  4     CRC-32C (Castagnoli) of bytes [0, 28+H+P), uint32 little-endian
//
// The payload length sits in the fixed prefix, not in the JSON, so that the
// reader knows the file's size and can verify the checksum before it trusts
// (or even parses) anything after the prefix: any flipped byte past the
// version is reported as a checksum mismatch, and a short file as truncated.
//
// The decompressed payload is the tensors' elements, little-endian, packed in
// the order of the header's index.

// CheckpointVersion is the format version that this moerl writes and reads.
const CheckpointVersion = 1

const (
	checkpointMagic = "MOERLCK\x00"
	prefixSize      = 8 + 4 + 8 + 8
	checksumSize    = 4

	// maxHeaderBytes bounds the JSON header so that a corrupt length cannot
	// make the reader allocate much; a header lists about 100 bytes per
	// tensor, so this is room for hundreds of thousands of tensors.
	maxHeaderBytes = 64 << 20
	// maxPayloadBytes bounds the compressed and the decompressed payload; it
	// keeps offset arithmetic far from overflow.
	maxPayloadBytes = 1 << 44
	// readChunk is how much a reader of unknown size allocates ahead of the
	// data it has actually received.
	readChunk = 16 << 20
)

// Sentinel errors of Load and Decode, for errors.Is. Every error they return
// wraps exactly one of them.
var (
	// ErrNotCheckpoint: the file does not start with the checkpoint magic.
	ErrNotCheckpoint = errors.New("not a moerl checkpoint")
	// ErrVersion: the file's format version is not CheckpointVersion.
	ErrVersion = errors.New("unsupported checkpoint format version")
	// ErrTruncated: the file ends before the length its prefix declares.
	ErrTruncated = errors.New("truncated")
	// ErrChecksum: the stored checksum does not match the file's bytes.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrCorrupt: the checksum matched but the content is inconsistent
	// (bad JSON, an index entry outside the payload, a payload that does not
	// decompress to the size the index declares), or a length in the prefix
	// is out of bounds, or a file has bytes after its checksum.
	ErrCorrupt = errors.New("corrupt checkpoint")
)

// formatError carries a precise message and unwraps to one sentinel, so that
// the text reads "format version 7, this moerl reads 1" rather than repeating
// the sentinel's own words.
type formatError struct {
	kind error
	msg  string
}

func (e *formatError) Error() string { return e.msg }
func (e *formatError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &formatError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// Checkpoint is the content of a checkpoint file: a kind, two opaque JSON
// documents and named tensors. The engine does not interpret Config or
// State; the model and the trainer own them.
type Checkpoint struct {
	// Kind says what the file holds, e.g. "moerl-model".
	Kind string
	// Config is the model configuration (including its tokenizer), as JSON.
	Config json.RawMessage
	// State is the training state (step, RNG states, data cursor...), as JSON.
	State json.RawMessage
	// Tensors are written in this order.
	Tensors []*NamedTensor
}

// NamedTensor is one tensor of a checkpoint. Exactly one of F (an f32
// tensor) and I (an i32 tensor) is non-nil, also when the tensor has no
// elements. An empty Shape is a scalar (one element).
type NamedTensor struct {
	Name  string
	Shape []int
	F     []float32
	I     []int32
}

// DType is F32 or I32, by which of F and I is set (F32 when neither is).
func (t *NamedTensor) DType() DType {
	if t.F == nil && t.I != nil {
		return I32
	}
	return F32
}

// Len is the number of elements held.
func (t *NamedTensor) Len() int {
	if t.DType() == I32 {
		return len(t.I)
	}
	return len(t.F)
}

// Add appends an f32 tensor. The checkpoint keeps data without copying it,
// so data must not change until the checkpoint has been written. Add does
// not validate; Encode reports a bad shape, a length that does not match it,
// or a repeated name.
func (c *Checkpoint) Add(name string, shape []int, data []float32) {
	if data == nil {
		data = []float32{}
	}
	c.Tensors = append(c.Tensors, &NamedTensor{Name: name, Shape: append([]int{}, shape...), F: data})
}

// AddI32 appends an i32 tensor, on the same terms as Add.
func (c *Checkpoint) AddI32(name string, shape []int, data []int32) {
	if data == nil {
		data = []int32{}
	}
	c.Tensors = append(c.Tensors, &NamedTensor{Name: name, Shape: append([]int{}, shape...), I: data})
}

// Tensor returns the tensor called name.
func (c *Checkpoint) Tensor(name string) (*NamedTensor, error) {
	for _, t := range c.Tensors {
		if t.Name == name {
			return t, nil
		}
	}
	return nil, fmt.Errorf("checkpoint has no tensor %q", name)
}

// F32 returns the elements of the f32 tensor called name after checking
// that its shape is exactly shape: what a model does when it restores a
// parameter.
func (c *Checkpoint) F32(name string, shape ...int) ([]float32, error) {
	t, err := c.checked(name, F32, shape)
	if err != nil {
		return nil, err
	}
	return t.F, nil
}

// I32 returns the elements of the i32 tensor called name after checking
// that its shape is exactly shape.
func (c *Checkpoint) I32(name string, shape ...int) ([]int32, error) {
	t, err := c.checked(name, I32, shape)
	if err != nil {
		return nil, err
	}
	return t.I, nil
}

func (c *Checkpoint) checked(name string, dtype DType, shape []int) (*NamedTensor, error) {
	t, err := c.Tensor(name)
	if err != nil {
		return nil, err
	}
	if t.DType() != dtype {
		return nil, fmt.Errorf("checkpoint tensor %q is %s, want %s", name, t.DType(), dtype)
	}
	if !slices.Equal(t.Shape, shape) {
		return nil, fmt.Errorf("checkpoint tensor %q has shape %v, want %v", name, t.Shape, shape)
	}
	if t.Len() != Numel(shape) {
		return nil, fmt.Errorf("checkpoint tensor %q has %d elements for shape %v", name, t.Len(), shape)
	}
	return t, nil
}

// Dense returns a copy of the tensor called name as a gorgonia.org/tensor
// Dense of its shape (Float32 or Int32), for inspection and export on the
// host. gorgonia cannot hold a tensor without elements, so one whose shape
// has a zero dimension is an error.
func (c *Checkpoint) Dense(name string) (*tensor.Dense, error) {
	t, err := c.Tensor(name)
	if err != nil {
		return nil, err
	}
	n, err := shapeElems(t.Shape)
	if err != nil {
		return nil, fmt.Errorf("checkpoint tensor %q: %w", name, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("checkpoint tensor %q has shape %v with no elements, which a tensor.Dense cannot hold", name, t.Shape)
	}
	if int64(t.Len()) != n {
		return nil, fmt.Errorf("checkpoint tensor %q has %d elements for shape %v", name, t.Len(), t.Shape)
	}
	var backing any
	if t.DType() == I32 {
		backing = slices.Clone(t.I)
	} else {
		backing = slices.Clone(t.F)
	}
	return tensor.New(tensor.WithShape(slices.Clone(t.Shape)...), tensor.WithBacking(backing)), nil
}

// shapeElems is the number of elements of shape, or an error for a negative
// dimension or a product beyond maxPayloadBytes/4.
func shapeElems(shape []int) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
		if d != 0 && n > maxPayloadBytes/4/int64(d) {
			return 0, fmt.Errorf("shape %v has too many elements", shape)
		}
		n *= int64(d)
	}
	return n, nil
}

// checkpointHeader is the JSON header. Unknown fields are ignored, so a
// later version-1 writer may add optional ones.
type checkpointHeader struct {
	Kind    string          `json:"kind"`
	Config  json.RawMessage `json:"config,omitempty"`
	State   json.RawMessage `json:"state,omitempty"`
	Tensors []tensorEntry   `json:"tensors"`
}

// tensorEntry locates a tensor in the decompressed payload, in bytes.
type tensorEntry struct {
	Name   string `json:"name"`
	DType  string `json:"dtype"`
	Shape  []int  `json:"shape"`
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
}

// Encode writes c to w in the checkpoint format. The bytes depend only on
// c's content (the JSON documents are compacted), so the same checkpoint
// always encodes to the same bytes.
func Encode(w io.Writer, c *Checkpoint) error {
	if err := encode(w, c); err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	return nil
}

func encode(w io.Writer, c *Checkpoint) error {
	for _, doc := range []struct {
		name string
		json json.RawMessage
	}{{"config", c.Config}, {"state", c.State}} {
		if doc.json != nil && !json.Valid(doc.json) {
			return fmt.Errorf("%s is not valid JSON", doc.name)
		}
	}
	h := checkpointHeader{Kind: c.Kind, Config: c.Config, State: c.State, Tensors: make([]tensorEntry, 0, len(c.Tensors))}
	seen := make(map[string]bool, len(c.Tensors))
	var size int64
	for i, t := range c.Tensors {
		if t == nil {
			return fmt.Errorf("tensor %d is nil", i)
		}
		if t.Name == "" || !utf8.ValidString(t.Name) {
			return fmt.Errorf("tensor %d has name %q: want non-empty UTF-8", i, t.Name)
		}
		if seen[t.Name] {
			return fmt.Errorf("tensor %q appears twice", t.Name)
		}
		seen[t.Name] = true
		if t.F != nil && t.I != nil {
			return fmt.Errorf("tensor %q has both F and I set", t.Name)
		}
		n, err := shapeElems(t.Shape)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if int64(t.Len()) != n {
			return fmt.Errorf("tensor %q has %d elements, its shape %v has %d", t.Name, t.Len(), t.Shape, n)
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		h.Tensors = append(h.Tensors, tensorEntry{Name: t.Name, DType: t.DType().String(), Shape: shape, Offset: size, Length: 4 * n})
		size += 4 * n
		if size > maxPayloadBytes {
			return fmt.Errorf("tensors hold more than %d bytes", int64(maxPayloadBytes))
		}
	}
	header, err := json.Marshal(&h)
	if err != nil {
		return fmt.Errorf("header: %w", err)
	}
	if len(header) > maxHeaderBytes {
		return fmt.Errorf("header of %d bytes exceeds the limit of %d", len(header), maxHeaderBytes)
	}

	raw := make([]byte, 0, size)
	for _, t := range c.Tensors {
		if t.DType() == I32 {
			for _, v := range t.I {
				raw = binary.LittleEndian.AppendUint32(raw, uint32(v))
			}
		} else {
			for _, v := range t.F {
				raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(v))
			}
		}
	}
	// One goroutine and a fixed level: the frame depends only on raw.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return fmt.Errorf("zstd: %w", err)
	}
	payload := enc.EncodeAll(raw, nil)
	enc.Close()

	var prefix [prefixSize]byte
	copy(prefix[:], checkpointMagic)
	binary.LittleEndian.PutUint32(prefix[8:], CheckpointVersion)
	binary.LittleEndian.PutUint64(prefix[12:], uint64(len(header)))
	binary.LittleEndian.PutUint64(prefix[20:], uint64(len(payload)))
	sum := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	mw := io.MultiWriter(w, sum)
	for _, b := range [][]byte{prefix[:], header, payload} {
		if _, err := mw.Write(b); err != nil {
			return err
		}
	}
	_, err = w.Write(binary.LittleEndian.AppendUint32(nil, sum.Sum32()))
	return err
}

// Decode reads one checkpoint from r. It reads no further than the
// checkpoint's checksum. Errors wrap ErrNotCheckpoint, ErrVersion,
// ErrTruncated, ErrChecksum or ErrCorrupt; a read error is passed on wrapped.
func Decode(r io.Reader) (*Checkpoint, error) {
	c, _, err := decode(r, -1)
	if err != nil {
		return nil, fmt.Errorf("decode checkpoint: %w", err)
	}
	return c, nil
}

// decode reads a checkpoint from r. size is the number of bytes r holds, or
// -1 when unknown; when known, a file shorter than its prefix declares is
// rejected before anything large is allocated. It returns the number of
// bytes the checkpoint occupies.
func decode(r io.Reader, size int64) (*Checkpoint, int64, error) {
	var prefix [prefixSize]byte
	n, err := io.ReadFull(r, prefix[:])
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, 0, err
	}
	have := prefix[:n]
	// Check what there is of the magic first: a short file of other bytes
	// is not a checkpoint at all, a short prefix of one is truncated.
	m := min(len(have), len(checkpointMagic))
	if string(have[:m]) != checkpointMagic[:m] {
		return nil, 0, errorf(ErrNotCheckpoint, "not a moerl checkpoint (starts with %q)", have[:m])
	}
	if n >= 12 {
		if v := binary.LittleEndian.Uint32(have[8:]); v != CheckpointVersion {
			return nil, 0, errorf(ErrVersion, "format version %d, this moerl reads %d", v, CheckpointVersion)
		}
	}
	if n < prefixSize {
		return nil, 0, errorf(ErrTruncated, "truncated: file has %d bytes, the fixed prefix alone is %d", n, prefixSize)
	}
	headerLen := binary.LittleEndian.Uint64(prefix[12:])
	payloadLen := binary.LittleEndian.Uint64(prefix[20:])
	if headerLen == 0 || headerLen > maxHeaderBytes {
		return nil, 0, errorf(ErrCorrupt, "corrupt: header length %d is outside [1, %d]", headerLen, maxHeaderBytes)
	}
	if payloadLen > maxPayloadBytes {
		return nil, 0, errorf(ErrCorrupt, "corrupt: payload length %d exceeds the limit of %d", payloadLen, int64(maxPayloadBytes))
	}
	rest := int64(headerLen) + int64(payloadLen) + checksumSize
	total := prefixSize + rest
	if size >= 0 && size < total {
		return nil, 0, truncated(size-prefixSize, headerLen, payloadLen)
	}

	// Read everything up to and including the checksum. With the size
	// unknown, the buffer grows only as data arrives, so a corrupt length
	// costs no more memory than the stream really holds.
	initial := min(rest, readChunk)
	if size >= 0 {
		initial = rest
	}
	body, err := readGrowing(r, rest, initial)
	if err == io.EOF {
		return nil, 0, truncated(int64(len(body)), headerLen, payloadLen)
	}
	if err != nil {
		return nil, 0, err
	}

	sum := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	sum.Write(prefix[:])
	sum.Write(body[:rest-checksumSize])
	stored := binary.LittleEndian.Uint32(body[rest-checksumSize:])
	if got := sum.Sum32(); got != stored {
		return nil, 0, errorf(ErrChecksum, "checksum mismatch: stored CRC-32C %#08x, content has %#08x", stored, got)
	}

	c, err := parseBody(body[:headerLen], body[headerLen:rest-checksumSize])
	if err != nil {
		return nil, 0, err
	}
	return c, total, nil
}

// readGrowing reads exactly n bytes from r into a buffer that starts with
// capacity initial and doubles as data arrives. A stream that ends early
// gives what it held and io.EOF.
func readGrowing(r io.Reader, n, initial int64) ([]byte, error) {
	buf := make([]byte, 0, initial)
	for int64(len(buf)) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, int(min(n, max(2*int64(cap(buf)), 512))-int64(len(buf))))
		}
		k, err := r.Read(buf[len(buf):min(int64(cap(buf)), n)])
		buf = buf[:len(buf)+k]
		if err == io.EOF && int64(len(buf)) < n {
			return buf, io.EOF
		}
		if err != nil && err != io.EOF {
			return buf, err
		}
	}
	return buf, nil
}

// truncated describes a body (everything after the prefix) that has only
// have bytes, by the part in which it stops.
func truncated(have int64, headerLen, payloadLen uint64) error {
	h, p := int64(headerLen), int64(payloadLen)
	switch {
	case have < h:
		return errorf(ErrTruncated, "truncated: header has %d of %d bytes", have, h)
	case have < h+p:
		return errorf(ErrTruncated, "truncated: payload has %d of %d bytes", have-h, p)
	default:
		return errorf(ErrTruncated, "truncated: checksum has %d of %d bytes", have-h-p, checksumSize)
	}
}

// parseBody parses the header and decompresses the payload of a checkpoint
// whose checksum has matched.
func parseBody(headerJSON, payload []byte) (*Checkpoint, error) {
	var h checkpointHeader
	if err := json.Unmarshal(headerJSON, &h); err != nil {
		return nil, errorf(ErrCorrupt, "corrupt: header is not valid JSON: %v", err)
	}
	// The payload must be exactly as long as the furthest tensor reaches.
	var rawSize int64
	seen := make(map[string]bool, len(h.Tensors))
	for i, e := range h.Tensors {
		if e.Name == "" {
			return nil, errorf(ErrCorrupt, "corrupt: tensor %d has an empty name", i)
		}
		if seen[e.Name] {
			return nil, errorf(ErrCorrupt, "corrupt: tensor %q appears twice in the index", e.Name)
		}
		seen[e.Name] = true
		if e.DType != F32.String() && e.DType != I32.String() {
			return nil, errorf(ErrCorrupt, "corrupt: tensor %q has dtype %q, want f32 or i32", e.Name, e.DType)
		}
		n, err := shapeElems(e.Shape)
		if err != nil {
			return nil, errorf(ErrCorrupt, "corrupt: tensor %q: %v", e.Name, err)
		}
		if e.Length != 4*n {
			return nil, errorf(ErrCorrupt, "corrupt: tensor %q has length %d bytes, its shape %v needs %d", e.Name, e.Length, e.Shape, 4*n)
		}
		if e.Offset < 0 || e.Offset > maxPayloadBytes-e.Length {
			return nil, errorf(ErrCorrupt, "corrupt: tensor %q has offset %d out of range", e.Name, e.Offset)
		}
		rawSize = max(rawSize, e.Offset+e.Length)
	}

	// The index bounds the decompressed size: the decoder may not produce a
	// byte more, nor use a window larger than the payload. The stream
	// decoder, unlike DecodeAll, prints nothing when a bound is hit.
	dec, err := zstd.NewReader(bytes.NewReader(payload), zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(uint64(max(rawSize, zstd.MinWindowSize))))
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	defer dec.Close()
	// Real tensors compress little, so the first guess is usually the
	// whole size; a crafted payload that claims far more than it could
	// hold makes the buffer grow only as bytes really come out.
	raw, err := readGrowing(dec, rawSize, min(rawSize, 8*int64(len(payload))+readChunk))
	if err == io.EOF {
		return nil, errorf(ErrCorrupt, "corrupt: payload decompresses to %d bytes, the index declares %d", len(raw), rawSize)
	}
	if errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		return nil, errorf(ErrCorrupt, "corrupt: payload decompresses to more than the %d bytes the index declares", rawSize)
	}
	if err != nil {
		return nil, errorf(ErrCorrupt, "corrupt: payload: %v", err)
	}
	var extra [1]byte
	switch k, err := dec.Read(extra[:]); {
	case k > 0:
		return nil, errorf(ErrCorrupt, "corrupt: payload decompresses to more than the %d bytes the index declares", rawSize)
	case err != io.EOF:
		return nil, errorf(ErrCorrupt, "corrupt: payload: %v", err)
	}

	c := &Checkpoint{Kind: h.Kind, Config: h.Config, State: h.State, Tensors: make([]*NamedTensor, 0, len(h.Tensors))}
	for _, e := range h.Tensors {
		b := raw[e.Offset : e.Offset+e.Length]
		t := &NamedTensor{Name: e.Name, Shape: e.Shape}
		if t.Shape == nil {
			t.Shape = []int{}
		}
		if e.DType == I32.String() {
			t.I = make([]int32, len(b)/4)
			for i := range t.I {
				t.I[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
			}
		} else {
			t.F = make([]float32, len(b)/4)
			for i := range t.F {
				t.F[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
			}
		}
		c.Tensors = append(c.Tensors, t)
	}
	return c, nil
}

// Load reads the checkpoint file at path. Errors name the file and wrap one
// of the sentinel errors (or the error of opening or reading the file).
func Load(path string) (*Checkpoint, error) {
	c, err := load(path)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint %s: %w", path, err)
	}
	return c, nil
}

func load(path string) (*Checkpoint, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	c, n, err := decode(bufio.NewReaderSize(f, 1<<20), st.Size())
	if err != nil {
		return nil, err
	}
	if extra := st.Size() - n; extra != 0 {
		return nil, errorf(ErrCorrupt, "corrupt: %d bytes after the checksum", extra)
	}
	return c, nil
}

// saveWriter, when set (by tests), wraps the temporary file's writer so that
// a write can be made to fail part-way.
var saveWriter func(io.Writer) io.Writer

// Save writes c to path atomically: it encodes into a temporary file in the
// same directory, syncs it, renames it over path and syncs the directory. On
// any failure it removes the temporary file and leaves whatever was at path
// untouched; on success no temporary file remains. The file gets mode 0644.
// An error that says "written" comes after the rename: the new file is in
// place, but syncing its directory failed, so it may not survive a crash.
func Save(path string, c *Checkpoint) error {
	if err := save(path, c); err != nil {
		return fmt.Errorf("save checkpoint %s: %w", path, err)
	}
	return nil
}

func save(path string, c *Checkpoint) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close() // may already be closed; the first error is the one to report
			os.Remove(tmp)
		}
	}()

	var w io.Writer = f
	if saveWriter != nil {
		w = saveWriter(w)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if err := Encode(bw, c); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	// The rename is durable only once the directory entry is on disk. If
	// that fails the new file is in place but may not survive a crash.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("written, but cannot sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("written, but cannot sync directory: %w", err)
	}
	return nil
}
