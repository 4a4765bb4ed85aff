//! The one call into the `gemm` crate (the GEMM burn flex uses too) that the engine's convolution,
//! linear and attention kernels and Muon's Newton-Schulz iteration ([`crate::theory::muon`]) share:
//! strided operands, a row-major destination, bounds checked first.

pub use gemm::Parallelism;
use std::marker::PhantomData;

/// A matrix view for [`matmul`]: pointer, row stride, column stride, and the length of the
/// slice it was made from (checked against the strides before any read), borrowing that slice.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    ptr: *const f32,
    rs: isize,
    cs: isize,
    len: usize,
    data: PhantomData<&'a [f32]>,
}

impl<'a> Mat<'a> {
    /// A row-major `[_, cols]` matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Mat { ptr: data.as_ptr(), rs: cols as isize, cs: 1, len: data.len(), data: PhantomData }
    }

    /// Element `(0, 0)` at `data[offset]`, the rest at the given (non-negative) strides.
    pub fn strided(data: &'a [f32], offset: usize, rs: isize, cs: isize) -> Self {
        assert!(rs >= 0 && cs >= 0 && offset <= data.len(), "matmul: strides {rs}, {cs} from offset {offset} of {}", data.len());
        Mat { ptr: data[offset..].as_ptr(), rs, cs, len: data.len() - offset, data: PhantomData }
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        Mat { rs: self.cs, cs: self.rs, ..self }
    }

    /// Whether a `rows x cols` matrix with these strides stays inside the slice.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || ((rows - 1) as isize * self.rs + (cols - 1) as isize * self.cs) < self.len as isize
    }

    /// The transpose of a row-major `[_, cols]` matrix.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Mat { ptr: data.as_ptr(), rs: 1, cs: cols as isize, len: data.len(), data: PhantomData }
    }
}

/// `dst[m, n] = lhs[m, k] @ rhs[k, n]` into a row-major `dst` that need not be initialized:
/// GEMM writes every element without reading it when it does not accumulate.
pub fn matmul_uninit(
    dst: &mut [std::mem::MaybeUninit<f32>],
    m: usize,
    n: usize,
    k: usize,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    threads: Parallelism,
) {
    assert!(dst.len() >= m * n, "matmul: destination too small");
    assert!(lhs.fits(m, k) && rhs.fits(k, n), "matmul: an operand is smaller than its strides say");
    // SAFETY: as in `matmul`; with `read_dst = false` the destination is only written.
    unsafe { call(dst.as_mut_ptr().cast::<f32>(), m, n, k, lhs, rhs, threads, false) }
}

/// `dst[m, n] = lhs[m, k] @ rhs[k, n]` into a row-major `dst` (`+=` when `add`).
#[allow(clippy::too_many_arguments)] // gemm's own call, narrowed to what the kernels vary
pub fn matmul(dst: &mut [f32], m: usize, n: usize, k: usize, lhs: Mat<'_>, rhs: Mat<'_>, threads: Parallelism, add: bool) {
    assert!(dst.len() >= m * n, "matmul: destination too small");
    assert!(lhs.fits(m, k) && rhs.fits(k, n), "matmul: an operand is smaller than its strides say");
    // SAFETY: every element the strides address lies inside the operands' slices and `dst`
    // (checked above); the operands are only read.
    unsafe { call(dst.as_mut_ptr(), m, n, k, lhs, rhs, threads, add) }
}

/// The `gemm` call itself.
///
/// # Safety
/// `dst` must address `m * n` writable elements (readable when `add`), and the operands' strides
/// must stay inside their slices.
#[allow(clippy::too_many_arguments)]
unsafe fn call(dst: *mut f32, m: usize, n: usize, k: usize, lhs: Mat<'_>, rhs: Mat<'_>, threads: Parallelism, add: bool) {
    // SAFETY: the caller's promises are gemm's preconditions.
    unsafe {
        gemm::gemm(
            m, n, k, dst, 1, n as isize, add, lhs.ptr, lhs.cs, lhs.rs, rhs.ptr, rhs.cs, rhs.rs, 1.0, 1.0, false, false, false, threads,
        );
    }
}
