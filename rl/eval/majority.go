package eval

import (
	"math"
	"sync"
)

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
// more memory traffic than recomputing). The classes with exactly x samples
// come last; they can only tie, and are exchangeable, so when there are
// several (a weak model's hundreds of answers given once or twice) they are
// taken together in closed form (tieGroup) rather than one by one.
//
// Everything is a probability in [0, 1]: each hypergeometric distribution
// is built by its ratio recurrence from the mode and normalized by its
// sum, so no binomial coefficient (C(1024, 512) ≈ 10^306) or log-gamma
// difference (whose rounding would cost ~1e-12 at n = 1024) appears.
// Probabilities whose contribution to the result is below majEps are
// dropped; a bound on the error that costs is accounted for, and over a
// whole problem it stays many orders of magnitude below 1e-12.

// groupTies turns tieGroup on; tests turn it off to check it against the
// class-by-class program.
var groupTies = true

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
	// cur and next hold the states [ties][draws used]; they are all zero
	// between uses (conditional clears what it wrote).
	cur, next [][]float64
	span      [][2]int
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

// grid makes g at least rows × cols and returns it; new rows are zero.
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
	// States are indexed [ties t][draws used so far u], u = d − r, so that
	// the inner loop runs forward; span[t] is the range of u in use for t
	// (lo > hi: none), since with many small classes u and t move together
	// and the used states are a thin band.
	s := m.s
	s.cur = grid(s.cur, L+1, d+1)
	s.next = grid(s.next, L+1, d+1)
	if cap(s.span) < 2*(L+1) {
		s.span = make([][2]int, 2*(L+1))
	}
	cur, next := s.cur, s.next
	span, nspan := s.span[:L+1], s.span[L+1:2*(L+1)]
	cur[0][0] = 1
	span[0] = [2]int{0, 0}
	tmax := 0
	dropped := 0.0
	// finish sums the states, each weighted by its share of a tie, and
	// clears them.
	finish := func() float64 {
		q := 0.0
		for t := 0; t <= tmax; t++ {
			lo, hi := span[t][0], span[t][1]
			if lo > hi {
				continue
			}
			sum := 0.0
			for _, w := range cur[t][lo : hi+1] {
				sum += w
			}
			clear(cur[t][lo : hi+1])
			q += sum / float64(1+t)
		}
		return q
	}
	// The classes with exactly x samples come last; they can tie with a but
	// not outvote it, and being exchangeable, two or more of them are
	// handled together at the end (tieGroup).
	seq := L
	for seq > 0 && m.others[seq-1] == x {
		seq--
	}
	if L-seq < 2 || !groupTies {
		seq = L
	}
	for j := range seq {
		ulo := d + 1
		for t := 0; t <= tmax; t++ {
			ulo = min(ulo, span[t][0])
		}
		// Stop when no class left can reach x but with negligible
		// probability. Marginally each Y_j is hypergeometric in r draws
		// from the samples left, most likely to reach x at the most draws
		// left, r = d − ulo, and the later classes are no larger, so
		// P(any of them reaches x) ≤ (L − j) · P(Y_j ≥ x | r = d − ulo).
		h := m.row(j, d-ulo)
		le, _ := h.at(x - 1)
		if tail := 1 - le + h.dropped; px*float64(L-j)*tail < majEps {
			return finish(), dropped + px*float64(L-j)*tail
		}
		if j == L-1 {
			// The last class needs no new states: its distribution's CDF
			// gives the chance that it stays below x or ties.
			q := 0.0
			for t := 0; t <= tmax; t++ {
				for u := span[t][0]; u <= span[t][1]; u++ {
					w := cur[t][u]
					if w == 0 {
						continue
					}
					h := m.row(j, d-u)
					below, _ := h.at(x - 1)
					_, tie := h.at(x)
					q += w * (below/float64(1+t) + tie/float64(2+t))
					dropped += px * w * h.dropped
					cur[t][u] = 0
				}
			}
			return q, dropped
		}
		for t := 0; t <= tmax+1; t++ {
			nspan[t] = [2]int{d + 1, -1}
		}
		newT, mass := -1, 0.0
		for t := 0; t <= tmax; t++ {
			for u := span[t][0]; u <= span[t][1]; u++ {
				w := cur[t][u]
				if w == 0 {
					continue
				}
				cur[t][u] = 0
				if px*w < majEps {
					dropped += px * w
					continue
				}
				h := m.row(j, d-u)
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
					mass += w * (h.cdf[hi-h.lo])
					sp := &nspan[t]
					sp[0], sp[1] = min(sp[0], u+h.lo), max(sp[1], u+hi)
					newT = max(newT, t)
				}
				if _, tie := h.at(x); tie != 0 {
					next[t+1][u+x] += w * tie
					mass += w * tie
					sp := &nspan[t+1]
					sp[0], sp[1] = min(sp[0], u+x), max(sp[1], u+x)
					newT = max(newT, t+1)
				}
			}
		}
		cur, next = next, cur
		span, nspan = nspan, span
		tmax = newT
		if newT < 0 {
			return 0, dropped
		}
		// Stop when what is left cannot matter: every state's share is at
		// most its mass.
		if px*mass < majEps {
			finish()
			return 0, dropped + px*mass
		}
	}
	if seq < L {
		q, dr := m.tieGroup(seq, L-seq, x, d, px, cur, span, tmax)
		return q, dropped + dr
	}
	return finish(), dropped
}

// tieGroup ends conditional when the last g ≥ 2 classes that can reach x,
// from others[j0] on, all have exactly x samples. Only S, the number of
// them drawn whole, matters then: for each state (ties t, draws used u)
// the expectation left is E[1/(1 + t + S)] given the d − u draws left.
// With Z the group's share of those draws (hypergeometric),
// P(S = s | r) = Σ_z P(Z = z | r) P(S = s | Z = z), and P(S = s | Z = z)
// does not depend on r (groupTable). It returns the sum over the states,
// which it clears, and a bound on the probability dropped, scaled by px.
func (m *majCase) tieGroup(j0, g, x, d int, px float64, cur [][]float64, span [][2]int, tmax int) (float64, float64) {
	pool, gx := m.left[j0], g*x
	ulo, uhi := d+1, -1
	for t := 0; t <= tmax; t++ {
		if span[t][0] <= span[t][1] {
			ulo, uhi = min(ulo, span[t][0]), max(uhi, span[t][1])
		}
	}
	if uhi < 0 {
		return 0, 0
	}
	s := m.s
	rows := make([]hrow, uhi-ulo+1)
	zlo, zhi := gx+1, -1
	for u := ulo; u <= uhi; u++ {
		used := false
		for t := 0; t <= tmax && !used; t++ {
			used = span[t][0] <= u && u <= span[t][1] && cur[t][u] != 0
		}
		if !used {
			continue
		}
		rows[u-ulo], s.buf = hypInto(pool, gx, d-u, majEps, s.buf, &s.mem)
		h := &rows[u-ulo]
		zlo, zhi = min(zlo, h.lo), max(zhi, h.lo+len(h.p)-1)
	}
	table := groupTable(g, x, zlo, zhi)
	ps := make([]float64, g+1)
	q, dropped := 0.0, 0.0
	for u := ulo; u <= uhi; u++ {
		h := &rows[u-ulo]
		if h.p == nil {
			continue
		}
		clear(ps)
		cut := h.dropped
		for i, pz := range h.p {
			row := &table[h.lo+i-zlo]
			dst := ps[row.lo : row.lo+len(row.p)]
			for k, v := range row.p {
				dst[k] += pz * v
			}
			cut += pz * row.cut
		}
		for t := 0; t <= tmax; t++ {
			if u < span[t][0] || u > span[t][1] {
				continue
			}
			w := cur[t][u]
			if w == 0 {
				continue
			}
			e := 0.0
			for k, v := range ps {
				if v != 0 {
					e += v / float64(1+t+k)
				}
			}
			q += w * e
			dropped += px * w * cut
			cur[t][u] = 0
		}
	}
	return q, dropped
}

// srow is a distribution over s from lo, without tails of total cut.
type srow struct {
	lo  int
	p   []float64
	cut float64
}

// groupTable returns P(S = s | Z = z) for z in [zlo, zhi], indexed z − zlo:
// S is the number of g classes of x samples each that a uniform z-subset
// of their g·x samples contains whole.
//
// Were each sample kept independently with probability p, the classes'
// counts would be independent Binomial(x, p), so P(S = s, Z = z) =
// Binomial(g, p^x)(s) · f_{g−s}(z − s·x), with f_m the distribution of the
// sum of m counts each conditioned to be below x; and given Z = z the kept
// samples are a uniform z-subset, whatever p. So P(S = s | Z = z) is that
// product normalized over s. One p, at the middle of [zlo, zhi], serves the
// whole range (only the precision depends on it); a z whose normalizer
// does not match P(Z = z) = Binomial(g·x, p)(z) to 1e-9, its terms having
// fallen in the tails, is redone with p = z/(g·x).
func groupTable(g, x, zlo, zhi int) []srow {
	gx := g * x
	tilt := func(z float64) float64 {
		return min(max(z/float64(gx), 0.25/float64(gx)), 1-0.25/float64(gx))
	}
	table := make([]srow, zhi-zlo+1)
	bad := groupRows(g, x, tilt(float64(zlo+zhi)/2), zlo, zhi, table)
	for _, z := range bad {
		one := make([]srow, 1)
		groupRows(g, x, tilt(float64(z)), z, z, one)
		table[z-zlo] = one[0]
	}
	return table
}

// groupRows fills table[z−zlo] for z in [zlo, zhi] with P(S = s | Z = z)
// from the tilt p and returns the z whose normalizer failed the check.
func groupRows(g, x int, p float64, zlo, zhi int, table []srow) (bad []int) {
	gx := g * x
	// A class's count: Binomial(x, p), split into "below x" and "= x".
	cLo, count := binomRow(x, p)
	h := make([]float64, x) // the count conditioned to be below x
	pi := 0.0
	for i, v := range count {
		if y := cLo + i; y < x {
			h[y] = v
		} else {
			pi = v
		}
	}
	if pi < 1 {
		for y := range h {
			h[y] /= 1 - pi
		}
	} else {
		clear(h)
	}
	sLo, sp := binomRow(g, pi)
	sHi := sLo + len(sp) - 1
	// f[m] is the distribution of the sum of m conditioned counts, from
	// fLo[m].
	f := make([][]float64, g+1)
	fLo := make([]int, g+1)
	f[0] = []float64{1}
	for mm := 1; mm <= g; mm++ {
		f[mm], fLo[mm] = convolve(f[mm-1], fLo[mm-1], h)
	}
	bLo, b := binomRow(gx, p)
	for z := zlo; z <= zhi; z++ {
		row := make([]float64, sHi-sLo+1)
		sum := 0.0
		for s := sLo; s <= sHi; s++ {
			mm, w := g-s, z-s*x
			if i := w - fLo[mm]; i >= 0 && i < len(f[mm]) {
				row[s-sLo] = sp[s-sLo] * f[mm][i]
				sum += row[s-sLo]
			}
		}
		bz := 0.0
		if i := z - bLo; i >= 0 && i < len(b) {
			bz = b[i]
		}
		if bz == 0 || math.Abs(sum-bz) > 1e-9*bz {
			bad = append(bad, z)
		}
		// Normalize, and cut the tails that cannot matter (below majEps of
		// the whole), keeping what they held as a bound.
		lo, hi, cut := 0, len(row), 0.0
		if sum > 0 {
			for k := range row {
				row[k] /= sum
			}
			for lo < hi && row[lo] < majEps {
				cut += row[lo]
				lo++
			}
			for hi > lo && row[hi-1] < majEps {
				cut += row[hi-1]
				hi--
			}
		}
		table[z-zlo] = srow{lo: sLo + lo, p: row[lo:hi], cut: cut}
	}
	return bad
}

// tableEps is the relative size below which groupTable's distributions
// are cut: far below majEps, since they are divided by one another.
const tableEps = 1e-40

// binomRow returns Binomial(n, p) from lo, normalized, without the tails
// below tableEps of the mode.
func binomRow(n int, p float64) (lo int, probs []float64) {
	switch {
	case p <= 0:
		return 0, []float64{1}
	case p >= 1:
		return n, []float64{1}
	}
	mode := min(int(float64(n+1)*p), n)
	odds := p / (1 - p)
	var down, up []float64
	v := 1.0
	for y := mode; y > 0; y-- {
		v *= float64(y) / (float64(n-y+1) * odds) // P(y−1)/P(y)
		if v < tableEps {
			break
		}
		down = append(down, v)
	}
	v = 1
	for y := mode; y < n; y++ {
		v *= float64(n-y) / float64(y+1) * odds // P(y+1)/P(y)
		if v < tableEps {
			break
		}
		up = append(up, v)
	}
	probs = make([]float64, 0, len(down)+1+len(up))
	for i := len(down) - 1; i >= 0; i-- {
		probs = append(probs, down[i])
	}
	probs = append(probs, 1)
	probs = append(probs, up...)
	sum := 0.0
	for _, x := range probs {
		sum += x
	}
	for i := range probs {
		probs[i] /= sum
	}
	return mode - len(down), probs
}

// convolve returns the distribution of the sum of a variable distributed
// as f (from flo) and one distributed as h (from 0), without the tails
// below tableEps of its largest value.
func convolve(f []float64, flo int, h []float64) ([]float64, int) {
	if len(f) == 0 || len(h) == 0 {
		return nil, flo
	}
	out := make([]float64, len(f)+len(h)-1)
	for i, a := range f {
		if a == 0 {
			continue
		}
		for j, b := range h {
			out[i+j] += a * b
		}
	}
	top := 0.0
	for _, v := range out {
		top = max(top, v)
	}
	lo, hi := 0, len(out)
	for lo < hi && out[lo] < tableEps*top {
		lo++
	}
	for hi > lo && out[hi-1] < tableEps*top {
		hi--
	}
	return out[lo:hi], flo + lo
}
