package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// shape is one product: op(A) m×k times op(B) k×n.
type shape struct {
	m, n, k        int
	transA, transB bool
}

// modelShapes are the products moerl's model runs, with its transposes.
var modelShapes = []shape{
	{2016, 384, 128, false, false}, // forward projection
	{2016, 128, 128, false, false},
	{1008, 256, 128, false, false}, // expert up
	{1008, 128, 256, false, false}, // expert down
	{2016, 64, 128, false, false},  // LM head
	{128, 384, 2016, true, false},  // weight gradients
	{128, 256, 1008, true, false},
	{2016, 128, 384, false, true}, // input gradients
	{1008, 128, 256, false, true},
	{64, 384, 128, false, false}, // decode
}

// operands holds one test product's inputs, stored with optional padding
// past each row so strides exceed widths.
type operands struct {
	shape
	lda, ldb, ldc int
	a, b, c       []float32
}

func newOperands(s shape, pad int, rng *rand.Rand) *operands {
	o := &operands{shape: s}
	aRows, aCols := s.m, s.k
	if s.transA {
		aRows, aCols = s.k, s.m
	}
	bRows, bCols := s.k, s.n
	if s.transB {
		bRows, bCols = s.n, s.k
	}
	o.lda, o.ldb, o.ldc = aCols+pad, bCols+pad, s.n+pad
	o.a = randomMatrix(aRows, o.lda, rng)
	o.b = randomMatrix(bRows, o.ldb, rng)
	o.c = randomMatrix(s.m, o.ldc, rng)
	return o
}

func randomMatrix(rows, stride int, rng *rand.Rand) []float32 {
	s := make([]float32, rows*stride)
	for i := range s {
		s[i] = rng.Float32()*2 - 1
	}
	return s
}

// tolerance returns, per row of C, the error allowed against Ref: 1e-5 of
// the row's scale |alpha|·Σ_p |A(i,p)|·max|B| + |beta|·max|C|.
func (o *operands) tolerance(alpha, beta float32, c0 []float32) []float64 {
	var maxB, maxC float64
	for _, v := range o.b {
		maxB = max(maxB, math.Abs(float64(v)))
	}
	for _, v := range c0 {
		if !math.IsNaN(float64(v)) {
			maxC = max(maxC, math.Abs(float64(v)))
		}
	}
	tol := make([]float64, o.m)
	for i := range tol {
		var sa float64
		for p := 0; p < o.k; p++ {
			if o.transA {
				sa += math.Abs(float64(o.a[p*o.lda+i]))
			} else {
				sa += math.Abs(float64(o.a[i*o.lda+p]))
			}
		}
		tol[i] = 1e-5 * (math.Abs(float64(alpha))*sa*maxB + math.Abs(float64(beta))*maxC + 1e-30)
	}
	return tol
}

func (o *operands) sgemm(f func(transA, transB bool, m, n, k int, alpha float32,
	a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int),
	alpha, beta float32, c []float32) {
	f(o.transA, o.transB, o.m, o.n, o.k, alpha, o.a, o.lda, o.b, o.ldb, beta, c, o.ldc)
}

// refRows computes the expected C rows with Ref, one row at a time, and
// returns them in a copy of c0; rows not listed keep c0.
func (o *operands) refRows(alpha, beta float32, c0 []float32, rows []int) []float32 {
	want := slices.Clone(c0)
	for _, i := range rows {
		aRow := o.a[i:]
		if !o.transA {
			aRow = o.a[i*o.lda:]
		}
		Ref(o.transA, o.transB, 1, o.n, o.k, alpha, aRow, o.lda, o.b, o.ldb, beta, want[i*o.ldc:], o.ldc)
	}
	return want
}

// compare checks the listed rows of got against want within tol and that
// the padding after each row, which Sgemm must not touch, still equals c0.
func (o *operands) compare(t *testing.T, got, want, c0 []float32, tol []float64, rows []int) {
	t.Helper()
	bad := 0
	for _, i := range rows {
		for j := 0; j < o.ldc; j++ {
			x := i*o.ldc + j
			if j >= o.n {
				if math.Float32bits(got[x]) != math.Float32bits(c0[x]) {
					t.Errorf("padding C[%d][%d] changed from %v to %v", i, j, c0[x], got[x])
					bad++
				}
			} else if d := math.Abs(float64(got[x]) - float64(want[x])); !(d <= tol[i]) {
				t.Errorf("C[%d][%d] = %v, Ref %v (|diff| %.3g > %.3g)", i, j, got[x], want[x], d, tol[i])
				bad++
			}
			if bad >= 5 {
				t.FailNow()
			}
		}
	}
}

// checkedRows lists the rows of C a test compares: all of them for small
// products; for large ones every 7th row (so every row of a 14-row kernel
// tile is hit across tiles) and the last 20, which hold the edge tiles.
func checkedRows(s shape) []int {
	var rows []int
	for i := 0; i < s.m; i++ {
		if s.m*s.n*s.k <= 4e6 || i%7 == i/7%7 || i >= s.m-20 {
			rows = append(rows, i)
		}
	}
	return rows
}

// withPath runs f once for each kernel path the CPU supports.
func withPath(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	defer SetPath(Path())
	for _, name := range Paths() {
		if err := SetPath(name); err != nil {
			t.Fatal(err)
		}
		t.Run(name, f)
	}
}

func TestSgemmMatchesRef(t *testing.T) {
	type scaling struct{ alpha, beta float32 }
	scalings := []scaling{{1, 0}, {0.5, 1}, {1, -2}}
	type testCase struct {
		shape
		pad int
		scaling
	}
	var cases []testCase
	small := [][3]int{{1, 1, 1}, {7, 5, 3}, {33, 65, 17}, {1, 40, 9}, {29, 1, 300}, {15, 33, 1}, {45, 70, 520}}
	for _, d := range small {
		for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
			for _, sc := range scalings {
				for _, pad := range []int{0, 3} {
					cases = append(cases, testCase{shape{d[0], d[1], d[2], tr[0], tr[1]}, pad, sc})
				}
			}
		}
	}
	// B rows 4 KiB apart (ldb = 40+984 = 1024) take the packAliasedB path.
	cases = append(cases,
		testCase{shape{9, 40, 6, false, false}, 984, scalings[1]},
		testCase{shape{9, 40, 300, true, false}, 984, scalings[0]})
	// The model's shapes take one scaling each to keep the run short.
	for i, s := range modelShapes {
		cases = append(cases, testCase{s, i % 2 * 5, scalings[i%len(scalings)]})
	}

	rng := rand.New(rand.NewPCG(1, 2))
	type prepared struct {
		testCase
		o         *operands
		c0, want  []float32
		tolerance []float64
		rows      []int
	}
	var ready []prepared
	for _, tc := range cases {
		o := newOperands(tc.shape, tc.pad, rng)
		c0 := slices.Clone(o.c)
		if tc.beta == 0 {
			// beta = 0 must overwrite C even where it holds NaN.
			for i := 0; i < o.m; i++ {
				for j := 0; j < o.n; j++ {
					c0[i*o.ldc+j] = float32(math.NaN())
				}
			}
		}
		rows := checkedRows(tc.shape)
		want := o.refRows(tc.alpha, tc.beta, c0, rows)
		ready = append(ready, prepared{tc, o, c0, want, o.tolerance(tc.alpha, tc.beta, c0), rows})
	}

	withPath(t, func(t *testing.T) {
		for _, p := range ready {
			name := fmt.Sprintf("%dx%dx%d_tA%v_tB%v_pad%d_a%v_b%v",
				p.m, p.n, p.k, p.transA, p.transB, p.pad, p.alpha, p.beta)
			t.Run(name, func(t *testing.T) {
				got := slices.Clone(p.c0)
				p.o.sgemm(Sgemm, p.alpha, p.beta, got)
				p.o.compare(t, got, p.want, p.c0, p.tolerance, p.rows)
			})
		}
	})
}

func TestSgemmDeterministicAcrossGOMAXPROCS(t *testing.T) {
	shapes := []shape{
		{301, 203, 517, false, false}, // edges everywhere and three k blocks
		{301, 203, 517, true, true},
		{2016, 384, 128, false, false},
		{128, 384, 2016, true, false},
		{2016, 128, 384, false, true},
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	rng := rand.New(rand.NewPCG(3, 4))
	var ops []*operands
	for _, s := range shapes {
		ops = append(ops, newOperands(s, 1, rng))
	}
	withPath(t, func(t *testing.T) {
		for _, o := range ops {
			if Path() == "go" && o.m*o.n*o.k > 40e6 {
				continue // the portable kernel is slow; the small shapes cover it
			}
			var first []float32
			for _, procs := range []int{1, 2, 5} {
				runtime.GOMAXPROCS(procs)
				got := slices.Clone(o.c)
				o.sgemm(Sgemm, 0.75, 0.5, got)
				if first == nil {
					first = got
					continue
				}
				for x := range got {
					if math.Float32bits(got[x]) != math.Float32bits(first[x]) {
						t.Fatalf("%+v: C[%d] = %v with GOMAXPROCS %d, %v with 1", o.shape, x, got[x], procs, first[x])
					}
				}
			}
		}
	})
}

// TestFMAPathsAgree checks that the AVX2 and AVX-512 paths give the same
// bits: both sum each element with one FMA per k step in the same kc
// blocks, so a run reproduces on either kind of machine.
func TestFMAPathsAgree(t *testing.T) {
	paths := Paths()
	if !slices.Contains(paths, "avx2") || !slices.Contains(paths, "avx512") {
		t.Skip("needs both AVX2 and AVX-512")
	}
	defer SetPath(Path())
	rng := rand.New(rand.NewPCG(7, 8))
	for _, s := range []shape{{301, 203, 517, false, false}, {33, 65, 17, true, true}, {128, 384, 2016, true, false}} {
		o := newOperands(s, 2, rng)
		var results [][]float32
		for _, name := range []string{"avx2", "avx512"} {
			if err := SetPath(name); err != nil {
				t.Fatal(err)
			}
			got := slices.Clone(o.c)
			o.sgemm(Sgemm, 0.5, -1, got)
			results = append(results, got)
		}
		for x := range results[0] {
			if math.Float32bits(results[0][x]) != math.Float32bits(results[1][x]) {
				t.Fatalf("%+v: C[%d] = %v on avx2, %v on avx512", s, x, results[0][x], results[1][x])
			}
		}
	}
}

// TestTilingFollowsWorkers guards the determinism test: it only proves
// something if the goroutine count changes how C is split.
func TestTilingFollowsWorkers(t *testing.T) {
	for _, p := range available {
		tiles := func(workers int) (int, int) {
			j := &job{kern: p, m: 301, n: 203, k: 517, nPanels: (203 + p.nr - 1) / p.nr}
			j.chooseTiles(workers)
			return j.mcRows, j.ncPanels
		}
		m1, n1 := tiles(1)
		m5, n5 := tiles(5)
		if m1 == m5 && n1 == n5 {
			t.Errorf("%s: tiles are %d rows × %d panels with 1 worker and with 5", p.name, m1, n1)
		}
		if m5%p.mr != 0 {
			t.Errorf("%s: tile height %d is not a multiple of mr %d", p.name, m5, p.mr)
		}
	}
}

func TestSgemmZeroK(t *testing.T) {
	tests := []struct {
		beta float32
		want []float32
	}{
		{0, []float32{0, 0, 0, 0}},
		{2, []float32{2, 4, 6, 8}},
	}
	for _, tt := range tests {
		c := []float32{1, 2, 3, 4}
		Sgemm(false, false, 2, 2, 0, 1, nil, 1, nil, 2, tt.beta, c, 2)
		if !slices.Equal(c, tt.want) {
			t.Errorf("beta %v: C = %v, want %v", tt.beta, c, tt.want)
		}
	}
}

func TestCheckArgs(t *testing.T) {
	buf := make([]float32, 100)
	tests := []struct {
		name           string
		transA, transB bool
		m, n, k        int
		a              []float32
		lda            int
		b              []float32
		ldb            int
		c              []float32
		ldc            int
		want           string // substring of the error; "" for none
	}{
		{"ok", false, false, 3, 4, 5, buf, 5, buf, 4, buf, 4, ""},
		{"ok transposed", true, true, 3, 4, 5, buf, 3, buf, 5, buf, 4, ""},
		{"empty", false, false, 0, 0, 0, nil, 1, nil, 1, nil, 1, ""},
		{"negative", false, false, -1, 4, 5, buf, 5, buf, 4, buf, 4, "negative dimension"},
		{"lda small", false, false, 3, 4, 5, buf, 4, buf, 4, buf, 4, "stride of A is 4, want at least 5"},
		{"lda small transposed", true, false, 3, 4, 5, buf, 2, buf, 4, buf, 4, "stride of A is 2, want at least 3"},
		{"ldb small transposed", false, true, 3, 4, 5, buf, 5, buf, 4, buf, 4, "stride of B is 4, want at least 5"},
		{"ldc small", false, false, 3, 4, 5, buf, 5, buf, 4, buf, 3, "stride of C is 3"},
		{"a short", false, false, 3, 4, 5, buf[:14], 5, buf, 4, buf, 4, "A has 14 elements, want at least 15"},
		{"b short", false, false, 3, 4, 5, buf, 5, buf[:19], 4, buf, 4, "B has 19 elements, want at least 20"},
		{"c short", false, false, 3, 4, 5, buf, 5, buf, 4, buf[:11], 4, "C has 11 elements, want at least 12"},
	}
	for _, tt := range tests {
		err := checkArgs(tt.transA, tt.transB, tt.m, tt.n, tt.k, tt.a, tt.lda, tt.b, tt.ldb, tt.c, tt.ldc)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: error %v, want it to contain %q", tt.name, err, tt.want)
		}
	}
}

func TestSgemmPanicsOnShortC(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Sgemm with a short C did not panic")
		}
	}()
	a := make([]float32, 64*64)
	Sgemm(false, false, 64, 64, 64, 1, a, 64, a, 64, 0, make([]float32, 64*64-1), 64)
}

func TestSetPath(t *testing.T) {
	paths := Paths()
	if paths[len(paths)-1] != "go" {
		t.Errorf("Paths() = %v, want the go path last", paths)
	}
	if !slices.Contains(paths, Path()) {
		t.Errorf("Path() = %q, not in %v", Path(), paths)
	}
	if err := SetPath("sse9"); err == nil {
		t.Error("SetPath(sse9) succeeded")
	}
	if EnvErr() != nil {
		t.Logf("MOERL_GEMM ignored: %v", EnvErr())
	}
}
