package cuda

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/ebitengine/purego"
	"github.com/moerl/moerl/kernels"
)

// fakeDriver stands in for libcuda on a machine without a GPU. Device memory
// is Go memory (a "device pointer" is the address of a Go byte slice that the
// fake keeps alive), copies and memsets really move bytes, and a kernel
// launch does not run the kernel but checks it the way the driver would and
// more: the function exists, the block fits its .maxntid, the shared memory
// fits the limit set for it, and the packed argument block holds, for every
// parameter the PTX declares, a value at its natural size and alignment,
// pointers pointing into live device memory.
//
// With the kernel emulator loaded (useEmulator), a launch also runs the
// kernel on the CPU (kernels/emu), on the fake device memory, and checks the
// guard bytes after every block for writes out of bounds.
type fakeDriver struct {
	mu       sync.Mutex
	mem      map[uintptr][]byte // device blocks by base address
	host     map[uintptr][]byte // pinned host blocks
	funcs    map[uintptr]*fakeFunc
	nextFn   uintptr
	memLimit int64 // cuMemAlloc fails with CUDA_ERROR_OUT_OF_MEMORY beyond it (0: no limit)
	memUsed  int64

	allocs, frees int
	launches      []fakeLaunch
	capturing     bool
	captured      []func()
	graphs        map[uintptr][]func()
	nextGraph     uintptr
	graphLaunches int // cuGraphLaunch calls

	cc           [2]int                         // compute capability it reports (default 9.0)
	d2h, h2d     int                            // cuMemcpyDtoHAsync and cuMemcpyHtoDAsync calls
	d2d, memsets int                            // cuMemcpyDtoDAsync and cuMemset{D32,D16}Async calls
	syncDelay    time.Duration                  // how long cuStreamSynchronize blocks, as a busy GPU would
	syncs        int                            // cuStreamSynchronize calls
	hooks        map[string]func(args []uint64) // kernel name → what its launch does to device memory
	faults       []*fault                       // injected failures
	sticky       error                          // once set, every stream call fails with it
	dropped      int                            // launches refused because of sticky
	afterFailure []string                       // calls that reached the driver after an injected failure

	emulate func(name string, gx, gy, gz, bx, by, bz, smem uint32, params unsafe.Pointer) int32
	emuErr  error // first problem an emulated launch found
}

// guardBytes follow every fake device block, filled with guardByte.
const (
	guardBytes = 64
	guardByte  = 0xCD
)

// useEmulator loads the emulated kernels (make -f kernels/ptx.mk
// kernels-emu-lib) from lib.
func (f *fakeDriver) useEmulator(t *testing.T, lib string) {
	h, err := purego.Dlopen(lib, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		t.Fatalf("load the kernel emulator: %v", err)
	}
	purego.RegisterLibFunc(&f.emulate, h, "moerl_emu_launch")
}

// runEmulated runs a launch on the emulator from a private copy of its
// arguments (the driver copies them at launch), then checks the guards.
func (f *fakeDriver) runEmulated(e kernels.Entry, grid, block dim3, smem int, args []uint64) {
	buf := make([]uint64, len(args)+1)
	ptrs := make([]uintptr, len(args)+1)
	for i, v := range args {
		buf[i] = v // little-endian: a 4-byte value is the low bytes of its word
		ptrs[i] = uintptr(unsafe.Pointer(&buf[i]))
	}
	if f.emulate(e.Name, uint32(grid.x), uint32(grid.y), uint32(grid.z), uint32(block.x), uint32(block.y),
		uint32(block.z), uint32(smem), unsafe.Pointer(&ptrs[0])) != 0 && f.emuErr == nil {
		f.emuErr = fmt.Errorf("emulator: no kernel %s", e.Name)
	}
	runtime.KeepAlive(buf)
	for base, b := range f.mem {
		if g := b[len(b) : len(b)+guardBytes]; !bytes.Equal(g, bytes.Repeat([]byte{guardByte}, guardBytes)) && f.emuErr == nil {
			f.emuErr = fmt.Errorf("emulator: kernel %s (grid %v, block %v) wrote past the end of the %d-byte block at %#x",
				e.Name, grid, block, len(b), base)
		}
	}
}

type fakeFunc struct {
	entry kernels.Entry
	smem  int // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
}

type fakeLaunch struct {
	name        string
	grid, block dim3
	smem        int
	args        []uint64
}

const fakeSmemOptin = 227 << 10

func newFakeDriver() *fakeDriver {
	return &fakeDriver{mem: map[uintptr][]byte{}, host: map[uintptr][]byte{}, funcs: map[uintptr]*fakeFunc{},
		nextFn: 0x1000, graphs: map[uintptr][]func(){}, nextGraph: 0x2000, cc: [2]int{9, 0}, hooks: map[string]func([]uint64){}}
}

// fault makes the n-th call (1-based) matching call fail with code and
// name. call is a kernel name for launches ("rmsnorm_fwd"), or
// "cublasGemmEx" for a GEMM (strided batched ones included). A sticky fault
// then fails every later stream call with the same code, as the real driver
// does after a launch failure or an illegal address: the context is lost.
type fault struct {
	call   string
	n      int
	code   int
	name   string
	sticky bool
	seen   int
	fired  bool
}

// inject adds a fault; see fault.
func (f *fakeDriver) inject(call string, n, code int, name string, sticky bool) *fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	ft := &fault{call: call, n: n, code: code, name: name, sticky: sticky}
	f.faults = append(f.faults, ft)
	return ft
}

// fire counts a call against the faults and reports the one that fails it.
// The caller holds f.mu.
func (f *fakeDriver) fire(call string) *fault {
	for _, ft := range f.faults {
		if ft.call != call || ft.fired {
			continue
		}
		if ft.seen++; ft.seen == ft.n {
			ft.fired = true
			return ft
		}
	}
	return nil
}

// lost records a call made after an injected failure and returns the
// sticky error, if any. The caller holds f.mu.
func (f *fakeDriver) lost(call string) error {
	for _, ft := range f.faults {
		if ft.fired {
			f.afterFailure = append(f.afterFailure, call)
			break
		}
	}
	return f.sticky
}

func fakeErr(call string, code int, name string) error {
	return &Error{Call: call, Code: code, Name: name}
}

// resolve returns the device bytes [addr, addr+n), or nil.
func (f *fakeDriver) resolve(addr uintptr, n uint64) []byte {
	for base, b := range f.mem {
		if addr >= base && uint64(addr-base)+n <= uint64(len(b)) {
			off := addr - base
			return b[off : off+uintptr(n)]
		}
	}
	return nil
}

// do runs a stream operation now, or records it during capture.
func (f *fakeDriver) do(op func()) {
	if f.capturing {
		f.captured = append(f.captured, op)
		return
	}
	op()
}

func (f *fakeDriver) init() error                 { return nil }
func (f *fakeDriver) driverVersion() (int, error) { return 13000, nil }
func (f *fakeDriver) deviceCount() (int, error)   { return 1, nil }
func (f *fakeDriver) device(ordinal int) (int32, error) {
	if ordinal != 0 {
		return 0, fakeErr("cuDeviceGet", 101, "CUDA_ERROR_INVALID_DEVICE")
	}
	return 0, nil
}
func (f *fakeDriver) deviceName(int32) (string, error)     { return "Fake H100", nil }
func (f *fakeDriver) deviceTotalMem(int32) (uint64, error) { return 80 << 30, nil }
func (f *fakeDriver) deviceAttribute(attr int, _ int32) (int, error) {
	switch attr {
	case attrComputeMajor:
		return f.cc[0], nil
	case attrComputeMinor:
		return f.cc[1], nil
	case attrMultiprocessorCount:
		return 132, nil
	case attrMaxSharedPerBlockOptin:
		return fakeSmemOptin, nil
	}
	return 0, fakeErr("cuDeviceGetAttribute", 1, "CUDA_ERROR_INVALID_VALUE")
}
func (f *fakeDriver) primaryCtxRetain(int32) (uintptr, error) { return 0xc0, nil }
func (f *fakeDriver) primaryCtxRelease(int32) error           { return nil }
func (f *fakeDriver) ctxSetCurrent(uintptr) error             { return nil }

func (f *fakeDriver) moduleLoadData(image []byte) (uintptr, error) {
	if len(image) == 0 || image[len(image)-1] != 0 {
		return 0, fmt.Errorf("fake cuModuleLoadData: image is not NUL-terminated")
	}
	return 0x500, nil
}
func (f *fakeDriver) moduleUnload(uintptr) error { return nil }

func (f *fakeDriver) moduleGetFunction(_ uintptr, name string) (uintptr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range kernels.Modules {
		ptx, err := kernels.PTX(m.Name)
		if err != nil {
			return 0, err
		}
		entries, err := kernels.Entries(ptx)
		if err != nil {
			return 0, err
		}
		for _, e := range entries {
			if e.Name == name {
				f.nextFn++
				f.funcs[f.nextFn] = &fakeFunc{entry: e}
				return f.nextFn, nil
			}
		}
	}
	return 0, fakeErr("cuModuleGetFunction("+name+")", 500, "CUDA_ERROR_NOT_FOUND")
}

func (f *fakeDriver) funcSetAttribute(fn uintptr, attr, value int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := f.funcs[fn]
	if k == nil || attr != funcAttrMaxDynamicShared || value > fakeSmemOptin {
		return fakeErr("cuFuncSetAttribute", 1, "CUDA_ERROR_INVALID_VALUE")
	}
	k.smem = value
	return nil
}

func (f *fakeDriver) launchKernel(kernel string, fn uintptr, grid, block dim3, smem int, stream uintptr, params unsafe.Pointer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := f.funcs[fn]
	if k == nil {
		return fakeErr("cuLaunchKernel", 400, "CUDA_ERROR_INVALID_HANDLE")
	}
	e := k.entry
	if e.Name != kernel {
		return fmt.Errorf("fake cuLaunchKernel: function %#x is %s, the backend names it %s", fn, e.Name, kernel)
	}
	if err := f.lost(kernel); err != nil {
		f.dropped++
		return err
	}
	if ft := f.fire(kernel); ft != nil {
		err := launchError(kernel, grid, block, smem, ft.code, ft.name)
		if ft.sticky {
			f.sticky = &Error{Call: "(after a lost context)", Code: ft.code, Name: ft.name}
		}
		return err
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("fake cuLaunchKernel(%s grid %v block %v smem %d): %s", e.Name, grid, block, smem, fmt.Sprintf(format, a...))
	}
	if grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.y > 65535 || grid.z > 65535 {
		return bad("bad grid")
	}
	if threads := block.x * block.y * block.z; threads < 1 || threads > e.MaxThreads {
		return bad("%d threads, .maxntid allows %d", threads, e.MaxThreads)
	}
	if smem > defaultSmem && smem > k.smem {
		return bad("dynamic shared memory above 48 KiB without raising the kernel's limit (%d)", k.smem)
	}
	var args []uint64
	for i, p := range e.Params {
		slot := *(*uintptr)(unsafe.Add(params, i*8))
		off := int(slot - uintptr(params))
		size := p.Size()
		if off < maxKernelArgs*8 || off+size > argBufBytes || off%size != 0 {
			return bad("parameter %d (%v) stored at offset %d", i, p, off)
		}
		at := unsafe.Add(params, off)
		var v uint64
		if size == 4 {
			v = uint64(*(*uint32)(at))
		} else {
			v = *(*uint64)(at)
		}
		// A U64 large enough to be an address must be one we handed out;
		// small ones are 64-bit integers (GEMM batch strides) or null.
		if p == kernels.U64 && v >= 1<<32 && f.resolve(uintptr(v), 1) == nil {
			return bad("parameter %d = %#x is not in device memory", i, v)
		}
		args = append(args, v)
	}
	l := fakeLaunch{name: e.Name, grid: grid, block: block, smem: smem, args: args}
	f.launches = append(f.launches, l)
	if f.emulate != nil {
		f.do(func() { f.runEmulated(e, grid, block, smem, args) })
	} else if h := f.hooks[e.Name]; h != nil {
		f.do(func() { h(args) })
	}
	return nil
}

func (f *fakeDriver) memAlloc(bytes uint64) (uintptr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.memLimit > 0 && f.memUsed+int64(bytes) > f.memLimit {
		return 0, fakeErr(fmt.Sprintf("cuMemAlloc_v2(%d)", bytes), cudaErrorOutOfMemory, "CUDA_ERROR_OUT_OF_MEMORY")
	}
	b := make([]byte, bytes+guardBytes)
	for i := range b {
		b[i] = 0xA5 // cuMemAlloc does not zero
	}
	for i := bytes; i < bytes+guardBytes; i++ {
		b[i] = guardByte
	}
	p := uintptr(unsafe.Pointer(&b[0]))
	f.mem[p] = b[:bytes]
	f.memUsed += int64(bytes)
	f.allocs++
	return p, nil
}

func (f *fakeDriver) memFree(ptr uintptr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.mem[ptr]
	if !ok {
		return fakeErr("cuMemFree_v2", 1, "CUDA_ERROR_INVALID_VALUE")
	}
	f.memUsed -= int64(len(b))
	delete(f.mem, ptr)
	f.frees++
	return nil
}

func (f *fakeDriver) memAllocHost(bytes uint64) (unsafe.Pointer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := make([]byte, bytes)
	p := unsafe.Pointer(&b[0])
	f.host[uintptr(p)] = b
	return p, nil
}

func (f *fakeDriver) memFreeHost(p unsafe.Pointer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.host, uintptr(p))
	return nil
}

func (f *fakeDriver) memcpyHtoDAsync(dst uintptr, src unsafe.Pointer, bytes uint64, _ uintptr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.lost("cuMemcpyHtoDAsync_v2"); err != nil {
		return err
	}
	f.h2d++
	d := f.resolve(dst, bytes)
	if d == nil {
		return fakeErr("cuMemcpyHtoDAsync_v2", 1, "CUDA_ERROR_INVALID_VALUE")
	}
	data := append([]byte(nil), unsafe.Slice((*byte)(src), bytes)...) // staged now, like pageable memory
	f.do(func() { copy(d, data) })
	return nil
}

func (f *fakeDriver) memcpyDtoHAsync(dst unsafe.Pointer, src uintptr, bytes uint64, _ uintptr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.lost("cuMemcpyDtoHAsync_v2"); err != nil {
		return err
	}
	f.d2h++
	s := f.resolve(src, bytes)
	if s == nil {
		return fakeErr("cuMemcpyDtoHAsync_v2", 1, "CUDA_ERROR_INVALID_VALUE")
	}
	copy(unsafe.Slice((*byte)(dst), bytes), s)
	return nil
}

func (f *fakeDriver) memcpyDtoDAsync(dst, src uintptr, bytes uint64, _ uintptr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.lost("cuMemcpyDtoDAsync_v2"); err != nil {
		return err
	}
	f.d2d++
	d, s := f.resolve(dst, bytes), f.resolve(src, bytes)
	if d == nil || s == nil {
		return fakeErr("cuMemcpyDtoDAsync_v2", 1, "CUDA_ERROR_INVALID_VALUE")
	}
	f.do(func() { copy(d, s) })
	return nil
}

func (f *fakeDriver) memsetD32Async(dst uintptr, value uint32, n uint64, _ uintptr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.lost("cuMemsetD32Async"); err != nil {
		return err
	}
	f.memsets++
	d := f.resolve(dst, n*4)
	if d == nil {
		return fakeErr("cuMemsetD32Async", 1, "CUDA_ERROR_INVALID_VALUE")
	}
	f.do(func() {
		for i := uint64(0); i < n; i++ {
			binary.LittleEndian.PutUint32(d[4*i:], value)
		}
	})
	return nil
}

func (f *fakeDriver) memsetD16Async(dst uintptr, value uint16, n uint64, _ uintptr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.lost("cuMemsetD16Async"); err != nil {
		return err
	}
	f.memsets++
	d := f.resolve(dst, n*2)
	if d == nil {
		return fakeErr("cuMemsetD16Async", 1, "CUDA_ERROR_INVALID_VALUE")
	}
	f.do(func() {
		for i := uint64(0); i < n; i++ {
			binary.LittleEndian.PutUint16(d[2*i:], value)
		}
	})
	return nil
}

func (f *fakeDriver) streamCreate(int) (uintptr, error) { return 0x5e, nil }
func (f *fakeDriver) streamDestroy(uintptr) error       { return nil }
func (f *fakeDriver) streamSynchronize(uintptr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs++
	time.Sleep(f.syncDelay)
	if f.sticky != nil {
		return &Error{Call: "cuStreamSynchronize()", Code: f.sticky.(*Error).Code, Name: f.sticky.(*Error).Name}
	}
	err := f.emuErr
	f.emuErr = nil
	return err
}
func (f *fakeDriver) eventCreate(int) (uintptr, error)   { return 0xe0, nil }
func (f *fakeDriver) eventDestroy(uintptr) error         { return nil }
func (f *fakeDriver) eventRecord(uintptr, uintptr) error { return nil }
func (f *fakeDriver) eventSynchronize(uintptr) error     { return nil }
func (f *fakeDriver) eventElapsedTime(uintptr, uintptr) (float32, error) {
	return 0.5, nil
}

func (f *fakeDriver) streamBeginCapture(uintptr, int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.capturing {
		return fakeErr("cuStreamBeginCapture_v2", 900, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED")
	}
	f.capturing, f.captured = true, nil
	return nil
}

func (f *fakeDriver) streamEndCapture(uintptr) (uintptr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.capturing {
		return 0, fakeErr("cuStreamEndCapture", 901, "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED")
	}
	f.capturing = false
	f.nextGraph++
	f.graphs[f.nextGraph] = f.captured
	return f.nextGraph, nil
}

func (f *fakeDriver) graphInstantiate(g uintptr) (uintptr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextGraph++
	f.graphs[f.nextGraph] = f.graphs[g]
	return f.nextGraph, nil
}

func (f *fakeDriver) graphLaunch(exec, _ uintptr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	ops, ok := f.graphs[exec]
	if !ok {
		return fakeErr("cuGraphLaunch", 400, "CUDA_ERROR_INVALID_HANDLE")
	}
	if err := f.lost("cuGraphLaunch"); err != nil {
		return err
	}
	if ft := f.fire("cuGraphLaunch"); ft != nil {
		return fakeErr("cuGraphLaunch", ft.code, ft.name)
	}
	f.graphLaunches++
	for _, op := range ops {
		op()
	}
	return nil
}

func (f *fakeDriver) graphDestroy(g uintptr) error {
	f.mu.Lock()
	delete(f.graphs, g)
	f.mu.Unlock()
	return nil
}
func (f *fakeDriver) graphExecDestroy(g uintptr) error { return f.graphDestroy(g) }

// launched returns the names of the kernels launched so far.
func (f *fakeDriver) launched() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := map[string]int{}
	for _, l := range f.launches {
		m[l.name]++
	}
	return m
}

// fakeBlas computes cuBLAS's column-major GEMM on the fake device memory, so
// a test can hold the backend's row-major mapping against a reference.
type fakeBlas struct {
	drv       *fakeDriver
	mathMode  int
	computes  []int
	noCompute bool // check and count GEMMs without computing them (fast)
}

func (fb *fakeBlas) library() string                             { return "fake-cublas" }
func (fb *fakeBlas) create() (uintptr, error)                    { return 0xb1, nil }
func (fb *fakeBlas) destroy(uintptr) error                       { return nil }
func (fb *fakeBlas) setStream(uintptr, uintptr) error            { return nil }
func (fb *fakeBlas) setMathMode(_ uintptr, mode int) error       { fb.mathMode = mode; return nil }
func (fb *fakeBlas) setWorkspace(uintptr, uintptr, uint64) error { return nil }
func (fb *fakeBlas) version(uintptr) (int, error)                { return 130002, nil }

func (fb *fakeBlas) gemmEx(h uintptr, transa, transb, m, n, k int, alpha float32, a uintptr, lda int,
	b uintptr, ldb int, beta float32, c uintptr, ldc int, compute int) error {
	return fb.gemmStridedBatchedEx(h, transa, transb, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1, compute)
}

func (fb *fakeBlas) gemmStridedBatchedEx(_ uintptr, transa, transb, m, n, k int, alpha float32, a uintptr, lda int,
	strideA int64, b uintptr, ldb int, strideB int64, beta float32, c uintptr, ldc int, strideC int64,
	batch, compute int) error {
	f := fb.drv
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.lost("cublasGemmEx"); err != nil {
		return &Error{Call: "cublasGemmEx()", Code: 13, Name: "CUBLAS_STATUS_EXECUTION_FAILED"}
	}
	if ft := f.fire("cublasGemmEx"); ft != nil {
		if ft.sticky {
			f.sticky = &Error{Call: "(after a lost context)", Code: 719, Name: "CUDA_ERROR_LAUNCH_FAILED"}
		}
		return &Error{Call: fmt.Sprintf("cublasGemmEx(op %d %d, m %d n %d k %d, ld %d %d %d)", transa, transb, m, n, k, lda, ldb, ldc),
			Code: ft.code, Name: ft.name}
	}
	fb.computes = append(fb.computes, compute)
	// cuBLAS's own argument rules, column-major.
	rowsA, rowsB := m, k
	if transa == blasOpT {
		rowsA = k
	}
	if transb == blasOpT {
		rowsB = n
	}
	if lda < max(1, rowsA) || ldb < max(1, rowsB) || ldc < max(1, m) {
		return fakeErr("cublasGemmEx", 7, "CUBLAS_STATUS_INVALID_VALUE")
	}
	if fb.noCompute {
		// The first and last element of every operand must lie in device memory.
		colsA, colsB := k, n
		if transa == blasOpT {
			colsA = m
		}
		if transb == blasOpT {
			colsB = k
		}
		for _, op := range []struct {
			p                  uintptr
			rows, cols, ld, st int64
		}{{a, int64(rowsA), int64(colsA), int64(lda), strideA}, {b, int64(rowsB), int64(colsB), int64(ldb), strideB},
			{c, int64(m), int64(n), int64(ldc), strideC}} {
			if op.rows == 0 || op.cols == 0 {
				continue
			}
			last := int64(batch-1)*op.st + (op.cols-1)*op.ld + op.rows - 1
			if f.resolve(op.p, 4) == nil || f.resolve(op.p+uintptr(last*4), 4) == nil {
				return fakeErr("cublasGemmEx: operand outside device memory", 13, "CUBLAS_STATUS_EXECUTION_FAILED")
			}
		}
		return nil
	}
	if f.capturing { // the product belongs to the graph: computed at each replay
		f.captured = append(f.captured, func() {
			fb.product(transa, transb, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch)
		})
		return nil
	}
	return fb.product(transa, transb, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch)
}

// product computes a column-major strided-batched GEMM in device memory.
func (fb *fakeBlas) product(transa, transb, m, n, k int, alpha float32, a uintptr, lda int, strideA int64,
	b uintptr, ldb int, strideB int64, beta float32, c uintptr, ldc int, strideC int64, batch int) error {
	f := fb.drv
	get := func(base uintptr, i int64) (float32, bool) {
		s := f.resolve(base+uintptr(i*4), 4)
		if s == nil {
			return 0, false
		}
		return math.Float32frombits(binary.LittleEndian.Uint32(s)), true
	}
	for z := 0; z < batch; z++ {
		za, zb, zc := int64(z)*strideA, int64(z)*strideB, int64(z)*strideC
		for j := 0; j < n; j++ {
			for i := 0; i < m; i++ {
				var s float64
				for p := 0; p < k; p++ {
					ia, ib := za+int64(i)+int64(p)*int64(lda), zb+int64(p)+int64(j)*int64(ldb)
					if transa == blasOpT {
						ia = za + int64(p) + int64(i)*int64(lda)
					}
					if transb == blasOpT {
						ib = zb + int64(j) + int64(p)*int64(ldb)
					}
					x, ok1 := get(a, ia)
					y, ok2 := get(b, ib)
					if !ok1 || !ok2 {
						return fakeErr("cublasGemmEx: operand outside device memory", 13, "CUBLAS_STATUS_EXECUTION_FAILED")
					}
					s += float64(x) * float64(y)
				}
				ic := zc + int64(i) + int64(j)*int64(ldc)
				cs := f.resolve(c+uintptr(ic*4), 4)
				if cs == nil {
					return fakeErr("cublasGemmEx: C outside device memory", 13, "CUBLAS_STATUS_EXECUTION_FAILED")
				}
				v := float64(alpha) * s
				if beta != 0 {
					v += float64(beta) * float64(math.Float32frombits(binary.LittleEndian.Uint32(cs)))
				}
				binary.LittleEndian.PutUint32(cs, math.Float32bits(float32(v)))
			}
		}
	}
	return nil
}
