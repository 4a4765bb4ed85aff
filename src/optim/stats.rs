//! What the probes measure of an update: per-row sums of the weights before and after and of
//! the gradient, left on the device until one transfer per step, and their totals per tensor.
//!
//! This module may import burn's tensors and [`crate::kernels`].

use burn::tensor::Tensor;

/// Per-parameter quantities measured during an update (for probes and divergence checks): the
/// core's raw sums, which its probe-record builder takes.
pub use normwd_core::probe::Sums as UpdateStats;

pub(super) fn to_rows<const D: usize>(t: Tensor<D>) -> Tensor<2> {
    let dims = t.dims();
    let rows = if D >= 2 { dims[0] } else { 1 };
    t.reshape([rows as i32, -1])
}

pub(super) fn host(t: Tensor<2>) -> Vec<f64> {
    t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap_or_default()
}

/// Per-row sums `[||w_r||^2, ||g_r||^2, <w_r,g_r>, <w_r,w'_r>, ||w'_r||^2]` as a `[rows, 5]` tensor,
/// left on the device so all tensors of a step reach the host in one transfer.
pub(super) fn row_sums(w: &Tensor<2>, g: &Tensor<2>, w2: &Tensor<2>) -> Tensor<2> {
    if crate::kernels::applies(w) {
        return crate::kernels::row_sums(w, g, w2);
    }
    row_sums_ops(w, g, w2)
}

/// [`row_sums`] with tensor ops (any device).
pub(super) fn row_sums_ops(w: &Tensor<2>, g: &Tensor<2>, w2: &Tensor<2>) -> Tensor<2> {
    Tensor::cat(
        vec![
            w.clone().powi_scalar(2).sum_dim(1),
            g.clone().powi_scalar(2).sum_dim(1),
            w.clone().mul(g.clone()).sum_dim(1),
            w.clone().mul(w2.clone()).sum_dim(1),
            w2.clone().powi_scalar(2).sum_dim(1),
        ],
        1,
    )
}

/// Turns the concatenated row sums of several tensors into [`UpdateStats`].
pub(super) fn collect_stats(pending: Vec<(String, usize, Tensor<2>)>) -> Vec<UpdateStats> {
    if pending.is_empty() {
        return Vec::new();
    }
    let all = host(Tensor::cat(pending.iter().map(|p| p.2.clone()).collect(), 0));
    let mut at = 0;
    pending
        .into_iter()
        .map(|(path, rows, _)| {
            let mut tot = [0f64; 5];
            let per: Vec<[f64; 5]> = (0..rows)
                .map(|r| {
                    let s = &all[(at + r) * 5..(at + r) * 5 + 5];
                    for i in 0..5 {
                        tot[i] += s[i];
                    }
                    [s[0].sqrt(), s[1].sqrt(), s[2], s[3], s[4].sqrt()]
                })
                .collect();
            at += rows;
            UpdateStats {
                path,
                norm: tot[0].sqrt(),
                grad_norm: tot[1].sqrt(),
                dot_wg: tot[2],
                dot_ww: tot[3],
                norm_after: tot[4].sqrt(),
                rows: per,
                step: None,
                row_steps: Vec::new(),
            }
        })
        .collect()
}
