//! 2-D convolution kernels (square kernel, equal stride and zero padding on both axes, one
//! group, no dilation, no bias) on contiguous NCHW f32 data: im2col per sample and one GEMM
//! (the `gemm` crate that burn flex uses too). The weight gradient is summed per fixed chunk of
//! samples and the chunks are added in order, so the result does not depend on the number of
//! threads; burn's generic weight gradient transposes and copies both operands instead.

use rayon::prelude::*;

/// Sizes of one convolution.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel side.
    pub k: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (both axes).
    pub pad: usize,
}

/// Sample chunks of the weight gradient: fixed, so the summation order is too.
const WEIGHT_GRAD_CHUNKS: usize = 8;

impl Geometry {
    /// Output height.
    pub fn h_out(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }

    /// Output width.
    pub fn w_out(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }

    /// Rows of the im2col matrix (`c_in * k * k`, the weight's row length).
    fn rows(&self) -> usize {
        self.c_in * self.k * self.k
    }

    /// Columns of the im2col matrix (output pixels per sample).
    fn cols(&self) -> usize {
        self.h_out() * self.w_out()
    }

    fn in_len(&self) -> usize {
        self.c_in * self.h * self.w
    }

    fn out_len(&self) -> usize {
        self.c_out * self.cols()
    }

    /// The input pixel index a kernel tap reads for output coordinate `o`, if inside the image.
    fn source(&self, o: usize, tap: usize, size: usize) -> Option<usize> {
        (o * self.stride + tap).checked_sub(self.pad).filter(|&i| i < size)
    }

    /// The output coordinates `lo..hi` (of `n_out`) whose kernel tap `tap` reads inside the
    /// image (`o * stride + tap - pad` in `0..size`); the rest read padding.
    fn valid(&self, tap: usize, n_out: usize, size: usize) -> (usize, usize) {
        let lo = self.pad.saturating_sub(tap).div_ceil(self.stride).min(n_out);
        // o * stride + tap - pad <= size - 1  <=>  o <= (size - 1 + pad - tap) / stride
        let hi = (size + self.pad).checked_sub(tap + 1).map_or(0, |top| (top / self.stride + 1).min(n_out));
        (lo, hi.max(lo))
    }
}

/// Unfolds one sample `[c_in, h, w]` into `cols[c_in*k*k, h_out*w_out]` (zeros for padding).
fn im2col(g: &Geometry, x: &[f32], cols: &mut [f32]) {
    let (ho, wo, l) = (g.h_out(), g.w_out(), g.cols());
    for ci in 0..g.c_in {
        let plane = &x[ci * g.h * g.w..][..g.h * g.w];
        for ky in 0..g.k {
            for kx in 0..g.k {
                let row = &mut cols[((ci * g.k + ky) * g.k + kx) * l..][..l];
                for oy in 0..ho {
                    let out = &mut row[oy * wo..][..wo];
                    let Some(iy) = g.source(oy, ky, g.h) else {
                        out.fill(0.0);
                        continue;
                    };
                    let line = &plane[iy * g.w..][..g.w];
                    let (lo, hi) = g.valid(kx, wo, g.w);
                    out[..lo].fill(0.0);
                    out[hi..].fill(0.0);
                    if g.stride == 1 {
                        let start = lo + kx - g.pad;
                        out[lo..hi].copy_from_slice(&line[start..start + (hi - lo)]);
                    } else {
                        for (ox, o) in (lo..hi).zip(&mut out[lo..hi]) {
                            *o = line[ox * g.stride + kx - g.pad];
                        }
                    }
                }
            }
        }
    }
}

/// Adds `cols[c_in*k*k, h_out*w_out]` back onto one sample's input gradient (the adjoint of
/// [`im2col`]).
fn col2im(g: &Geometry, cols: &[f32], dx: &mut [f32]) {
    let (ho, wo, l) = (g.h_out(), g.w_out(), g.cols());
    for ci in 0..g.c_in {
        let plane = &mut dx[ci * g.h * g.w..][..g.h * g.w];
        for ky in 0..g.k {
            for kx in 0..g.k {
                let row = &cols[((ci * g.k + ky) * g.k + kx) * l..][..l];
                for oy in 0..ho {
                    let Some(iy) = g.source(oy, ky, g.h) else { continue };
                    let line = &mut plane[iy * g.w..][..g.w];
                    let (lo, hi) = g.valid(kx, wo, g.w);
                    for (ox, &v) in (lo..hi).zip(&row[oy * wo + lo..oy * wo + hi]) {
                        line[ox * g.stride + kx - g.pad] += v;
                    }
                }
            }
        }
    }
}

/// A row-major matrix view for [`matmul`]: pointer, row stride, column stride.
#[derive(Clone, Copy)]
struct Mat {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

impl Mat {
    fn rows(data: &[f32], cols: usize) -> Self {
        Mat { ptr: data.as_ptr(), rs: cols as isize, cs: 1 }
    }

    /// The transpose of a row-major `[_, cols]` matrix.
    fn transposed(data: &[f32], cols: usize) -> Self {
        Mat { ptr: data.as_ptr(), rs: 1, cs: cols as isize }
    }
}

/// `dst[m, n] (+)= lhs[m, k] @ rhs[k, n]` into a row-major `dst`; `accumulate` adds to `dst`.
fn matmul(dst: &mut [f32], m: usize, n: usize, k: usize, lhs: Mat, rhs: Mat, accumulate: bool, threads: gemm::Parallelism) {
    assert!(dst.len() >= m * n, "matmul: destination too small");
    // SAFETY: the callers build `lhs` and `rhs` from slices holding at least `m*k` and `k*n`
    // elements under the given strides, and `dst` holds `m*n` (checked above).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
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
}

/// GEMM threading: samples already run in parallel, so one GEMM gets the pool only when
/// there are fewer samples than threads.
fn inner_threads(samples: usize) -> gemm::Parallelism {
    if samples < rayon::current_num_threads() {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

/// `y[n, c_out, h_out, w_out]` from `x[n, c_in, h, w]` and `weight[c_out, c_in, k, k]`.
pub fn forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    let (rows, l) = (g.rows(), g.cols());
    let threads = inner_threads(g.n);
    let mut y = vec![0f32; g.n * g.out_len()];
    y.par_chunks_mut(g.out_len()).zip(x.par_chunks(g.in_len())).for_each_init(
        || vec![0f32; rows * l],
        |cols, (yo, xi)| {
            im2col(g, xi, cols);
            matmul(yo, g.c_out, l, rows, Mat::rows(weight, rows), Mat::rows(cols, l), false, threads);
        },
    );
    y
}

/// `(dx, dweight)` from the output gradient `dy[n, c_out, h_out, w_out]`.
pub fn backward(g: &Geometry, x: &[f32], weight: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (rows, l) = (g.rows(), g.cols());
    let wlen = g.c_out * rows;
    let per_chunk = g.n.div_ceil(WEIGHT_GRAD_CHUNKS).max(1);
    let threads = inner_threads(g.n.div_ceil(per_chunk));
    let mut dx = vec![0f32; g.n * g.in_len()];
    let mut partial = vec![0f32; g.n.div_ceil(per_chunk) * wlen];
    dx.par_chunks_mut(per_chunk * g.in_len()).zip(partial.par_chunks_mut(wlen)).enumerate().for_each(|(chunk, (dxc, dw))| {
        let mut cols = vec![0f32; rows * l];
        let mut dcols = vec![0f32; rows * l];
        for (j, dxi) in dxc.chunks_mut(g.in_len()).enumerate() {
            let i = chunk * per_chunk + j;
            let dyi = &dy[i * g.out_len()..][..g.out_len()];
            im2col(g, &x[i * g.in_len()..][..g.in_len()], &mut cols);
            // dW += dy_i[c_out, l] @ cols^T[l, rows]
            matmul(dw, g.c_out, rows, l, Mat::rows(dyi, l), Mat::transposed(&cols, l), j > 0, threads);
            // dcols = W^T[rows, c_out] @ dy_i[c_out, l]
            matmul(&mut dcols, rows, l, g.c_out, Mat::transposed(weight, rows), Mat::rows(dyi, l), false, threads);
            col2im(g, &dcols, dxi);
        }
    });
    let mut dweight = vec![0f32; wlen];
    for part in partial.chunks(wlen) {
        for (d, p) in dweight.iter_mut().zip(part) {
            *d += p;
        }
    }
    (dx, dweight)
}
