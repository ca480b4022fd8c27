package engine

import "math"

// BF16Bits rounds x to the nearest bfloat16, ties to even, and returns its
// bits. A magnitude past bfloat16's largest finite value (about 3.39e38)
// becomes infinite; a NaN stays a NaN, made quiet, with the top of its
// payload kept. kernels/common.cuh's bf16_bits is the device twin, so a
// Cast gives the same bits on every backend.
func BF16Bits(x float32) uint16 {
	b := math.Float32bits(x)
	if b&0x7f800000 == 0x7f800000 { // Inf or NaN: truncated, a NaN kept quiet
		if b&0x007fffff != 0 {
			b |= 0x00400000
		}
		return uint16(b >> 16)
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// BF16Float is the float32 a bfloat16's bits stand for, exactly.
func BF16Float(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }
