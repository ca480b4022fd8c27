package cuda

import (
	"errors"
	"fmt"
	"sync"
)

// MemStats describes the backend's device memory.
type MemStats struct {
	InUse    int64 // bytes in blocks held by live tensors (block sizes, rounded up)
	Peak     int64 // the largest InUse so far
	Cached   int64 // bytes in free blocks kept for reuse
	Reserved int64 // InUse + Cached: what the backend holds from the driver
	Allocs   int64 // cuMemAlloc calls so far
	Frees    int64 // cuMemFree calls so far
}

// allocator is a caching device allocator: freed blocks go to a free list
// per rounded size and are handed out again, so a run whose shapes repeat
// (every training or decode step) stops calling cuMemAlloc after its first
// step. All work is on one stream, in submission order, so a block freed
// while earlier kernels still use it can be handed out at once: whatever the
// new owner queues runs after them.
type allocator struct {
	mu   sync.Mutex
	free map[uint64][]uintptr // by block size
	live map[uintptr]uint64   // block size of every handed-out block
	st   MemStats

	// raw calls cuMemAlloc/cuMemFree on the driver thread.
	rawAlloc func(bytes uint64) (uintptr, error)
	rawFree  func(ptr uintptr) error
}

func newAllocator(alloc func(uint64) (uintptr, error), free func(uintptr) error) *allocator {
	return &allocator{free: map[uint64][]uintptr{}, live: map[uintptr]uint64{}, rawAlloc: alloc, rawFree: free}
}

// blockSize rounds a request up: to a power of two from 512 B to 1 MiB, then
// to a multiple of 2 MiB. Exact size classes keep reuse simple; the model's
// tensors come in a few sizes that repeat every step.
func blockSize(n uint64) uint64 {
	const small, large = 1 << 20, 2 << 20
	if n <= small {
		s := uint64(512)
		for s < n {
			s <<= 1
		}
		return s
	}
	return (n + large - 1) / large * large
}

// alloc returns a device block of at least n bytes.
func (a *allocator) alloc(n uint64) (uintptr, error) {
	size := blockSize(n)
	a.mu.Lock()
	defer a.mu.Unlock()
	if list := a.free[size]; len(list) > 0 {
		p := list[len(list)-1]
		a.free[size] = list[:len(list)-1]
		a.st.Cached -= int64(size)
		a.take(p, size)
		return p, nil
	}
	p, err := a.rawAlloc(size)
	var cerr *Error
	if err != nil && errors.As(err, &cerr) && cerr.Code == cudaErrorOutOfMemory {
		// Give the cached blocks back to the driver and try once more.
		if terr := a.trimLocked(); terr != nil {
			return 0, fmt.Errorf("%w (and releasing the cache failed: %v)", err, terr)
		}
		p, err = a.rawAlloc(size)
	}
	if err != nil {
		return 0, err
	}
	a.st.Allocs++
	a.take(p, size)
	return p, nil
}

func (a *allocator) take(p uintptr, size uint64) {
	a.live[p] = size
	a.st.InUse += int64(size)
	a.st.Reserved = a.st.InUse + a.st.Cached
	a.st.Peak = max(a.st.Peak, a.st.InUse)
}

// release returns a block to its free list.
func (a *allocator) release(p uintptr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	size, ok := a.live[p]
	if !ok {
		return fmt.Errorf("device pointer %#x was not allocated by this backend, or was freed already", p)
	}
	delete(a.live, p)
	a.free[size] = append(a.free[size], p)
	a.st.InUse -= int64(size)
	a.st.Cached += int64(size)
	a.st.Reserved = a.st.InUse + a.st.Cached
	return nil
}

// trim frees every cached block.
func (a *allocator) trim() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.trimLocked()
}

func (a *allocator) trimLocked() error {
	var first error
	for size, list := range a.free {
		for _, p := range list {
			if err := a.rawFree(p); err != nil && first == nil {
				first = err
			}
			a.st.Frees++
			a.st.Cached -= int64(size)
		}
		delete(a.free, size)
	}
	a.st.Reserved = a.st.InUse + a.st.Cached
	return first
}

// freeAll frees every block, live or cached (at Close).
func (a *allocator) freeAll() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	first := a.trimLocked()
	for p, size := range a.live {
		if err := a.rawFree(p); err != nil && first == nil {
			first = err
		}
		a.st.Frees++
		a.st.InUse -= int64(size)
		delete(a.live, p)
	}
	a.st.Reserved = a.st.InUse + a.st.Cached
	return first
}

func (a *allocator) resetPeak() {
	a.mu.Lock()
	a.st.Peak = a.st.InUse
	a.mu.Unlock()
}

func (a *allocator) stats() MemStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st
}
