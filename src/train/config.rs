//! A run's settings: one flat table whose keys are the `train` flags with `_` for `-`
//! (`config.toml` in every run directory, `--config run.toml`, the `[base]` of a sweep).

use crate::model::{ModelKind, NormKind};
use crate::optim::remedies::{Invariance, NormTarget};
use crate::optim::schedule::ScheduleKind;
use crate::optim::{DecayMode, OptimConfig, OptimKind, RemedyConfig};
use crate::params::DecayPolicy;
use serde::{Deserialize, Serialize};

/// Errors in a run configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML does not parse or has an unknown key / a value of the wrong type.
    #[error("{file}: {message}")]
    Parse {
        /// The file (or `flags`).
        file: String,
        /// The parser's message (with line and key).
        message: String,
    },
    /// A value is outside what the key allows.
    #[error("--{key} {value}: expected {expected}")]
    Invalid {
        /// The key, spelled as a flag.
        key: String,
        /// The value seen.
        value: String,
        /// What is allowed.
        expected: String,
    },
}

fn invalid(key: &str, value: impl ToString, expected: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.replace('_', "-"), value: value.to_string(), expected: expected.into() }
}

/// Every setting of a run. Field names are the config keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// `mlp`, `convnet` or `resnet20`.
    pub model: String,
    /// `bn`, `ln`, `gn`, `wn` or `none`.
    pub norm: String,
    /// `embedded`, `fashion-mnist`, `cifar10` or a folder.
    pub data: String,
    /// Use only the first N training examples (0 = all).
    pub train_subset: usize,
    /// Use only the first N test examples (0 = all).
    pub test_subset: usize,
    /// Random crop + flip for training batches (CIFAR-style inputs).
    pub augment: bool,
    /// Passes over the training set.
    pub epochs: usize,
    /// Examples per update.
    pub batch_size: usize,
    /// `sgd`, `adam` or `adamw`.
    pub optimizer: String,
    /// Base learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Nesterov momentum (SGD).
    pub nesterov: bool,
    /// Weight decay `lambda` (adds `lambda*w` to the gradient, or `w -= lr*lambda*w`).
    pub weight_decay: f64,
    /// `coupled` or `decoupled`; empty = the optimizer's default (decoupled for AdamW).
    pub decay: String,
    /// Which tensors are decayed.
    pub decay_policy: String,
    /// Learning-rate multiplier for scale-invariant weights.
    pub si_lr_scale: f64,
    /// Weight decay of scale-invariant weights (negative = same as `weight_decay`).
    pub si_weight_decay: f64,
    /// Adam betas.
    pub betas: [f64; 2],
    /// Adam epsilon.
    pub eps: f64,
    /// `constant`, `step` or `cosine`.
    pub schedule: String,
    /// Epochs at which the `step` schedule multiplies the rate by `gamma`.
    pub milestones: Vec<usize>,
    /// Factor of the `step` schedule.
    pub gamma: f64,
    /// Steps of linear warmup.
    pub warmup_steps: usize,
    /// Batch-norm running-average momentum (PyTorch convention).
    pub bn_momentum: f64,
    /// Seed for weights, data order and augmentation.
    pub seed: u64,
    /// `cpu` (or `auto`).
    pub device: String,
    /// SGDP / AdamP: `structural` (from the graph) or `numeric` (AdamP's cosine test).
    pub invariance: String,
    /// SGDP / AdamP cosine-test `delta`.
    pub delta: f64,
    /// SGDP / AdamP decay multiplier on projected tensors.
    pub wd_ratio: f64,
    /// LARS trust coefficient.
    pub trust_coeff: f64,
    /// LARS with LARC's clipping.
    pub lars_clip: bool,
    /// Fixed-norm: `channel` or `tensor`.
    pub fixed_norm_granularity: String,
    /// Fixed-norm target: `init` (initial norm) or `unit`.
    pub fixed_norm_target: String,
    /// Scale gradients of scale-invariant weights by ||w||^2/||w_0||^2 (Jane Street 2019).
    pub compensate_elr: bool,
    /// Rotational wrapper: decay of the running RMS of update sizes (0 = each step's own).
    pub rv_rms_decay: f64,
    /// Record per-layer probes every N steps (0 = about 200 points per run).
    pub probe_every: usize,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            model: "convnet".into(),
            norm: "bn".into(),
            data: "embedded".into(),
            train_subset: 0,
            test_subset: 0,
            augment: false,
            epochs: 5,
            batch_size: 128,
            optimizer: "sgd".into(),
            lr: 0.1,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 5e-4,
            decay: String::new(),
            decay_policy: "exclude-norm-bias".into(),
            si_lr_scale: 1.0,
            si_weight_decay: -1.0,
            betas: [0.9, 0.999],
            eps: 1e-8,
            schedule: "cosine".into(),
            milestones: Vec::new(),
            gamma: 0.1,
            warmup_steps: 0,
            bn_momentum: 0.1,
            seed: 0,
            device: "cpu".into(),
            probe_every: 0,
            invariance: "structural".into(),
            delta: 0.1,
            wd_ratio: 0.1,
            trust_coeff: 0.001,
            lars_clip: false,
            fixed_norm_granularity: "channel".into(),
            fixed_norm_target: "init".into(),
            compensate_elr: false,
            rv_rms_decay: 0.0,
        }
    }
}

/// A configuration with every name resolved to its type.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Architecture.
    pub model: ModelKind,
    /// Normalization.
    pub norm: NormKind,
    /// Decay policy.
    pub policy: DecayPolicy,
    /// Optimizer hyperparameters.
    pub optim: OptimConfig,
    /// Schedule shape.
    pub schedule: ScheduleKind,
}

fn one_of<T>(key: &str, value: &str, parse: impl Fn(&str) -> Option<T>, names: &[&str]) -> Result<T, ConfigError> {
    parse(value).ok_or_else(|| invalid(key, format!("{value:?}"), format!("one of {}", names.join(", "))))
}

impl RunConfig {
    /// Parses a TOML table (the content of `file`), rejecting unknown keys.
    pub fn from_toml(file: &str, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { file: file.to_string(), message: e.to_string().trim().replace('\n', " ") })
    }

    /// Serializes to TOML (what `config.toml` holds).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a RunConfig always serializes")
    }

    /// Checks every value and resolves names.
    pub fn resolve(&self) -> Result<Resolved, ConfigError> {
        let model = one_of("model", &self.model, ModelKind::parse, &["mlp", "convnet", "resnet20"])?;
        let norm = one_of("norm", &self.norm, NormKind::parse, &["bn", "ln", "gn", "wn", "none"])?;
        let policy = one_of("decay_policy", &self.decay_policy, DecayPolicy::parse, &DecayPolicy::ALL.map(|p| p.name()))?;
        let kind = one_of("optimizer", &self.optimizer, OptimKind::parse, &OptimKind::ALL.map(|k| k.name()))?;
        let decay = if self.decay.is_empty() {
            kind.default_decay()
        } else {
            one_of("decay", &self.decay, DecayMode::parse, &["coupled", "decoupled"])?
        };
        let schedule = one_of("schedule", &self.schedule, ScheduleKind::parse, &["constant", "step", "cosine"])?;
        if self.epochs == 0 {
            return Err(invalid("epochs", 0, "an integer >= 1"));
        }
        if self.batch_size == 0 {
            return Err(invalid("batch_size", 0, "an integer >= 1"));
        }
        if !(self.gamma.is_finite() && self.gamma > 0.0) {
            return Err(invalid("gamma", self.gamma, "a finite number > 0"));
        }
        if !(self.bn_momentum.is_finite() && (0.0..=1.0).contains(&self.bn_momentum)) {
            return Err(invalid("bn_momentum", self.bn_momentum, "a number in [0, 1]"));
        }
        if let Err(expected) = crate::device::validate(&self.device) {
            return Err(invalid("device", &self.device, expected));
        }
        if self.si_weight_decay.is_nan() {
            return Err(invalid("si_weight_decay", self.si_weight_decay, "a finite number (negative = same as --weight-decay)"));
        }
        let optim = OptimConfig {
            kind,
            lr: self.lr,
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            decay,
            betas: (self.betas[0], self.betas[1]),
            eps: self.eps,
            si_lr_scale: self.si_lr_scale,
            si_weight_decay: (self.si_weight_decay >= 0.0).then_some(self.si_weight_decay),
            remedy: RemedyConfig {
                invariance: one_of(
                    "invariance",
                    &self.invariance,
                    |s| match s {
                        "structural" => Some(Invariance::Structural),
                        "numeric" => Some(Invariance::Numeric),
                        _ => None,
                    },
                    &["structural", "numeric"],
                )?,
                delta: self.delta,
                wd_ratio: self.wd_ratio,
                trust_coeff: self.trust_coeff,
                lars_clip: self.lars_clip,
                fixed_norm_per_channel: one_of(
                    "fixed_norm_granularity",
                    &self.fixed_norm_granularity,
                    |s| match s {
                        "channel" => Some(true),
                        "tensor" => Some(false),
                        _ => None,
                    },
                    &["channel", "tensor"],
                )?,
                fixed_norm_target: one_of(
                    "fixed_norm_target",
                    &self.fixed_norm_target,
                    |s| match s {
                        "init" => Some(NormTarget::Init),
                        "unit" => Some(NormTarget::Unit),
                        _ => None,
                    },
                    &["init", "unit"],
                )?,
                compensate_elr: self.compensate_elr,
                rv_rms_decay: self.rv_rms_decay,
            },
        };
        optim.validate().map_err(|e| match e {
            crate::optim::OptimError::Invalid { flag, value, expected } => invalid(flag, value, expected),
            other => invalid("optimizer", "", other.to_string()),
        })?;
        Ok(Resolved { model, norm, policy, optim, schedule })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown_keys() {
        let c = RunConfig { lr: 0.05, model: "mlp".into(), ..Default::default() };
        assert_eq!(RunConfig::from_toml("x", &c.to_toml()).unwrap(), c);
        let e = RunConfig::from_toml("run.toml", "lr = 0.1\nlearning_rate = 3\n").unwrap_err().to_string();
        assert!(e.contains("run.toml") && e.contains("learning_rate"), "{e}");
        let e = RunConfig::from_toml("run.toml", "lr = \"fast\"\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn resolve_names_and_ranges() {
        let bad = |c: RunConfig| c.resolve().unwrap_err().to_string();
        assert!(bad(RunConfig { model: "vgg".into(), ..Default::default() })
            .contains("--model \"vgg\": expected one of mlp, convnet, resnet20"));
        assert!(bad(RunConfig { norm: "xx".into(), ..Default::default() }).contains("--norm"));
        assert!(bad(RunConfig { optimizer: "rmsprop".into(), ..Default::default() }).contains("--optimizer"));
        assert!(bad(RunConfig { batch_size: 0, ..Default::default() }).contains("--batch-size 0"));
        assert!(bad(RunConfig { lr: -1.0, ..Default::default() }).contains("--lr -1"));
        assert!(bad(RunConfig { weight_decay: f64::NAN, ..Default::default() }).contains("--weight-decay NaN"));
        let r = RunConfig { optimizer: "adamw".into(), ..Default::default() }.resolve().unwrap();
        assert_eq!(r.optim.decay, DecayMode::Decoupled);
    }
}
