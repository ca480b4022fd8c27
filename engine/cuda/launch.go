package cuda

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/kernels"
)

// kernel is a loaded entry point and the signature its PTX declares.
type kernel struct {
	name       string
	fn         uintptr
	params     []kernels.ParamType
	maxThreads int
	smemSet    int // the kernel's dynamic shared-memory limit, once raised (driver thread)
}

// argKind is what a launcher passes for one kernel parameter.
type argKind uint8

const (
	argPtr argKind = iota + 1 // device pointer, 8 bytes
	argI32                    // int, 4 bytes
	argF32                    // float, 4 bytes
	argI64                    // long long, 8 bytes
)

func (k argKind) String() string {
	return [...]string{"?", "pointer", "int32", "float32", "int64"}[min(int(k), 4)]
}

// karg is one kernel argument, kept by value until the driver thread packs it.
type karg struct {
	kind argKind
	v    uint64
}

func ptrArg(p uintptr) karg           { return karg{argPtr, uint64(p)} }
func tensorArg(t *engine.Tensor) karg { return ptrArg(t.Ptr) }
func i32Arg(v int) karg               { return karg{argI32, uint64(uint32(int32(v)))} }
func f32Arg(v float32) karg           { return karg{argF32, uint64(math.Float32bits(v))} }
func i64Arg(v int64) karg             { return karg{argI64, uint64(v)} }
func boolArg(v bool) karg {
	if v {
		return i32Arg(1)
	}
	return i32Arg(0)
}
func offsetArg(t *engine.Tensor, off int) karg { return ptrArg(t.Ptr + uintptr(off)*4) }

const (
	maxKernelArgs = 32
	// argBufBytes is the pinned argument block: maxKernelArgs pointers, then
	// the values.
	argBufBytes = 4096
	// defaultSmem is the dynamic shared memory a kernel gets without raising
	// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES.
	defaultSmem = 48 << 10
)

// packArgs lays the arguments out in buf, the pinned block, the way
// cuLaunchKernel reads them: buf starts with an array of pointers (void**),
// entry i pointing to argument i's value, and each value is stored at its
// natural size and alignment (4 bytes for int and float, 8 for pointers), as
// the kernel's PTX declares its parameters. The driver copies the values
// during cuLaunchKernel (also when it records a graph node), so buf can be
// reused by the next launch at once. buf is C memory from cuMemAllocHost:
// the garbage collector neither moves nor scans it, and the driver may read
// it with no cgo pointer rules involved. Only the driver thread touches it.
func packArgs(buf unsafe.Pointer, k *kernel, args []karg) (unsafe.Pointer, error) {
	if len(args) != len(k.params) {
		return nil, fmt.Errorf("kernel %s takes %d parameters, the launcher passed %d", k.name, len(k.params), len(args))
	}
	if len(args) > maxKernelArgs {
		return nil, fmt.Errorf("kernel %s: %d parameters, at most %d supported", k.name, len(args), maxKernelArgs)
	}
	off := maxKernelArgs * 8
	for i, a := range args {
		want := k.params[i]
		ok := false
		switch a.kind {
		case argPtr, argI64:
			ok = want == kernels.U64
		case argI32:
			ok = want == kernels.U32
		case argF32:
			ok = want == kernels.F32
		}
		if !ok {
			return nil, fmt.Errorf("kernel %s: argument %d is a %v, the PTX declares %v", k.name, i, a.kind, want)
		}
		size := want.Size()
		off = (off + size - 1) &^ (size - 1)
		if off+size > argBufBytes {
			return nil, fmt.Errorf("kernel %s: arguments exceed %d bytes", k.name, argBufBytes)
		}
		slot := unsafe.Add(buf, off)
		if size == 4 {
			*(*uint32)(slot) = uint32(a.v)
		} else {
			*(*uint64)(slot) = a.v
		}
		*(*uintptr)(unsafe.Add(buf, i*8)) = uintptr(slot)
		off += size
	}
	return buf, nil
}

// launch queues kernel name on the stream. A kernel missing from the PTX, a
// shape it cannot take or an argument of the wrong type is recorded as the
// pending error instead.
func (b *Backend) launch(name string, grid, block dim3, smem int, args ...karg) {
	if !b.usable(name) || b.pending() {
		return
	}
	k := b.kernels[name]
	if k == nil {
		b.fail(fmt.Errorf("cuda: launch %s: no such kernel in the embedded PTX", name))
		return
	}
	if grid.x == 0 || grid.y == 0 || grid.z == 0 {
		return // no work
	}
	threads := block.x * block.y * block.z
	switch {
	case grid.x < 0 || grid.y < 0 || grid.z < 0 || grid.x > math.MaxInt32 || grid.y > 65535 || grid.z > 65535:
		b.fail(fmt.Errorf("cuda: launch %s: grid %v out of range", name, grid))
		return
	case threads <= 0 || threads > 1024 || (k.maxThreads > 0 && threads > k.maxThreads):
		b.fail(fmt.Errorf("cuda: launch %s: block %v exceeds the kernel's %d threads", name, block, k.maxThreads))
		return
	case smem < 0 || smem > b.smemOptin:
		b.fail(fmt.Errorf("cuda: launch %s: %d bytes of shared memory, the device allows %d", name, smem, b.smemOptin))
		return
	}
	b.post(func() error {
		if smem > defaultSmem && smem > k.smemSet {
			if err := b.drv.funcSetAttribute(k.fn, funcAttrMaxDynamicShared, smem); err != nil {
				return fmt.Errorf("kernel %s: %w", name, err)
			}
			k.smemSet = smem
		}
		params, err := packArgs(b.argBuf, k, args)
		if err != nil {
			return fmt.Errorf("cuda: launch %w", err)
		}
		return b.drv.launchKernel(k.name, k.fn, grid, block, smem, b.stream, params)
	})
}

// argCheck collects the first problem with an op's arguments: a broken
// precondition (require), which is the caller's bug, or a shape beyond what
// this backend's kernels take (unsupported), which is an error.
type argCheck struct {
	op          string
	err         error
	unsupported bool // err is an *Unsupported
}

func (b *Backend) begin(op string) *argCheck { return &argCheck{op: op} }

// require records a broken precondition unless a problem is recorded.
func (c *argCheck) require(cond bool, format string, args ...any) {
	if !cond && c.err == nil {
		c.err = fmt.Errorf("cuda: %s: %s", c.op, fmt.Sprintf(format, args...))
	}
}

// supports records an Unsupported error unless a problem is recorded.
func (c *argCheck) supports(cond bool, format string, args ...any) {
	if !cond && c.err == nil {
		c.err = &Unsupported{Op: c.op, What: fmt.Sprintf(format, args...)}
		c.unsupported = true
	}
}

// tensor checks that t is a device tensor of type dt with at least n elements.
func (c *argCheck) tensor(name string, t *engine.Tensor, dt engine.DType, n int64) {
	switch {
	case c.err != nil:
	case t == nil:
		c.require(false, "%s is nil", name)
	case t.DType != dt:
		c.require(false, "%s is %v, want %v", name, t.DType, dt)
	case t.F != nil || t.I != nil || t.BF != nil:
		c.require(false, "%s is a host tensor; the cuda backend computes on its own device tensors", name)
	case n < 0:
		c.require(false, "%s: negative size %d", name, n)
	case int64(t.Len()) < n:
		c.require(false, "%s has %d elements, the op needs %d", name, t.Len(), n)
	case n > 0 && t.Ptr == 0:
		c.require(false, "%s has no device memory (freed, or its allocation failed)", name)
	}
}

func (c *argCheck) f32(name string, t *engine.Tensor, n int64)  { c.tensor(name, t, engine.F32, n) }
func (c *argCheck) i32(name string, t *engine.Tensor, n int64)  { c.tensor(name, t, engine.I32, n) }
func (c *argCheck) bf16(name string, t *engine.Tensor, n int64) { c.tensor(name, t, engine.BF16, n) }

// nonneg checks sizes and that their product fits an int32 (kernels index
// with int).
func (c *argCheck) nonneg(names string, vals ...int) int64 {
	p := int64(1)
	for _, v := range vals {
		c.require(v >= 0, "%s: negative size in %v", names, vals)
		if v < 0 {
			return 0
		}
		p *= int64(v)
		c.supports(p <= math.MaxInt32, "%s = %v: more than 2³¹−1 elements", names, vals)
		if p > math.MaxInt32 {
			return 0
		}
	}
	return p
}

// ok reports whether the op may queue its work. A broken precondition
// panics (engine.Backend's contract: it is a bug in the caller, and the
// stack shows where); an unsupported shape becomes the pending error. While
// an error is pending nothing is checked or queued: the work is dropped, so
// a tensor whose allocation failed does not turn an out-of-memory error
// into a panic.
func (b *Backend) ok(c *argCheck) bool {
	if b.pending() {
		return false
	}
	if c.err == nil {
		return true
	}
	if c.unsupported {
		b.fail(c.err)
		return false
	}
	panic(c.err.Error())
}

func tlen(t *engine.Tensor) int {
	if t == nil {
		return 0
	}
	return t.Len()
}

func cdiv(a, b int) int { return (a + b - 1) / b }

// elementwise is the grid for a grid-stride kernel over n elements.
func elementwise(n int) (dim3, dim3) {
	return dim3{min(cdiv(n, 256), 8192), 1, 1}, dim3{256, 1, 1}
}

// rowBlock is the block for one-row-per-block kernels that stride over dim
// columns: a multiple of 32 up to 256.
func rowBlock(dim int) dim3 { return dim3{min(256, max(32, cdiv(dim, 32)*32)), 1, 1} }

// Scratch buffers: device memory the ops use between their kernels. Each
// slot grows when an op needs more and never shrinks; an outgrown block is
// kept until Close, because a captured Graph may still use it.
type scratchSlot int

const (
	scratchPartial   scratchSlot = iota // rmsnorm dw partials, sum-of-squares partials
	scratchResult                       // sum of squares result
	scratchSortKeys                     // sanitized sort keys
	scratchSortA                        // sort order, ping
	scratchSortB                        // sort order, pong
	scratchSortCount                    // sort digit counts
	scratchDelta                        // attention backward delta
	scratchSample                       // sampler keys
	numScratch
)

type scratchBuf struct {
	ptr   uintptr
	bytes uint64
}

// scratchPtr returns slot's buffer with at least bytes bytes.
func (b *Backend) scratchPtr(slot scratchSlot, bytes uint64) (uintptr, bool) {
	s := &b.scratch[slot]
	if s.bytes >= bytes && s.ptr != 0 {
		return s.ptr, true
	}
	if b.capturing {
		b.fail(captureRule(fmt.Sprintf("cuda: an op needs %d bytes of scratch memory during Capture; run the sequence once before capturing it", bytes)))
		return 0, false
	}
	p, err := b.alloc.alloc(bytes)
	if err != nil {
		b.fail(fmt.Errorf("cuda: scratch memory: %w", err))
		return 0, false
	}
	if s.ptr != 0 {
		b.retired = append(b.retired, s.ptr)
	}
	*s = scratchBuf{ptr: p, bytes: blockSize(bytes)}
	return p, true
}

// named is a tensor argument and its name, for checks that list several.
type named struct {
	name string
	t    *engine.Tensor
}

// f32s checks that each tensor is a float32 tensor of at least n elements.
func (c *argCheck) f32s(n int64, ts ...named) {
	for _, t := range ts {
		c.f32(t.name, t.t, n)
	}
}

// region is the first n elements of a tensor argument.
type region struct {
	named
	n int64
}

// apart requires that a and b share no device memory: an output over
// another argument of an op that forbids it.
func (c *argCheck) apart(a, b region) {
	if c.err != nil || a.n == 0 || b.n == 0 {
		return
	}
	alo, blo := a.t.Ptr, b.t.Ptr
	ahi, bhi := alo+uintptr(a.n)*4, blo+uintptr(b.n)*4
	c.require(alo >= bhi || blo >= ahi, "%s overlaps %s", a.name, b.name)
}
