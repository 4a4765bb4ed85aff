//! Winograd's minimal filtering F(2x2, 3x3) for stride-1 3x3 convolutions (Lavin & Gray 2016):
//! each 2x2 block of outputs from a 4x4 tile of input, 16 multiplications per tile and channel
//! pair instead of 36. The kernel and the input tiles are transformed (`U = G g G^T`,
//! `V = B^T d B`), the 16 positions of the transformed tiles are multiplied as 16 GEMMs
//! `M[p] = U[p] @ V[p]` over the channels through the models' GEMM, and the outputs come back by
//! `Y = A^T M A`. Issue #38: the first step (the forward pass, scalar transforms); the input
//! gradient is the forward of the flipped, transposed kernel, the weight gradient the F(3x3, 2x2)
//! form, both still to come, as the choice by measurement.

use super::super::gemm::{matmul, Mat};
use super::{inner_threads, sized, Geometry};
use rayon::prelude::*;

/// Transformed-tile positions (4x4).
const P: usize = 16;

/// Whether F(2x2, 3x3) computes this convolution: 3x3, stride 1, "same" or "valid" padding.
pub fn applies(g: &Geometry) -> bool {
    g.k == 3 && g.stride == 1 && g.pad <= 2
}

/// `U[p][c_out][c_in] = (G g G^T)[p]` of `weight[c_out, c_in, 3, 3]`: computed once per step
/// and shared by every tile (and, later, by the input gradient's flipped kernel).
pub fn kernel_transform(g: &Geometry, weight: &[f32]) -> Vec<f32> {
    let (co, ci) = (g.c_out, g.c_in);
    let mut u = vec![0f32; P * co * ci];
    for o in 0..co {
        for i in 0..ci {
            let w = &weight[(o * ci + i) * 9..][..9];
            // G w: 4x3, then (G w) G^T: 4x4.
            let mut gw = [[0f32; 3]; 4];
            for c in 0..3 {
                let (a, b, d) = (w[c], w[3 + c], w[6 + c]);
                gw[0][c] = a;
                gw[1][c] = 0.5 * (a + b + d);
                gw[2][c] = 0.5 * (a - b + d);
                gw[3][c] = d;
            }
            for (r, row) in gw.iter().enumerate() {
                let (a, b, d) = (row[0], row[1], row[2]);
                let t = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                for (c, v) in t.iter().enumerate() {
                    u[((r * 4 + c) * co + o) * ci + i] = *v;
                }
            }
        }
    }
    u
}

/// Tiles per image: `(rows, cols)` of 2x2 output blocks.
fn tiles(g: &Geometry) -> (usize, usize) {
    (g.h_out().div_ceil(2), g.w_out().div_ceil(2))
}

/// `V = B^T d B` of the 4x4 tile of plane `x[h, w]` whose top-left input is `(y0, x0)` (in
/// padded coordinates: zeros outside the plane).
fn input_tile(x: &[f32], h: usize, w: usize, y0: isize, x0: isize) -> [f32; P] {
    let mut d = [[0f32; 4]; 4];
    for (r, row) in d.iter_mut().enumerate() {
        let y = y0 + r as isize;
        if y < 0 || y >= h as isize {
            continue;
        }
        for (c, v) in row.iter_mut().enumerate() {
            let xx = x0 + c as isize;
            if xx >= 0 && xx < w as isize {
                *v = x[y as usize * w + xx as usize];
            }
        }
    }
    // B^T d: rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3); then the same on columns.
    let mut t = [[0f32; 4]; 4];
    for c in 0..4 {
        t[0][c] = d[0][c] - d[2][c];
        t[1][c] = d[1][c] + d[2][c];
        t[2][c] = d[2][c] - d[1][c];
        t[3][c] = d[1][c] - d[3][c];
    }
    let mut v = [0f32; P];
    for r in 0..4 {
        v[r * 4] = t[r][0] - t[r][2];
        v[r * 4 + 1] = t[r][1] + t[r][2];
        v[r * 4 + 2] = t[r][2] - t[r][1];
        v[r * 4 + 3] = t[r][1] - t[r][3];
    }
    v
}

/// `Y = A^T m A`: the 2x2 outputs of one transformed tile.
fn output_tile(m: &[f32; P]) -> [[f32; 2]; 2] {
    // A^T m: rows (m0 + m1 + m2, m1 - m2 - m3); then the same on columns.
    let mut t = [[0f32; 4]; 2];
    for c in 0..4 {
        t[0][c] = m[c] + m[4 + c] + m[8 + c];
        t[1][c] = m[4 + c] - m[8 + c] - m[12 + c];
    }
    let mut y = [[0f32; 2]; 2];
    for r in 0..2 {
        y[r][0] = t[r][0] + t[r][1] + t[r][2];
        y[r][1] = t[r][1] - t[r][2] - t[r][3];
    }
    y
}

/// Per-thread buffers: the transformed tiles `V[p][c_in][tiles]` and products `M[p][c_out][tiles]`.
#[derive(Default)]
struct Buffers {
    v: Vec<f32>,
    m: Vec<f32>,
}

/// `y[n, c_out, h_out, w_out]` from `x[n, c_in, h, w]` and the transformed kernel `u`
/// ([`kernel_transform`]), per chunk of samples in parallel.
pub fn forward(g: &Geometry, x: &[f32], u: &[f32]) -> Vec<f32> {
    let (th, tw) = tiles(g);
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let per_image = th * tw;
    let in_len = g.c_in * g.h * g.w;
    let out_len = g.c_out * h_out * w_out;
    let size = g.chunk();
    let threads = inner_threads(g.n.div_ceil(size));
    let mut y = vec![0f32; g.n * out_len];
    y.par_chunks_mut(size * out_len).enumerate().for_each_init(Buffers::default, |buf, (chunk, yc)| {
        let count = yc.len() / out_len;
        let t = count * per_image;
        let v = sized(&mut buf.v, P * g.c_in * t);
        for s in 0..count {
            let xs = &x[(chunk * size + s) * in_len..][..in_len];
            for ci in 0..g.c_in {
                let plane = &xs[ci * g.h * g.w..][..g.h * g.w];
                for ty in 0..th {
                    for tx in 0..tw {
                        let tile = input_tile(plane, g.h, g.w, (2 * ty) as isize - g.pad as isize, (2 * tx) as isize - g.pad as isize);
                        let col = s * per_image + ty * tw + tx;
                        for (p, val) in tile.iter().enumerate() {
                            v[(p * g.c_in + ci) * t + col] = *val;
                        }
                    }
                }
            }
        }
        let m = sized(&mut buf.m, P * g.c_out * t);
        for p in 0..P {
            let up = &u[p * g.c_out * g.c_in..][..g.c_out * g.c_in];
            let vp = &v[p * g.c_in * t..][..g.c_in * t];
            matmul(&mut m[p * g.c_out * t..][..g.c_out * t], g.c_out, t, g.c_in, Mat::rows(up, g.c_in), Mat::rows(vp, t), threads, false);
        }
        for s in 0..count {
            let ys = &mut yc[s * out_len..][..out_len];
            for co in 0..g.c_out {
                let plane = &mut ys[co * h_out * w_out..][..h_out * w_out];
                for ty in 0..th {
                    for tx in 0..tw {
                        let col = s * per_image + ty * tw + tx;
                        let mut mt = [0f32; P];
                        for (p, val) in mt.iter_mut().enumerate() {
                            *val = m[(p * g.c_out + co) * t + col];
                        }
                        let out = output_tile(&mt);
                        for (r, row) in out.iter().enumerate() {
                            let oy = 2 * ty + r;
                            if oy >= h_out {
                                continue;
                            }
                            for (c, val) in row.iter().enumerate() {
                                let ox = 2 * tx + c;
                                if ox < w_out {
                                    plane[oy * w_out + ox] = *val;
                                }
                            }
                        }
                    }
                }
            }
        }
    });
    y
}

#[cfg(test)]
mod tests {
    use super::super::{im2col_forward, Geometry};
    use super::{applies, forward, kernel_transform};

    /// A deterministic spread of values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// F(2x2, 3x3) against the im2col convolution (float32 GEMM both) on ResNet-20's three stages,
    /// odd planes (partial tiles), the ConvNet's 28/14/7 planes, and "valid" padding; the stated
    /// tolerance is relative to the largest output (Lavin & Gray's F(2x2) error is a few ulps).
    #[test]
    fn matches_the_direct_convolution() {
        for &(n, c_in, h, w, c_out, pad) in &[
            (3, 16, 32, 32, 16, 1),
            (2, 32, 16, 16, 32, 1),
            (2, 64, 8, 8, 64, 1),
            (2, 8, 7, 9, 12, 1),
            (3, 1, 28, 28, 8, 1),
            (2, 32, 14, 14, 16, 1),
            (2, 16, 7, 7, 8, 1),
            (2, 4, 9, 6, 5, 0),
        ] {
            let g = Geometry { n, c_in, h, w, c_out, k: 3, stride: 1, pad };
            assert!(applies(&g));
            let x = values(n * c_in * h * w, 1);
            let wt = values(c_out * c_in * 9, 2);
            let want = im2col_forward(&g, &x, &wt);
            let got = forward(&g, &x, &kernel_transform(&g, &wt));
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            let err = want.iter().zip(&got).fold(0f32, |a, (p, q)| a.max((p - q).abs()));
            assert!(err <= 1e-5 * scale.max(1.0), "{g:?}: max error {err} (outputs up to {scale})");
        }
    }
}
