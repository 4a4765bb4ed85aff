//! Whether a tensor is decayed: read from the optimizer state when the checkpoints hold it,
//! otherwise from its norms against the shrink that decay alone would cause.
//!
//! Decay alone multiplies a tensor by `1 - r` per step, `r` the decay rate of
//! [`normwd_core::optim::Hyper::decay_rate`] (`lr*wd`, with L2 in an SGD gradient divided by
//! `1 - momentum`, since at steady state the momentum buffer carries `wd*w/(1-mu)`). Over the
//! series it takes the norm to `exp(-sum r_i k_i)` of its first value, the decay-only factor. A
//! norm that shrinks by that factor within [`TOLERANCE`], at every gap, looks decayed. One that
//! holds still shows no sign of decay (a decayed tensor that its gradient holds at equilibrium
//! also holds still, so this is not "not decayed"). Anything else moves by its gradient more than
//! by decay, and tells nothing; neither does a series over which decay alone would remove less
//! than [`MIN_SHRINK`].
//!
//! Measured on a timm ResNet trained here (tests/fixtures/timm): the gammas before a conv in a
//! run that decays everything shrink by 0.75-1.0 of the decay-only log-shrink over 60 steps;
//! the same gammas undecayed move by 0.0-0.2 of it; gammas on the residual path move by 2-10
//! times it, either way.

use serde::Serialize;

/// The band, as a share of the decay-only log-shrink, within which a shrink counts as decay's.
pub const TOLERANCE: f64 = 0.25;

/// The least decay-only shrink of the norm over the series (0.5%) that a verdict is read from:
/// below it the gradient's own moves of a gamma (0.1-0.3% per 30 steps on the fixture's
/// stationary ones) are as large as the band.
pub const MIN_SHRINK: f64 = 0.005;

/// What a reading concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decayed {
    /// The optimizer state puts it in a group with weight decay > 0.
    Yes,
    /// The optimizer state puts it in a group with weight decay 0.
    No,
    /// Its norm shrinks as decay alone would shrink it.
    LooksDecayed,
    /// Its norm holds still where decay alone would shrink it.
    NoSign,
    /// The series does not tell.
    CannotTell,
}

/// Whether a tensor is decayed, what was read and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecayReading {
    /// The conclusion.
    pub decayed: Decayed,
    /// `optimizer` (the saved state) or `norms` (the shrink test).
    pub source: &'static str,
    /// The norm's last value over its first (norms only).
    pub observed: Option<f64>,
    /// The factor decay alone would take the norm to over the series (norms only).
    pub decay_only: Option<f64>,
    /// In words, for the table's notes and the flags.
    pub why: String,
}

/// The reading from the optimizer state: the tensor's group has `weight_decay`.
pub fn from_group(group: usize, weight_decay: f64) -> DecayReading {
    DecayReading {
        decayed: if weight_decay > 0.0 { Decayed::Yes } else { Decayed::No },
        source: "optimizer",
        observed: None,
        decay_only: None,
        why: format!("optimizer group {group} has weight_decay {weight_decay}"),
    }
}

/// The reading from `norms` at `steps`, where `rate(i)` is decay's rate per step over gap `i`
/// (`None`: no closed form, as for L2 in an Adam gradient).
pub fn from_norms(steps: &[u64], norms: &[f64], rate: impl Fn(usize) -> Option<f64>) -> DecayReading {
    let cannot = |why: String, observed: Option<f64>, decay_only: Option<f64>| DecayReading {
        decayed: Decayed::CannotTell,
        source: "norms",
        observed,
        decay_only,
        why,
    };
    let (first, last) = (norms[0], norms[norms.len() - 1]);
    if first <= 0.0 || norms.iter().any(|n| !n.is_finite()) {
        return cannot("its norm starts at 0".into(), None, None);
    }
    let rates: Option<Vec<f64>> = (0..steps.len() - 1).map(&rate).collect();
    let Some(rates) = rates else {
        return cannot(
            "L2 in an Adam gradient is rescaled by Adam's denominator: no closed form for the shrink decay alone causes".into(),
            None,
            None,
        );
    };
    let per_gap: Vec<f64> = rates.iter().zip(steps.windows(2)).map(|(r, s)| r * (s[1] - s[0]) as f64).collect();
    let predicted: f64 = per_gap.iter().sum();
    let observed = last / first;
    let decay_only = (-predicted).exp();
    let span = steps[steps.len() - 1] - steps[0];
    if 1.0 - decay_only < MIN_SHRINK {
        return cannot(
            format!(
                "decay alone would shrink it by {:.2}% over these {span} steps, within what its gradient moves it",
                100.0 * (1.0 - decay_only)
            ),
            Some(observed),
            Some(decay_only),
        );
    }
    let ratio = -observed.ln() / predicted;
    let each_gap_shrinks = norms.windows(2).all(|w| w[1] < w[0]);
    let reading =
        |decayed, why: String| DecayReading { decayed, source: "norms", observed: Some(observed), decay_only: Some(decay_only), why };
    let numbers = format!("x{observed:.3} over {span} steps, decay alone x{decay_only:.3}");
    if (ratio - 1.0).abs() <= TOLERANCE && each_gap_shrinks {
        reading(Decayed::LooksDecayed, format!("shrinks as decay alone would ({numbers})"))
    } else if ratio.abs() <= TOLERANCE {
        reading(Decayed::NoSign, format!("holds still ({numbers}): not decayed, or held by its gradient"))
    } else {
        let how = if ratio > 1.0 {
            "shrinks faster than decay alone would"
        } else if ratio < 0.0 {
            "grows"
        } else {
            "shrinks, but not as decay alone would"
        };
        cannot(format!("{how} ({numbers}): its gradient moves it more than decay does"), Some(observed), Some(decay_only))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinks_are_read_against_decay_alone() {
        let steps = [0, 30, 60];
        // 5e-4 per step: x0.970 over 60 steps.
        let r = |_| Some(5e-4);
        let decayed = [1.0, (-0.015f64).exp(), (-0.031f64).exp()];
        assert_eq!(from_norms(&steps, &decayed, r).decayed, Decayed::LooksDecayed);
        assert_eq!(from_norms(&steps, &[1.0, 1.001, 0.999], r).decayed, Decayed::NoSign);
        let fast = from_norms(&steps, &[1.0, 0.95, 0.9], r);
        assert!(fast.decayed == Decayed::CannotTell && fast.why.contains("faster"), "{fast:?}");
        // Not at every gap: its gradient, not decay.
        assert_eq!(from_norms(&steps, &[1.0, 1.01, (-0.03f64).exp()], r).decayed, Decayed::CannotTell);
        let short = from_norms(&[0, 3], &[1.0, 0.9985], r);
        assert!(short.decayed == Decayed::CannotTell && short.why.contains("0.15%"), "{short:?}");
        assert_eq!(from_norms(&steps, &[0.0, 0.1, 0.2], r).decayed, Decayed::CannotTell);
        assert_eq!(from_norms(&steps, &decayed, |_| None).decayed, Decayed::CannotTell);
        assert_eq!(from_group(1, 0.0).decayed, Decayed::No);
    }
}
