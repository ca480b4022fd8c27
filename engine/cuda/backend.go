package cuda

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/kernels"
)

var (
	_ engine.Backend           = (*Backend)(nil)
	_ engine.Capturer          = (*Backend)(nil)
	_ engine.GEMMInput         = (*Backend)(nil)
	_ engine.ActivationStorage = (*Backend)(nil)
)

// Backend runs engine.Backend's ops on one NVIDIA GPU. Tensors it makes
// keep their elements in device memory at Tensor.Ptr (F and I are nil).
//
// A Backend is meant to be driven by one goroutine at a time, like the CPU
// backend. Ops are queued on one CUDA stream and run in call order; they
// return before the GPU has run them. Errors follow engine.Backend's
// contract: a call that breaks an op's preconditions (a wrong shape, a host
// or freed tensor, an argument outside its range) panics at the call, as on
// the CPU; an index out of range that a kernel finds, a failed driver or
// cuBLAS call, and a shape beyond this backend's kernels (see Unsupported)
// are kept as the pending error. While one is pending the device work queued
// after it is dropped (Download fills its destination with zeros), and the
// next Sync returns it.
type Backend struct {
	drv     driver
	bl      blas // nil: the fallback GEMM kernel
	blasWhy string
	blasH   uintptr
	blasVer int
	w       *worker

	ordinal   int
	dev       int32
	ctxHeld   bool
	stream    uintptr
	devName   string
	totalMem  uint64
	driverVer int
	cc        [2]int
	sms       int
	smemOptin int

	modules   []uintptr
	kernels   map[string]*kernel
	argBuf    unsafe.Pointer // pinned kernel-argument block, used on the driver thread only
	status    uintptr        // device status word that kernels report bad indices in
	workspace uintptr        // cuBLAS workspace

	alloc   *allocator
	scratch [numScratch]scratchBuf
	retired []uintptr // outgrown scratch blocks, kept until Close (a Graph may use them)

	mu        sync.Mutex
	err       error       // first error since the last Sync
	hasErr    atomic.Bool // err != nil
	capturing bool
	precision GEMMPrecision
	tf32Env   string       // MOERL_TF32 as New read it ("" where unset)
	bf16Env   string       // MOERL_BF16 likewise
	noGraphs  bool         // MOERL_CUDA_GRAPHS=0: CaptureGraph refuses
	waited    atomic.Int64 // nanoseconds the host spent in stream synchronizations
	closed    bool
}

// Available reports whether CUDA can be used here: nil, or an error wrapping
// ErrUnavailable that names what is missing ("CUDA unavailable:
// libcuda.so.1 not found (...)", "... no CUDA device", ...). It loads the
// driver library once and never panics.
func Available() error {
	_, err := probe()
	return err
}

var probe = sync.OnceValues(func() (*libcuda, error) {
	l, err := openLibcuda()
	if err != nil {
		return nil, err
	}
	if err := l.init(); err != nil {
		var cerr *Error
		if errors.As(err, &cerr) && cerr.Code == cudaErrorNoDevice {
			return nil, fmt.Errorf("%w: no CUDA device (%v)", ErrUnavailable, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	n, err := l.deviceCount()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: no CUDA device", ErrUnavailable)
	}
	return l, nil
})

// New opens the GPU named by MOERL_CUDA_DEVICE (an ordinal, default 0), loads
// every kernel module, and opens cuBLAS as MOERL_CUBLAS says (see
// openCublas): without it, GEMMs use a kernel of our own. It returns an
// error wrapping ErrUnavailable where CUDA cannot be used.
func New() (*Backend, error) {
	l, err := probe()
	if err != nil {
		return nil, err
	}
	ordinal := 0
	if s := strings.TrimSpace(os.Getenv("MOERL_CUDA_DEVICE")); s != "" {
		ordinal, err = strconv.Atoi(s)
		if err != nil || ordinal < 0 {
			return nil, fmt.Errorf("MOERL_CUDA_DEVICE=%q: want a device ordinal", s)
		}
	}
	bl, why, err := openCublas()
	if err != nil {
		return nil, err
	}
	return newBackend(l, bl, why, ordinal)
}

// newBackend starts a backend over a driver (the real one or a test fake).
func newBackend(drv driver, bl blas, blasWhy string, ordinal int) (*Backend, error) {
	tf32, err := tf32Setting()
	if err != nil {
		return nil, err
	}
	bf16, err := onOff("MOERL_BF16", "GEMM products in bfloat16", "TF32 or float32 as MOERL_TF32 says")
	if err != nil {
		return nil, err
	}
	if bf16 == "1" && tf32 == "1" {
		return nil, fmt.Errorf("MOERL_BF16=1 and MOERL_TF32=1 ask for two GEMM precisions: set one")
	}
	graphs, err := onOff("MOERL_CUDA_GRAPHS", "CUDA graphs for repeated steps", "every op launched by the host")
	if err != nil {
		return nil, err
	}
	b := &Backend{drv: drv, bl: bl, blasWhy: blasWhy, ordinal: ordinal, kernels: map[string]*kernel{}, w: startWorker(),
		tf32Env: tf32, bf16Env: bf16, noGraphs: graphs == "0"}
	b.alloc = newAllocator(
		func(n uint64) (uintptr, error) {
			var p uintptr
			err := b.w.do(func() (err error) { p, err = b.drv.memAlloc(n); return })
			return p, err
		},
		func(p uintptr) error {
			return b.w.do(func() error {
				// cuMemFree waits for the device, but make the order explicit:
				// every queued use of the block runs before it goes back.
				if err := b.drv.streamSynchronize(b.stream); err != nil {
					return err
				}
				return b.drv.memFree(p)
			})
		})
	if err := b.w.do(b.start); err != nil {
		b.Close()
		return nil, fmt.Errorf("cuda: start device %d: %w", ordinal, err)
	}
	if b.bl != nil {
		ws, err := b.alloc.alloc(blasWorkspaceBytes)
		if err == nil {
			b.workspace = ws
			err = b.w.do(func() error { return b.bl.setWorkspace(b.blasH, ws, blasWorkspaceBytes) })
		}
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("cuda: cuBLAS workspace: %w", err)
		}
	}
	return b, nil
}

// start runs on the driver thread: device, primary context, stream, pinned
// argument block, status word, modules and cuBLAS.
func (b *Backend) start() error {
	d := b.drv
	if err := d.init(); err != nil {
		return err
	}
	n, err := d.deviceCount()
	if err != nil {
		return err
	}
	if b.ordinal >= n {
		return fmt.Errorf("%w: device %d requested, %d present", ErrUnavailable, b.ordinal, n)
	}
	if b.dev, err = d.device(b.ordinal); err != nil {
		return err
	}
	if b.devName, err = d.deviceName(b.dev); err != nil {
		return err
	}
	if b.totalMem, err = d.deviceTotalMem(b.dev); err != nil {
		return err
	}
	for _, a := range []struct {
		dst  *int
		attr int
	}{{&b.cc[0], attrComputeMajor}, {&b.cc[1], attrComputeMinor}, {&b.sms, attrMultiprocessorCount},
		{&b.smemOptin, attrMaxSharedPerBlockOptin}} {
		if *a.dst, err = d.deviceAttribute(a.attr, b.dev); err != nil {
			return err
		}
	}
	if b.driverVer, err = d.driverVersion(); err != nil {
		return err
	}
	// The primary context is the one the CUDA runtime inside cuBLAS uses too.
	ctx, err := d.primaryCtxRetain(b.dev)
	if err != nil {
		return err
	}
	b.ctxHeld = true
	if err := d.ctxSetCurrent(ctx); err != nil {
		return err
	}
	if b.stream, err = d.streamCreate(streamNonBlocking); err != nil {
		return err
	}
	if b.argBuf, err = d.memAllocHost(argBufBytes); err != nil {
		return err
	}
	if b.status, err = d.memAlloc(256); err != nil {
		return err
	}
	if err := d.memsetD32Async(b.status, 0, 1, b.stream); err != nil {
		return err
	}
	if err := b.loadModules(); err != nil {
		return err
	}
	if b.bl != nil {
		if b.blasH, err = b.bl.create(); err != nil {
			return err
		}
		if err := b.bl.setStream(b.blasH, b.stream); err != nil {
			return err
		}
		// TF32 by default where the tensor cores have it (compute
		// capability 8.0, Ampere, and later), as PyTorch's peer runs its
		// "fp32" (allow_tf32); MOERL_TF32 and MOERL_BF16 override.
		p := GEMMFP32
		if b.cc[0] >= 8 && b.tf32Env != "0" || b.tf32Env == "1" {
			p = GEMMTF32
		}
		if b.bf16Env == "1" {
			p = GEMMBF16
		}
		if err := b.bl.setMathMode(b.blasH, p.mathMode()); err != nil {
			return err
		}
		b.precision = p
		if b.blasVer, err = b.bl.version(b.blasH); err != nil {
			return err
		}
	} else {
		// The fallback is the reference, strict float32, unless asked.
		switch {
		case b.bf16Env == "1":
			b.precision = GEMMBF16
		case b.tf32Env == "1":
			b.precision = GEMMTF32
		}
	}
	return nil
}

// loadModules loads every embedded PTX module (the driver JIT-compiles it for
// this GPU) and records each kernel's handle and PTX signature.
func (b *Backend) loadModules() error {
	for _, m := range kernels.Modules {
		ptx, err := kernels.PTX(m.Name)
		if err != nil {
			return err
		}
		entries, err := kernels.Entries(ptx)
		if err != nil {
			return fmt.Errorf("module %s: %w", m.Name, err)
		}
		mod, err := b.drv.moduleLoadData(append(ptx[:len(ptx):len(ptx)], 0))
		if err != nil {
			return fmt.Errorf("module %s: %w", m.Name, err)
		}
		b.modules = append(b.modules, mod)
		for _, e := range entries {
			fn, err := b.drv.moduleGetFunction(mod, e.Name)
			if err != nil {
				return fmt.Errorf("module %s: %w", m.Name, err)
			}
			k := &kernel{name: e.Name, fn: fn, params: e.Params, maxThreads: e.MaxThreads}
			// Kernels with large fixed shared memory get their limit raised now,
			// outside any graph capture.
			if need := fixedSmem(e.Name); need > defaultSmem {
				if need > b.smemOptin {
					return fmt.Errorf("kernel %s needs %d bytes of shared memory, the device allows %d", e.Name, need, b.smemOptin)
				}
				if err := b.drv.funcSetAttribute(fn, funcAttrMaxDynamicShared, need); err != nil {
					return fmt.Errorf("kernel %s: %w", e.Name, err)
				}
				k.smemSet = need
			}
			b.kernels[e.Name] = k
		}
	}
	return nil
}

// Close waits for queued work, frees every device and pinned block, unloads
// the modules, releases the primary context and stops the driver thread. The
// Backend and its tensors must not be used after.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	var errs []error
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if b.stream != 0 {
		keep(b.w.do(func() error { return b.drv.streamSynchronize(b.stream) }))
	}
	for _, p := range b.retired {
		keep(b.alloc.release(p))
	}
	b.retired = nil
	for i := range b.scratch {
		if b.scratch[i].ptr != 0 {
			keep(b.alloc.release(b.scratch[i].ptr))
			b.scratch[i] = scratchBuf{}
		}
	}
	keep(b.alloc.freeAll())
	keep(b.w.do(func() error {
		var errs []error
		if b.bl != nil && b.blasH != 0 {
			errs = append(errs, b.bl.destroy(b.blasH))
		}
		for _, m := range b.modules {
			errs = append(errs, b.drv.moduleUnload(m))
		}
		if b.status != 0 {
			errs = append(errs, b.drv.memFree(b.status))
		}
		if b.argBuf != nil {
			errs = append(errs, b.drv.memFreeHost(b.argBuf))
		}
		if b.stream != 0 {
			errs = append(errs, b.drv.streamDestroy(b.stream))
		}
		if b.ctxHeld {
			errs = append(errs, b.drv.primaryCtxRelease(b.dev))
		}
		return errors.Join(errs...)
	}))
	b.w.stop()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cuda: close: %w", err)
	}
	return nil
}

// Name is "cuda".
func (b *Backend) Name() string { return "cuda" }

// Device describes the GPU, its memory, the driver and the GEMM library.
func (b *Backend) Device() string {
	mode := b.GEMMPrecision().String()
	gemm := "fallback GEMM kernel (" + b.blasWhy + ", " + mode + ")"
	if b.bl != nil {
		gemm = fmt.Sprintf("cuBLAS %d.%d.%d (%s, %s)", b.blasVer/10000, b.blasVer/100%100, b.blasVer%100, b.bl.library(), mode)
	}
	graphs := "CUDA graphs"
	if b.noGraphs {
		graphs = "no CUDA graphs (MOERL_CUDA_GRAPHS=0)"
	}
	return fmt.Sprintf("%s (sm_%d%d, %d SMs, %.1f GiB), CUDA driver %d.%d, %s, %s", b.devName, b.cc[0], b.cc[1], b.sms,
		float64(b.totalMem)/(1<<30), b.driverVer/1000, b.driverVer%1000/10, gemm, graphs)
}

// tf32Setting reads MOERL_TF32: "" (unset: TF32 on GPUs of compute
// capability 8.0 and later), "1" or "0", normalised from the usual spellings.
func tf32Setting() (string, error) {
	return onOff("MOERL_TF32", "TF32 GEMMs", "full float32")
}

// onOff reads a switch from the environment: "1", "0", or "" where unset.
func onOff(name, on, off string) (string, error) {
	env := strings.TrimSpace(os.Getenv(name))
	switch strings.ToLower(env) {
	case "":
		return "", nil
	case "1", "on", "true", "yes":
		return "1", nil
	case "0", "off", "false", "no":
		return "0", nil
	}
	return "", fmt.Errorf("%s=%q: want 1 (%s) or 0 (%s)", name, env, on, off)
}

// GEMMPrecision is what the backend's GEMMs multiply in: their inputs
// and outputs stay float32 in memory, each input is rounded to the
// precision as it is read, and the products are summed in float32.
type GEMMPrecision uint8

const (
	// GEMMFP32 is full float32, matching the CPU to float32 rounding (the
	// op tests bound ‖gpu−cpu‖/‖cpu‖ of a GEMM by 1e-5).
	GEMMFP32 GEMMPrecision = iota
	// GEMMTF32 runs the products on the tensor cores in TF32 (10 mantissa
	// bits, round to nearest): several times faster, about 1e-3 relative
	// error per product (bound 2e-3). New's default where the GPU has it
	// (compute capability 8.0 and later) and cuBLAS is there, as PyTorch's
	// allow_tf32 for its "fp32".
	GEMMTF32
	// GEMMBF16 runs them in bfloat16 (7 stored mantissa bits, round to
	// nearest even): the tensor cores' rate is twice TF32's, the error
	// about 3e-3 per GEMM (bound 1e-2), what PyTorch's bf16 autocast does
	// to a matmul. MOERL_BF16=1 chooses it.
	GEMMBF16
)

func (p GEMMPrecision) String() string {
	switch p {
	case GEMMTF32:
		return "TF32"
	case GEMMBF16:
		return "bf16"
	}
	return "fp32"
}

// mathMode and computeType are cuBLAS's names for the precision.
func (p GEMMPrecision) mathMode() int {
	if p == GEMMTF32 {
		return blasTF32TensorOpMath
	}
	return blasDefaultMath
}

func (p GEMMPrecision) computeType() int {
	switch p {
	case GEMMTF32:
		return blasComputeF32TF32
	case GEMMBF16:
		return blasComputeF32BF16
	}
	return blasComputeF32
}

// suffix is the kernel-name suffix of our own GEMM kernels' twin in the
// precision: "" (fp32), "_tf32" or "_bf16".
func (p GEMMPrecision) suffix() string {
	switch p {
	case GEMMTF32:
		return "_tf32"
	case GEMMBF16:
		return "_bf16"
	}
	return ""
}

// SetGEMMPrecision sets what every GEMM multiplies in, cuBLAS's and our
// own kernels' alike (the grouped expert GEMMs always, the fallback
// sgemm_tiled when cuBLAS is off); the twins of our kernels keep the
// batch invariance of the float32 ones in every precision. A graph holds
// the kernels of the precision it was recorded in, and a workspace made
// in bf16 mode holds bf16 tensors that only bf16 mode reads (moe.Acts):
// set the precision before a model makes its workspaces and records its
// steps, or make them again after. (A model's sampler remakes its own.)
func (b *Backend) SetGEMMPrecision(p GEMMPrecision) error {
	if !b.usable("SetGEMMPrecision") {
		return b.takeErr()
	}
	if p > GEMMBF16 {
		panic(fmt.Sprintf("cuda: SetGEMMPrecision(%d): not a precision", p))
	}
	if b.bl != nil {
		if err := b.w.do(func() error { return b.bl.setMathMode(b.blasH, p.mathMode()) }); err != nil {
			return fmt.Errorf("cuda: SetGEMMPrecision(%v): %w", p, err)
		}
	}
	b.mu.Lock()
	b.precision = p
	b.mu.Unlock()
	return nil
}

// GEMMPrecision reports what GEMMs multiply in.
func (b *Backend) GEMMPrecision() GEMMPrecision {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.precision
}

// GEMMInputDType is engine.BF16 in bf16 mode, where every GEMM rounds its
// inputs to bf16 (so weights kept in bf16 give the same products), and
// engine.F32 otherwise (TF32 is not a storage type).
func (b *Backend) GEMMInputDType() engine.DType {
	if b.GEMMPrecision() == GEMMBF16 {
		return engine.BF16
	}
	return engine.F32
}

// ActivationDType is engine.BF16 in bf16 mode: a model then keeps the
// experts' gate and up values in bf16 for its backward (see
// engine.ActivationStorage), as llm.c keeps every activation in its
// floatX; engine.F32 otherwise.
func (b *Backend) ActivationDType() engine.DType { return b.GEMMInputDType() }

// SetTF32 is SetGEMMPrecision(GEMMTF32) when on, GEMMFP32 when not.
func (b *Backend) SetTF32(on bool) error {
	if on {
		return b.SetGEMMPrecision(GEMMTF32)
	}
	return b.SetGEMMPrecision(GEMMFP32)
}

// TF32 reports whether GEMMs run in TF32.
func (b *Backend) TF32() bool { return b.GEMMPrecision() == GEMMTF32 }

// HasCublas reports whether GEMMs go through cuBLAS (else the fallback kernel).
func (b *Backend) HasCublas() bool { return b.bl != nil }

// wait synchronizes the stream, on the worker, adding the time it blocks
// to WaitTime.
func (b *Backend) wait() error {
	t0 := time.Now()
	err := b.drv.streamSynchronize(b.stream)
	b.waited.Add(int64(time.Since(t0)))
	return err
}

// WaitTime is the time the host has spent waiting for the GPU, in the
// stream synchronizations of every download and Sync, since New. Over a
// timed loop its share of the wall time tells a GPU-bound loop (near 1:
// the host is ahead and waits) from a host-bound one (near 0: the GPU
// waits for the host's launches and copies).
func (b *Backend) WaitTime() time.Duration { return time.Duration(b.waited.Load()) }

// MemStats returns the allocator's counters.
func (b *Backend) MemStats() MemStats { return b.alloc.stats() }

// ResetPeak starts MemStats's Peak afresh from the bytes in use now, so that
// a benchmark reads the peak of one workload.
func (b *Backend) ResetPeak() { b.alloc.resetPeak() }

// Trim returns the cached free blocks to the driver.
func (b *Backend) Trim() error {
	if err := b.alloc.trim(); err != nil {
		return fmt.Errorf("cuda: trim: %w", err)
	}
	return nil
}

// fail records err as the backend's pending error unless one is pending.
func (b *Backend) fail(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
		b.hasErr.Store(true)
	}
	b.mu.Unlock()
}

// takeErr returns and clears the pending error.
func (b *Backend) takeErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	err := b.err
	b.err = nil
	b.hasErr.Store(false)
	return err
}

// pending reports whether an error waits for Sync. Every op and every
// queued closure asks, so it reads an atomic rather than taking mu.
func (b *Backend) pending() bool { return b.hasErr.Load() }

// post queues f on the driver thread; its error becomes pending. Work that
// reaches the thread while an error is pending is dropped: after a failed
// launch its results are garbage, and after a sticky CUDA error (a launch
// failure, an illegal address) every call would fail anyway.
func (b *Backend) post(f func() error) {
	b.w.post(func() {
		if b.pending() {
			return
		}
		if err := f(); err != nil {
			b.fail(err)
		}
	})
}

// usable reports whether the backend can take work, recording why not.
func (b *Backend) usable(op string) bool {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		// The driver thread is gone: nothing can be queued.
		b.fail(fmt.Errorf("cuda: %s after Close", op))
		return false
	}
	return true
}

// hostWork reports whether an op that needs the host to wait (or to allocate)
// may run now: not during Capture, whose graph could not replay it.
func (b *Backend) hostWork(op string) bool {
	if !b.usable(op) {
		return false
	}
	if b.capturing {
		b.fail(captureRule(fmt.Sprintf("cuda: %s during Capture: a graph can only hold device work on preallocated tensors", op)))
		return false
	}
	return true
}

// New allocates a zeroed tensor of dtype d in device memory.
func (b *Backend) New(d engine.DType, shape ...int) *engine.Tensor {
	if d != engine.F32 && d != engine.I32 && d != engine.BF16 {
		panic(fmt.Sprintf("cuda: New%v: unknown %v", shape, d))
	}
	return b.newTensor("New", d, shape)
}

// NewF32 allocates a zeroed float32 tensor in device memory.
func (b *Backend) NewF32(shape ...int) *engine.Tensor {
	return b.newTensor("NewF32", engine.F32, shape)
}

// NewI32 allocates a zeroed int32 tensor in device memory.
func (b *Backend) NewI32(shape ...int) *engine.Tensor {
	return b.newTensor("NewI32", engine.I32, shape)
}

func (b *Backend) newTensor(op string, dt engine.DType, shape []int) *engine.Tensor {
	t := &engine.Tensor{Shape: append([]int(nil), shape...), DType: dt}
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			panic(fmt.Sprintf("cuda: %s%v: negative dimension", op, shape))
		}
		n *= int64(d)
		if n > math.MaxInt32 {
			b.fail(&Unsupported{Op: op, What: fmt.Sprintf("shape %v has more than 2³¹−1 elements", shape)})
			return t
		}
	}
	if n == 0 || !b.hostWork(op) {
		return t
	}
	p, err := b.alloc.alloc(uint64(n) * uint64(dt.Size()))
	if err != nil {
		b.fail(fmt.Errorf("cuda: %s%v: %w", op, shape, err))
		return t
	}
	t.Ptr = p
	b.memsetZero(p, dt, uint64(n))
	return t
}

// memsetZero queues the zeroing of n elements of dtype dt at p.
func (b *Backend) memsetZero(p uintptr, dt engine.DType, n uint64) {
	if dt.Size() == 2 {
		b.post(func() error { return b.drv.memsetD16Async(p, 0, n, b.stream) })
		return
	}
	b.post(func() error { return b.drv.memsetD32Async(p, 0, n, b.stream) })
}

// Free returns a tensor's memory to the allocator's cache and clears its
// Ptr, so a later use is reported instead of touching reused memory.
func (b *Backend) Free(t *engine.Tensor) {
	if t == nil || t.Ptr == 0 || !b.hostWork("Free") {
		return
	}
	if err := b.alloc.release(t.Ptr); err != nil {
		// A view, a tensor of another backend, or a copy of a freed one's
		// struct: a bug, like any other broken precondition.
		panic("cuda: Free: " + err.Error())
	}
	t.Ptr = 0
}

// Upload copies src into the F32 tensor dst (same length).
func (b *Backend) Upload(dst *engine.Tensor, src []float32) {
	c := b.begin("Upload")
	c.tensor("dst", dst, engine.F32, int64(len(src)))
	c.require(dst == nil || dst.Len() == len(src), "dst has %d elements, src %d", tlen(dst), len(src))
	if !b.ok(c) || len(src) == 0 || !b.hostWork("Upload") {
		return
	}
	b.upload(dst.Ptr, unsafe.Pointer(&src[0]), uint64(len(src))*4)
}

// UploadI32 copies src into the I32 tensor dst (same length).
func (b *Backend) UploadI32(dst *engine.Tensor, src []int32) {
	c := b.begin("UploadI32")
	c.tensor("dst", dst, engine.I32, int64(len(src)))
	c.require(dst == nil || dst.Len() == len(src), "dst has %d elements, src %d", tlen(dst), len(src))
	if !b.ok(c) || len(src) == 0 || !b.hostWork("UploadI32") {
		return
	}
	b.upload(dst.Ptr, unsafe.Pointer(&src[0]), uint64(len(src))*4)
}

// upload copies from Go memory. From pageable memory the driver stages the
// bytes before cuMemcpyHtoDAsync returns, so src may change as soon as this
// returns; the wait keeps src alive and pinned in place until then.
func (b *Backend) upload(dst uintptr, src unsafe.Pointer, bytes uint64) {
	err := b.w.do(func() error {
		if b.pending() {
			return nil
		}
		return b.drv.memcpyHtoDAsync(dst, src, bytes, b.stream)
	})
	if err != nil {
		b.fail(err)
	}
}

// Download copies the F32 tensor src into dst (same length), waiting for the
// queued work that writes it.
func (b *Backend) Download(dst []float32, src *engine.Tensor) {
	c := b.begin("Download")
	c.tensor("src", src, engine.F32, int64(len(dst)))
	c.require(src == nil || src.Len() == len(dst), "src has %d elements, dst %d", tlen(src), len(dst))
	if !b.ok(c) || len(dst) == 0 || !b.hostWork("Download") {
		clear(dst)
		return
	}
	b.download(unsafe.Pointer(&dst[0]), src.Ptr, uint64(len(dst))*4)
}

// DownloadI32 copies the I32 tensor src into dst (same length).
func (b *Backend) DownloadI32(dst []int32, src *engine.Tensor) {
	c := b.begin("DownloadI32")
	c.tensor("src", src, engine.I32, int64(len(dst)))
	c.require(src == nil || src.Len() == len(dst), "src has %d elements, dst %d", tlen(src), len(dst))
	if !b.ok(c) || len(dst) == 0 || !b.hostWork("DownloadI32") {
		clear(dst)
		return
	}
	b.download(unsafe.Pointer(&dst[0]), src.Ptr, uint64(len(dst))*4)
}

// download copies to Go memory and waits for it. While an error is pending
// (or when the copy fails) it writes zeros instead: the caller's loop then
// sees in-range token ids and finite numbers, not stale or garbage ones,
// until its next Sync reports the error.
func (b *Backend) download(dst unsafe.Pointer, src uintptr, bytes uint64) {
	err := b.w.do(func() error {
		if b.pending() {
			return errDropped
		}
		if err := b.drv.memcpyDtoHAsync(dst, src, bytes, b.stream); err != nil {
			return err
		}
		return b.wait()
	})
	if err != nil {
		clear(unsafe.Slice((*byte)(dst), bytes))
		if err != errDropped {
			b.fail(err)
		}
	}
}

// errDropped marks work dropped because an error is pending.
var errDropped = errors.New("cuda: dropped after an earlier error")

// Zero sets every element of t to 0.
func (b *Backend) Zero(t *engine.Tensor) {
	c := b.begin("Zero")
	if t == nil {
		c.require(false, "tensor is nil")
	} else {
		c.tensor("t", t, t.DType, int64(t.Len()))
	}
	if !b.ok(c) || t.Len() == 0 {
		return
	}
	b.memsetZero(t.Ptr, t.DType, uint64(t.Len()))
}

// Copy copies src into dst (same length and type).
func (b *Backend) Copy(dst, src *engine.Tensor) {
	c := b.begin("Copy")
	if dst == nil || src == nil {
		c.require(false, "nil tensor")
	} else {
		c.tensor("src", src, src.DType, int64(src.Len()))
		c.tensor("dst", dst, src.DType, int64(src.Len()))
		c.require(dst.Len() == src.Len(), "dst has %d elements, src %d", dst.Len(), src.Len())
	}
	if !b.ok(c) || src.Len() == 0 {
		return
	}
	d, s, n := dst.Ptr, src.Ptr, uint64(src.Len())*uint64(src.DType.Size())
	b.post(func() error { return b.drv.memcpyDtoDAsync(d, s, n, b.stream) })
}

// Sync waits for every queued op and returns the first error since the
// previous Sync: an invalid call, a failed driver call, or a bad index that
// a kernel found. It clears the error it returns.
func (b *Backend) Sync() error {
	if b.capturing {
		// Kept pending, so that Capture reports it too.
		err := captureRule("cuda: Sync during Capture: a graph cannot wait for the host")
		b.fail(err)
		return err
	}
	if !b.usable("Sync") {
		return b.takeErr()
	}
	var st int32
	err := b.w.do(func() error {
		// The worker runs this after everything queued before it. With an
		// error pending that work was dropped, and the error is what Sync
		// reports: the device need not be asked.
		if b.pending() {
			return nil
		}
		if err := b.wait(); err != nil {
			return err
		}
		if err := b.drv.memcpyDtoHAsync(unsafe.Pointer(&st), b.status, 4, b.stream); err != nil {
			return err
		}
		if err := b.wait(); err != nil {
			return err
		}
		if st != 0 {
			return b.drv.memsetD32Async(b.status, 0, 1, b.stream)
		}
		return nil
	})
	if err != nil {
		b.fail(err)
	}
	if st != 0 {
		b.fail(statusError(st))
	}
	return b.takeErr()
}

// Time runs fn (which queues ops) between two CUDA events and returns the
// GPU time between them, after waiting for it.
func (b *Backend) Time(fn func()) (time.Duration, error) {
	if b.capturing {
		err := captureRule("cuda: Time during Capture")
		b.fail(err)
		return 0, err
	}
	if !b.usable("Time") {
		return 0, b.takeErr()
	}
	var start, end uintptr
	err := b.w.do(func() (err error) {
		if start, err = b.drv.eventCreate(eventDefault); err != nil {
			return err
		}
		if end, err = b.drv.eventCreate(eventDefault); err != nil {
			return err
		}
		return b.drv.eventRecord(start, b.stream)
	})
	var ms float32
	if err == nil {
		fn()
		err = b.w.do(func() error {
			if err := b.drv.eventRecord(end, b.stream); err != nil {
				return err
			}
			if err := b.drv.eventSynchronize(end); err != nil {
				return err
			}
			var err error
			ms, err = b.drv.eventElapsedTime(start, end)
			return err
		})
	}
	b.w.do(func() error {
		if start != 0 {
			b.drv.eventDestroy(start)
		}
		if end != 0 {
			b.drv.eventDestroy(end)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("cuda: time: %w", err)
	}
	return time.Duration(float64(ms) * float64(time.Millisecond)), b.takeErr()
}

// Graph is a captured sequence of device work that Launch replays.
type Graph struct {
	b    *Backend
	exec uintptr
}

// Capture records the device work that fn queues into a CUDA graph instead
// of running it. fn may call ops on tensors that exist before Capture (and
// outlive the Graph), but nothing that allocates, frees, copies to or from
// the host or waits (NewF32, Free, Upload, Download, Sync, SumSquares):
// those are errors here. Scratch buffers the ops use are
// sized on their first direct run, so run the sequence once before
// capturing it. Capture returns the first error fn's ops caused; with an
// error already pending it records nothing and leaves the error for Sync.
func (b *Backend) Capture(fn func()) (*Graph, error) {
	if !b.hostWork("Capture") {
		return nil, b.takeErr()
	}
	if b.pending() {
		// Left pending, for the Sync that the caller's direct run leads to.
		return nil, errors.New("cuda: capture: an earlier error is pending (the next Sync returns it)")
	}
	if err := b.w.do(func() error { return b.drv.streamBeginCapture(b.stream, captureModeGlobal) }); err != nil {
		return nil, fmt.Errorf("cuda: capture: %w", err)
	}
	b.capturing = true
	func() {
		defer func() { b.capturing = false }()
		fn()
	}()
	var exec uintptr
	err := b.w.do(func() error {
		g, err := b.drv.streamEndCapture(b.stream)
		if err != nil {
			return err
		}
		defer b.drv.graphDestroy(g)
		exec, err = b.drv.graphInstantiate(g)
		return err
	})
	if perr := b.takeErr(); perr != nil {
		// A broken capture rule is this capture's failure; any other error
		// (a launch the driver refused) is the device's, kept for Sync.
		var rule captureRule
		if !errors.As(perr, &rule) {
			b.fail(perr)
		}
		err = errors.Join(perr, err)
	}
	if err != nil {
		if exec != 0 {
			b.w.do(func() error { return b.drv.graphExecDestroy(exec) })
		}
		return nil, fmt.Errorf("cuda: capture: %w", err)
	}
	return &Graph{b: b, exec: exec}, nil
}

// CaptureGraph is Capture as engine.Capturer has it; MOERL_CUDA_GRAPHS=0
// turns it off (every step then launches its ops one by one), so that the
// two can be timed against each other.
func (b *Backend) CaptureGraph(fn func()) (engine.Graph, error) {
	if b.noGraphs {
		return nil, errors.New("cuda: CUDA graphs are off (MOERL_CUDA_GRAPHS=0)")
	}
	g, err := b.Capture(fn)
	if err != nil {
		return nil, err
	}
	return g, nil
}

// captureRule is the error of an op that a graph cannot hold (host work
// during Capture): Capture's failure, not the device's.
type captureRule string

func (e captureRule) Error() string { return string(e) }

// Launch queues the captured work on the backend's stream; errors surface
// at the next Sync.
func (g *Graph) Launch() error {
	if g.exec == 0 {
		return errors.New("cuda: launch of a closed graph")
	}
	if !g.b.usable("Graph.Launch") {
		return g.b.takeErr()
	}
	exec := g.exec
	g.b.post(func() error { return g.b.drv.graphLaunch(exec, g.b.stream) })
	return nil
}

// Close frees the graph.
func (g *Graph) Close() error {
	if g.exec == 0 {
		return nil
	}
	exec := g.exec
	g.exec = 0
	if !g.b.usable("Graph.Close") {
		return g.b.takeErr()
	}
	return g.b.w.do(func() error { return g.b.drv.graphExecDestroy(exec) })
}
