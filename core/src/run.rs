//! A run directory as files: what each file is called, the checkpoint bookkeeping in
//! `state.json`, and a run read back ([`RunData`]) for reports and sweeps.

use crate::config::RunConfig;
use crate::records::{EpochRecord, Probe, Record, Summary};
use crate::roles::DecayPolicy;
use crate::schedule::ScheduleKind;
use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// State saved with each checkpoint (also mirrored in `state.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CkptState {
    /// Format version.
    pub version: u32,
    /// Epochs completed.
    pub epoch: usize,
    /// Updates taken.
    pub step: u64,
    /// Lines of `metrics.jsonl` that belong to the completed epochs.
    pub metrics_lines: usize,
    /// Seed (data order and augmentation are functions of seed and epoch).
    pub seed: u64,
}

/// File names inside a run directory.
pub mod files {
    /// The resolved configuration.
    pub const CONFIG: &str = "config.toml";
    /// JSON lines of epoch / probe / done records.
    pub const METRICS: &str = "metrics.jsonl";
    /// Model and optimizer tensors, and the state in the metadata.
    pub const CHECKPOINT: &str = "checkpoint.safetensors";
    /// Human-readable copy of the checkpoint state.
    pub const STATE: &str = "state.json";
}

/// The prefix of the optimizer's state tensors in a checkpoint (the model's tensors have none).
pub const OPTIM_PREFIX: &str = "optim/";

/// A checkpoint tensor's name (a model path, or an optimizer slot's `optim/path/slot`) as this
/// version writes it: runs written before the norm layers took PyTorch's parameter names hold
/// their scale and shift as `gamma` and `beta`, and still resume.
pub fn current_name(name: &str) -> String {
    if let Some(rest) = name.strip_prefix(OPTIM_PREFIX) {
        return format!("{OPTIM_PREFIX}{}", current_name(rest));
    }
    let (path, slot) = match name.split_once('/') {
        Some((p, s)) => (p, Some(s)),
        None => (name, None),
    };
    let path = match path.rsplit_once('.') {
        Some((layer, "gamma")) => format!("{layer}.weight"),
        Some((layer, "beta")) => format!("{layer}.bias"),
        _ => path.to_string(),
    };
    match slot {
        Some(s) => format!("{path}/{s}"),
        None => path,
    }
}

/// Errors while reading runs or writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A run directory cannot be read.
    #[error("{dir}: {what}")]
    Run {
        /// The folder.
        dir: String,
        /// What is missing or wrong.
        what: String,
    },
    /// Writing failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A run read back from its directory.
#[derive(Debug, Clone)]
pub struct RunData {
    /// Label used in legends (the folder name).
    pub name: String,
    /// The folder.
    pub dir: PathBuf,
    /// Its settings.
    pub config: RunConfig,
    /// Epoch records.
    pub epochs: Vec<EpochRecord>,
    /// Probe records.
    pub probes: Vec<Probe>,
    /// The final record, if the run finished.
    pub done: Option<Summary>,
}

impl RunData {
    /// Reads `config.toml` and `metrics.jsonl` of a run (lines that do not parse are skipped).
    pub fn load(dir: &Path) -> Result<Self, ReportError> {
        let d = dir.display().to_string();
        let cfg_text = std::fs::read_to_string(dir.join(files::CONFIG))
            .map_err(|e| ReportError::Run { dir: d.clone(), what: format!("no readable {} ({e}): not a run directory", files::CONFIG) })?;
        let config = RunConfig::from_toml(&dir.join(files::CONFIG).display().to_string(), &cfg_text)
            .map_err(|e| ReportError::Run { dir: d.clone(), what: e.to_string() })?;
        let text = std::fs::read_to_string(dir.join(files::METRICS))
            .map_err(|e| ReportError::Run { dir: d.clone(), what: format!("no readable {} ({e})", files::METRICS) })?;
        let (mut epochs, mut probes, mut done) = (Vec::new(), Vec::new(), None);
        for record in text.lines().filter_map(Record::parse) {
            match record {
                Record::Epoch(e) => epochs.push(e),
                Record::Probe(p) => probes.push(p),
                Record::Done(s) => done = Some(s),
            }
        }
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or(d);
        Ok(RunData { name, dir: dir.to_path_buf(), config, epochs, probes, done })
    }

    /// Probes of one tensor, in step order.
    pub fn series(&self, path: &str) -> Vec<&Probe> {
        self.probes.iter().filter(|p| p.path == path).collect()
    }

    /// Paths of the scale-invariant tensors that were probed, in model order.
    pub fn invariant_paths(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for p in self.probes.iter().filter(|p| p.scale_invariant) {
            if !v.contains(&p.path) {
                v.push(p.path.clone());
            }
        }
        v
    }

    /// Paths of probed norm-layer scales (gamma).
    pub fn gamma_paths(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        let scale = |p: &&Probe| match &p.role {
            Some(role) => role == crate::roles::Role::NormScale.name(),
            None => p.path.ends_with(".gamma") || p.path.ends_with("weight_g"),
        };
        for p in self.probes.iter().filter(scale) {
            if !v.contains(&p.path) {
                v.push(p.path.clone());
            }
        }
        v
    }

    /// Last step recorded.
    pub fn last_step(&self) -> u64 {
        self.probes.iter().map(|p| p.step).max().unwrap_or(0).max(self.epochs.last().map(|e| e.step).unwrap_or(0))
    }

    /// The window of the run (as fractions of its steps) where the equilibrium is measured:
    /// from half of the constant-lr phase to its end (the first milestone of a step schedule).
    pub fn equilibrium_window(&self) -> (f64, f64) {
        if self.config.external.is_some() {
            return (0.5, 1.0);
        }
        let end = match (self.config.schedule, self.config.milestones.first()) {
            (ScheduleKind::Step, Some(&m)) if m > 0 && m < self.config.epochs => m as f64 / self.config.epochs as f64,
            _ => 1.0,
        };
        (end / 2.0, end)
    }

    /// What [`RunData::equilibrium_window`] covers, in words.
    pub fn window_label(&self) -> String {
        if let Some(e) = &self.config.external {
            return if e.lr_varies {
                "the second half of the run (the training's own lr schedule; the prediction follows each step's lr)".into()
            } else {
                "the second half of the run (constant lr)".into()
            };
        }
        match (self.config.schedule, self.config.milestones.first()) {
            (ScheduleKind::Step, Some(&m)) if m > 0 && m < self.config.epochs => {
                format!("the second half of its constant-lr phase (before epoch {m})")
            }
            (ScheduleKind::Constant | ScheduleKind::Step, _) => "the second half of the run (constant lr)".into(),
            _ => format!("the second half of the run (the {} lr falls; the prediction follows each step's lr)", self.config.schedule),
        }
    }

    /// Whether the norm-layer scales were decayed in this run (its policy and weight decay).
    pub fn decays_norm_scales(&self) -> bool {
        self.config.weight_decay > 0.0 && self.policy().decays(crate::roles::Role::NormScale, false)
    }

    /// The decay policy the run trained with (its own, or its optimizer's fitting one).
    pub fn policy(&self) -> DecayPolicy {
        self.config.decay_policy.unwrap_or_else(|| self.config.optim().default_policy())
    }

    /// The theory's family of the run's optimizer (`Other` for a measured run whose optimizer
    /// has no closed form).
    pub fn family(&self) -> crate::theory::Family {
        match &self.config.external {
            Some(e) if e.no_closed_form => crate::theory::Family::Other,
            _ => self.config.optim().family(),
        }
    }

    /// The relaxation time in steps of the run's scale-invariant weights at its base (peak) lr
    /// (F6: `1/(lr*wd)`, L2 under SGD momentum `(1-mu)/(lr*wd)`); `None` where they are not
    /// decayed or their optimizer has no equilibrium they relax to.
    pub fn relaxation_steps(&self) -> Option<f64> {
        // A measured run whose optimizer has no closed form records a placeholder optimizer.
        if self.family() == crate::theory::Family::Other {
            return None;
        }
        self.config.optim().relaxing(self.policy()).map(|h| 1.0 / h.relax_rate())
    }

    /// Final test accuracy (last epoch).
    pub fn final_acc(&self) -> Option<f64> {
        self.epochs.last().map(|e| e.test_acc)
    }

    /// The run's lr schedule, with the updates per epoch its first epoch record shows.
    pub fn schedule(&self) -> Option<crate::schedule::Schedule> {
        let per_epoch = self.epochs.first()?.step as usize;
        let c = &self.config;
        Some(crate::schedule::Schedule {
            kind: c.schedule,
            milestones: c.milestones.clone(),
            gamma: c.gamma,
            warmup_steps: c.warmup_steps,
            steps_per_epoch: per_epoch,
            total_steps: per_epoch * c.epochs,
        })
    }

    /// F13 through this run's schedule for the scale-invariant tensor `path`: the
    /// `||g||/||w||` that [`crate::theory::track`] predicts at each of its probes, from the
    /// run's lr and decay at every update and the unit gradient `||g||*||w||` its probes
    /// measured (held from one probe to the next), starting at equilibrium at the first update.
    /// For Adam the size of `||w||` depends on how many coordinates the tensor has, which the
    /// probes do not record, so only the shape of the curve is predicted: it is scaled to the
    /// measurement's mean over the run's middle tenth. `None` without a closed form or decay.
    pub fn tracked_ratio(&self, path: &str) -> Option<Vec<(u64, f64)>> {
        let series = self.series(path);
        let schedule = self.schedule()?;
        let o = self.config.optim();
        let family = self.family();
        let decay = o.scale_invariant_decay(self.policy());
        let last = series.last()?.step as usize;
        let mut at = 0;
        let steps: Vec<(f64, f64, f64)> = (0..last)
            .map(|i| {
                while at + 1 < series.len() && series[at + 1].step as usize <= i + 1 {
                    at += 1;
                }
                let f = schedule.factor(i);
                let g = series[at].grad_norm * series[at].norm;
                (o.lr * o.si_lr_scale * f, crate::theory::decay_acting(decay, f, o.corrected_decay, o.cautious_decay), g * g)
            })
            .collect();
        let n = crate::theory::track(family, &steps)?;
        let ratio: Vec<(u64, f64)> =
            series.iter().map(|p| (p.step, steps[p.step as usize - 1].2.sqrt() / n[p.step as usize - 1])).collect();
        if !matches!(family, crate::theory::Family::AdamW { .. }) {
            return Some(ratio);
        }
        let scale = points_mean(&ratio_points(&series), MID)? / points_mean(&ratio, MID)?;
        Some(ratio.into_iter().map(|(s, r)| (s, r * scale)).collect())
    }
}

/// The middle tenth of a run (fractions of its steps), where the rise of `||g||/||w||` starts.
pub const MID: (f64, f64) = (0.45, 0.55);
/// Near the end of a run (85-95%), where the rise of `||g||/||w||` is read.
pub const END: (f64, f64) = (0.85, 0.95);

/// The measured `||g||/||w||` of a probe series, by step.
pub fn ratio_points(series: &[&Probe]) -> Vec<(u64, f64)> {
    series.iter().filter(|p| p.norm > 0.0).map(|p| (p.step, p.grad_norm / p.norm)).collect()
}

/// Mean of `(step, value)` points over a window of step fractions (of the last point's step).
pub fn points_mean(points: &[(u64, f64)], (from, to): (f64, f64)) -> Option<f64> {
    let last = points.last()?.0 as f64;
    let v: Vec<f64> =
        points.iter().filter(|(s, v)| (*s as f64) >= from * last && (*s as f64) < to * last && v.is_finite()).map(|p| p.1).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// How much a quantity rises from [`MID`] to [`END`] of a run (the mean over each).
pub fn rise(points: &[(u64, f64)]) -> Option<f64> {
    Some(points_mean(points, END)? / points_mean(points, MID)?)
}

/// Mean of a window `[from, to)` of step fractions of a probe series.
pub fn window_mean(series: &[&Probe], from: f64, to: f64, f: impl Fn(&Probe) -> Option<f64>) -> Option<f64> {
    let last = series.last()?.step as f64;
    let v: Vec<f64> = series
        .iter()
        .filter(|p| (p.step as f64) >= from * last && (p.step as f64) < to * last.max(1.0) + 0.5)
        .filter_map(|p| f(p))
        .filter(|x| x.is_finite())
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_written_before_pytorchs_norm_names_still_read() {
        assert_eq!(current_name("block1.norm.gamma"), "block1.norm.weight");
        assert_eq!(current_name("optim/norm2.beta/1.momentum"), "optim/norm2.bias/1.momentum");
        assert_eq!(current_name("fc.weight/1.momentum"), "fc.weight/1.momentum");
        assert_eq!(current_name("gamma"), "gamma", "only a layer's field is renamed");
    }
}
