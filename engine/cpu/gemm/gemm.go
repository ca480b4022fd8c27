// Package gemm is moerl's single-precision matrix product on the CPU.
//
// Sgemm runs register-tiled micro-kernels (AVX-512 14×32 or AVX2+FMA 6×16
// assembly on amd64, a 4×4 Go kernel elsewhere) over C split into tiles
// that goroutines share. Every element of C is summed over k in the same
// order however the tiles are split, so results are bitwise independent of
// GOMAXPROCS. The kernels read A in place and B in place or packed (packed
// when transposed), so all four transpose combinations run at full speed.
//
// The fastest path the CPU supports is chosen at start-up; the environment
// variable MOERL_GEMM=go|avx2|avx512 or SetPath forces one.
package gemm

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
)

// Sgemm computes C = alpha·op(A)·op(B) + beta·C for row-major matrices:
// op(A) is m×k, op(B) is k×n, C is m×n; lda, ldb, ldc are row strides.
// beta = 0 overwrites C. The result does not depend on GOMAXPROCS.
//
// Like BLAS, Sgemm panics when a dimension is negative, a stride is smaller
// than its matrix's width, or a slice is too short for its matrix: these are
// programming errors, and the assembly kernels must never write past C.
func Sgemm(transA, transB bool, m, n, k int, alpha float32,
	a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if err := checkArgs(transA, transB, m, n, k, a, lda, b, ldb, c, ldc); err != nil {
		panic(err)
	}
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		scaleC(m, n, beta, c, ldc)
		return
	}
	j := newJob(active.Load(), transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	j.run()
}

// Ref is the plain triple loop Sgemm must match; tests compare against it.
func Ref(transA, transB bool, m, n, k int, alpha float32,
	a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float32
			for p := 0; p < k; p++ {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += av * bv
			}
			if beta == 0 {
				c[i*ldc+j] = alpha * s
			} else {
				c[i*ldc+j] = alpha*s + beta*c[i*ldc+j]
			}
		}
	}
}

// checkArgs reports the first argument that would make Sgemm index outside
// a matrix.
func checkArgs(transA, transB bool, m, n, k int,
	a []float32, lda int, b []float32, ldb int, c []float32, ldc int) error {
	if m < 0 || n < 0 || k < 0 {
		return fmt.Errorf("gemm: negative dimension m=%d n=%d k=%d", m, n, k)
	}
	aRows, aCols := m, k
	if transA {
		aRows, aCols = k, m
	}
	bRows, bCols := k, n
	if transB {
		bRows, bCols = n, k
	}
	if err := checkMatrix("A", aRows, aCols, len(a), lda); err != nil {
		return err
	}
	if err := checkMatrix("B", bRows, bCols, len(b), ldb); err != nil {
		return err
	}
	return checkMatrix("C", m, n, len(c), ldc)
}

func checkMatrix(name string, rows, cols, length, stride int) error {
	if stride < max(1, cols) {
		return fmt.Errorf("gemm: stride of %s is %d, want at least %d (its %d×%d storage)", name, stride, max(1, cols), rows, cols)
	}
	if rows == 0 || cols == 0 {
		return nil
	}
	if need := (rows-1)*stride + cols; length < need {
		return fmt.Errorf("gemm: %s has %d elements, want at least %d (%d×%d, stride %d)", name, length, need, rows, cols, stride)
	}
	return nil
}

// scaleC handles k = 0, where op(A)·op(B) is the zero matrix.
func scaleC(m, n int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}

const (
	// workPerGoroutine is the least work, in multiply-adds (m·n·k), worth a
	// goroutine of its own: about 16 µs on one AVX-512 core. Waking an idle
	// thread took 35-100 µs on the development VM, so smaller products run
	// on the caller, and a helper that starts late finds no tiles left.
	workPerGoroutine = 1 << 21
	// tilesPerWorker is how many C tiles each goroutine should get when the
	// product is split, so that a helper that starts late, or a core busy
	// with other work, still leaves the tiles evenly shared.
	tilesPerWorker = 8
)

// job is one Sgemm call split into B-packing units and C tiles. Jobs are
// pooled; the last goroutine to release one puts it back.
type job struct {
	kern               *impl
	transA, transB     bool
	m, n, k            int
	alpha, beta        float32
	a, b, c            []float32
	lda, ldb, ldc      int
	kc, kBlocks        int // k is summed in kBlocks blocks of kc (the last may be shorter)
	nPanels            int // nr-wide column panels of C
	packAll            bool
	packUnits          int // B panels to pack before the tiles run
	bp                 *[]float32
	mcRows, ncPanels   int // tile size: rows and column panels
	rowBlocks, colBlks int
	tiles              int

	nextPack, nextTile atomic.Int64
	packed             sync.WaitGroup
	tilesDone          atomic.Int64
	finished           chan struct{} // receives once when every tile is done
	refs               atomic.Int32  // goroutines still holding the job
}

var jobPool = sync.Pool{New: func() any { return &job{finished: make(chan struct{}, 1)} }}

func newJob(p *impl, transA, transB bool, m, n, k int, alpha float32,
	a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) *job {
	j := jobPool.Get().(*job)
	j.kern, j.transA, j.transB, j.m, j.n, j.k = p, transA, transB, m, n, k
	j.alpha, j.beta, j.a, j.b, j.c, j.lda, j.ldb, j.ldc = alpha, beta, a, b, c, lda, ldb, ldc
	// The kc blocking depends on k alone: it fixes the summation order.
	j.kBlocks = (k + p.kcMax - 1) / p.kcMax
	j.kc = (k + j.kBlocks - 1) / j.kBlocks
	j.nPanels = (n + p.nr - 1) / p.nr

	// B is read in place when it is not transposed, except for a partial
	// last panel, which the kernels would overrun, and for kernels that
	// lose to L1 set conflicts when B's rows are a multiple of 4 KiB apart.
	j.packAll = transB || p.packAliasedB && ldb%1024 == 0
	switch {
	case j.packAll:
		j.packUnits = j.kBlocks * j.nPanels
	case n%p.nr != 0:
		j.packUnits = j.kBlocks
	default:
		j.packUnits = 0
	}
	if j.packUnits > 0 {
		j.bp = getBuffer(j.packUnits * j.kc * p.nr)
	}
	j.packed.Add(j.packUnits)
	j.nextPack.Store(0)
	j.nextTile.Store(0)
	j.tilesDone.Store(0)
	return j
}

// run computes the job on the calling goroutine and helpers. A helper that
// starts after every tile is taken finds nothing to do, so the caller waits
// only for tiles in progress, never for a helper to be scheduled.
func (j *job) run() {
	workers := 1
	if work := int64(j.m) * int64(j.n) * int64(j.k); work >= 2*workPerGoroutine {
		workers = int(min(int64(runtime.GOMAXPROCS(0)), work/workPerGoroutine))
	}
	j.chooseTiles(workers)
	workers = min(workers, j.tiles)
	j.refs.Store(int32(workers))
	for w := 1; w < workers; w++ {
		go j.help()
	}
	j.work()
	<-j.finished
	j.release()
}

func (j *job) help() {
	j.work()
	j.release()
}

// release drops a goroutine's hold on the job; the last one recycles it.
func (j *job) release() {
	if j.refs.Add(-1) != 0 {
		return
	}
	if j.bp != nil {
		bufPool.Put(j.bp)
		j.bp = nil
	}
	j.a, j.b, j.c = nil, nil, nil
	jobPool.Put(j)
}

// chooseTiles splits C into tiles of at most mcMax rows, halving the larger
// side until every worker has several tiles. Tiles align with the kernel's
// mr×nr grid, so the split never changes how an element is computed.
func (j *job) chooseTiles(workers int) {
	p := j.kern
	mPanels := (j.m + p.mr - 1) / p.mr
	mcP := min(mPanels, max(1, p.mcMax/p.mr))
	ncP := j.nPanels
	blocks := func() (int, int) { return (mPanels + mcP - 1) / mcP, (j.nPanels + ncP - 1) / ncP }
	if workers > 1 {
		for {
			rb, cb := blocks()
			if rb*cb >= tilesPerWorker*workers {
				break
			}
			if ncP > 1 && (ncP*p.nr >= mcP*p.mr || mcP == 1) {
				ncP = (ncP + 1) / 2
			} else if mcP > 1 {
				mcP = (mcP + 1) / 2
			} else {
				break
			}
		}
	}
	j.mcRows = mcP * p.mr
	j.ncPanels = ncP
	j.rowBlocks, j.colBlks = blocks()
	j.tiles = j.rowBlocks * j.colBlks
}

func (j *job) work() {
	for {
		u := int(j.nextPack.Add(1)) - 1
		if u >= j.packUnits {
			break
		}
		j.packUnit(u)
		j.packed.Done()
	}
	j.packed.Wait()

	var ws *workspace
	for {
		t := int(j.nextTile.Add(1)) - 1
		if t >= j.tiles {
			break
		}
		if ws == nil {
			ws = wsPool.Get().(*workspace)
		}
		j.tile(t, ws)
		if j.tilesDone.Add(1) == int64(j.tiles) {
			j.finished <- struct{}{}
		}
	}
	if ws != nil {
		wsPool.Put(ws)
	}
}

// packUnit packs one kc×nr panel of B: unit u is panel u%panels of k block
// u/panels, where panels is every panel or, when B is read in place, only
// the partial last one.
func (j *job) packUnit(u int) {
	nr := j.kern.nr
	panels := 1
	jp := j.nPanels - 1
	if j.packAll {
		panels = j.nPanels
		jp = u % panels
	}
	pb := u / panels
	p0 := pb * j.kc
	kcb := min(j.kc, j.k-p0)
	col := jp * nr
	dst := (*j.bp)[j.packedOffset(pb, jp):]
	packB(dst[:kcb*nr], j.b, j.ldb, j.transB, p0, kcb, col, min(nr, j.n-col), nr)
}

// packedOffset is where panel jp of k block pb starts in the packed buffer.
func (j *job) packedOffset(pb, jp int) int {
	nr := j.kern.nr
	if !j.packAll {
		return pb * j.kc * nr
	}
	kcb := min(j.kc, j.k-pb*j.kc)
	return pb*j.kc*j.nPanels*nr + jp*kcb*nr
}

// tile computes one tile of C over every k block in order.
func (j *job) tile(t int, ws *workspace) {
	p := j.kern
	mr, nr := p.mr, p.nr
	rb, cb := t/j.colBlks, t%j.colBlks
	i0 := rb * j.mcRows
	i1 := min(j.m, i0+j.mcRows)
	jp0 := cb * j.ncPanels
	jp1 := min(j.nPanels, jp0+j.ncPanels)
	for pb := 0; pb < j.kBlocks; pb++ {
		p0 := pb * j.kc
		kcb := min(j.kc, j.k-p0)
		beta := j.beta
		if pb > 0 {
			beta = 1
		}
		for jp := jp0; jp < jp1; jp++ {
			col := jp * nr
			cols := min(nr, j.n-col)
			var bs []float32
			rsB := nr
			if j.packAll || cols < nr {
				bs = (*j.bp)[j.packedOffset(pb, jp):]
			} else {
				bs = j.b[p0*j.ldb+col:]
				rsB = j.ldb
			}
			for i := i0; i < i1; i += mr {
				rows := min(mr, i1-i)
				kernel := p.kernels[rows-1]
				var as []float32
				rsA, csA := j.lda, 1
				if j.transA {
					as = j.a[p0*j.lda+i:]
					rsA, csA = 1, j.lda
				} else {
					as = j.a[i*j.lda+p0:]
				}
				if cols == nr {
					kernel(kcb, as, rsA, csA, bs, rsB, j.c[i*j.ldc+col:], j.ldc, j.alpha, beta)
					continue
				}
				// A partial panel goes through a scratch tile; the update
				// rounds exactly as the kernels' own epilogue does.
				kernel(kcb, as, rsA, csA, bs, rsB, ws.ctile, nr, 1, 0)
				for r := 0; r < rows; r++ {
					crow := j.c[(i+r)*j.ldc+col : (i+r)*j.ldc+col+cols]
					trow := ws.ctile[r*nr : r*nr+cols]
					if beta == 0 {
						for x, v := range trow {
							crow[x] = j.alpha * v
						}
					} else {
						for x, v := range trow {
							crow[x] = float32(j.alpha*v) + float32(beta*crow[x])
						}
					}
				}
			}
		}
	}
}

// workspace is a goroutine's scratch space, reused across calls.
type workspace struct {
	ctile []float32
}

var wsPool = sync.Pool{New: func() any {
	return &workspace{ctile: make([]float32, maxTile)}
}}

// bufPool holds packed-B buffers between calls.
var bufPool sync.Pool

func getBuffer(n int) *[]float32 {
	if v, ok := bufPool.Get().(*[]float32); ok {
		if cap(*v) >= n {
			*v = (*v)[:n]
			return v
		}
	}
	s := make([]float32, n)
	return &s
}
