//! The fully connected layer's product `y = x w^T` and its gradients, as single GEMM calls on
//! the operands' own strides. Outputs are written channel-major (`y` as the transpose of a
//! contiguous `[out, n]`, `dx` of `[in, n]`), the layout the batch-norm kernel reads in place,
//! and they are allocated once, not zeroed and copied as burn flex's matmul outputs are; small
//! products run on one thread (handing a 128x10x512 product to the pool cost more than it).

/// A strided matrix: pointer, row stride, column stride, slice length (checked before reads).
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// The values the strides address.
    pub data: &'a [f32],
    /// Offset of element (0, 0).
    pub offset: usize,
    /// Row stride.
    pub rs: isize,
    /// Column stride.
    pub cs: isize,
}

impl View<'_> {
    fn fits(&self, rows: usize, cols: usize) -> bool {
        if rows == 0 || cols == 0 {
            return true;
        }
        let last = self.offset as isize + (rows - 1) as isize * self.rs + (cols - 1) as isize * self.cs;
        self.rs >= 0 && self.cs >= 0 && last < self.data.len() as isize
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        View { rs: self.cs, cs: self.rs, ..self }
    }
}

/// `lhs[m, k] @ rhs[k, n]` stored channel-major: element `(i, j)` at `j * m + i` (the transpose
/// of a contiguous `[n, m]`).
pub fn matmul_cm(m: usize, n: usize, k: usize, lhs: View<'_>, rhs: View<'_>) -> Vec<f32> {
    assert!(lhs.fits(m, k) && rhs.fits(k, n), "linear: an operand is smaller than its strides say");
    let mut out = vec![0f32; m * n];
    let threads = if m * n * k >= 1 << 20 { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: every element the strides address lies inside the operands' slices (checked above)
    // and `out` holds m * n elements; the operands are only read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            m as isize,
            1,
            false,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.cs,
            lhs.rs,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.cs,
            rhs.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            threads,
        );
    }
    out
}
