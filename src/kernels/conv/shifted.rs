//! Stride-1 convolution without im2col ("shifted GEMM"). In a zero-padded input plane of width
//! `wp`, the tap `(ky, kx)` of output pixel `q = oy * wp + ox` reads pixel `q + ky * wp + kx`: a
//! constant shift. So with `x3[(ci, kx), q] = xpad[ci, q + kx]` (the padded input copied `k`
//! times, each copy shifted by one), the output is `k` accumulated GEMMs
//! `y[:, q] += w_ky[c_out, (ci, kx)] @ x3[:, q + ky * wp]`, computed at every position of the
//! padded planes and cropped. im2col builds a `k * k` times larger matrix from line-sized copies
//! (ResNet-20: 24% of the convolution's forward time); this builds a `k` times larger one, mostly
//! from plane-sized copies, at the price of the positions cropped away.

use super::super::uninit::{as_uninit, zeroed_parts};
use super::{inner_threads, kept, l2_bytes, matmul, pad_plane, sized, sum_in_order, Geometry, Mat, SCRATCH};
use rayon::prelude::*;

/// Whether the shifted form suits `g`: stride 1, a kernel wider than 1, at least 8 input
/// channels, and at most 30% of the computed positions cropped away (32x32 and 16x16 ResNet
/// planes: 13% and 27%; its 8x8 planes, 56%, stay with im2col). With fewer channels each of
/// the `k` GEMMs is too shallow (`c_in * k` terms): the ConvNet's first layer (1 channel) ran
/// 7% slower this way, with one GEMM of `c_in * k * k` terms on im2col it does not.
pub fn suits(g: &Geometry) -> bool {
    g.stride == 1 && g.k > 1 && g.c_in >= 8 && 10 * plane(g) <= 13 * g.cols()
}

/// Positions per padded plane.
fn plane(g: &Geometry) -> usize {
    (g.h + 2 * g.pad) * (g.w + 2 * g.pad)
}

/// Samples per GEMM: as many (up to 4) as keep the shifted copy within the per-core L2.
fn chunk(g: &Geometry) -> usize {
    (l2_bytes() / (g.c_in * g.k * plane(g) * 4).max(1)).clamp(1, 4)
}

/// The weight as `k` matrices `[c_out, c_in * k]`, one per kernel row `ky`.
fn weight_rows(g: &Geometry, weight: &[f32]) -> Vec<f32> {
    let (k, cols) = (g.k, g.c_in * g.k);
    let mut out = vec![0f32; k * g.c_out * cols];
    for ky in 0..k {
        for co in 0..g.c_out {
            for ci in 0..g.c_in {
                let src = &weight[((co * g.c_in + ci) * k + ky) * k..][..k];
                out[(ky * g.c_out + co) * cols + ci * k..][..k].copy_from_slice(src);
            }
        }
    }
    out
}

/// Fills `x3` (`c_in * k` rows of `row` values) for samples `first..first + count`, their
/// padded planes side by side; everything outside the images is zero.
fn shifted_copy(g: &Geometry, x: &[f32], first: usize, count: usize, x3: &mut [f32], row: usize) {
    let (pp, p) = (plane(g), g.pad);
    for ci in 0..g.c_in {
        let rows = &mut x3[ci * g.k * row..][..g.k * row];
        let (base, shifted) = rows.split_at_mut(row);
        // Only the padding is zeroed: a whole-row fill first was ~3% of a ResNet-20 step.
        for (s, padded) in base[..count * pp].chunks_mut(pp).enumerate() {
            pad_plane(&x[((first + s) * g.c_in + ci) * g.h * g.w..][..g.h * g.w], g.h, g.w, p, as_uninit(padded));
        }
        base[count * pp..].fill(0.0);
        for (kx, dst) in (1..g.k).zip(shifted.chunks_mut(row)) {
            dst[..row - kx].copy_from_slice(&base[kx..]);
            super::fill_short(&mut dst[row - kx..], 0.0);
        }
    }
}

/// `y[n, c_out, h_out, w_out]` from `x[n, c_in, h, w]` and `weight[c_out, c_in, k, k]`, for a
/// geometry that [`suits`] this form.
pub fn forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    let (wp, pp, k) = (g.w + 2 * g.pad, plane(g), g.k);
    let (ho, wo, l) = (g.h_out(), g.w_out(), g.cols());
    let size = chunk(g);
    let threads = inner_threads(g.n.div_ceil(size));
    let wr = weight_rows(g, weight);
    let depth = g.c_in * k;
    zeroed_parts(g.n * g.out_len(), size * g.out_len(), |chunk, yc| {
        kept(&SCRATCH, |scratch| {
            let count = yc.len() / g.out_len();
            let positions = count * pp;
            // Room for the largest shift past the last position.
            let row = positions + (k - 1) * wp + k;
            let x3 = sized(&mut scratch.cols, depth * row);
            shifted_copy(g, x, chunk * size, count, x3, row);
            let out = sized(&mut scratch.mat, g.c_out * positions);
            for ky in 0..k {
                let rhs = Mat::rows(&x3[ky * wp..], row);
                matmul(out, g.c_out, positions, depth, Mat::rows(&wr[ky * g.c_out * depth..], depth), rhs, threads, ky > 0);
            }
            for (s, ys) in yc.chunks_mut(g.out_len()).enumerate() {
                for (co, dst) in ys.chunks_mut(l).enumerate() {
                    let src = &out[co * positions + s * pp..];
                    for (oy, line) in dst.chunks_mut(wo).enumerate().take(ho) {
                        line.copy_from_slice(&src[oy * wp..][..wo]);
                    }
                }
            }
        })
    })
}

/// `dweight[c_out, c_in, k, k]` from `x` and the output gradient `dy`, for a geometry that
/// [`suits`] this form: per chunk of samples and kernel row `ky`,
/// `dW_ky^T[(ci, kx), c_out] = x3[:, q + ky * wp] @ dypad^T`, where `dypad` is `dy` at the
/// padded planes' positions and zero at the cropped ones. The chunks' sums are added in chunk
/// order, so the result does not depend on the thread count.
pub fn weight_grad(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (wp, pp, k) = (g.w + 2 * g.pad, plane(g), g.k);
    let (ho, wo, l) = (g.h_out(), g.w_out(), g.cols());
    let depth = g.c_in * k;
    let size = chunk(g);
    let threads = inner_threads(g.n.div_ceil(size));
    let part = k * depth * g.c_out;
    let mut partial = vec![0f32; g.n.div_ceil(size) * part];
    partial.par_chunks_mut(part).enumerate().for_each(|(chunk, dwt)| {
        kept(&SCRATCH, |scratch| {
            let first = chunk * size;
            let count = size.min(g.n - first);
            let positions = count * pp;
            let row = positions + (k - 1) * wp + k;
            let x3 = sized(&mut scratch.cols, depth * row);
            shifted_copy(g, x, first, count, x3, row);
            let dyp = sized(&mut scratch.mat, g.c_out * positions);
            for (co, planes) in dyp.chunks_mut(positions).enumerate() {
                for (s, padded) in planes.chunks_mut(pp).enumerate() {
                    let src = &dy[((first + s) * g.c_out + co) * l..][..l];
                    for (line, out) in src.chunks(wo).zip(padded.chunks_mut(wp)) {
                        out[..wo].copy_from_slice(line);
                        super::fill_short(&mut out[wo..], 0.0);
                    }
                    padded[ho * wp..].fill(0.0);
                }
            }
            for (ky, dst) in dwt.chunks_mut(depth * g.c_out).enumerate() {
                matmul(dst, depth, g.c_out, positions, Mat::rows(&x3[ky * wp..], row), Mat::transposed(dyp, positions), threads, false);
            }
        })
    });
    let sum = sum_in_order(&partial, part);
    let mut dweight = vec![0f32; part];
    for ky in 0..k {
        for ci in 0..g.c_in {
            for kx in 0..k {
                let src = &sum[(ky * depth + ci * k + kx) * g.c_out..][..g.c_out];
                for (co, &v) in src.iter().enumerate() {
                    dweight[((co * g.c_in + ci) * k + ky) * k + kx] = v;
                }
            }
        }
    }
    dweight
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::{flipped_transpose, im2col_forward, im2col_weight_grad, input_grad_scatter, transposed_geometry, Geometry};

    /// `(n, c_in, h, w, c_out, k, pad)` of a stride-1 convolution.
    type Case = (usize, usize, usize, usize, usize, usize, usize);

    /// Runs `pair` (the shifted result and its reference) on each case's geometry and checks
    /// that they differ by less than `tol` anywhere.
    fn compare(cases: &[Case], tol: f32, what: &str, pair: impl Fn(&Geometry) -> (Vec<f32>, Vec<f32>)) {
        for &(n, c_in, h, w, c_out, k, pad) in cases {
            let g = Geometry { n, c_in, h, w, c_out, k, stride: 1, pad };
            let (a, b) = pair(&g);
            assert_eq!(a.len(), b.len(), "{g:?}: {what} of different lengths");
            let d = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            assert!(d < tol, "{g:?}: shifted and reference {what} differ by {d}");
        }
    }

    /// Deterministic values in [-0.5, 0.5) (also the direct form's tests').
    pub(in super::super) fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1u32 << 24) as f32 - 0.5).collect()
    }

    /// The shifted form equals im2col's on the geometries it takes: padding 1 and 0, kernels 3
    /// and 5, non-square planes, a batch that is not a multiple of the chunk. The two add the
    /// same products in different orders, hence the tolerance (f32, at most 16*9 terms ~ 1).
    #[test]
    fn shifted_forward_equals_im2col() {
        let cases = [
            (5, 8, 20, 17, 4, 3, 1),
            (3, 9, 24, 20, 3, 3, 0),
            (2, 8, 30, 30, 2, 5, 2),
            (7, 16, 32, 32, 16, 3, 1),
            (3, 16, 16, 16, 32, 3, 1),
        ];
        compare(&cases, 1e-5, "outputs", |g| {
            assert!(super::suits(g), "{g:?} should take the shifted form");
            let x = values(g.n * g.c_in * g.h * g.w, 1);
            let wt = values(g.c_out * g.c_in * g.k * g.k, 2);
            (super::forward(g, &x, &wt), im2col_forward(g, &x, &wt))
        });
    }

    /// The input gradient through the flipped, transposed shifted convolution equals im2col's
    /// GEMM and fold-back, for padding 1 and 0 and kernels 3 and 5.
    #[test]
    fn shifted_input_gradient_equals_col2im() {
        let cases = [(3, 4, 20, 17, 8, 3, 1), (2, 3, 26, 22, 9, 3, 2), (2, 2, 30, 30, 8, 5, 2), (5, 16, 32, 32, 16, 3, 1)];
        compare(&cases, 1e-5, "input gradients", |g| {
            let t = transposed_geometry(g).filter(super::suits).unwrap_or_else(|| panic!("{g:?} should take the shifted form"));
            let dy = values(g.n * g.out_len(), 3);
            let wt = values(g.c_out * g.c_in * g.k * g.k, 4);
            (super::forward(&t, &dy, &flipped_transpose(g, &wt)), input_grad_scatter(g, &wt, &dy))
        });
    }

    /// The weight gradient of the shifted form equals im2col's (sums over up to 4 samples of
    /// 1024 positions: a looser tolerance).
    #[test]
    fn shifted_weight_gradient_equals_im2col() {
        let cases = [(5, 8, 20, 17, 4, 3, 1), (3, 9, 24, 20, 3, 3, 0), (2, 8, 30, 30, 2, 5, 2), (7, 16, 32, 32, 16, 3, 1)];
        compare(&cases, 1e-3, "weight gradients", |g| {
            let x = values(g.n * g.c_in * g.h * g.w, 5);
            let dy = values(g.n * g.out_len(), 6);
            (super::weight_grad(g, &x, &dy), im2col_weight_grad(g, &x, &dy))
        });
    }
}
