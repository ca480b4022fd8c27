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
	"io/fs"
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
// the order of the header's index: each tensor starts where the one before
// it ends. The header's "tensors" index lists, for each, name, dtype ("f32"
// or "i32"), shape, offset and length in bytes.
//
// Reading is ordered so that a file cannot make the reader spend more than
// the file justifies: the prefix's lengths are checked against their bounds
// and the file's size, the checksum is verified by streaming the file
// through it, the header (at most 4 MiB) is parsed and its index checked for
// consistency, and only then, once the caller has approved the index (Open
// and Header, LoadExpect), is the payload decompressed, by a decoder whose
// window and output are bounded by the size the index declares.

// CheckpointVersion is the format version that this moerl writes and reads.
const CheckpointVersion = 1

const (
	checkpointMagic = "MOERLCK\x00"
	prefixSize      = 8 + 4 + 8 + 8
	checksumSize    = 4

	// maxHeaderBytes bounds the JSON header, which the reader holds and
	// parses before anything else, so that a corrupt or hostile length
	// cannot make it allocate much. A header lists about 100 bytes per
	// tensor and moerl's model, tokenizer and run state take a few KB more:
	// a model of moe.MaxLayers layers needs about 1.1 MB, and moe-small's
	// header is about 10 KB.
	maxHeaderBytes = 4 << 20
	// maxPayloadBytes bounds the compressed and the decompressed payload; it
	// keeps offset arithmetic far from overflow.
	maxPayloadBytes = 1 << 44
	// readChunk is how much a reader of unknown size allocates ahead of the
	// data it has actually received.
	readChunk = 16 << 20
)

// Sentinel errors of the readers (Open, Read, Load, LoadExpect, Decode,
// DecodeExpect), for errors.Is. Every error they return wraps exactly one of
// them, or is the error of opening or reading the file.
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
	// is out of bounds, the index's tensors overlap or leave gaps, or a file
	// has bytes after its checksum.
	ErrCorrupt = errors.New("corrupt checkpoint")
	// ErrMismatch: the file is sound, but its index is not what the reader
	// expects (Header.Match, or an expectation given to LoadExpect or
	// DecodeExpect refused it).
	ErrMismatch = errors.New("checkpoint does not hold what was expected")
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
	sum := crc32.New(castagnoli)
	mw := io.MultiWriter(w, sum)
	for _, b := range [][]byte{prefix[:], header, payload} {
		if _, err := mw.Write(b); err != nil {
			return err
		}
	}
	_, err = w.Write(binary.LittleEndian.AppendUint32(nil, sum.Sum32()))
	return err
}

// Header is what a checkpoint declares about itself: everything but the
// tensors' elements. Open and DecodeExpect hand it over after the checksum
// has matched and the index has been checked for consistency, and before a
// byte of the payload is decompressed, so that a caller can refuse a file
// whose tensors are not the ones it needs without paying for them.
type Header struct {
	// Kind says what the file holds, e.g. "moerl-model".
	Kind string
	// Config and State are the checkpoint's opaque JSON documents.
	Config json.RawMessage
	State  json.RawMessage
	// Tensors is the index, in payload order.
	Tensors []TensorInfo
	// PayloadBytes is the size of the compressed payload in the file.
	PayloadBytes int64
}

// TensorInfo is one entry of a checkpoint's index. The tensors are packed:
// each starts where the one before it ends, the first at 0.
type TensorInfo struct {
	Name  string
	DType DType
	// Shape is the tensor's shape; empty for a scalar.
	Shape []int
	// Offset and Length locate the elements in the decompressed payload,
	// in bytes; Length is 4 times the number of elements.
	Offset, Length int64
}

// RawBytes is the size the payload must decompress to: the sum of the
// tensors' lengths.
func (h *Header) RawBytes() int64 {
	var n int64
	for _, t := range h.Tensors {
		n += t.Length
	}
	return n
}

// Tensor returns the index entry of the tensor called name.
func (h *Header) Tensor(name string) (TensorInfo, bool) {
	for _, t := range h.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return TensorInfo{}, false
}

// TensorSpec is a tensor that a reader of checkpoints expects: its name,
// element type and exact shape. An Optional tensor may be absent.
type TensorSpec struct {
	Name     string
	DType    DType
	Shape    []int
	Optional bool
}

// Match checks the index against what a reader expects: every tensor the
// index declares must be in want with the same dtype and shape, and every
// tensor of want that is not Optional must be declared. The error, which
// wraps ErrMismatch, names the first tensor that differs. Because the index
// is packed, a header that matches decompresses to exactly the bytes want
// describes.
func (h *Header) Match(want []TensorSpec) error {
	idx := make(map[string]int, len(want))
	for i, s := range want {
		idx[s.Name] = i
	}
	found := make([]bool, len(want))
	for _, t := range h.Tensors {
		i, ok := idx[t.Name]
		if !ok {
			return errorf(ErrMismatch, "the index declares tensor %q (%s %v), which is not expected", t.Name, t.DType, t.Shape)
		}
		s := want[i]
		found[i] = true
		if t.DType != s.DType {
			return errorf(ErrMismatch, "tensor %q is %s, want %s", t.Name, t.DType, s.DType)
		}
		if !slices.Equal(t.Shape, s.Shape) {
			return errorf(ErrMismatch, "tensor %q has shape %v, want %v", t.Name, t.Shape, s.Shape)
		}
	}
	for i, s := range want {
		if !found[i] && !s.Optional {
			return errorf(ErrMismatch, "tensor %q (%s %v) is missing", s.Name, s.DType, s.Shape)
		}
	}
	return nil
}

// mismatchError is an expectation's own error, marked as ErrMismatch.
type mismatchError struct{ err error }

func (e *mismatchError) Error() string   { return e.err.Error() }
func (e *mismatchError) Unwrap() []error { return []error{ErrMismatch, e.err} }

// expectOK runs a caller's expectation on h. A refusal wraps ErrMismatch
// (once, even if the caller's error already does).
func expectOK(h *Header, expect func(*Header) error) error {
	if expect == nil {
		return nil
	}
	err := expect(h)
	if err == nil || errors.Is(err, ErrMismatch) {
		return err
	}
	return &mismatchError{err}
}

// parsePrefix checks the fixed prefix, of which have holds what the file
// has (up to prefixSize bytes), and returns the two lengths it declares.
func parsePrefix(have []byte) (headerLen, payloadLen int64, err error) {
	// Check what there is of the magic first: a short file of other bytes
	// is not a checkpoint at all, a short prefix of one is truncated.
	m := min(len(have), len(checkpointMagic))
	if string(have[:m]) != checkpointMagic[:m] {
		return 0, 0, errorf(ErrNotCheckpoint, "not a moerl checkpoint (starts with %q)", have[:m])
	}
	if len(have) >= 12 {
		if v := binary.LittleEndian.Uint32(have[8:]); v != CheckpointVersion {
			return 0, 0, errorf(ErrVersion, "format version %d, this moerl reads %d", v, CheckpointVersion)
		}
	}
	if len(have) < prefixSize {
		return 0, 0, errorf(ErrTruncated, "truncated: file has %d bytes, the fixed prefix alone is %d", len(have), prefixSize)
	}
	h := binary.LittleEndian.Uint64(have[12:])
	p := binary.LittleEndian.Uint64(have[20:])
	if h == 0 || h > maxHeaderBytes {
		return 0, 0, errorf(ErrCorrupt, "corrupt: header length %d is outside [1, %d]", h, maxHeaderBytes)
	}
	if p > maxPayloadBytes {
		return 0, 0, errorf(ErrCorrupt, "corrupt: payload length %d exceeds the limit of %d", p, int64(maxPayloadBytes))
	}
	return int64(h), int64(p), nil
}

// truncated describes a body (everything after the prefix) that has only
// have bytes, by the part in which it stops.
func truncated(have, h, p int64) error {
	switch {
	case have < h:
		return errorf(ErrTruncated, "truncated: header has %d of %d bytes", have, h)
	case have < h+p:
		return errorf(ErrTruncated, "truncated: payload has %d of %d bytes", have-h, p)
	default:
		return errorf(ErrTruncated, "truncated: checksum has %d of %d bytes", have-h-p, checksumSize)
	}
}

// parseHeader parses the JSON header of a checkpoint whose checksum has
// matched and checks its index: names unique and non-empty, known dtypes,
// lengths that are what the shapes need, and tensors packed from offset 0
// with neither overlap nor gap. head is the start of the payload (up to
// zstd.HeaderMaxSize bytes): the zstd frame's own content size, when it
// states one, must be what the index declares.
func parseHeader(headerJSON []byte, payloadLen int64, head []byte) (*Header, error) {
	var ch checkpointHeader
	if err := json.Unmarshal(headerJSON, &ch); err != nil {
		return nil, errorf(ErrCorrupt, "corrupt: header is not valid JSON: %v", err)
	}
	h := &Header{Kind: ch.Kind, Config: ch.Config, State: ch.State, PayloadBytes: payloadLen,
		Tensors: make([]TensorInfo, 0, len(ch.Tensors))}
	seen := make(map[string]bool, len(ch.Tensors))
	var end int64 // where the previous tensor ends
	for i, e := range ch.Tensors {
		if e.Name == "" {
			return nil, errorf(ErrCorrupt, "corrupt: tensor %d has an empty name", i)
		}
		if seen[e.Name] {
			return nil, errorf(ErrCorrupt, "corrupt: tensor %q appears twice in the index", e.Name)
		}
		seen[e.Name] = true
		var dt DType
		switch e.DType {
		case F32.String():
			dt = F32
		case I32.String():
			dt = I32
		default:
			return nil, errorf(ErrCorrupt, "corrupt: tensor %q has dtype %q, want f32 or i32", e.Name, e.DType)
		}
		n, err := shapeElems(e.Shape)
		if err != nil {
			return nil, errorf(ErrCorrupt, "corrupt: tensor %q: %v", e.Name, err)
		}
		if e.Length != 4*n {
			return nil, errorf(ErrCorrupt, "corrupt: tensor %q has length %d bytes, its shape %v needs %d", e.Name, e.Length, e.Shape, 4*n)
		}
		switch {
		case e.Offset < 0:
			return nil, errorf(ErrCorrupt, "corrupt: tensor %q has offset %d out of range", e.Name, e.Offset)
		case e.Offset < end:
			return nil, errorf(ErrCorrupt, "corrupt: tensor %q at offset %d overlaps the tensor before it, which ends at %d", e.Name, e.Offset, end)
		case e.Offset > end:
			return nil, errorf(ErrCorrupt, "corrupt: tensor %q at offset %d leaves a gap of %d bytes after the tensor before it (tensors are packed from offset 0)", e.Name, e.Offset, e.Offset-end)
		}
		end += e.Length
		if end > maxPayloadBytes {
			return nil, errorf(ErrCorrupt, "corrupt: the index declares more than %d bytes", int64(maxPayloadBytes))
		}
		shape := e.Shape
		if shape == nil {
			shape = []int{}
		}
		h.Tensors = append(h.Tensors, TensorInfo{Name: e.Name, DType: dt, Shape: shape, Offset: e.Offset, Length: e.Length})
	}
	var zh zstd.Header
	if len(head) > 0 && zh.Decode(head) == nil && !zh.Skippable {
		if zh.HasFCS && zh.FrameContentSize != uint64(end) {
			return nil, errorf(ErrCorrupt, "corrupt: the payload's zstd frame declares %d bytes, the index %d", zh.FrameContentSize, end)
		}
		if w := windowLimit(end); !zh.SingleSegment && zh.WindowSize > w {
			return nil, errorf(ErrCorrupt, "corrupt: the payload's zstd window of %d bytes exceeds the %d that the index's %d bytes allow", zh.WindowSize, w, end)
		}
	}
	return h, nil
}

// windowLimit is the largest zstd window a payload of raw bytes may use:
// raw rounded up to a power of two (the encoder's own choice for a small
// payload), at least zstd's minimum and at most 512 MiB (the decoder's
// default and far above the encoder's 8 MiB).
func windowLimit(raw int64) uint64 {
	w := uint64(zstd.MinWindowSize)
	for w < uint64(raw) && w < 1<<29 {
		w <<= 1
	}
	return w
}

// clone returns a copy of h that shares nothing a caller could change with
// the index that the reader will use.
func (h *Header) clone() *Header {
	c := *h
	c.Tensors = slices.Clone(h.Tensors)
	for i := range c.Tensors {
		c.Tensors[i].Shape = slices.Clone(c.Tensors[i].Shape)
	}
	return &c
}

// Decode reads one checkpoint from r. It reads no further than the
// checkpoint's checksum. Errors wrap ErrNotCheckpoint, ErrVersion,
// ErrTruncated, ErrChecksum or ErrCorrupt; a read error is passed on
// wrapped. Memory grows only with what the stream really holds and what
// its payload really decompresses to, however large the lengths it
// declares.
func Decode(r io.Reader) (*Checkpoint, error) {
	return DecodeExpect(r, nil)
}

// DecodeExpect is Decode with an expectation: expect, when not nil, sees the
// header once the checksum has matched and the index is consistent, before
// the payload is decompressed, and may refuse it; its error is returned
// wrapped, and wraps ErrMismatch. What expect approves is decompressed into
// tensors allocated at their declared sizes.
func DecodeExpect(r io.Reader, expect func(*Header) error) (*Checkpoint, error) {
	c, err := decodeStream(r, expect)
	if err != nil {
		return nil, fmt.Errorf("decode checkpoint: %w", err)
	}
	return c, nil
}

func decodeStream(r io.Reader, expect func(*Header) error) (*Checkpoint, error) {
	var prefix [prefixSize]byte
	n, err := io.ReadFull(r, prefix[:])
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, err
	}
	hl, pl, err := parsePrefix(prefix[:n])
	if err != nil {
		return nil, err
	}
	// Read everything up to and including the checksum. The buffer grows
	// only as data arrives, so a corrupt length costs no more memory than
	// the stream really holds.
	rest := hl + pl + checksumSize
	body, err := readGrowing(r, rest, min(rest, readChunk))
	if err == io.EOF {
		return nil, truncated(int64(len(body)), hl, pl)
	}
	if err != nil {
		return nil, err
	}
	sum := crc32.New(castagnoli)
	sum.Write(prefix[:])
	sum.Write(body[:rest-checksumSize])
	stored := binary.LittleEndian.Uint32(body[rest-checksumSize:])
	if got := sum.Sum32(); got != stored {
		return nil, errorf(ErrChecksum, "checksum mismatch: stored CRC-32C %#08x, content has %#08x", stored, got)
	}
	payload := body[hl : rest-checksumSize]
	h, err := parseHeader(body[:hl], pl, payload[:min(len(payload), zstd.HeaderMaxSize)])
	if err != nil {
		return nil, err
	}
	if err := expectOK(h.clone(), expect); err != nil {
		return nil, err
	}
	tensors, err := readPayload(h.Tensors, bytes.NewReader(payload), expect != nil)
	if err != nil {
		return nil, err
	}
	return &Checkpoint{Kind: h.Kind, Config: h.Config, State: h.State, Tensors: tensors}, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

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

// readPayload decompresses the payload from r straight into the tensors of
// a checked index. The decoder may use no window larger than the index
// justifies, and no byte beyond the declared size is accepted. With exact
// (the caller approved the index), each tensor is allocated at its declared
// size; otherwise it grows as elements really come out, so a payload that
// claims far more than it holds costs only what it holds.
func readPayload(index []TensorInfo, r io.Reader, exact bool) ([]*NamedTensor, error) {
	var raw int64
	for _, e := range index {
		raw += e.Length
	}
	w := windowLimit(raw)
	dec, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(w), zstd.WithDecoderMaxWindow(w))
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	defer dec.Close()
	pr := &payloadReader{dec: dec, raw: raw, window: w, scratch: make([]byte, min(raw, 64<<10))}
	out := make([]*NamedTensor, 0, len(index))
	for _, e := range index {
		t := &NamedTensor{Name: e.Name, Shape: e.Shape}
		n := int(e.Length / 4)
		if e.DType == I32 {
			t.I, err = readElems(pr, n, exact, func(u uint32) int32 { return int32(u) })
		} else {
			t.F, err = readElems(pr, n, exact, math.Float32frombits)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	var extra [1]byte
	switch _, err := io.ReadFull(dec, extra[:]); {
	case err == nil:
		return nil, errorf(ErrCorrupt, "corrupt: payload decompresses to more than the %d bytes the index declares", raw)
	case err != io.EOF:
		return nil, pr.corrupt(err)
	}
	return out, nil
}

// payloadReader reads the decompressed payload and counts what came out.
type payloadReader struct {
	dec     io.Reader
	raw     int64  // bytes the index declares
	window  uint64 // the decoder's window limit
	done    int64  // bytes read so far
	scratch []byte
}

// next reads the next k ≤ len(scratch) bytes of the payload.
func (p *payloadReader) next(k int) ([]byte, error) {
	n, err := io.ReadFull(p.dec, p.scratch[:k])
	p.done += int64(n)
	if err != nil {
		return nil, p.corrupt(err)
	}
	return p.scratch[:k], nil
}

func (p *payloadReader) corrupt(err error) error {
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return errorf(ErrCorrupt, "corrupt: payload decompresses to %d bytes, the index declares %d", p.done, p.raw)
	case errors.Is(err, zstd.ErrFrameSizeMismatch):
		// The decoder withholds the last block of such a frame, so p.done
		// would understate what the frame holds.
		return errorf(ErrCorrupt, "corrupt: payload ends before the %d bytes the index declares: its zstd frame holds less than its header states", p.raw)
	case errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded):
		return errorf(ErrCorrupt, "corrupt: payload needs a zstd window larger than the %d bytes that the index's %d bytes allow", p.window, p.raw)
	}
	return errorf(ErrCorrupt, "corrupt: payload: %v", err)
}

// growElems is how many elements a tensor whose size was not approved gets
// before it has to prove, by decompressing, that it holds more.
const growElems = 1 << 16

// readElems reads n little-endian 32-bit elements.
func readElems[T any](p *payloadReader, n int, exact bool, conv func(uint32) T) ([]T, error) {
	var out []T
	if exact {
		out = make([]T, 0, n)
	} else {
		out = make([]T, 0, min(n, growElems))
	}
	for len(out) < n {
		if len(out) == cap(out) {
			out = slices.Grow(out, min(n-len(out), len(out)))
		}
		k := min(n-len(out), cap(out)-len(out), len(p.scratch)/4)
		b, err := p.next(4 * k)
		if err != nil {
			return nil, err
		}
		for i := range k {
			out = append(out, conv(binary.LittleEndian.Uint32(b[4*i:])))
		}
	}
	return out, nil
}

// CheckpointFile is a checkpoint file opened for reading: its header has
// been read and checked, its tensors not yet.
type CheckpointFile struct {
	path       string
	f          *os.File
	r          io.ReaderAt
	prefix     [prefixSize]byte
	headerJSON []byte
	stored     uint32 // the file's CRC-32C
	header     *Header
	index      []TensorInfo // the checked index, which the caller cannot change
}

// Open opens the checkpoint file at path and reads what it declares about
// itself, cheaply: it streams the file once through the checksum in a small
// buffer, holds only the JSON header (at most 4 MiB) and decompresses
// nothing. Errors name the file and wrap one of the sentinel errors (or
// the error of opening or reading the file). The caller inspects Header,
// then calls Read, and Close in any case.
func Open(path string) (*CheckpointFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("load checkpoint %s: %w", path, err)
	}
	cf, err := openAt(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("load checkpoint %s: %w", path, err)
	}
	cf.path, cf.f = path, f
	return cf, nil
}

// scanChunk is the buffer through which Open streams the payload into the
// checksum.
const scanChunk = 256 << 10

// openAt reads the header of the size bytes of r (see Open).
func openAt(r io.ReaderAt, size int64) (*CheckpointFile, error) {
	cf := &CheckpointFile{r: r}
	n, err := r.ReadAt(cf.prefix[:min(size, prefixSize)], 0)
	if err != nil && err != io.EOF {
		return nil, err
	}
	hl, pl, err := parsePrefix(cf.prefix[:n])
	if err != nil {
		return nil, err
	}
	total := prefixSize + hl + pl + checksumSize
	if size < total {
		return nil, truncated(size-prefixSize, hl, pl)
	}
	if size > total {
		return nil, errorf(ErrCorrupt, "corrupt: %d bytes after the checksum", size-total)
	}
	cf.headerJSON = make([]byte, hl)
	if _, err := r.ReadAt(cf.headerJSON, prefixSize); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	sum := crc32.New(castagnoli)
	sum.Write(cf.prefix[:])
	sum.Write(cf.headerJSON)
	buf := make([]byte, min(pl, scanChunk)+checksumSize)
	var head []byte
	for off := int64(0); off < pl; {
		k := int(min(pl-off, scanChunk))
		if _, err := r.ReadAt(buf[:k], prefixSize+hl+off); err != nil {
			return nil, fmt.Errorf("payload: %w", err)
		}
		if off == 0 {
			head = slices.Clone(buf[:min(k, zstd.HeaderMaxSize)])
		}
		sum.Write(buf[:k])
		off += int64(k)
	}
	if _, err := r.ReadAt(buf[:checksumSize], total-checksumSize); err != nil {
		return nil, fmt.Errorf("checksum: %w", err)
	}
	cf.stored = binary.LittleEndian.Uint32(buf)
	if got := sum.Sum32(); got != cf.stored {
		return nil, errorf(ErrChecksum, "checksum mismatch: stored CRC-32C %#08x, content has %#08x", cf.stored, got)
	}
	h, err := parseHeader(cf.headerJSON, pl, head)
	if err != nil {
		return nil, err
	}
	cf.header, cf.index = h, h.clone().Tensors
	return cf, nil
}

// Header is what the file declares: kind, JSON documents and index.
func (f *CheckpointFile) Header() *Header { return f.header }

// Read decompresses the tensors. It allocates each at the size the index
// declares, so the caller should have checked Header first (Header.Match
// does it for a known list of tensors). The payload is checksummed again
// as it is read, so a file changed since Open is reported, not loaded.
func (f *CheckpointFile) Read() (*Checkpoint, error) {
	c, err := f.read(true)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint %s: %w", f.path, err)
	}
	return c, nil
}

func (f *CheckpointFile) read(exact bool) (*Checkpoint, error) {
	sum := crc32.New(castagnoli)
	sum.Write(f.prefix[:])
	sum.Write(f.headerJSON)
	hl := int64(len(f.headerJSON))
	payload := io.TeeReader(io.NewSectionReader(f.r, prefixSize+hl, f.header.PayloadBytes), sum)
	tensors, err := readPayload(f.index, bufio.NewReaderSize(payload, int(min(f.header.PayloadBytes, scanChunk))), exact)
	// A payload that fails to decode may be one that changed under us:
	// finish the checksum to say which.
	if _, cerr := io.Copy(io.Discard, payload); cerr != nil && err == nil {
		err = cerr
	}
	if got := sum.Sum32(); got != f.stored {
		return nil, errorf(ErrChecksum, "checksum mismatch: the file changed since it was opened (stored CRC-32C %#08x, content now has %#08x)", f.stored, got)
	}
	if err != nil {
		return nil, err
	}
	h := f.header
	return &Checkpoint{Kind: h.Kind, Config: h.Config, State: h.State, Tensors: tensors}, nil
}

// Close closes the file.
func (f *CheckpointFile) Close() error {
	if f.f == nil {
		return nil
	}
	return f.f.Close()
}

// Load reads the checkpoint file at path. Errors name the file and wrap one
// of the sentinel errors (or the error of opening or reading the file).
// Load accepts any consistent index, and its memory grows only with what
// the payload really decompresses to; a reader that knows which tensors it
// needs should say so with LoadExpect, so that a file declaring others is
// refused before anything is decompressed.
func Load(path string) (*Checkpoint, error) {
	return loadFile(path, nil)
}

// LoadExpect is Load with an expectation: expect sees the header (kind,
// JSON documents, index) once the checksum has matched and before anything
// is decompressed, and may refuse it. Its error is returned with the file's
// name and wraps ErrMismatch. What it approves is decompressed into tensors
// allocated at their declared sizes. expect must not be nil.
func LoadExpect(path string, expect func(*Header) error) (*Checkpoint, error) {
	if expect == nil {
		return nil, fmt.Errorf("load checkpoint %s: LoadExpect needs an expectation", path)
	}
	return loadFile(path, expect)
}

func loadFile(path string, expect func(*Header) error) (*Checkpoint, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := expectOK(f.header.clone(), expect); err != nil {
		return nil, fmt.Errorf("load checkpoint %s: %w", path, err)
	}
	c, err := f.read(expect != nil)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint %s: %w", path, err)
	}
	return c, nil
}

// tempFile is what Save needs of its temporary file.
type tempFile interface {
	io.Writer
	Name() string
	Chmod(fs.FileMode) error
	Sync() error
	Close() error
}

// createTemp makes Save's temporary file. Tests replace it to make the
// folder unwritable or the disk full at a chosen point.
var createTemp = func(dir, pattern string) (tempFile, error) { return os.CreateTemp(dir, pattern) }

// Save writes c to path atomically: it encodes into a temporary file in the
// same directory, syncs it, renames it over path and syncs the directory. On
// any failure (an unwritable folder, a full disk, a failing sync) it removes
// the temporary file and leaves whatever was at path untouched; on success
// no temporary file remains. The file gets mode 0644. Errors name path and
// the operation that failed with its cause. An error that says "written"
// comes after the rename: the new file is in place, but syncing its
// directory failed, so it may not survive a crash.
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
	f, err := createTemp(dir, "."+base+".tmp-*")
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

	bw := bufio.NewWriterSize(f, 1<<20)
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
