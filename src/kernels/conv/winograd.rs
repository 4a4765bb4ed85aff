//! Winograd's minimal filtering for stride-1 3x3 convolutions (Lavin & Gray 2016, "Fast
//! Algorithms for Convolutional Neural Networks"), F(2x2, 3x3) and F(4x4, 3x3): each `m x m`
//! block of outputs from an `(m + 2) x (m + 2)` tile of input, with `(m + 2)^2` multiplications
//! per tile and channel pair instead of `9 m^2`: 2.25x fewer for `m = 2`, 4x fewer for `m = 4`.
//!
//! The kernel and the input tiles are transformed (`U = G w G^T`, `V = B^T d B`), the
//! `(m + 2)^2` positions of the transformed tiles are multiplied over the channels as one product
//! each, `M[p] = V[p] @ U[p]` (a register-tiled SIMD kernel, the direct convolution's vector
//! types), and the outputs come back by `Y = A^T M A`. The input gradient is the forward of the
//! flipped, transposed kernel; for F(2x2) that kernel's transform is the forward's `U` with its
//! positions permuted and its channel axes swapped, so `G w G^T` is computed once per step and
//! read by both. The weight gradient is the transposed form,
//! `dW = G^T [sum over tiles (A dy A^T) ⊙ (B^T d B)] G`.
//!
//! Layout: channels last, padded to whole vectors. Each image is first spread into a zero-bordered
//! buffer of `[row][column mod m][column / m][channel]`, so a tile's column `l` for every tile of a
//! tile row is one contiguous run (phase `l mod m`, shifted by `l / m` slots): both passes of each
//! transform are then element-wise along whole runs of channels x tiles, vectorized by the
//! compiler with no shuffles (16 lanes in the AVX-512 build of a chunk's work, 8 in the AVX2 one),
//! and planes of any size lose nothing to partial vectors. `V[p][tile][channel]` and
//! `M[p][tile][channel]` keep a chunk's tiles in rows; the products hold a block of tiles x output
//! channels in registers for the whole sum over input channels, and the weight gradient's sums a
//! block of channel pairs for the whole sum over tiles. The engine picks this form per layer and
//! part where it measures faster ([`super::choice`]); PERFORMANCE.md has its speed and float32
//! error per layer.

use super::super::batch_norm::row_moments;
use super::super::gemm::{matmul, Mat};
use super::super::uninit::{assume_written, filled};
use super::{direct, flipped_transpose, kept, l2_bytes, sized, sum_in_order, transposed_geometry, Geometry, OutGrad};
use rayon::prelude::*;
use std::borrow::Cow;
use std::mem::MaybeUninit;
/// A tile size, F(m x m, 3 x 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tile {
    /// F(2x2, 3x3): 16 transformed positions, 2.25x fewer multiplications; transforms of 0, ±1
    /// and 1/2, so its float32 error stays near the direct form's.
    F2,
    /// F(4x4, 3x3): 36 positions, 4x fewer multiplications; transforms with coefficients up to 8
    /// and down to 1/24, so a larger float32 error (PERFORMANCE.md measures it per layer).
    F4,
}

/// The rows of `G` (`alpha x 3`) of F(2x2, 3x3).
const G2: [[f32; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];

/// The rows of `G` of F(4x4, 3x3) (interpolation points 0, ±1, ±2 and infinity).
const G4: [[f32; 3]; 6] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// Up to six rows of equal length (the first `alpha` or `m` are used).
type Rows<'a> = [&'a [f32]; 6];
/// Up to six rows to write.
type RowsMut<'a> = [&'a mut [f32]; 6];

impl Tile {
    /// Every tile size, smallest first.
    pub const ALL: [Tile; 2] = [Tile::F2, Tile::F4];

    /// The tile size with `M` outputs per side (2 or 4), as a constant for the transforms.
    const fn of<const M: usize>() -> Tile {
        match M {
            2 => Tile::F2,
            4 => Tile::F4,
            _ => panic!("F(MxM, 3x3) is built for M = 2 and 4"),
        }
    }

    /// Outputs per tile side.
    pub const fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Input tile side, `m + 2`.
    const fn alpha(self) -> usize {
        self.m() + 2
    }

    /// Transformed positions per tile, `alpha^2`.
    pub const fn positions(self) -> usize {
        self.alpha() * self.alpha()
    }

    /// A short name: `F(2x2,3x3)`.
    pub fn name(self) -> &'static str {
        match self {
            Tile::F2 => "F(2x2,3x3)",
            Tile::F4 => "F(4x4,3x3)",
        }
    }

    fn g(self) -> &'static [[f32; 3]] {
        match self {
            Tile::F2 => &G2,
            Tile::F4 => &G4,
        }
    }

    /// `o = B^T d` over `alpha` rows, element by element along them.
    #[inline(always)]
    fn input(self, d: &Rows, o: &mut RowsMut) {
        match self {
            Tile::F2 => apply::<4, 4>(d, o, |[a, b, c, e]| [a - c, b + c, c - b, b - e]),
            Tile::F4 => apply::<6, 6>(d, o, |[a, b, c, e, f, g]| {
                [
                    4.0 * a - 5.0 * c + f,
                    e + f - 4.0 * (b + c),
                    f - e + 4.0 * (b - c),
                    f - c + 2.0 * (e - b),
                    f - c - 2.0 * (e - b),
                    4.0 * b - 5.0 * e + g,
                ]
            }),
        }
    }

    /// `y = A^T s` from `alpha` rows to `m`.
    #[inline(always)]
    fn output(self, s: &Rows, y: &mut RowsMut) {
        match self {
            Tile::F2 => apply::<4, 2>(s, y, |[a, b, c, e]| [a + b + c, b - c - e]),
            Tile::F4 => apply::<6, 4>(s, y, |[a, b, c, e, f, g]| {
                let (sum12, dif12, sum34, dif34) = (b + c, b - c, e + f, e - f);
                [a + sum12 + sum34, dif12 + 2.0 * dif34, sum12 + 4.0 * sum34, dif12 + 8.0 * dif34 + g]
            }),
        }
    }

    /// `o = A d` from `m` rows to `alpha`: the transposition of [`Tile::output`], for the
    /// output gradient in the weight gradient.
    #[inline(always)]
    fn grad(self, d: &Rows, o: &mut RowsMut) {
        match self {
            Tile::F2 => apply::<2, 4>(d, o, |[a, b]| [a, a + b, a - b, -b]),
            Tile::F4 => apply::<4, 6>(d, o, |[a, b, c, e]| {
                let (even, odd, even4, odd8) = (a + c, b + e, a + 4.0 * c, 2.0 * b + 8.0 * e);
                [a, even + odd, even - odd, even4 + odd8, even4 - odd8, e]
            }),
        }
    }
}

/// Positions per block of the transforms' loops: every row they run along is a whole number of
/// blocks long (the buffers are padded), so each block is one or two vector operations per
/// term and no loop has a scalar remainder.
const L: usize = 16;

/// `o[j][x] = f(d[0][x], ..., d[A - 1][x])[j]` for `j < B` and `x` below the length of `o[0]`
/// (whole blocks of [`L`]).
#[inline(always)]
fn apply<const A: usize, const B: usize>(d: &Rows, o: &mut RowsMut, f: impl Fn([f32; A]) -> [f32; B]) {
    let n = o[0].len();
    assert!(n.is_multiple_of(L), "apply: rows of {n}");
    for x0 in (0..n).step_by(L) {
        let inputs: [&[f32; L]; A] = std::array::from_fn(|k| d[k][x0..x0 + L].try_into().expect("a block"));
        let mut out = [[0f32; L]; B];
        for l in 0..L {
            let r = f(std::array::from_fn(|k| inputs[k][l]));
            for (o, v) in out.iter_mut().zip(r) {
                o[l] = v;
            }
        }
        for (row, block) in o.iter_mut().zip(&out) {
            row[x0..x0 + L].copy_from_slice(block);
        }
    }
}

/// `count` rows of `len` values, `stride` apart in `buf`.
#[inline(always)]
fn rows(buf: &[f32], stride: usize, len: usize, count: usize) -> Rows<'_> {
    let mut out: Rows = [&[]; 6];
    for (i, o) in out.iter_mut().enumerate().take(count) {
        *o = &buf[i * stride..][..len];
    }
    out
}

/// As [`rows`], to write.
#[inline(always)]
fn rows_mut(buf: &mut [f32], stride: usize, len: usize, count: usize) -> RowsMut<'_> {
    let mut out: RowsMut = Default::default();
    let mut rest = buf;
    for (i, o) in out.iter_mut().enumerate().take(count) {
        let (head, tail) = rest.split_at_mut(if i + 1 < count { stride } else { len });
        *o = &mut head[..len];
        rest = tail;
    }
    out
}

/// Channels are padded to whole blocks of this many in the buffers, so every run the transforms
/// and products read is whole vectors (one AVX-512 vector, two AVX2 ones).
const CB: usize = 16;

/// `c` rounded up to whole channel blocks.
fn padded(c: usize) -> usize {
    c.next_multiple_of(CB)
}

/// The FLOPs of one part's products on `g` (forward, input or weight gradient alike): `2 c_out
/// c_in` per transformed position and tile, with the channels as padded to whole vectors.
pub fn product_flops(g: &Geometry, tile: Tile) -> u64 {
    let plan = Plan::new(g, tile);
    2 * (tile.positions() * plan.cop * plan.cip * g.n * plan.per_image()) as u64
}

/// Whether Winograd's F(m x m, 3 x 3) computes this convolution: 3x3, stride 1, padding up to 2.
pub fn applies(g: &Geometry) -> bool {
    g.k == 3 && g.stride == 1 && g.pad <= 2
}

/// The transformed kernel `U[p][c_in][c_out] = (G w G^T)[p]` of one layer, both channel axes
/// padded with zeros to whole vectors.
#[derive(Debug, Clone)]
pub struct Kernel {
    tile: Tile,
    c_out: usize,
    c_in: usize,
    u: Vec<f32>,
}

impl Kernel {
    /// The transform of the flipped, transposed kernel (the input gradient's), for F(2x2) only:
    /// flipping the kernel reverses G's columns, which for F(2x2) swaps G's first and last rows,
    /// so position `(r, c)` of the flipped kernel's transform is `(s(r), s(c))` of `U` (`s`
    /// swapping 0 and 3) with the channel axes swapped. A copy, no `G w G^T`.
    fn flipped(&self) -> Kernel {
        assert_eq!(self.tile, Tile::F2, "only F(2x2)'s flipped kernel is a permutation of U");
        let (a, ci, co) = (self.tile.alpha(), padded(self.c_in), padded(self.c_out));
        let s = |i: usize| if i == 0 || i == a - 1 { a - 1 - i } else { i };
        let mut u = vec![0f32; self.u.len()];
        u.par_chunks_mut(ci * co).enumerate().for_each(|(p, dst)| {
            let src = &self.u[(s(p / a) * a + s(p % a)) * ci * co..][..ci * co];
            for (i, row) in src.chunks_exact(co).enumerate() {
                for (o, &val) in row.iter().enumerate() {
                    dst[o * ci + i] = val;
                }
            }
        });
        Kernel { tile: self.tile, c_out: self.c_in, c_in: self.c_out, u }
    }
}

/// `U = G w G^T` of `weight[c_out, c_in, 3, 3]`, computed once per step and read by every tile
/// of the forward (and, permuted, by the F(2x2) input gradient). One position per task, each
/// written row by row: the serial form, writing all positions of a channel pair at once with
/// strides of `c_in x c_out`, was 1% of a ResNet-20 step with the other thread idle.
pub fn kernel_transform(g: &Geometry, tile: Tile, weight: &[f32]) -> Kernel {
    let (co, ci, a) = (g.c_out, g.c_in, tile.alpha());
    let (cip, cop) = (padded(ci), padded(co));
    let gm = tile.g();
    let mut u = vec![0f32; tile.positions() * cip * cop];
    u.par_chunks_mut(cip * cop).enumerate().for_each(|(p, up)| {
        let (gr, gc) = (gm[p / a], gm[p % a]);
        for (i, row) in up.chunks_exact_mut(cop).take(ci).enumerate() {
            for (o, val) in row.iter_mut().take(co).enumerate() {
                let w = &weight[(o * ci + i) * 9..][..9];
                // (G w)[r][b] for this position's row r, then times G^T's column c.
                let gw: [f32; 3] = std::array::from_fn(|b| gr[0] * w[b] + gr[1] * w[3 + b] + gr[2] * w[6 + b]);
                *val = gw[0] * gc[0] + gw[1] * gc[1] + gw[2] * gc[2];
            }
        }
    });
    Kernel { tile, c_out: co, c_in: ci, u }
}

/// One convolution's tiling: `th x tw` tiles per image, channels padded to `cip` and `cop`.
#[derive(Debug, Clone, Copy)]
struct Plan {
    tile: Tile,
    th: usize,
    tw: usize,
    cip: usize,
    cop: usize,
}

impl Plan {
    fn new(g: &Geometry, tile: Tile) -> Plan {
        let m = tile.m();
        Plan { tile, th: g.h_out().div_ceil(m), tw: g.w_out().div_ceil(m), cip: padded(g.c_in), cop: padded(g.c_out) }
    }

    /// Tiles per image.
    fn per_image(&self) -> usize {
        self.th * self.tw
    }

    /// Column slots per phase of a spread input row: tile column `tw - 1` reads up to column
    /// `m tw + 1` of the padded input.
    fn slots(&self) -> usize {
        self.tw + 1
    }

    /// Values per spread input row, `m` phases of [`Plan::slots`] slots of `cip` channels.
    fn in_row(&self) -> usize {
        self.tile.m() * self.slots() * self.cip
    }

    /// Values of one spread input image: `m th + 2` rows (the last tile row reads up to row
    /// `m th + 1`).
    fn in_len(&self) -> usize {
        (self.tile.m() * self.th + 2) * self.in_row()
    }

    /// Values per spread output-gradient row: `m` phases of `tw` slots of `cop` channels.
    fn grad_row(&self) -> usize {
        self.tile.m() * self.tw * self.cop
    }

    /// Samples per chunk: as many (up to 16) as keep a chunk's transformed inputs and products
    /// within the per-core L2 cache; its machine dependence is [`Geometry::chunk`]'s.
    fn chunk(&self) -> usize {
        (l2_bytes() / (self.tile.positions() * (self.cip + self.cop) * self.per_image() * 4).max(1)).clamp(1, 16)
    }

    /// Samples per chunk of the gradients: half of [`Plan::chunk`], as the fused backward holds
    /// four transformed operands (the weight gradient's and the input gradient's) where the
    /// forward holds two. The weight gradient alone takes the same chunks, so both forms add
    /// the same sums in the same order.
    fn grad_chunk(&self) -> usize {
        (self.chunk() / 2).max(1)
    }

    /// The forward's chunks of `n` samples: up to [`Plan::chunk`] each, as many as a multiple of
    /// the threads (the output's bits do not depend on the chunks, so they may follow the
    /// threads).
    fn forward_spans(&self, n: usize) -> Spans {
        Spans::new(n, n.div_ceil(self.chunk()).next_multiple_of(rayon::current_num_threads()))
    }

    /// The gradients' chunks of `n` samples and how many groups ([`GROUPS`]) share them: up to
    /// [`Plan::grad_chunk`] samples a chunk, as many chunks as a multiple of the groups where
    /// there are more chunks than groups, so every group sums as many samples (give or take
    /// one). The threads play no part, so neither do they in the sums.
    fn grad_spans(&self, n: usize) -> (Spans, usize) {
        let chunks = n.div_ceil(self.grad_chunk());
        if chunks <= GROUPS {
            (Spans::new(n, chunks), chunks.max(1))
        } else {
            (Spans::new(n, chunks.next_multiple_of(GROUPS)), GROUPS)
        }
    }

    /// Rows of `V` and `M` for `count` samples: their tiles, rounded up to whole blocks of the
    /// products' register tiles.
    fn rows(&self, count: usize) -> usize {
        (count * self.per_image()).next_multiple_of(8)
    }
}

/// `count` runs of consecutive samples out of `n`, whose sizes differ by at most one. Chunks of one
/// fixed size left the last one short (128 images in chunks of 14 are nine chunks of 14 and one
/// of 2), so one of two threads transformed 70 images and the other 58.
#[derive(Debug, Clone, Copy)]
struct Spans {
    n: usize,
    count: usize,
}

impl Spans {
    /// `count` spans over `n` samples: at least one, and no more than `n` (none empty).
    fn new(n: usize, count: usize) -> Spans {
        Spans { n, count: count.min(n).max(1) }
    }

    /// The samples of span `i`.
    fn get(self, i: usize) -> std::ops::Range<usize> {
        i * self.n / self.count..(i + 1) * self.n / self.count
    }

    /// `s` cut at the spans' bounds, `per` values per sample: each span's part with its first
    /// sample.
    fn split<T>(self, mut s: &mut [T], per: usize) -> Vec<(usize, &mut [T])> {
        (0..self.count)
            .map(|i| {
                let samples = self.get(i);
                let (part, rest) = std::mem::take(&mut s).split_at_mut(samples.len() * per);
                s = rest;
                (samples.start, part)
            })
            .collect()
    }
}

/// Per-thread buffers, kept from call to call ([`super::kept`]).
#[derive(Default)]
struct Buffers {
    spread: Spread0,
    half: Vec<f32>,
    out: Vec<f32>,
    v: Vec<f32>,
    m: Vec<f32>,
    /// The fused backward's second spread and transformed operands ([`backward`]).
    spread2: Spread0,
    v2: Vec<f32>,
    m2: Vec<f32>,
    /// One image's output gradient when the backward computes it ([`OutGrad::Norm`]).
    grad: Vec<f32>,
}

thread_local! {
    /// This thread's [`Buffers`]: a ResNet-20 step makes about 50 Winograd calls, each of which
    /// would otherwise allocate and zero its buffers afresh in every rayon job.
    static BUFFERS: std::cell::Cell<Buffers> = std::cell::Cell::new(Buffers::default());
}

/// Whether the chunks run their AVX-512 builds (16 lanes, and the AVX-512 transposes).
fn wide() -> bool {
    direct::isa() == Some(direct::Isa::Avx512)
}

/// `buf` as `len` zeros: a spread buffer's borders and padded channels are never written, so
/// one zeroing per chunk keeps them zero for all its images.
fn zeroed(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    let s = sized(buf, len);
    s.fill(0.0);
    s
}

/// A buffer for [`transform_input`]'s spread images, zeroed only when its layout changes: the
/// spread writes the same slots of every image of a layout and never its borders and padded
/// channels, so they stay zero from chunk to chunk and call to call (zeroing it for each chunk
/// of one image, as the gradients' first stage has, was ~0.4% of a ResNet-20 step).
#[derive(Default)]
struct Spread0 {
    buf: Vec<f32>,
    /// What [`Spread0::get`] last zeroed it for: the spread's shape and the length.
    layout: Option<[usize; 9]>,
}

impl Spread0 {
    /// `len` values for the spread of `g`'s input by `plan` with tiles of `m`: zero wherever
    /// the spread does not write.
    fn get(&mut self, m: usize, plan: &Plan, g: &Geometry, len: usize) -> &mut [f32] {
        let layout = [m, g.c_in, g.h, g.w, g.pad, plan.slots(), plan.cip, plan.in_row(), len];
        if self.layout != Some(layout) {
            self.layout = Some(layout);
            return zeroed(&mut self.buf, len);
        }
        &mut self.buf[..len]
    }
}

/// `dst[y * row + ((x + pad) % m * slots + (x + pad) / m) * cp + c] = src[c][y][x]` for the
/// `c` planes of `h x w` in `src`: planes to channels-last rows, each row's columns split by phase.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the two layouts' shapes
fn spread<const M: usize>(
    src: &[f32],
    c: usize,
    h: usize,
    w: usize,
    pad: usize,
    slots: usize,
    cp: usize,
    dst: &mut [f32],
    row: usize,
    wide: bool,
) {
    assert!(
        src.len() >= c * h * w
            && dst.len() >= h * row
            && row >= M * slots * cp
            && cp >= c.next_multiple_of(16)
            && (w + pad).div_ceil(M) <= slots
    );
    #[cfg(target_arch = "x86_64")]
    if wide {
        for y in 0..h {
            // SAFETY: `wide` says the CPU has AVX-512F; the reads stay in row `y` of the `c`
            // planes and the writes in row `y` of `dst` (asserted above).
            unsafe { x86::spread_row::<M>(src[y * w..].as_ptr(), h * w, c, w, pad, slots, cp, dst[y * row..].as_mut_ptr()) };
        }
        return;
    }
    let _ = wide;
    // Row by row, so the rows being written stay in L1 (a whole spread image does not).
    for y in 0..h {
        for (ci, plane) in src.chunks_exact(h * w).take(c).enumerate() {
            let line = &plane[y * w..][..w];
            let base = y * row + ci;
            // Phase by phase: column x lands in phase (x + pad) % m, slot (x + pad) / m, so a
            // phase's columns are every m-th, its slots consecutive.
            for ph in 0..M {
                let first = (ph + M - pad % M) % M;
                let at = base + (ph * slots + (first + pad) / M) * cp;
                for (d, &val) in dst[at..].iter_mut().step_by(cp).zip(line.iter().skip(first).step_by(M)) {
                    *d = val;
                }
            }
        }
    }
}

/// `dst[co * plane + x] = src[(x % m * tw + x / m) * cp + co]` for `co < c` and `x < w`: one
/// output row from channels last, its columns split by phase, back to `c` planes (`dst` at the
/// row in plane 0). `wide`: through the AVX-512 transposes.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the two layouts' shapes
fn gather<const M: usize>(src: &[f32], tw: usize, cp: usize, c: usize, w: usize, dst: &mut [MaybeUninit<f32>], plane: usize, wide: bool) {
    assert!(src.len() >= M * tw * cp && M * tw >= w && cp >= c.next_multiple_of(16) && c > 0 && dst.len() >= (c - 1) * plane + w);
    #[cfg(target_arch = "x86_64")]
    if wide {
        // SAFETY: `wide` says the CPU has AVX-512F; the reads stay in `src` and the writes in
        // the row of each of the `c` planes of `dst` (asserted above).
        unsafe { x86::gather_row::<M>(src.as_ptr(), tw, cp, c, w, dst.as_mut_ptr().cast(), plane) };
        return;
    }
    let _ = wide;
    for co in 0..c {
        let line = &mut dst[co * plane..][..w];
        for q in 0..M {
            for (o, &val) in line.iter_mut().skip(q).step_by(M).zip(src[q * tw * cp + co..].iter().step_by(cp)) {
                o.write(val);
            }
        }
    }
}

/// `V[p][t0 + tile][c]` (row stride `cip`, `rows` rows per position) of one image `x[c][h][w]`:
/// spread into `sp[row][column % m][column / m][channel]` at its padded coordinates (row
/// `y + pad`, column `x + pad`; the borders and padded channels are left as they are, zero), then
/// `B^T` along the tiles' rows over whole spread rows and along their columns over runs of a tile
/// row's tiles. `sp` keeps the spread image for the caller.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // one image's slice of every buffer
fn transform_input<const M: usize>(
    plan: &Plan,
    g: &Geometry,
    x: &[f32],
    sp: &mut [f32],
    half: &mut [f32],
    v: &mut [f32],
    rows_n: usize,
    t0: usize,
    wide: bool,
) {
    let (a, tile, cp, slots) = (M + 2, Tile::of::<M>(), plan.cip, plan.slots());
    let (row, run, pos) = (plan.in_row(), plan.tw * cp, rows_n * cp);
    spread::<M>(x, g.c_in, g.h, g.w, g.pad, slots, cp, &mut sp[g.pad * row..][..g.h * row], row, wide);
    for ty in 0..plan.th {
        tile.input(&rows(&sp[M * ty * row..], row, row, a), &mut rows_mut(half, row, row, a));
        let t = t0 + ty * plan.tw;
        for r in 0..a {
            // A tile's column l is phase l % m, shifted by l / m slots.
            let mut d: Rows = [&[]; 6];
            for (l, dl) in d.iter_mut().enumerate().take(a) {
                *dl = &half[r * row + ((l % M) * slots + l / M) * cp..][..run];
            }
            tile.input(&d, &mut rows_mut(&mut v[r * a * pos + t * cp..], pos, run, a));
        }
    }
}

/// `y[c_out][h_out][w_out]` of one image from `M[p][t0 + tile][c]`: `A^T` along the tiles'
/// columns, then along their rows, into `out[row in tile][column % m][column / m][channel]`, then
/// back to planes.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // one image's slice of every buffer
fn transform_output<const M: usize>(
    plan: &Plan,
    g: &Geometry,
    mm: &[f32],
    rows_n: usize,
    t0: usize,
    half: &mut [f32],
    out: &mut [f32],
    y: &mut [MaybeUninit<f32>],
    wide: bool,
) {
    let (a, tile, cp, tw) = (M + 2, Tile::of::<M>(), plan.cop, plan.tw);
    let (run, pos, (ho, wo)) = (tw * cp, rows_n * cp, (g.h_out(), g.w_out()));
    for ty in 0..plan.th {
        let t = t0 + ty * tw;
        for r in 0..a {
            tile.output(&rows(&mm[r * a * pos + t * cp..], pos, run, a), &mut rows_mut(&mut half[r * M * run..], run, run, M));
        }
        for q in 0..M {
            tile.output(&rows(&half[q * run..], M * run, run, a), &mut rows_mut(&mut out[q * run..], M * run, run, M));
        }
        for qy in 0..M.min(ho - M * ty) {
            let oy = M * ty + qy;
            gather::<M>(&out[qy * M * run..][..M * run], tw, cp, g.c_out, wo, &mut y[oy * wo..], ho * wo, wide);
        }
    }
}

/// `D[p][t0 + tile][c]` of one image's output gradient `dy[c_out][h_out][w_out]`: spread into
/// `sp[row][column % m][column / m][channel]` (zero past the plane's edge), then
/// [`grad_passes`].
#[inline(always)]
#[allow(clippy::too_many_arguments)] // one image's slice of every buffer
fn transform_grad<const M: usize>(
    plan: &Plan,
    g: &Geometry,
    dy: &[f32],
    sp: &mut [f32],
    half: &mut [f32],
    d: &mut [f32],
    rows_n: usize,
    t0: usize,
    wide: bool,
) {
    let (row, tw) = (plan.grad_row(), plan.tw);
    spread::<M>(dy, g.c_out, g.h_out(), g.w_out(), 0, tw, plan.cop, sp, row, wide);
    grad_passes::<M>(plan, sp, Spread { row, slots: tw, shift: 0 }, half, d, rows_n, t0);
}

/// Where a spread image's values sit: rows of `row` values, `slots` column slots per phase, and
/// the image's row and column 0 at row and column `shift` (its padding).
#[derive(Clone, Copy)]
struct Spread {
    row: usize,
    slots: usize,
    shift: usize,
}

/// `D[p][t0 + tile][c]` from one image's spread output gradient `sp` (laid out as `at` says,
/// `cop` channels): `A` along the tiles' rows over whole spread rows, then along their columns
/// over runs of a tile row's tiles.
#[inline(always)]
fn grad_passes<const M: usize>(plan: &Plan, sp: &[f32], at: Spread, half: &mut [f32], d: &mut [f32], rows_n: usize, t0: usize) {
    let (a, tile, cp, tw) = (M + 2, Tile::of::<M>(), plan.cop, plan.tw);
    let (row, run, pos) = (at.row, tw * cp, rows_n * cp);
    for ty in 0..plan.th {
        tile.grad(&rows(&sp[(M * ty + at.shift) * row..], row, row, M), &mut rows_mut(half, row, row, a));
        let t = t0 + ty * tw;
        for r in 0..a {
            // A tile's column k is column M tx + k + shift of the spread: phase (k + shift) % m,
            // shifted by (k + shift) / m slots.
            let mut src: Rows = [&[]; 6];
            for (k, sk) in src.iter_mut().enumerate().take(M) {
                let c = k + at.shift;
                *sk = &half[r * row + ((c % M) * at.slots + c / M) * cp..][..run];
            }
            tile.grad(&src, &mut rows_mut(&mut d[r * a * pos + t * cp..], pos, run, a));
        }
    }
}

/// `m[rows][n] = v[rows][k] @ u[k][n]` for one position, through the SIMD kernel where the CPU
/// has it, else through the GEMM. `rows` is a multiple of 8 and `n` of 16 ([`Plan`]).
#[inline(always)]
fn product(v: &[f32], u: &[f32], m: &mut [f32], rows: usize, k: usize, n: usize) {
    assert!(v.len() >= rows * k && u.len() >= k * n && m.len() >= rows * n && rows.is_multiple_of(8) && n.is_multiple_of(CB));
    if let Some(isa) = direct::isa() {
        // SAFETY: `isa` was found on this CPU; the operands hold what the sizes address
        // (asserted above), `rows` and `n` are whole blocks.
        unsafe { x86::product(isa, &x86::Product { v: v.as_ptr(), u: u.as_ptr(), m: m.as_mut_ptr(), rows, k, n }) };
        return;
    }
    matmul(m, rows, n, k, Mat::rows(v, k), Mat::rows(u, n), gemm::Parallelism::None, false);
}

/// `m[p] = v[p] @ u[p]` ([`product`]) for every position `p`: `v` of `rows x k` per position,
/// `u` of `k x n`, `m` of `rows x n`.
#[inline(always)]
fn products(v: &[f32], u: &[f32], m: &mut [f32], rows: usize, k: usize, n: usize) {
    for ((vp, up), mp) in v.chunks_exact(rows * k).zip(u.chunks_exact(k * n)).zip(m.chunks_exact_mut(rows * n)) {
        product(vp, up, mp, rows, k, n);
    }
}

/// One chunk of the forward: spread and transform each image, the products, the inverse
/// transform of each image.
#[inline(always)]
fn forward_chunk<const M: usize>(
    plan: &Plan,
    g: &Geometry,
    k: &Kernel,
    x: &[f32],
    y: &mut [MaybeUninit<f32>],
    buf: &mut Buffers,
    moments: &mut [(f64, f64)],
) {
    let (in_len, out_len) = (g.c_in * g.h * g.w, g.c_out * g.h_out() * g.w_out());
    let count = y.len() / out_len;
    let (rows_n, p_n, (cip, cop)) = (plan.rows(count), plan.tile.positions(), (plan.cip, plan.cop));
    let Buffers { spread, half, out, v, m, .. } = buf;
    let wide = wide();
    let sp = spread.get(M, plan, g, plan.in_len());
    let half = sized(half, (M + 2) * plan.in_row().max(M * plan.tw * cop));
    let vs = sized(v, p_n * rows_n * cip);
    for (s, xs) in x.chunks_exact(in_len).enumerate() {
        transform_input::<M>(plan, g, xs, sp, half, vs, rows_n, s * plan.per_image(), wide);
    }
    let ms = sized(m, p_n * rows_n * cop);
    products(vs, &k.u, ms, rows_n, cip, cop);
    let out = sized(out, M * M * plan.tw * cop);
    for (s, ys) in y.chunks_exact_mut(out_len).enumerate() {
        transform_output::<M>(plan, g, ms, rows_n, s * plan.per_image(), half, out, ys, wide);
        if !moments.is_empty() {
            // SAFETY: the inverse transform wrote every slot of the image.
            let ys = unsafe { assume_written(ys) };
            let rows = ys.chunks_exact(g.h_out() * g.w_out());
            moments[s * g.c_out..][..g.c_out].iter_mut().zip(rows).for_each(|(m, row)| *m = row_moments(row));
        }
    }
}

/// [`forward_chunk`] compiled for AVX-512, so its transforms run 16 lanes wide.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_chunk_wide<const M: usize>(
    plan: &Plan,
    g: &Geometry,
    k: &Kernel,
    x: &[f32],
    y: &mut [MaybeUninit<f32>],
    buf: &mut Buffers,
    moments: &mut [(f64, f64)],
) {
    forward_chunk::<M>(plan, g, k, x, y, buf, moments)
}

/// `y` of geometry `g` with the transformed kernel `k`, chunks of samples in parallel; with
/// `moments`, also each `(sample, channel)` row's [`row_moments`] (for a batch norm that
/// follows), taken from each image's output while it is still in cache.
fn run(g: &Geometry, tile: Tile, x: &[f32], k: &Kernel, moments: bool) -> (Vec<f32>, Vec<(f64, f64)>) {
    assert!(
        applies(g) && (k.tile, k.c_out, k.c_in) == (tile, g.c_out, g.c_in),
        "winograd: kernel {:?} for {tile:?} {g:?}",
        (k.tile, k.c_out, k.c_in)
    );
    let plan = Plan::new(g, tile);
    let out_len = g.c_out * g.h_out() * g.w_out();
    let in_len = g.c_in * g.h * g.w;
    let spans = plan.forward_spans(g.n);
    let wide = wide();
    let mut rows = vec![(0f64, 0f64); if moments { g.n * g.c_out } else { 0 }];
    let fill = |y: &mut [MaybeUninit<f32>]| {
        let parts = spans.split(y, out_len).into_iter().zip(spans.split(&mut rows, if moments { g.c_out } else { 0 }));
        parts.collect::<Vec<_>>().into_par_iter().for_each(|((first, yc), (_, mc))| {
            let xc = &x[first * in_len..][..yc.len() / out_len * in_len];
            kept(&BUFFERS, |buf| match (tile, wide) {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `wide` says the CPU has AVX-512F.
                (Tile::F2, true) => unsafe { forward_chunk_wide::<2>(&plan, g, k, xc, yc, buf, mc) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                (Tile::F4, true) => unsafe { forward_chunk_wide::<4>(&plan, g, k, xc, yc, buf, mc) },
                (Tile::F2, _) => forward_chunk::<2>(&plan, g, k, xc, yc, buf, mc),
                (Tile::F4, _) => forward_chunk::<4>(&plan, g, k, xc, yc, buf, mc),
            })
        })
    };
    // SAFETY: the inverse transform writes every output slot of every chunk.
    let y = unsafe { filled(g.n * out_len, fill) };
    (y, rows)
}

/// `y[n, c_out, h_out, w_out]` from `x[n, c_in, h, w]` and the layer's transformed kernel.
pub fn forward(g: &Geometry, x: &[f32], k: &Kernel) -> Vec<f32> {
    run(g, k.tile, x, k, false).0
}

/// [`forward`], also returning each `(sample, channel)` row's [`row_moments`] in memory order.
pub fn forward_moments(g: &Geometry, x: &[f32], k: &Kernel) -> (Vec<f32>, Vec<(f64, f64)>) {
    run(g, k.tile, x, k, true)
}

/// `kernel` when it is of `tile`'s size (the forward's, handed on), else `weight` transformed.
pub fn kernel_for<'a>(g: &Geometry, tile: Tile, kernel: Option<&'a Kernel>, weight: &[f32]) -> Cow<'a, Kernel> {
    match kernel.filter(|k| k.tile == tile) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(kernel_transform(g, tile, weight)),
    }
}

/// The input gradient `dx[n, c_in, h, w]`: the forward of the flipped, transposed kernel over
/// `dy` ([`super::transposed_geometry`]). F(2x2) reads the forward's transformed kernel
/// (`kernel`, or `weight` transformed without it) permuted ([`Kernel::flipped`]); F(4x4)'s
/// transform of the flipped kernel is not a permutation of `U` (its points 2 and 1/2 differ), so
/// it transforms `weight` flipped and reads no `kernel`.
pub fn input_grad(g: &Geometry, tile: Tile, kernel: Option<&Kernel>, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    let t = transposed_geometry(g).filter(applies).expect("winograd::input_grad: a stride-1 3x3 layer");
    let k = match tile {
        Tile::F2 => kernel_for(g, tile, kernel, weight).flipped(),
        Tile::F4 => kernel_transform(&t, tile, &flipped_transpose(g, weight)),
    };
    run(&t, tile, dy, &k, false).0
}

/// Tiles per block of a weight-gradient sum: each block is summed on its own and added to the
/// total, so no float32 sum runs over more than this many terms plus the blocks (a chunk holds
/// up to thousands of tiles; one running sum over them lost digits against im2col's GEMM).
const BLOCK: usize = 32;

/// `s[k][n] = d[rows][k]^T @ v[rows][n]` (`+=` when `add`) for one position, through the SIMD
/// kernel where the CPU has it, else through the GEMM. `k` and `n` are multiples of 16.
#[inline(always)]
fn sums(d: &[f32], v: &[f32], s: &mut [f32], rows: usize, k: usize, n: usize, add: bool) {
    assert!(d.len() >= rows * k && v.len() >= rows * n && s.len() >= k * n && k.is_multiple_of(CB) && n.is_multiple_of(CB));
    if let Some(isa) = direct::isa() {
        // SAFETY: `isa` was found on this CPU; the operands hold what the sizes address
        // (asserted above), `k` and `n` are whole blocks.
        unsafe { x86::sums(isa, &x86::Sums { d: d.as_ptr(), v: v.as_ptr(), s: s.as_mut_ptr(), rows, k, n, add }) };
        return;
    }
    for t0 in (0..rows).step_by(BLOCK) {
        let len = BLOCK.min(rows - t0);
        matmul(s, k, n, len, Mat::transposed(&d[t0 * k..], k), Mat::rows(&v[t0 * n..], n), gemm::Parallelism::None, add || t0 > 0);
    }
}

/// `s[p] = d[p]^T @ v[p]` ([`sums`], `+=` when `add`) for every position `p` over a chunk's
/// `tiles` tiles: `d` of `rows x k` per position, `v` of `rows x n`. The rows past the tiles are
/// zeroed first, so they add nothing.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the operands and their shapes
fn chunk_sums(d: &mut [f32], v: &mut [f32], s: &mut [f32], rows: usize, tiles: usize, k: usize, n: usize, add: bool) {
    for ((dp, vp), sp) in d.chunks_exact_mut(rows * k).zip(v.chunks_exact_mut(rows * n)).zip(s.chunks_exact_mut(k * n)) {
        dp[tiles * k..].fill(0.0);
        vp[tiles * n..].fill(0.0);
        sums(dp, vp, sp, rows, k, n, add);
    }
}

/// One chunk's weight-gradient sums `S[p][c_out][c_in] = D[p]^T @ V[p]` over its tiles, added to
/// `sp_out` when `add`.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // one chunk's slices and where its sums go
fn weight_grad_chunk<const M: usize>(
    plan: &Plan,
    g: &Geometry,
    x: &[f32],
    dy: &[f32],
    count: usize,
    sp_out: &mut [f32],
    add: bool,
    buf: &mut Buffers,
) {
    let (in_len, out_len) = (g.c_in * g.h * g.w, g.c_out * g.h_out() * g.w_out());
    let (rows_n, p_n, (cip, cop)) = (plan.rows(count), plan.tile.positions(), (plan.cip, plan.cop));
    let tiles = count * plan.per_image();
    let Buffers { spread, half, out, v, m, .. } = buf;
    let wide = wide();
    let half = sized(half, (M + 2) * plan.in_row().max(plan.grad_row()));
    let sp = spread.get(M, plan, g, plan.in_len());
    let vs = sized(v, p_n * rows_n * cip);
    for (s, xs) in x[..count * in_len].chunks_exact(in_len).enumerate() {
        transform_input::<M>(plan, g, xs, sp, half, vs, rows_n, s * plan.per_image(), wide);
    }
    let sg = zeroed(out, M * plan.th * plan.grad_row());
    let ds = sized(m, p_n * rows_n * cop);
    for (s, dys) in dy[..count * out_len].chunks_exact(out_len).enumerate() {
        transform_grad::<M>(plan, g, dys, sg, half, ds, rows_n, s * plan.per_image(), wide);
    }
    chunk_sums(ds, vs, sp_out, rows_n, tiles, cop, cip, add);
}

/// [`weight_grad_chunk`] compiled for AVX-512.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)] // as weight_grad_chunk
unsafe fn weight_grad_chunk_wide<const M: usize>(
    plan: &Plan,
    g: &Geometry,
    x: &[f32],
    dy: &[f32],
    count: usize,
    sp: &mut [f32],
    add: bool,
    buf: &mut Buffers,
) {
    weight_grad_chunk::<M>(plan, g, x, dy, count, sp, add, buf)
}

/// The chunks of group `group` of `groups` over `chunks` chunks: [`weight_grad`] and
/// [`backward`] take the same, so both add the same sums in the same order.
fn group_chunks(group: usize, chunks: usize, groups: usize) -> std::ops::Range<usize> {
    group * chunks / groups..(group + 1) * chunks / groups
}

/// Groups of chunks whose weight-gradient sums are kept apart, then added in order: fixed, so
/// the result does not depend on the threads; few, so the partial sums stay small (36 positions
/// x 64 x 64 channels is 590 KB a group) and the last group's sums add little serial work.
const GROUPS: usize = 8;

thread_local! {
    /// The partial sums of this thread's last weight gradient, kept for the next.
    static PARTIAL: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The weight gradient `dweight[c_out, c_in, 3, 3]` from `x` and the output gradient `dy`: per
/// group of chunks of samples the sums over its tiles (each chunk's added to the group's in
/// order), the groups added in order (so the result does not depend on the threads), then
/// `G^T S G`.
pub fn weight_grad(g: &Geometry, tile: Tile, x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert!(applies(g), "winograd::weight_grad: {g:?}");
    let plan = Plan::new(g, tile);
    let (in_len, out_len) = (g.c_in * g.h * g.w, g.c_out * g.h_out() * g.w_out());
    let (spans, groups) = plan.grad_spans(g.n);
    let (p_n, cc) = (tile.positions(), plan.cop * plan.cip);
    let wide = wide();
    weight_sums(g, tile, &plan, groups, |sp_all| {
        sp_all.par_chunks_mut(p_n * cc).enumerate().for_each(|(group, sp)| {
            kept(&BUFFERS, |buf| {
                for (i, chunk) in group_chunks(group, spans.count, groups).enumerate() {
                    let samples = spans.get(chunk);
                    let (first, count) = (samples.start, samples.len());
                    let (xc, dc) = (&x[first * in_len..][..count * in_len], &dy[first * out_len..][..count * out_len]);
                    let add = i > 0;
                    match (tile, wide) {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: `wide` says the CPU has AVX-512F.
                        (Tile::F2, true) => unsafe { weight_grad_chunk_wide::<2>(&plan, g, xc, dc, count, sp, add, buf) },
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: as above.
                        (Tile::F4, true) => unsafe { weight_grad_chunk_wide::<4>(&plan, g, xc, dc, count, sp, add, buf) },
                        (Tile::F2, _) => weight_grad_chunk::<2>(&plan, g, xc, dc, count, sp, add, buf),
                        (Tile::F4, _) => weight_grad_chunk::<4>(&plan, g, xc, dc, count, sp, add, buf),
                    }
                }
            })
        })
    })
    .1
}

/// `run(partial)` with the groups' weight-gradient sums `partial` (`groups` of `S[p][cop][cip]`,
/// each written whole by its group's first chunk, so the last call's values need no zeroing),
/// then the groups added in order and `G^T S G`: `run`'s result and the weight gradient.
fn weight_sums<R>(g: &Geometry, tile: Tile, plan: &Plan, groups: usize, run: impl FnOnce(&mut [f32]) -> R) -> (R, Vec<f32>) {
    let part = tile.positions() * plan.cop * plan.cip;
    kept(&PARTIAL, |partial| {
        let sp_all = sized(partial, groups * part);
        let r = run(sp_all);
        (r, kernel_grad(g, tile, plan, sum_in_order(sp_all, part)))
    })
}

/// `dweight = G^T S G` per channel pair from the sums `S[p][cop][cip]` over every tile, one
/// output channel per task, `G^T S` for all its input channels at once (contiguous in `S`): one
/// pair at a time on one thread read `S` with a stride of `cop * cip` values and was ~1% of a
/// ResNet-20 step, the other thread idle.
fn kernel_grad(g: &Geometry, tile: Tile, plan: &Plan, s: Vec<f32>) -> Vec<f32> {
    let cc = plan.cop * plan.cip;
    let (a, gm, ci_n) = (tile.alpha(), tile.g(), g.c_in);
    let mut dw = vec![0f32; g.c_out * ci_n * 9];
    dw.par_chunks_mut(ci_n * 9).enumerate().for_each(|(co, out)| {
        // (G^T S)[b][c] of every input channel: `gts[(b * a + c) * ci_n + ci]`.
        let mut gts = vec![0f32; 3 * a * ci_n];
        for (bc, row) in gts.chunks_exact_mut(ci_n).enumerate() {
            let (b, c) = (bc / a, bc % a);
            for (r, gr) in gm.iter().enumerate() {
                let sv = &s[(r * a + c) * cc + co * plan.cip..][..ci_n];
                row.iter_mut().zip(sv).for_each(|(t, &v)| *t += gr[b] * v);
            }
        }
        for (ci, o) in out.chunks_exact_mut(9).enumerate() {
            for (bd, o) in o.iter_mut().enumerate() {
                let (b, d) = (bd / 3, bd % 3);
                *o = (0..a).map(|c| gts[(b * a + c) * ci_n + ci] * gm[c][d]).sum();
            }
        }
    });
    dw
}

/// Whether [`backward`] computes this layer's two gradients in one pass: F(m x m) for both, and
/// padding 1, where the output gradient's spread for the input gradient (padded by 1) also holds
/// every tile the weight gradient reads.
pub fn fuses(g: &Geometry) -> bool {
    applies(g) && g.pad == 1
}

/// One chunk of [`backward`]: per image, one spread of the output gradient feeds both the input
/// gradient's transform and the weight gradient's, then the input gradient's products and
/// inverse transform into `dx`, the weight gradient's sums into `sp_out` (added when `add`).
#[inline(always)]
#[allow(clippy::too_many_arguments)] // one chunk's slices and where its results go
fn backward_chunk<const M: usize>(
    g: &Geometry,
    kt: &Kernel,
    x: &[f32],
    (dy, first): (OutGrad<'_>, usize),
    dx: &mut [MaybeUninit<f32>],
    sp_out: &mut [f32],
    add: bool,
    buf: &mut Buffers,
) {
    let t = transposed_geometry(g).expect("a stride-1 layer");
    let (pw, pt) = (Plan::new(g, Tile::of::<M>()), Plan::new(&t, Tile::of::<M>()));
    let in_len = g.c_in * g.h * g.w;
    let count = dx.len() / in_len;
    let (rows_w, rows_t, p_n) = (pw.rows(count), pt.rows(count), pw.tile.positions());
    let (cip, cop) = (pw.cip, pw.cop);
    let wide = wide();
    let Buffers { spread, half, out, v, m, spread2, v2, m2, grad } = buf;
    let half = sized(half, (M + 2) * pw.in_row().max(pt.in_row()).max(M * pt.tw * pt.cop));
    let (sx, sd) = (spread.get(M, &pw, g, pw.in_len()), spread2.get(M, &pt, &t, pt.in_len()));
    // The input gradient's transformed output gradient (`cop` channels), the weight
    // gradient's transformed input (`cip`) and output gradient (`cop`).
    let (vt, vx, dd) = (sized(v2, p_n * rows_t * cop), sized(v, p_n * rows_w * cip), sized(m, p_n * rows_w * cop));
    let at = Spread { row: pt.in_row(), slots: pt.slots(), shift: t.pad };
    for s in 0..count {
        // The input gradient's transform of `dy` leaves its spread in `sd` for the weight
        // gradient's.
        let dys = dy.image(first + s, super::output_dims(g), grad);
        transform_input::<M>(&pt, &t, dys, sd, half, vt, rows_t, s * pt.per_image(), wide);
        grad_passes::<M>(&pw, sd, at, half, dd, rows_w, s * pw.per_image());
        transform_input::<M>(&pw, g, &x[s * in_len..][..in_len], sx, half, vx, rows_w, s * pw.per_image(), wide);
    }
    let mt = sized(m2, p_n * rows_t * cip);
    products(vt, &kt.u, mt, rows_t, cop, cip);
    let out = sized(out, M * M * pt.tw * cip);
    for (s, dxs) in dx.chunks_exact_mut(in_len).enumerate() {
        transform_output::<M>(&pt, &t, mt, rows_t, s * pt.per_image(), half, out, dxs, wide);
    }
    chunk_sums(dd, vx, sp_out, rows_w, count * pw.per_image(), cop, cip, add);
}

/// [`backward_chunk`] compiled for AVX-512.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)] // as backward_chunk
unsafe fn backward_chunk_wide<const M: usize>(
    g: &Geometry,
    kt: &Kernel,
    x: &[f32],
    dy: (OutGrad<'_>, usize),
    dx: &mut [MaybeUninit<f32>],
    sp_out: &mut [f32],
    add: bool,
    buf: &mut Buffers,
) {
    backward_chunk::<M>(g, kt, x, dy, dx, sp_out, add, buf)
}

/// `(dx, dweight)` of a layer that [`fuses`], in one pass over the samples: each image's output
/// gradient is spread once for both gradients instead of once for each (the spreads read
/// activations that no longer sit in any cache). The same numbers as [`input_grad`] and
/// [`weight_grad`]: the same chunks, groups and order of every sum.
pub fn backward(g: &Geometry, tile: Tile, kernel: Option<&Kernel>, weight: &[f32], x: &[f32], dy: OutGrad<'_>) -> (Vec<f32>, Vec<f32>) {
    assert!(fuses(g), "winograd::backward: {g:?}");
    let t = transposed_geometry(g).expect("a stride-1 layer");
    let kt = match tile {
        Tile::F2 => kernel_for(g, tile, kernel, weight).flipped(),
        Tile::F4 => kernel_transform(&t, tile, &flipped_transpose(g, weight)),
    };
    let plan = Plan::new(g, tile);
    let in_len = g.c_in * g.h * g.w;
    let (spans, groups) = plan.grad_spans(g.n);
    let (p_n, cc) = (tile.positions(), plan.cop * plan.cip);
    let wide = wide();
    weight_sums(g, tile, &plan, groups, |sp_all| {
        let fill = |dx: &mut [MaybeUninit<f32>]| {
            // Each chunk's slice of `dx` with its first sample, handed out to the groups.
            let mut chunks = spans.split(dx, in_len).into_iter();
            let parts: Vec<Vec<_>> =
                (0..groups).map(|group| chunks.by_ref().take(group_chunks(group, spans.count, groups).len()).collect()).collect();
            parts.into_par_iter().zip(sp_all.par_chunks_mut(p_n * cc)).for_each(|(dxg, sp)| {
                kept(&BUFFERS, |buf| {
                    for (i, (s0, dxc)) in dxg.into_iter().enumerate() {
                        let count = dxc.len() / in_len;
                        let (xc, dc) = (&x[s0 * in_len..][..count * in_len], (dy, s0));
                        let add = i > 0;
                        match (tile, wide) {
                            #[cfg(target_arch = "x86_64")]
                            // SAFETY: `wide` says the CPU has AVX-512F.
                            (Tile::F2, true) => unsafe { backward_chunk_wide::<2>(g, &kt, xc, dc, dxc, sp, add, buf) },
                            #[cfg(target_arch = "x86_64")]
                            // SAFETY: as above.
                            (Tile::F4, true) => unsafe { backward_chunk_wide::<4>(g, &kt, xc, dc, dxc, sp, add, buf) },
                            (Tile::F2, _) => backward_chunk::<2>(g, &kt, xc, dc, dxc, sp, add, buf),
                            (Tile::F4, _) => backward_chunk::<4>(g, &kt, xc, dc, dxc, sp, add, buf),
                        }
                    }
                })
            });
        };
        // SAFETY: every group's chunks cover its samples, and each chunk's inverse transform writes
        // every slot of its slice of `dx`.
        unsafe { filled(g.n * in_len, fill) }
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The register tiles. The products hold `R` tiles x `NV` vectors of output channels for the
    //! whole sum over input channels (one load per vector and one broadcast per tile per
    //! channel); the weight gradient's sums hold `R` output channels x `NV` vectors of input
    //! channels for the whole sum over the chunk's tiles, so no sum ends in a horizontal add.

    use super::super::direct::x86::{Lanes, Narrow, Wide};
    use super::super::direct::Isa;
    use super::BLOCK;
    use std::arch::x86_64::*;

    /// One product `m[r * n + c] = sum over kk < k of v[r * k + kk] * u[kk * n + c]`.
    #[derive(Clone, Copy)]
    pub(super) struct Product {
        pub(super) v: *const f32,
        pub(super) u: *const f32,
        pub(super) m: *mut f32,
        pub(super) rows: usize,
        pub(super) k: usize,
        pub(super) n: usize,
    }

    /// `R` rows x `NV` vectors from row `r0` and column `c0`.
    ///
    /// # Safety
    /// As [`product`].
    #[inline(always)]
    unsafe fn tile<L: Lanes, const R: usize, const NV: usize>(p: &Product, r0: usize, c0: usize) {
        let (v, u, m) = (p.v.add(r0 * p.k), p.u.add(c0), p.m.add(r0 * p.n + c0));
        let mut acc = [[L::zero(); NV]; R];
        for kk in 0..p.k {
            let us: [L::V; NV] = std::array::from_fn(|j| unsafe { L::load(u.add(kk * p.n + j * L::W)) });
            for (r, row) in acc.iter_mut().enumerate() {
                let s = L::splat(*v.add(r * p.k + kk));
                for (a, x) in row.iter_mut().zip(&us) {
                    *a = L::fma(s, *x, *a);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (j, a) in row.iter().enumerate() {
                L::store(m.add(r * p.n + j * L::W), *a);
            }
        }
    }

    /// Blocks of `NV` vectors of columns; in each, rows in blocks of `R`, then of `RS`.
    ///
    /// # Safety
    /// As [`product`]; `n` a multiple of `NV` vectors, `rows` of `RS` after the blocks of `R`.
    #[inline(always)]
    unsafe fn product_with<L: Lanes, const R: usize, const RS: usize, const NV: usize>(p: &Product) {
        for c0 in (0..p.n).step_by(NV * L::W) {
            let mut r0 = 0;
            while r0 + R <= p.rows {
                tile::<L, R, NV>(p, r0, c0);
                r0 += R;
            }
            while r0 < p.rows {
                tile::<L, RS, NV>(p, r0, c0);
                r0 += RS;
            }
        }
    }

    /// # Safety
    /// AVX-512F is there; as [`product`].
    #[target_feature(enable = "avx512f")]
    unsafe fn product_wide(p: &Product) {
        if p.n.is_multiple_of(32) {
            product_with::<Wide, 12, 4, 2>(p)
        } else {
            product_with::<Wide, 24, 8, 1>(p)
        }
    }

    /// # Safety
    /// AVX2 and FMA are there; as [`product`].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn product_avx2(p: &Product) {
        product_with::<Narrow, 6, 2, 2>(p)
    }

    /// Runs `p`: `rows` a multiple of 8, `n` of 16, each sum in `kk` order.
    ///
    /// # Safety
    /// `isa` was found on this CPU; `v`, `u` and `m` hold every element `p`'s indices address.
    pub(super) unsafe fn product(isa: Isa, p: &Product) {
        match isa {
            Isa::Avx512 => product_wide(p),
            Isa::Avx2 => product_avx2(p),
        }
    }

    /// The 16x16 transpose: `out[j]` lane `i` is `r[i]` lane `j`. Unpacks pair rows within
    /// 128-bit lanes, then shuffles gather 4x4 blocks, then two rounds of 128-bit lane shuffles
    /// put the blocks in place (64 shuffles for 256 values).
    ///
    /// # Safety
    /// AVX-512F is there.
    #[inline(always)]
    unsafe fn transpose(r: [__m512; 16]) -> [__m512; 16] {
        let t: [__m512; 16] = std::array::from_fn(|i| {
            let (a, b) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(a, b)
            } else {
                _mm512_unpackhi_ps(a, b)
            }
        });
        // u[4k + j], 128-bit lane l: column 4l + j of rows 4k..4k + 4.
        let u: [__m512; 16] = std::array::from_fn(|i| {
            let (k, j) = (i / 4, i % 4);
            let (a, b) = (t[4 * k + j / 2], t[4 * k + 2 + j / 2]);
            if j % 2 == 0 {
                _mm512_shuffle_ps::<0x44>(a, b)
            } else {
                _mm512_shuffle_ps::<0xEE>(a, b)
            }
        });
        // For column group j: w[j][0..4] = lanes (0, 2) / (1, 3) of row groups (0, 1) and (2, 3).
        let mut out = [_mm512_setzero_ps(); 16];
        for j in 0..4 {
            let w0 = _mm512_shuffle_f32x4::<0x88>(u[j], u[4 + j]);
            let w1 = _mm512_shuffle_f32x4::<0xDD>(u[j], u[4 + j]);
            let w2 = _mm512_shuffle_f32x4::<0x88>(u[8 + j], u[12 + j]);
            let w3 = _mm512_shuffle_f32x4::<0xDD>(u[8 + j], u[12 + j]);
            out[j] = _mm512_shuffle_f32x4::<0x88>(w0, w2);
            out[8 + j] = _mm512_shuffle_f32x4::<0xDD>(w0, w2);
            out[4 + j] = _mm512_shuffle_f32x4::<0x88>(w1, w3);
            out[12 + j] = _mm512_shuffle_f32x4::<0xDD>(w1, w3);
        }
        out
    }

    /// The first `n` bits set (`n <= 16`).
    fn mask(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    /// One row of [`super::spread`]: `src` at the row in plane 0 (planes `plane` apart), `dst` at
    /// the spread row; 16 channels x 16 columns per transpose.
    ///
    /// # Safety
    /// AVX-512F is there; `src` holds `w` values from each of `c` planes, `dst` a spread row
    /// (`m` phases of `slots` slots of `cp >= c` rounded up to 16 channels) for every column
    /// `x + pad < m * slots`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)] // the two layouts' shapes
    pub(super) unsafe fn spread_row<const M: usize>(
        src: *const f32,
        plane: usize,
        c: usize,
        w: usize,
        pad: usize,
        slots: usize,
        cp: usize,
        dst: *mut f32,
    ) {
        for c0 in (0..c).step_by(16) {
            for x0 in (0..w).step_by(16) {
                let n = (w - x0).min(16);
                let rows: [__m512; 16] = std::array::from_fn(|i| unsafe {
                    if c0 + i < c {
                        _mm512_maskz_loadu_ps(mask(n), src.add((c0 + i) * plane + x0))
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                let cols = transpose(rows);
                for (j, col) in cols.iter().enumerate().take(n) {
                    let px = x0 + j + pad;
                    _mm512_storeu_ps(dst.add(((px % M) * slots + px / M) * cp + c0), *col);
                }
            }
        }
    }

    /// One output row back to planes: `dst[co * plane + x] = src[(x % m * tw + x / m) * cp + co]`
    /// for `co < c` and `x < w`, 16 columns x 16 channels per transpose.
    ///
    /// # Safety
    /// AVX-512F is there; `src` holds `m` phases of `tw` slots of `cp >= c` rounded up to 16
    /// channels with `m * tw >= w`; `dst` is writable at `w` values of each of `c` planes.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)] // the two layouts' shapes
    pub(super) unsafe fn gather_row<const M: usize>(
        src: *const f32,
        tw: usize,
        cp: usize,
        c: usize,
        w: usize,
        dst: *mut f32,
        plane: usize,
    ) {
        for c0 in (0..c).step_by(16) {
            for x0 in (0..w).step_by(16) {
                let n = (w - x0).min(16);
                let cols: [__m512; 16] = std::array::from_fn(|j| unsafe {
                    let x = x0 + j;
                    if j < n {
                        _mm512_loadu_ps(src.add(((x % M) * tw + x / M) * cp + c0))
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                let rows = transpose(cols);
                for (i, row) in rows.iter().enumerate().take(c - c0) {
                    _mm512_mask_storeu_ps(dst.add((c0 + i) * plane + x0), mask(n), *row);
                }
            }
        }
    }

    /// The weight gradient's sums `s[kk * n + c] = sum over r < rows of d[r * k + kk] * v[r * n + c]`
    /// (`+=` when `add`).
    #[derive(Clone, Copy)]
    pub(super) struct Sums {
        pub(super) d: *const f32,
        pub(super) v: *const f32,
        pub(super) s: *mut f32,
        pub(super) rows: usize,
        pub(super) k: usize,
        pub(super) n: usize,
        pub(super) add: bool,
    }

    /// `R` output channels x `NV` vectors of input channels from `(k0, c0)`, summed over every row.
    ///
    /// # Safety
    /// As [`sums`].
    #[inline(always)]
    unsafe fn sum_tile<L: Lanes, const R: usize, const NV: usize>(p: &Sums, k0: usize, c0: usize) {
        let (d, v, s) = (p.d.add(k0), p.v.add(c0), p.s.add(k0 * p.n + c0));
        for t0 in (0..p.rows).step_by(BLOCK) {
            let mut acc = [[L::zero(); NV]; R];
            for t in t0..p.rows.min(t0 + BLOCK) {
                let vs: [L::V; NV] = std::array::from_fn(|j| unsafe { L::load(v.add(t * p.n + j * L::W)) });
                for (r, row) in acc.iter_mut().enumerate() {
                    let s = L::splat(*d.add(t * p.k + r));
                    for (a, x) in row.iter_mut().zip(&vs) {
                        *a = L::fma(s, *x, *a);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (j, a) in row.iter().enumerate() {
                    let at = s.add(r * p.n + j * L::W);
                    L::store(at, if t0 == 0 && !p.add { *a } else { L::add(L::load(at), *a) });
                }
            }
        }
    }

    /// # Safety
    /// As [`sums`]; `k` a multiple of `R`, `n` of `NV` vectors.
    #[inline(always)]
    unsafe fn sums_with<L: Lanes, const R: usize, const NV: usize>(p: &Sums) {
        for k0 in (0..p.k).step_by(R) {
            for c0 in (0..p.n).step_by(NV * L::W) {
                sum_tile::<L, R, NV>(p, k0, c0);
            }
        }
    }

    /// # Safety
    /// AVX-512F is there; as [`sums`].
    #[target_feature(enable = "avx512f")]
    unsafe fn sums_wide(p: &Sums) {
        if p.n.is_multiple_of(32) {
            sums_with::<Wide, 8, 2>(p)
        } else {
            sums_with::<Wide, 16, 1>(p)
        }
    }

    /// # Safety
    /// AVX2 and FMA are there; as [`sums`].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sums_avx2(p: &Sums) {
        sums_with::<Narrow, 4, 2>(p)
    }

    /// Runs `p`: `k` and `n` multiples of 16, each sum in row order.
    ///
    /// # Safety
    /// `isa` was found on this CPU; `d`, `v` and `s` hold every element `p`'s indices address.
    pub(super) unsafe fn sums(isa: Isa, p: &Sums) {
        match isa {
            Isa::Avx512 => sums_wide(p),
            Isa::Avx2 => sums_avx2(p),
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    //! Off x86-64 [`super::direct::isa`] is `None` and the products take the GEMM.

    use super::super::direct::Isa;

    pub(super) struct Product {
        pub(super) v: *const f32,
        pub(super) u: *const f32,
        pub(super) m: *mut f32,
        pub(super) rows: usize,
        pub(super) k: usize,
        pub(super) n: usize,
    }

    pub(super) struct Sums {
        pub(super) d: *const f32,
        pub(super) v: *const f32,
        pub(super) s: *mut f32,
        pub(super) rows: usize,
        pub(super) k: usize,
        pub(super) n: usize,
        pub(super) add: bool,
    }

    pub(super) unsafe fn product(_: Isa, _: &Product) {
        unreachable!("no SIMD product off x86-64")
    }

    pub(super) unsafe fn sums(_: Isa, _: &Sums) {
        unreachable!("no SIMD sums off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::super::shifted::tests::values;
    use super::super::{im2col_forward, im2col_weight_grad, input_grad_scatter, Geometry, OutGrad};
    use super::{applies, backward, forward, forward_moments, input_grad, kernel_transform, weight_grad, Tile};

    /// The largest difference between `want` and `got`, over the largest `|want|` (at least 1).
    fn rel_err(want: &[f32], got: &[f32]) -> f32 {
        assert_eq!(want.len(), got.len());
        let scale = want.iter().fold(1f32, |a, v| a.max(v.abs()));
        want.iter().zip(got).fold(0f32, |a, (p, q)| a.max((p - q).abs())) / scale
    }

    /// Both tile sizes against the im2col convolution and gradients (float32 GEMM in both) on
    /// ResNet-20's three stages, odd planes (partial tiles), the ConvNet's 28/14/7 planes, a batch
    /// over several chunks, channel counts that are no whole SIMD block (the GEMM products) and
    /// "valid" padding: the forward, the weight gradient (by transposition) and the input
    /// gradient. Tolerances relative to the largest value: 1e-5 for F(2x2) (a few ulps, Lavin &
    /// Gray), 1e-4 for F(4x4), whose transforms scale values by up to 8 and 1/24.
    #[test]
    fn matches_the_direct_convolution_and_its_gradients() {
        for tile in Tile::ALL {
            let tol = match tile {
                Tile::F2 => 1e-5,
                Tile::F4 => 1e-4,
            };
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
                (2, 6, 5, 5, 3, 2),
                (24, 3, 32, 32, 16, 1),
                (24, 16, 32, 32, 16, 1),
                (24, 32, 16, 16, 32, 1),
                (24, 64, 8, 8, 64, 1),
            ] {
                let g = Geometry { n, c_in, h, w, c_out, k: 3, stride: 1, pad };
                assert!(applies(&g));
                let x = values(n * c_in * h * w, 1);
                let wt = values(c_out * c_in * 9, 2);
                let dy = values(n * c_out * g.h_out() * g.w_out(), 5);
                let k = kernel_transform(&g, tile, &wt);
                let err = rel_err(&im2col_forward(&g, &x, &wt), &forward(&g, &x, &k));
                assert!(err <= tol, "{tile:?} {g:?}: forward, relative error {err}");
                let err = rel_err(&im2col_weight_grad(&g, &x, &dy), &weight_grad(&g, tile, &x, &dy));
                assert!(err <= tol, "{tile:?} {g:?}: weight gradient, relative error {err}");
                let err = rel_err(&input_grad_scatter(&g, &wt, &dy), &input_grad(&g, tile, Some(&k), &wt, &dy));
                assert!(err <= tol, "{tile:?} {g:?}: input gradient, relative error {err}");
            }
        }
    }

    /// The fused backward gives the bits of the separate input and weight gradients (the same
    /// chunks, groups and sums, the output gradient spread once instead of twice), on planes
    /// that are no whole number of tiles, channel counts that are no whole vector, and batches
    /// over one and several groups.
    #[test]
    fn the_fused_backward_is_the_two_gradients() {
        for tile in Tile::ALL {
            for &(n, c_in, h, w, c_out) in
                &[(3, 16, 32, 32, 16), (37, 8, 8, 8, 8), (2, 5, 7, 9, 12), (3, 32, 14, 14, 20), (130, 3, 6, 6, 4)]
            {
                let g = Geometry { n, c_in, h, w, c_out, k: 3, stride: 1, pad: 1 };
                assert!(super::fuses(&g));
                let (x, wt, dy) = (values(n * c_in * h * w, 1), values(c_out * c_in * 9, 2), values(n * c_out * h * w, 5));
                let k = kernel_transform(&g, tile, &wt);
                let (dx, dw) = super::backward(&g, tile, Some(&k), &wt, &x, super::OutGrad::Given(&dy));
                assert!(dx == input_grad(&g, tile, Some(&k), &wt, &dy), "{tile:?} {g:?}: input gradient");
                assert!(dw == weight_grad(&g, tile, &x, &dy), "{tile:?} {g:?}: weight gradient");
            }
        }
    }

    /// The AVX-512 transposes that spread planes to channels-last rows and gather them back give
    /// the scalar loops' values, on channel counts and row lengths that are no whole block.
    #[test]
    fn the_transposes_match_the_scalar_loops() {
        if super::direct::isa() != Some(super::direct::Isa::Avx512) {
            eprintln!("no AVX-512 here: the scalar loops are the only form");
            return;
        }
        fn both<const M: usize>() {
            for &(c, h, w, pad) in &[(3usize, 5usize, 7usize, 1usize), (16, 4, 32, 1), (20, 3, 28, 2), (1, 2, 33, 0), (35, 2, 14, 1)] {
                let slots = (w + 2 * pad).div_ceil(M) + 1;
                let cp = c.next_multiple_of(16);
                let row = M * slots * cp;
                let src = values(c * h * w, 7);
                let spread_by = |wide| {
                    let mut dst = vec![0f32; h * row];
                    super::spread::<M>(&src, c, h, w, pad, slots, cp, &mut dst, row, wide);
                    dst
                };
                assert!(spread_by(true) == spread_by(false), "spread, m {M}, {c} channels {h}x{w} pad {pad}");
                let tw = w.div_ceil(M);
                let out = values(M * tw * cp, 9);
                let gather_by = |wide| {
                    let plane = w + 3;
                    let mut dst = vec![std::mem::MaybeUninit::new(-1f32); c * plane];
                    super::gather::<M>(&out, tw, cp, c, w, &mut dst, plane, wide);
                    // SAFETY: every slot was initialized above.
                    dst.into_iter().map(|v| unsafe { v.assume_init() }).collect::<Vec<f32>>()
                };
                assert!(gather_by(true) == gather_by(false), "gather, m {M}, {c} channels, {w} columns");
            }
        }
        both::<2>();
        both::<4>();
    }

    /// The parts give the same bits on 1 and 3 threads (the forward's chunks follow the
    /// threads, the gradients' are fixed by the geometry and their weight-gradient sums added in
    /// order), with SIMD and GEMM products.
    #[test]
    fn results_do_not_depend_on_the_threads() {
        for tile in Tile::ALL {
            for &(n, c_in, hw, c_out) in &[(21, 8, 8, 8), (9, 16, 32, 16), (7, 5, 9, 6)] {
                let g = Geometry { n, c_in, h: hw, w: hw, c_out, k: 3, stride: 1, pad: 1 };
                let (x, wt, dy) = (values(n * c_in * hw * hw, 1), values(c_out * c_in * 9, 2), values(n * c_out * hw * hw, 5));
                let run = |threads: usize| {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a pool");
                    pool.install(|| {
                        let k = kernel_transform(&g, tile, &wt);
                        let fused = backward(&g, tile, Some(&k), &wt, &x, OutGrad::Given(&dy));
                        let parts = (weight_grad(&g, tile, &x, &dy), input_grad(&g, tile, Some(&k), &wt, &dy));
                        (forward_moments(&g, &x, &k), parts, fused)
                    })
                };
                assert!(run(1) == run(3), "{tile:?} {g:?}: results differ between 1 and 3 threads");
            }
        }
    }
}
