package gemm

// packB copies the kc×cols block of op(B) at row p0, column j0 into dst as
// kc rows of nr floats, zero-filling columns cols..nr.
func packB(dst, b []float32, ldb int, transB bool, p0, kc, j0, cols, nr int) {
	dst = dst[:kc*nr]
	if !transB {
		for p := 0; p < kc; p++ {
			row := (p0+p)*ldb + j0
			d := dst[p*nr : p*nr+nr]
			copy(d, b[row:row+cols])
			clear(d[cols:])
		}
		return
	}
	if cols < nr {
		for p := 0; p < kc; p++ {
			clear(dst[p*nr+cols : p*nr+nr])
		}
	}
	// op(B)[p][j] = b[j*ldb+p]: each column of the panel is a row of b.
	// Four at a time keeps the strided stores to one pass over dst.
	jj := 0
	for ; jj+4 <= cols; jj += 4 {
		r := (j0+jj)*ldb + p0
		s0 := b[r : r+kc]
		s1 := b[r+ldb : r+ldb+kc]
		s2 := b[r+2*ldb : r+2*ldb+kc]
		s3 := b[r+3*ldb : r+3*ldb+kc]
		for p := range s0 {
			d := dst[p*nr+jj : p*nr+jj+4]
			d[0], d[1], d[2], d[3] = s0[p], s1[p], s2[p], s3[p]
		}
	}
	for ; jj < cols; jj++ {
		r := (j0+jj)*ldb + p0
		for p, v := range b[r : r+kc] {
			dst[p*nr+jj] = v
		}
	}
}
