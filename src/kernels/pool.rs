//! Max pooling without padding or dilation on contiguous NCHW f32 data, one plane (sample,
//! channel) per task. The forward pass records which window element won (one byte per output),
//! so the backward pass is a scatter; burn flex checks every window element against the image
//! bounds and was 18% of a ConvNet training step.

use super::uninit::zeroed_parts;
use rayon::prelude::*;

/// Sizes of one pooling.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Planes: batch size times channels.
    pub planes: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window side (at most 15, so a window position fits in a byte).
    pub k: usize,
    /// Stride (both axes).
    pub stride: usize,
}

impl Window {
    /// Output height (floor mode, as PyTorch's default).
    pub fn h_out(&self) -> usize {
        (self.h - self.k) / self.stride + 1
    }

    /// Output width.
    pub fn w_out(&self) -> usize {
        (self.w - self.k) / self.stride + 1
    }
}

/// `(output, winner)`: the maximum of each window and the position `dy * k + dx` of the first
/// maximal element in it (a NaN wins, so it propagates as in PyTorch).
pub fn forward(p: &Window, x: &[f32]) -> (Vec<f32>, Vec<u8>) {
    assert!(p.k >= 1 && p.k * p.k <= 255 && p.k <= p.h && p.k <= p.w, "max pool window {p:?} out of range");
    let (ho, wo) = (p.h_out(), p.w_out());
    let mut out = vec![0f32; p.planes * ho * wo];
    let mut arg = vec![0u8; p.planes * ho * wo];
    out.par_chunks_mut(ho * wo).zip(arg.par_chunks_mut(ho * wo)).zip(x.par_chunks(p.h * p.w)).for_each(|((o, a), plane)| {
        if p.k == 2 && p.stride == 2 {
            return pool2x2(p, plane, o, a);
        }
        for oy in 0..ho {
            for ox in 0..wo {
                let (mut best, mut at) = (f32::NEG_INFINITY, 0u8);
                let mut first = true;
                for ky in 0..p.k {
                    let row = &plane[(oy * p.stride + ky) * p.w + ox * p.stride..][..p.k];
                    for (kx, &v) in row.iter().enumerate() {
                        if first || wins(v, best) {
                            (best, at, first) = (v, (ky * p.k + kx) as u8, false);
                        }
                    }
                }
                o[oy * wo + ox] = best;
                a[oy * wo + ox] = at;
            }
        }
    });
    (out, arg)
}

/// `a` replaced by `b` when `b` is larger, or NaN where `a` is not (so NaN wins, as in PyTorch).
pub(super) fn wins(b: f32, a: f32) -> bool {
    b > a || (b.is_nan() && !a.is_nan())
}

/// The common 2x2, stride-2 window of one plane, without per-element bounds arithmetic.
fn pool2x2(p: &Window, plane: &[f32], out: &mut [f32], arg: &mut [u8]) {
    let wo = p.w_out();
    for (oy, (orow, arow)) in out.chunks_mut(wo).zip(arg.chunks_mut(wo)).enumerate() {
        let top = &plane[2 * oy * p.w..][..2 * wo];
        let bottom = &plane[(2 * oy + 1) * p.w..][..2 * wo];
        for (((o, a), t), b) in orow.iter_mut().zip(arow.iter_mut()).zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
            let (mut best, mut at) = (t[0], 0u8);
            for (v, i) in [(t[1], 1u8), (b[0], 2), (b[1], 3)] {
                if wins(v, best) {
                    (best, at) = (v, i);
                }
            }
            *o = best;
            *a = at;
        }
    }
}

/// The input gradient: each output's gradient goes to the element that won its window (each
/// plane zeroed by the task that fills it, [`zeroed_parts`]).
pub fn backward(p: &Window, winner: &[u8], dy: &[f32]) -> Vec<f32> {
    let (ho, wo) = (p.h_out(), p.w_out());
    zeroed_parts(p.planes * p.h * p.w, p.h * p.w, |plane, d| {
        let (g, a) = (&dy[plane * ho * wo..][..ho * wo], &winner[plane * ho * wo..][..ho * wo]);
        for oy in 0..ho {
            for ox in 0..wo {
                let at = a[oy * wo + ox] as usize;
                let (ky, kx) = (at / p.k, at % p.k);
                d[(oy * p.stride + ky) * p.w + ox * p.stride + kx] += g[oy * wo + ox];
            }
        }
    })
}
