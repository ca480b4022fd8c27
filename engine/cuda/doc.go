// Package cuda is moerl's GPU backend: engine.Backend on one NVIDIA GPU,
// through the CUDA driver API and cuBLAS, with no cgo.
//
// The driver (libcuda.so.1) and cuBLAS (libcublas.so.13, .12, .11, or the
// file MOERL_CUBLAS names; MOERL_CUBLAS=off forces the fallback GEMM kernel)
// are opened at run time with purego, so a CGO_ENABLED=0 binary runs on
// machines with and without a GPU: Available says which, and New returns an
// error wrapping ErrUnavailable where there is none. The kernels are PTX from
// package kernels, JIT-compiled by the driver when New loads them.
//
// Design:
//
//   - One stream, one driver thread. Every driver and cuBLAS call runs on
//     one goroutine locked to its OS thread, on which the device's primary
//     context is current (see worker). Ops queue their kernels there and
//     return; Sync waits and reports the first error, including bad indices
//     that kernels find (see kernels/common.cuh). Errors keep
//     engine.Backend's contract: a broken precondition panics at the call,
//     as on the CPU; a driver or cuBLAS failure or an Unsupported shape is
//     kept, the work queued after it is dropped, and the next Sync returns
//     it.
//   - Kernel arguments are packed at their natural sizes into a pinned block
//     from cuMemAllocHost and checked against the parameter types parsed
//     from the kernel's PTX, so a launcher that passes the wrong arguments
//     gets an error, not a corrupted launch (see packArgs).
//   - A caching allocator reuses freed blocks by size class, so a repeated
//     step stops calling cuMemAlloc (MemStats).
//   - Deterministic: no kernel sums floats with atomics; every reduction has
//     a fixed order that depends on the shapes only. Same inputs, same GPU,
//     same bits.
//   - Capture records a fixed sequence of ops as a CUDA graph, and
//     Graph.Launch replays it with one launch.
//   - GEMMs multiply in fp32, TF32 (the default where the tensor cores
//     have it) or bf16 (MOERL_BF16=1; GEMMPrecision). In bf16 mode the
//     backend offers engine.GEMMInput and engine.ActivationStorage, so
//     models keep in bf16 what only bf16 GEMMs read (the same products)
//     and the experts' gate and up values (which the backward reads
//     rounded); the grouped kernels take those bf16 operands.
//
// The GPU tests (cuda_test.go) compare every op with the CPU backend and
// skip where CUDA is unavailable (they fail instead when MOERL_REQUIRE_CUDA=1,
// as on the GPU machine); the tests that need no GPU check every launcher
// against the PTX through a fake driver, inject driver and cuBLAS failures
// into training and generation (faults_test.go), pin the launches, GEMMs and
// host syncs of a training step and a decode token (counts_test.go), and
// TestOnEmulator runs
// the GPU tests on the CPU kernel emulator of kernels/emu when MOERL_EMU_LIB
// names its library (make -f kernels/ptx.mk kernels-emu-gotest).
package cuda
