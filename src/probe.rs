//! Per-layer measurements taken during an update: weight norm, gradient norm, effective
//! learning rate, angular update, `cos(w, g)`, and the theory's predictions beside them.
//! The raw sums come from the optimizer step ([`crate::optim::UpdateStats`], the core's
//! [`normwd_core::probe::Sums`]), computed on the device in one reduction per tensor, so
//! probing costs one small host transfer per tensor; the record itself, and which tensor gets
//! which prediction, are the core's ([`normwd_core::probe`]), shared with `inspect` and the
//! Python package.
//!
//! May import `optim`, `params` and the core's theory.

use crate::optim::{OptimConfig, UpdateStats};
use crate::params::ParamInfo;
pub use normwd_core::probe::{StepSettings, TensorFacts};
pub use normwd_core::records::Probe;

/// What the prediction rule needs to know of a tensor.
pub fn facts(info: &ParamInfo) -> TensorFacts {
    TensorFacts { role: info.role, ndim: info.shape.len(), scale_invariant: info.scale_invariant, shape: (info.rows(), info.cols()) }
}

/// The settings tensor `info` is stepped with at a step with lr `lr` and schedule factor
/// `lr_factor`, the decay being the one acting then ([`OptimConfig::effective_decay`]:
/// corrected, cautious).
pub fn settings(c: &OptimConfig, info: &ParamInfo, lr: f64, lr_factor: f64) -> StepSettings {
    StepSettings { family: c.family_for(info), step: Some(c.kind.facts().step), lr, weight_decay: c.effective_decay(info, lr_factor) }
}

/// Builds the probe record of one weight tensor from the update's raw sums, at a step with lr
/// `lr` and schedule factor `lr_factor`. With `init_sq_norm` (effective-lr compensation, which
/// multiplies the gradient by `||w||^2/||w_0||^2`), the effective lr is `lr/||w_0||^2`.
pub fn record(step: u64, c: &OptimConfig, info: &ParamInfo, lr: f64, lr_factor: f64, s: &UpdateStats, init_sq_norm: Option<f64>) -> Probe {
    let eff_lr = init_sq_norm.filter(|_| info.scale_invariant).map(|n0| lr / n0);
    normwd_core::probe::record(step, facts(info), &settings(c, info, lr, lr_factor), s, eff_lr)
}

/// Whether a tensor is probed ([`normwd_core::probe::probed`]).
pub fn probed(info: &ParamInfo) -> bool {
    normwd_core::probe::probed(info.role)
}

/// Default probe interval: about 200 points over the run, and at most every 3rd step, which
/// keeps the cost under 10% of step time even for the MLP (about 20% when probing every step,
/// see `normwd bench --probe`).
pub fn default_every(total_steps: usize) -> usize {
    (total_steps / 200).max(3)
}
