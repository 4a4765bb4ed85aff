//! Batch norm, ReLU and 2x2 stride-2 max pooling as one op (the ConvNet's block tail), on
//! contiguous NCHW f32 data. Fused, the full-size normalized map is never written: the forward
//! pass reads the input once after the statistics and writes the pooled map, and the backward
//! pass reads the pooled gradient instead of a full-size one that pooling's backward would first
//! zero and scatter. On this memory-bound CPU that is most of these ops' time.

use super::batch_norm::{scale, stats, Dims, Stats};
use super::pool::wins;
use super::uninit::{assume_written, filled};
use rayon::prelude::*;

/// Sizes of an NCHW map.
#[derive(Debug, Clone, Copy)]
pub struct Map {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

/// Output side of the pooling (floor mode: an odd last row or column is not pooled).
fn pooled(side: usize) -> usize {
    side / 2
}

/// `(pooled output, winner, statistics)`: `maxpool2x2(relu(bn(x)))` with batch statistics; the
/// winner is the position `dy * 2 + dx` of the first maximal element of each window.
pub fn forward(x: &[f32], map: Map, gamma: &[f32], beta: &[f32], eps: f64) -> (Vec<f32>, Vec<u8>, Stats) {
    let Map { n, c, h, w } = map;
    assert!(h >= 2 && w >= 2, "fused 2x2 pooling needs maps of at least 2x2, got {h}x{w}");
    let st = stats(x, Dims { n, c, s: h * w }, eps);
    let sc = scale(gamma, &st);
    let (ho, wo) = (pooled(h), pooled(w));
    let mut out = vec![0f32; n * c * ho * wo];
    let mut arg = vec![0u8; n * c * ho * wo];
    out.par_chunks_mut(ho * wo).zip(arg.par_chunks_mut(ho * wo)).zip(x.par_chunks(h * w)).enumerate().for_each(|(plane, ((o, a), xp))| {
        let ch = plane % c;
        let (k, m, b) = (sc[ch], st.mean[ch], beta[ch]);
        let z = |v: f32| (k * (v - m) + b).max(0.0);
        for oy in 0..ho {
            let top = &xp[2 * oy * w..][..2 * wo];
            let bottom = &xp[(2 * oy + 1) * w..][..2 * wo];
            let (orow, arow) = (&mut o[oy * wo..][..wo], &mut a[oy * wo..][..wo]);
            for (((o, a), t), bt) in orow.iter_mut().zip(arow.iter_mut()).zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
                let (mut best, mut at) = (z(t[0]), 0u8);
                for (v, i) in [(z(t[1]), 1u8), (z(bt[0]), 2), (z(bt[1]), 3)] {
                    if wins(v, best) {
                        (best, at) = (v, i);
                    }
                }
                *o = best;
                *a = at;
            }
        }
    });
    (out, arg, st)
}

/// Gradients `(dx, dgamma, dbeta)` from the pooled output gradient `dy[n, c, h/2, w/2]`. Only a
/// window's winner gets gradient, and only where the ReLU passed (`bn(x) > 0` there); the batch
/// norm backward is then as in [`super::batch_norm::backward`].
pub fn backward(x: &[f32], dy: &[f32], winner: &[u8], map: Map, gamma: &[f32], beta: &[f32], st: &Stats) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Map { n, c, h, w } = map;
    let sc = scale(gamma, st);
    let (ho, wo) = (pooled(h), pooled(w));
    let position = |oy: usize, ox: usize, at: u8| (2 * oy + (at >> 1) as usize) * w + 2 * ox + (at & 1) as usize;
    // The gradient reaching the normalization at each window's winner (0 where the ReLU stopped it).
    let through = |ch: usize, xp: &[f32], oy: usize, ox: usize, g: f32, at: u8| {
        let v = xp[position(oy, ox, at)] - st.mean[ch];
        (if sc[ch] * v + beta[ch] > 0.0 { g } else { 0.0 }, v)
    };
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            (0..n).fold((0f64, 0f64), |(s_dy, s_dyxc), i| {
                let plane = i * c + ch;
                let (xp, gp, ap) = (&x[plane * h * w..][..h * w], &dy[plane * ho * wo..][..ho * wo], &winner[plane * ho * wo..][..ho * wo]);
                let (mut p, mut q) = (0f32, 0f32);
                for oy in 0..ho {
                    for ox in 0..wo {
                        let (g, v) = through(ch, xp, oy, ox, gp[oy * wo + ox], ap[oy * wo + ox]);
                        (p, q) = (p + g, q + g * v);
                    }
                }
                (s_dy + p as f64, s_dyxc + q as f64)
            })
        })
        .collect();
    let count = (n * h * w) as f64;
    let mut coef = vec![(0f32, 0f32, 0f32); c];
    let (mut dgamma, mut dbeta) = (vec![0f32; c], vec![0f32; c]);
    for (ch, &(s_dy, s_dyxc)) in sums.iter().enumerate() {
        let inv = st.invstd[ch] as f64;
        let k = gamma[ch] as f64 * inv;
        coef[ch] = (k as f32, (-k * inv * inv * s_dyxc / count) as f32, (-k * s_dy / count) as f32);
        dgamma[ch] = (s_dyxc * inv) as f32;
        dbeta[ch] = s_dy as f32;
    }
    let fill = |dx: &mut [std::mem::MaybeUninit<f32>]| {
        dx.par_chunks_mut(h * w).zip(x.par_chunks(h * w)).enumerate().for_each(|(plane, (dp, xp))| {
            let ch = plane % c;
            let ((a, b, e), m) = (coef[ch], st.mean[ch]);
            // Every element gets the normalization's share; the winners add their pooled gradient.
            for (d, &v) in dp.iter_mut().zip(xp) {
                d.write(b * (v - m) + e);
            }
            // SAFETY: the loop above wrote every slot of the plane.
            let dp = unsafe { assume_written(dp) };
            let (gp, ap) = (&dy[plane * ho * wo..][..ho * wo], &winner[plane * ho * wo..][..ho * wo]);
            for oy in 0..ho {
                for ox in 0..wo {
                    let at = ap[oy * wo + ox];
                    let (g, _) = through(ch, xp, oy, ox, gp[oy * wo + ox], at);
                    dp[position(oy, ox, at)] += a * g;
                }
            }
        })
    };
    // SAFETY: the planes cover all `x.len()` slots, each written in its plane's first loop.
    let dx = unsafe { filled(x.len(), fill) };
    (dx, dgamma, dbeta)
}
