//! 2-D convolution kernels (square kernel, equal stride and zero padding on both axes, one
//! group, no dilation, no bias) on contiguous NCHW f32 data: im2col for a chunk of samples and
//! one GEMM per chunk (the `gemm` crate that burn flex uses too); for the 3x3 "same" layers the
//! [`direct`] SIMD form, and for other stride-1 layers with enough channels the [`shifted`] form
//! without im2col. The weight gradient is summed per fixed chunk of samples and the chunks are
//! added in order, so the result does not depend on the number of threads; burn's generic
//! weight gradient transposes and copies both operands instead.

use super::batch_norm;
use super::gemm::{matmul, Mat};
use super::uninit::{self, zeroed_parts};
use rayon::prelude::*;
use std::mem::MaybeUninit;

pub mod choice;
pub mod direct;
pub mod shifted;
pub mod winograd;

use choice::Algo;
use std::sync::Arc;

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

/// The per-core L2 cache size (Linux's sysfs; 1 MiB where it cannot be read), read once.
fn l2_bytes() -> usize {
    static L2: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *L2.get_or_init(|| {
        let text = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index2/size").unwrap_or_default();
        let text = text.trim();
        let (digits, unit) = match text.strip_suffix('K') {
            Some(d) => (d, 1 << 10),
            None => text.strip_suffix('M').map_or((text, 1), |d| (d, 1 << 20)),
        };
        digits.parse::<usize>().map_or(1 << 20, |v| v * unit)
    })
}

impl Geometry {
    /// Samples per GEMM: as many (up to 4) as keep one chunk's im2col buffer within the per-core
    /// L2 cache. Larger GEMMs amortize operand packing, but a buffer that spills out of L2 costs
    /// more: ResNet-20's first stage (590 KB per sample) took 17% longer per step with 4 samples
    /// than with 1 on a 1 MiB-L2 AMD EPYC, while 4 was fastest on the Xeon of earlier sessions. It depends
    /// on the machine, not on the thread count, so the weight gradient's summation order (chunks
    /// added in order) is the same for any number of threads.
    pub fn chunk(&self) -> usize {
        (l2_bytes() / (self.rows() * self.cols() * 4).max(1)).clamp(1, 4)
    }

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

    /// For a "same" stride-1 convolution (output as large as the input), tap `(ky, kx)` of output
    /// position `j` reads input position `j + (ky - pad) * w + (kx - pad)`: one shift for the
    /// whole plane. The span of output positions whose shifted read stays inside the plane
    /// (columns that wrap to the next row are [`Span::clear_edges`]'s), or `None` for other
    /// geometries. im2col and col2im then move a tap in one copy instead of one per line (8-value
    /// lines in ResNet-20's last stage).
    fn same_span(&self, ky: usize, kx: usize) -> Option<Span> {
        if self.stride != 1 || self.h_out() != self.h || self.w_out() != self.w {
            return None;
        }
        let (w, len) = (self.w as isize, (self.h * self.w) as isize);
        let shift = (ky as isize - self.pad as isize) * w + kx as isize - self.pad as isize;
        let (start, end) = ((-shift).max(0), (len - shift).min(len));
        (start < end).then(|| Span {
            start: start as usize,
            end: end as usize,
            shift: shift.max(0) as usize,
            back: (-shift).max(0) as usize,
        })
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

/// Output positions `start..end` of one tap of a "same" stride-1 convolution, which read input
/// positions `start + shift - back..`, see [`Geometry::same_span`].
struct Span {
    start: usize,
    end: usize,
    shift: usize,
    back: usize,
}

impl Span {
    fn len(&self) -> usize {
        self.end - self.start
    }

    fn range(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }

    /// Zeroes the columns `..lo` and `hi..` of each output row of `row` inside the span: their
    /// shifted read wrapped into the neighbouring image row (they read padding).
    fn clear_edges(&self, row: &mut [f32], lo: usize, hi: usize, wo: usize) {
        for line in row[self.start - self.start % wo..self.end.div_ceil(wo) * wo].chunks_mut(wo) {
            fill_short(&mut line[..lo], 0.0);
            fill_short(&mut line[hi..], 0.0);
        }
    }
}

/// Unfolds one sample `[c_in, h, w]` into the `c_in*k*k` rows of `h_out*w_out` columns that
/// start at `cols[0]` with row stride `row_stride` (zeros for padding).
fn im2col(g: &Geometry, x: &[f32], cols: &mut [f32], row_stride: usize) {
    let (ho, wo, l) = (g.h_out(), g.w_out(), g.cols());
    for ci in 0..g.c_in {
        let plane = &x[ci * g.h * g.w..][..g.h * g.w];
        for ky in 0..g.k {
            for kx in 0..g.k {
                let row = &mut cols[((ci * g.k + ky) * g.k + kx) * row_stride..][..l];
                let (lo, hi) = g.valid(kx, wo, g.w);
                if let Some(span) = g.same_span(ky, kx) {
                    // One copy for the whole tap, then the columns that read padding.
                    row[..span.start].fill(0.0);
                    row[span.end..].fill(0.0);
                    row[span.range()].copy_from_slice(&plane[span.start + span.shift - span.back..][..span.len()]);
                    span.clear_edges(row, lo, hi, wo);
                    continue;
                }
                for oy in 0..ho {
                    let out = &mut row[oy * wo..][..wo];
                    let Some(iy) = g.source(oy, ky, g.h) else {
                        out.fill(0.0);
                        continue;
                    };
                    let line = &plane[iy * g.w..][..g.w];
                    fill_short(&mut out[..lo], 0.0);
                    fill_short(&mut out[hi..], 0.0);
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

/// Adds the rows [`im2col`] writes (same layout) back onto one sample's input gradient: its
/// adjoint.
fn col2im(g: &Geometry, cols: &mut [f32], row_stride: usize, dx: &mut [f32]) {
    let (ho, wo, l) = (g.h_out(), g.w_out(), g.cols());
    for ci in 0..g.c_in {
        let plane = &mut dx[ci * g.h * g.w..][..g.h * g.w];
        for ky in 0..g.k {
            for kx in 0..g.k {
                let row = &mut cols[((ci * g.k + ky) * g.k + kx) * row_stride..][..l];
                let (lo, hi) = g.valid(kx, wo, g.w);
                if let Some(span) = g.same_span(ky, kx) {
                    // The columns that read padding add nothing: zero them in this scratch
                    // row, then add the whole tap at once (x + 0.0 is x).
                    span.clear_edges(row, lo, hi, wo);
                    let target = &mut plane[span.start + span.shift - span.back..][..span.len()];
                    for (d, &v) in target.iter_mut().zip(&row[span.range()]) {
                        *d += v;
                    }
                    continue;
                }
                for oy in 0..ho {
                    let Some(iy) = g.source(oy, ky, g.h) else { continue };
                    let line = &mut plane[iy * g.w..][..g.w];
                    let src = &row[oy * wo + lo..oy * wo + hi];
                    if g.stride == 1 {
                        let start = lo + kx - g.pad;
                        for (d, &v) in line[start..start + src.len()].iter_mut().zip(src) {
                            *d += v;
                        }
                    } else {
                        for (ox, &v) in (lo..hi).zip(src) {
                            line[ox * g.stride + kx - g.pad] += v;
                        }
                    }
                }
            }
        }
    }
}

/// GEMM threading: chunks already run in parallel, so one GEMM gets the pool only when
/// there are fewer chunks than threads.
fn inner_threads(chunks: usize) -> gemm::Parallelism {
    if chunks < rayon::current_num_threads() {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

/// Unfolds samples `first..first + count` side by side: `cols[rows, count * l]`.
fn im2col_chunk(g: &Geometry, x: &[f32], first: usize, count: usize, cols: &mut [f32]) {
    let l = g.cols();
    for j in 0..count {
        im2col(g, &x[(first + j) * g.in_len()..][..g.in_len()], &mut cols[j * l..], count * l);
    }
}

/// Per-thread buffers, reused from chunk to chunk and call to call ([`kept`]).
#[derive(Default)]
struct Scratch {
    cols: Vec<f32>,
    mat: Vec<f32>,
}

thread_local! {
    /// This thread's [`Scratch`]. Rayon's `for_each_init` makes a new value for every job it
    /// splits off, so a per-job scratch allocated and zeroed its im2col matrix (up to a few MB)
    /// several times per call.
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
}

/// `f` with this thread's value of `key` (scratch buffers kept from call to call), taken out for
/// the call and put back after: a nested call (from a GEMM's own parallel loop, or a job rayon
/// runs on this thread meanwhile) gets a fresh default instead of a second borrow.
fn kept<T: Default, R>(key: &'static std::thread::LocalKey<std::cell::Cell<T>>, f: impl FnOnce(&mut T) -> R) -> R {
    let mut value = key.take();
    let r = f(&mut value);
    key.set(value);
    r
}

fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len, 0.0);
    &mut buf[..len]
}

/// Sets a short run of slots to `v` with plain stores. A padding is one or two slots per image
/// row, and `fill` on a slice whose length the compiler does not know is a call to `memset`:
/// one per row and side, which made `memset` ~5% of a ResNet-20 step.
#[inline(always)]
pub(super) fn fill_short<T: Copy>(s: &mut [T], v: T) {
    match s.len() {
        0 => {}
        1 => s[0] = v,
        2 => {
            s[0] = v;
            s[1] = v;
        }
        3 => {
            s[0] = v;
            s[1] = v;
            s[2] = v;
        }
        _ => s.fill(v),
    }
}

/// Copies an `h x w` plane into the middle of a zero-bordered `(h + 2p) x (w + 2p)` one,
/// writing each slot once (a whole-plane fill first was ~3% of a ResNet-20 step), so `dst` may
/// be uninitialized.
fn pad_plane(src: &[f32], h: usize, w: usize, p: usize, dst: &mut [MaybeUninit<f32>]) {
    let (wp, zero) = (w + 2 * p, MaybeUninit::new(0.0));
    dst[..p * wp].fill(zero);
    dst[(p + h) * wp..].fill(zero);
    for (line, out) in src.chunks(w).zip(dst[p * wp..].chunks_mut(wp)) {
        fill_short(&mut out[..p], zero);
        copy_row(line, &mut out[p..p + w]);
        fill_short(&mut out[p + w..], zero);
    }
}

/// Copies one image row into `dst` (of the same length). ResNet-20's rows are copied with moves
/// of a known length instead of a `memmove` call per row (6% of a step's samples); the step ran
/// ~3% faster. The ConvNet's 28, 14 and 7 gained nothing measurable that way, so they take the
/// general copy.
#[inline(always)]
fn copy_row(src: &[f32], dst: &mut [MaybeUninit<f32>]) {
    assert_eq!(src.len(), dst.len(), "copy_row: rows of unequal length");
    #[inline(always)]
    fn fixed<const W: usize>(src: &[f32], dst: &mut [MaybeUninit<f32>]) {
        // SAFETY: both are `W` slots long (asserted above) and do not overlap (`src` is
        // borrowed shared, `dst` exclusively); a copy of a constant length compiles to vector
        // moves.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<f32>(), W) }
    }
    match src.len() {
        32 => fixed::<32>(src, dst),
        16 => fixed::<16>(src, dst),
        8 => fixed::<8>(src, dst),
        _ => {
            for (d, &v) in dst.iter_mut().zip(src) {
                d.write(v);
            }
        }
    }
}

/// For a stride-1 convolution, the convolution that computes its input gradient from the output
/// gradient: `dx = conv(dy, w')` with `w'` the [`flipped_transpose`] and padding `k - 1 - pad`.
fn transposed_geometry(g: &Geometry) -> Option<Geometry> {
    let pad = g.k.checked_sub(1 + g.pad)?;
    (g.stride == 1).then(|| Geometry { n: g.n, c_in: g.c_out, h: g.h_out(), w: g.w_out(), c_out: g.c_in, k: g.k, stride: 1, pad })
}

/// `w'[ci, co, ky, kx] = w[co, ci, k-1-ky, k-1-kx]`, the weight of [`transposed_geometry`].
fn flipped_transpose(g: &Geometry, weight: &[f32]) -> Vec<f32> {
    let k = g.k;
    let mut out = vec![0f32; weight.len()];
    for co in 0..g.c_out {
        for ci in 0..g.c_in {
            let src = &weight[(co * g.c_in + ci) * k * k..][..k * k];
            let dst = &mut out[(ci * g.c_out + co) * k * k..][..k * k];
            for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
    }
    out
}

/// `y[n, c_out, h_out, w_out]` from `x[n, c_in, h, w]` and `weight[c_out, c_in, k, k]`, by the
/// algorithm [`choice::plan`] picks for the layer.
pub fn forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    forward_prepared(g, x, weight).0
}

/// What a forward leaves for its backward: the layer's algorithms and, when the forward ran
/// Winograd, its transformed kernel (the F(2x2) input gradient reads it again).
#[derive(Debug, Clone)]
pub struct Prepared {
    plan: choice::Plan,
    kernel: Option<Arc<winograd::Kernel>>,
}

/// The output gradient a convolution's backward reads: given whole, or that of the batch norm
/// after the layer, computed image by image where the backward reads it (then never stored
/// whole: writing it and reading it back were two passes over memory).
#[derive(Clone, Copy)]
pub enum OutGrad<'a> {
    /// The gradient itself.
    Given(&'a [f32]),
    /// The batch norm's input gradient, from its input `x` (this layer's output), the gradient
    /// `dy` at its output (or at its fused ReLU's, which the coefficients mask) and its
    /// backward's coefficients.
    Norm {
        /// The batch norm's input.
        x: &'a [f32],
        /// The gradient at the batch norm's (or its ReLU's) output.
        dy: &'a [f32],
        /// [`batch_norm::grad_coefficients`] of the two.
        coef: &'a batch_norm::GradCoefficients,
    },
}

impl OutGrad<'_> {
    /// Sample `s`'s gradient (of the output shape `d`): a slice of the given one, or written
    /// into `scratch`.
    pub fn image<'b>(&'b self, s: usize, d: batch_norm::Dims, scratch: &'b mut Vec<f32>) -> &'b [f32] {
        let len = d.c * d.s;
        match *self {
            OutGrad::Given(dy) => &dy[s * len..][..len],
            OutGrad::Norm { x, dy, coef } => {
                coef.sample(&x[s * len..][..len], &dy[s * len..][..len], d.s, uninit::as_uninit(sized(scratch, len)));
                &scratch[..len]
            }
        }
    }

    /// The whole gradient (of the output shape `d`; computed, in parallel, when it is a batch
    /// norm's).
    pub fn whole(&self, d: batch_norm::Dims) -> std::borrow::Cow<'_, [f32]> {
        match *self {
            OutGrad::Given(dy) => std::borrow::Cow::Borrowed(dy),
            OutGrad::Norm { x, dy, coef } => std::borrow::Cow::Owned(coef.apply(x, dy, d)),
        }
    }
}

/// [`forward`], also returning what [`backward`] reuses.
pub fn forward_prepared(g: &Geometry, x: &[f32], weight: &[f32]) -> (Vec<f32>, Prepared) {
    let (y, prepared, _) = forward_planned(g, x, weight, false);
    (y, prepared)
}

/// [`forward_prepared`], also returning each `(sample, channel)` output row's
/// [`batch_norm::row_moments`] for the batch norm that follows: the Winograd forms take them
/// from each image's output while it is still in cache, the others in one more pass.
pub fn forward_moments(g: &Geometry, x: &[f32], weight: &[f32]) -> (Vec<f32>, Prepared, Vec<(f64, f64)>) {
    forward_planned(g, x, weight, true)
}

fn forward_planned(g: &Geometry, x: &[f32], weight: &[f32], moments: bool) -> (Vec<f32>, Prepared, Vec<(f64, f64)>) {
    let plan = choice::plan(g);
    let kernel = match plan.forward {
        Algo::Direct => None,
        Algo::Winograd(tile) => Some(Arc::new(winograd::kernel_transform(g, tile, weight))),
    };
    let (y, rows) = match (plan.forward, &kernel) {
        (Algo::Winograd(_), Some(k)) if moments => winograd::forward_moments(g, x, k),
        _ => {
            let y = forward_with(g, plan.forward, x, weight, kernel.as_deref());
            let rows = if moments { batch_norm::moments(&y, output_dims(g)) } else { Vec::new() };
            (y, rows)
        }
    };
    choice::count(g, plan.forward);
    (y, Prepared { plan, kernel }, rows)
}

/// The output seen as batch-norm rows: samples, output channels, output plane.
pub fn output_dims(g: &Geometry) -> batch_norm::Dims {
    batch_norm::Dims { n: g.n, c: g.c_out, s: g.h_out() * g.w_out() }
}

/// The forward by algorithm `a`; a Winograd one reads `kernel` when it is of its tile size.
pub fn forward_with(g: &Geometry, a: Algo, x: &[f32], weight: &[f32], kernel: Option<&winograd::Kernel>) -> Vec<f32> {
    match a {
        Algo::Direct => forward_direct(g, x, weight),
        Algo::Winograd(tile) => winograd::forward(g, x, &winograd::kernel_for(g, tile, kernel, weight)),
    }
}

/// The forward in the [`direct`] or [`shifted`] form where one suits, else through im2col.
fn forward_direct(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    if direct::suits(g) {
        direct::forward(g, x, weight)
    } else if shifted::suits(g) {
        shifted::forward(g, x, weight)
    } else {
        im2col_forward(g, x, weight)
    }
}

/// [`forward`] through im2col, any geometry: per chunk of [`Geometry::chunk`] samples, one GEMM
/// `[c_out, rows] @ [rows, chunk * l]`, its columns then put back in NCHW order.
fn im2col_forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    let (rows, l) = (g.rows(), g.cols());
    let size = g.chunk();
    let threads = inner_threads(g.n.div_ceil(size));
    zeroed_parts(g.n * g.out_len(), size * g.out_len(), |chunk, yc| {
        kept(&SCRATCH, |scratch| {
            let count = yc.len() / g.out_len();
            let width = count * l;
            let cols = sized(&mut scratch.cols, rows * width);
            im2col_chunk(g, x, chunk * size, count, cols);
            if count == 1 {
                // One sample's [c_out, l] output is already in NCHW order.
                matmul(yc, g.c_out, l, rows, Mat::rows(weight, rows), Mat::rows(cols, l), threads, false);
                return;
            }
            let out = sized(&mut scratch.mat, g.c_out * width);
            matmul(out, g.c_out, width, rows, Mat::rows(weight, rows), Mat::rows(cols, width), threads, false);
            for (j, yi) in yc.chunks_mut(g.out_len()).enumerate() {
                for (co, dst) in yi.chunks_mut(l).enumerate() {
                    dst.copy_from_slice(&out[co * width + j * l..][..l]);
                }
            }
        })
    })
}

/// Gradient rows of samples `first..first + count` as one `[c_out, count * l]` matrix (samples
/// side by side); a single sample's gradient already is one and is borrowed.
fn dy_chunk<'a>(g: &Geometry, dy: &'a [f32], first: usize, count: usize, buf: &'a mut Vec<f32>) -> &'a [f32] {
    let (l, len) = (g.cols(), g.out_len());
    if count == 1 {
        return &dy[first * len..][..len];
    }
    let width = count * l;
    let m = sized(buf, g.c_out * width);
    for j in 0..count {
        for (co, src) in dy[(first + j) * len..][..len].chunks(l).enumerate() {
            m[co * width + j * l..][..l].copy_from_slice(src);
        }
    }
    m
}

/// `(dx, dweight)` from the output gradient `dy[n, c_out, h_out, w_out]`; `dx` is empty unless
/// `need_dx` (the first layer's input needs no gradient). Each by the algorithm of the layer's
/// plan (`prepared`'s, or [`choice::plan`]'s without one).
pub fn backward(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    prepared: Option<&Prepared>,
    dy: OutGrad<'_>,
    need_dx: bool,
) -> (Vec<f32>, Vec<f32>) {
    let plan = prepared.map_or_else(|| choice::plan(g), |p| p.plan);
    let kernel = prepared.and_then(|p| p.kernel.as_deref());
    if let (Algo::Winograd(tile), true) = (plan.weight_grad, need_dx && plan.input_grad == plan.weight_grad && winograd::fuses(g)) {
        // Both gradients by the same tile size: one pass, one spread of `dy` for both.
        choice::count(g, plan.weight_grad);
        choice::count(g, plan.input_grad);
        return winograd::backward(g, tile, kernel, weight, x, dy);
    }
    let dy = dy.whole(output_dims(g));
    let dweight = weight_grad_with(g, plan.weight_grad, x, &dy);
    choice::count(g, plan.weight_grad);
    let dx = if need_dx {
        choice::count(g, plan.input_grad);
        input_grad_with(g, plan.input_grad, weight, kernel, &dy)
    } else {
        Vec::new()
    };
    (dx, dweight)
}

/// The weight gradient by algorithm `a`: Winograd's, or the [`direct`] or [`shifted`] form
/// where one suits, else through im2col.
pub fn weight_grad_with(g: &Geometry, a: Algo, x: &[f32], dy: &[f32]) -> Vec<f32> {
    match a {
        Algo::Winograd(tile) => winograd::weight_grad(g, tile, x, dy),
        Algo::Direct if direct::suits(g) => direct::weight_grad(g, x, dy),
        Algo::Direct if shifted::suits(g) => shifted::weight_grad(g, x, dy),
        Algo::Direct => im2col_weight_grad(g, x, dy),
    }
}

/// The input gradient by algorithm `a`. Winograd's reads `kernel` where it can
/// ([`winograd::input_grad`]);
/// the direct forms take, for a stride-1 layer, the forward of the [`transposed_geometry`] when
/// the direct or shifted form suits that; for a stride-2 layer the direct tiles by phases
/// ([`direct::input_grad`]) where they suit; else im2col's GEMM and fold-back.
pub fn input_grad_with(g: &Geometry, a: Algo, weight: &[f32], kernel: Option<&winograd::Kernel>, dy: &[f32]) -> Vec<f32> {
    match (a, transposed_geometry(g)) {
        (Algo::Winograd(tile), _) => winograd::input_grad(g, tile, kernel, weight, dy),
        (Algo::Direct, Some(t)) if direct::suits(&t) || shifted::suits(&t) => forward_direct(&t, dy, &flipped_transpose(g, weight)),
        (Algo::Direct, _) if direct::input_grad_suits(g) => direct::input_grad(g, weight, dy),
        (Algo::Direct, _) => input_grad_scatter(g, weight, dy),
    }
}

/// The weight gradient through im2col, any geometry: per chunk of samples,
/// `dW_chunk^T = cols @ dY[c_out, chunk*l]^T`; the chunks' sums are added in chunk order, then
/// transposed.
fn im2col_weight_grad(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (rows, l) = (g.rows(), g.cols());
    let wlen = g.c_out * rows;
    let size = g.chunk();
    let threads = inner_threads(g.n.div_ceil(size));
    let mut partial = vec![0f32; g.n.div_ceil(size) * wlen];
    partial.par_chunks_mut(wlen).enumerate().for_each(|(chunk, dwt)| {
        kept(&SCRATCH, |scratch| {
            let first = chunk * size;
            let count = size.min(g.n - first);
            let width = count * l;
            let dyc = dy_chunk(g, dy, first, count, &mut scratch.mat);
            let cols = sized(&mut scratch.cols, rows * width);
            im2col_chunk(g, x, first, count, cols);
            // dW^T[rows, c_out] = cols @ dY^T rather than dW = dY @ cols^T: the GEMM then packs only
            // dY's c_out rows instead of the whole im2col matrix (9 * c_in / c_out times larger),
            // which was ~14% of a ResNet-20 step.
            matmul(dwt, rows, g.c_out, width, Mat::rows(cols, width), Mat::transposed(dyc, width), threads, false);
        })
    });
    let sum = sum_in_order(&partial, wlen);
    let mut dweight = vec![0f32; wlen];
    for (r, row) in sum.chunks(g.c_out).enumerate() {
        for (co, &v) in row.iter().enumerate() {
            dweight[co * rows + r] = v;
        }
    }
    dweight
}

/// The sum of the per-chunk weight gradients (`part` values each), added in chunk order: the
/// same order for any number of threads. Runs of values are summed in parallel (on one thread it
/// left the other idle for ~0.2% of a ResNet-20 step).
fn sum_in_order(partial: &[f32], part: usize) -> Vec<f32> {
    const RUN: usize = 4096;
    let mut sum = vec![0f32; part];
    sum.par_chunks_mut(RUN).enumerate().for_each(|(i, run)| {
        for p in partial.chunks(part) {
            for (d, v) in run.iter_mut().zip(&p[i * RUN..]) {
                *d += v;
            }
        }
    });
    sum
}

/// The input gradient as `dcols = W^T[rows, c_out] @ dY` per chunk, folded back by [`col2im`].
fn input_grad_scatter(g: &Geometry, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    let (rows, l) = (g.rows(), g.cols());
    let size = g.chunk();
    let threads = inner_threads(g.n.div_ceil(size));
    zeroed_parts(g.n * g.in_len(), size * g.in_len(), |chunk, dxc| {
        kept(&SCRATCH, |scratch| {
            let count = dxc.len() / g.in_len();
            let width = count * l;
            let dyc = dy_chunk(g, dy, chunk * size, count, &mut scratch.mat);
            let dcols = sized(&mut scratch.cols, rows * width);
            matmul(dcols, rows, width, g.c_out, Mat::transposed(weight, rows), Mat::rows(dyc, width), threads, false);
            for (j, dxi) in dxc.chunks_mut(g.in_len()).enumerate() {
                col2im(g, &mut dcols[j * l..], width, dxi);
            }
        })
    })
}
