//! Whether a scale-invariant weight is at equilibrium, from checkpoints at any spacing.
//!
//! Two readings, each used where it is reliable (tests/theory.rs measures both on real training):
//! - over spans of at least `0.3/(eta*lambda_eff)` steps, the norm: at equilibrium it is
//!   stationary, while a norm whose effective learning rate is 20% off equilibrium changes over
//!   `span` steps by at least `(1 - 1/1.2)(1 - exp(-2*eta*lambda_eff*span))` of `||w||^2` on its
//!   way there (F6). (Over shorter spans the norm's own step-to-step wander is as large as that.)
//! - over shorter spans, the angles between consecutive checkpoints against F17 for the same
//!   gap, averaged over up to the last 30 gaps, within 20%, using only gaps of at most
//!   `0.05/(eta*lambda_eff)` steps: F17 holds on real runs there (1 step: 2%, 5 steps: 17%),
//!   while over longer gaps real gradients, which pull the weight back toward where it was,
//!   rotate it less than F17's noise-only model (a third of F17's `-ln cos` over one epoch).
//!   Other series give no verdict.
//!
//! `eta*lambda_eff` is the relaxation rate: `eta*lambda/(1-mu)` with L2 in the gradient (the decay
//! passes through the momentum), `eta*lambda` decoupled.

/// The verdict on one tensor and what it was read from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// At equilibrium (within the 20% band).
    pub at_equilibrium: bool,
    /// `"angle"` (consecutive gaps against F17) or `"norm"` (stationary norm).
    pub basis: &'static str,
}

/// The share of a norm's distance to equilibrium that a 20% effective-lr error implies.
const BAND: f64 = 1.0 - 1.0 / 1.2;

/// Reads the verdict from checkpoints at `steps` with norms `norms` and consecutive angles
/// `angles`; `gap_angle(i)` is F17's angle for gap `i` (between checkpoints `i` and `i+1`) and
/// `rate` the relaxation rate per step. `None` when the series gives nothing to compare.
pub fn verdict(steps: &[u64], norms: &[f64], angles: &[f64], rate: f64, gap_angle: impl Fn(usize) -> Option<f64>) -> Option<Verdict> {
    let last = steps.len().checked_sub(1).filter(|&l| l >= 1)?;
    if rate.is_nan() || rate <= 0.0 {
        return None;
    }
    // The latest checkpoint far enough back for the norm to have moved, were it off.
    if let Some(j) = (0..last).rev().find(|&j| rate * (steps[last] - steps[j]) as f64 >= 0.3) {
        let span = (steps[last] - steps[j]) as f64;
        let change = ((norms[last] / norms[j]).powi(2) - 1.0).abs();
        let threshold = BAND * (1.0 - (-2.0 * rate * span).exp());
        return Some(Verdict { at_equilibrium: change < threshold, basis: "norm" });
    }
    // Short span: the angles of up to the last 30 short gaps against F17 for each gap.
    let from = last.saturating_sub(30);
    let ratios: Vec<f64> = (from..last)
        .filter(|&i| rate * (steps[i + 1] - steps[i]) as f64 <= 0.05)
        .filter_map(|i| gap_angle(i).filter(|p| *p > 0.0).map(|p| angles[i] / p))
        .collect();
    (!ratios.is_empty()).then(|| {
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        Verdict { at_equilibrium: (mean - 1.0).abs() < 0.2, basis: "angle" }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reading_where_it_applies() {
        // F17 for gap `i` of a series at `steps`.
        let f13 = |steps: &'static [u64]| move |i: usize| Some(0.03 * ((steps[i + 1] - steps[i]) as f64).sqrt());
        // Short span, angles as F17 says: yes, read from the angles; 40% off: no.
        let v = verdict(&[0, 1, 2], &[1.0, 1.0, 1.0], &[0.031, 0.029], 0.01, f13(&[0, 1, 2])).unwrap();
        assert_eq!(v, Verdict { at_equilibrium: true, basis: "angle" });
        assert!(!verdict(&[0, 1, 2], &[1.0, 1.0, 1.0], &[0.018, 0.018], 0.01, f13(&[0, 1, 2])).unwrap().at_equilibrium);
        // An epoch apart: a stationary norm is at equilibrium whatever the angle over the gap.
        let v = verdict(&[0, 78, 156], &[5.0, 5.1, 5.05], &[0.7, 0.7], 0.01, f13(&[0, 78, 156])).unwrap();
        assert_eq!(v, Verdict { at_equilibrium: true, basis: "norm" });
        // A norm still relaxing (down 20% over an epoch) is not.
        assert!(!verdict(&[0, 78, 156], &[6.0, 5.0, 4.0], &[0.3, 0.3], 0.01, f13(&[0, 78, 156])).unwrap().at_equilibrium);
        assert!(verdict(&[0, 78], &[1.0, 1.0], &[0.1], 0.0, f13(&[0, 78])).is_none(), "no decay, no equilibrium");
        // Gaps too long for F17 and a span too short for the norm: no verdict.
        assert!(verdict(&[0, 10, 20], &[1.0, 1.0, 1.0], &[0.1, 0.1], 0.01, f13(&[0, 10, 20])).is_none());
    }
}
