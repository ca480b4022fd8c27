package engine

import "fmt"

// DType is the element type of a Tensor.
type DType uint8

const (
	// F32 is IEEE-754 single precision.
	F32 DType = iota
	// I32 is a signed 32-bit integer (token ids, indices, positions).
	I32
	// BF16 is bfloat16: float32's sign and 8 exponent bits with 7 stored
	// significand bits, the upper half of a float32. It is the GPU's
	// working precision for weights and activations (llm.c's floatX);
	// master weights, optimizer moments and reductions stay F32, and
	// Backend.Cast converts between the two.
	BF16
)

func (d DType) String() string {
	switch d {
	case F32:
		return "f32"
	case I32:
		return "i32"
	case BF16:
		return "bf16"
	}
	return fmt.Sprintf("dtype(%d)", uint8(d))
}

// Size is the number of bytes of one element; byte counts of tensors,
// views and copies are taken from it.
func (d DType) Size() int {
	if d == BF16 {
		return 2
	}
	return 4
}

// Tensor is a dense buffer with a shape. A CPU tensor keeps its elements in
// F (for F32), I (for I32) or BF (for BF16, as raw bfloat16 bits); a
// device tensor keeps them at Ptr on the device of the backend that made
// it, and leaves F, I and BF nil.
type Tensor struct {
	Shape []int
	DType DType
	F     []float32
	I     []int32
	BF    []uint16
	Ptr   uintptr
}

// Len is the number of elements.
func (t *Tensor) Len() int { return Numel(t.Shape) }

// Numel is the product of the dimensions of shape.
func Numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// OnHost reports whether the tensor's elements live in host memory.
func (t *Tensor) OnHost() bool { return t.F != nil || t.I != nil || t.BF != nil || t.Len() == 0 }

// String describes the tensor without its elements.
func (t *Tensor) String() string {
	where := "host"
	if !t.OnHost() {
		where = "device"
	}
	return fmt.Sprintf("%s%v@%s", t.DType, t.Shape, where)
}

// HostF32 makes a host F32 tensor of the given shape, zeroed.
func HostF32(shape ...int) *Tensor {
	return &Tensor{Shape: append([]int(nil), shape...), DType: F32, F: make([]float32, Numel(shape))}
}

// HostI32 makes a host I32 tensor of the given shape, zeroed.
func HostI32(shape ...int) *Tensor {
	return &Tensor{Shape: append([]int(nil), shape...), DType: I32, I: make([]int32, Numel(shape))}
}

// HostBF16 makes a host BF16 tensor of the given shape, zeroed.
func HostBF16(shape ...int) *Tensor {
	return &Tensor{Shape: append([]int(nil), shape...), DType: BF16, BF: make([]uint16, Numel(shape))}
}

// Host makes a zeroed host tensor of dtype d and the given shape.
func Host(d DType, shape ...int) *Tensor {
	switch d {
	case F32:
		return HostF32(shape...)
	case I32:
		return HostI32(shape...)
	case BF16:
		return HostBF16(shape...)
	}
	panic(fmt.Sprintf("engine: Host: unknown %v", d))
}

// View is a tensor of the given shape that shares t's storage from element
// off on: a subslice on the host, an address offset on a device. Writing
// through the view writes t.
func (t *Tensor) View(off int, shape ...int) *Tensor {
	n := Numel(shape)
	if off < 0 || off+n > t.Len() {
		panic(fmt.Sprintf("engine: view [%d:%d] of %v out of range", off, off+n, t))
	}
	v := &Tensor{Shape: append([]int(nil), shape...), DType: t.DType}
	switch {
	case t.F != nil:
		v.F = t.F[off : off+n : off+n]
	case t.I != nil:
		v.I = t.I[off : off+n : off+n]
	case t.BF != nil:
		v.BF = t.BF[off : off+n : off+n]
	default:
		v.Ptr = t.Ptr + uintptr(off*t.DType.Size())
	}
	return v
}
