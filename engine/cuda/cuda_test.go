package cuda

// GPU tests: every op of the Backend on fresh random inputs (fixed seeds),
// against the CPU backend, with output buffers poisoned with NaN before the
// run (gradients that accumulate: poisoned, then filled with known values).
// ‖gpu − cpu‖/‖cpu‖ must stay under each op's bound and no NaN may appear.
// Each op also runs twice on the GPU and must give the same bits. They skip
// where CUDA is unavailable, with the reason.

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/engine/cpu"
)

var (
	gpuOnce    sync.Once
	gpuBE      *Backend
	gpuErr     error
	gpuTF32New bool // TF32() as New left it
)

// skipWithoutCUDA skips a GPU test where CUDA is unavailable, naming why,
// or fails it when MOERL_REQUIRE_CUDA=1 (the GPU machine's run.sh sets it),
// so that a machine whose libcuda cannot be loaded cannot look green.
func skipWithoutCUDA(t testing.TB) {
	t.Helper()
	err := Available()
	if err == nil {
		return
	}
	if os.Getenv("MOERL_REQUIRE_CUDA") == "1" {
		t.Fatalf("MOERL_REQUIRE_CUDA=1 but %v", err)
	}
	t.Skip(err.Error()) // "CUDA unavailable: ..."
}

// gpuBackend returns the shared GPU backend, or skips the test. Its GEMMs
// run in full float32 (TF32 off), the mode the op bounds are stated for;
// the TF32 tests turn it on and back off.
func gpuBackend(t testing.TB) *Backend {
	t.Helper()
	skipWithoutCUDA(t)
	gpuOnce.Do(func() {
		if gpuBE, gpuErr = New(); gpuErr == nil {
			gpuTF32New = gpuBE.TF32()
			gpuErr = gpuBE.SetTF32(false)
		}
	})
	if gpuErr != nil {
		t.Fatalf("New: %v", gpuErr)
	}
	return gpuBE
}

// fallbackBackend is a second GPU backend without cuBLAS (the fallback
// GEMM kernel), as MOERL_CUBLAS=off would give.
var (
	fallbackOnce sync.Once
	fallbackBE   *Backend
	fallbackErr  error
)

func gpuFallback(t testing.TB) *Backend {
	gpuBackend(t)
	fallbackOnce.Do(func() {
		l, err := probe()
		if err != nil {
			fallbackErr = err
			return
		}
		fallbackBE, fallbackErr = newBackend(l, nil, "cuBLAS off (test)", 0)
	})
	if fallbackErr != nil {
		t.Fatalf("fallback backend: %v", fallbackErr)
	}
	return fallbackBE
}

// ------------------------------------------------------------------ harness

type role uint8

const (
	in    role = iota // input: uploaded
	out               // output: poisoned (NaN, or a large int) before the run
	acc               // accumulated output: poisoned, then filled with known values
	inout             // updated in place: filled with known values
)

type argSpec struct {
	name  string
	i32   bool
	n     int
	role  role
	gen   func(r *rand.Rand, i int) float64 // initial values; nil: standard normal
	exact bool                              // compare bit for bit
}

// opCase is one op run on both backends. prep may replace host inputs by
// values computed with the CPU backend (a backward's saved activations);
// run calls the op and returns any host results to compare.
type opCase struct {
	name string
	tol  float64
	args []argSpec
	prep func(ref engine.Backend, host map[string]*engine.Tensor)
	run  func(be engine.Backend, ts map[string]*engine.Tensor) []float64
}

func normal(r *rand.Rand, _ int) float64 { return r.NormFloat64() }

func uniformInt(lo, hi int) func(*rand.Rand, int) float64 {
	return func(r *rand.Rand, _ int) float64 { return float64(lo + r.IntN(hi-lo)) }
}

func scaled(s float64) func(*rand.Rand, int) float64 {
	return func(r *rand.Rand, _ int) float64 { return s * r.NormFloat64() }
}

func positive(r *rand.Rand, _ int) float64 { return 0.5 + r.Float64() }

// hostInputs draws the case's host tensors from its seed.
func hostInputs(c opCase, seed uint64) map[string]*engine.Tensor {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	host := map[string]*engine.Tensor{}
	for _, a := range c.args {
		gen := a.gen
		if gen == nil {
			gen = normal
		}
		if a.i32 {
			t := engine.HostI32(a.n)
			for i := range t.I {
				t.I[i] = int32(gen(r, i))
			}
			host[a.name] = t
		} else {
			t := engine.HostF32(a.n)
			for i := range t.F {
				t.F[i] = float32(gen(r, i))
			}
			host[a.name] = t
		}
	}
	return host
}

const intPoison = -0x5A5A5A5

// runOn copies the host tensors to be, poisons the outputs, runs the op and
// returns every non-input tensor's contents (as float64) and the op's host
// results.
func runOn(t *testing.T, be engine.Backend, c opCase, host map[string]*engine.Tensor) (map[string][]float64, []float64) {
	t.Helper()
	ts := map[string]*engine.Tensor{}
	for _, a := range c.args {
		h := host[a.name]
		if a.i32 {
			x := be.NewI32(a.n)
			if a.role == out || a.role == acc {
				poison := make([]int32, a.n)
				for i := range poison {
					poison[i] = intPoison
				}
				be.UploadI32(x, poison)
			}
			if a.role != out {
				be.UploadI32(x, h.I)
			}
			ts[a.name] = x
		} else {
			x := be.NewF32(a.n)
			if a.role == out || a.role == acc {
				poison := make([]float32, a.n)
				for i := range poison {
					poison[i] = float32(math.NaN())
				}
				be.Upload(x, poison)
			}
			if a.role != out {
				be.Upload(x, h.F)
			}
			ts[a.name] = x
		}
	}
	extra := c.run(be, ts)
	if err := be.Sync(); err != nil {
		t.Fatalf("%s on %s: %v", c.name, be.Name(), err)
	}
	res := map[string][]float64{}
	for _, a := range c.args {
		if a.role == in {
			continue
		}
		v := make([]float64, a.n)
		if a.i32 {
			d := make([]int32, a.n)
			be.DownloadI32(d, ts[a.name])
			for i, x := range d {
				v[i] = float64(x)
			}
		} else {
			d := make([]float32, a.n)
			be.Download(d, ts[a.name])
			for i, x := range d {
				v[i] = float64(x)
			}
		}
		res[a.name] = v
	}
	for _, x := range ts {
		be.Free(x)
	}
	if err := be.Sync(); err != nil {
		t.Fatalf("%s on %s: %v", c.name, be.Name(), err)
	}
	return res, extra
}

// relErr is ‖got − want‖/‖want‖, or NaN if got has a NaN where want has
// none. Where want is NaN (a poisoned element the op must leave alone, such
// as GEMM row padding), got must be NaN too, else the result is +Inf.
func relErr(got, want []float64) float64 {
	var num, den float64
	for i := range got {
		if math.IsNaN(want[i]) {
			if !math.IsNaN(got[i]) {
				return math.Inf(1)
			}
			continue
		}
		if math.IsNaN(got[i]) {
			return math.NaN()
		}
		d := got[i] - want[i]
		num += d * d
		den += want[i] * want[i]
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

// checkCase runs c on the CPU and twice on be, and compares.
func checkCase(t *testing.T, be engine.Backend, c opCase, seed uint64) {
	t.Helper()
	ref := cpu.New()
	host := hostInputs(c, seed)
	if c.prep != nil {
		c.prep(ref, host)
	}
	want, wantExtra := runOn(t, ref, c, host)
	got, gotExtra := runOn(t, be, c, host)
	again, againExtra := runOn(t, be, c, host)
	for _, a := range c.args {
		if a.role == in {
			continue
		}
		g, w := got[a.name], want[a.name]
		if a.exact || a.i32 {
			if i := firstDiff(g, w); i >= 0 {
				t.Errorf("%s: %s[%d] = %v on the GPU, %v on the CPU", c.name, a.name, i, g[i], w[i])
			}
		} else if e := relErr(g, w); !(e <= c.tol) {
			t.Errorf("%s: %s: ‖gpu−cpu‖/‖cpu‖ = %.3g, bound %.1g", c.name, a.name, e, c.tol)
		} else {
			t.Logf("%s: %s: rel err %.2e (bound %.0e)", c.name, a.name, e, c.tol)
		}
		if i := firstDiff(again[a.name], g); i >= 0 {
			t.Errorf("%s: %s not deterministic: [%d] = %v, then %v", c.name, a.name, i, g[i], again[a.name][i])
		}
	}
	if len(wantExtra) > 0 {
		if e := relErr(gotExtra, wantExtra); !(e <= c.tol) {
			t.Errorf("%s: host result %v, CPU %v (rel err %.3g)", c.name, gotExtra, wantExtra, e)
		}
		if !slices.Equal(gotExtra, againExtra) {
			t.Errorf("%s: host result not deterministic: %v then %v", c.name, gotExtra, againExtra)
		}
	}
}

// firstDiff is the first index where a and b differ in bits, or −1.
func firstDiff(a, b []float64) int {
	for i := range a {
		if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
			return i
		}
	}
	return -1
}

// Bounds on ‖gpu−cpu‖/‖cpu‖, per op family. GEMMs have one per mode:
// float32 (TF32 off) rounds like the CPU, to about 1e-7 per product; TF32
// rounds both inputs to 10 mantissa bits, about 1e-3 per product (2^−11 per
// input, random in sign, so near 3e-4 over a whole product), bounded here
// with room: 2e-3; bf16 to 7 stored bits, 2^−9 per input, near 3e-3 over
// a product (the emulator measures 2.3e-3), bounded by 1e-2. Only GEMMs
// run on the tensor cores; every other op is the same in every mode.
const (
	tolElementwise = 1e-5
	tolReduction   = 1e-4
	tolAttention   = 1e-4
	tolGemmF32     = 1e-5
	tolGemmTF32    = 2e-3
	tolGemmBF16    = 1e-2
)

// ------------------------------------------------------------------ cases

func spec(name string, n int, r role) argSpec { return argSpec{name: name, n: n, role: r} }

func opCases() []opCase {
	const (
		rows, dim      = 300, 96
		vocab          = 200
		batch, seq, H  = 2, 100, 3
		nE, k          = 8, 2
		hidden, tokens = 256, 150
	)
	var cases []opCase
	add := func(c opCase) { cases = append(cases, c) }

	for _, g := range []struct {
		ta, tb  bool
		m, n, k int
		beta    float32
	}{{false, false, 130, 70, 90, 0}, {true, false, 64, 50, 33, 1}, {false, true, 17, 129, 65, 0.5}, {true, true, 40, 40, 40, 0}} {
		rowsA, colsA := g.m, g.k
		if g.ta {
			rowsA, colsA = g.k, g.m
		}
		rowsB, colsB := g.k, g.n
		if g.tb {
			rowsB, colsB = g.n, g.k
		}
		role := out
		if g.beta != 0 {
			role = acc
		}
		add(opCase{name: fmt.Sprintf("Gemm/tA=%v,tB=%v,beta=%v", g.ta, g.tb, g.beta), tol: tolGemmF32,
			args: []argSpec{spec("a", 3+rowsA*(colsA+2), in), spec("b", rowsB*colsB+1, in), spec("c", 5+g.m*(g.n+1), role)},
			run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
				be.Gemm(g.ta, g.tb, g.m, g.n, g.k, 1.5, t["a"], 3, colsA+2, t["b"], 1, colsB, g.beta, t["c"], 5, g.n+1)
				return nil
			}})
	}
	// The grouped GEMMs of the experts: 5 groups over 170 rows, one of them
	// empty and one longer than a 64-row tile.
	const gRows, gN, gK, groups = 170, 70, 33, 5
	split := func(_ engine.Backend, h map[string]*engine.Tensor) {
		copy(h["offsets"].I, []int32{0, 37, 37, 120, 165, gRows})
	}
	offsetsArg := argSpec{name: "offsets", i32: true, n: groups + 1, role: in}
	for _, g := range []struct {
		transB bool
		beta   float32
	}{{false, 0}, {true, 0}, {false, 1}, {true, 1}} {
		role := out
		if g.beta != 0 {
			role = acc
		}
		add(opCase{name: fmt.Sprintf("GemmGrouped/tB=%v,beta=%v", g.transB, g.beta), tol: tolGemmF32,
			args: []argSpec{spec("a", gRows*gK, in), spec("b", groups*gK*gN, in), spec("c", gRows*gN, role), offsetsArg},
			prep: split,
			run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
				be.GemmGrouped(g.transB, gRows, gN, gK, t["a"], t["b"], gK*gN, g.beta, t["c"], t["offsets"], groups)
				return nil
			}})
	}
	add(opCase{name: "GemmGroupedSwiGLU", tol: tolElementwise,
		args: []argSpec{spec("a", gRows*gK, in), spec("b1", groups*gK*gN, in), spec("b3", groups*gK*gN, in),
			spec("g", gRows*gN, out), spec("u", gRows*gN, out), spec("s", gRows*gN, out), offsetsArg},
		prep: split,
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
			be.GemmGroupedSwiGLU(gRows, gN, gK, t["a"], nil, t["b1"], t["b3"], gK*gN, t["g"], t["u"], t["s"], t["offsets"], groups)
			return nil
		}})
	add(opCase{name: "GemmGroupedSwiGLU/no g and u", tol: tolElementwise, // a sampler's: s alone
		args: []argSpec{spec("a", gRows*gK, in), spec("b1", groups*gK*gN, in), spec("b3", groups*gK*gN, in),
			spec("s", gRows*gN, out), offsetsArg},
		prep: split,
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
			be.GemmGroupedSwiGLU(gRows, gN, gK, t["a"], nil, t["b1"], t["b3"], gK*gN, nil, nil, t["s"], t["offsets"], groups)
			return nil
		}})
	add(opCase{name: "GemmGroupedSwiGLUBackward", tol: tolElementwise,
		args: []argSpec{spec("dy", gRows*gK, in), spec("b", groups*gN*gK, in), spec("g", gRows*gN, in), spec("u", gRows*gN, in),
			spec("ds", gRows*gN, out), spec("dg", gRows*gN, out), spec("du", gRows*gN, out), offsetsArg},
		prep: split,
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
			be.GemmGroupedSwiGLUBackward(gRows, gN, gK, t["dy"], t["b"], gK*gN, t["g"], t["u"], t["ds"], t["dg"], t["du"],
				t["offsets"], groups)
			return nil
		}})
	add(opCase{name: "GemmGroupedT", tol: tolGemmF32,
		args: []argSpec{spec("a", gRows*gK, in), spec("b", gRows*gN, in), spec("c", groups*gK*gN, acc), offsetsArg},
		prep: split,
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
			be.GemmGroupedT(gRows, gK, gN, t["a"], nil, t["b"], t["c"], t["offsets"], groups)
			return nil
		}})
	// The experts' inputs read through the dispatch permutation: rows of
	// a token matrix, each token twice or not at all.
	const nTok = 97
	aRowsArg := argSpec{name: "aRows", i32: true, n: gRows, role: in, gen: uniformInt(0, nTok)}
	add(opCase{name: "GemmGroupedSwiGLU/gathered", tol: tolElementwise,
		args: []argSpec{spec("a", nTok*gK, in), aRowsArg, spec("b1", groups*gK*gN, in), spec("b3", groups*gK*gN, in),
			spec("g", gRows*gN, out), spec("u", gRows*gN, out), spec("s", gRows*gN, out), offsetsArg},
		prep: split,
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
			be.GemmGroupedSwiGLU(gRows, gN, gK, t["a"], t["aRows"], t["b1"], t["b3"], gK*gN, t["g"], t["u"], t["s"], t["offsets"], groups)
			return nil
		}})
	add(opCase{name: "GemmGroupedT/gathered", tol: tolGemmF32,
		args: []argSpec{spec("a", nTok*gK, in), aRowsArg, spec("b", gRows*gN, in), spec("c", groups*gK*gN, acc), offsetsArg},
		prep: split,
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
			be.GemmGroupedT(gRows, gK, gN, t["a"], t["aRows"], t["b"], t["c"], t["offsets"], groups)
			return nil
		}})
	add(opCase{name: "GemmBatched", tol: tolGemmF32,
		args: []argSpec{spec("a", 4*33*20, in), spec("b", 4*20*40, in), spec("c", 4*33*40, out)},
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
			be.GemmBatched(false, true, 33, 40, 20, 1, t["a"], 0, 20, 33*20, t["b"], 0, 20, 20*40, 0, t["c"], 0, 40, 33*40, 4)
			return nil
		}})

	n := 10007
	add(opCase{name: "Add", tol: tolElementwise, args: []argSpec{spec("y", n, acc), spec("x", n, in)},
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 { be.Add(t["y"], t["x"], n); return nil }})
	add(opCase{name: "Scale", tol: tolElementwise, args: []argSpec{spec("x", n, inout)},
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 { be.Scale(t["x"], n, -0.75); return nil }})
	add(opCase{name: "SumSquares", tol: 1e-12, args: []argSpec{spec("x", 300_001, in)},
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
			return []float64{be.SumSquares(t["x"], 300_001)}
		}})

	ids := argSpec{name: "ids", i32: true, n: rows, role: in, gen: uniformInt(0, vocab)}
	add(opCase{name: "Embedding", args: []argSpec{spec("table", vocab*dim, in), ids, {name: "out", n: rows * dim, role: out, exact: true}},
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
			be.Embedding(t["out"], t["table"], t["ids"], rows, dim)
			return nil
		}})
	for _, v := range []int{vocab, 3000} {
		ids := argSpec{name: "ids", i32: true, n: rows, role: in, gen: func(r *rand.Rand, i int) float64 {
			if i%5 == 0 {
				return 7 // a frequent token
			}
			return float64(r.IntN(v))
		}}
		add(opCase{name: fmt.Sprintf("EmbeddingBackward/vocab=%d", v),
			args: []argSpec{{name: "dtable", n: v * dim, role: acc, exact: true}, spec("dout", rows*dim, in), ids},
			run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
				be.EmbeddingBackward(t["dtable"], t["dout"], t["ids"], rows, dim)
				return nil
			}})
	}

	for _, d := range []int{96, 64, 1000} {
		r := 4096 / d * 10
		add(opCase{name: fmt.Sprintf("RMSNorm/dim=%d", d), tol: tolElementwise,
			args: []argSpec{spec("x", r*d, in), spec("w", d, in), spec("out", r*d, out), spec("rstd", r, out)},
			run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
				be.RMSNorm(t["out"], t["rstd"], t["x"], t["w"], r, d, 1e-6)
				return nil
			}})
		// sum is float32 adds, the same bits on either backend; out and rstd
		// are RMSNorm's of it. In place, sum overwrites x or r.
		for _, over := range []string{"", "x", "r"} {
			args := []argSpec{spec("x", r*d, in), spec("r", r*d, in), spec("w", d, in), spec("out", r*d, out), spec("rstd", r, out)}
			name, dst := fmt.Sprintf("ResidualRMSNorm/dim=%d", d), "sum"
			switch over {
			case "":
				args = append(args, argSpec{name: "sum", n: r * d, role: out, exact: true})
			case "x":
				args[0].role, args[0].exact, dst = inout, true, "x"
			case "r":
				args[1].role, args[1].exact, dst = inout, true, "r"
			}
			if over != "" {
				name += ",sum=" + over
			}
			add(opCase{name: name, tol: tolElementwise, args: args,
				run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
					be.ResidualRMSNorm(t[dst], t["out"], t["rstd"], t["x"], t["r"], t["w"], r, d, 1e-6)
					return nil
				}})
		}
		add(opCase{name: fmt.Sprintf("RMSNormBackward/dim=%d", d), tol: tolReduction,
			args: []argSpec{spec("x", r*d, in), spec("w", d, in), spec("rstd", r, in), spec("dout", r*d, in),
				spec("dx", r*d, acc), spec("dw", d, acc)},
			prep: func(ref engine.Backend, h map[string]*engine.Tensor) {
				ref.RMSNorm(engine.HostF32(r*d), h["rstd"], h["x"], h["w"], r, d, 1e-6)
			},
			run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
				be.RMSNormBackward(t["dx"], t["dw"], t["dout"], t["x"], t["w"], t["rstd"], r, d)
				return nil
			}})
	}

	for _, op := range []string{"RoPE", "RoPEBackward"} {
		add(opCase{name: op, tol: 1e-6,
			args: []argSpec{spec("x", rows*H*32, inout), {name: "pos", i32: true, n: rows, role: in, gen: uniformInt(0, 4096)}},
			run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
				if op == "RoPE" {
					be.RoPE(t["x"], t["pos"], rows, H, 32, 1e6)
				} else {
					be.RoPEBackward(t["x"], t["pos"], rows, H, 32, 1e6)
				}
				return nil
			}})
	}

	for _, hd := range []int{32, 48, 64, 128} {
		nq := batch * seq * H * hd
		nl := batch * H * seq
		add(opCase{name: fmt.Sprintf("Attention/hd=%d", hd), tol: tolAttention,
			args: []argSpec{spec("q", nq, in), spec("k", nq, in), spec("v", nq, in), spec("out", nq, out), spec("lse", nl, out)},
			run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
				be.Attention(t["out"], t["lse"], t["q"], t["k"], t["v"], batch, seq, H, hd)
				return nil
			}})
		add(opCase{name: fmt.Sprintf("AttentionBackward/hd=%d", hd), tol: tolAttention,
			args: []argSpec{spec("q", nq, in), spec("k", nq, in), spec("v", nq, in), spec("out", nq, in), spec("lse", nl, in),
				spec("dout", nq, in), spec("dq", nq, acc), spec("dk", nq, acc), spec("dv", nq, acc)},
			prep: func(ref engine.Backend, h map[string]*engine.Tensor) {
				ref.Attention(h["out"], h["lse"], h["q"], h["k"], h["v"], batch, seq, H, hd)
			},
			run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
				be.AttentionBackward(t["dq"], t["dk"], t["dv"], t["dout"], t["q"], t["k"], t["v"], t["out"], t["lse"], batch, seq, H, hd)
				return nil
			}})
		maxSeq := 300
		add(opCase{name: fmt.Sprintf("AttentionDecode/hd=%d", hd), tol: tolAttention,
			args: []argSpec{spec("q", 5*H*hd, in), spec("kc", 5*maxSeq*H*hd, in), spec("vc", 5*maxSeq*H*hd, in),
				{name: "lens", i32: true, n: 5, role: in, gen: func(r *rand.Rand, i int) float64 { return float64([]int{1, 7, 64, 299, 300}[i]) }},
				spec("out", 5*H*hd, out)},
			run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
				be.AttentionDecode(t["out"], t["q"], t["kc"], t["vc"], t["lens"], 5, maxSeq, H, hd)
				return nil
			}})
	}

	add(opCase{name: "SwiGLU", tol: tolElementwise,
		args: []argSpec{argSpec{name: "gate", n: n, role: in, gen: scaled(3)}, spec("up", n, in), spec("out", n, out)},
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
			be.SwiGLU(t["out"], t["gate"], t["up"], n)
			return nil
		}})
	add(opCase{name: "SwiGLUBackward", tol: tolElementwise,
		args: []argSpec{argSpec{name: "gate", n: n, role: in, gen: scaled(3)}, spec("up", n, in), spec("dout", n, in),
			spec("dgate", n, acc), spec("dup", n, acc)},
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
			be.SwiGLUBackward(t["dgate"], t["dup"], t["dout"], t["gate"], t["up"], n)
			return nil
		}})

	for _, e := range []struct{ nE, k int }{{nE, k}, {64, 8}, {33, 1}} {
		add(opCase{name: fmt.Sprintf("RouterTopK/%d,%d", e.nE, e.k), tol: tolElementwise,
			args: []argSpec{argSpec{name: "logits", n: tokens * e.nE, role: in, gen: scaled(2)},
				spec("weights", tokens*e.k, out), {name: "experts", i32: true, n: tokens * e.k, role: out}, spec("probs", tokens*e.nE, out)},
			run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
				be.RouterTopK(t["weights"], t["experts"], t["probs"], t["logits"], tokens, e.nE, e.k)
				return nil
			}})
		add(opCase{name: fmt.Sprintf("RouterTopKBackward/%d,%d", e.nE, e.k), tol: tolElementwise,
			args: []argSpec{argSpec{name: "logits", n: tokens * e.nE, role: in, gen: scaled(2)},
				spec("weights", tokens*e.k, in), {name: "experts", i32: true, n: tokens * e.k, role: in}, spec("probs", tokens*e.nE, in),
				spec("dweights", tokens*e.k, in), spec("dlogits", tokens*e.nE, acc)},
			prep: func(ref engine.Backend, h map[string]*engine.Tensor) {
				ref.RouterTopK(h["weights"], h["experts"], h["probs"], h["logits"], tokens, e.nE, e.k)
			},
			run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
				be.RouterTopKBackward(t["dlogits"], t["dweights"], t["weights"], t["experts"], t["probs"], tokens, e.nE, e.k)
				return nil
			}})
		add(opCase{name: fmt.Sprintf("RouterDispatch/%d,%d", e.nE, e.k),
			args: []argSpec{{name: "experts", i32: true, n: tokens * e.k, role: in, gen: uniformInt(0, e.nE)},
				{name: "perm", i32: true, n: tokens * e.k, role: out}, {name: "inv", i32: true, n: tokens * e.k, role: out},
				{name: "offsets", i32: true, n: e.nE + 1, role: out}},
			run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
				be.RouterDispatch(t["perm"], t["inv"], t["offsets"], t["experts"], tokens, e.nE, e.k)
				return nil
			}})
	}
	add(opCase{name: "RouterLoad", tol: tolReduction,
		args: []argSpec{{name: "probs", n: tokens * nE, role: in, gen: positive},
			{name: "offsets", i32: true, n: nE + 1, role: in}, {name: "load", n: 2 * nE, role: out}},
		prep: func(_ engine.Backend, h map[string]*engine.Tensor) { groupSplit(h["offsets"].I, tokens*k) },
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
			be.RouterLoad(t["load"], t["probs"], t["offsets"], tokens, nE)
			return nil
		}})
	add(opCase{name: "SoftmaxBackward", tol: tolElementwise,
		args: []argSpec{argSpec{name: "probs", n: tokens * nE, role: in, gen: positive}, spec("dprobs", tokens*nE, in), spec("dlogits", tokens*nE, acc)},
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
			be.SoftmaxBackward(t["dlogits"], t["dprobs"], t["probs"], tokens, nE)
			return nil
		}})

	// A permutation for the gather/combine ops: inv from a real dispatch.
	slots := tokens * k
	dispatch := func(ref engine.Backend, h map[string]*engine.Tensor) {
		experts := engine.HostI32(slots)
		r := rand.New(rand.NewPCG(9, 9))
		for i := range experts.I {
			experts.I[i] = int32(r.IntN(nE))
		}
		perm := engine.HostI32(slots)
		ref.RouterDispatch(perm, h["inv"], engine.HostI32(nE+1), experts, tokens, nE, k)
		if p, ok := h["perm"]; ok {
			copy(p.I, perm.I)
		}
	}
	inv := argSpec{name: "inv", i32: true, n: slots, role: in}
	add(opCase{name: "Gather", args: []argSpec{spec("x", tokens*dim, in), {name: "perm", i32: true, n: slots, role: in}, inv,
		{name: "out", n: slots * dim, role: out, exact: true}},
		prep: dispatch,
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
			be.Gather(t["out"], t["x"], t["perm"], slots, dim)
			return nil
		}})
	add(opCase{name: "GatherBackward", args: []argSpec{spec("dout", slots*dim, in), inv, {name: "dx", n: tokens * dim, role: acc, exact: true}},
		prep: dispatch,
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
			be.GatherBackward(t["dx"], t["dout"], t["inv"], tokens, k, dim)
			return nil
		}})
	add(opCase{name: "Combine", tol: tolElementwise,
		args: []argSpec{spec("y", slots*dim, in), spec("weights", slots, in), inv, spec("out", tokens*dim, acc)},
		prep: dispatch,
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
			be.Combine(t["out"], t["y"], t["weights"], t["inv"], tokens, k, dim)
			return nil
		}})
	add(opCase{name: "CombineBackward", tol: tolReduction,
		args: []argSpec{spec("dout", tokens*dim, in), spec("y", slots*dim, in), spec("weights", slots, in), inv,
			spec("dy", slots*dim, acc), spec("dweights", slots, acc)},
		prep: dispatch,
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
			be.CombineBackward(t["dy"], t["dweights"], t["dout"], t["y"], t["weights"], t["inv"], tokens, k, dim)
			return nil
		}})
	add(opCase{name: "ScatterRows",
		args: []argSpec{spec("src", 40*dim, in), {name: "idx", i32: true, n: 40, role: in, gen: func(_ *rand.Rand, i int) float64 { return float64((i * 37) % 101) }},
			{name: "dst", n: 101 * dim, role: inout, exact: true}},
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
			be.ScatterRows(t["dst"], t["src"], t["idx"], 40, dim)
			return nil
		}})

	for _, v := range []int{vocab, 32000} {
		lr := 64
		targets := argSpec{name: "targets", i32: true, n: lr, role: in, gen: uniformInt(0, v)}
		logits := argSpec{name: "logits", n: lr * v, role: in, gen: scaled(4)}
		add(opCase{name: fmt.Sprintf("TokenLogProbs/vocab=%d", v), tol: tolReduction,
			args: []argSpec{logits, targets, spec("logp", lr, out), spec("lse", lr, out)},
			run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
				be.TokenLogProbs(t["logp"], t["lse"], t["logits"], t["targets"], lr, v)
				return nil
			}})
		add(opCase{name: fmt.Sprintf("TokenLogProbsBackward/vocab=%d", v), tol: tolElementwise,
			args: []argSpec{logits, targets, spec("lse", lr, in), spec("dlogp", lr, in), spec("dlogits", lr*v, acc)},
			prep: func(ref engine.Backend, h map[string]*engine.Tensor) {
				ref.TokenLogProbs(engine.HostF32(lr), h["lse"], h["logits"], h["targets"], lr, v)
			},
			run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
				be.TokenLogProbsBackward(t["dlogits"], t["dlogp"], t["logits"], t["lse"], t["targets"], lr, v)
				return nil
			}})
		add(opCase{name: fmt.Sprintf("TokenLogProbsFused/vocab=%d", v), tol: tolReduction,
			args: []argSpec{logits, targets, spec("dlogp", lr, in), spec("logp", lr, out), spec("lse", lr, out),
				spec("dlogits", lr*v, out)},
			run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
				be.TokenLogProbsFused(t["logp"], t["lse"], t["dlogits"], t["logits"], t["targets"], t["dlogp"], lr, v)
				return nil
			}})
		add(opCase{name: fmt.Sprintf("Entropy/vocab=%d", v), tol: tolReduction,
			args: []argSpec{logits, targets, spec("lse", lr, in), spec("ent", lr, out)},
			prep: func(ref engine.Backend, h map[string]*engine.Tensor) {
				ref.TokenLogProbs(engine.HostF32(lr), h["lse"], h["logits"], h["targets"], lr, v)
			},
			run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
				be.Entropy(t["ent"], t["logits"], t["lse"], lr, v)
				return nil
			}})
	}

	add(opCase{name: "AdamW", tol: tolElementwise,
		args: []argSpec{spec("p", n, inout), spec("g", n, in), argSpec{name: "m", n: n, role: inout, gen: scaled(0.1)},
			argSpec{name: "v", n: n, role: inout, gen: func(r *rand.Rand, _ int) float64 { return 0.01 * r.Float64() }}},
		run: func(be engine.Backend, t map[string]*engine.Tensor) []float64 {
			be.AdamW(t["p"], t["g"], t["m"], t["v"], n, 2*n/3, 0.6, 3e-4, 0.9, 0.95, 1e-8, 0.1, 17)
			return nil
		}})
	return cases
}

// TestOpsMatchCPU runs every op on the GPU and the CPU.
func TestOpsMatchCPU(t *testing.T) {
	be := gpuBackend(t)
	t.Logf("device: %s", be.Device())
	opsMatchCPU(t, be)
}

func opsMatchCPU(t *testing.T, be engine.Backend) {
	for i, c := range opCases() {
		t.Run(c.name, func(t *testing.T) { checkCase(t, be, c, uint64(1000+i)) })
	}
}

// TestOnEmulator runs the GPU tests on the CPU: the fake driver executes
// every launch on the kernel emulator (kernels/emu), so the Go launchers,
// their grids and arguments, the kernels and this file's harness are
// checked end to end against the CPU backend without a GPU. It needs the
// emulator library: make -f kernels/ptx.mk kernels-emu-gotest.
func TestOnEmulator(t *testing.T) {
	be := emulatedBackend(t)
	t.Run("ops", func(t *testing.T) { opsMatchCPU(t, be) })
	t.Run("sample", func(t *testing.T) { sampleMatchesCPU(t, be) })
	t.Run("cast", func(t *testing.T) { castMatchesCPU(t, be) })
	t.Run("bf16 weights", func(t *testing.T) { weights16MatchRounded(t, be) })
	t.Run("bf16 storage", func(t *testing.T) { storage16MatchesF32(t, be) })
	t.Run("allocator", func(t *testing.T) { allocatorWarm(t, be, 256) })
	t.Run("graph", func(t *testing.T) { graphReplay(t, be) })
}

// TestGemmFallbackAndTF32: the fallback kernel (MOERL_CUBLAS=off) matches
// the CPU to float32 rounding, and cuBLAS in TF32 within its bound.
func TestGemmFallbackAndTF32(t *testing.T) {
	be := gpuBackend(t)
	fb := gpuFallback(t)
	for i, c := range opCases() {
		if len(c.name) < 4 || c.name[:4] != "Gemm" {
			continue
		}
		t.Run("fallback/"+c.name, func(t *testing.T) { checkCase(t, fb, c, uint64(2000+i)) })
	}
	if err := be.SetTF32(true); err != nil {
		t.Fatal(err)
	}
	defer be.SetTF32(false)
	for i, c := range opCases() {
		if len(c.name) < 4 || c.name[:4] != "Gemm" {
			continue
		}
		c.tol = tolGemmTF32
		t.Run("tf32/"+c.name, func(t *testing.T) { checkCase(t, be, c, uint64(3000+i)) })
	}
}

// TestGemmBF16: every GEMM op in bf16, with cuBLAS
// (CUBLAS_COMPUTE_32F_FAST_16BF) and with our kernels' bf16 twins, within
// bf16's bound of the CPU's float32 product.
func TestGemmBF16(t *testing.T) {
	for _, be := range []*Backend{gpuBackend(t), gpuFallback(t)} {
		was := be.GEMMPrecision()
		if err := be.SetGEMMPrecision(GEMMBF16); err != nil {
			t.Fatal(err)
		}
		for i, c := range opCases() {
			if len(c.name) < 4 || c.name[:4] != "Gemm" {
				continue
			}
			c.tol = tolGemmBF16
			t.Run(fmt.Sprintf("cublas=%v/%s", be.HasCublas(), c.name), func(t *testing.T) { checkCase(t, be, c, uint64(4000+i)) })
		}
		if err := be.SetGEMMPrecision(was); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTF32Default: New turns TF32 on where the GPU has it (compute
// capability 8.0 and later) and cuBLAS is there, unless MOERL_TF32 says
// otherwise (MOERL_TF32=1 turns it on for the fallback kernel too).
func TestTF32Default(t *testing.T) {
	be := gpuBackend(t)
	want := be.cc[0] >= 8 && be.HasCublas()
	switch os.Getenv("MOERL_TF32") {
	case "0":
		want = false
	case "1":
		want = true
	}
	if gpuTF32New != want {
		t.Errorf("sm_%d%d, cuBLAS %v, MOERL_TF32=%q: New left TF32 %v, want %v", be.cc[0], be.cc[1], be.HasCublas(),
			os.Getenv("MOERL_TF32"), gpuTF32New, want)
	}
}

// TestSample: with well-separated probabilities the GPU draws the CPU's
// tokens, the same ones on every run, with the same log-probabilities.
func TestSample(t *testing.T) { sampleMatchesCPU(t, gpuBackend(t)) }

func sampleMatchesCPU(t *testing.T, be *Backend) {
	ref := cpu.New()
	for i, s := range []struct {
		vocab, topK int
		temp, topP  float32
	}{
		{128, 0, 1, 1}, {128, 5, 0.7, 1}, {128, 0, 1.3, 0.8}, {128, 10, 1, 0.5}, {128, 0, 0, 1},
		{6000, 40, 1, 0.9}, {6000, 0, 1, 1}, {64, 64, 1, 1},
	} {
		t.Run(fmt.Sprintf("V=%d,T=%v,k=%d,p=%v", s.vocab, s.temp, s.topK, s.topP), func(t *testing.T) {
			const rows = 64
			r := rand.New(rand.NewPCG(uint64(i), 77))
			logits := make([]float32, rows*s.vocab)
			for row := 0; row < rows; row++ {
				order := r.Perm(s.vocab)
				for rank, id := range order {
					logits[row*s.vocab+id] = -4 + 5*float32(rank)/float32(s.vocab)
				}
			}
			u := make([]float32, rows)
			for j := range u {
				u[j] = r.Float32()
			}
			draw := func(be engine.Backend) ([]int32, []float32) {
				lt, ut, tt, lp := be.NewF32(len(logits)), be.NewF32(rows), be.NewI32(rows), be.NewF32(rows)
				be.Upload(lt, logits)
				be.Upload(ut, u)
				be.Sample(tt, lp, lt, ut, rows, s.vocab, s.temp, s.topK, s.topP)
				toks, lps := make([]int32, rows), make([]float32, rows)
				be.DownloadI32(toks, tt)
				be.Download(lps, lp)
				if err := be.Sync(); err != nil {
					t.Fatal(err)
				}
				for _, x := range []*engine.Tensor{lt, ut, tt, lp} {
					be.Free(x)
				}
				return toks, lps
			}
			wt, wl := draw(ref)
			gt, gl := draw(be)
			gt2, gl2 := draw(be)
			if !slices.Equal(gt, wt) {
				t.Errorf("tokens differ from the CPU's:\n gpu %v\n cpu %v", gt, wt)
			}
			if !slices.Equal(gt, gt2) || !slices.Equal(gl, gl2) {
				t.Errorf("the same seed drew different tokens or log-probs")
			}
			g64, w64 := make([]float64, rows), make([]float64, rows)
			for j := range gl {
				g64[j], w64[j] = float64(gl[j]), float64(wl[j])
			}
			if e := relErr(g64, w64); !(e <= 1e-5) {
				t.Errorf("log-probs: rel err %.3g", e)
			}
		})
	}
}

// TestAllocatorWarm: once a step has run, repeating it calls cuMemAlloc no
// more.
func TestAllocatorWarm(t *testing.T) { allocatorWarm(t, gpuBackend(t), 4096) }

func allocatorWarm(t *testing.T, be *Backend, rows int) {
	step := func() {
		x, y := be.NewF32(rows, 96), be.NewF32(rows, 96)
		rstd, w := be.NewF32(rows), be.NewF32(96)
		be.RMSNorm(y, rstd, x, w, rows, 96, 1e-6)
		be.RMSNormBackward(x, w, y, x, w, rstd, rows, 96)
		_ = be.SumSquares(y, rows*96)
		for _, t := range []*engine.Tensor{x, y, rstd, w} {
			be.Free(t)
		}
	}
	step()
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
	warm := be.MemStats()
	for range 10 {
		step()
	}
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
	if st := be.MemStats(); st.Allocs != warm.Allocs {
		t.Errorf("cuMemAlloc calls: %d after warm-up, %d after 10 more steps", warm.Allocs, st.Allocs)
	} else {
		t.Logf("memory: %+v", st)
	}
}

// TestGraphReplay: a captured sequence replays to the same bits as the
// direct launches.
func TestGraphReplay(t *testing.T) { graphReplay(t, gpuBackend(t)) }

func graphReplay(t *testing.T, be *Backend) {
	const rows, d, h = 512, 128, 256
	r := rand.New(rand.NewPCG(5, 5))
	x, w, w1 := be.NewF32(rows*d), be.NewF32(d), be.NewF32(d*h)
	hn, rstd, g, u, s := be.NewF32(rows*d), be.NewF32(rows), be.NewF32(rows*h), be.NewF32(rows*h), be.NewF32(rows*h)
	be.Upload(x, randSlice(r, rows*d))
	be.Upload(w, randSlice(r, d))
	be.Upload(w1, randSlice(r, d*h))
	be.Upload(u, randSlice(r, rows*h))
	seq := func() {
		be.RMSNorm(hn, rstd, x, w, rows, d, 1e-6)
		be.Gemm(false, false, rows, h, d, 1, hn, 0, d, w1, 0, h, 0, g, 0, h)
		be.SwiGLU(s, g, u, rows*h)
		be.Scale(s, rows*h, 0.5)
	}
	seq()
	direct := make([]float32, rows*h)
	be.Download(direct, s)
	be.Zero(s)
	be.Zero(g)
	graph, err := be.Capture(seq)
	if err != nil {
		t.Fatal(err)
	}
	defer graph.Close()
	for rep := range 2 {
		be.Zero(s)
		if err := graph.Launch(); err != nil {
			t.Fatal(err)
		}
		got := make([]float32, rows*h)
		be.Download(got, s)
		if err := be.Sync(); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, direct) {
			t.Errorf("replay %d differs from the direct run", rep)
		}
	}
	for _, x := range []*engine.Tensor{x, w, w1, hn, rstd, g, u, s} {
		be.Free(x)
	}
}

// BenchmarkOps times a few ops at the moe-tiny training shapes (B·T =
// 64·256 tokens, d_model 256, 4 heads, 8 experts, top-2, hidden 512) with
// GPU events.
func BenchmarkOps(b *testing.B) {
	be := gpuBackend(b)
	const B, T, H, hd, d, hidden, V = 64, 256, 4, 64, 256, 512, 128
	N := B * T
	r := rand.New(rand.NewPCG(1, 1))
	mk := func(n int) *engine.Tensor { x := be.NewF32(n); be.Upload(x, randSlice(r, n)); return x }
	q, k, v, out, lse := mk(N*d), mk(N*d), mk(N*d), mk(N*d), be.NewF32(B*H*T)
	dq, dk, dv := be.NewF32(N*d), be.NewF32(N*d), be.NewF32(N*d)
	x, w, rstd := mk(N*d), mk(d), be.NewF32(N)
	w1, g := mk(d*hidden), be.NewF32(N*hidden)
	logits, targets, logp := mk(N*V), be.NewI32(N), be.NewF32(N)
	for _, bc := range []struct {
		name  string
		bytes float64 // bytes moved, or 0
		flops float64 // floating-point operations, or 0
		fn    func()
	}{
		{"Attention", 0, 2 * 2 * float64(B*H*T*T/2*hd), func() { be.Attention(out, lse, q, k, v, B, T, H, hd) }},
		{"AttentionBackward", 0, 5 * 2 * float64(B*H*T*T/2*hd), func() {
			be.AttentionBackward(dq, dk, dv, out, q, k, v, out, lse, B, T, H, hd)
		}},
		{"RMSNorm", 8 * float64(N*d), 0, func() { be.RMSNorm(out, rstd, x, w, N, d, 1e-6) }},
		{"Gemm", 0, 2 * float64(N*d*hidden), func() { be.Gemm(false, false, N, hidden, d, 1, x, 0, d, w1, 0, hidden, 0, g, 0, hidden) }},
		{"TokenLogProbs", 4 * float64(N*V), 0, func() { be.TokenLogProbs(logp, lse, logits, targets, N, V) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			bc.fn()
			if err := be.Sync(); err != nil {
				b.Fatal(err)
			}
			el, err := be.Time(func() {
				for range b.N {
					bc.fn()
				}
			})
			if err != nil {
				b.Fatal(err)
			}
			per := el.Seconds() / float64(b.N)
			b.ReportMetric(per*1e6, "µs/op")
			if bc.bytes > 0 {
				b.ReportMetric(bc.bytes/per/1e9, "GB/s")
			}
			if bc.flops > 0 {
				b.ReportMetric(bc.flops/per/1e12, "TFLOP/s")
			}
		})
	}
}

// groupSplit fills offsets with a fixed split of rows into len(offsets)−1
// groups of uneven sizes, the second one empty.
func groupSplit(offsets []int32, rows int) {
	G := len(offsets) - 1
	for g := range offsets {
		offsets[g] = int32(rows * g * g / (G * G))
	}
	if G > 2 {
		offsets[2] = offsets[1]
	}
}
