//! The literature's answers to the weight-decay / normalization interaction, each a small piece
//! that composes with the plain optimizers of [`super::transform`]. The pieces do not test which
//! tensors they apply to: [`super::alias`] puts each under its [`super::transform::Mask`].
//!
//! - [`ProjectOut`] and [`CosineProject`]: SGDP / AdamP (Heo et al., ICLR 2021), remove the
//!   radial part of the update on scale-invariant tensors, known from the graph or found by
//!   AdamP's cosine test ([`cosine_verdict`], shared with [`crate::check`]).
//! - [`TrustRatio`] and [`LambTrust`]: LARS (You et al. 2017, LARC clipping as in NVIDIA apex)
//!   and LAMB (You et al. 2020) layer-wise trust ratios.
//! - [`FixedNorm`]: van Laarhoven's fix (2017), keep each scale-invariant weight at a fixed
//!   norm so its effective learning rate is the learning rate.
//! - [`Rotational`]: Kosson et al. (2024, "Rotational equilibrium"), RV-SGDM / RV-AdamW: rotate
//!   each output channel by the equilibrium angle from the first step.
//! - [`CompensateElr`]: Jane Street (2019), scale the gradient by `||w||^2/||w_0||^2` so the
//!   effective learning rate follows the schedule without any decay.
//!
//! This module may import burn's tensors, [`crate::params`] and the core's optimizer settings ([`normwd_core::optim`]).

use super::transform::{Ctx, SlotShape, SlotSpec, Slots, Transform};
use crate::params::Granularity;
use burn::tensor::Tensor;

pub use normwd_core::optim::{Invariance, NormTarget};

fn scalar(t: Tensor<2>) -> f64 {
    t.sum().into_scalar::<f64>()
}

/// Row groups for a granularity: `[rows, cols]` viewed as `[groups, rows/groups*cols]`.
fn groups_of(g: Granularity, rows: usize) -> usize {
    match g {
        Granularity::Channel => rows,
        Granularity::Group(n) => rows / n.max(1),
        Granularity::Tensor => 1,
    }
}

/// Removes from `u` its component along `w` within each of `groups` slices: `u -= w_hat <w_hat, u>`.
pub fn project_out(u: Tensor<2>, w: &Tensor<2>, groups: usize) -> Tensor<2> {
    let [rows, cols] = w.dims();
    let wg = w.clone().reshape([groups as i32, -1]);
    let ug = u.reshape([groups as i32, -1]);
    let n2 = wg.clone().powi_scalar(2).sum_dim(1).add_scalar(1e-30);
    let coef = wg.clone().mul(ug.clone()).sum_dim(1).div(n2);
    ug.sub(wg.mul(coef)).reshape([rows, cols])
}

/// Max over slices of `|cos(g, w)|` with `groups` slices (AdamP's cosine similarity, with its eps).
fn max_abs_cos(g: &Tensor<2>, w: &Tensor<2>, groups: usize) -> f64 {
    let wg = w.clone().reshape([groups as i32, -1]);
    let gg = g.clone().reshape([groups as i32, -1]);
    let num = wg.clone().mul(gg.clone()).sum_dim(1);
    let den = wg.powi_scalar(2).sum_dim(1).sqrt().mul(gg.powi_scalar(2).sum_dim(1).sqrt()).add_scalar(1e-8);
    num.div(den).abs().max().into_scalar::<f64>()
}

/// Result of AdamP's cosine test for one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CosineVerdict {
    /// Every output channel passes: invariant per channel.
    Channel,
    /// Only the whole tensor passes.
    Tensor,
    /// Neither: not scale-invariant.
    No,
}

impl CosineVerdict {
    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            CosineVerdict::Channel => "channel",
            CosineVerdict::Tensor => "tensor",
            CosineVerdict::No => "no",
        }
    }
}

/// AdamP's cosine test (THEORY.md section 1): a tensor of `len` elements in `rows` output
/// channels is invariant per channel when `max |cos(g_r, w_r)| < delta/sqrt(cols)`, else as a
/// whole when `|cos(g, w)| < delta/sqrt(len)`. `max_abs_cos(groups)` measures the cosine over
/// `groups` equal slices, on the host ([`crate::check`]) or on the device (the optimizer). A
/// single row or a one-element channel is not tested per channel: it says nothing beyond the
/// whole-tensor test or nothing at all.
pub fn cosine_verdict(rows: usize, len: usize, delta: f64, max_abs_cos: impl Fn(usize) -> f64) -> CosineVerdict {
    let cols = len / rows.max(1);
    if rows > 1 && cols > 1 && max_abs_cos(rows) < delta / (cols as f64).sqrt() {
        CosineVerdict::Channel
    } else if max_abs_cos(1) < delta / (len as f64).sqrt() {
        CosineVerdict::Tensor
    } else {
        CosineVerdict::No
    }
}

/// SGDP / AdamP's projection where `params` says a tensor is scale-invariant: the update loses
/// its component along `w` per invariance group (channel, group or tensor).
pub struct ProjectOut;

impl Transform for ProjectOut {
    fn name(&self) -> &'static str {
        "project"
    }
    fn apply(&self, u: Tensor<2>, w: &Tensor<2>, _: &mut Slots<'_>, ctx: &Ctx) -> Tensor<2> {
        project_out(u, w, groups_of(ctx.info.granularity, w.dims()[0]))
    }
}

/// SGDP / AdamP's projection decided each step from the data (`--invariance numeric`): when the
/// cosine test passes, the update is projected per channel or per tensor and goes on through
/// `projected`, else through `plain`. The decision changes what follows (the reference AdamP
/// decays projected tensors by `wd * wd_ratio`), so both continuations are given here instead
/// of a later piece learning the decision through shared state.
pub struct CosineProject {
    /// The cosine test's `delta` (0.1).
    pub delta: f64,
    /// The rest of the step on projected tensors.
    pub projected: Box<dyn Transform>,
    /// The rest of the step elsewhere.
    pub plain: Box<dyn Transform>,
}

impl Transform for CosineProject {
    fn name(&self) -> &'static str {
        "cosine_project"
    }
    fn apply(&self, u: Tensor<2>, w: &Tensor<2>, s: &mut Slots<'_>, ctx: &Ctx) -> Tensor<2> {
        let [rows, cols] = w.dims();
        let groups = match cosine_verdict(rows, rows * cols, self.delta, |g| max_abs_cos(ctx.grad, w, g)) {
            CosineVerdict::Channel => rows,
            CosineVerdict::Tensor => 1,
            CosineVerdict::No => return self.plain.apply(u, w, s, ctx),
        };
        self.projected.apply(project_out(u, w, groups), w, s, ctx)
    }
    fn slots(&self) -> Vec<SlotSpec> {
        let mut v = self.projected.slots();
        v.extend(self.plain.slots());
        v
    }
}

/// LARS's layer-wise trust ratio (as NVIDIA apex's LARC), after the decay was added to the
/// update: scales it by `k*||w|| / (||g|| + wd*||w|| + eps)` with the raw gradient's norm; with
/// `clip`, by `min(ratio/lr, 1)`. A zero weight or gradient leaves the update as it is.
pub struct TrustRatio {
    /// Trust coefficient `k` (0.001).
    pub trust_coeff: f64,
    /// Added to the denominator (1e-8).
    pub eps: f64,
    /// LARC's clipping mode.
    pub clip: bool,
}

impl Transform for TrustRatio {
    fn name(&self) -> &'static str {
        "trust_ratio"
    }
    fn apply(&self, u: Tensor<2>, w: &Tensor<2>, _: &mut Slots<'_>, ctx: &Ctx) -> Tensor<2> {
        let wn = scalar(w.clone().powi_scalar(2)).sqrt();
        let gn = scalar(ctx.grad.clone().powi_scalar(2)).sqrt();
        if wn == 0.0 || gn == 0.0 {
            return u;
        }
        let mut ratio = self.trust_coeff * wn / (gn + ctx.weight_decay * wn + self.eps);
        if self.clip {
            ratio = (ratio / ctx.lr).min(1.0);
        }
        u.mul_scalar(ratio)
    }
}

/// LAMB's trust ratio on the Adam direction plus decay `r`: scales it by `||w|| / ||r||` (1 when
/// either is zero).
pub struct LambTrust;

impl Transform for LambTrust {
    fn name(&self) -> &'static str {
        "lamb_trust"
    }
    fn apply(&self, r: Tensor<2>, w: &Tensor<2>, _: &mut Slots<'_>, _: &Ctx) -> Tensor<2> {
        let wn = scalar(w.clone().powi_scalar(2)).sqrt();
        let rn = scalar(r.clone().powi_scalar(2)).sqrt();
        if wn == 0.0 || rn == 0.0 {
            r
        } else {
            r.mul_scalar(wn / rn)
        }
    }
}

/// Per-row (or whole-tensor) norms as a `[rows, 1]` (or `[1, 1]`) tensor.
fn norms(w: &Tensor<2>, per_channel: bool) -> Tensor<2> {
    if per_channel {
        w.clone().powi_scalar(2).sum_dim(1).sqrt()
    } else {
        w.clone().powi_scalar(2).sum().sqrt().reshape([1, 1])
    }
}

/// van Laarhoven's fix: after the step, rescale the weight (per output channel or per tensor)
/// back to its target norm. The chain's output is the delta to that point.
pub struct FixedNorm {
    /// Per output channel (`true`) or per tensor.
    pub per_channel: bool,
    /// Target norm.
    pub target: NormTarget,
}

impl FixedNorm {
    fn target_slot(&self) -> SlotSpec {
        SlotSpec { name: "target_norm", shape: if self.per_channel { SlotShape::Row } else { SlotShape::One } }
    }
}

impl Transform for FixedNorm {
    fn name(&self) -> &'static str {
        "fixed_norm"
    }
    fn apply(&self, u: Tensor<2>, w: &Tensor<2>, s: &mut Slots<'_>, _: &Ctx) -> Tensor<2> {
        let slot = self.target_slot();
        let target = match s.take(slot) {
            Some(t) => t,
            None => match self.target {
                NormTarget::Init => norms(w, self.per_channel),
                NormTarget::Unit => norms(w, self.per_channel).mul_scalar(0.0).add_scalar(1.0),
            },
        };
        s.put(slot, target.clone());
        let moved = w.clone().add(u);
        let scaled = moved.clone().div(norms(&moved, self.per_channel).add_scalar(1e-30)).mul(target);
        scaled.sub(w.clone())
    }
    fn slots(&self) -> Vec<SlotSpec> {
        vec![self.target_slot()]
    }
}

/// [`Rotational`]'s initial row norms.
const INIT_NORM: SlotSpec = SlotSpec { name: "init_norm", shape: SlotShape::Row };
/// [`Rotational`]'s running mean square of the update size per row.
const RMS: SlotSpec = SlotSpec { name: "rms", shape: SlotShape::Row };
/// [`CompensateElr`]'s initial squared norm.
pub const INIT_SQ_NORM: SlotSpec = SlotSpec { name: "init_sq_norm", shape: SlotShape::One };

/// The rotational wrapper (Kosson et al. 2024, RV-SGDM / RV-AdamW). It replaces the inner
/// optimizer's step: per output channel it makes the inner step zero-mean and orthogonal to
/// `w`, normalizes it by a running RMS of its size (decay `beta`, bias-corrected), rotates `w`
/// by `angle * lr_factor` and rescales to the stored initial norm. It goes last in the chain
/// and uses only the direction of the inner step.
///
/// `beta = 0` normalizes each step by its own size, so every step rotates by exactly the
/// target angle. With the paper's running average (`beta = 0.9`) the angle is right on average
/// at equilibrium, but early in training, measured here on the ConvNet with BN, it drifts to
/// 0.3-1.5x the target within 40 steps (momentum build-up and quickly falling gradients change
/// the update size faster than the average follows), so normwd defaults to 0.
pub struct Rotational {
    /// Equilibrium angle of the wrapped optimizer (F7 / F8) at the base lr.
    pub angle: f64,
    /// Running-RMS decay.
    pub beta: f64,
}

impl Transform for Rotational {
    fn name(&self) -> &'static str {
        "rotational"
    }
    fn apply(&self, u: Tensor<2>, w: &Tensor<2>, s: &mut Slots<'_>, ctx: &Ctx) -> Tensor<2> {
        let rows = w.dims()[0];
        let init = match s.take(INIT_NORM) {
            Some(t) => t,
            None => norms(w, true),
        };
        s.put(INIT_NORM, init.clone());
        // The inner step divided by the lr: its direction, on a scale that does not follow the schedule.
        let u = u.div_scalar(ctx.lr);
        let centered = u.clone().sub(u.mean_dim(1));
        let d = project_out(centered, w, rows);
        let sq = d.clone().powi_scalar(2).sum_dim(1);
        let v = match s.take(RMS) {
            Some(v) => v.mul_scalar(self.beta).add(sq.mul_scalar(1.0 - self.beta)),
            None => sq.mul_scalar(1.0 - self.beta),
        };
        s.put(RMS, v.clone());
        let vhat = v.div_scalar(1.0 - self.beta.powi(ctx.step as i32));
        let dir = d.div(vhat.sqrt().add_scalar(1e-30));
        let theta = self.angle * ctx.lr_factor;
        // Step of length tan(theta)*||w_r|| orthogonal to w_r, then back to the initial norm:
        // the angle between w and the result is theta when ||dir_r|| = 1.
        let wn = norms(w, true);
        let moved = w.clone().add(dir.mul(wn).mul_scalar(theta.tan()));
        moved.clone().div(norms(&moved, true).add_scalar(1e-30)).mul(init).sub(w.clone())
    }
    fn slots(&self) -> Vec<SlotSpec> {
        vec![INIT_NORM, RMS]
    }
}

/// Effective-lr compensation without decay (Jane Street 2019): the gradient is multiplied by
/// `||w||^2/||w_0||^2`, so the effective learning rate `lr*c/||w||^2 = lr/||w_0||^2` follows
/// the lr schedule however much the norm grows.
pub struct CompensateElr;

impl Transform for CompensateElr {
    fn name(&self) -> &'static str {
        "compensate_elr"
    }
    fn apply(&self, u: Tensor<2>, w: &Tensor<2>, s: &mut Slots<'_>, _: &Ctx) -> Tensor<2> {
        let n2 = w.clone().powi_scalar(2).sum().reshape([1, 1]);
        let n0 = match s.take(INIT_SQ_NORM) {
            Some(t) => t,
            None => n2.clone(),
        };
        s.put(INIT_SQ_NORM, n0.clone());
        let c = n2.div(n0).into_scalar::<f64>();
        u.mul_scalar(c)
    }
    fn slots(&self) -> Vec<SlotSpec> {
        vec![INIT_SQ_NORM]
    }
}

#[cfg(test)]
mod remedy_tests {
    //! One step of each remedy against its formula written out by hand in f64, on a 2x3 weight
    //! (2 output channels) marked scale-invariant per channel.
    use super::*;
    use crate::optim::schedule::Schedule;
    use crate::optim::stats::host;
    use crate::optim::{DecayMode, OptimConfig, OptimKind, Optimizer};
    use crate::params::{DecayPolicy, Granularity, ParamInfo, Role};
    use burn::tensor::{Device, Tensor, TensorData};

    const W: [f64; 6] = [3.0, 0.0, 4.0, 1.0, 2.0, -2.0];
    const G: [f64; 6] = [0.5, -1.0, 0.2, 0.3, 0.1, 0.4];

    fn si() -> ParamInfo {
        ParamInfo::new("w", vec![2, 3], Role::Weight, Some(Granularity::Channel), DecayPolicy::All)
    }

    fn cfg(kind: OptimKind) -> OptimConfig {
        OptimConfig::of_kind(kind, 0.1, 0.05)
    }

    fn step(c: OptimConfig, info: ParamInfo, w: &[f64], g: &[f64]) -> Vec<f64> {
        let dev = Device::flex();
        let sched = Schedule::constant(1);
        let mut opt = Optimizer::new(c, sched, std::slice::from_ref(&info)).unwrap();
        opt.step = 1;
        let t = |v: &[f64]| Tensor::<2>::from_data(TensorData::new(v.iter().map(|&x| x as f32).collect::<Vec<_>>(), [2, 3]), &dev);
        host(opt.update("w", t(w), t(g), false).unwrap().0)
    }

    fn rows(v: &[f64]) -> [&[f64]; 2] {
        [&v[..3], &v[3..]]
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// `u` minus its projection on `w`, per row.
    fn project(w: &[f64], u: &[f64]) -> Vec<f64> {
        rows(w)
            .iter()
            .zip(rows(u))
            .flat_map(|(wr, ur)| {
                let c = dot(wr, ur) / dot(wr, wr);
                ur.iter().zip(wr.iter()).map(move |(u, w)| u - c * w).collect::<Vec<_>>()
            })
            .collect()
    }

    fn close(a: &[f64], b: &[f64], tol: f64) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < tol * (1.0 + y.abs()), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn sgdp_one_step() {
        // buf = g; d = g - w_hat <w_hat, g> per channel (structural: the weight is scale-invariant);
        // w' = w (1 - lr wd wd_ratio / (1 - mu)) - lr d.
        let ours = step(cfg(OptimKind::Sgdp), si(), &W, &G);
        let d = project(&W, &G);
        let expect: Vec<f64> = W.iter().zip(&d).map(|(w, d)| w * (1.0 - 0.1 * 0.05 * 0.1 / 0.1) - 0.1 * d).collect();
        close(&ours, &expect, 1e-5);
    }

    #[test]
    fn adamp_one_step_with_the_numeric_test() {
        // First Adam step: m_hat = g, v_hat = g^2, perturb = g / (|g| + eps).
        let perturb: Vec<f64> = G.iter().map(|g| g / (g.abs() + 1e-8)).collect();
        let mut c = cfg(OptimKind::Adamp);
        c.lr = 1e-3;
        c.remedy.invariance = Invariance::Numeric;
        // A gradient orthogonal to each row passes the cosine test: projected, decay x wd_ratio.
        let g_orth = project(&W, &G);
        let p_orth: Vec<f64> = g_orth.iter().map(|g| g / (g.abs() + 1e-8)).collect();
        let ours = step(c.clone(), si(), &W, &g_orth);
        let d = project(&W, &p_orth);
        let expect: Vec<f64> = W.iter().zip(&d).map(|(w, d)| w * (1.0 - 1e-3 * 0.05 * 0.1) - 1e-3 * d).collect();
        close(&ours, &expect, 1e-5);
        // G itself is far from orthogonal: no projection, full decay.
        let ours = step(c, si(), &W, &G);
        let expect: Vec<f64> = W.iter().zip(&perturb).map(|(w, p)| w * (1.0 - 1e-3 * 0.05) - 1e-3 * p).collect();
        close(&ours, &expect, 1e-5);
    }

    #[test]
    fn lars_and_lamb_one_step() {
        let (wn, gn) = (dot(&W, &W).sqrt(), dot(&G, &G).sqrt());
        let ratio = 0.001 * wn / (gn + 0.05 * wn + 1e-8);
        let expect: Vec<f64> = W.iter().zip(&G).map(|(w, g)| w - 0.1 * ratio * (g + 0.05 * w)).collect();
        close(&step(cfg(OptimKind::Lars), si(), &W, &G), &expect, 1e-5);
        // LAMB: r = m_hat / (sqrt(v_hat) + eps) + wd w, trust = ||w|| / ||r||.
        let r: Vec<f64> = W.iter().zip(&G).map(|(w, g)| g / (g.abs() + 1e-8) + 0.05 * w).collect();
        let trust = wn / dot(&r, &r).sqrt();
        let expect: Vec<f64> = W.iter().zip(&r).map(|(w, r)| w - 0.1 * trust * r).collect();
        close(&step(cfg(OptimKind::Lamb), si(), &W, &G), &expect, 1e-5);
    }

    #[test]
    fn fixed_norm_one_step() {
        // SGD step (no decay on the scale-invariant weight), then each row back to its norm.
        let mut c = cfg(OptimKind::FixedNorm);
        c.si_weight_decay = Some(0.0);
        let moved: Vec<f64> = W.iter().zip(&G).map(|(w, g)| w - 0.1 * g).collect();
        let expect: Vec<f64> = rows(&moved)
            .iter()
            .zip(rows(&W))
            .flat_map(|(m, w)| {
                let s = dot(w, w).sqrt() / dot(m, m).sqrt();
                m.iter().map(move |x| x * s).collect::<Vec<_>>()
            })
            .collect();
        close(&step(c.clone(), si(), &W, &G), &expect, 1e-5);
        c.remedy.fixed_norm_target = NormTarget::Unit;
        let ours = step(c, si(), &W, &G);
        for r in rows(&ours) {
            assert!((dot(r, r).sqrt() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn rotational_one_step() {
        // Direction: the SGD step -lr*(g + wd*w) / lr, centered per row, orthogonal to w, and
        // RMS-normalized (first step: unit norm); rotate by F7's angle; keep the row norms.
        let ours = step(cfg(OptimKind::RvSgd), si(), &W, &G);
        let theta = crate::theory::angle_sgdm(0.1, 0.05, 0.9);
        let dir: Vec<f64> = W.iter().zip(&G).map(|(w, g)| -(g + 0.05 * w)).collect();
        let centered: Vec<f64> = rows(&dir)
            .iter()
            .flat_map(|r| {
                let m = r.iter().sum::<f64>() / 3.0;
                r.iter().map(move |x| x - m).collect::<Vec<_>>()
            })
            .collect();
        let d = project(&W, &centered);
        let expect: Vec<f64> = rows(&W)
            .iter()
            .zip(rows(&d))
            .flat_map(|(w, d)| {
                let (wn, dn) = (dot(w, w).sqrt(), dot(d, d).sqrt());
                let moved: Vec<f64> = w.iter().zip(d.iter()).map(|(w, d)| w + theta.tan() * wn * d / dn).collect();
                let mn = dot(&moved, &moved).sqrt();
                moved.into_iter().map(move |x| x * wn / mn).collect::<Vec<_>>()
            })
            .collect();
        close(&ours, &expect, 1e-5);
        for (a, b) in rows(&W).iter().zip(rows(&ours)) {
            let ang = (dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())).acos();
            assert!((ang / theta - 1.0).abs() < 1e-4, "angle {ang} vs {theta}");
        }
    }

    #[test]
    fn compensation_scales_by_norm_growth() {
        // The first step has ||w|| = ||w_0||: plain SGD (decay excluded by the policy).
        let mut c = cfg(OptimKind::Sgd);
        c.momentum = 0.0;
        c.remedy.compensate_elr = true;
        let mut info = si();
        info.decayed = false;
        let expect: Vec<f64> = W.iter().zip(&G).map(|(w, g)| w - 0.1 * g).collect();
        close(&step(c, info, &W, &G), &expect, 1e-5);
    }

    #[test]
    fn bad_remedy_settings_are_refused() {
        let mut c = cfg(OptimKind::Lars);
        c.remedy.trust_coeff = -0.001;
        assert!(c.validate().unwrap_err().to_string().contains("--trust-coeff -0.001"));
        let e = Optimizer::new(cfg(OptimKind::FixedNorm), constant(), &[si()]).err().unwrap().to_string();
        assert!(e.contains("fixed-norm") && e.contains("--weight-decay"), "{e}");
        let mut c = cfg(OptimKind::RvSgd);
        c.weight_decay = 0.0;
        let e = Optimizer::new(c, constant(), &[si()]).err().unwrap().to_string();
        assert!(e.contains("rotational") && e.contains("would be 0"), "{e}");
        let mut c = cfg(OptimKind::Sgdp);
        c.decay = DecayMode::Coupled;
        assert!(c.validate().is_err());
    }

    fn constant() -> Schedule {
        Schedule::constant(1)
    }
}
