package cuda

import (
	"errors"
	"fmt"
)

// ErrUnavailable is wrapped by every error that says CUDA cannot be used on
// this machine (no driver library, no device, a driver too old).
var ErrUnavailable = errors.New("CUDA unavailable")

// Error is a failed CUDA driver or cuBLAS call: the call with its main
// arguments, and the result code with its name, as in
// "cuMemAlloc_v2(1048576): CUDA_ERROR_OUT_OF_MEMORY".
type Error struct {
	Call string // function and arguments
	Code int    // CUresult or cublasStatus_t
	Name string // CUDA_ERROR_… or CUBLAS_STATUS_…
}

func (e *Error) Error() string { return e.Call + ": " + e.Name }

// CUresult codes the backend tests for.
const (
	cudaSuccess           = 0
	cudaErrorOutOfMemory  = 2
	cudaErrorDeinitialize = 4
	cudaErrorNoDevice     = 100
)

// Status codes that kernels record in the device status word; they mirror
// the enum in kernels/common.cuh.
const (
	statusEmbedID   = 1
	statusGather    = 2
	statusTarget    = 3
	statusExpert    = 4
	statusDecodeLen = 5
	statusGroups    = 6
)

func statusError(code int32) error {
	var what string
	switch code {
	case statusEmbedID:
		what = "Embedding/EmbeddingBackward: a token id is outside [0, vocab)"
	case statusGather:
		what = "Gather/GatherBackward/Combine/CombineBackward/ScatterRows: a row index is out of range"
	case statusTarget:
		what = "TokenLogProbs/TokenLogProbsBackward/TokenLogProbsFused: a target is outside [0, vocab)"
	case statusExpert:
		what = "RouterDispatch/RouterTopKBackward: an expert index is outside [0, nExperts)"
	case statusDecodeLen:
		what = "AttentionDecode: a sequence length is outside [0, maxSeq]"
	case statusGroups:
		what = "GemmGrouped*/RouterLoad: the group offsets fall or pass the rows"
	default:
		what = fmt.Sprintf("unknown kernel status %d", code)
	}
	return fmt.Errorf("cuda kernel: %s", what)
}

// Unsupported is the error of a call whose shapes this backend's kernels
// cannot take although the CPU backend can (a head dimension above 128, more
// than 2³¹−1 elements): not a bug in the caller, as a broken precondition
// is, but a model this backend cannot run. It is the pending error that the
// next Sync returns.
type Unsupported struct {
	Op   string // the engine.Backend op
	What string // the limit, with the values
}

func (e *Unsupported) Error() string {
	return "cuda: " + e.Op + ": " + e.What + " (a limit of the CUDA kernels)"
}

// launchError is the error of a kernel launch the driver refused, naming the
// kernel: "cuLaunchKernel rmsnorm_fwd (grid 2×1×1, block 256×1×1, smem 0):
// CUDA_ERROR_LAUNCH_FAILED".
func launchError(kernel string, grid, block dim3, smem int, code int, name string) *Error {
	return &Error{Call: fmt.Sprintf("cuLaunchKernel %s (grid %d×%d×%d, block %d×%d×%d, smem %d)", kernel,
		grid.x, grid.y, grid.z, block.x, block.y, block.z, smem), Code: code, Name: name}
}
