//! Per-layer measurements taken during an update: weight norm, gradient norm, effective
//! learning rate, angular update, `cos(w, g)`, and the theory's predictions beside them.
//! The raw sums come from the optimizer step ([`crate::optim::UpdateStats`]), computed on the
//! device in one reduction per tensor, so probing costs one small host transfer per tensor.
//!
//! May import `optim`, `params` and the core's theory.

use crate::optim::{OptimConfig, UpdateStats};
use crate::params::{ParamInfo, Role};
use crate::theory::{self, Family};
pub use normwd_core::records::Probe;

/// The theory's family for an optimizer configuration ([`OptimConfig::family`]).
pub fn family(c: &OptimConfig) -> Family {
    c.family()
}

/// Predicted equilibrium angle of a tensor at a step with lr `lr` and schedule factor
/// `lr_factor`: every scale-invariant weight, and every decayed weight matrix besides (Kosson et
/// al. measured F8 to hold for a GPT's matrices whether or not they are scale-invariant; for
/// those it is a prediction to compare, not a theorem). The decay is the one acting at that
/// step ([`OptimConfig::effective_decay`]: corrected, cautious).
pub fn predicted_angle(c: &OptimConfig, info: &ParamInfo, lr: f64, lr_factor: f64) -> Option<f64> {
    let decayed_matrix = info.role == Role::Weight && info.shape.len() >= 2 && c.weight_decay_for(info) > 0.0;
    if !(info.scale_invariant || decayed_matrix) {
        return None;
    }
    theory::predicted_angle(family(c), lr, c.effective_decay(info, lr_factor))
}

/// Builds the probe record of one weight tensor from the update's raw sums, at a step with lr
/// `lr` and schedule factor `lr_factor`. With `init_sq_norm` (effective-lr compensation, which
/// multiplies the gradient by `||w||^2/||w_0||^2`), the effective lr is `lr/||w_0||^2`.
pub fn record(step: u64, c: &OptimConfig, info: &ParamInfo, lr: f64, lr_factor: f64, s: &UpdateStats, init_sq_norm: Option<f64>) -> Probe {
    let adam = c.kind.adam_like();
    let eff_lr = match init_sq_norm {
        Some(n0) if info.scale_invariant => lr / n0,
        _ if adam => theory::effective_lr_adam(lr, s.norm),
        _ => theory::effective_lr_sgd(lr, s.norm),
    };
    let wd = c.effective_decay(info, lr_factor);
    let pred_norm = (info.scale_invariant && !adam && c.momentum == 0.0 && wd > 0.0)
        .then(|| theory::equilibrium_norm_sgd(s.grad_norm * s.norm, lr, wd));
    let pred_ratio = if info.scale_invariant { theory::grad_weight_ratio(family(c), lr, wd) } else { None };
    let per_channel = info.scale_invariant && s.rows.len() > 1;
    Probe {
        step,
        path: s.path.clone(),
        norm: s.norm,
        grad_norm: s.grad_norm,
        eff_lr,
        angle: theory::angle_from_dot(s.dot_ww, s.norm, s.norm_after),
        cos_wg: if s.norm > 0.0 && s.grad_norm > 0.0 { s.dot_wg / (s.norm * s.grad_norm) } else { 0.0 },
        pred_angle: predicted_angle(c, info, lr, lr_factor),
        pred_norm,
        pred_ratio,
        scale_invariant: info.scale_invariant,
        lr,
        channel_norm: if per_channel { s.rows.iter().map(|r| r[0]).collect() } else { Vec::new() },
        channel_angle: if per_channel { s.rows.iter().map(|r| theory::angle_from_dot(r[3], r[0], r[4])).collect() } else { Vec::new() },
        role: Some(info.role.name().into()),
    }
}

/// Whether a tensor is probed: weights (the tensors the theory is about) and norm-layer
/// scales (to show what decaying them does).
pub fn probed(info: &ParamInfo) -> bool {
    matches!(info.role, Role::Weight | Role::NormScale)
}

/// Default probe interval: about 200 points over the run, and at most every 3rd step, which
/// keeps the cost under 10% of step time even for the MLP (about 20% when probing every step,
/// see `normwd bench --probe`).
pub fn default_every(total_steps: usize) -> usize {
    (total_steps / 200).max(3)
}
