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
)

func statusError(code int32) error {
	var what string
	switch code {
	case statusEmbedID:
		what = "Embedding/EmbeddingBackward: a token id is outside [0, vocab)"
	case statusGather:
		what = "Gather/GatherBackward/Combine/CombineBackward/ScatterRows: a row index is out of range"
	case statusTarget:
		what = "TokenLogProbs/TokenLogProbsBackward: a target is outside [0, vocab)"
	case statusExpert:
		what = "RouterDispatch/RouterTopKBackward: an expert index is outside [0, nExperts)"
	case statusDecodeLen:
		what = "AttentionDecode: a sequence length is outside [0, maxSeq]"
	default:
		what = fmt.Sprintf("unknown kernel status %d", code)
	}
	return fmt.Errorf("cuda kernel: %s", what)
}
