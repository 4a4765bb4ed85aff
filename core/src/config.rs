//! A run's settings: one flat table whose keys are the `train` flags with `_` for `-`
//! (`config.toml` in every run directory, `--config run.toml`, the `[base]` of a sweep).
//! Names are typed ([`crate::choice`]) and parsed once, by serde here and by the same enums
//! on the command line; [`RunConfig::resolve`] checks every value and fills in what the user
//! left to the optimizer (decay mode, decay policy).

use crate::kinds::{GptShape, ModelKind, NormKind, Tokens};
use crate::optim::{DecayMode, FixedNormGranularity, Invariance, MuonConfig, NormTarget, OptimConfig, OptimError, OptimKind, RemedyConfig};
use crate::roles::{DecayPolicy, DecayRule};
use crate::schedule::ScheduleKind;
use crate::theory::muon::AdjustLr;
use serde::{Deserialize, Deserializer, Serialize};

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

/// Every setting of a run. Field names are the config keys; `None` is "not set" (the
/// optimizer's own choice), and is left out of `config.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Architecture.
    pub model: ModelKind,
    /// Normalization after each linear layer (`gpt`: in each block); unset: the model's
    /// ([`ModelKind::default_norm`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub norm: Option<NormKind>,
    /// `embedded`, `fashion-mnist`, `cifar10` or a folder.
    pub data: String,
    /// Use only the first N training examples; unset: all.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "zero_is_unset")]
    pub train_subset: Option<usize>,
    /// Use only the first N test examples; unset: all.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "zero_is_unset")]
    pub test_subset: Option<usize>,
    /// Random crop + flip for training batches (CIFAR-style inputs).
    pub augment: bool,
    /// Passes over the training set.
    pub epochs: usize,
    /// Examples per update.
    pub batch_size: usize,
    /// The optimizer.
    pub optimizer: OptimKind,
    /// Base learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Nesterov momentum (SGD).
    pub nesterov: bool,
    /// Weight decay `lambda` (adds `lambda*w` to the gradient, or `w -= lr*lambda*w`).
    pub weight_decay: f64,
    /// Coupled or decoupled decay; unset: the optimizer's own (decoupled for AdamW).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "empty_is_unset")]
    pub decay: Option<DecayMode>,
    /// Which tensors are decayed; unset: the optimizer's fitting policy
    /// ([`OptimConfig::default_policy`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decay_policy: Option<DecayPolicy>,
    /// Decay embeddings and position embeddings (true) or spare them (false); unset: the policy's
    /// choice (decayed only under `all`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decay_embeddings: Option<bool>,
    /// Learning-rate multiplier for scale-invariant weights.
    pub si_lr_scale: f64,
    /// Weight decay of scale-invariant weights; unset: `weight_decay`.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "negative_one_is_unset")]
    pub si_weight_decay: Option<f64>,
    /// Adam / Lion betas; unset: the optimizer's (0.9, 0.999; Lion 0.9, 0.99).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub betas: Option<[f64; 2]>,
    /// Adam epsilon.
    pub eps: f64,
    /// Learning-rate schedule.
    pub schedule: ScheduleKind,
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
    /// `cpu`, `wgpu`, `cuda` or `auto` (what a build can open is the engine's to check).
    pub device: String,
    /// SGDP / AdamP: where scale-invariance comes from.
    pub invariance: Invariance,
    /// SGDP / AdamP cosine-test `delta`.
    pub delta: f64,
    /// SGDP / AdamP decay multiplier on projected tensors.
    pub wd_ratio: f64,
    /// LARS trust coefficient.
    pub trust_coeff: f64,
    /// LARS with LARC's clipping.
    pub lars_clip: bool,
    /// Fixed-norm: per output channel or per tensor.
    pub fixed_norm_granularity: FixedNormGranularity,
    /// Fixed-norm target: the initial norm or unit norm.
    pub fixed_norm_target: NormTarget,
    /// Scale gradients of scale-invariant weights by ||w||^2/||w_0||^2 (Jane Street 2019).
    pub compensate_elr: bool,
    /// Rotational wrapper: decay of the running RMS of update sizes (0 = each step's own).
    pub rv_rms_decay: f64,
    /// Corrected decay on scale-invariant weights (AdamC / SGDC): `weight_decay * lr_t/lr_max`.
    pub corrected_decay: bool,
    /// Cautious decay: decoupled decay only where the update and the weight agree in sign.
    pub cautious_decay: bool,
    /// `muon`: base lr of the hidden matrices Muon steps (the other tensors take `lr`).
    pub muon_lr: f64,
    /// `muon`: decay of Muon's matrices (decoupled, at the base lr); unset: `weight_decay`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub muon_weight_decay: Option<f64>,
    /// `muon`: momentum `b` (`B <- b B + (1-b) G`).
    pub muon_momentum: f64,
    /// `muon`: Nesterov's blend (PyTorch's default).
    pub muon_nesterov: bool,
    /// `muon`: the step's shape adjustment (PyTorch's `adjust_lr_fn`).
    pub muon_adjust_lr: AdjustLr,
    /// `muon`: Newton-Schulz steps.
    pub muon_ns_steps: usize,
    /// Record per-layer probes every N steps; unset: about 200 points per run, at most every
    /// 3rd step.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "zero_is_unset")]
    pub probe_every: Option<usize>,
    /// Text data (`gpt`): one token per character or per byte.
    pub tokens: Tokens,
    /// `gpt`: transformer blocks.
    pub n_layer: usize,
    /// `gpt`: attention heads per block.
    pub n_head: usize,
    /// `gpt`: width of the residual stream.
    pub n_embd: usize,
    /// `gpt`: context length in tokens.
    pub block_size: usize,
    /// `gpt`: normalize queries and keys per head (QK-norm).
    pub qk_norm: bool,
    /// `gpt`: the output head is the token embedding.
    pub tie_embeddings: bool,
    /// `gpt`: rows of the token embedding; unset: the text's vocabulary (a text with more
    /// distinct tokens than a set size is refused).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "zero_is_unset")]
    pub vocab_size: Option<usize>,
    /// Set for a run another program trained and normwd only measured (`normwd.torch.Monitor`):
    /// what it was. Such a run is read and reported, never trained or resumed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<External>,
}

/// A run trained outside normwd (PyTorch, measured by `normwd.torch.Monitor`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct External {
    /// Who measured it (`normwd.torch.Monitor`).
    pub source: String,
    /// The model's class name.
    pub model: String,
    /// The optimizer's class name (`SGD`, `AdamW`, ...).
    pub optimizer: String,
    /// Whether the lr changed over the run (the training's own schedule).
    pub lr_varies: bool,
    /// The optimizer has no closed form normwd knows (`optimizer` above is then a placeholder,
    /// and nothing is predicted from it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_closed_form: bool,
    /// The smallest and largest lr its probes saw (the run's `lr` is the largest, the peak).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_range: Option<[f64; 2]>,
    /// The first group's lr when the measuring began (a warmup's first value, or the base lr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_initial: Option<f64>,
    /// The lr scheduler's class name, where the training told it (`LambdaLR` for Hugging
    /// Face's linear schedule, `CosineAnnealingLR`): normwd's own `schedule` does not apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
}

/// Runs written before `decay` was typed hold `decay = ""` for "unset".
fn empty_is_unset<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DecayMode>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|e: String| serde::de::Error::custom(format!("{s:?}: {e}")))
}

/// Runs written before these settings were options hold `0` for "unset" (all examples, the
/// automatic probe interval, the text's vocabulary), and still read so; the flags refuse `0`.
fn zero_is_unset<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    Ok(Option::<usize>::deserialize(d)?.filter(|&v| v != 0))
}

/// Runs written before `si_weight_decay` was an option hold `-1.0` for "unset"; any other
/// negative value is refused by [`RunConfig::resolve`].
fn negative_one_is_unset<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = f64::deserialize(d)?;
    Ok((v != -1.0).then_some(v))
}

impl Default for RunConfig {
    fn default() -> Self {
        // The remedies' defaults are theirs ([`RemedyConfig::default`]), laid out flat here.
        let r = RemedyConfig::default();
        let muon = MuonConfig::default();
        RunConfig {
            model: ModelKind::Convnet,
            norm: None,
            data: "embedded".into(),
            train_subset: None,
            test_subset: None,
            augment: false,
            epochs: 5,
            batch_size: 128,
            optimizer: OptimKind::Sgd,
            lr: 0.1,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 5e-4,
            decay: None,
            decay_policy: None,
            si_lr_scale: 1.0,
            si_weight_decay: None,
            betas: None,
            eps: 1e-8,
            schedule: ScheduleKind::Cosine,
            milestones: Vec::new(),
            gamma: 0.1,
            warmup_steps: 0,
            bn_momentum: 0.1,
            seed: 0,
            device: "cpu".into(),
            probe_every: None,
            tokens: Tokens::Char,
            n_layer: 4,
            n_head: 4,
            n_embd: 128,
            block_size: 64,
            qk_norm: false,
            tie_embeddings: true,
            vocab_size: None,
            decay_embeddings: None,
            external: None,
            invariance: r.invariance,
            delta: r.delta,
            wd_ratio: r.wd_ratio,
            trust_coeff: r.trust_coeff,
            lars_clip: r.lars_clip,
            fixed_norm_granularity: if r.fixed_norm_per_channel { FixedNormGranularity::Channel } else { FixedNormGranularity::Tensor },
            fixed_norm_target: r.fixed_norm_target,
            compensate_elr: r.compensate_elr,
            rv_rms_decay: r.rv_rms_decay,
            corrected_decay: false,
            cautious_decay: false,
            muon_lr: muon.lr,
            muon_weight_decay: muon.weight_decay,
            muon_momentum: muon.momentum,
            muon_nesterov: muon.nesterov,
            muon_adjust_lr: muon.adjust_lr,
            muon_ns_steps: muon.ns_steps,
        }
    }
}

/// A configuration checked, with what the user left unset filled in: what the engine builds from.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Architecture.
    pub model: ModelKind,
    /// Normalization.
    pub norm: NormKind,
    /// Decay rule (the user's policy or the optimizer's fitting one, and `decay_embeddings`).
    pub policy: DecayRule,
    /// The transformer's shape (`gpt` only).
    pub gpt: Option<GptShape>,
    /// Optimizer hyperparameters.
    pub optim: OptimConfig,
    /// Schedule shape.
    pub schedule: ScheduleKind,
}

impl RunConfig {
    /// The defaults of a run of `model`: the one place every setting's default is given. The
    /// image models train with SGD (momentum 0.9, lr 0.1, decay 5e-4, batch 128, 5 epochs); the
    /// transformer with its own AdamW settings (lr 3e-3, decay 0.1, batch 32, 2 epochs), which
    /// end below 2.2 nats held-out on the embedded text in a few minutes on 2 cores.
    pub fn defaults(model: ModelKind) -> Self {
        let image = RunConfig { model, ..Default::default() };
        match model {
            ModelKind::Mlp | ModelKind::Convnet | ModelKind::Resnet20 => image,
            ModelKind::Gpt => RunConfig { optimizer: OptimKind::Adamw, lr: 3e-3, weight_decay: 0.1, batch_size: 32, epochs: 2, ..image },
        }
    }

    /// The settings of table `table` (keys the user set: a config file, flags, a sweep point)
    /// laid over the defaults of its model ([`RunConfig::defaults`]); `what` names the source in
    /// messages. Unknown keys, wrong types and unknown names are refused.
    pub fn from_table(what: &str, table: toml::Table) -> Result<Self, ConfigError> {
        let parse_error =
            |e: toml::de::Error| ConfigError::Parse { file: what.to_string(), message: e.to_string().trim().replace('\n', " ") };
        // Read once as given, for the keys' and names' own errors and to learn the model.
        let given: RunConfig = toml::Value::Table(table.clone()).try_into().map_err(parse_error)?;
        given.over_defaults(table).map_err(parse_error)
    }

    /// Parses a TOML table (the content of `file`), rejecting unknown keys and unknown names;
    /// what it leaves out is the defaults of its model.
    pub fn from_toml(file: &str, text: &str) -> Result<Self, ConfigError> {
        let parse_error =
            |e: toml::de::Error| ConfigError::Parse { file: file.to_string(), message: e.to_string().trim().replace('\n', " ") };
        // The text first, for messages with its lines.
        let given: RunConfig = toml::from_str(text).map_err(parse_error)?;
        given.over_defaults(text.parse().map_err(parse_error)?).map_err(parse_error)
    }

    /// `table` over the defaults of this configuration's model.
    fn over_defaults(&self, table: toml::Table) -> Result<Self, toml::de::Error> {
        let mut t = toml::Table::try_from(Self::defaults(self.model)).expect("the defaults serialize");
        t.extend(table);
        toml::Value::Table(t).try_into()
    }

    /// Serializes to TOML (what `config.toml` holds).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a RunConfig always serializes")
    }

    /// The defaults with every optional setting set: every key `config.toml` can hold, with its
    /// type (how sweep files check their keys).
    pub fn every_key_set() -> Self {
        RunConfig {
            decay: Some(DecayMode::Coupled),
            norm: Some(NormKind::Bn),
            decay_policy: Some(DecayPolicy::ExcludeNormBias),
            decay_embeddings: Some(false),
            si_weight_decay: Some(0.0),
            muon_weight_decay: Some(0.0),
            betas: Some([0.9, 0.999]),
            train_subset: Some(1),
            test_subset: Some(1),
            probe_every: Some(1),
            vocab_size: Some(1),
            ..Default::default()
        }
    }

    /// The optimizer's hyperparameters (the optimizer's decay mode where `decay` is unset).
    pub fn optim(&self) -> OptimConfig {
        OptimConfig {
            kind: self.optimizer,
            lr: self.lr,
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            decay: self.decay.unwrap_or(self.optimizer.default_decay()),
            betas: self.betas.map(|[a, b]| (a, b)).unwrap_or(self.optimizer.default_betas()),
            eps: self.eps,
            si_lr_scale: self.si_lr_scale,
            si_weight_decay: self.si_weight_decay,
            remedy: RemedyConfig {
                invariance: self.invariance,
                delta: self.delta,
                wd_ratio: self.wd_ratio,
                trust_coeff: self.trust_coeff,
                lars_clip: self.lars_clip,
                fixed_norm_per_channel: self.fixed_norm_granularity == FixedNormGranularity::Channel,
                fixed_norm_target: self.fixed_norm_target,
                compensate_elr: self.compensate_elr,
                rv_rms_decay: self.rv_rms_decay,
            },
            corrected_decay: self.corrected_decay,
            cautious_decay: self.cautious_decay,
            muon: MuonConfig {
                lr: self.muon_lr,
                weight_decay: self.muon_weight_decay,
                momentum: self.muon_momentum,
                nesterov: self.muon_nesterov,
                adjust_lr: self.muon_adjust_lr,
                ns_steps: self.muon_ns_steps,
            },
        }
    }

    /// Checks every value (the device's availability is the engine's to check) and fills in
    /// what is unset.
    pub fn resolve(&self) -> Result<Resolved, ConfigError> {
        if let Some(e) = &self.external {
            return Err(invalid(
                "external",
                format!("{} ({})", e.source, e.model),
                "a run normwd trains: this one was trained elsewhere and only measured, so it is reported, not trained or resumed",
            ));
        }
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
        let optim = self.optim();
        optim.validate().map_err(|e| match e {
            OptimError::Invalid { flag, value, expected } => invalid(flag, value, expected),
            other => invalid("optimizer", "", other.to_string()),
        })?;
        let policy = DecayRule { policy: self.decay_policy.unwrap_or(optim.default_policy()), embeddings: self.decay_embeddings };
        let gpt = self.gpt_shape()?;
        Ok(Resolved { model: self.model, norm: self.norm_kind(), policy, optim, schedule: self.schedule, gpt })
    }

    /// The normalization the run uses: its own, or the model's default.
    pub fn norm_kind(&self) -> NormKind {
        self.norm.unwrap_or(self.model.default_norm())
    }

    /// The transformer's shape, checked (`None` for the image models, which refuse QK-norm).
    fn gpt_shape(&self) -> Result<Option<GptShape>, ConfigError> {
        if !self.model.reads_text() {
            if self.qk_norm {
                return Err(invalid("qk_norm", true, "--model gpt (QK-norm normalizes attention's queries and keys)"));
            }
            return Ok(None);
        }
        let norm = self.norm_kind();
        if !self.model.norms().contains(&norm) {
            let names: Vec<_> = self.model.norms().iter().map(|n| n.name()).collect();
            return Err(invalid("norm", norm.name(), format!("one of {} for --model gpt", names.join(", "))));
        }
        for (key, v) in [("n_layer", self.n_layer), ("n_head", self.n_head), ("n_embd", self.n_embd), ("block_size", self.block_size)] {
            if v == 0 {
                return Err(invalid(key, 0, "an integer >= 1"));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(invalid("n_embd", self.n_embd, format!("a multiple of --n-head {} (heads split the width)", self.n_head)));
        }
        if self.qk_norm && norm == NormKind::None {
            return Err(invalid("qk_norm", true, "--norm ln or rms (QK-norm uses the blocks' normalization)"));
        }
        Ok(Some(GptShape {
            n_layer: self.n_layer,
            n_head: self.n_head,
            n_embd: self.n_embd,
            block_size: self.block_size,
            qk_norm: self.qk_norm,
            tie_embeddings: self.tie_embeddings,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_external_run_reads_back_and_is_never_trained() {
        let ext = External {
            source: "normwd.torch.Monitor".into(),
            model: "ResNet".into(),
            optimizer: "SGD".into(),
            lr_varies: true,
            no_closed_form: false,
            lr_range: Some([0.0, 0.1]),
            lr_initial: Some(0.0),
            scheduler: Some("LambdaLR".into()),
        };
        let c = RunConfig { external: Some(ext.clone()), ..Default::default() };
        let text = toml::to_string(&c).unwrap();
        assert!(text.contains("[external]"), "{text}");
        let back = RunConfig::from_toml("config.toml", &text).unwrap();
        assert_eq!(back.external, Some(ext));
        let e = back.resolve().unwrap_err().to_string();
        assert!(e.contains("trained elsewhere"), "{e}");
        assert!(!toml::to_string(&RunConfig::default()).unwrap().contains("external"));
    }

    #[test]
    fn round_trip_and_unknown_keys() {
        let c = RunConfig { lr: 0.05, model: ModelKind::Mlp, ..Default::default() };
        assert_eq!(RunConfig::from_toml("x", &c.to_toml()).unwrap(), c);
        let e = RunConfig::from_toml("run.toml", "lr = 0.1\nlearning_rate = 3\n").unwrap_err().to_string();
        assert!(e.contains("run.toml") && e.contains("learning_rate"), "{e}");
        let e = RunConfig::from_toml("run.toml", "lr = \"fast\"\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        // Unset settings are left out of the file, not written as markers.
        let text = RunConfig::default().to_toml();
        for key in ["decay", "decay_policy", "si_weight_decay"] {
            assert!(!text.lines().any(|l| l.starts_with(&format!("{key} "))), "{key} is unset: {text}");
        }
    }

    #[test]
    fn names_are_checked_where_they_are_read() {
        let bad = |text: &str| RunConfig::from_toml("run.toml", text).unwrap_err().to_string();
        let e = bad("model = \"vgg\"\n");
        assert!(e.contains("\"vgg\": expected one of mlp, convnet, resnet20, gpt") && e.contains("model"), "{e}");
        assert!(bad("norm = \"xx\"\n").contains("expected one of bn, ln, gn, rms, wn, none"));
        let e = bad("optimizer = \"rmsprop\"\n");
        assert!(e.contains("expected one of sgd, adam, adamw, sgdp, adamp, lars, lamb, fixed-norm, rv-sgd, rv-adamw, lion"), "{e}");
        assert!(bad("decay_policy = \"some\"\n").contains("exclude-norm-bias"));
        assert!(bad("schedule = \"exponential\"\n").contains("expected one of constant, step, cosine, linear"));
    }

    #[test]
    fn resolve_ranges() {
        let bad = |c: RunConfig| c.resolve().unwrap_err().to_string();
        assert!(bad(RunConfig { batch_size: 0, ..Default::default() }).contains("--batch-size 0"));
        assert!(bad(RunConfig { lr: -1.0, ..Default::default() }).contains("--lr -1"));
        assert!(bad(RunConfig { weight_decay: f64::NAN, ..Default::default() }).contains("--weight-decay NaN"));
        assert!(bad(RunConfig { si_weight_decay: Some(-0.5), ..Default::default() }).contains("--si-weight-decay -0.5"));
        let r = RunConfig { optimizer: OptimKind::Adamw, ..Default::default() }.resolve().unwrap();
        assert_eq!(r.optim.decay, DecayMode::Decoupled);
        assert_eq!(r.policy.policy, DecayPolicy::ExcludeNormBias);
    }

    #[test]
    fn gpt_settings_are_checked() {
        let gpt = |c: RunConfig| RunConfig { model: ModelKind::Gpt, ..c };
        let bad = |c: RunConfig| c.resolve().unwrap_err().to_string();
        let r = gpt(RunConfig::default()).resolve().unwrap();
        assert_eq!(r.gpt.map(|g| (g.n_layer, g.head_dim(), g.block_size)), Some((4, 32, 64)));
        assert_eq!(r.norm, NormKind::Ln, "a gpt's default norm is layer norm");
        assert_eq!(RunConfig::default().resolve().unwrap().norm, NormKind::Bn);
        assert!(bad(gpt(RunConfig { norm: Some(NormKind::Bn), ..Default::default() }))
            .contains("--norm bn: expected one of ln, rms, none for --model gpt"));
        assert!(bad(gpt(RunConfig { n_embd: 130, ..Default::default() })).contains("--n-embd 130: expected a multiple of --n-head 4"));
        assert!(bad(gpt(RunConfig { n_layer: 0, ..Default::default() })).contains("--n-layer 0"));
        assert!(bad(gpt(RunConfig { norm: Some(NormKind::None), qk_norm: true, ..Default::default() })).contains("--norm ln or rms"));
        assert!(bad(RunConfig { qk_norm: true, ..Default::default() }).contains("--qk-norm true: expected --model gpt"));
        let lion = RunConfig { optimizer: OptimKind::Lion, ..Default::default() }.resolve().unwrap();
        assert_eq!((lion.optim.betas, lion.optim.decay), ((0.9, 0.99), DecayMode::Decoupled));
        let r = RunConfig { decay_embeddings: Some(true), ..Default::default() }.resolve().unwrap();
        assert_eq!(r.policy.embeddings, Some(true));
    }

    #[test]
    fn runs_written_before_typed_settings_still_load() {
        let old = "model = \"mlp\"\ndecay = \"\"\ndecay_policy = \"exclude-norm-bias\"\nsi_weight_decay = -1.0\n";
        let c = RunConfig::from_toml("old.toml", old).unwrap();
        assert_eq!((c.decay, c.si_weight_decay, c.decay_policy), (None, None, Some(DecayPolicy::ExcludeNormBias)));
        let c = RunConfig::from_toml("x", "decay = \"decoupled\"\nsi_weight_decay = 0.0\n").unwrap();
        assert_eq!((c.decay, c.si_weight_decay), (Some(DecayMode::Decoupled), Some(0.0)));
    }

    #[test]
    fn unset_policy_fits_the_optimizer() {
        let r = RunConfig { optimizer: OptimKind::FixedNorm, ..Default::default() }.resolve().unwrap();
        assert_eq!(r.policy.policy, DecayPolicy::NoneOnScaleInvariant);
        let r = RunConfig { compensate_elr: true, ..Default::default() }.resolve().unwrap();
        assert_eq!(r.policy.policy, DecayPolicy::NoneOnScaleInvariant);
        let explicit = RunConfig { optimizer: OptimKind::FixedNorm, decay_policy: Some(DecayPolicy::All), ..Default::default() };
        assert_eq!(explicit.resolve().unwrap().policy.policy, DecayPolicy::All, "an explicit choice is kept (the optimizer refuses it)");
    }
}
