package cuda

import (
	"fmt"
	"strconv"
	"unsafe"

	"github.com/ebitengine/purego"
)

// driver is the part of the CUDA driver API the backend uses, with Go types.
// libcuda implements it over libcuda.so.1; the tests substitute a fake that
// checks every kernel launch against the PTX without a GPU. Every method must
// be called on the backend's driver thread (see worker).
type driver interface {
	init() error
	driverVersion() (int, error)
	deviceCount() (int, error)
	device(ordinal int) (int32, error)
	deviceName(dev int32) (string, error)
	deviceAttribute(attr int, dev int32) (int, error)
	deviceTotalMem(dev int32) (uint64, error)
	primaryCtxRetain(dev int32) (uintptr, error)
	primaryCtxRelease(dev int32) error
	ctxSetCurrent(ctx uintptr) error

	moduleLoadData(image []byte) (uintptr, error)
	moduleUnload(mod uintptr) error
	moduleGetFunction(mod uintptr, name string) (uintptr, error)
	funcSetAttribute(fn uintptr, attr, value int) error
	// launchKernel's error names the kernel (see launchError).
	launchKernel(kernel string, fn uintptr, grid, block dim3, smem int, stream uintptr, params unsafe.Pointer) error

	memAlloc(bytes uint64) (uintptr, error)
	memFree(ptr uintptr) error
	memAllocHost(bytes uint64) (unsafe.Pointer, error)
	memFreeHost(p unsafe.Pointer) error
	memcpyHtoDAsync(dst uintptr, src unsafe.Pointer, bytes uint64, stream uintptr) error
	memcpyDtoHAsync(dst unsafe.Pointer, src uintptr, bytes uint64, stream uintptr) error
	memcpyDtoDAsync(dst, src uintptr, bytes uint64, stream uintptr) error
	memsetD32Async(dst uintptr, value uint32, n uint64, stream uintptr) error
	memsetD16Async(dst uintptr, value uint16, n uint64, stream uintptr) error

	streamCreate(flags int) (uintptr, error)
	streamDestroy(s uintptr) error
	streamSynchronize(s uintptr) error
	eventCreate(flags int) (uintptr, error)
	eventDestroy(e uintptr) error
	eventRecord(e, s uintptr) error
	eventSynchronize(e uintptr) error
	eventElapsedTime(start, end uintptr) (float32, error)

	streamBeginCapture(s uintptr, mode int) error
	streamEndCapture(s uintptr) (uintptr, error)
	graphInstantiate(g uintptr) (uintptr, error)
	graphLaunch(exec, s uintptr) error
	graphDestroy(g uintptr) error
	graphExecDestroy(exec uintptr) error
}

// dim3 is a grid or block shape.
type dim3 struct{ x, y, z int }

// Driver API constants (cuda.h).
const (
	attrMaxSharedPerBlockOptin = 97 // CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
	attrMultiprocessorCount    = 16 // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
	attrComputeMajor           = 75 // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
	attrComputeMinor           = 76 // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
	funcAttrMaxDynamicShared   = 8  // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
	streamNonBlocking          = 1  // CU_STREAM_NON_BLOCKING
	eventDefault               = 0  // CU_EVENT_DEFAULT (timing enabled)
	captureModeGlobal          = 0  // CU_STREAM_CAPTURE_MODE_GLOBAL
)

// libcuda calls libcuda.so.1 through purego: no cgo, so the same binary runs
// where the library is absent. Each field is a symbol's address.
type libcuda struct {
	handle uintptr

	cuInit, cuDriverGetVersion, cuDeviceGetCount, cuDeviceGet, cuDeviceGetName     uintptr
	cuDeviceGetAttribute, cuDeviceTotalMem, cuDevicePrimaryCtxRetain               uintptr
	cuDevicePrimaryCtxRelease, cuCtxSetCurrent, cuModuleLoadData, cuModuleUnload   uintptr
	cuModuleGetFunction, cuFuncSetAttribute, cuLaunchKernel, cuMemAlloc, cuMemFree uintptr
	cuMemAllocHost, cuMemFreeHost, cuMemcpyHtoD, cuMemcpyDtoH, cuMemcpyDtoD        uintptr
	cuMemcpyHtoDAsync, cuMemcpyDtoHAsync, cuMemcpyDtoDAsync, cuMemsetD32           uintptr
	cuMemsetD32Async, cuStreamCreate, cuStreamDestroy, cuStreamSynchronize         uintptr
	cuMemsetD16Async                                                               uintptr
	cuEventCreate, cuEventDestroy, cuEventRecord, cuEventSynchronize               uintptr
	cuEventElapsedTime, cuStreamBeginCapture, cuStreamEndCapture                   uintptr
	cuGraphInstantiateWithFlags, cuGraphLaunch, cuGraphDestroy, cuGraphExecDestroy uintptr
	cuGetErrorName                                                                 uintptr
}

// openLibcuda loads libcuda.so.1 and binds the versioned symbols the backend
// needs. The errors wrap ErrUnavailable.
func openLibcuda() (*libcuda, error) {
	h, err := purego.Dlopen("libcuda.so.1", purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, fmt.Errorf("%w: libcuda.so.1 not found (%v)", ErrUnavailable, err)
	}
	l := &libcuda{handle: h}
	// Each entry lists the names to try, newest first.
	syms := []struct {
		dst   *uintptr
		names []string
	}{
		{&l.cuInit, []string{"cuInit"}},
		{&l.cuDriverGetVersion, []string{"cuDriverGetVersion"}},
		{&l.cuDeviceGetCount, []string{"cuDeviceGetCount"}},
		{&l.cuDeviceGet, []string{"cuDeviceGet"}},
		{&l.cuDeviceGetName, []string{"cuDeviceGetName"}},
		{&l.cuDeviceGetAttribute, []string{"cuDeviceGetAttribute"}},
		{&l.cuDeviceTotalMem, []string{"cuDeviceTotalMem_v2"}},
		{&l.cuDevicePrimaryCtxRetain, []string{"cuDevicePrimaryCtxRetain"}},
		{&l.cuDevicePrimaryCtxRelease, []string{"cuDevicePrimaryCtxRelease_v2"}},
		{&l.cuCtxSetCurrent, []string{"cuCtxSetCurrent"}},
		{&l.cuModuleLoadData, []string{"cuModuleLoadData"}},
		{&l.cuModuleUnload, []string{"cuModuleUnload"}},
		{&l.cuModuleGetFunction, []string{"cuModuleGetFunction"}},
		{&l.cuFuncSetAttribute, []string{"cuFuncSetAttribute"}},
		{&l.cuLaunchKernel, []string{"cuLaunchKernel"}},
		{&l.cuMemAlloc, []string{"cuMemAlloc_v2"}},
		{&l.cuMemFree, []string{"cuMemFree_v2"}},
		{&l.cuMemAllocHost, []string{"cuMemAllocHost_v2"}},
		{&l.cuMemFreeHost, []string{"cuMemFreeHost"}},
		{&l.cuMemcpyHtoD, []string{"cuMemcpyHtoD_v2"}},
		{&l.cuMemcpyDtoH, []string{"cuMemcpyDtoH_v2"}},
		{&l.cuMemcpyDtoD, []string{"cuMemcpyDtoD_v2"}},
		{&l.cuMemcpyHtoDAsync, []string{"cuMemcpyHtoDAsync_v2"}},
		{&l.cuMemcpyDtoHAsync, []string{"cuMemcpyDtoHAsync_v2"}},
		{&l.cuMemcpyDtoDAsync, []string{"cuMemcpyDtoDAsync_v2"}},
		{&l.cuMemsetD32, []string{"cuMemsetD32_v2"}},
		{&l.cuMemsetD32Async, []string{"cuMemsetD32Async"}},
		{&l.cuMemsetD16Async, []string{"cuMemsetD16Async"}},
		{&l.cuStreamCreate, []string{"cuStreamCreate"}},
		{&l.cuStreamDestroy, []string{"cuStreamDestroy_v2"}},
		{&l.cuStreamSynchronize, []string{"cuStreamSynchronize"}},
		{&l.cuEventCreate, []string{"cuEventCreate"}},
		{&l.cuEventDestroy, []string{"cuEventDestroy_v2"}},
		{&l.cuEventRecord, []string{"cuEventRecord"}},
		{&l.cuEventSynchronize, []string{"cuEventSynchronize"}},
		{&l.cuEventElapsedTime, []string{"cuEventElapsedTime_v2", "cuEventElapsedTime"}},
		{&l.cuStreamBeginCapture, []string{"cuStreamBeginCapture_v2"}},
		{&l.cuStreamEndCapture, []string{"cuStreamEndCapture"}},
		{&l.cuGraphInstantiateWithFlags, []string{"cuGraphInstantiateWithFlags"}},
		{&l.cuGraphLaunch, []string{"cuGraphLaunch"}},
		{&l.cuGraphDestroy, []string{"cuGraphDestroy"}},
		{&l.cuGraphExecDestroy, []string{"cuGraphExecDestroy"}},
		{&l.cuGetErrorName, []string{"cuGetErrorName"}},
	}
	for _, s := range syms {
		for _, name := range s.names {
			if p, err := purego.Dlsym(h, name); err == nil && p != 0 {
				*s.dst = p
				break
			}
		}
		if *s.dst == 0 {
			purego.Dlclose(h)
			return nil, fmt.Errorf("%w: libcuda.so.1 lacks %s (driver too old)", ErrUnavailable, s.names[0])
		}
	}
	return l, nil
}

// call invokes a driver function and turns a non-zero CUresult into an
// *Error naming the call; args describes its main arguments for the message.
// Callers pass out-parameters as uintptr(unsafe.Pointer(&v)); uintptrescapes
// makes the compiler keep each such v on the heap and alive for the call.
//
//go:uintptrescapes
func (l *libcuda) call(fn uintptr, name string, args func() string, a ...uintptr) error {
	r, _, _ := purego.SyscallN(fn, a...)
	code := int(int32(r))
	if code == cudaSuccess {
		return nil
	}
	call := name + "()"
	if args != nil {
		call = name + "(" + args() + ")"
	}
	return &Error{Call: call, Code: code, Name: l.errorName(code)}
}

// errorName is cuGetErrorName's answer, or the number.
func (l *libcuda) errorName(code int) string {
	var s *byte
	r, _, _ := purego.SyscallN(l.cuGetErrorName, uintptr(code), uintptr(unsafe.Pointer(&s)))
	if r != 0 || s == nil {
		return "CUresult(" + strconv.Itoa(code) + ")"
	}
	return goString(s, 128)
}

// goString copies a NUL-terminated C string of at most max bytes.
func goString(p *byte, max int) string {
	b := make([]byte, 0, 32)
	for i := 0; i < max; i++ {
		c := *(*byte)(unsafe.Add(unsafe.Pointer(p), i))
		if c == 0 {
			break
		}
		b = append(b, c)
	}
	return string(b)
}

func itoa(v uint64) func() string { return func() string { return strconv.FormatUint(v, 10) } }

func (l *libcuda) init() error { return l.call(l.cuInit, "cuInit", itoa(0), 0) }

func (l *libcuda) driverVersion() (int, error) {
	var v int32
	err := l.call(l.cuDriverGetVersion, "cuDriverGetVersion", nil, uintptr(unsafe.Pointer(&v)))
	return int(v), err
}

func (l *libcuda) deviceCount() (int, error) {
	var n int32
	err := l.call(l.cuDeviceGetCount, "cuDeviceGetCount", nil, uintptr(unsafe.Pointer(&n)))
	return int(n), err
}

func (l *libcuda) device(ordinal int) (int32, error) {
	var d int32
	err := l.call(l.cuDeviceGet, "cuDeviceGet", itoa(uint64(ordinal)), uintptr(unsafe.Pointer(&d)), uintptr(ordinal))
	return d, err
}

func (l *libcuda) deviceName(dev int32) (string, error) {
	buf := make([]byte, 256)
	if err := l.call(l.cuDeviceGetName, "cuDeviceGetName", nil, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), uintptr(dev)); err != nil {
		return "", err
	}
	return goString(&buf[0], len(buf)), nil
}

func (l *libcuda) deviceAttribute(attr int, dev int32) (int, error) {
	var v int32
	err := l.call(l.cuDeviceGetAttribute, "cuDeviceGetAttribute", itoa(uint64(attr)),
		uintptr(unsafe.Pointer(&v)), uintptr(attr), uintptr(dev))
	return int(v), err
}

func (l *libcuda) deviceTotalMem(dev int32) (uint64, error) {
	var n uint64
	err := l.call(l.cuDeviceTotalMem, "cuDeviceTotalMem_v2", nil, uintptr(unsafe.Pointer(&n)), uintptr(dev))
	return n, err
}

func (l *libcuda) primaryCtxRetain(dev int32) (uintptr, error) {
	var ctx uintptr
	err := l.call(l.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", nil, uintptr(unsafe.Pointer(&ctx)), uintptr(dev))
	return ctx, err
}

func (l *libcuda) primaryCtxRelease(dev int32) error {
	return l.call(l.cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", nil, uintptr(dev))
}

func (l *libcuda) ctxSetCurrent(ctx uintptr) error {
	return l.call(l.cuCtxSetCurrent, "cuCtxSetCurrent", nil, ctx)
}

// moduleLoadData loads a NUL-terminated PTX image; the driver JIT-compiles
// it for the current device.
func (l *libcuda) moduleLoadData(image []byte) (uintptr, error) {
	if len(image) == 0 || image[len(image)-1] != 0 {
		return 0, fmt.Errorf("cuModuleLoadData: image is not NUL-terminated")
	}
	var mod uintptr
	err := l.call(l.cuModuleLoadData, "cuModuleLoadData", itoa(uint64(len(image))),
		uintptr(unsafe.Pointer(&mod)), uintptr(unsafe.Pointer(&image[0])))
	return mod, err
}

func (l *libcuda) moduleUnload(mod uintptr) error {
	return l.call(l.cuModuleUnload, "cuModuleUnload", nil, mod)
}

func (l *libcuda) moduleGetFunction(mod uintptr, name string) (uintptr, error) {
	cname := append([]byte(name), 0)
	var fn uintptr
	err := l.call(l.cuModuleGetFunction, "cuModuleGetFunction", func() string { return name },
		uintptr(unsafe.Pointer(&fn)), mod, uintptr(unsafe.Pointer(&cname[0])))
	return fn, err
}

func (l *libcuda) funcSetAttribute(fn uintptr, attr, value int) error {
	return l.call(l.cuFuncSetAttribute, "cuFuncSetAttribute",
		func() string { return strconv.Itoa(attr) + ", " + strconv.Itoa(value) }, fn, uintptr(attr), uintptr(value))
}

func (l *libcuda) launchKernel(kernel string, fn uintptr, grid, block dim3, smem int, stream uintptr, params unsafe.Pointer) error {
	err := l.call(l.cuLaunchKernel, "cuLaunchKernel", nil,
		fn, uintptr(grid.x), uintptr(grid.y), uintptr(grid.z), uintptr(block.x), uintptr(block.y), uintptr(block.z),
		uintptr(smem), stream, uintptr(params), 0)
	if e, ok := err.(*Error); ok {
		return launchError(kernel, grid, block, smem, e.Code, e.Name)
	}
	return err
}

func (l *libcuda) memAlloc(bytes uint64) (uintptr, error) {
	var p uintptr
	err := l.call(l.cuMemAlloc, "cuMemAlloc_v2", itoa(bytes), uintptr(unsafe.Pointer(&p)), uintptr(bytes))
	return p, err
}

func (l *libcuda) memFree(ptr uintptr) error {
	return l.call(l.cuMemFree, "cuMemFree_v2", nil, ptr)
}

func (l *libcuda) memAllocHost(bytes uint64) (unsafe.Pointer, error) {
	var p unsafe.Pointer
	err := l.call(l.cuMemAllocHost, "cuMemAllocHost_v2", itoa(bytes), uintptr(unsafe.Pointer(&p)), uintptr(bytes))
	return p, err
}

func (l *libcuda) memFreeHost(p unsafe.Pointer) error {
	return l.call(l.cuMemFreeHost, "cuMemFreeHost", nil, uintptr(p))
}

// The synchronous copies and memset work on the legacy default stream, which
// a non-blocking stream does not order against; the backend uses only the
// stream-ordered forms below. They are bound so that a driver lacking them
// is reported at start, and for debugging.

func (l *libcuda) memcpyHtoD(dst uintptr, src unsafe.Pointer, bytes uint64) error {
	return l.call(l.cuMemcpyHtoD, "cuMemcpyHtoD_v2", itoa(bytes), dst, uintptr(src), uintptr(bytes))
}

func (l *libcuda) memcpyDtoH(dst unsafe.Pointer, src uintptr, bytes uint64) error {
	return l.call(l.cuMemcpyDtoH, "cuMemcpyDtoH_v2", itoa(bytes), uintptr(dst), src, uintptr(bytes))
}

func (l *libcuda) memcpyDtoD(dst, src uintptr, bytes uint64) error {
	return l.call(l.cuMemcpyDtoD, "cuMemcpyDtoD_v2", itoa(bytes), dst, src, uintptr(bytes))
}

func (l *libcuda) memsetD32(dst uintptr, value uint32, n uint64) error {
	return l.call(l.cuMemsetD32, "cuMemsetD32_v2", itoa(n), dst, uintptr(value), uintptr(n))
}

func (l *libcuda) memcpyHtoDAsync(dst uintptr, src unsafe.Pointer, bytes uint64, stream uintptr) error {
	return l.call(l.cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", itoa(bytes), dst, uintptr(src), uintptr(bytes), stream)
}

func (l *libcuda) memcpyDtoHAsync(dst unsafe.Pointer, src uintptr, bytes uint64, stream uintptr) error {
	return l.call(l.cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", itoa(bytes), uintptr(dst), src, uintptr(bytes), stream)
}

func (l *libcuda) memcpyDtoDAsync(dst, src uintptr, bytes uint64, stream uintptr) error {
	return l.call(l.cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2", itoa(bytes), dst, src, uintptr(bytes), stream)
}

func (l *libcuda) memsetD32Async(dst uintptr, value uint32, n uint64, stream uintptr) error {
	return l.call(l.cuMemsetD32Async, "cuMemsetD32Async", itoa(n), dst, uintptr(value), uintptr(n), stream)
}

func (l *libcuda) memsetD16Async(dst uintptr, value uint16, n uint64, stream uintptr) error {
	return l.call(l.cuMemsetD16Async, "cuMemsetD16Async", itoa(n), dst, uintptr(value), uintptr(n), stream)
}

func (l *libcuda) streamCreate(flags int) (uintptr, error) {
	var s uintptr
	err := l.call(l.cuStreamCreate, "cuStreamCreate", nil, uintptr(unsafe.Pointer(&s)), uintptr(flags))
	return s, err
}

func (l *libcuda) streamDestroy(s uintptr) error {
	return l.call(l.cuStreamDestroy, "cuStreamDestroy_v2", nil, s)
}

func (l *libcuda) streamSynchronize(s uintptr) error {
	return l.call(l.cuStreamSynchronize, "cuStreamSynchronize", nil, s)
}

func (l *libcuda) eventCreate(flags int) (uintptr, error) {
	var e uintptr
	err := l.call(l.cuEventCreate, "cuEventCreate", nil, uintptr(unsafe.Pointer(&e)), uintptr(flags))
	return e, err
}

func (l *libcuda) eventDestroy(e uintptr) error {
	return l.call(l.cuEventDestroy, "cuEventDestroy_v2", nil, e)
}

func (l *libcuda) eventRecord(e, s uintptr) error {
	return l.call(l.cuEventRecord, "cuEventRecord", nil, e, s)
}

func (l *libcuda) eventSynchronize(e uintptr) error {
	return l.call(l.cuEventSynchronize, "cuEventSynchronize", nil, e)
}

func (l *libcuda) eventElapsedTime(start, end uintptr) (float32, error) {
	var ms float32
	err := l.call(l.cuEventElapsedTime, "cuEventElapsedTime", nil, uintptr(unsafe.Pointer(&ms)), start, end)
	return ms, err
}

func (l *libcuda) streamBeginCapture(s uintptr, mode int) error {
	return l.call(l.cuStreamBeginCapture, "cuStreamBeginCapture_v2", nil, s, uintptr(mode))
}

func (l *libcuda) streamEndCapture(s uintptr) (uintptr, error) {
	var g uintptr
	err := l.call(l.cuStreamEndCapture, "cuStreamEndCapture", nil, s, uintptr(unsafe.Pointer(&g)))
	return g, err
}

func (l *libcuda) graphInstantiate(g uintptr) (uintptr, error) {
	var exec uintptr
	err := l.call(l.cuGraphInstantiateWithFlags, "cuGraphInstantiateWithFlags", nil, uintptr(unsafe.Pointer(&exec)), g, 0)
	return exec, err
}

func (l *libcuda) graphLaunch(exec, s uintptr) error {
	return l.call(l.cuGraphLaunch, "cuGraphLaunch", nil, exec, s)
}

func (l *libcuda) graphDestroy(g uintptr) error {
	return l.call(l.cuGraphDestroy, "cuGraphDestroy", nil, g)
}

func (l *libcuda) graphExecDestroy(exec uintptr) error {
	return l.call(l.cuGraphExecDestroy, "cuGraphExecDestroy", nil, exec)
}
