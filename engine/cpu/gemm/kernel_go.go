package gemm

// goImpl is the portable path: the same tiling as the assembly paths with
// a 4×4 kernel the Go compiler keeps mostly in registers.
var goImpl = &impl{name: "go", mr: 4, nr: 4, kernels: []microKernel{
	goKernelRows(1), goKernelRows(2), goKernelRows(3), goKernel4x4,
}, kcMax: 256, mcMax: 64, packAliasedB: true}

// Products are converted to float32 before they are added so the compiler
// cannot fuse them into FMAs on some architectures and not others; that way
// every Go kernel sums each element exactly like every other.

// goKernel4x4 is the full-tile portable micro-kernel.
func goKernel4x4(kc int, a []float32, rsA, csA int, b []float32, rsB int, c []float32, ldc int, alpha, beta float32) {
	var (
		c00, c01, c02, c03 float32
		c10, c11, c12, c13 float32
		c20, c21, c22, c23 float32
		c30, c31, c32, c33 float32
	)
	// Row slices and running offsets keep the loop's bounds checks to one
	// per operand row.
	a0s, a1s, a2s, a3s := a, a[rsA:], a[2*rsA:], a[3*rsA:]
	for p, ap, bp := 0, 0, 0; p < kc; p, ap, bp = p+1, ap+csA, bp+rsB {
		a0, a1, a2, a3 := a0s[ap], a1s[ap], a2s[ap], a3s[ap]
		bs := b[bp : bp+4 : bp+4]
		b0, b1, b2, b3 := bs[0], bs[1], bs[2], bs[3]
		c00 += float32(a0 * b0)
		c01 += float32(a0 * b1)
		c02 += float32(a0 * b2)
		c03 += float32(a0 * b3)
		c10 += float32(a1 * b0)
		c11 += float32(a1 * b1)
		c12 += float32(a1 * b2)
		c13 += float32(a1 * b3)
		c20 += float32(a2 * b0)
		c21 += float32(a2 * b1)
		c22 += float32(a2 * b2)
		c23 += float32(a2 * b3)
		c30 += float32(a3 * b0)
		c31 += float32(a3 * b1)
		c32 += float32(a3 * b2)
		c33 += float32(a3 * b3)
	}
	acc := [4][4]float32{
		{c00, c01, c02, c03},
		{c10, c11, c12, c13},
		{c20, c21, c22, c23},
		{c30, c31, c32, c33},
	}
	storeTile(acc[:], c, ldc, alpha, beta)
}

// goKernelRows returns the portable kernel for rows < 4 (edge) rows.
func goKernelRows(rows int) microKernel {
	return func(kc int, a []float32, rsA, csA int, b []float32, rsB int, c []float32, ldc int, alpha, beta float32) {
		var acc [4][4]float32
		for i := range rows {
			var s0, s1, s2, s3 float32
			ai := i * rsA
			for p := 0; p < kc; p++ {
				av := a[ai+p*csA]
				bp := b[p*rsB : p*rsB+4]
				s0 += float32(av * bp[0])
				s1 += float32(av * bp[1])
				s2 += float32(av * bp[2])
				s3 += float32(av * bp[3])
			}
			acc[i] = [4]float32{s0, s1, s2, s3}
		}
		storeTile(acc[:rows], c, ldc, alpha, beta)
	}
}

// storeTile writes C = alpha·acc + beta·C for the tile's rows, rounding as
// the assembly kernels do.
func storeTile(acc [][4]float32, c []float32, ldc int, alpha, beta float32) {
	for i, row := range acc {
		crow := c[i*ldc : i*ldc+4]
		for j, s := range row {
			if beta == 0 {
				crow[j] = alpha * s
			} else {
				crow[j] = float32(alpha*s) + float32(beta*crow[j])
			}
		}
	}
}
