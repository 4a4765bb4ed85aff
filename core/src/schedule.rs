//! Learning-rate schedules: pure functions of the step, as multipliers of the base rate.

crate::choice! {
    /// Shape of the schedule (the `--schedule` flag).
    pub enum ScheduleKind {
        /// Constant rate.
        Constant = "constant",
        /// Multiply by `gamma` at each milestone epoch (PyTorch's `MultiStepLR`).
        Step = "step",
        /// Cosine annealing to zero over the whole run (PyTorch's `CosineAnnealingLR`, per step).
        Cosine = "cosine",
        /// Linear decay to zero over the whole run (PyTorch's `LinearLR` to 0, per step).
        Linear = "linear",
    }
}

/// A schedule bound to a run's length.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Shape.
    pub kind: ScheduleKind,
    /// Epochs at which `Step` multiplies by `gamma`.
    pub milestones: Vec<usize>,
    /// `Step`'s factor.
    pub gamma: f64,
    /// Linear warmup from `1/warmup_steps` to 1 over the first steps (0 = none).
    pub warmup_steps: usize,
    /// Steps in one epoch.
    pub steps_per_epoch: usize,
    /// Steps in the whole run.
    pub total_steps: usize,
}

impl Schedule {
    /// A constant rate over a run of `total_steps` updates.
    pub fn constant(total_steps: usize) -> Self {
        Schedule {
            kind: ScheduleKind::Constant,
            milestones: Vec::new(),
            gamma: 0.1,
            warmup_steps: 0,
            steps_per_epoch: total_steps,
            total_steps,
        }
    }

    /// The multiplier of the base rate for the update with 0-based index `step`.
    pub fn factor(&self, step: usize) -> f64 {
        let base = match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Step => {
                let epoch = step / self.steps_per_epoch.max(1);
                let passed = self.milestones.iter().filter(|&&m| epoch >= m).count();
                self.gamma.powi(passed as i32)
            }
            ScheduleKind::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * self.progress(step)).cos()),
            ScheduleKind::Linear => 1.0 - self.progress(step),
        };
        let warm = if self.warmup_steps > 0 { ((step + 1) as f64 / self.warmup_steps as f64).min(1.0) } else { 1.0 };
        base * warm
    }
}

/// A stretch of a schedule with one learning-rate factor, for predictions per phase.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// What the phase is (`epochs 0-100`, `at 50% of training`).
    pub label: String,
    /// The epoch it starts at.
    pub from_epoch: f64,
    /// The lr factor in it.
    pub factor: f64,
}

impl Schedule {
    /// The fraction of the run done before the update with 0-based index `step`.
    fn progress(&self, step: usize) -> f64 {
        (step as f64 / self.total_steps.max(1) as f64).min(1.0)
    }

    /// The phases of this schedule over a run of `epochs` epochs: the whole run, each stretch
    /// between milestones, or (for schedules that change every step) five points of the run.
    pub fn phases(&self, epochs: usize) -> Vec<Phase> {
        let phase = |label: String, from_epoch: f64, factor: f64| Phase { label, from_epoch, factor };
        match self.kind {
            ScheduleKind::Constant => vec![phase("whole run".into(), 0.0, 1.0)],
            ScheduleKind::Step => {
                let ms = &self.milestones;
                let mut p = vec![phase(format!("epochs 0-{}", ms.first().copied().unwrap_or(epochs)), 0.0, 1.0)];
                for (i, &m) in ms.iter().enumerate() {
                    let end = ms.get(i + 1).copied().unwrap_or(epochs);
                    p.push(phase(format!("epochs {m}-{end}"), m as f64, self.gamma.powi(i as i32 + 1)));
                }
                p
            }
            _ => {
                // The same shape over 1000 updates, so each point is a whole step.
                let s = Schedule { total_steps: 1000, steps_per_epoch: 1000 / epochs.max(1), ..self.clone() };
                [0, 250, 500, 750, 900]
                    .iter()
                    .map(|&t| {
                        let f = t as f64 / 1000.0;
                        phase(format!("at {:.0}% of training", f * 100.0), f * epochs as f64, s.factor(t))
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind, warmup: usize) -> Schedule {
        Schedule { kind, milestones: vec![2, 4], gamma: 0.1, warmup_steps: warmup, steps_per_epoch: 10, total_steps: 60 }
    }

    #[test]
    fn step_cosine_warmup() {
        let s = sched(ScheduleKind::Step, 0);
        assert_eq!(s.factor(19), 1.0);
        assert!((s.factor(20) - 0.1).abs() < 1e-12);
        assert!((s.factor(45) - 0.01).abs() < 1e-12);
        let c = sched(ScheduleKind::Cosine, 0);
        assert_eq!(c.factor(0), 1.0);
        assert!((c.factor(30) - 0.5).abs() < 1e-12);
        assert!(c.factor(60).abs() < 1e-12);
        let l = sched(ScheduleKind::Linear, 0);
        assert_eq!([l.factor(0), l.factor(15), l.factor(60)], [1.0, 0.75, 0.0]);
        let w = sched(ScheduleKind::Constant, 4);
        assert_eq!([w.factor(0), w.factor(1), w.factor(3), w.factor(10)], [0.25, 0.5, 1.0, 1.0]);
    }

    #[test]
    fn phases_follow_the_schedule() {
        let s = sched(ScheduleKind::Step, 0);
        let p = s.phases(6);
        assert_eq!(p.iter().map(|p| p.label.as_str()).collect::<Vec<_>>(), ["epochs 0-2", "epochs 2-4", "epochs 4-6"]);
        assert!((p[2].factor - 0.01).abs() < 1e-12 && p[1].from_epoch == 2.0);
        let c = sched(ScheduleKind::Cosine, 0).phases(6);
        assert_eq!(c.len(), 5);
        assert!((c[2].factor - 0.5).abs() < 1e-12 && c[2].from_epoch == 3.0);
        assert_eq!(sched(ScheduleKind::Constant, 0).phases(6).len(), 1);
    }
}
