package engine

import (
	"math"
	"math/rand/v2"
	"testing"
)

// nearestBF16 is the reference rounding: of the two bfloat16 values that
// bracket x (its truncation and the next one away from zero), the nearer
// in float64, the one with an even last bit on a tie.
func nearestBF16(x float32) float32 {
	b := math.Float32bits(x)
	lo := b &^ 0xffff
	hi := lo + 0x10000
	dlo := math.Abs(float64(x) - float64(math.Float32frombits(lo)))
	dhi := math.Abs(float64(math.Float32frombits(hi)) - float64(x))
	if hi&0x7f800000 == 0x7f800000 { // rounding up overflows: compare with the first value past the range
		dhi = math.Abs(0x1p128 - math.Abs(float64(x)))
	}
	switch {
	case dlo < dhi, dlo == dhi && lo&0x10000 == 0:
		return math.Float32frombits(lo)
	}
	return math.Float32frombits(hi)
}

func TestBF16Bits(t *testing.T) {
	inf := float32(math.Inf(1))
	for _, c := range []struct {
		name string
		x    float32
		want float32
	}{
		{"exact", 1.5, 1.5},
		{"tie to even, down", 1 + 0x1p-8, 1},
		{"tie to even, up", 1 + 3*0x1p-8, 1 + 0x1p-6},
		{"below a tie", 1 + 0x1p-8 - 0x1p-23, 1},
		{"negative", -(1 + 3*0x1p-8), -(1 + 0x1p-6)},
		{"overflow", math.MaxFloat32, inf},
		{"largest finite stays", math.Float32frombits(0x7f7f0000), math.Float32frombits(0x7f7f0000)},
		{"-inf", -inf, -inf},
		{"subnormal", math.Float32frombits(0x00018000), math.Float32frombits(0x00020000)},
		{"-0", float32(math.Copysign(0, -1)), float32(math.Copysign(0, -1))},
	} {
		got := BF16Float(BF16Bits(c.x))
		if math.Float32bits(got) != math.Float32bits(c.want) {
			t.Errorf("%s: BF16(%v) = %v (%#08x), want %v", c.name, c.x, got, math.Float32bits(got), c.want)
		}
	}
	// A NaN stays a NaN, quiet, whatever its payload.
	for _, bits := range []uint32{0x7f800001, 0xff800001, 0x7fc00000, 0x7f812345} {
		h := BF16Bits(math.Float32frombits(bits))
		if f := BF16Float(h); !math.IsNaN(float64(f)) || h&0x0040 == 0 {
			t.Errorf("NaN %#08x became %#04x", bits, h)
		}
	}
	// Every bfloat16 that is not a NaN converts to itself.
	for h := range 1 << 16 {
		f := BF16Float(uint16(h))
		if math.IsNaN(float64(f)) {
			continue
		}
		if got := BF16Bits(f); got != uint16(h) {
			t.Fatalf("bf16 %#04x: widened and narrowed to %#04x", h, got)
		}
	}
	// Random floats of every magnitude round as the reference does.
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		x := math.Float32frombits(r.Uint32())
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			continue
		}
		if got, want := BF16Float(BF16Bits(x)), nearestBF16(x); math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("BF16(%v) = %v, want %v", x, got, want)
		}
	}
}

func TestBF16Tensors(t *testing.T) {
	if BF16.Size() != 2 || F32.Size() != 4 || I32.Size() != 4 {
		t.Fatalf("sizes: bf16 %d, f32 %d, i32 %d", BF16.Size(), F32.Size(), I32.Size())
	}
	x := Host(BF16, 2, 3)
	if x.DType != BF16 || len(x.BF) != 6 || !x.OnHost() || x.String() != "bf16[2 3]@host" {
		t.Fatalf("Host(BF16, 2, 3) = %v with %d elements", x, len(x.BF))
	}
	v := x.View(3, 3)
	v.BF[0] = 7
	if x.BF[3] != 7 {
		t.Fatal("a view of a bf16 tensor does not share its storage")
	}
	d := &Tensor{Shape: []int{8}, DType: BF16, Ptr: 0x1000}
	if got := d.View(3, 2).Ptr; got != 0x1006 {
		t.Fatalf("device bf16 view at element 3: address %#x, want 0x1006", got)
	}
}
