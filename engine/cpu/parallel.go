package cpu

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// chunkWork is the rough number of floating-point operations one chunk of a
// parallel loop should hold: enough that starting a goroutine (about a
// microsecond) is noise, small enough that two cores balance.
const chunkWork = 1 << 15

// grain returns how many items of the given per-item cost make one chunk.
// It depends only on the cost, never on the worker count, so reductions
// chunked by it give the same result whatever GOMAXPROCS is.
func grain(perItem int) int {
	return max(1, chunkWork/max(perItem, 1))
}

// parallelFor calls fn(lo, hi) for the chunks [0, grain), [grain, 2·grain), …
// of [0, n), each exactly once, on up to GOMAXPROCS goroutines. The chunk
// boundaries depend only on n and grain; which goroutine runs a chunk does
// not matter as long as fn writes only what its chunk owns. A loop of one
// chunk runs on the calling goroutine.
func parallelFor(n, grain int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	grain = max(grain, 1)
	chunks := (n + grain - 1) / grain
	workers := min(runtime.GOMAXPROCS(0), chunks)
	if workers <= 1 {
		for lo := 0; lo < n; lo += grain {
			fn(lo, min(lo+grain, n))
		}
		return
	}
	var next atomic.Int64
	run := func() {
		for {
			c := int(next.Add(1) - 1)
			if c >= chunks {
				return
			}
			lo := c * grain
			fn(lo, min(lo+grain, n))
		}
	}
	var wg sync.WaitGroup
	for range workers - 1 {
		wg.Go(run)
	}
	run()
	wg.Wait()
}

// scratch is a reusable buffer of float32 and float64 values, so that the
// hot loops do not allocate.
type scratch struct {
	f   []float32
	f64 []float64
	i   []int32
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// getScratch returns a scratch with at least nf float32s, nd float64s and ni
// int32s. Their contents are garbage; callers clear what they accumulate into.
func getScratch(nf, nd, ni int) *scratch {
	s := scratchPool.Get().(*scratch)
	if cap(s.f) < nf {
		s.f = make([]float32, nf)
	}
	if cap(s.f64) < nd {
		s.f64 = make([]float64, nd)
	}
	if cap(s.i) < ni {
		s.i = make([]int32, ni)
	}
	s.f, s.f64, s.i = s.f[:nf], s.f64[:nd], s.i[:ni]
	return s
}

func putScratch(s *scratch) { scratchPool.Put(s) }
