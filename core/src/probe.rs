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
    /// `(||d||^2, <w, d>)` of the update `d = w' - w` where the writer measures it: the angle
    /// is then taken from it ([`theory::angle_from_step`]), precise at any size.
    pub step: Option<[f64; 2]>,
    /// The same per output channel (empty where not measured).
    pub row_steps: Vec<[f64; 2]>,
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
    /// Its `[rows, cols]` view (output channels by the rest): Muon's angle depends on it.
    pub shape: (usize, usize),
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
    let Some(angle) = theory::predicted_angle(s.family, s.lr, s.weight_decay, Some(t.shape)) else { return Prediction::default() };
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
        angle: match m.step {
            Some([dd, wd]) => theory::angle_from_step(m.norm * m.norm, dd, wd),
            None => theory::angle_from_dot(m.dot_ww, m.norm, m.norm_after),
        },
        cos_wg: if m.norm > 0.0 && m.grad_norm > 0.0 { m.dot_wg / (m.norm * m.grad_norm) } else { 0.0 },
        pred_angle: p.angle,
        pred_norm: p.norm_applies.then(|| theory::equilibrium_norm_sgd(m.grad_norm * m.norm, s.lr, s.weight_decay)),
        pred_ratio: p.ratio,
        pred_basis: p.basis.map(|b| b.name().to_string()),
        scale_invariant: t.scale_invariant,
        lr: s.lr,
        channel_norm: if per_channel { m.rows.iter().map(|r| r[0]).collect() } else { Vec::new() },
        channel_angle: match (per_channel, m.row_steps.len() == m.rows.len()) {
            (false, _) => Vec::new(),
            (true, true) => m.rows.iter().zip(&m.row_steps).map(|(r, [dd, wd])| theory::angle_from_step(r[0] * r[0], *dd, *wd)).collect(),
            (true, false) => m.rows.iter().map(|r| theory::angle_from_dot(r[3], r[0], r[4])).collect(),
        },
        role: Some(t.role.name().into()),
        channel_norm_q: Vec::new(),
        channel_angle_q: Vec::new(),
    }
}

crate::choice! {
    /// How a probe record carries a scale-invariant tensor's per-channel measurements: a
    /// ResNet-50 has 26,000 channels, whose full arrays make a megabyte per probe step.
    pub enum Channels {
        /// Every channel's norm and angle (`channel_norm`, `channel_angle`).
        Full = "full",
        /// Their quantiles `[min, 10%, median, 90%, max]` (`channel_norm_q`,
        /// `channel_angle_q`): ten numbers whatever the width.
        Summary = "summary",
        /// Neither.
        Omit = "none",
    }
}

/// `[min, 10%, median, 90%, max]` of `v` (nearest rank; empty for an empty `v`; NaN sorts last).
pub fn quantiles(v: &[f64]) -> Vec<f64> {
    if v.is_empty() {
        return Vec::new();
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| s[((q * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)];
    vec![s[0], at(0.1), at(0.5), at(0.9), s[s.len() - 1]]
}

impl Probe {
    /// Keeps the per-channel measurements as `c` says (the record is otherwise unchanged).
    pub fn keep_channels(&mut self, c: Channels) {
        match c {
            Channels::Full => {}
            Channels::Summary => {
                self.channel_norm_q = quantiles(&std::mem::take(&mut self.channel_norm));
                self.channel_angle_q = quantiles(&std::mem::take(&mut self.channel_angle));
            }
            Channels::Omit => {
                self.channel_norm.clear();
                self.channel_angle.clear();
            }
        }
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
        TensorFacts { role, ndim, scale_invariant, shape: (4, 4) }
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

    /// The angle from the update's own sums keeps its relative precision where the arccosine
    /// of the dot product loses it: a turn of 1e-9 reads 0 from the dots (the cosine rounds to
    /// 1) and 1e-9 to 1e-15 relative from the step; at a large angle the two agree.
    #[test]
    fn the_angle_from_the_step_is_precise_at_any_size() {
        // w = (3, 4), d = (-4t, 3t): orthogonal, ||d|| = 5t = t ||w||, so the angle is atan(t).
        for t in [1e-12, 1e-9, 1e-6, 1e-3, 0.5] {
            let (w, d) = ([3.0f64, 4.0], [-4.0 * t, 3.0 * t]);
            let exact = f64::atan(t);
            let w2 = [w[0] + d[0], w[1] + d[1]];
            let step = theory::angle_from_step(25.0, d[0] * d[0] + d[1] * d[1], w[0] * d[0] + w[1] * d[1]);
            assert!((step - exact).abs() <= 1e-15 * exact, "t = {t}: {step} vs {exact}");
            let dots = theory::angle_from_dot(w[0] * w2[0] + w[1] * w2[1], 5.0, (w2[0] * w2[0] + w2[1] * w2[1]).sqrt());
            if t >= 1e-3 {
                assert!((dots - exact).abs() < 1e-9 * exact.max(1e-3), "t = {t}");
            } else if t <= 1e-9 {
                assert!((dots - exact).abs() > 0.5 * exact, "t = {t}: the dots happened to be precise: {dots}");
            }
        }
        // A step along w (decay alone, d = -1e-3 w) turns it by nothing but rounding.
        assert!(theory::angle_from_step(25.0, 25.0e-6, -25.0e-3) < 1e-9);
    }

    /// Bounded records: the summary keeps five quantiles of each per-channel array, whatever
    /// the width; "none" keeps neither; "full" both arrays.
    #[test]
    fn per_channel_measurements_are_kept_as_asked() {
        let rows: Vec<[f64; 5]> = (0..101).map(|i| [1.0 + i as f64, 0.0, 0.0, (1.0 + i as f64).powi(2), 1.0 + i as f64]).collect();
        let m = Sums {
            path: "w".into(),
            norm: 10.0,
            grad_norm: 1.0,
            dot_wg: 0.0,
            dot_ww: 100.0,
            norm_after: 10.0,
            rows,
            step: None,
            row_steps: vec![],
        };
        let full = record(1, facts(Role::Weight, 2, true), &settings(SGDM, 5e-4), &m, None);
        assert_eq!(full.channel_norm.len(), 101);
        let mut summary = full.clone();
        summary.keep_channels(Channels::Summary);
        assert!(summary.channel_norm.is_empty() && summary.channel_angle.is_empty());
        assert_eq!(summary.channel_norm_q, vec![1.0, 11.0, 51.0, 91.0, 101.0]);
        assert_eq!(summary.channel_angle_q.len(), 5);
        let line = crate::records::Record::Probe(summary).to_line();
        assert!(line.len() < 600 && line.contains("\"channel_norm_q\":[1.0,11.0,51.0,91.0,101.0]"), "{line}");
        let mut none = full.clone();
        none.keep_channels(Channels::Omit);
        assert!(none.channel_norm.is_empty() && none.channel_norm_q.is_empty());
        assert!(quantiles(&[]).is_empty());
    }

    /// A record from sums: the angle and cosine from the dots, the effective lr by the step's
    /// scale (NaN for an unknown optimizer, so it is never SGD's by default).
    #[test]
    fn record_from_sums() {
        let m = Sums {
            path: "w".into(),
            norm: 2.0,
            grad_norm: 0.5,
            dot_wg: 0.0,
            dot_ww: 4.0,
            norm_after: 2.0,
            rows: vec![],
            step: None,
            row_steps: vec![],
        };
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
