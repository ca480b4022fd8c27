package eval

import "sync"

// Exact maj@k by dynamic programming.
//
// A uniform k-subset of the n samples draws X_a samples of class a and Y_i
// of each other class i (multivariate hypergeometric). Class a's share of
// the subset's score is E[1{a is among the most voted} / (number tied)],
// and maj@k is the sum of the shares of the correct classes. Conditioning
// on X_a = x, the other k − x draws are a uniform subset of the n − c_a
// other samples, and the share is
//
//	Σ_x P(X_a = x) · E[1{every Y_i ≤ x} / (1 + #{i: Y_i = x}) | X_a = x].
//
// Only classes with c_i ≥ x can reach x; drawing them one after another
// (each Y_i is hypergeometric in the draws and samples still left) gives a
// dynamic program whose state is (draws used so far, ties so far). The rest of
// the draws fall on the classes that cannot reach x and the non-voting
// samples, which constrain nothing. Classes are taken largest first, so
// that the mass of states that already lost vanishes early, and so that
// the classes that can reach x are a prefix of the same order for every x:
// the distribution of Y_j given the draws left is then the same for every
// x, and majCase.row computes it once (per k: keeping them across k costs
// more memory traffic than recomputing).
//
// Everything is a probability in [0, 1]: each hypergeometric distribution
// is built by its ratio recurrence from the mode and normalized by its
// sum, so no binomial coefficient (C(1024, 512) ≈ 10^306) or log-gamma
// difference (whose rounding would cost ~1e-12 at n = 1024) appears.
// Probabilities whose contribution to the result is below majEps are
// dropped; a bound on the error that costs is accounted for, and over a
// whole problem it stays many orders of magnitude below 1e-12.

// majEps is the contribution below which a state, a tail of a
// distribution or a class that can no longer win is dropped.
const majEps = 1e-20

// hrow is the distribution of a class's draws Y given the draws left:
// P(Y = lo + i) = p[i], cdf[i] = P(Y ≤ lo + i), and dropped bounds the
// probability cut from its tails.
type hrow struct {
	lo      int
	p, cdf  []float64
	dropped float64
}

// arena hands out float64 slices from large blocks, so that the many small
// distributions of a computation cost few allocations; reset hands the
// blocks out again once what was taken is no longer used.
type arena struct {
	blocks [][]float64
	next   int       // the next block to use
	free   []float64 // the unused part of the current block
}

const arenaBlock = 1 << 14

func (a *arena) take(n int) []float64 {
	if n > arenaBlock {
		return make([]float64, n)
	}
	if len(a.free) < n {
		if a.next == len(a.blocks) {
			a.blocks = append(a.blocks, make([]float64, arenaBlock))
		}
		a.free = a.blocks[a.next]
		a.next++
	}
	s := a.free[:n:n]
	a.free = a.free[n:]
	return s
}

func (a *arena) reset() { a.next, a.free = 0, nil }

// hypInto returns the distribution of Y ~ Hypergeometric(N samples, K
// marked, r drawn), dropping both tails where the probability is below thr
// (thr ≤ 1) times the mode's; buf is scratch space, mem supplies the
// result's memory.
func hypInto(N, K, r int, thr float64, buf []float64, mem *arena) (hrow, []float64) {
	ylo, yhi := max(0, r-(N-K)), min(K, r)
	if ylo == yhi {
		return hrow{lo: ylo, p: one, cdf: one}, buf
	}
	mode := int((int64(r) + 1) * (int64(K) + 1) / (int64(N) + 2))
	mode = min(max(mode, ylo), yhi)
	// Unnormalized values with the mode at 1; the sum is ≥ 1, so each
	// probability is at most its value.
	buf = buf[:0]
	v := 1.0
	for y := mode; y > ylo; y-- {
		// P(y−1)/P(y) = y (N−K−r+y) / ((K−y+1)(r−y+1))
		v *= float64(y) * float64(N-K-r+y) / (float64(K-y+1) * float64(r-y+1))
		if v < thr {
			break
		}
		buf = append(buf, v)
	}
	down := len(buf)
	v = 1
	up := 0
	for y := mode; y < yhi; y++ {
		// P(y+1)/P(y) = (K−y)(r−y) / ((y+1)(N−K−r+y+1))
		v *= float64(K-y) * float64(r-y) / (float64(y+1) * float64(N-K-r+y+1))
		if v < thr {
			break
		}
		buf = append(buf, v)
		up++
	}
	width := down + 1 + up
	h := hrow{lo: mode - down, p: mem.take(width), cdf: mem.take(width)}
	for i := range down {
		h.p[down-1-i] = buf[i]
	}
	h.p[down] = 1
	copy(h.p[down+1:], buf[down:])
	sum := 0.0
	for _, x := range h.p {
		sum += x
	}
	// Past the cut the distribution (unimodal) only falls, so each dropped
	// value is below thr; normalizing by the kept sum moves the kept
	// probabilities up by at most as much as was dropped.
	if cut := (h.lo - ylo) + (yhi - (h.lo + width - 1)); cut > 0 {
		h.dropped = thr * float64(cut) / sum
	}
	inv, c := 1/sum, 0.0
	for i := range h.p {
		h.p[i] *= inv
		c += h.p[i]
		h.cdf[i] = c
	}
	return h, buf
}

// one is the distribution of a sure draw count; it is never written.
var one = []float64{1}

// at returns P(Y ≤ y) and P(Y = y).
func (h *hrow) at(y int) (le, eq float64) {
	i := y - h.lo
	switch {
	case i < 0:
		return 0, 0
	case i >= len(h.p):
		return 1, 0
	}
	return h.cdf[i], h.p[i]
}

// majCase computes one class's share of maj@k for any k: the class a has
// ca of the n samples, the other voting classes the counts others.
type majCase struct {
	n, ca  int
	others []int // descending
	left   []int // left[j]: samples not in a or in others[:j]
	s      *majScratch
}

// majScratch is the memory of a computation, reused from one problem to
// the next through scratchPool.
type majScratch struct {
	rows  [][]hrow // rows[j][r], see majCase.row
	built [][]bool
	mem   arena
	buf   []float64
	// cur and next hold the states [ties][draws left]; they are all zero
	// between uses (conditional clears what it wrote).
	cur, next [][]float64
}

var scratchPool = sync.Pool{New: func() any { return new(majScratch) }}

func newMajCase(others []int, ca, n int, s *majScratch) *majCase {
	m := &majCase{n: n, ca: ca, others: others, left: make([]int, len(others)+1), s: s}
	m.left[0] = n - ca
	for j, c := range others {
		m.left[j+1] = m.left[j] - c
	}
	for len(s.rows) < len(others) {
		s.rows = append(s.rows, nil)
		s.built = append(s.built, nil)
	}
	return m
}

// row is the distribution of Y_j, the draws of class others[j], when r
// draws are left for the samples not in a or in others[:j].
func (m *majCase) row(j, r int) *hrow {
	s := m.s
	if r >= len(s.rows[j]) {
		size := max(r+1, 2*len(s.rows[j]))
		s.rows[j] = append(s.rows[j], make([]hrow, size-len(s.rows[j]))...)
		s.built[j] = append(s.built[j], make([]bool, size-len(s.built[j]))...)
	}
	if !s.built[j][r] {
		s.rows[j][r], s.buf = hypInto(m.left[j], m.others[j], r, majEps, s.buf, &s.mem)
		s.built[j][r] = true
	}
	return &s.rows[j][r]
}

// share returns a's share of maj@k and a bound on the error from
// probability dropped as negligible.
func (m *majCase) share(k int) (float64, float64) {
	if m.ca == 0 {
		return 0, 0
	}
	// The rows of one k would serve every k, but keeping them all costs
	// more memory traffic than recomputing them: start afresh.
	m.s.mem.reset()
	for j := range m.others {
		clear(m.s.built[j])
	}
	var px hrow
	px, m.s.buf = hypInto(m.n, m.ca, k, majEps, m.s.buf, &m.s.mem)
	total, dropped := 0.0, px.dropped
	for i, p := range px.p {
		x := px.lo + i
		if x == 0 {
			continue // a has no vote in this subset
		}
		L := 0
		for L < len(m.others) && m.others[L] >= x {
			L++
		}
		if L == 0 {
			total += p
			continue
		}
		q, d := m.conditional(L, k-x, x, p)
		total += p * q
		dropped += d
	}
	return total, dropped
}

func grid(g [][]float64, rows, cols int) [][]float64 {
	for len(g) < rows {
		g = append(g, nil)
	}
	for i := range rows {
		if len(g[i]) < cols {
			g[i] = make([]float64, cols)
		}
	}
	return g
}

// conditional is E[1{Y_j ≤ x for j < L} / (1 + #{j < L: Y_j = x})] when d
// draws fall on the samples not in a, of which the classes others[:L] can
// reach x; px is the probability of the condition (X_a = x), which scales
// what may be dropped. It returns the expectation and a bound on the error,
// already scaled by px.
func (m *majCase) conditional(L, d, x int, px float64) (float64, float64) {
	// States are indexed by the draws used so far, u = d − r, so that the
	// inner loop runs forward.
	m.s.cur = grid(m.s.cur, L+1, d+1)
	m.s.next = grid(m.s.next, L+1, d+1)
	cur, next := m.s.cur, m.s.next
	cur[0][0] = 1
	ulo, uhi, tmax := 0, 0, 0
	dropped := 0.0
	// finish sums the states, each weighted by its share of a tie, and
	// clears them.
	finish := func() float64 {
		q := 0.0
		for t := 0; t <= tmax; t++ {
			s := 0.0
			for _, w := range cur[t][ulo : uhi+1] {
				s += w
			}
			clear(cur[t][ulo : uhi+1])
			q += s / float64(1+t)
		}
		return q
	}
	for j := range L {
		// Stop when no class left can reach x but with negligible
		// probability. Marginally each Y_j is hypergeometric in r draws
		// from the samples left, most likely to reach x at the most draws
		// left, r = d − ulo, and the later classes are no larger, so
		// P(any of them reaches x) ≤ (L − j) · P(Y_j ≥ x | r = d − ulo).
		h := m.row(j, d-ulo)
		le, _ := h.at(x - 1)
		if tail := 1 - le + h.dropped; px*float64(L-j)*tail < majEps {
			q := finish()
			return q, dropped + px*float64(L-j)*tail
		}
		if j == L-1 {
			// The last class needs no new states: its distribution's CDF
			// gives the chance that it stays below x or ties.
			q := 0.0
			for u := ulo; u <= uhi; u++ {
				h := m.row(j, d-u)
				below, _ := h.at(x - 1)
				_, tie := h.at(x)
				for t := 0; t <= tmax; t++ {
					if w := cur[t][u]; w != 0 {
						q += w * (below/float64(1+t) + tie/float64(2+t))
						dropped += px * w * h.dropped
						cur[t][u] = 0
					}
				}
			}
			return q, dropped
		}
		newLo, newHi, newT := d+1, -1, 0
		for u := ulo; u <= uhi; u++ {
			var h *hrow
			for t := 0; t <= tmax; t++ {
				w := cur[t][u]
				if w == 0 {
					continue
				}
				cur[t][u] = 0
				if px*w < majEps {
					dropped += px * w
					continue
				}
				if h == nil {
					h = m.row(j, d-u)
				}
				dropped += px * w * h.dropped
				// Draws y < x keep t; y = x is one more tie; y > x loses.
				hi := min(h.lo+len(h.p)-1, x-1)
				if h.lo <= hi {
					src := h.p[:hi-h.lo+1]
					dst := next[t][u+h.lo : u+hi+1]
					dst = dst[:len(src)]
					for i, p := range src {
						dst[i] += w * p
					}
					newLo, newHi = min(newLo, u+h.lo), max(newHi, u+hi)
					newT = max(newT, t)
				}
				if _, tie := h.at(x); tie != 0 {
					next[t+1][u+x] += w * tie
					newLo, newHi = min(newLo, u+x), max(newHi, u+x)
					newT = max(newT, t+1)
				}
			}
		}
		cur, next = next, cur
		if newHi < 0 {
			return 0, dropped
		}
		ulo, uhi, tmax = newLo, newHi, newT
	}
	return finish(), dropped
}
