//! The fully connected layer's product `y = x w^T` and its gradients, as single GEMM calls on
//! the operands' own strides. Outputs are written channel-major (`y` as the transpose of a
//! contiguous `[out, n]`, `dx` of `[in, n]`), the layout the batch-norm kernel reads in place,
//! or row-major where the next ops read rows (the transformer's norms, attention, residual sums),
//! and they are allocated once and written by the product, not zeroed first and copied as
//! burn flex's matmul outputs are; small products run on one thread (handing a 128x10x512
//! product to the pool cost more than it).

use super::gemm::{matmul_uninit, Mat};

/// `lhs[m, k] @ rhs[k, n]` stored channel-major: element `(i, j)` at `j * m + i`, i.e. the
/// row-major `[n, m]` product `rhs^T @ lhs^T`.
pub fn matmul_cm(m: usize, n: usize, k: usize, lhs: Mat<'_>, rhs: Mat<'_>) -> Vec<f32> {
    matmul_rm(n, m, k, rhs.t(), lhs.t())
}

/// `lhs[m, k] @ rhs[k, n]` stored row-major.
pub fn matmul_rm(m: usize, n: usize, k: usize, lhs: Mat<'_>, rhs: Mat<'_>) -> Vec<f32> {
    let threads = if m * n * k >= 1 << 20 { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: the product writes all `m * n` elements.
    unsafe { super::uninit::filled(m * n, |out| matmul_uninit(out, m, n, k, lhs, rhs, threads)) }
}
