//! One probe record from the raw sums a writer measures: the engine's probes, `normwd inspect`
//! and the Python package's `Monitor` all build theirs here, so a field of the run format means
//! the same thing whoever wrote it.
//!
//! Which tensors get which prediction is decided once, in [`prediction`] (the rule and why are
//! in `docs/theory.md`, "Which tensors get a prediction"):
//! - a scale-invariant weight gets the equilibrium angle (F7/F8/F9), `||g||/||w||` (F13) and,
//!   under plain SGD, the equilibrium norm (F5): basis [`Basis::ScaleInvariant`];
//! - a decayed weight matrix that is not scale-invariant gets the equilibrium angle only, as a
//!   prediction to compare, not a theorem (Kosson et al. measured F8 to hold for a GPT's
//!   matrices whether or not they are invariant): basis [`Basis::Approximate`];
//! - nothing else gets one (norm scales and shifts, biases, embeddings, undecayed matrices).
//!
//! Adding a measured field: the field in [`crate::records::Probe`], its raw sums in [`Sums`]
//! if it needs new ones, its value in [`record`]; then each writer's sums (the engine's
//! `src/optim/stats.rs` and `fused.rs`, the Python `Monitor`'s `_after`).
//!
//! May import [`crate::roles`], [`crate::optim`], [`crate::theory`] and [`crate::records`].

use crate::optim::StepScale;
use crate::records::Probe;
use crate::roles::Role;
use crate::theory::{self, Family};

crate::choice! {
    /// What a prediction stands on (the record's `pred_basis`).
    pub enum Basis {
        /// The loss is invariant to the tensor's scale: the closed forms' assumption holds.
        ScaleInvariant = "scale-invariant",
        /// A decayed weight matrix that is not scale-invariant: the closed form is the
        /// rotational equilibrium Kosson et al. measured on such matrices, an approximation.
        Approximate = "approximate",
    }
}

/// The raw sums a writer measures on one tensor at one update, in float64.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sums {
    /// Parameter path.
    pub path: String,
    /// `||w||` before the update.
    pub norm: f64,
    /// `||g||` (the raw gradient).
    pub grad_norm: f64,
    /// `<w, g>`.
    pub dot_wg: f64,
    /// `<w, w'>` with `w'` after the update.
    pub dot_ww: f64,
    /// `||w'||`.
    pub norm_after: f64,
    /// Per output channel `(||w_r||, ||g_r||, <w_r,g_r>, <w_r,w'_r>, ||w'_r||)`; empty where
    /// the writer does not measure channels.
    pub rows: Vec<[f64; 5]>,
}

/// What a tensor is, as the prediction rule needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorFacts {
    /// Its role.
    pub role: Role,
    /// Its number of dimensions.
    pub ndim: usize,
    /// Whether the loss is invariant to its scale.
    pub scale_invariant: bool,
}

/// The settings a tensor is stepped with at one update, as the closed forms take them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSettings {
    /// The optimizer's family (`Other` for one without a closed form).
    pub family: Family,
    /// How its step scales with the gradient; `None` for an optimizer normwd does not know,
    /// whose effective lr is not reported (NaN) rather than guessed.
    pub step: Option<StepScale>,
    /// The tensor's learning rate at this step.
    pub lr: f64,
    /// The decay acting on it at this step ([`theory::decay_acting`]: corrected, cautious).
    pub weight_decay: f64,
}

/// The predictions a tensor gets at one step, and what they stand on.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Prediction {
    /// What they stand on; `None`: the tensor gets no prediction.
    pub basis: Option<Basis>,
    /// Equilibrium angle per step (F7/F8/F9).
    pub angle: Option<f64>,
    /// Equilibrium `||g||/||w||` (F13), scale-invariant weights only.
    pub ratio: Option<f64>,
    /// Whether F5's equilibrium norm applies (plain SGD without momentum, scale-invariant).
    pub norm_applies: bool,
}

/// Whether a tensor is probed: weights (the tensors the theory is about) and norm-layer scales
/// (to show what decaying them does).
pub fn probed(role: Role) -> bool {
    matches!(role, Role::Weight | Role::NormScale)
}

/// The predictions tensor `t` gets under `s`: the one rule of which tensors get which (module
/// doc). A basis is given only with an angle (no closed form, or no decay: no basis).
pub fn prediction(t: TensorFacts, s: &StepSettings) -> Prediction {
    let basis = if t.scale_invariant {
        Basis::ScaleInvariant
    } else if t.role == Role::Weight && t.ndim >= 2 && s.weight_decay > 0.0 {
        Basis::Approximate
    } else {
        return Prediction::default();
    };
    let Some(angle) = theory::predicted_angle(s.family, s.lr, s.weight_decay) else { return Prediction::default() };
    let exact = basis == Basis::ScaleInvariant;
    Prediction {
        basis: Some(basis),
        angle: Some(angle),
        ratio: if exact { theory::grad_weight_ratio(s.family, s.lr, s.weight_decay) } else { None },
        norm_applies: exact && matches!(s.family, Family::Sgd { mu, .. } if mu == 0.0),
    }
}

/// The effective learning rate of a tensor of norm `norm` under `s` (NaN for an unknown
/// optimizer or a zero norm).
pub fn effective_lr(s: &StepSettings, norm: f64) -> f64 {
    match s.step {
        Some(step) if norm > 0.0 => step.effective_lr(s.lr, norm),
        _ => f64::NAN,
    }
}

/// The probe record of tensor `t` at update `step` from a writer's sums `m`, with the
/// predictions of [`prediction`]. `eff_lr` replaces the effective lr where a remedy sets it
/// (effective-lr compensation: `lr/||w_0||^2`).
pub fn record(step: u64, t: TensorFacts, s: &StepSettings, m: &Sums, eff_lr: Option<f64>) -> Probe {
    let p = prediction(t, s);
    let per_channel = t.scale_invariant && m.rows.len() > 1;
    Probe {
        step,
        path: m.path.clone(),
        norm: m.norm,
        grad_norm: m.grad_norm,
        eff_lr: eff_lr.unwrap_or_else(|| effective_lr(s, m.norm)),
        angle: theory::angle_from_dot(m.dot_ww, m.norm, m.norm_after),
        cos_wg: if m.norm > 0.0 && m.grad_norm > 0.0 { m.dot_wg / (m.norm * m.grad_norm) } else { 0.0 },
        pred_angle: p.angle,
        pred_norm: p.norm_applies.then(|| theory::equilibrium_norm_sgd(m.grad_norm * m.norm, s.lr, s.weight_decay)),
        pred_ratio: p.ratio,
        pred_basis: p.basis.map(|b| b.name().to_string()),
        scale_invariant: t.scale_invariant,
        lr: s.lr,
        channel_norm: if per_channel { m.rows.iter().map(|r| r[0]).collect() } else { Vec::new() },
        channel_angle: if per_channel { m.rows.iter().map(|r| theory::angle_from_dot(r[3], r[0], r[4])).collect() } else { Vec::new() },
        role: Some(t.role.name().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SGDM: Family = Family::Sgd { mu: 0.9, coupled: true };

    fn settings(family: Family, weight_decay: f64) -> StepSettings {
        StepSettings { family, step: Some(StepScale::Gradient), lr: 0.1, weight_decay }
    }

    fn facts(role: Role, ndim: usize, scale_invariant: bool) -> TensorFacts {
        TensorFacts { role, ndim, scale_invariant }
    }

    /// The rule: invariant weights exactly, other decayed matrices approximately, nothing else;
    /// no closed form or no decay gives no prediction and no basis.
    #[test]
    fn which_tensors_get_which_prediction() {
        let s = settings(SGDM, 5e-4);
        let si = prediction(facts(Role::Weight, 4, true), &s);
        assert_eq!(si.basis, Some(Basis::ScaleInvariant));
        assert!((si.angle.unwrap() - theory::angle_sgdm(0.1, 5e-4, 0.9)).abs() < 1e-15);
        assert!(si.ratio.is_some() && !si.norm_applies);
        let matrix = prediction(facts(Role::Weight, 2, false), &s);
        assert_eq!((matrix.basis, matrix.angle, matrix.ratio), (Some(Basis::Approximate), si.angle, None));
        for (role, ndim) in [(Role::NormScale, 1), (Role::Bias, 1), (Role::Embedding, 2), (Role::Gain, 1)] {
            assert_eq!(prediction(facts(role, ndim, false), &s), Prediction::default(), "{role:?}");
        }
        assert_eq!(prediction(facts(Role::Weight, 2, false), &settings(SGDM, 0.0)), Prediction::default());
        assert_eq!(prediction(facts(Role::Weight, 2, true), &settings(Family::Other, 5e-4)), Prediction::default());
        assert_eq!(prediction(facts(Role::Weight, 2, true), &settings(Family::AdamL2, 5e-4)), Prediction::default());
        assert!(prediction(facts(Role::Weight, 2, true), &settings(Family::Sgd { mu: 0.0, coupled: true }, 5e-4)).norm_applies);
    }

    /// A record from sums: the angle and cosine from the dots, the effective lr by the step's
    /// scale (NaN for an unknown optimizer, so it is never SGD's by default).
    #[test]
    fn record_from_sums() {
        let m = Sums { path: "w".into(), norm: 2.0, grad_norm: 0.5, dot_wg: 0.0, dot_ww: 4.0, norm_after: 2.0, rows: vec![] };
        let r = record(7, facts(Role::Weight, 2, true), &settings(SGDM, 5e-4), &m, None);
        assert_eq!((r.step, r.eff_lr, r.angle, r.cos_wg), (7, 0.025, 0.0, 0.0));
        assert_eq!(r.pred_basis.as_deref(), Some("scale-invariant"));
        let adam = StepSettings { step: Some(StepScale::PerElement), ..settings(SGDM, 5e-4) };
        assert_eq!(record(7, facts(Role::Weight, 2, true), &adam, &m, None).eff_lr, 0.05);
        let unknown = StepSettings { step: None, family: Family::Other, ..settings(SGDM, 5e-4) };
        let r = record(7, facts(Role::Weight, 2, true), &unknown, &m, None);
        assert!(r.eff_lr.is_nan() && r.pred_angle.is_none() && r.pred_basis.is_none());
        let line = crate::records::Record::Probe(r).to_line();
        assert!(matches!(crate::records::Record::parse(&line), Some(crate::records::Record::Probe(p)) if p.eff_lr.is_nan()), "{line}");
    }
}
