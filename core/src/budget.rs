//! Whether a run's budget lets its scale-invariant weights reach the equilibrium the theory
//! predicts: each phase of the lr schedule against the relaxation time there (F6, F15). A phase
//! shorter than two relaxation times ends out of equilibrium, where `lr` and `wd` do not act
//! only through their product; `train` and `sweep` say so.

use crate::config::RunConfig;
use crate::optim::Hyper;
use crate::schedule::ScheduleKind;
use crate::theory;

/// Relaxation times a phase must last for its end to be at equilibrium.
pub const RELAXATIONS: f64 = 2.0;

/// A phase of a run too short for its equilibrium.
#[derive(Debug, Clone, PartialEq)]
pub struct Shortfall {
    /// The phase (`the whole run`, `epochs 0-30`, `until the lr halves`).
    pub phase: String,
    /// Its length in updates.
    pub steps: usize,
    /// The relaxation time of the scale-invariant weights in it, in updates.
    pub relaxation_steps: f64,
}

impl Shortfall {
    /// The warning, in words.
    pub fn message(&self) -> String {
        format!(
            "{} lasts {} steps, {:.2} relaxation times of the scale-invariant weights ({:.0} steps): they end it out of equilibrium, \
             where lr and weight decay do not act only through lr*wd; give it at least {:.0} steps (more epochs) or a larger lr*wd (normwd predict)",
            self.phase,
            self.steps,
            self.steps as f64 / self.relaxation_steps,
            self.relaxation_steps,
            RELAXATIONS * self.relaxation_steps
        )
    }
}

/// The phases of `c`'s schedule (with `steps_per_epoch` updates per epoch) that end before
/// [`RELAXATIONS`] relaxation times of its scale-invariant weights ([`Hyper::relax_rate`]).
/// Empty where those weights are not decayed, where the optimizer has no closed-form
/// equilibrium (Adam with L2, the remedies, whose rotational wrappers impose it from the first
/// step), or for settings that do not resolve. A cosine or linear schedule is judged by
/// the stretch until its lr halves.
pub fn shortfalls(c: &RunConfig, steps_per_epoch: usize) -> Vec<Shortfall> {
    let Ok(r) = c.resolve() else { return Vec::new() };
    let o = &r.optim;
    let Some(h) = o.relaxing(r.policy) else { return Vec::new() };
    let relaxation = |factor: f64| {
        let weight_decay = theory::decay_acting(h.weight_decay, factor, o.corrected_decay, o.cautious_decay);
        1.0 / Hyper { lr: h.lr * factor, weight_decay, ..h.clone() }.relax_rate()
    };
    let total = steps_per_epoch * c.epochs;
    let phases: Vec<(String, usize, f64)> = match r.schedule {
        ScheduleKind::Constant => vec![("the whole run".into(), total, 1.0)],
        ScheduleKind::Step => {
            let mut edges: Vec<usize> = c.milestones.iter().copied().filter(|&m| m < c.epochs).collect();
            edges.push(c.epochs);
            let mut from = 0;
            edges
                .iter()
                .enumerate()
                .map(|(i, &to)| {
                    let p = (format!("epochs {from}-{to}"), (to - from) * steps_per_epoch, c.gamma.powi(i as i32));
                    from = to;
                    p
                })
                .collect()
        }
        ScheduleKind::Cosine | ScheduleKind::Linear => vec![("the stretch until the lr halves".into(), total / 2, 1.0)],
    };
    phases
        .into_iter()
        .filter(|(_, steps, _)| *steps > 0)
        .map(|(phase, steps, factor)| Shortfall { phase, steps, relaxation_steps: relaxation(factor) })
        .filter(|s| (s.steps as f64) < RELAXATIONS * s.relaxation_steps)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::OptimKind;

    /// The old grid example's smallest lr*wd: lr 0.2, wd 0.0025, momentum 0.9, L2 in the
    /// gradient: (1-mu)/(lr*wd) = 200 steps against a 192-step run; 0.4 x 0.02 is fine.
    #[test]
    fn the_old_grid_point_falls_short_and_a_large_product_does_not() {
        let c = RunConfig { lr: 0.2, weight_decay: 0.0025, epochs: 3, schedule: ScheduleKind::Constant, ..Default::default() };
        let s = shortfalls(&c, 64);
        assert_eq!(s.len(), 1);
        assert!((s[0].relaxation_steps - 200.0).abs() < 1e-9 && s[0].steps == 192, "{s:?}");
        assert!(s[0].message().starts_with("the whole run lasts 192 steps, 0.96 relaxation times"));
        assert!(shortfalls(&RunConfig { lr: 0.4, weight_decay: 0.02, ..c.clone() }, 64).is_empty());
        // Not decayed, or no closed form: nothing to say.
        assert!(shortfalls(&RunConfig { weight_decay: 0.0, ..c.clone() }, 64).is_empty());
        assert!(shortfalls(&RunConfig { optimizer: OptimKind::Adam, ..c.clone() }, 64).is_empty());
        // A step schedule: the phase after the 10x drop relaxes 10x slower.
        let step = RunConfig { lr: 0.4, weight_decay: 0.02, epochs: 4, schedule: ScheduleKind::Step, milestones: vec![3], ..c };
        let s = shortfalls(&step, 64);
        assert_eq!(s.iter().map(|s| s.phase.as_str()).collect::<Vec<_>>(), ["epochs 3-4"]);
        assert!((s[0].relaxation_steps - 125.0).abs() < 1e-9);
    }
}
