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
            ScheduleKind::Cosine => {
                let t = (step as f64 / self.total_steps.max(1) as f64).min(1.0);
                0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        };
        let warm = if self.warmup_steps > 0 { ((step + 1) as f64 / self.warmup_steps as f64).min(1.0) } else { 1.0 };
        base * warm
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
        let w = sched(ScheduleKind::Constant, 4);
        assert_eq!([w.factor(0), w.factor(1), w.factor(3), w.factor(10)], [0.25, 0.5, 1.0, 1.0]);
    }
}
