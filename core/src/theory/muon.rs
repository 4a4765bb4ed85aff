//! Muon (F18, F19): the Newton-Schulz iteration the engine steps with, and the equilibrium
//! angle of a scale-invariant matrix under it, derived in the repository's `docs/theory.md`.
//!
//! The derivation in short. With decoupled decay `W <- (1 - eta*lambda) W - eta_adj O_t` and
//! steps orthogonal to `W` on average, the norm balance at equilibrium is
//! `2 eta lambda ||W||^2 = eta_adj^2 L(O)`, where `L(O) = sum_j E<O_t, O_{t+j}>` over all lags
//! is the long-run variance rate of the steps (the cross term `<W_t, O_t>` collects the earlier
//! steps' overlap with this one). The angle per step is `eta_adj ||O|| / ||W||`, so
//!
//! `theta = sqrt(2 eta lambda) * q`, `q^2 = E||O||^2 / L(O)`,
//!
//! independent of `eta_adj` (`adjust_lr_fn` moves the norm, not the angle). For an EMA of white
//! gradients without the polar map, `q` is F8's `sqrt((1-b)/(1+b))`. The polar map is odd and
//! nonlinear: its linear part (the first Wiener chaos, `alpha U` with
//! `alpha = E<O, U> / E||U||^2`) keeps the momentum's slow correlation, its cubic and higher
//! parts decorrelate as the third and higher powers of it. Keeping the linear part alone gives
//! THEORY.md's hypothesis `q = r * rho` ([`r_factor`], [`rho_gaussian`]); the higher parts and
//! Newton-Schulz's incomplete lift of small singular values move `q` by a few percent for
//! full-rank gradients and by up to 30% for low-rank ones. So [`factor`] evaluates `q` itself:
//! it runs the momentum and the same Newton-Schulz iteration on independent synthetic gradients
//! of the matrix's shape (no weight, no training: the "open loop"), and reads `E||O||^2` and the
//! steps' autocorrelation off them; [`Factor::q`] adds the two corrections of order
//! `eta*lambda/(1-b)` (decay of earlier steps, the step's part along `W`). The tests check it
//! against the closed loop (Muon on a scale-invariant matrix) over shapes, momenta, Nesterov,
//! gradient rank and per-row invariance: within 1.5% everywhere, where `r * rho` is off by up to
//! 15%.

use crate::gemm::{matmul, Mat, Parallelism};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// PyTorch's and Keller Jordan's quintic coefficients `(a, b, c)`: `X <- a X + (b A + c A^2) X`
/// with `A = X X^T`.
pub const NS_COEFFICIENTS: (f64, f64, f64) = (3.4445, -4.775, 2.0315);
/// Newton-Schulz steps per update (PyTorch's default).
pub const NS_STEPS: usize = 5;
/// The floor under the Frobenius norm the input is divided by (PyTorch's `eps`).
pub const NS_EPS: f64 = 1e-7;

/// `NS5(u)` for a row-major `rows x cols` matrix: the iteration towards the polar factor
/// `U (U^T U)^(-1/2)`, run on the wide orientation (`A` is `min x min`) as PyTorch does, in
/// `f32` (PyTorch casts to bfloat16; the float32 result is closer to the polar factor and the
/// equilibrium does not move, measured in the tests). With `parallel`, products of a million
/// multiply-adds or more use the thread pool (a training step's; the open loop runs many small
/// iterations, which the pool only slows).
pub fn newton_schulz(
    u: &[f32],
    rows: usize,
    cols: usize,
    coefficients: (f64, f64, f64),
    steps: usize,
    eps: f64,
    parallel: bool,
) -> Vec<f32> {
    assert_eq!(u.len(), rows * cols, "newton_schulz: {} values for a {rows}x{cols} matrix", u.len());
    let tall = rows > cols;
    let (m, n) = if tall { (cols, rows) } else { (rows, cols) };
    let mut x = if tall { transpose(u, rows, cols) } else { u.to_vec() };
    let norm = x.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>().sqrt();
    let inv = (1.0 / norm.max(eps)) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
    let split = parallel && m * m * n >= 1 << 20;
    let (a, b, c) = (coefficients.0 as f32, coefficients.1 as f32, coefficients.2 as f32);
    let mut gram = vec![0.0f32; m * m];
    let mut poly = vec![0.0f32; m * m];
    let mut next = vec![0.0f32; m * n];
    for _ in 0..steps {
        product(&mut gram, m, m, n, &x, Rhs::Transposed(&x, n), split, false);
        product(&mut poly, m, m, m, &gram, Rhs::Rows(&gram, m), split, false);
        poly.iter_mut().zip(&gram).for_each(|(p, g)| *p = b * g + c * *p);
        next.iter_mut().zip(&x).for_each(|(y, v)| *y = a * v);
        product(&mut next, m, n, m, &poly, Rhs::Rows(&x, n), split, true);
        std::mem::swap(&mut x, &mut next);
    }
    if tall {
        transpose(&x, m, n)
    } else {
        x
    }
}

/// The right operand of [`product`]: a row-major `[_, cols]` slice, or its transpose.
#[derive(Clone, Copy)]
enum Rhs<'a> {
    Rows(&'a [f32], usize),
    Transposed(&'a [f32], usize),
}

impl Rhs<'_> {
    fn mat(&self) -> Mat<'_> {
        match *self {
            Rhs::Rows(d, cols) => Mat::rows(d, cols),
            Rhs::Transposed(d, cols) => Mat::transposed(d, cols),
        }
    }
}

/// `dst[m, n] = lhs[m, k] @ rhs` (`+=` with `add`) for a row-major `lhs`; with `split`, the rows
/// in one block per pool thread, each block one single-threaded GEMM (the same numbers bit for
/// bit). On 2 threads a 128x512 iteration took 1.8 ms this way against 2.6 single-threaded, where
/// the GEMM's own parallel loops had taken 2.5 (a 128x128 one: 0.94, 1.04 and 1.13 ms).
#[allow(clippy::too_many_arguments)]
fn product(dst: &mut [f32], m: usize, n: usize, k: usize, lhs: &[f32], rhs: Rhs<'_>, split: bool, add: bool) {
    use rayon::prelude::*;
    let threads = if split { rayon::current_num_threads().min(m) } else { 1 };
    if threads <= 1 {
        matmul(dst, m, n, k, Mat::rows(lhs, k), rhs.mat(), Parallelism::None, add);
        return;
    }
    let rows = m.div_ceil(threads);
    dst[..m * n].par_chunks_mut(rows * n).zip(lhs[..m * k].par_chunks(rows * k)).for_each(|(d, l)| {
        matmul(d, d.len() / n, n, k, Mat::rows(l, k), rhs.mat(), Parallelism::None, add);
    });
}

fn transpose(u: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; u.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = u[i * cols + j];
        }
    }
    t
}

crate::choice! {
    /// How Muon scales its step by the matrix's shape (PyTorch's `adjust_lr_fn`; `rows x cols` =
    /// `fan_out x fan_in`). Decay always uses the base lr.
    pub enum AdjustLr {
        /// Keller Jordan's: `lr * sqrt(max(1, rows/cols))` (PyTorch's default).
        Original = "original",
        /// Moonshot's: `0.2 * lr * sqrt(max(rows, cols))`, the RMS of AdamW's step.
        MatchRmsAdamw = "match_rms_adamw",
        /// Bernstein's: `lr * sqrt(rows/cols)`.
        SpectralUnclamped = "spectral_unclamped",
    }
}

impl AdjustLr {
    /// The step's lr for a `rows x cols` matrix at base lr `lr` (PyTorch's `_adjust_lr`).
    pub fn lr(self, lr: f64, rows: usize, cols: usize) -> f64 {
        let (a, b) = (rows as f64, cols as f64);
        lr * match self {
            AdjustLr::Original => (a / b).max(1.0).sqrt(),
            AdjustLr::MatchRmsAdamw => 0.2 * a.max(b).sqrt(),
            AdjustLr::SpectralUnclamped => (a / b).sqrt(),
        }
    }
}

/// F8's momentum factor for Muon's EMA (`B <- b B + (1-b) G`): the RMS of one step over the
/// long-run RMS of their sum, `sqrt((1-b)/(1+b))`; with Nesterov's blend `U = (1-b) G + b B`,
/// `r^2 = (1-b^2)^2 + b^4 (1-b)/(1+b)`.
pub fn r_factor(b: f64, nesterov: bool) -> f64 {
    if nesterov {
        ((1.0 - b * b).powi(2) + b.powi(4) * (1.0 - b) / (1.0 + b)).sqrt()
    } else {
        ((1.0 - b) / (1.0 + b)).sqrt()
    }
}

/// `sqrt(E[s^2]) / E[s]` over the singular values of a Gaussian `rows x cols` matrix in the
/// large-size limit (Marchenko-Pastur with ratio `c = min/max`): 1.178 for a square matrix
/// (`3 pi / 8`), 1.03 at aspect ratio 4. The polar map's analogue of Lion's `sqrt(pi/2)`.
pub fn rho_gaussian(rows: usize, cols: usize) -> f64 {
    let c = rows.min(cols) as f64 / rows.max(cols) as f64;
    let (lo, hi) = ((1.0 - c.sqrt()).powi(2), (1.0 + c.sqrt()).powi(2));
    // Eigenvalues of X X^T / max with E[lambda] = 1; lambda = lo + (hi-lo)(1-cos phi)/2 takes
    // the density's square-root edges away, so the midpoint rule converges fast.
    let k = 4000;
    let (mut mass, mut first) = (0.0, 0.0);
    for i in 0..k {
        let phi = std::f64::consts::PI * (i as f64 + 0.5) / k as f64;
        let lambda = lo + (hi - lo) * (1.0 - phi.cos()) / 2.0;
        let half = (hi - lo) / 2.0 * phi.sin();
        let w = half * half / (2.0 * std::f64::consts::PI * c * lambda);
        mass += w;
        first += w * lambda.sqrt();
    }
    mass / first
}

/// What [`factor`] measured for one shape and momentum: the steps' autocorrelation, from which
/// F18's factor follows for any decay per step ([`Factor::q`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Factor {
    /// `E||O||^2 / min(rows, cols)`: the mean squared singular value of Newton-Schulz's output,
    /// which with `q` gives the equilibrium norm ([`equilibrium_norm`]).
    pub out_sq: f64,
    /// `E<O_t, O_{t+j}> / E||O||^2` for `j = 0, 1, ...` until the momentum's correlation `b^j`
    /// falls below 1e-3.
    pub corr: Vec<f64>,
}

impl Factor {
    /// `q = theta / sqrt(2 eta lambda)` (F18) with decay `d = eta*lambda` per step, in units of
    /// `E||O||^2` (`c_0 = 1`). Where `d` is not small against `1-b`, two corrections of order
    /// `d/(1-b)` count: the norm balance `(2d - d^2) ||W||^2 = eta_adj^2 L_d`,
    /// `L_d = c_0 + 2 sum_j (1-d)^j c_j`, weighs each earlier step by what decay has left of it;
    /// and the step has a part along `W` (`<W, O> = -eta_adj S`, `S = sum_j (1-d)^(j-1) c_j`),
    /// which turns nothing. With `x = eta_adj^2/||W||^2 = (2d - d^2)/L_d`, the angle is
    /// `atan2(sqrt(x (c_0 - x S^2)), 1 - d + x S)`.
    pub fn q(&self, d: f64) -> f64 {
        let d = d.clamp(1e-12, 1.0);
        let (mut keep, mut rate, mut along) = (1.0, 1.0, 0.0);
        for c in &self.corr[1..] {
            along += keep * c;
            keep *= 1.0 - d;
            rate += 2.0 * keep * c;
        }
        let x = (2.0 * d - d * d) / rate;
        let theta = (x * (1.0 - x * along * along)).max(0.0).sqrt().atan2(1.0 - d + x * along);
        theta / (2.0 * d).sqrt()
    }
}

/// The simulated matrix's smaller side at most (the factor depends on the aspect ratio and the
/// gradient's rank fraction, and little on the size: 64x64 and 256x256 differ by 2%).
const SIM_MIN: usize = 64;
/// The simulated aspect ratio at most (4 and 8 differ by less than 1%).
const SIM_ASPECT: usize = 4;

type Key = (usize, usize, u64, bool, usize);

fn cache() -> &'static Mutex<HashMap<Key, Arc<Factor>>> {
    static CACHE: std::sync::OnceLock<Mutex<HashMap<Key, Arc<Factor>>>> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// F18's step autocorrelation for a `rows x cols` matrix under Muon with momentum `b` (Nesterov
/// or not), for gradients of full rank (`rank = None`) or of rank `rank`. Runs the open loop
/// described in the module doc at the matrix's size capped at [`SIM_MIN`] on the smaller side
/// (the rank scaled with it), once per shape and setting in a process (cached; a 64x64 case at
/// `b = 0.95` takes about half a second). Seeded: the same arguments give the same numbers.
pub fn factor(rows: usize, cols: usize, b: f64, nesterov: bool, rank: Option<usize>) -> Arc<Factor> {
    let (m, n) = (rows.min(cols).max(1), rows.max(cols).max(1));
    let ms = m.min(SIM_MIN);
    let ns = ((n as f64 * ms as f64 / m as f64).round() as usize).clamp(ms, ms * SIM_ASPECT);
    let ks = rank.map(|k| ((k as f64 * ms as f64 / m as f64).round() as usize).max(1)).filter(|&k| k < ms).unwrap_or(0);
    let key = (ms, ns, b.to_bits(), nesterov, ks);
    if let Some(f) = cache().lock().ok().and_then(|c| c.get(&key).cloned()) {
        return f;
    }
    let f = Arc::new(open_loop(ms, ns, b, nesterov, ks));
    if let Ok(mut c) = cache().lock() {
        c.insert(key, f.clone());
    }
    f
}

/// A seeded normal generator (splitmix64 and Box-Muller): the core takes no random crate.
struct Normal(u64);

impl Normal {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn fill(&mut self, v: &mut [f32]) {
        for pair in v.chunks_mut(2) {
            let (u1, u2) = (self.uniform().max(1e-300), self.uniform());
            let r = (-2.0 * u1.ln()).sqrt();
            let t = 2.0 * std::f64::consts::PI * u2;
            pair[0] = (r * t.cos()) as f32;
            if pair.len() > 1 {
                pair[1] = (r * t.sin()) as f32;
            }
        }
    }
}

/// Independent `m x n` gradients: Gaussian, or a product of Gaussian `m x k` and `k x n` factors
/// (`k > 0`), rank `k`.
fn gradient(rng: &mut Normal, m: usize, n: usize, k: usize, out: &mut [f32]) {
    if k == 0 {
        rng.fill(out);
        return;
    }
    let (mut a, mut b) = (vec![0.0f32; m * k], vec![0.0f32; k * n]);
    rng.fill(&mut a);
    rng.fill(&mut b);
    matmul(out, m, n, k, Mat::rows(&a, k), Mat::rows(&b, n), Parallelism::None, false);
}

/// Muon's momentum and Newton-Schulz on independent gradients: `E||O||^2` and the steps'
/// autocorrelation up to the lag where the momentum's `b^j` falls below 1e-3 (the last that many
/// steps kept in a ring).
fn open_loop(m: usize, n: usize, b: f64, nesterov: bool, k: usize) -> Factor {
    let lags = if b > 0.0 { ((1e-3f64).ln() / b.ln()).ceil() as usize } else { 1 }.max(4);
    let steps = (16 * lags).max(1500);
    let warm = lags;
    let mut rng = Normal(0x5EED_0F18 ^ ((m as u64) << 32) ^ (n as u64) ^ ((k as u64) << 48));
    let (mut g, mut buf, mut u) = (vec![0.0f32; m * n], vec![0.0f32; m * n], vec![0.0f32; m * n]);
    let (bf, cf) = (b as f32, (1.0 - b) as f32);
    let mut ring: Vec<Vec<f32>> = Vec::with_capacity(lags);
    let mut sums = vec![0.0f64; lags + 1];
    let mut counts = vec![0usize; lags + 1];
    for t in 0..warm + steps {
        gradient(&mut rng, m, n, k, &mut g);
        for ((bi, ui), gi) in buf.iter_mut().zip(u.iter_mut()).zip(&g) {
            *bi = bf * *bi + cf * gi;
            *ui = if nesterov { cf * gi + bf * *bi } else { *bi };
        }
        if t < warm {
            continue;
        }
        let o = newton_schulz(&u, m, n, NS_COEFFICIENTS, NS_STEPS, NS_EPS, false);
        let i = t - warm;
        sums[0] += dot(&o, &o);
        counts[0] += 1;
        for j in 1..=ring.len() {
            // The step j before this one sits j places back in the ring.
            let past = &ring[(i - j) % lags];
            sums[j] += dot(&o, past);
            counts[j] += 1;
        }
        if ring.len() < lags {
            ring.push(o);
        } else {
            ring[i % lags] = o;
        }
    }
    let c: Vec<f64> = sums.iter().zip(&counts).map(|(s, c)| s / *c as f64).collect();
    Factor { out_sq: c[0] / m as f64, corr: c.iter().map(|x| x / c[0]).collect() }
}

/// `<a, b>` in eight `f32` lanes per block of 512 (which the compiler vectorizes), the blocks
/// summed in `f64`: the ring's lags take most of the open loop's time otherwise.
fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.chunks(512)
        .zip(b.chunks(512))
        .map(|(x, y)| {
            let mut lanes = [0.0f32; 8];
            let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
            let tail: f32 = xc.remainder().iter().zip(yc.remainder()).map(|(p, q)| p * q).sum();
            for (p, q) in xc.zip(yc) {
                for i in 0..8 {
                    lanes[i] += p[i] * q[i];
                }
            }
            f64::from(lanes.iter().sum::<f32>() + tail)
        })
        .sum()
}

/// F18: the equilibrium angle per step of a scale-invariant `rows x cols` matrix under Muon with
/// base lr `lr`, decay `wd` (decoupled, at the base lr) and momentum `b`, full-rank gradients.
pub fn angle(lr: f64, wd: f64, rows: usize, cols: usize, b: f64, nesterov: bool) -> f64 {
    (2.0 * lr * wd).sqrt() * factor(rows, cols, b, nesterov, None).q(lr * wd)
}

/// F18's equilibrium Frobenius norm: the norm balance `2 lr wd ||W||^2 = lr_adj^2 L(O)` gives
/// `||W*|| = lr_adj sqrt(E||O||^2) / theta`, with `lr_adj` from `adjust`.
pub fn equilibrium_norm(lr: f64, wd: f64, rows: usize, cols: usize, b: f64, nesterov: bool, adjust: AdjustLr) -> f64 {
    let theta = angle(lr, wd, rows, cols, b, nesterov);
    let f = factor(rows, cols, b, nesterov, None);
    adjust.lr(lr, rows, cols) * (f.out_sq * rows.min(cols) as f64).sqrt() / theta
}

#[cfg(test)]
mod tests {
    //! F18 against the closed loop: Muon (momentum, Nesterov, this module's Newton-Schulz,
    //! decoupled decay) on a scale-invariant matrix whose gradients are Gaussian (or of low
    //! rank), projected orthogonal to the weight (whole matrix, or each row for per-row
    //! invariance, a batch norm after a linear layer) and scaled by `1/||W||`; the mean angle
    //! over the last half of a run 30 relaxation times long, against [`factor`]'s `q`.
    use super::*;

    fn naive(u: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        // The iteration in f64 with plain loops, in PyTorch's orientation.
        let tall = rows > cols;
        let (m, n) = if tall { (cols, rows) } else { (rows, cols) };
        let mut x: Vec<f64> =
            if tall { transpose(u, rows, cols).iter().map(|v| *v as f64).collect() } else { u.iter().map(|v| *v as f64).collect() };
        let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        x.iter_mut().for_each(|v| *v /= norm);
        let (a, b, c) = NS_COEFFICIENTS;
        for _ in 0..NS_STEPS {
            let mut g = vec![0.0; m * m];
            for i in 0..m {
                for j in 0..m {
                    g[i * m + j] = (0..n).map(|l| x[i * n + l] * x[j * n + l]).sum();
                }
            }
            let mut p = vec![0.0; m * m];
            for i in 0..m {
                for j in 0..m {
                    p[i * m + j] = b * g[i * m + j] + c * (0..m).map(|l| g[i * m + l] * g[l * m + j]).sum::<f64>();
                }
            }
            let mut y = vec![0.0; m * n];
            for i in 0..m {
                for j in 0..n {
                    y[i * n + j] = a * x[i * n + j] + (0..m).map(|l| p[i * m + l] * x[l * n + j]).sum::<f64>();
                }
            }
            x = y;
        }
        let x32: Vec<f32> = x.iter().map(|v| *v as f32).collect();
        if tall {
            transpose(&x32, m, n)
        } else {
            x32
        }
    }

    /// The GEMM iteration equals a plain f64 one to float32 rounding, in both orientations, and
    /// pushes the singular values towards 1 (`||O||^2` near `min(rows, cols)`).
    #[test]
    fn newton_schulz_matches_plain_loops() {
        let mut rng = Normal(7);
        for (rows, cols) in [(12, 12), (20, 7), (7, 20)] {
            let mut u = vec![0.0f32; rows * cols];
            rng.fill(&mut u);
            let fast = newton_schulz(&u, rows, cols, NS_COEFFICIENTS, NS_STEPS, NS_EPS, false);
            let slow = naive(&u, rows, cols);
            let err = fast.iter().zip(&slow).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(err < 1e-4, "{rows}x{cols}: max difference {err}");
            let sq: f32 = fast.iter().map(|v| v * v).sum();
            let k = rows.min(cols) as f32;
            assert!(sq > 0.4 * k && sq < 1.3 * k, "{rows}x{cols}: ||O||^2 = {sq}, min side {k}");
        }
        // Split by rows across the pool: the same numbers bit for bit.
        let mut u = vec![0.0f32; 256 * 96];
        rng.fill(&mut u);
        let one = newton_schulz(&u, 256, 96, NS_COEFFICIENTS, NS_STEPS, NS_EPS, false);
        let split = newton_schulz(&u, 256, 96, NS_COEFFICIENTS, NS_STEPS, NS_EPS, true);
        assert!(one.iter().zip(&split).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    /// The Marchenko-Pastur quadrature against known values: `3 pi / 8` for a square matrix
    /// (`E[s] = 8 / (3 pi)` for the quarter-circle law), 1 for a vector-like matrix.
    #[test]
    fn rho_gaussian_known_values() {
        assert!((rho_gaussian(64, 64) - 3.0 * std::f64::consts::PI / 8.0).abs() < 1e-3);
        assert!((rho_gaussian(1, 10_000) - 1.0).abs() < 0.01);
        let r4 = rho_gaussian(32, 128);
        assert!(r4 > 1.02 && r4 < 1.05, "{r4}");
    }

    /// Muon on a scale-invariant matrix; returns the mean angle per step over the last half.
    #[allow(clippy::too_many_arguments)]
    fn closed_loop(rows: usize, cols: usize, b: f64, nesterov: bool, rank: usize, per_row: bool, lr: f64, wd: f64, steps: usize) -> f64 {
        let (m, n) = (rows, cols);
        let mut rng = Normal(99 + rows as u64 * 7 + cols as u64);
        let mut w = vec![0.0f32; m * n];
        rng.fill(&mut w);
        let (mut g, mut buf, mut u) = (vec![0.0f32; m * n], vec![0.0f32; m * n], vec![0.0f32; m * n]);
        let lr_adj = AdjustLr::Original.lr(lr, rows, cols);
        let (bf, cf) = (b as f32, (1.0 - b) as f32);
        let (mut sum, mut count) = (0.0, 0);
        for t in 0..steps {
            gradient(&mut rng, m, n, rank, &mut g);
            let slices: Vec<(usize, usize)> = if per_row { (0..m).map(|i| (i * n, (i + 1) * n)).collect() } else { vec![(0, m * n)] };
            for &(s, e) in &slices {
                let ww: f64 = w[s..e].iter().map(|v| (*v as f64).powi(2)).sum();
                let gw: f64 = w[s..e].iter().zip(&g[s..e]).map(|(a, b)| *a as f64 * *b as f64).sum();
                let scale = 1.0 / ww.sqrt();
                for (gi, wi) in g[s..e].iter_mut().zip(&w[s..e]) {
                    *gi = ((*gi as f64 - gw / ww * *wi as f64) * scale) as f32;
                }
            }
            for ((bi, ui), gi) in buf.iter_mut().zip(u.iter_mut()).zip(&g) {
                *bi = bf * *bi + cf * gi;
                *ui = if nesterov { cf * gi + bf * *bi } else { *bi };
            }
            let o = newton_schulz(&u, m, n, NS_COEFFICIENTS, NS_STEPS, NS_EPS, false);
            let before = w.clone();
            for (wi, oi) in w.iter_mut().zip(&o) {
                *wi = *wi * (1.0 - (lr * wd) as f32) - lr_adj as f32 * oi;
            }
            if t >= steps / 2 {
                for &(s, e) in &slices {
                    let dot: f64 = before[s..e].iter().zip(&w[s..e]).map(|(a, b)| *a as f64 * *b as f64).sum();
                    let na: f64 = before[s..e].iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
                    let nb: f64 = w[s..e].iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
                    sum += super::super::angle_from_dot(dot, na, nb);
                    count += 1;
                }
            }
        }
        sum / count as f64 / (2.0 * lr * wd).sqrt()
    }

    /// The acceptance grid of F18: shapes square, 4:1 and 1:4, momentum 0.9 and 0.95, Nesterov
    /// on and off, full-rank and rank-3 gradients, whole-matrix and per-row invariance; the
    /// open-loop `q` within 10% of the closed loop's angle in each (measured: within 1.5%).
    #[test]
    fn f18_matches_the_closed_loop() {
        let (lr, wd) = (0.02, 0.5);
        let steps = 3000;
        let cases: [(usize, usize, f64, bool, usize, bool); 8] = [
            (48, 48, 0.95, true, 0, false),
            (48, 48, 0.95, false, 0, false),
            (96, 24, 0.95, true, 0, false),
            (24, 96, 0.95, true, 0, false),
            (48, 48, 0.9, true, 0, false),
            (48, 48, 0.95, true, 3, false),
            (48, 48, 0.95, true, 0, true),
            (96, 24, 0.9, false, 0, true),
        ];
        let mut lines = Vec::new();
        let mut worst: f64 = 0.0;
        for (rows, cols, b, nesterov, rank, per_row) in cases {
            let measured = closed_loop(rows, cols, b, nesterov, rank, per_row, lr, wd, steps);
            let q = factor(rows, cols, b, nesterov, (rank > 0).then_some(rank)).q(lr * wd);
            let err = q / measured - 1.0;
            worst = worst.max(err.abs());
            lines.push(format!(
                "{rows}x{cols} b={b} nesterov={nesterov} rank={rank} per_row={per_row}: measured {measured:.4}, q {q:.4}, r*rho {:.4} ({:+.1}%)",
                r_factor(b, nesterov) * rho_gaussian(rows, cols),
                100.0 * err
            ));
        }
        assert!(worst < 0.10, "F18 off by {:.1}%:\n{}", 100.0 * worst, lines.join("\n"));
        eprintln!("{}", lines.join("\n"));
    }

    /// `adjust_lr_fn` moves the equilibrium norm and not the angle: the closed loop's norm at
    /// the end of a run against [`equilibrium_norm`], within 10%.
    #[test]
    fn equilibrium_norm_follows_the_adjusted_lr() {
        let (rows, cols, lr, wd) = (48, 24, 0.02, 0.5);
        let f = factor(rows, cols, 0.95, true, None);
        for adjust in [AdjustLr::Original, AdjustLr::MatchRmsAdamw] {
            let predicted = equilibrium_norm(lr, wd, rows, cols, 0.95, true, adjust);
            let lr_adj = adjust.lr(lr, rows, cols);
            // The closed loop's norm balance with this lr_adj: simulate and read ||W||.
            let mut rng = Normal(5);
            let (m, n) = (rows, cols);
            let mut w = vec![0.0f32; m * n];
            rng.fill(&mut w);
            let (mut g, mut buf, mut u) = (vec![0.0f32; m * n], vec![0.0f32; m * n], vec![0.0f32; m * n]);
            let mut norms = Vec::new();
            for t in 0..2000 {
                gradient(&mut rng, m, n, 0, &mut g);
                let ww: f64 = w.iter().map(|v| (*v as f64).powi(2)).sum();
                let gw: f64 = w.iter().zip(&g).map(|(a, b)| *a as f64 * *b as f64).sum();
                for (gi, wi) in g.iter_mut().zip(&w) {
                    *gi = ((*gi as f64 - gw / ww * *wi as f64) / ww.sqrt()) as f32;
                }
                for ((bi, ui), gi) in buf.iter_mut().zip(u.iter_mut()).zip(&g) {
                    *bi = 0.95 * *bi + 0.05 * gi;
                    *ui = 0.05 * gi + 0.95 * *bi;
                }
                let o = newton_schulz(&u, m, n, NS_COEFFICIENTS, NS_STEPS, NS_EPS, false);
                for (wi, oi) in w.iter_mut().zip(&o) {
                    *wi = *wi * (1.0 - (lr * wd) as f32) - lr_adj as f32 * oi;
                }
                if t >= 1000 {
                    norms.push(w.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt());
                }
            }
            let measured = norms.iter().sum::<f64>() / norms.len() as f64;
            assert!(
                (predicted / measured - 1.0).abs() < 0.10,
                "{}: predicted {predicted}, measured {measured} (q {})",
                adjust.name(),
                f.q(lr * wd)
            );
        }
    }
}
