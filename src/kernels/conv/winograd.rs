//! Winograd's minimal filtering F(2x2, 3x3) for stride-1 3x3 convolutions (Lavin & Gray 2016):
//! each 2x2 block of outputs from a 4x4 tile of input, 16 multiplications per tile and channel
//! pair instead of 36. The kernel and the input tiles are transformed (`U = G g G^T`,
//! `V = B^T d B`), the 16 positions of the transformed tiles are multiplied as 16 GEMMs
//! `M[p] = U[p] @ V[p]` over the channels through the models' GEMM, and the outputs come back by
//! `Y = A^T M A`. The input gradient is the forward of the flipped, transposed kernel; the weight
//! gradient is the transposed form, `dW = G^T [sum over tiles (A dy A^T) ⊙ (B^T d B)] G`
//! (F(3x3, 2x2)), its sum over tiles 16 GEMMs again. Issue #38: scalar transforms so far, not yet
//! chosen by the engine.

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

/// `V[p][c_in][tiles]` of samples `first..first + count` (their tiles side by side): the input
/// tiles every output block reads, transformed.
fn transform_inputs(g: &Geometry, x: &[f32], first: usize, count: usize, v: &mut [f32]) {
    let (th, tw) = tiles(g);
    let per_image = th * tw;
    let t = count * per_image;
    let in_len = g.c_in * g.h * g.w;
    for s in 0..count {
        let xs = &x[(first + s) * in_len..][..in_len];
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
}

/// `A dy A^T` of a 2x2 block of output gradient (zeros past the plane's edge): the weight
/// gradient's transform, by the transposition of `Y = A^T M A`.
fn grad_tile(dy: &[[f32; 2]; 2]) -> [f32; P] {
    // A = [[1, 0], [1, 1], [1, -1], [0, -1]] on rows, then on columns.
    let mut t = [[0f32; 2]; 4];
    for c in 0..2 {
        t[0][c] = dy[0][c];
        t[1][c] = dy[0][c] + dy[1][c];
        t[2][c] = dy[0][c] - dy[1][c];
        t[3][c] = -dy[1][c];
    }
    let mut out = [0f32; P];
    for r in 0..4 {
        out[r * 4] = t[r][0];
        out[r * 4 + 1] = t[r][0] + t[r][1];
        out[r * 4 + 2] = t[r][0] - t[r][1];
        out[r * 4 + 3] = -t[r][1];
    }
    out
}

/// `G^T s G`: a 3x3 weight gradient from its 4x4 transformed sum (the transposition of
/// `U = G g G^T`).
fn kernel_grad(s: &[f32; P]) -> [f32; 9] {
    // G^T = [[1, 1/2, 1/2, 0], [0, 1/2, -1/2, 0], [0, 1/2, 1/2, 1]] on rows, then on columns.
    let mut t = [[0f32; 4]; 3];
    for c in 0..4 {
        let (a, b, d, e) = (s[c], s[4 + c], s[8 + c], s[12 + c]);
        t[0][c] = a + 0.5 * (b + d);
        t[1][c] = 0.5 * (b - d);
        t[2][c] = 0.5 * (b + d) + e;
    }
    let mut w = [0f32; 9];
    for r in 0..3 {
        let (a, b, d, e) = (t[r][0], t[r][1], t[r][2], t[r][3]);
        w[r * 3] = a + 0.5 * (b + d);
        w[r * 3 + 1] = 0.5 * (b - d);
        w[r * 3 + 2] = 0.5 * (b + d) + e;
    }
    w
}

/// The weight gradient `dweight[c_out, c_in, 3, 3]` from `x` and the output gradient `dy`:
/// per chunk of samples, `S[p] = DY[p] @ V[p]^T` (16 GEMMs summing over the tiles), then
/// `G^T S G`. Chunks are added in order, so the result does not depend on the threads.
pub fn weight_grad(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (th, tw) = tiles(g);
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let per_image = th * tw;
    let out_len = g.c_out * h_out * w_out;
    let size = g.chunk();
    let chunks = g.n.div_ceil(size);
    let threads = inner_threads(chunks);
    let slen = P * g.c_out * g.c_in;
    let mut partial = vec![0f32; chunks * slen];
    partial.par_chunks_mut(slen).enumerate().for_each_init(Buffers::default, |buf, (chunk, sp)| {
        let first = chunk * size;
        let count = size.min(g.n - first);
        let t = count * per_image;
        let v = sized(&mut buf.v, P * g.c_in * t);
        transform_inputs(g, x, first, count, v);
        let m = sized(&mut buf.m, P * g.c_out * t);
        for s in 0..count {
            let ds = &dy[(first + s) * out_len..][..out_len];
            for co in 0..g.c_out {
                let plane = &ds[co * h_out * w_out..][..h_out * w_out];
                for ty in 0..th {
                    for tx in 0..tw {
                        let mut block = [[0f32; 2]; 2];
                        for (r, row) in block.iter_mut().enumerate() {
                            for (c, val) in row.iter_mut().enumerate() {
                                let (oy, ox) = (2 * ty + r, 2 * tx + c);
                                if oy < h_out && ox < w_out {
                                    *val = plane[oy * w_out + ox];
                                }
                            }
                        }
                        let col = s * per_image + ty * tw + tx;
                        for (p, val) in grad_tile(&block).iter().enumerate() {
                            m[(p * g.c_out + co) * t + col] = *val;
                        }
                    }
                }
            }
        }
        for p in 0..P {
            let mp = &m[p * g.c_out * t..][..g.c_out * t];
            let vp = &v[p * g.c_in * t..][..g.c_in * t];
            matmul(
                &mut sp[p * g.c_out * g.c_in..][..g.c_out * g.c_in],
                g.c_out,
                g.c_in,
                t,
                Mat::rows(mp, t),
                Mat::transposed(vp, t),
                threads,
                false,
            );
        }
    });
    let s = super::sum_in_order(&partial, slen);
    let mut dw = vec![0f32; g.c_out * g.c_in * 9];
    for o in 0..g.c_out {
        for i in 0..g.c_in {
            let mut st = [0f32; P];
            for (p, val) in st.iter_mut().enumerate() {
                *val = s[(p * g.c_out + o) * g.c_in + i];
            }
            dw[(o * g.c_in + i) * 9..][..9].copy_from_slice(&kernel_grad(&st));
        }
    }
    dw
}

/// The input gradient `dx[n, c_in, h, w]`: the forward of the flipped, transposed kernel over
/// `dy` ([`super::transposed_geometry`]), through the same transforms.
pub fn input_grad(g: &Geometry, weight: &[f32], dy: &[f32]) -> Option<Vec<f32>> {
    let t = super::transposed_geometry(g)?;
    if !applies(&t) {
        return None;
    }
    Some(forward(&t, dy, &kernel_transform(&t, &super::flipped_transpose(g, weight))))
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
    let out_len = g.c_out * h_out * w_out;
    let size = g.chunk();
    let threads = inner_threads(g.n.div_ceil(size));
    let mut y = vec![0f32; g.n * out_len];
    y.par_chunks_mut(size * out_len).enumerate().for_each_init(Buffers::default, |buf, (chunk, yc)| {
        let count = yc.len() / out_len;
        let t = count * per_image;
        let v = sized(&mut buf.v, P * g.c_in * t);
        transform_inputs(g, x, chunk * size, count, v);
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
    use super::super::shifted::tests::values;
    use super::super::{im2col_forward, im2col_weight_grad, input_grad_scatter, Geometry};
    use super::{applies, forward, input_grad, kernel_transform, weight_grad};

    /// The largest difference between `want` and `got`, over the largest `|want|` (at least 1).
    fn rel_err(want: &[f32], got: &[f32]) -> f32 {
        assert_eq!(want.len(), got.len());
        let scale = want.iter().fold(1f32, |a, v| a.max(v.abs()));
        want.iter().zip(got).fold(0f32, |a, (p, q)| a.max((p - q).abs())) / scale
    }

    /// F(2x2, 3x3) against the im2col convolution and gradients (float32 GEMM in both) on
    /// ResNet-20's three stages, odd planes (partial tiles), the ConvNet's 28/14/7 planes, a batch
    /// over several chunks and "valid" padding: the forward, the weight gradient (F(3x3, 2x2) by
    /// transposition) and the input gradient each within 1e-5 of the largest value (Lavin &
    /// Gray's F(2x2) error is a few ulps).
    #[test]
    fn matches_the_direct_convolution_and_its_gradients() {
        for &(n, c_in, h, w, c_out, pad) in &[
            (3, 16, 32, 32, 16, 1),
            (2, 32, 16, 16, 32, 1),
            (2, 64, 8, 8, 64, 1),
            (9, 8, 8, 8, 8, 1),
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
            let dy = values(n * c_out * g.h_out() * g.w_out(), 5);
            let err = rel_err(&im2col_forward(&g, &x, &wt), &forward(&g, &x, &kernel_transform(&g, &wt)));
            assert!(err <= 1e-5, "{g:?}: forward, relative error {err}");
            let err = rel_err(&im2col_weight_grad(&g, &x, &dy), &weight_grad(&g, &x, &dy));
            assert!(err <= 1e-5, "{g:?}: weight gradient, relative error {err}");
            let err = rel_err(&input_grad_scatter(&g, &wt, &dy), &input_grad(&g, &wt, &dy).expect("a stride-1 3x3 layer"));
            assert!(err <= 1e-5, "{g:?}: input gradient, relative error {err}");
        }
    }
}
