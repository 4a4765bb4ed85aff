//! 3x3 convolutions with padding 1, stride 1 ("same") or 2 (ResNet's downsampling), computed
//! directly from a zero-padded copy of the input with hand-written SIMD tiles, no im2col and no
//! GEMM. The GEMM forms spend much of their time on
//! what the products' thin shapes cost (16-64 output channels, 27-576 terms): packing, edge
//! tiles that fill a quarter of the registers (the weight gradient's `x1x6`), the shifted
//! copies and the crop. Here each tile keeps `C` output channels x `P` vectors of output pixels
//! in registers for the whole sum over input channels and taps, loading each input vector once
//! per tap straight from the padded plane (a tap is a constant offset there). With stride 2 the
//! padded plane is stored as its four phases (even and odd rows x even and odd columns, each a
//! plane of half the size): an output pixel's taps are then again constant offsets from its
//! position in a phase, and the same tiles run ([`Padded`]); im2col's strided gathers and thin
//! GEMMs had run these layers at a third of the peak.
//!
//! Vectors are 16 lanes with AVX-512, else 8 with AVX2 and FMA. Where a row is a whole number
//! of vectors wide, vectors are rows' pieces ([`Walk::rows`]); otherwise they run along the
//! padded plane's positions, rows and their padding columns alike ([`Walk::spread`]), and the
//! padding columns' results are dropped (8x8 planes: 80 positions in 5 vectors instead of 8
//! half-empty ones). Without those instructions, or with `NORMWD_CONV_DIRECT=off`, [`suits`] is
//! false and the convolution takes the other forms. Every sum runs in a fixed order that depends
//! only on the geometry and the vector width, never on the thread count.

use super::super::uninit::{as_uninit, filled};
use super::{pad_plane, sum_in_order, Geometry};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The vector instructions the kernels run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Isa {
    /// 16 lanes, 32 registers.
    Avx512,
    /// 8 lanes, 16 registers.
    Avx2,
}

impl Isa {
    /// Lanes per vector.
    fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
        }
    }

    /// Output channels per tile (the weight is rearranged in blocks of this many).
    fn block(self) -> usize {
        match self {
            Isa::Avx512 => 8,
            Isa::Avx2 => 4,
        }
    }
}

/// The instruction sets this CPU runs, widest first, read once; none off x86-64, without AVX2
/// and FMA, or when `NORMWD_CONV_DIRECT=off` (for timing the other forms in the same build);
/// `NORMWD_CONV_DIRECT=avx2` leaves AVX-512 out (for timing the AVX2 tiles on an AVX-512 CPU).
fn available() -> &'static [Isa] {
    static ISAS: std::sync::OnceLock<Vec<Isa>> = std::sync::OnceLock::new();
    ISAS.get_or_init(|| {
        let mut found = Vec::new();
        let choice = std::env::var("NORMWD_CONV_DIRECT").unwrap_or_default();
        if choice == "off" {
            return found;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") && choice != "avx2" {
                found.push(Isa::Avx512);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                found.push(Isa::Avx2);
            }
        }
        found
    })
}

/// The widest instruction set available.
pub(super) fn isa() -> Option<Isa> {
    available().first().copied()
}

/// Whether the direct form computes `g`: a 3x3 convolution with padding 1, stride 1 (output as
/// large as the input) or stride 2 on an input of even height and width, whose output channels
/// are a multiple of the tile's block, on a CPU with the instructions.
pub fn suits(g: &Geometry) -> bool {
    isa().is_some_and(|i| suits_on(i, g))
}

fn suits_on(isa: Isa, g: &Geometry) -> bool {
    let strided = g.stride == 2 && g.h.is_multiple_of(2) && g.w.is_multiple_of(2);
    g.k == 3 && (g.stride == 1 || strided) && g.pad == 1 && g.c_out.is_multiple_of(isa.block())
}

/// Where the kernels find one channel of a sample's padded input. With stride 1 it is the
/// padded plane, `width` values a row; with stride 2 its four phases one after the other, the
/// padded plane's rows and columns of parity `(a, b)` in phase `2 a + b`, each `width` (half the
/// padded width) values a row. Output pixel `(r, c)` reads tap `(ky, kx)` at
/// `r * width + c + taps[3 ky + kx]` in both cases.
#[derive(Debug, Clone, Copy)]
struct Padded {
    /// Values per row of the plane (or phase) that the walks run along.
    width: usize,
    /// Values per channel.
    pp: usize,
    /// Each tap's offset from its output pixel's position.
    taps: [usize; 9],
}

/// `g`'s [`Padded`] layout (padding 1: [`suits`]).
fn padded(g: &Geometry) -> Padded {
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    if g.stride == 1 {
        return Padded { width: wp, pp: hp * wp, taps: std::array::from_fn(|t| t / 3 * wp + t % 3) };
    }
    let (rows, width) = (hp.div_ceil(2), wp.div_ceil(2));
    let phase = rows * width;
    let taps = std::array::from_fn(|t| {
        let (ky, kx) = (t / 3, t % 3);
        (ky % 2 * 2 + kx % 2) * phase + ky / 2 * width + kx / 2
    });
    Padded { width, pp: 4 * phase, taps }
}

impl Padded {
    /// What the tiles sum over for `samples` samples of `g`'s input.
    fn src(&self, g: &Geometry, samples: usize) -> Src<9> {
        Src { channels: samples * g.c_in, pp: self.pp, taps: self.taps }
    }
}

/// What a forward tile sums over: `channels` planes `pp` values apart, `T` taps of each at
/// these offsets from an output pixel's position, the weights `[channels][T][C]` per block of
/// `C` output channels. The forward has the 9 taps of [`Padded`]; each phase of a stride-2
/// layer's input gradient 1, 2 or 4 ([`input_grad`]).
#[derive(Debug, Clone, Copy)]
struct Src<const T: usize> {
    channels: usize,
    pp: usize,
    taps: [usize; T],
}

impl<const T: usize> Src<T> {
    /// How many values from the start of the planes `walk` reads: the last plane's last vector
    /// at its farthest tap, a whole vector long. A spread walk's last vector runs past its plane
    /// by up to a vector and a kernel row, which [`SLACK`] covers.
    fn read_extent(&self, walk: &Walk) -> usize {
        let last = walk.at(walk.count().saturating_sub(1)).0;
        (self.channels - 1) * self.pp + last + self.taps.iter().copied().max().unwrap_or(0) + walk.lanes
    }
}

/// Room after the last padded plane for the reads of a [`Walk::spread`]'s last vector, which
/// run past the plane's end by up to a vector and a kernel row.
const SLACK: usize = 64;

/// How a plane's output vectors are laid: `rows x per_row` vectors of `lanes`; vector `(r, j)`
/// reads the padded plane from `r * x_row + j * lanes` (its top-left tap) and writes (or, for
/// the weight gradient, reads the output gradient) at `r * y_row + j * lanes` of a plane of
/// `y_plane` values.
#[derive(Debug, Clone, Copy)]
struct Walk {
    rows: usize,
    per_row: usize,
    lanes: usize,
    x_row: usize,
    y_row: usize,
    y_plane: usize,
}

impl Walk {
    /// The walk for `g` with vectors of `lanes`.
    fn of(g: &Geometry, lanes: usize) -> Walk {
        if g.w_out().is_multiple_of(lanes) {
            Walk::rows(g, lanes)
        } else {
            Walk::spread(g, lanes)
        }
    }

    /// Pieces of the output rows, written in place.
    fn rows(g: &Geometry, lanes: usize) -> Walk {
        let (ho, wo) = (g.h_out(), g.w_out());
        Walk { rows: ho, per_row: wo / lanes, lanes, x_row: padded(g).width, y_row: wo, y_plane: ho * wo }
    }

    /// The padded plane's (or first phase's) first `h_out` rows, padding columns included, as
    /// one run of vectors; the output planes are then that wide and cropped afterwards.
    fn spread(g: &Geometry, lanes: usize) -> Walk {
        let per_row = (g.h_out() * padded(g).width).div_ceil(lanes);
        Walk { rows: 1, per_row, lanes, x_row: 0, y_row: 0, y_plane: per_row * lanes }
    }

    fn is_spread(&self) -> bool {
        self.rows == 1 && self.x_row == 0
    }

    fn count(&self) -> usize {
        self.rows * self.per_row
    }

    /// `(padded-plane offset, output offset)` of vector `v`.
    fn at(&self, v: usize) -> (usize, usize) {
        let (r, j) = (v / self.per_row, v % self.per_row * self.lanes);
        (r * self.x_row + j, r * self.y_row + j)
    }
}

// A spread walk covers a plane's first `h` padded rows rounded up to whole vectors, and its
// taps reach `2 * wp + 2` further: past the plane's `(h + 2) * wp` values by under a vector and
// two values, which the slack covers for the widest vectors (16 lanes). With stride 2 it covers
// `h / 2` rows of a phase `width` wide, and the farthest tap starts the last phase, which has
// `h / 2 + 1` rows: past it by under a vector less a row.
const _: () = assert!(SLACK >= 16 + 2);

/// Copies one sample's `c_in` planes into `out` in the [`Padded`] layout (zero borders; every
/// slot written, so `out` may be uninitialized).
fn pad_sample(g: &Geometry, x: &[f32], out: &mut [MaybeUninit<f32>]) {
    let p = padded(g);
    for (src, dst) in x.chunks(g.h * g.w).zip(out.chunks_mut(p.pp)) {
        if g.stride == 1 {
            pad_plane(src, g.h, g.w, g.pad, dst);
        } else {
            pad_phases(src, g.h, g.w, p.width, dst);
        }
    }
}

/// One `h x w` plane (even sizes) padded by 1 and split into its four phases, each
/// `(h / 2 + 1) x width` (`width = w / 2 + 1`): phase `2 a + b` holds the padded plane's values
/// at rows `2 r + a` and columns `2 c + b`.
fn pad_phases(src: &[f32], h: usize, w: usize, width: usize, dst: &mut [MaybeUninit<f32>]) {
    let (rows, zero) = (h / 2 + 1, MaybeUninit::new(0.0));
    let half = w / 2;
    for (phase, out) in dst.chunks_mut(rows * width).enumerate() {
        let (a, b) = (phase / 2, phase % 2);
        for (r, line) in out.chunks_mut(width).enumerate() {
            // Padded row `2 r + a` is input row `2 r + a - 1`, or padding.
            let Some(iy) = (2 * r + a).checked_sub(1).filter(|&iy| iy < h) else {
                line.fill(zero);
                continue;
            };
            let row = &src[iy * w..][..w];
            if b == 0 {
                // Padded columns 0, 2, .., w: the left padding, then input columns 1, 3, ...
                line[0] = zero;
                for (o, pair) in line[1..=half].iter_mut().zip(row.chunks_exact(2)) {
                    o.write(pair[1]);
                }
            } else {
                // Padded columns 1, 3, .., w + 1: input columns 0, 2, ..., then the right padding.
                for (o, pair) in line[..half].iter_mut().zip(row.chunks_exact(2)) {
                    o.write(pair[0]);
                }
                line[half] = zero;
            }
        }
    }
}

/// Copies output-gradient planes (`h x w` each, from `src`) into `dst`'s planes of
/// `walk.y_plane`: as they are for [`Walk::rows`]; for [`Walk::spread`] row by row at the padded
/// width, the padding columns and the tail zero (their products must add nothing).
fn place_planes(g: &Geometry, walk: Walk, src: &[f32], dst: &mut [f32]) {
    let (width, wo) = (padded(g).width, g.w_out());
    for (from, to) in src.chunks(g.cols()).zip(dst.chunks_mut(walk.y_plane)) {
        if !walk.is_spread() {
            to.copy_from_slice(from);
            continue;
        }
        widen(from, wo, to, width);
    }
}

/// Rows of `w` values from `from` at rows of `width` in `to`, the columns after them and the
/// rows after the last zero (so products over them add nothing).
fn widen(from: &[f32], w: usize, to: &mut [f32], width: usize) {
    let rows = from.len() / w;
    for (line, out) in from.chunks(w).zip(to.chunks_mut(width)) {
        out[..w].copy_from_slice(line);
        super::fill_short(&mut out[w..], 0.0);
    }
    to[rows * width..].fill(0.0);
}

/// The weight `[c_out, c_in, 3, 3]` as blocks `[c_out / b][c_in][3][3][b]`: a tile's `b`
/// weights of one tap are then adjacent.
fn weight_blocks(g: &Geometry, weight: &[f32], b: usize) -> Vec<f32> {
    let taps = g.c_in * 9;
    let mut out = vec![0f32; weight.len()];
    for (co, w) in weight.chunks(taps).enumerate() {
        let block = &mut out[co / b * taps * b..][..taps * b];
        for (t, &v) in w.iter().enumerate() {
            block[t * b + co % b] = v;
        }
    }
    out
}

/// `y[n, c_out, h, w]` from `x[n, c_in, h, w]` and `weight[c_out, c_in, 3, 3]` for a geometry
/// that [`suits`] this form. One sample per task.
pub fn forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    forward_on(isa().expect("direct::forward without the instructions"), g, x, weight)
}

/// [`forward`] with the given instruction set (one of [`available`]).
fn forward_on(isa: Isa, g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    assert!(available().contains(&isa) && suits_on(isa, g), "direct::forward on {g:?}, which it does not suit");
    assert!(x.len() == g.n * g.in_len() && weight.len() == g.c_out * g.c_in * 9, "direct::forward: operands do not fit {g:?}");
    let (b, walk) = (isa.block(), Walk::of(g, isa.lanes()));
    let wt = weight_blocks(g, weight, b);
    let pad = padded(g);
    let (width, pp, src) = (pad.width, pad.pp, pad.src(g, 1));
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(g.out_len()).enumerate().for_each_init(
            || (Vec::new(), Vec::new()),
            |(xpad, wide), (i, ys)| {
                xpad.resize(g.c_in * pp + SLACK, 0.0);
                pad_sample(g, &x[i * g.in_len()..][..g.in_len()], as_uninit(xpad));
                for block in 0..g.c_out / b {
                    let yb = &mut ys[block * b * g.cols()..][..b * g.cols()];
                    let wb = &wt[block * g.c_in * 9 * b..][..g.c_in * 9 * b];
                    if !walk.is_spread() {
                        // SAFETY: `yb` is this block's `b` output planes; `block_forward` writes each of
                        // their slots once and reads inside `xpad` and `wb` (see `Walk::rows`). The
                        // instruction set was detected.
                        unsafe { x86::block_forward(isa, &src, walk, xpad, wb, yb.as_mut_ptr().cast()) };
                        continue;
                    }
                    wide.resize(b * walk.y_plane, 0.0);
                    // SAFETY: as above, into `wide` (`b` spread planes); the reads past a plane's end
                    // stay inside `xpad`'s slack.
                    unsafe { x86::block_forward(isa, &src, walk, xpad, wb, wide.as_mut_ptr()) };
                    for (dst, src) in yb.chunks_mut(g.cols()).zip(wide.chunks(walk.y_plane)) {
                        for (line, from) in dst.chunks_mut(g.w_out()).zip(src.chunks(width)) {
                            for (d, &v) in line.iter_mut().zip(from) {
                                d.write(v);
                            }
                        }
                    }
                }
            },
        )
    };
    // SAFETY: every sample's task writes all of its `out_len` slots, block by block.
    unsafe { filled(g.n * g.out_len(), fill) }
}

/// `dweight[c_out, c_in, 3, 3]` from `x` and the output gradient `dy`, for a geometry that
/// [`suits`] this form: per chunk of samples and block of output channels, the products of
/// each input channel and kernel row summed over the chunk's pixels in vector lanes, then over
/// the lanes; the chunks' sums are added in chunk order.
pub fn weight_grad(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    weight_grad_on(isa().expect("direct::weight_grad without the instructions"), g, x, dy)
}

/// [`weight_grad`] with the given instruction set (one of [`available`]).
fn weight_grad_on(isa: Isa, g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert!(available().contains(&isa) && suits_on(isa, g), "direct::weight_grad on {g:?}, which it does not suit");
    assert!(x.len() == g.n * g.in_len() && dy.len() == g.n * g.out_len(), "direct::weight_grad: operands do not fit {g:?}");
    let (b, walk) = (isa.block(), Walk::of(g, isa.lanes()));
    let pp = padded(g).pp;
    // Enough samples per chunk to keep the partial sums few (each is a whole weight), about
    // 256 vectors' worth, and at least 8 chunks to share between threads.
    let size = 256usize.div_ceil(walk.count()).min(g.n.div_ceil(8)).max(1);
    let part = g.c_out * g.c_in * 9;
    let mut partial = vec![0f32; g.n.div_ceil(size) * part];
    // Each chunk's inputs are padded by the task that uses them, into its thread's scratch,
    // where they stay in L2 for all its blocks of output channels: padding the whole batch
    // first (9.5 MB for ResNet-20's first stage) wrote and re-read it through L3 and memory.
    partial.par_chunks_mut(part).enumerate().for_each_init(Vec::new, |xpad: &mut Vec<f32>, (chunk, dw)| {
        let first = chunk * size;
        let count = size.min(g.n - first);
        xpad.resize(count * g.c_in * pp + SLACK, 0.0);
        for (s, room) in xpad.chunks_mut(g.c_in * pp).take(count).enumerate() {
            pad_sample(g, &x[(first + s) * g.in_len()..][..g.in_len()], as_uninit(room));
        }
        xpad[count * g.c_in * pp..].fill(0.0);
        for (block, dwb) in dw.chunks_mut(b * g.c_in * 9).enumerate() {
            let grad = &dy[(first * g.c_out + block * b) * g.cols()..];
            // SAFETY: `grad` holds the chunk's `count` samples of the block's `b` planes,
            // `out_len` apart (checked again inside), `xpad` the chunk's padded inputs (plus
            // slack); `dwb` holds the block's `b * c_in * 9` values, each written once. The
            // instruction set was detected.
            unsafe { x86::block_weight_grad(isa, g, walk, xpad, (grad, g.out_len()), count, dwb) }
        }
    });
    sum_in_order(&partial, part)
}

/// Whether [`input_grad`] computes the input gradient of `g`: a stride-2 layer that [`suits`]
/// this form and whose input channels (the tiles' output channels there) are whole blocks.
pub fn input_grad_suits(g: &Geometry) -> bool {
    isa().is_some_and(|i| g.stride == 2 && suits_on(i, g) && g.c_in.is_multiple_of(i.block()))
}

/// Each phase's taps along one axis, `(k, offset)`: output-gradient row (or column) `u +
/// offset` meets the kernel at `k` in input row (column) `2 u + parity`. An even input row
/// `2 u` is reached only by the kernel's middle row from output row `u`; an odd one `2 u + 1`
/// by its first row from output row `u + 1` and its last from row `u`.
const PHASE_TAPS: [&[(usize, usize)]; 2] = [&[(1, 0)], &[(0, 1), (2, 0)]];

/// The input gradient `dx[n, c_in, h, w]` of a stride-2 layer that [`input_grad_suits`] this
/// form, from `dy[n, c_out, h / 2, w / 2]`: each of `dx`'s four phases (rows and columns of
/// one parity) is a stride-1 correlation of `dy` with 1, 2 or 4 of the kernel's taps
/// ([`PHASE_TAPS`]), which the forward's tiles compute; the two column phases of a row parity
/// are then interleaved into `dx`'s rows. No tap is computed twice and none is a zero (the
/// zero-inserted "transposed convolution" would be four times the work); col2im's scatter ran
/// at a third of the peak. One sample per task.
pub fn input_grad(g: &Geometry, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    input_grad_on(isa().expect("direct::input_grad without the instructions"), g, weight, dy)
}

/// [`input_grad`] with the given instruction set (one of [`available`]).
fn input_grad_on(isa: Isa, g: &Geometry, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    assert!(
        available().contains(&isa) && g.stride == 2 && suits_on(isa, g) && g.c_in.is_multiple_of(isa.block()),
        "direct::input_grad on {g:?}, which it does not suit"
    );
    assert!(dy.len() == g.n * g.out_len() && weight.len() == g.c_out * g.c_in * 9, "direct::input_grad: operands do not fit {g:?}");
    let (ho, wo, b, lanes) = (g.h_out(), g.w_out(), isa.block(), isa.lanes());
    // `dy`'s planes with a zero row and column after the last: the odd phases read `u + 1`.
    let width = wo + 1;
    let pp = (ho + 1) * width;
    let walk = if wo.is_multiple_of(lanes) {
        Walk { rows: ho, per_row: wo / lanes, lanes, x_row: width, y_row: wo, y_plane: ho * wo }
    } else {
        let per_row = (ho * width).div_ceil(lanes);
        Walk { rows: 1, per_row, lanes, x_row: 0, y_row: 0, y_plane: per_row * lanes }
    };
    let row = if walk.is_spread() { width } else { wo };
    // Phase `(a, c)`'s taps as offsets in `dy`'s padded planes, and its weights
    // `[c_in / b][c_out][taps][b]`.
    let phase = |a: usize, c: usize| -> (Vec<usize>, Vec<f32>) {
        let taps: Vec<(usize, usize)> =
            PHASE_TAPS[a].iter().flat_map(|&(ky, oy)| PHASE_TAPS[c].iter().map(move |&(kx, ox)| (ky * 3 + kx, oy * width + ox))).collect();
        let mut wt = vec![0f32; g.c_in * g.c_out * taps.len()];
        for (i, w) in wt.iter_mut().enumerate() {
            let (c_lane, rest) = (i % b, i / b);
            let (t, rest) = (rest % taps.len(), rest / taps.len());
            let (co, block) = (rest % g.c_out, rest / g.c_out);
            *w = weight[(co * g.c_in + block * b + c_lane) * 9 + taps[t].0];
        }
        (taps.iter().map(|t| t.1).collect(), wt)
    };
    let phases: Vec<[(Vec<usize>, Vec<f32>); 2]> = (0..2).map(|a| [phase(a, 0), phase(a, 1)]).collect();
    let fill = |dx: &mut [MaybeUninit<f32>]| {
        dx.par_chunks_mut(g.in_len()).enumerate().for_each_init(
            || (Vec::new(), Vec::new()),
            |(dpad, out): &mut (Vec<f32>, Vec<f32>), (i, dxs)| {
                dpad.resize(g.c_out * pp + SLACK, 0.0);
                for (src, dst) in dy[i * g.out_len()..][..g.out_len()].chunks(ho * wo).zip(dpad.chunks_mut(pp)) {
                    widen(src, wo, dst, width);
                }
                out.resize(2 * b * walk.y_plane, 0.0);
                for (a, pair) in phases.iter().enumerate() {
                    for block in 0..g.c_in / b {
                        for (c, (taps, wt)) in pair.iter().enumerate() {
                            let y = out[c * b * walk.y_plane..].as_mut_ptr();
                            let wb = &wt[block * g.c_out * taps.len() * b..][..g.c_out * taps.len() * b];
                            // SAFETY: `dpad` holds `c_out` planes of `pp` values plus the slack
                            // that a spread walk's last vector reads past them (its farthest tap
                            // is `width + 1`, one row and one value); `wb` is the block's
                            // weights for these taps; `y` has `b` planes of `y_plane` values.
                            // The instruction set was detected.
                            unsafe {
                                match taps[..] {
                                    [t0] => x86::block_forward(isa, &Src { channels: g.c_out, pp, taps: [t0] }, walk, dpad, wb, y),
                                    [t0, t1] => x86::block_forward(isa, &Src { channels: g.c_out, pp, taps: [t0, t1] }, walk, dpad, wb, y),
                                    [t0, t1, t2, t3] => {
                                        x86::block_forward(isa, &Src { channels: g.c_out, pp, taps: [t0, t1, t2, t3] }, walk, dpad, wb, y)
                                    }
                                    _ => unreachable!("a phase has 1, 2 or 4 taps"),
                                }
                            }
                        }
                        // Rows `2 u + a` of the block's `b` planes of `dx`: the even columns
                        // from phase `(a, 0)`, the odd from `(a, 1)`.
                        let (even, odd) = out.split_at(b * walk.y_plane);
                        for ch in 0..b {
                            let plane = &mut dxs[(block * b + ch) * g.h * g.w..][..g.h * g.w];
                            for u in 0..ho {
                                let line = &mut plane[(2 * u + a) * g.w..][..g.w];
                                let (e, o) = (&even[ch * walk.y_plane + u * row..][..wo], &odd[ch * walk.y_plane + u * row..][..wo]);
                                for ((pair, &e), &o) in line.chunks_exact_mut(2).zip(e).zip(o) {
                                    pair[0].write(e);
                                    pair[1].write(o);
                                }
                            }
                        }
                    }
                }
            },
        )
    };
    // SAFETY: every sample's task writes each row of each of its planes once: rows `2 u + a` of
    // every channel for both parities `a`, all their columns (even and odd).
    unsafe { filled(g.n * g.in_len(), fill) }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    //! The tiles, generic over the vector type, and their entry points compiled for each
    //! instruction set (the generic code is inlined into them, so it gets their features).

    use super::{padded, place_planes, Geometry, Isa, Src, Walk};
    use std::arch::x86_64::*;

    /// One vector type's operations.
    pub(in crate::kernels::conv) trait Lanes {
        /// Lanes per vector.
        const W: usize;
        /// The register type.
        type V: Copy;
        /// A vector of zeros.
        ///
        /// # Safety
        /// The CPU has the type's instructions (every method: they run inside a
        /// `#[target_feature]` function, after [`super::isa`] found them).
        unsafe fn zero() -> Self::V;
        /// `W` values from `p`, unaligned.
        ///
        /// # Safety
        /// `p..p + W` is readable.
        unsafe fn load(p: *const f32) -> Self::V;
        /// `v` in every lane.
        ///
        /// # Safety
        /// As [`Lanes::zero`].
        unsafe fn splat(v: f32) -> Self::V;
        /// `a * b + c`.
        ///
        /// # Safety
        /// As [`Lanes::zero`].
        unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
        /// `a + b`.
        ///
        /// # Safety
        /// As [`Lanes::zero`].
        unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
        /// `v` to `p..p + W`, unaligned.
        ///
        /// # Safety
        /// `p..p + W` is writable.
        unsafe fn store(p: *mut f32, v: Self::V);
        /// The sum of the lanes, in a fixed tree order (halves, then quarters, ...).
        ///
        /// # Safety
        /// As [`Lanes::zero`].
        unsafe fn sum(v: Self::V) -> f32;
    }

    /// 16 f32 lanes.
    pub(in crate::kernels::conv) struct Wide;
    /// 8 f32 lanes.
    pub(in crate::kernels::conv) struct Narrow;

    impl Lanes for Wide {
        const W: usize = 16;
        type V = __m512;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> __m512 {
            _mm512_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            _mm512_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            _mm512_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn sum(v: __m512) -> f32 {
            // The upper half through the f64 view: `extractf32x8` would need AVX-512 DQ.
            let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
            let half = _mm256_add_ps(_mm512_castps512_ps256(v), high);
            Narrow::sum(half)
        }
    }

    impl Lanes for Narrow {
        const W: usize = 8;
        type V = __m256;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> __m256 {
            _mm256_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            _mm256_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            _mm256_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn sum(v: __m256) -> f32 {
            let quarter = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let eighth = _mm_add_ps(quarter, _mm_movehl_ps(quarter, quarter));
            _mm_cvtss_f32(_mm_add_ss(eighth, _mm_shuffle_ps::<1>(eighth, eighth)))
        }
    }

    /// `C` output channels x `P` output vectors: the sum over input channels and taps, in that
    /// order, then one store per vector. `xs` is the sample's padded planes, `wt` the block's
    /// `[c_in][9][C]` weights, `outs[p]` where vector `p` of the block's first channel goes
    /// (channel `c` at `+ c * plane`).
    ///
    /// # Safety
    /// `L`'s instructions are there; `xs` holds `src.channels` planes of `src.pp` values readable
    /// up to every `offs[p]` plus the farthest tap plus `L::W` of the last; `wt` holds
    /// `src.channels * T * C` values;
    /// each `outs[p] + c * plane` (c < C) has `L::W` writable values.
    #[inline(always)]
    unsafe fn forward_tile<L: Lanes, const C: usize, const P: usize, const T: usize>(
        xs: *const f32,
        offs: [usize; P],
        wt: *const f32,
        src: &Src<T>,
        outs: [*mut f32; P],
        plane: usize,
    ) {
        let mut acc = [[L::zero(); P]; C];
        for ci in 0..src.channels {
            let (xc, wc) = (xs.add(ci * src.pp), wt.add(ci * T * C));
            for (t, &tap) in src.taps.iter().enumerate() {
                let mut xv = [L::zero(); P];
                for p in 0..P {
                    xv[p] = L::load(xc.add(offs[p] + tap));
                }
                let wk = wc.add(t * C);
                for (c, row) in acc.iter_mut().enumerate() {
                    let b = L::splat(*wk.add(c));
                    for p in 0..P {
                        row[p] = L::fma(b, xv[p], row[p]);
                    }
                }
            }
        }
        for (c, row) in acc.iter().enumerate() {
            for p in 0..P {
                L::store(outs[p].add(c * plane), row[p]);
            }
        }
    }

    /// One block of `C` output channels of one sample (at `y`, planes `walk.y_plane` apart):
    /// the walk's vectors `P` at a time, the rest in one smaller tile (a 1-vector tile has too
    /// few independent sums to hide the FMA latency: 7x7 planes are 4 vectors, 3 + 1 ran the
    /// last one at a fraction of the rate).
    ///
    /// # Safety
    /// `L`'s instructions are there; `xpad` reaches the walk's read extent
    /// ([`Src::read_extent`], checked in debug builds); `wt` holds the block's
    /// `src.channels * T * C` weights; `y` has `C` writable planes of `walk.y_plane` values.
    #[inline(always)]
    unsafe fn forward_with<L: Lanes, const C: usize, const P: usize, const T: usize>(
        src: &Src<T>,
        walk: Walk,
        xpad: &[f32],
        wt: &[f32],
        y: *mut f32,
    ) {
        debug_assert!(xpad.len() >= src.read_extent(&walk), "direct forward: padded input shorter than its reads");
        debug_assert!(wt.len() >= src.channels * T * C, "direct forward: weight block too short");
        let vectors = walk.count();
        let mut v = 0;
        while v + P <= vectors {
            let (mut offs, mut outs) = ([0; P], [y; P]);
            for p in 0..P {
                let (a, b) = walk.at(v + p);
                (offs[p], outs[p]) = (a, y.add(b));
            }
            forward_tile::<L, C, P, T>(xpad.as_ptr(), offs, wt.as_ptr(), src, outs, walk.y_plane);
            v += P;
        }
        // Fewer than `P` (at most 3) are left.
        match vectors - v {
            0 => {}
            1 => {
                let (a, b) = walk.at(v);
                forward_tile::<L, C, 1, T>(xpad.as_ptr(), [a], wt.as_ptr(), src, [y.add(b)], walk.y_plane);
            }
            _ => {
                let ((a0, b0), (a1, b1)) = (walk.at(v), walk.at(v + 1));
                forward_tile::<L, C, 2, T>(xpad.as_ptr(), [a0, a1], wt.as_ptr(), src, [y.add(b0), y.add(b1)], walk.y_plane);
            }
        }
    }

    // `forward_with`'s remainder takes at most 2 vectors.
    const _: () = assert!(WIDE_P <= 3 && NARROW_P <= 3);
    const WIDE_P: usize = 3;
    const NARROW_P: usize = 2;

    /// # Safety
    /// AVX-512F is there; as [`forward_with`].
    #[target_feature(enable = "avx512f")]
    unsafe fn forward_wide<const T: usize>(src: &Src<T>, walk: Walk, xpad: &[f32], wt: &[f32], y: *mut f32) {
        forward_with::<Wide, 8, WIDE_P, T>(src, walk, xpad, wt, y)
    }

    /// # Safety
    /// AVX2 and FMA are there; as [`forward_with`].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_avx2<const T: usize>(src: &Src<T>, walk: Walk, xpad: &[f32], wt: &[f32], y: *mut f32) {
        forward_with::<Narrow, 4, NARROW_P, T>(src, walk, xpad, wt, y)
    }

    /// One block of output channels of one sample from its padded planes and the block's weights.
    ///
    /// # Safety
    /// `isa` is one [`super::isa`] found on this CPU; otherwise as [`forward_with`].
    pub(super) unsafe fn block_forward<const T: usize>(isa: Isa, src: &Src<T>, walk: Walk, xpad: &[f32], wt: &[f32], y: *mut f32) {
        match isa {
            Isa::Avx512 => forward_wide(src, walk, xpad, wt, y),
            Isa::Avx2 => forward_avx2(src, walk, xpad, wt, y),
        }
    }

    /// The output-gradient values (per output channel) one pass of [`weight_grad_with`] keeps in
    /// L1: half of a 32 KB L1, the rest for the input rows and the sums.
    const PASS_VALUES: usize = 4096 / 8;

    /// The weight gradient of a block of `C` output channels over `count` samples: for each
    /// sample, input channel and kernel row, `C x 3` lane sums (`kx` = 0..3) over the walk's
    /// vectors, carried from sample to sample in `sums`; at the end each is summed over its
    /// lanes into `dw[c][ci][ky][kx]`, in a fixed tree of vector adds ([`Lanes::sum`]: the
    /// lanes one by one through memory cost 7-17% of the 14x14, 8x8 and 7x7 layers' time, whose
    /// partial sums are many beside their work). The work runs in passes over a few samples, or
    /// over a band of one sample's rows, whose `C` gradient planes fit in half the L1 cache;
    /// each pass reads them once for every input channel and kernel row. Whole 32x32 planes
    /// (32 KB for 8 channels) filled the L1 and ran at 64% of the forward's rate; one sample of
    /// 8x8 planes per round of sums (5 vectors) spent its time loading and storing the sums.
    /// Every sum still takes its terms in sample, row, vector order, whatever the passes.
    /// Both walks' planes (`y_plane`) are whole vectors.
    ///
    /// # Safety
    /// `L`'s instructions are there; `xpad` reaches the walk's read extent over `count` samples
    /// ([`Src::read_extent`], checked in debug builds); `dw` holds `C * c_in * 9` values (the
    /// output gradient's length is checked).
    #[inline(always)]
    unsafe fn weight_grad_with<L: Lanes, const C: usize>(
        g: &Geometry,
        walk: Walk,
        xpad: &[f32],
        (dy, stride): (&[f32], usize),
        count: usize,
        dw: &mut [f32],
    ) {
        debug_assert!(
            xpad.len() >= padded(g).src(g, count).read_extent(&walk),
            "direct weight gradient: padded input shorter than its reads"
        );
        debug_assert!(dw.len() >= C * g.c_in * 9, "direct weight gradient: gradient block too short");
        let pad = padded(g);
        let mut sums = vec![[[L::zero(); 3]; C]; g.c_in * 3];
        // Each sample's `C` gradient planes placed in vector-aligned memory (a spread walk's at
        // the padded width): read unaligned, every one of the 8 loads per 24 FMAs straddled two
        // cache lines.
        let cols = g.cols();
        assert!(count >= 1 && dy.len() >= (count - 1) * stride + C * cols, "direct weight gradient: output gradient too short");
        let (per_sample, per_row) = (walk.y_plane, walk.y_plane / walk.rows.max(1));
        let (samples, band) = if per_sample <= PASS_VALUES {
            ((PASS_VALUES / per_sample).clamp(1, count), walk.rows)
        } else {
            (1, (PASS_VALUES / per_row).clamp(1, walk.rows))
        };
        let mut aligned = vec![L::zero(); samples * C * walk.y_plane / L::W];
        // SAFETY: `aligned` holds `samples * C * y_plane` f32 (`y_plane` is whole vectors),
        // initialized.
        let planes = std::slice::from_raw_parts_mut(aligned.as_mut_ptr().cast::<f32>(), samples * C * walk.y_plane);
        for first in (0..count).step_by(samples) {
            let here = samples.min(count - first);
            for (k, s) in (first..first + here).enumerate() {
                place_planes(g, walk, &dy[s * stride..][..C * cols], &mut planes[k * C * walk.y_plane..][..C * walk.y_plane]);
            }
            for r0 in (0..walk.rows).step_by(band) {
                let r1 = (r0 + band).min(walk.rows);
                for ci in 0..g.c_in {
                    for ky in 0..3 {
                        let slot = &mut sums[ci * 3 + ky];
                        let mut acc = *slot;
                        let tap = [pad.taps[ky * 3], pad.taps[ky * 3 + 1], pad.taps[ky * 3 + 2]];
                        for k in 0..here {
                            let xs = xpad.as_ptr().add(((first + k) * g.c_in + ci) * pad.pp);
                            let ds = planes.as_ptr().add(k * C * walk.y_plane);
                            for r in r0..r1 {
                                for j in (0..walk.per_row * L::W).step_by(L::W) {
                                    let (a, b) = (r * walk.x_row + j, r * walk.y_row + j);
                                    let xv = [L::load(xs.add(a + tap[0])), L::load(xs.add(a + tap[1])), L::load(xs.add(a + tap[2]))];
                                    for (c, row) in acc.iter_mut().enumerate() {
                                        let d = L::load(ds.add(c * walk.y_plane + b));
                                        for kx in 0..3 {
                                            row[kx] = L::fma(d, xv[kx], row[kx]);
                                        }
                                    }
                                }
                            }
                        }
                        *slot = acc;
                    }
                }
            }
        }
        for (t, slot) in sums.iter().enumerate() {
            let (ci, ky) = (t / 3, t % 3);
            for (c, row) in slot.iter().enumerate() {
                for (kx, &v) in row.iter().enumerate() {
                    dw[(c * g.c_in + ci) * 9 + ky * 3 + kx] = L::sum(v);
                }
            }
        }
    }

    /// # Safety
    /// AVX-512F is there; as [`weight_grad_with`].
    #[target_feature(enable = "avx512f")]
    unsafe fn weight_grad_wide(g: &Geometry, walk: Walk, xpad: &[f32], dy: (&[f32], usize), count: usize, dw: &mut [f32]) {
        weight_grad_with::<Wide, 8>(g, walk, xpad, dy, count, dw)
    }

    /// # Safety
    /// AVX2 and FMA are there; as [`weight_grad_with`].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn weight_grad_avx2(g: &Geometry, walk: Walk, xpad: &[f32], dy: (&[f32], usize), count: usize, dw: &mut [f32]) {
        weight_grad_with::<Narrow, 4>(g, walk, xpad, dy, count, dw)
    }

    /// The weight gradient of one block of output channels over `count` samples (padded inputs
    /// from `xpad`, the block's output gradient planes at `dy.0`, `dy.1` apart per sample),
    /// into `dw` (`[block][c_in][3][3]`).
    ///
    /// # Safety
    /// `isa` is one [`super::isa`] found on this CPU; otherwise as [`weight_grad_with`].
    pub(super) unsafe fn block_weight_grad(
        isa: Isa,
        g: &Geometry,
        walk: Walk,
        xpad: &[f32],
        dy: (&[f32], usize),
        count: usize,
        dw: &mut [f32],
    ) {
        match isa {
            Isa::Avx512 => weight_grad_wide(g, walk, xpad, dy, count, dw),
            Isa::Avx2 => weight_grad_avx2(g, walk, xpad, dy, count, dw),
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    //! Off x86-64 [`super::suits`] is false and nothing here is reached.

    use super::{Geometry, Isa, Src, Walk};

    pub(super) unsafe fn block_forward<const T: usize>(_: Isa, _: &Src<T>, _: Walk, _: &[f32], _: &[f32], _: *mut f32) {
        unreachable!("the direct convolution needs x86-64")
    }

    pub(super) unsafe fn block_weight_grad(_: Isa, _: &Geometry, _: Walk, _: &[f32], _: (&[f32], usize), _: usize, _: &mut [f32]) {
        unreachable!("the direct convolution needs x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::super::shifted::tests::values;
    use super::super::{flipped_transpose, im2col_forward, im2col_weight_grad, input_grad_scatter, transposed_geometry, Geometry};

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max)
    }

    /// `(n, c_in, h, w, c_out)` of 3x3 "same" convolutions: ResNet-20's three stages (rows of
    /// whole vectors, then an 8x8 plane spread over its padded positions), a plane with one
    /// vector per row, a batch that leaves a partial chunk, a 3-channel input (ResNet's stem),
    /// the ConvNet's layers (28x28 from 1 channel, 14x14, 7x7: all spread).
    const CASES: [(usize, usize, usize, usize, usize); 9] = [
        (3, 16, 32, 32, 16),
        (5, 32, 16, 16, 32),
        (7, 64, 8, 8, 64),
        (2, 8, 5, 16, 24),
        (41, 8, 8, 8, 8),
        (2, 3, 32, 32, 16),
        (3, 1, 28, 28, 32),
        (3, 32, 14, 14, 64),
        (2, 64, 7, 7, 128),
    ];

    /// Stride-2 layers: ResNet-20's two (16x16 outputs as rows of whole vectors, 8x8 spread over a
    /// phase's positions), a plane with one vector per row, and a small odd batch of 4x6 planes.
    const STRIDED: [(usize, usize, usize, usize, usize); 4] =
        [(3, 16, 32, 32, 32), (5, 32, 16, 16, 64), (2, 8, 10, 32, 16), (5, 3, 4, 6, 8)];

    fn geometries() -> Vec<Geometry> {
        let same = CASES.iter().map(|&(n, c_in, h, w, c_out)| Geometry { n, c_in, h, w, c_out, k: 3, stride: 1, pad: 1 });
        let strided = STRIDED.iter().map(|&(n, c_in, h, w, c_out)| Geometry { n, c_in, h, w, c_out, k: 3, stride: 2, pad: 1 });
        same.chain(strided).collect()
    }

    /// Stride 2 on an odd height or width is left to the other forms.
    #[test]
    fn odd_strided_planes_are_not_taken() {
        for (h, w) in [(7, 8), (8, 7), (8, 8)] {
            let g = Geometry { n: 1, c_in: 8, h, w, c_out: 16, k: 3, stride: 2, pad: 1 };
            assert_eq!(super::suits_on(super::Isa::Avx2, &g), h % 2 == 0 && w % 2 == 0, "{g:?}");
        }
    }

    /// Every instruction set this CPU runs (AVX-512 and AVX2 on an AVX-512 machine), so each
    /// kernel is checked where it can run.
    fn isas() -> &'static [super::Isa] {
        let isas = super::available();
        if isas.is_empty() {
            // A CPU without AVX2 and FMA (or NORMWD_CONV_DIRECT=off): the form is never used.
            eprintln!("direct convolution not available here: its tests compare nothing");
        }
        isas
    }

    /// The direct forward equals im2col's GEMM (different summation orders: a tolerance of f32
    /// rounding over `c_in * 9` terms of size <= 0.25), stride 1 and 2.
    #[test]
    fn direct_forward_equals_im2col() {
        for (&isa, g) in isas().iter().flat_map(|i| std::iter::repeat(i).zip(geometries())) {
            let x = values(g.n * g.in_len(), 1);
            let wt = values(g.c_out * g.c_in * 9, 2);
            let d = max_diff(&super::forward_on(isa, &g, &x, &wt), &im2col_forward(&g, &x, &wt));
            assert!(d < 1e-7 * (g.c_in * 9) as f32 + 1e-5, "{isa:?} {g:?}: direct and im2col outputs differ by {d}");
        }
    }

    /// The input gradient as the direct forward of the flipped, transposed weight equals
    /// im2col's GEMM and fold-back.
    #[test]
    fn direct_input_gradient_equals_col2im() {
        for (&isa, g) in isas().iter().flat_map(|i| std::iter::repeat(i).zip(geometries())) {
            let Some(t) = transposed_geometry(&g).filter(|t| super::suits_on(isa, t)) else { continue };
            let dy = values(g.n * g.out_len(), 3);
            let wt = values(g.c_out * g.c_in * 9, 4);
            let ours = super::forward_on(isa, &t, &dy, &flipped_transpose(&g, &wt));
            let d = max_diff(&ours, &input_grad_scatter(&g, &wt, &dy));
            assert!(d < 1e-7 * (g.c_out * 9) as f32 + 1e-5, "{isa:?} {g:?}: direct and col2im input gradients differ by {d}");
        }
    }

    /// The stride-2 input gradient by phases equals im2col's GEMM and fold-back.
    #[test]
    fn strided_input_gradient_equals_col2im() {
        let mut checked = 0;
        for (&isa, g) in isas().iter().flat_map(|i| std::iter::repeat(i).zip(geometries())) {
            if g.stride != 2 || !g.c_in.is_multiple_of(isa.block()) {
                continue;
            }
            let dy = values(g.n * g.out_len(), 7);
            let wt = values(g.c_out * g.c_in * 9, 8);
            let d = max_diff(&super::input_grad_on(isa, &g, &wt, &dy), &input_grad_scatter(&g, &wt, &dy));
            assert!(d < 1e-7 * (g.c_out * 9) as f32 + 1e-5, "{isa:?} {g:?}: phase and col2im input gradients differ by {d}");
            checked += 1;
        }
        assert!(isas().is_empty() || checked >= 3, "only {checked} strided geometries checked");
    }

    /// The weight gradient equals im2col's (sums over up to 41 samples x 1024 pixels of
    /// products ~0.25: a tolerance relative to the largest value), stride 1 and 2.
    #[test]
    fn direct_weight_gradient_equals_im2col() {
        for (&isa, g) in isas().iter().flat_map(|i| std::iter::repeat(i).zip(geometries())) {
            let x = values(g.n * g.in_len(), 5);
            let dy = values(g.n * g.out_len(), 6);
            let (ours, reference) = (super::weight_grad_on(isa, &g, &x, &dy), im2col_weight_grad(&g, &x, &dy));
            let scale = reference.iter().fold(1f32, |m, v| m.max(v.abs()));
            let d = max_diff(&ours, &reference);
            let tol = 1e-5 * scale * (g.n * g.h * g.w) as f32 / 1024.0 + 1e-4;
            assert!(d < tol, "{isa:?} {g:?}: weight gradients differ by {d} (largest {scale})");
        }
    }
}
