//! The literature's answers to the weight-decay / normalization interaction, each one small
//! transform that composes with the plain optimizers of [`super::transform`]:
//!
//! - [`Project`]: SGDP / AdamP (Heo et al., ICLR 2021), remove the radial part of the update on
//!   scale-invariant tensors and shrink their decay by `wd_ratio`.
//! - [`TrustRatio`] and [`LambTrust`]: LARS (You et al. 2017, LARC clipping as in NVIDIA apex)
//!   and LAMB (You et al. 2020) layer-wise trust ratios.
//! - [`FixedNorm`]: van Laarhoven's fix (2017), keep each scale-invariant weight at a fixed
//!   norm so its effective learning rate is the learning rate.
//! - [`Rotational`]: Kosson et al. (2024, "Rotational equilibrium"), RV-SGDM / RV-AdamW: rotate
//!   each output channel by the equilibrium angle from the first step.
//! - [`CompensateElr`]: Jane Street (2019), scale the gradient by `||w||^2/||w_0||^2` so the
//!   effective learning rate follows the schedule without any decay.

use super::transform::{Ctx, Slots, Transform};
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

/// SGDP / AdamP's projection (Heo et al. 2021): on scale-invariant tensors, remove the radial
/// component of the update and multiply the decoupled decay by `wd_ratio`. With
/// `Invariance::Numeric` a tensor is scale-invariant when `max |cos(g, w)| < delta/sqrt(dim)`,
/// tried per output channel, then for the whole tensor (the reference implementation); with
/// `Structural`, the flag and granularity from `params` decide. 1-D tensors are never projected.
pub struct Project {
    /// The cosine test's `delta` (0.1).
    pub delta: f64,
    /// Decay multiplier on projected tensors (0.1).
    pub wd_ratio: f64,
    /// Where invariance comes from.
    pub invariance: Invariance,
}

impl Transform for Project {
    fn name(&self) -> &'static str {
        "project"
    }
    fn apply(&self, u: Tensor<2>, w: &Tensor<2>, _: &mut Slots<'_>, ctx: &Ctx) -> Tensor<2> {
        if ctx.info.shape.len() < 2 {
            return u;
        }
        let [rows, cols] = w.dims();
        let groups = match self.invariance {
            Invariance::Structural => ctx.info.scale_invariant.then(|| groups_of(ctx.info.granularity, rows)),
            Invariance::Numeric => {
                if max_abs_cos(ctx.grad, w, rows) < self.delta / (cols as f64).sqrt() {
                    Some(rows)
                } else if max_abs_cos(ctx.grad, w, 1) < self.delta / ((rows * cols) as f64).sqrt() {
                    Some(1)
                } else {
                    None
                }
            }
        };
        match groups {
            Some(g) => {
                ctx.wd_scale.set(self.wd_ratio);
                project_out(u, w, g)
            }
            None => u,
        }
    }
}

/// LARS's layer-wise trust ratio (as NVIDIA apex's LARC): adds `wd*w` to the gradient and
/// scales it by `k*||w|| / (||g|| + wd*||w|| + eps)`; with `clip`, by `min(ratio/lr, 1)`.
/// Tensors that are not weights (norm scales/shifts, biases) skip the adaptation.
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
        let u = if ctx.weight_decay > 0.0 { u.add(w.clone().mul_scalar(ctx.weight_decay)) } else { u };
        if ctx.info.role != crate::params::Role::Weight {
            return u;
        }
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

/// LAMB's trust ratio on the Adam direction plus decoupled decay: `r = adam + wd*w`, scaled by
/// `||w|| / ||r||` (1 when either is zero). Non-weights skip the ratio.
pub struct LambTrust;

impl Transform for LambTrust {
    fn name(&self) -> &'static str {
        "lamb_trust"
    }
    fn apply(&self, u: Tensor<2>, w: &Tensor<2>, _: &mut Slots<'_>, ctx: &Ctx) -> Tensor<2> {
        let r = if ctx.weight_decay > 0.0 { u.add(w.clone().mul_scalar(ctx.weight_decay)) } else { u };
        if ctx.info.role != crate::params::Role::Weight {
            return r;
        }
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

/// van Laarhoven's fix: after the step, rescale every scale-invariant weight (per output channel
/// or per tensor) back to its target norm. The chain's output is the delta to that point.
pub struct FixedNorm {
    /// Per output channel (`true`) or per tensor.
    pub per_channel: bool,
    /// Target norm.
    pub target: NormTarget,
}

impl Transform for FixedNorm {
    fn name(&self) -> &'static str {
        "fixed_norm"
    }
    fn apply(&self, u: Tensor<2>, w: &Tensor<2>, s: &mut Slots<'_>, ctx: &Ctx) -> Tensor<2> {
        if !ctx.info.scale_invariant {
            return u;
        }
        let target = match s.take("target_norm") {
            Some(t) => t,
            None => match self.target {
                NormTarget::Init => norms(w, self.per_channel),
                NormTarget::Unit => norms(w, self.per_channel).mul_scalar(0.0).add_scalar(1.0),
            },
        };
        s.put("target_norm", target.clone());
        let moved = w.clone().add(u);
        let scaled = moved.clone().div(norms(&moved, self.per_channel).add_scalar(1e-30)).mul(target);
        scaled.sub(w.clone())
    }
}

/// The rotational wrapper (Kosson et al. 2024, RV-SGDM / RV-AdamW). On scale-invariant
/// tensors it replaces the inner optimizer's step: per output channel it makes the inner step
/// zero-mean and orthogonal to `w`, normalizes it by a running RMS of its size (decay `beta`,
/// bias-corrected), rotates `w` by `angle * lr_factor` and rescales to the stored initial norm.
/// It goes last in the chain and uses only the direction of the inner step.
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
        if !ctx.info.scale_invariant || ctx.info.shape.len() < 2 {
            return u;
        }
        let rows = w.dims()[0];
        let init = match s.take("init_norm") {
            Some(t) => t,
            None => norms(w, true),
        };
        s.put("init_norm", init.clone());
        // The inner step divided by the lr: its direction, on a scale that does not follow the schedule.
        let u = u.div_scalar(ctx.lr);
        let centered = u.clone().sub(u.mean_dim(1));
        let d = project_out(centered, w, rows);
        let sq = d.clone().powi_scalar(2).sum_dim(1);
        let v = match s.take("rms") {
            Some(v) => v.mul_scalar(self.beta).add(sq.mul_scalar(1.0 - self.beta)),
            None => sq.mul_scalar(1.0 - self.beta),
        };
        s.put("rms", v.clone());
        let vhat = v.div_scalar(1.0 - self.beta.powi(ctx.step as i32));
        let dir = d.div(vhat.sqrt().add_scalar(1e-30));
        let theta = self.angle * ctx.lr_factor;
        // Step of length tan(theta)*||w_r|| orthogonal to w_r, then back to the initial norm:
        // the angle between w and the result is theta when ||dir_r|| = 1.
        let wn = norms(w, true);
        let moved = w.clone().add(dir.mul(wn).mul_scalar(theta.tan()));
        moved.clone().div(norms(&moved, true).add_scalar(1e-30)).mul(init).sub(w.clone())
    }
}

/// Effective-lr compensation without decay (Jane Street 2019): on scale-invariant tensors the
/// gradient is multiplied by `||w||^2/||w_0||^2`, so the effective learning rate
/// `lr*c/||w||^2 = lr/||w_0||^2` follows the lr schedule however much the norm grows.
pub struct CompensateElr;

impl Transform for CompensateElr {
    fn name(&self) -> &'static str {
        "compensate_elr"
    }
    fn apply(&self, u: Tensor<2>, w: &Tensor<2>, s: &mut Slots<'_>, ctx: &Ctx) -> Tensor<2> {
        if !ctx.info.scale_invariant {
            return u;
        }
        let n2 = w.clone().powi_scalar(2).sum().reshape([1, 1]);
        let n0 = match s.take("init_sq_norm") {
            Some(t) => t,
            None => n2.clone(),
        };
        s.put("init_sq_norm", n0.clone());
        let c = n2.div(n0).into_scalar::<f64>();
        u.mul_scalar(c)
    }
}
