//! Winograd's minimal filtering for stride-1 3x3 convolutions (Lavin & Gray 2016, "Fast
//! Algorithms for Convolutional Neural Networks"), F(2x2, 3x3) and F(4x4, 3x3): each `m x m`
//! block of outputs from an `(m + 2) x (m + 2)` tile of input, with `(m + 2)^2` multiplications
//! per tile and channel pair instead of `9 m^2`: 2.25x fewer for `m = 2`, 4x fewer for `m = 4`.
//!
//! The kernel and the input tiles are transformed (`U = G w G^T`, `V = B^T d B`), the
//! `(m + 2)^2` positions of the transformed tiles are multiplied over the channels as one product
//! each, `M[p] = U[p] @ V[p]` (a register-tiled SIMD kernel, the direct convolution's vector
//! types), and the outputs come back by `Y = A^T M A`. The input gradient is the forward of the
//! flipped, transposed kernel; for F(2x2) that kernel's transform is the forward's `U` with its
//! positions permuted and its channel axes swapped, so the transformed kernel is computed once
//! per step and read by both. The weight gradient is the transposed form,
//! `dW = G^T [sum over tiles (A dy A^T) ⊙ (B^T d B)] G`.
//!
//! Layout: per chunk of samples, `V[p][channel][tile]` with an image's tiles contiguous, so the
//! product's vectors are 16 (or 8) consecutive tiles; the transforms run on phase planes
//! ([`Plan`]) element-wise along whole planes, in blocks of 16 that the compiler vectorizes (16
//! lanes in the AVX-512 build of a chunk's work, 8 in the AVX2 one). The engine picks this form
//! per layer and part where it measures faster ([`super::choice`]); PERFORMANCE.md has its speed
//! and float32 error per layer.

use super::super::gemm::{matmul, Mat};
use super::super::uninit::filled;
use super::{direct, flipped_transpose, l2_bytes, sized, sum_in_order, transposed_geometry, Geometry};
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

/// A length rounded up to whole blocks of [`L`].
fn blocks(n: usize) -> usize {
    n.next_multiple_of(L)
}

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

/// The FLOPs of one part's products on `g` (forward, input or weight gradient alike): `2 c_out
/// c_in` per transformed position and tile, each tile row's extra tile included.
pub fn product_flops(g: &Geometry, tile: Tile) -> u64 {
    2 * (tile.positions() * g.c_out * g.c_in * g.n * Plan::new(g, tile).per_image()) as u64
}

/// Whether Winograd's F(m x m, 3 x 3) computes this convolution: 3x3, stride 1, padding up to 2.
pub fn applies(g: &Geometry) -> bool {
    g.k == 3 && g.stride == 1 && g.pad <= 2
}

/// The transformed kernel `U[p][c_out][c_in] = (G w G^T)[p]` of one layer.
#[derive(Debug, Clone)]
pub struct Kernel {
    tile: Tile,
    c_out: usize,
    c_in: usize,
    u: Vec<f32>,
}

/// `U = G w G^T` of `weight[c_out, c_in, 3, 3]`, computed once per step and read by every tile
/// of the forward (and by the F(2x2) input gradient).
pub fn kernel_transform(g: &Geometry, tile: Tile, weight: &[f32]) -> Kernel {
    let (co, ci, a) = (g.c_out, g.c_in, tile.alpha());
    let gm = tile.g();
    let mut u = vec![0f32; tile.positions() * co * ci];
    for o in 0..co {
        for i in 0..ci {
            let w = &weight[(o * ci + i) * 9..][..9];
            for (r, gr) in gm.iter().enumerate() {
                // (G w)[r][c], then times G^T.
                let gw: [f32; 3] = std::array::from_fn(|c| gr[0] * w[c] + gr[1] * w[3 + c] + gr[2] * w[6 + c]);
                for (c, gc) in gm.iter().enumerate() {
                    u[((r * a + c) * co + o) * ci + i] = gw[0] * gc[0] + gw[1] * gc[1] + gw[2] * gc[2];
                }
            }
        }
    }
    Kernel { tile, c_out: co, c_in: ci, u }
}

/// One convolution's tiling. The transforms work on the padded input split by position modulo
/// `m` ("phase planes": `m x m` planes of `th + 1` rows of `tw + 1`), where every tile's
/// inputs sit at the same place of a few planes, shifted by at most one row or column: each
/// pass of a transform is then element-wise along whole planes (long vectors) instead of along
/// rows of 4-16 tiles. A tile row carries one tile more than it has (the phase planes' last
/// column): the products compute it and the inverse transform drops it.
#[derive(Debug, Clone, Copy)]
struct Plan {
    tile: Tile,
    /// Tile rows and columns per image.
    th: usize,
    tw: usize,
}

impl Plan {
    fn new(g: &Geometry, tile: Tile) -> Plan {
        let m = tile.m();
        Plan { tile, th: g.h_out().div_ceil(m), tw: g.w_out().div_ceil(m) }
    }

    /// A phase plane's row length, `tw + 1`.
    fn pw(&self) -> usize {
        self.tw + 1
    }

    /// Tiles per image as laid out in `V` and `M`: `th` rows of `tw + 1`.
    fn per_image(&self) -> usize {
        self.th * self.pw()
    }

    /// Samples per chunk: as many (up to 8) as keep a chunk's transformed inputs and products
    /// within the per-core L2 cache; its machine dependence is [`Geometry::chunk`]'s.
    fn chunk(&self, channels: usize) -> usize {
        (l2_bytes() / (self.tile.positions() * channels * self.per_image() * 4).max(1)).clamp(1, 8)
    }

    /// The row length of `V` and `M` for `count` samples: room for the last sample's rows to run
    /// to a whole block, and whole vectors of 16, so the product's vectors never run past a row.
    fn stride(&self, count: usize) -> usize {
        ((count - 1) * self.per_image() + blocks(self.per_image())).next_multiple_of(16)
    }
}

/// Per-thread buffers.
#[derive(Default)]
struct Buffers {
    planes: Vec<f32>,
    half: Vec<f32>,
    v: Vec<f32>,
    m: Vec<f32>,
}

/// `dst[j][t] = src[M * t + j]` for the `src.len() / M` whole groups of `src` (each `dst[j]`
/// at least that long): blocks of [`L`] groups gathered in registers (vector loads and
/// shuffles), then stored as whole vectors.
#[inline(always)]
fn deinterleave<const M: usize>(src: &[f32], dst: &mut RowsMut) -> usize {
    let n = src.len() / M;
    let whole = n / L * L;
    for (b, chunk) in src[..whole * M].chunks_exact(L * M).enumerate() {
        let mut block = [[0f32; L]; M];
        let chunk = &chunk[..L * M];
        for t in 0..L {
            for (j, row) in block.iter_mut().enumerate() {
                row[t] = chunk[M * t + j];
            }
        }
        for (d, row) in dst.iter_mut().zip(&block) {
            d[b * L..][..L].copy_from_slice(row);
        }
    }
    for (t, group) in src[whole * M..n * M].chunks_exact(M).enumerate() {
        for (d, &v) in dst.iter_mut().zip(group) {
            d[whole + t] = v;
        }
    }
    n
}

/// `dst[M * t + j] = src[j][t]` for every slot of `dst` (each `src[j]` long enough for the
/// slots it fills): the inverse of [`deinterleave`].
#[inline(always)]
fn interleave<const M: usize>(src: &Rows, dst: &mut [MaybeUninit<f32>]) {
    let n = dst.len() / M;
    let whole = n / L * L;
    for (b, chunk) in dst[..whole * M].chunks_exact_mut(L * M).enumerate() {
        let rows: [&[f32; L]; M] = std::array::from_fn(|j| src[j][b * L..][..L].try_into().expect("a block"));
        let chunk = &mut chunk[..L * M];
        for t in 0..L {
            for (j, row) in rows.iter().enumerate() {
                chunk[M * t + j].write(row[t]);
            }
        }
    }
    for (t, group) in dst[whole * M..].chunks_mut(M).enumerate() {
        for (o, row) in group.iter_mut().zip(src.iter()) {
            o.write(row[whole + t]);
        }
    }
}

/// `V[p][c][t]` (row length `tp`) of `count` samples `x[count][c][h][w]`: the transformed input
/// tiles, the samples' tiles side by side.
#[inline(always)]
fn transform_inputs<const M: usize>(plan: &Plan, g: &Geometry, x: &[f32], count: usize, tp: usize, v: &mut [f32], buf: &mut Buffers) {
    let (a, c, pw) = (M + 2, g.c_in, plan.pw());
    let tile = Tile::of::<M>();
    // The passes run over whole blocks: a phase plane is read up to one slot past its rows,
    // and the first pass's rows up to one phase row past theirs.
    let (n1, n2) = (blocks((plan.th + 1) * pw), blocks(plan.per_image()));
    let plen = n1 + L;
    let phases = sized(&mut buf.planes, M * M * plen);
    let half = sized(&mut buf.half, M * a * n1 + pw + L);
    // The planes' padding slots are never written below: zeroed once, they stay zero.
    phases.fill(0.0);
    for s in 0..count {
        for ci in 0..c {
            let src = &x[(s * c + ci) * g.h * g.w..][..g.h * g.w];
            for (y, line) in src.chunks(g.w).enumerate() {
                let py = y + g.pad;
                let base = (py % M) * M * plen + (py / M) * pw;
                // Input column x lands in phase (x + pad) % m, slot (x + pad) / m: the columns
                // before the first whole group one by one, then whole groups, then the rest.
                let first = ((M - g.pad % M) % M).min(g.w);
                for (xx, &val) in line[..first].iter().enumerate() {
                    let px = xx + g.pad;
                    phases[base + (px % M) * plen + px / M] = val;
                }
                let slot = (first + g.pad) / M;
                let n = deinterleave::<M>(&line[first..], &mut rows_mut(&mut phases[base + slot..], plen, pw - slot, M));
                for (xx, &val) in line.iter().enumerate().skip(first + M * n) {
                    let px = xx + g.pad;
                    phases[base + (px % M) * plen + px / M] = val;
                }
            }
            // B^T along the columns: input column l of a tile is phase l % m, shifted by l / m.
            for r in 0..M {
                let mut d: Rows = [&[]; 6];
                for (l, dl) in d.iter_mut().enumerate().take(a) {
                    *dl = &phases[(r * M + l % M) * plen + l / M..][..n1];
                }
                tile.input(&d, &mut rows_mut(&mut half[r * a * n1..], n1, n1, a));
            }
            // Then along the rows, straight into V: row k of a tile is phase k % m, shifted by
            // k / m rows; position (i, j) for i < alpha lies `alpha * c * tp` apart.
            for j in 0..a {
                let mut d: Rows = [&[]; 6];
                for (k, dk) in d.iter_mut().enumerate().take(a) {
                    *dk = &half[((k % M) * a + j) * n1 + (k / M) * pw..][..n2];
                }
                // Each sample's rows run up to a block past its tiles, into the next sample's
                // (written after it) or the row's padding.
                tile.input(&d, &mut rows_mut(&mut v[(j * c + ci) * tp + s * plan.per_image()..], a * c * tp, n2, a));
            }
        }
    }
}

/// `y[count][c_out][h_out][w_out]` from the products `M[p][c_out][t]`: `Y = A^T M A` per tile.
#[inline(always)]
fn transform_outputs<const M: usize>(
    plan: &Plan,
    g: &Geometry,
    mm: &[f32],
    count: usize,
    tp: usize,
    y: &mut [MaybeUninit<f32>],
    buf: &mut Buffers,
) {
    let (a, pw, n2) = (M + 2, plan.pw(), blocks(plan.per_image()));
    let tile = Tile::of::<M>();
    let (ho, wo, co_n) = (g.h_out(), g.w_out(), g.c_out);
    let half = sized(&mut buf.half, M * a * n2);
    let outs = sized(&mut buf.planes, M * M * n2);
    for s in 0..count {
        for co in 0..co_n {
            // A^T down the alpha rows of positions (half[i][j]), then along them (outs[i][j]).
            for j in 0..a {
                let src = rows(&mm[(j * co_n + co) * tp + s * plan.per_image()..], a * co_n * tp, n2, a);
                tile.output(&src, &mut rows_mut(&mut half[j * n2..], a * n2, n2, M));
            }
            for i in 0..M {
                tile.output(&rows(&half[i * a * n2..], n2, n2, a), &mut rows_mut(&mut outs[i * M * n2..], n2, n2, M));
            }
            let plane = &mut y[(s * co_n + co) * ho * wo..][..ho * wo];
            for (oy, line) in plane.chunks_mut(wo).enumerate() {
                let phase = &outs[(oy % M) * M * n2 + (oy / M) * pw..];
                interleave::<M>(&rows(phase, n2, pw, M), line);
            }
        }
    }
}

/// `D[p][c_out][t]` of the output gradient `dy[count][c_out][h_out][w_out]`: `A dy A^T` per tile,
/// zeros past the plane's edge and in each tile row's extra tile (so the weight gradient's sums
/// over tiles take nothing from it).
#[inline(always)]
fn transform_grads<const M: usize>(plan: &Plan, g: &Geometry, dy: &[f32], count: usize, tp: usize, d: &mut [f32], buf: &mut Buffers) {
    let (a, pw, n2) = (M + 2, plan.pw(), blocks(plan.per_image()));
    let tile = Tile::of::<M>();
    let (ho, wo, co_n) = (g.h_out(), g.w_out(), g.c_out);
    let phases = sized(&mut buf.planes, M * M * n2);
    let half = sized(&mut buf.half, M * a * n2);
    // Past the plane's edge, in the extra tile and in the blocks' padding: zeroed once, never
    // written below.
    phases.fill(0.0);
    for s in 0..count {
        for co in 0..co_n {
            let src = &dy[(s * co_n + co) * ho * wo..][..ho * wo];
            for (oy, line) in src.chunks(wo).enumerate() {
                let base = (oy % M) * M * n2 + (oy / M) * pw;
                let n = deinterleave::<M>(line, &mut rows_mut(&mut phases[base..], n2, pw, M));
                for (j, &val) in line[M * n..].iter().enumerate() {
                    phases[base + j * n2 + n] = val;
                }
            }
            for r in 0..M {
                tile.grad(&rows(&phases[r * M * n2..], n2, n2, M), &mut rows_mut(&mut half[r * a * n2..], n2, n2, a));
            }
            for j in 0..a {
                let src = rows(&half[j * n2..], a * n2, n2, M);
                tile.grad(&src, &mut rows_mut(&mut d[(j * co_n + co) * tp + s * plan.per_image()..], a * co_n * tp, n2, a));
            }
        }
    }
}

/// The transformed kernel as the products' left operand: position `p`'s `[rows, k]` matrix at
/// `u[offset(p) + r * rs + k * ks]`.
#[derive(Clone, Copy)]
struct Operand<'a> {
    u: &'a [f32],
    tile: Tile,
    /// The kernel's `(c_out, c_in)`.
    dims: (usize, usize),
    /// Read as the flipped, transposed kernel (the input gradient's).
    flipped: bool,
}

impl Operand<'_> {
    /// Position `p`'s matrix: `(offset, row stride, column stride)`.
    fn at(&self, p: usize) -> (usize, usize, usize) {
        let (co, ci) = self.dims;
        if !self.flipped {
            return (p * co * ci, ci, 1);
        }
        // Flipping the kernel reverses G's columns, which for F(2x2) swaps G's first and last
        // rows: position (r, c) of the flipped kernel's transform is (s(r), s(c)) of U, with s
        // swapping 0 and 3, and its channel axes swapped.
        let a = self.tile.alpha();
        let s = |i: usize| if i == 0 || i == a - 1 { a - 1 - i } else { i };
        ((s(p / a) * a + s(p % a)) * co * ci, 1, ci)
    }
}

/// `m[rows][tp] = U[p] @ v[k][tp]` for one position, through the SIMD kernel where the CPU has
/// it and `rows` is a whole number of its blocks, else through the GEMM.
#[inline(always)]
fn product(op: &Operand, p: usize, rows: usize, k: usize, v: &[f32], tp: usize, m: &mut [f32]) {
    let (offset, rs, ks) = op.at(p);
    assert!(v.len() >= k * tp && m.len() >= rows * tp && op.u.len() > offset + (rows - 1) * rs + (k - 1) * ks);
    if let Some(isa) = direct::isa().filter(|i| rows.is_multiple_of(x86::block(*i))) {
        // SAFETY: `isa` was found on this CPU; the operands hold what the strides address
        // (asserted above) and `tp` is a whole number of vectors ([`Plan::stride`]).
        unsafe {
            let p = x86::Product { u: op.u[offset..].as_ptr(), rs, ks, v: v.as_ptr(), m: m.as_mut_ptr(), stride: tp, k, rows, cols: tp };
            x86::product(isa, &p)
        };
        return;
    }
    matmul(m, rows, tp, k, Mat::strided(op.u, offset, rs as isize, ks as isize), Mat::rows(v, tp), gemm::Parallelism::None, false);
}

/// One chunk of the forward: transform, products, inverse transform.
#[inline(always)]
fn forward_chunk<const M: usize>(plan: &Plan, g: &Geometry, op: &Operand, x: &[f32], y: &mut [MaybeUninit<f32>], buf: &mut Buffers) {
    let count = y.len() / (g.c_out * g.h_out() * g.w_out());
    let tp = plan.stride(count);
    let p_n = plan.tile.positions();
    let mut v = std::mem::take(&mut buf.v);
    let mut mm = std::mem::take(&mut buf.m);
    let vs = sized(&mut v, p_n * g.c_in * tp);
    transform_inputs::<M>(plan, g, x, count, tp, vs, buf);
    let ms = sized(&mut mm, p_n * g.c_out * tp);
    for p in 0..p_n {
        product(op, p, g.c_out, g.c_in, &vs[p * g.c_in * tp..][..g.c_in * tp], tp, &mut ms[p * g.c_out * tp..][..g.c_out * tp]);
    }
    transform_outputs::<M>(plan, g, ms, count, tp, y, buf);
    buf.v = v;
    buf.m = mm;
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
    op: &Operand,
    x: &[f32],
    y: &mut [MaybeUninit<f32>],
    buf: &mut Buffers,
) {
    forward_chunk::<M>(plan, g, op, x, y, buf)
}

/// `y` of geometry `g` with the kernel read through `op`, chunks of samples in parallel.
fn run(g: &Geometry, tile: Tile, x: &[f32], op: Operand) -> Vec<f32> {
    let plan = Plan::new(g, tile);
    let out_len = g.c_out * g.h_out() * g.w_out();
    let in_len = g.c_in * g.h * g.w;
    let size = plan.chunk(g.c_in + g.c_out);
    let wide = direct::isa() == Some(direct::Isa::Avx512);
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(size * out_len).enumerate().for_each_init(Buffers::default, |buf, (chunk, yc)| {
            let xc = &x[chunk * size * in_len..][..yc.len() / out_len * in_len];
            match (tile, wide) {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `wide` says the CPU has AVX-512F.
                (Tile::F2, true) => unsafe { forward_chunk_wide::<2>(&plan, g, &op, xc, yc, buf) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                (Tile::F4, true) => unsafe { forward_chunk_wide::<4>(&plan, g, &op, xc, yc, buf) },
                (Tile::F2, _) => forward_chunk::<2>(&plan, g, &op, xc, yc, buf),
                (Tile::F4, _) => forward_chunk::<4>(&plan, g, &op, xc, yc, buf),
            }
        })
    };
    // SAFETY: the inverse transform writes every output slot of every chunk.
    unsafe { filled(g.n * out_len, fill) }
}

/// `y[n, c_out, h_out, w_out]` from `x[n, c_in, h, w]` and the layer's transformed kernel.
pub fn forward(g: &Geometry, x: &[f32], k: &Kernel) -> Vec<f32> {
    assert!(applies(g) && (k.c_out, k.c_in) == (g.c_out, g.c_in), "winograd::forward: kernel {:?} for {g:?}", (k.c_out, k.c_in));
    run(g, k.tile, x, Operand { u: &k.u, tile: k.tile, dims: (k.c_out, k.c_in), flipped: false })
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
/// (`kernel`, or `weight` transformed without it) permuted; F(4x4)'s transform of the flipped
/// kernel is not a permutation of `U` (its points 2 and 1/2 differ), so it transforms `weight`
/// flipped and reads no `kernel`.
pub fn input_grad(g: &Geometry, tile: Tile, kernel: Option<&Kernel>, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    let t = transposed_geometry(g).filter(applies).expect("winograd::input_grad: a stride-1 3x3 layer");
    match tile {
        Tile::F2 => {
            let k = kernel_for(g, tile, kernel, weight);
            run(&t, tile, dy, Operand { u: &k.u, tile, dims: (k.c_out, k.c_in), flipped: true })
        }
        Tile::F4 => forward(&t, dy, &kernel_transform(&t, tile, &flipped_transpose(g, weight))),
    }
}

/// One chunk's weight-gradient sums `S[p][c_out][c_in] = D[p] @ V[p]^T` over its tiles.
#[inline(always)]
fn weight_grad_chunk<const M: usize>(plan: &Plan, g: &Geometry, x: &[f32], dy: &[f32], count: usize, sp: &mut [f32], buf: &mut Buffers) {
    let t = count * plan.per_image();
    let tp = plan.stride(count);
    let p_n = plan.tile.positions();
    let mut v = std::mem::take(&mut buf.v);
    let mut dd = std::mem::take(&mut buf.m);
    let vs = sized(&mut v, p_n * g.c_in * tp);
    transform_inputs::<M>(plan, g, x, count, tp, vs, buf);
    let ds = sized(&mut dd, p_n * g.c_out * tp);
    transform_grads::<M>(plan, g, dy, count, tp, ds, buf);
    let cc = g.c_out * g.c_in;
    let simd = direct::isa().filter(|_| g.c_out.is_multiple_of(x86::DOT_ROWS));
    if simd.is_some() {
        // The SIMD sums run over whole vectors: the tiles past `t` add zeros.
        for row in vs.chunks_mut(tp).chain(ds.chunks_mut(tp)) {
            row[t..].fill(0.0);
        }
    }
    for p in 0..p_n {
        let (dp, vp) = (&ds[p * g.c_out * tp..][..g.c_out * tp], &vs[p * g.c_in * tp..][..g.c_in * tp]);
        let out = &mut sp[p * cc..][..cc];
        match simd {
            // SAFETY: the ISA was found on this CPU; `dp` and `vp` hold `c_out` and `c_in` rows
            // of `tp` values (a whole number of vectors), `out` `c_out * c_in`.
            Some(isa) => unsafe { x86::dots(isa, dp.as_ptr(), vp.as_ptr(), tp, out.as_mut_ptr(), g.c_out, g.c_in) },
            None => matmul(out, g.c_out, g.c_in, t, Mat::rows(dp, tp), Mat::transposed(vp, tp), gemm::Parallelism::None, false),
        }
    }
    buf.v = v;
    buf.m = dd;
}

/// [`weight_grad_chunk`] compiled for AVX-512.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_grad_chunk_wide<const M: usize>(
    plan: &Plan,
    g: &Geometry,
    x: &[f32],
    dy: &[f32],
    count: usize,
    sp: &mut [f32],
    buf: &mut Buffers,
) {
    weight_grad_chunk::<M>(plan, g, x, dy, count, sp, buf)
}

/// The weight gradient `dweight[c_out, c_in, 3, 3]` from `x` and the output gradient `dy`: per
/// chunk of samples the sums over its tiles, the chunks added in order (so the result does not
/// depend on the threads), then `G^T S G`.
pub fn weight_grad(g: &Geometry, tile: Tile, x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert!(applies(g), "winograd::weight_grad: {g:?}");
    let plan = Plan::new(g, tile);
    let (in_len, out_len) = (g.c_in * g.h * g.w, g.c_out * g.h_out() * g.w_out());
    let size = plan.chunk(g.c_in + g.c_out);
    let chunks = g.n.div_ceil(size);
    let (p_n, cc) = (tile.positions(), g.c_out * g.c_in);
    let wide = direct::isa() == Some(direct::Isa::Avx512);
    let mut partial = vec![0f32; chunks * p_n * cc];
    partial.par_chunks_mut(p_n * cc).enumerate().for_each_init(Buffers::default, |buf, (chunk, sp)| {
        let first = chunk * size;
        let count = size.min(g.n - first);
        let (xc, dc) = (&x[first * in_len..][..count * in_len], &dy[first * out_len..][..count * out_len]);
        match (tile, wide) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `wide` says the CPU has AVX-512F.
            (Tile::F2, true) => unsafe { weight_grad_chunk_wide::<2>(&plan, g, xc, dc, count, sp, buf) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            (Tile::F4, true) => unsafe { weight_grad_chunk_wide::<4>(&plan, g, xc, dc, count, sp, buf) },
            (Tile::F2, _) => weight_grad_chunk::<2>(&plan, g, xc, dc, count, sp, buf),
            (Tile::F4, _) => weight_grad_chunk::<4>(&plan, g, xc, dc, count, sp, buf),
        }
    });
    let s = sum_in_order(&partial, p_n * cc);
    let (a, gm) = (tile.alpha(), tile.g());
    let mut dw = vec![0f32; cc * 9];
    for (oi, out) in dw.chunks_mut(9).enumerate() {
        // G^T S G for this channel pair: (G^T S)[b][c], then times G.
        let sv = |r: usize, c: usize| s[(r * a + c) * cc + oi];
        for b in 0..3 {
            let gts: [f32; 6] = std::array::from_fn(|c| if c < a { (0..a).map(|r| gm[r][b] * sv(r, c)).sum() } else { 0.0 });
            for (d, o) in out[b * 3..][..3].iter_mut().enumerate() {
                *o = (0..a).map(|c| gts[c] * gm[c][d]).sum();
            }
        }
    }
    dw
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The products' register tile: `R` kernel rows x `NV` vectors of tiles held in registers
    //! for the whole sum over channels, one broadcast per row and one load per vector per
    //! channel.

    use super::super::direct::x86::{Lanes, Narrow, Wide};
    use super::super::direct::Isa;

    /// Kernel rows per register tile.
    pub(super) fn block(isa: Isa) -> usize {
        match isa {
            Isa::Avx512 => 8,
            Isa::Avx2 => 4,
        }
    }

    /// One product `m[r * stride + t] = sum over kk < k of u[r * rs + kk * ks] * v[kk * stride + t]`
    /// for `r < rows` and `t < cols`: `v` and `m` share the row length `stride`.
    #[derive(Clone, Copy)]
    pub(super) struct Product {
        pub(super) u: *const f32,
        pub(super) rs: usize,
        pub(super) ks: usize,
        pub(super) v: *const f32,
        pub(super) m: *mut f32,
        pub(super) stride: usize,
        pub(super) k: usize,
        pub(super) rows: usize,
        pub(super) cols: usize,
    }

    /// `R` rows x `NV` vectors from row `r0` and column `t`.
    ///
    /// # Safety
    /// As [`product`].
    #[inline(always)]
    unsafe fn tile<L: Lanes, const R: usize, const NV: usize>(p: &Product, r0: usize, t: usize) {
        let (u, v, m) = (p.u.add(r0 * p.rs), p.v.add(t), p.m.add(r0 * p.stride + t));
        let mut acc = [[L::zero(); NV]; R];
        for kk in 0..p.k {
            let xs: [L::V; NV] = std::array::from_fn(|j| unsafe { L::load(v.add(kk * p.stride + j * L::W)) });
            for (r, row) in acc.iter_mut().enumerate() {
                let s = L::splat(*u.add(r * p.rs + kk * p.ks));
                for (a, x) in row.iter_mut().zip(&xs) {
                    *a = L::fma(s, *x, *a);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (j, a) in row.iter().enumerate() {
                L::store(m.add(r * p.stride + j * L::W), *a);
            }
        }
    }

    /// # Safety
    /// As [`product`].
    #[inline(always)]
    unsafe fn product_with<L: Lanes, const R: usize>(p: &Product) {
        for r0 in (0..p.rows).step_by(R) {
            let mut t = 0;
            while t + 3 * L::W <= p.cols {
                tile::<L, R, 3>(p, r0, t);
                t += 3 * L::W;
            }
            match (p.cols - t) / L::W {
                2 => tile::<L, R, 2>(p, r0, t),
                1 => tile::<L, R, 1>(p, r0, t),
                _ => {}
            }
        }
    }

    /// Output-gradient rows per register tile of [`dots`].
    pub(super) const DOT_ROWS: usize = 4;

    /// `R x C` dot products of length `k` (a multiple of `L::W`), lane-wise sums then each
    /// vector's lanes added in a fixed order.
    ///
    /// # Safety
    /// As [`dots`].
    #[inline(always)]
    unsafe fn dot_tile<L: Lanes, const R: usize, const C: usize>(d: *const f32, v: *const f32, k: usize, s: *mut f32, cols: usize) {
        let mut acc = [[L::zero(); C]; R];
        for t in (0..k).step_by(L::W) {
            let vs: [L::V; C] = std::array::from_fn(|c| unsafe { L::load(v.add(c * k + t)) });
            for (r, row) in acc.iter_mut().enumerate() {
                let dv = L::load(d.add(r * k + t));
                for (a, x) in row.iter_mut().zip(&vs) {
                    *a = L::fma(dv, *x, *a);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (c, a) in row.iter().enumerate() {
                *s.add(r * cols + c) = L::sum(*a);
            }
        }
    }

    /// # Safety
    /// As [`dots`].
    #[inline(always)]
    unsafe fn dots_with<L: Lanes, const C: usize>(d: *const f32, v: *const f32, k: usize, s: *mut f32, rows: usize, cols: usize) {
        for r0 in (0..rows).step_by(DOT_ROWS) {
            let (dr, sr) = (d.add(r0 * k), s.add(r0 * cols));
            let mut c0 = 0;
            while c0 + C <= cols {
                dot_tile::<L, DOT_ROWS, C>(dr, v.add(c0 * k), k, sr.add(c0), cols);
                c0 += C;
            }
            for c in c0..cols {
                dot_tile::<L, DOT_ROWS, 1>(dr, v.add(c * k), k, sr.add(c), cols);
            }
        }
    }

    /// # Safety
    /// AVX-512F is there; as [`dots`].
    #[target_feature(enable = "avx512f")]
    unsafe fn dots_wide(d: *const f32, v: *const f32, k: usize, s: *mut f32, rows: usize, cols: usize) {
        dots_with::<Wide, 4>(d, v, k, s, rows, cols)
    }

    /// # Safety
    /// AVX2 and FMA are there; as [`dots`].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dots_avx2(d: *const f32, v: *const f32, k: usize, s: *mut f32, rows: usize, cols: usize) {
        dots_with::<Narrow, 2>(d, v, k, s, rows, cols)
    }

    /// `s[r * cols + c] = sum over t < k of d[r * k + t] * v[c * k + t]`: the weight gradient's
    /// sums over tiles, `rows` a multiple of [`DOT_ROWS`] and `k` of 16.
    ///
    /// # Safety
    /// `isa` was found on this CPU; `d` holds `rows * k` values, `v` `cols * k`, `s` `rows * cols`.
    pub(super) unsafe fn dots(isa: Isa, d: *const f32, v: *const f32, k: usize, s: *mut f32, rows: usize, cols: usize) {
        match isa {
            Isa::Avx512 => dots_wide(d, v, k, s, rows, cols),
            Isa::Avx2 => dots_avx2(d, v, k, s, rows, cols),
        }
    }

    /// # Safety
    /// AVX-512F is there; as [`product`].
    #[target_feature(enable = "avx512f")]
    unsafe fn product_wide(p: &Product) {
        product_with::<Wide, 8>(p)
    }

    /// # Safety
    /// AVX2 and FMA are there; as [`product`].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn product_avx2(p: &Product) {
        product_with::<Narrow, 4>(p)
    }

    /// Runs `p`: `rows` a multiple of [`block`], `cols` of 16, the sum in `kk` order.
    ///
    /// # Safety
    /// `isa` was found on this CPU; `u`, `v` and `m` hold every element `p`'s indices address.
    pub(super) unsafe fn product(isa: Isa, p: &Product) {
        match isa {
            Isa::Avx512 => product_wide(p),
            Isa::Avx2 => product_avx2(p),
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    //! Off x86-64 [`super::direct::isa`] is `None` and the products take the GEMM.

    use super::super::direct::Isa;

    pub(super) const DOT_ROWS: usize = 4;

    pub(super) fn block(_: Isa) -> usize {
        unreachable!("no SIMD product off x86-64")
    }

    pub(super) unsafe fn dots(_: Isa, _: *const f32, _: *const f32, _: usize, _: *mut f32, _: usize, _: usize) {
        unreachable!("no SIMD sums off x86-64")
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn product(
        _: Isa,
        _: *const f32,
        _: usize,
        _: usize,
        _: *const f32,
        _: usize,
        _: usize,
        _: *mut f32,
        _: usize,
        _: usize,
    ) {
        unreachable!("no SIMD product off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::super::shifted::tests::values;
    use super::super::{im2col_forward, im2col_weight_grad, input_grad_scatter, Geometry};
    use super::{applies, forward, input_grad, kernel_transform, weight_grad, Tile};

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

    /// The three parts give the same bits on 1 and 3 threads (chunks of samples fixed by the
    /// geometry, their weight-gradient sums added in order), with SIMD and GEMM products.
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
                        (forward(&g, &x, &k), weight_grad(&g, tile, &x, &dy), input_grad(&g, tile, Some(&k), &wt, &dy))
                    })
                };
                assert!(run(1) == run(3), "{tile:?} {g:?}: results differ between 1 and 3 threads");
            }
        }
    }
}
