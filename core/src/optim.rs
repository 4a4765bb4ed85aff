//! Optimizer settings as data: the kinds, their hyperparameters and remedy settings, their
//! domains, the decay each tensor gets, and which closed form of THEORY.md describes each
//! optimizer. The engine turns an [`OptimConfig`] into a chain of transforms; here there are
//! no tensors. May import [`crate::roles`] and [`crate::theory`].
//!
//! Weight-decay convention (THEORY.md): `weight_decay = lambda` adds `lambda * w` to the
//! gradient (`coupled`, the loss term `lambda/2 ||w||^2`) or applies `w -= lr * lambda * w`
//! (`decoupled`, SGDW / AdamW, PyTorch's `AdamW`).

use crate::roles::{DecayPolicy, DecayRule, Granularity, Group, ParamInfo, Role};
use crate::theory::muon::AdjustLr;
use crate::theory::{self, Family};
use serde::{Deserialize, Serialize};

crate::choice! {
    /// How a remedy learns which tensors are scale-invariant (the `--invariance` flag).
    pub enum Invariance {
        /// From the graph (`params`): weights that feed a normalization layer.
        Structural = "structural",
        /// From the data, each step: AdamP's cosine test on the gradient.
        Numeric = "numeric",
    }
}

crate::choice! {
    /// Where the fixed-norm update holds each scale-invariant weight (`--fixed-norm-target`).
    pub enum NormTarget {
        /// The norm it had before the first update.
        Init = "init",
        /// Unit norm (then the effective learning rate equals the learning rate).
        Unit = "unit",
    }
}

crate::choice! {
    /// Over which slices the fixed-norm update holds the norm (`--fixed-norm-granularity`).
    pub enum FixedNormGranularity {
        /// Each output channel.
        Channel = "channel",
        /// The whole tensor.
        Tensor = "tensor",
    }
}

crate::choice! {
    /// An optimizer as the closed forms of THEORY.md name it: what `predict` takes, and what
    /// `inspect` is told a training used. With its decay mode it decides the theory's
    /// [`Family`] ([`Rule::family`]).
    pub enum Rule {
        /// SGD with momentum.
        Sgd = "sgd",
        /// Adam (L2 in the gradient unless `--decay decoupled`).
        Adam = "adam",
        /// AdamW (decoupled decay unless `--decay coupled`).
        Adamw = "adamw",
        /// Lion (Chen et al. 2023): the sign of a momentum blend, decoupled decay (F9).
        Lion = "lion",
        /// NAdam (PyTorch's `torch.optim.NAdam`): Adam with a Nesterov blend of the gradient and
        /// the first moment, L2 unless `decoupled_weight_decay` ([`crate::theory::angle_nadam`]).
        /// The engine does not train with it.
        Nadam = "nadam",
        /// Muon (PyTorch's `torch.optim.Muon`): Newton-Schulz-orthogonalized momentum on hidden
        /// matrices, decoupled decay at the base lr (F18, [`crate::theory::muon`]).
        Muon = "muon",
    }
}

impl Rule {
    /// The theory's family of this rule with L2 in the gradient (`coupled`) or decoupled decay;
    /// `nesterov` is Muon's blend (SGD's Nesterov does not move F7).
    pub fn family(self, coupled: bool, momentum: f64, nesterov: bool, betas: (f64, f64)) -> Family {
        match (self, coupled) {
            (Rule::Muon, _) => Family::Muon { b: momentum, nesterov },
            (Rule::Sgd, coupled) => Family::Sgd { mu: momentum, coupled },
            (Rule::Adam | Rule::Adamw, true) => Family::AdamL2,
            (Rule::Adam | Rule::Adamw, false) => Family::AdamW { b1: betas.0, b2: betas.1 },
            (Rule::Lion, _) => Family::Lion { b1: betas.0, b2: betas.1 },
            (Rule::Nadam, true) => Family::AdamL2,
            // `momentum` is NAdam's blend `mu_t` at the step (it tends to beta1).
            (Rule::Nadam, false) => Family::Nadam { b1: betas.0, mu: momentum },
        }
    }

    /// The optimizer kind of the same name the engine trains with, whose row of
    /// [`OptimKind::facts`] holds this rule's defaults and step scale (`None` for NAdam).
    pub fn kind(self) -> Option<OptimKind> {
        match self {
            Rule::Sgd => Some(OptimKind::Sgd),
            Rule::Adam => Some(OptimKind::Adam),
            Rule::Adamw => Some(OptimKind::Adamw),
            Rule::Lion => Some(OptimKind::Lion),
            Rule::Muon => Some(OptimKind::Muon),
            Rule::Nadam => None,
        }
    }

    /// This rule's row of facts: its kind's, or for NAdam Adam's (PyTorch's NAdam has Adam's
    /// defaults: L2, betas (0.9, 0.999), a per-element step).
    fn facts(self) -> Facts {
        self.kind().unwrap_or(OptimKind::Adam).facts()
    }

    /// Whether decay is decoupled when the user did not say (as PyTorch's AdamW and Lion).
    pub fn decoupled_by_default(self) -> bool {
        self.facts().decay == DecayMode::Decoupled
    }

    /// The betas when the user gave none (PyTorch's Adam; Lion's paper).
    pub fn default_betas(self) -> (f64, f64) {
        self.facts().betas
    }

    /// How the update scales with the gradient, which decides the effective lr.
    pub fn step_scale(self) -> StepScale {
        self.facts().step
    }
}

/// A training's optimizer as the closed forms see it: what `predict` predicts for, and what
/// `inspect` is told a training used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hyper {
    /// The optimizer.
    pub optimizer: Rule,
    /// Learning rate.
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// L2 in the gradient (true) or decoupled.
    pub coupled: bool,
    /// Adam / Lion betas.
    pub betas: (f64, f64),
    /// Muon's Nesterov blend (PyTorch's default `True`; SGD's Nesterov does not move F7).
    pub nesterov: bool,
}

impl Hyper {
    /// The theory's family of this training.
    pub fn family(&self) -> Family {
        self.optimizer.family(self.coupled, self.momentum, self.nesterov, self.betas)
    }

    /// The rate per step at which a scale-invariant weight's norm relaxes (F6): `lr*wd`, with
    /// L2 in an SGD gradient divided by `1-mu` (the decay passes through the momentum).
    pub fn relax_rate(&self) -> f64 {
        let sgd_l2 = self.optimizer == Rule::Sgd && self.coupled;
        self.lr * if sgd_l2 { self.weight_decay / (1.0 - self.momentum) } else { self.weight_decay }
    }

    /// Checks every value's domain (the flags' names: `lr`, `weight-decay`, `momentum`, `betas`).
    pub fn validate(&self) -> Result<(), OptimError> {
        check_shared(self.lr, self.weight_decay, self.momentum, self.betas)
    }

    /// The rate per step at which decay alone shrinks any tensor it reaches: [`Hyper::relax_rate`],
    /// except for L2 in an Adam gradient, which Adam's denominator rescales per coordinate by an
    /// amount the hyperparameters do not tell (`None`).
    pub fn decay_rate(&self) -> Option<f64> {
        (self.family() != Family::AdamL2).then(|| self.relax_rate())
    }
}

/// Errors in optimizer settings.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// A hyperparameter is out of its domain.
    #[error("--{flag} {value}: expected {expected}")]
    Invalid {
        /// The flag / config key.
        flag: &'static str,
        /// The value seen.
        value: String,
        /// What is allowed.
        expected: String,
    },
    /// A saved optimizer state does not fit the model.
    #[error("optimizer state: {0}")]
    State(String),
}

crate::choice! {
    /// The optimizer (the `--optimizer` flag).
    pub enum OptimKind {
        /// SGD with (optional) momentum / Nesterov, PyTorch semantics.
        Sgd = "sgd",
        /// Adam (coupled L2 by default).
        Adam = "adam",
        /// AdamW (decoupled decay by default).
        Adamw = "adamw",
        /// SGDP (Heo et al. 2021): SGD whose update loses its radial part on scale-invariant tensors.
        Sgdp = "sgdp",
        /// AdamP (Heo et al. 2021).
        Adamp = "adamp",
        /// LARS (You et al. 2017): SGD with a layer-wise trust ratio.
        Lars = "lars",
        /// LAMB (You et al. 2020): Adam with a layer-wise trust ratio.
        Lamb = "lamb",
        /// SGD with momentum, scale-invariant weights held at a fixed norm (van Laarhoven 2017).
        FixedNorm = "fixed-norm",
        /// RV-SGDM (Kosson et al. 2024): rotational wrapper around SGD with momentum.
        RvSgd = "rv-sgd",
        /// RV-AdamW (Kosson et al. 2024): rotational wrapper around AdamW.
        RvAdamw = "rv-adamw",
        /// Lion (Chen et al. 2023, `lion-pytorch`): `sign(b1*m + (1-b1)*g)`, decoupled decay.
        Lion = "lion",
        /// Muon (PyTorch's `torch.optim.Muon`) on hidden matrices and flattened conv kernels,
        /// AdamW on the rest ([`crate::roles::muon_takes`]): one optimizer with two branches.
        Muon = "muon",
    }
}

/// How an optimizer's step scales with the gradient: what decides the effective learning rate
/// of a scale-invariant weight, whose gradient scales as `1/||w||`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepScale {
    /// The step is proportional to the gradient (SGD and its remedies): effective lr
    /// `lr/||w||^2`.
    Gradient,
    /// The step does not scale with the gradient (Adam's denominator, Lion's sign, Muon's
    /// orthogonalization): effective lr `lr/||w||`.
    PerElement,
}

impl StepScale {
    /// The effective learning rate of a weight of norm `norm` stepped at `lr`: the one rule the
    /// engine's probes, `inspect` and the Python package share.
    pub fn effective_lr(self, lr: f64, norm: f64) -> f64 {
        match self {
            StepScale::Gradient => theory::effective_lr_sgd(lr, norm),
            StepScale::PerElement => theory::effective_lr_adam(lr, norm),
        }
    }
}

/// Which closed-form equilibrium of THEORY.md an optimizer kind's scale-invariant weights have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Equilibrium {
    /// The norms relax to the rule's equilibrium over `1/(lr*wd)` steps.
    Relaxes(Rule),
    /// A rotational wrapper imposes the rule's equilibrium angle from the first step (nothing
    /// relaxes, so no run is too short for it).
    Imposed(Rule),
    /// No closed form (the projections and trust ratios of SGDP, AdamP, LARS, LAMB, fixed norm).
    None,
}

/// Every fact about an optimizer kind that a decision needs, in one row of
/// [`OptimKind::facts`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Facts {
    /// The closed form its scale-invariant weights follow.
    pub equilibrium: Equilibrium,
    /// The decay mode when `--decay` is not given.
    pub decay: DecayMode,
    /// Whether the kind fixes its decay mode (`--decay` may only restate it).
    pub decay_fixed: bool,
    /// How the step scales with the gradient (the effective-lr rule).
    pub step: StepScale,
    /// Whether `--nesterov` applies (an SGD-type momentum).
    pub nesterov: bool,
    /// Whether `--corrected-decay` and `--cautious-decay` apply (the plain optimizers and Lion,
    /// whose decay is one piece of the chain the options wrap).
    pub decay_options: bool,
    /// The betas when the user gave none.
    pub betas: (f64, f64),
    /// The decay policy when the user chose none: optimizers that hold scale-invariant weights
    /// at a norm must not decay them (decay there would be refused by
    /// [`OptimConfig::validate_for`]); the others exclude norm layers and biases, as timm and
    /// fastai do.
    pub policy: DecayPolicy,
}

/// PyTorch's Adam betas.
const ADAM_BETAS: (f64, f64) = (0.9, 0.999);

impl OptimKind {
    /// This kind's facts: the one table every decision about an optimizer reads.
    ///
    /// Adding a kind touches:
    /// - here: a variant of [`OptimKind`] and its row (no arm is a wildcard, so the compiler
    ///   points at this table and at the engine's one match on the kind, `chain` in
    ///   `src/optim/alias.rs`, which builds it from pieces);
    /// - if it follows a new closed form: a [`Rule`] variant (its name for `predict`, `inspect`
    ///   and the Python package) with its [`Rule::kind`] and [`Rule::family`], and its
    ///   [`Family`] in `core/src/theory/` with the formulas and their simulation test;
    /// - the engine's tests: a step against a hand-written reference (`src/optim/`), and its
    ///   saved state's names in `src/optim/state.rs`'s round-trip test;
    /// - the Python package's `_optimizer._rule`, if PyTorch has a class for it;
    /// - `OptimKind::ALL`'s spelling in the config test that lists the names.
    ///
    /// Everything else (decay mode, effective lr, Nesterov, which decay options apply, betas,
    /// decay policy, the budget, predictions) reads this row.
    pub fn facts(self) -> Facts {
        use DecayMode::{Coupled, Decoupled};
        use Equilibrium::{Imposed, Relaxes};
        use StepScale::{Gradient, PerElement};
        let exclude = DecayPolicy::ExcludeNormBias;
        let row = |equilibrium, decay, decay_fixed, step, nesterov, decay_options| Facts {
            equilibrium,
            decay,
            decay_fixed,
            step,
            nesterov,
            decay_options,
            betas: ADAM_BETAS,
            policy: exclude,
        };
        match self {
            OptimKind::Sgd => row(Relaxes(Rule::Sgd), Coupled, false, Gradient, true, true),
            OptimKind::Adam => row(Relaxes(Rule::Adam), Coupled, false, PerElement, false, true),
            OptimKind::Adamw => row(Relaxes(Rule::Adamw), Decoupled, false, PerElement, false, true),
            OptimKind::Sgdp => row(Equilibrium::None, Decoupled, true, Gradient, true, false),
            OptimKind::Adamp => row(Equilibrium::None, Decoupled, true, PerElement, false, false),
            OptimKind::Lars => row(Equilibrium::None, Coupled, true, Gradient, false, false),
            OptimKind::Lamb => row(Equilibrium::None, Decoupled, true, PerElement, false, false),
            OptimKind::FixedNorm => {
                Facts { policy: DecayPolicy::NoneOnScaleInvariant, ..row(Equilibrium::None, Coupled, true, Gradient, true, false) }
            }
            OptimKind::RvSgd => row(Imposed(Rule::Sgd), Coupled, true, Gradient, true, false),
            OptimKind::RvAdamw => row(Imposed(Rule::Adamw), Decoupled, true, PerElement, false, false),
            // Lion's paper's betas.
            OptimKind::Lion => Facts { betas: (0.9, 0.99), ..row(Relaxes(Rule::Lion), Decoupled, false, PerElement, false, true) },
            // Decoupled always (PyTorch's Muon and AdamW); its momentum and Nesterov are Muon's own
            // settings ([`MuonConfig`]), not SGD's flags.
            OptimKind::Muon => row(Relaxes(Rule::Muon), Decoupled, true, PerElement, false, true),
        }
    }

    /// The closed form this kind follows, relaxed to or imposed (`None` without one).
    pub fn rule(self) -> Option<Rule> {
        match self.facts().equilibrium {
            Equilibrium::Relaxes(r) | Equilibrium::Imposed(r) => Some(r),
            Equilibrium::None => None,
        }
    }

    /// The decay mode used when `--decay` is not given.
    pub fn default_decay(self) -> DecayMode {
        self.facts().decay
    }

    /// The betas when the user gave none.
    pub fn default_betas(self) -> (f64, f64) {
        self.facts().betas
    }
}

/// Muon's own settings (`--optimizer muon`): its matrices' lr, decay, momentum and iteration;
/// the other tensors take the AdamW settings (`lr`, `weight_decay`, `betas`, `eps`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MuonConfig {
    /// Base lr of Muon's matrices (PyTorch's default 1e-3; Keller Jordan's 0.02).
    pub lr: f64,
    /// Decay of Muon's matrices, decoupled at the base lr; `None`: `weight_decay`.
    pub weight_decay: Option<f64>,
    /// Momentum `b` of `B <- b B + (1-b) G`.
    pub momentum: f64,
    /// Nesterov's blend `U = (1-b) G + b B`.
    pub nesterov: bool,
    /// The step's shape adjustment.
    pub adjust_lr: AdjustLr,
    /// Newton-Schulz steps.
    pub ns_steps: usize,
}

impl Default for MuonConfig {
    fn default() -> Self {
        MuonConfig { lr: 0.02, weight_decay: None, momentum: 0.95, nesterov: true, adjust_lr: AdjustLr::Original, ns_steps: 5 }
    }
}

/// Settings of the remedies (ignored by the plain optimizers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemedyConfig {
    /// Where SGDP / AdamP learn scale-invariance.
    pub invariance: Invariance,
    /// AdamP's cosine-test `delta`.
    pub delta: f64,
    /// AdamP's decay multiplier on projected tensors.
    pub wd_ratio: f64,
    /// LARS trust coefficient.
    pub trust_coeff: f64,
    /// LARC clipping.
    pub lars_clip: bool,
    /// Fixed norm per output channel (else per tensor).
    pub fixed_norm_per_channel: bool,
    /// Fixed norm target.
    pub fixed_norm_target: NormTarget,
    /// Jane Street's effective-lr compensation (scale-invariant weights, no decay there).
    pub compensate_elr: bool,
    /// Decay of the rotational wrapper's running RMS of update sizes (0 = each step's own).
    pub rv_rms_decay: f64,
}

impl Default for RemedyConfig {
    fn default() -> Self {
        RemedyConfig {
            invariance: Invariance::Structural,
            delta: 0.1,
            wd_ratio: 0.1,
            trust_coeff: 0.001,
            lars_clip: false,
            fixed_norm_per_channel: true,
            fixed_norm_target: NormTarget::Init,
            compensate_elr: false,
            rv_rms_decay: 0.0,
        }
    }
}

crate::choice! {
    /// How weight decay enters the update (the `--decay` flag).
    pub enum DecayMode {
        /// L2 added to the gradient, before momentum / Adam scaling.
        Coupled = "coupled",
        /// Applied to the weights directly, scaled by the learning rate only.
        Decoupled = "decoupled",
    }
}

/// Hyperparameters of an optimizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// Base optimizer.
    pub kind: OptimKind,
    /// Base learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// SGD Nesterov momentum.
    pub nesterov: bool,
    /// Weight decay `lambda` (THEORY.md convention).
    pub weight_decay: f64,
    /// Coupled or decoupled decay.
    pub decay: DecayMode,
    /// Adam betas.
    pub betas: (f64, f64),
    /// Adam epsilon.
    pub eps: f64,
    /// Learning-rate multiplier for the scale-invariant group.
    pub si_lr_scale: f64,
    /// Weight decay for the scale-invariant group (defaults to `weight_decay`).
    pub si_weight_decay: Option<f64>,
    /// Settings of the remedies.
    pub remedy: RemedyConfig,
    /// Corrected decay on scale-invariant tensors (AdamC / SGDC, F14): the coefficient follows
    /// the schedule, `weight_decay * lr_t/lr_max`.
    #[serde(default)]
    pub corrected_decay: bool,
    /// Cautious decay (F16): decoupled decay only where the step's direction and the weight
    /// agree in sign.
    #[serde(default)]
    pub cautious_decay: bool,
    /// Muon's settings (used by `--optimizer muon` only).
    #[serde(default)]
    pub muon: MuonConfig,
}

fn check(flag: &'static str, v: f64, ok: bool, expected: &'static str) -> Result<(), OptimError> {
    if v.is_finite() && ok {
        Ok(())
    } else {
        Err(OptimError::Invalid { flag, value: v.to_string(), expected: expected.into() })
    }
}

/// The domains every optimizer's settings share, checked for [`Hyper`] and [`OptimConfig`] alike.
fn check_shared(lr: f64, weight_decay: f64, momentum: f64, betas: (f64, f64)) -> Result<(), OptimError> {
    check("lr", lr, lr > 0.0, "a finite number > 0")?;
    check("weight-decay", weight_decay, weight_decay >= 0.0, "a finite number >= 0")?;
    check("momentum", momentum, (0.0..1.0).contains(&momentum), "a number in [0, 1)")?;
    check("betas", betas.0, (0.0..1.0).contains(&betas.0), "beta1 in [0, 1)")?;
    check("betas", betas.1, (0.0..1.0).contains(&betas.1), "beta2 in [0, 1)")
}

impl OptimConfig {
    /// Checks every hyperparameter's domain.
    pub fn validate(&self) -> Result<(), OptimError> {
        check_shared(self.lr, self.weight_decay, self.momentum, self.betas)?;
        check("eps", self.eps, self.eps > 0.0, "a finite number > 0")?;
        check("si-lr-scale", self.si_lr_scale, self.si_lr_scale > 0.0, "a finite number > 0")?;
        if let Some(w) = self.si_weight_decay {
            check("si-weight-decay", w, w >= 0.0, "a finite number >= 0")?;
        }
        let facts = self.kind.facts();
        if self.nesterov && (!facts.nesterov || self.momentum == 0.0) {
            return Err(OptimError::Invalid {
                flag: "nesterov",
                value: "true".into(),
                expected: "an SGD-type optimizer with --momentum > 0".into(),
            });
        }
        let r = &self.remedy;
        check("trust-coeff", r.trust_coeff, r.trust_coeff > 0.0, "a finite number > 0 (LARS's trust coefficient)")?;
        check("delta", r.delta, r.delta > 0.0, "a finite number > 0")?;
        check("wd-ratio", r.wd_ratio, r.wd_ratio >= 0.0, "a finite number >= 0")?;
        check("rv-rms-decay", r.rv_rms_decay, (0.0..1.0).contains(&r.rv_rms_decay), "a number in [0, 1)")?;
        if facts.decay_fixed && self.decay != facts.decay {
            let fixed: Vec<&str> = OptimKind::ALL.iter().filter(|k| k.facts().decay_fixed).map(|k| k.name()).collect();
            return Err(OptimError::Invalid {
                flag: "decay",
                value: self.decay.name().into(),
                expected: format!("the optimizer's own decay mode (leave --decay unset for {})", fixed.join(", ")),
            });
        }
        if self.cautious_decay && !(facts.decay_options && self.decay == DecayMode::Decoupled) {
            return Err(OptimError::Invalid {
                flag: "cautious-decay",
                value: "true".into(),
                expected:
                    "decoupled decay (--optimizer adamw or lion, or sgd / adam with --decay decoupled): the rule masks the decoupled step"
                        .into(),
            });
        }
        if self.corrected_decay && (self.family() == Family::AdamL2 || !facts.decay_options) {
            return Err(OptimError::Invalid {
                flag: "corrected-decay",
                value: "true".into(),
                expected: "--optimizer sgd (SGDC), adamw (AdamC), lion, or adam with --decay decoupled".into(),
            });
        }
        let m = &self.muon;
        check("muon-lr", m.lr, m.lr > 0.0, "a finite number > 0")?;
        if let Some(w) = m.weight_decay {
            check("muon-weight-decay", w, w >= 0.0, "a finite number >= 0")?;
        }
        check("muon-momentum", m.momentum, (0.0..1.0).contains(&m.momentum), "a number in [0, 1)")?;
        if !(1..100).contains(&m.ns_steps) {
            return Err(OptimError::Invalid {
                flag: "muon-ns-steps",
                value: m.ns_steps.to_string(),
                expected: "an integer in [1, 99]".into(),
            });
        }
        if (self.corrected_decay || self.cautious_decay) && r.compensate_elr {
            return Err(OptimError::Invalid {
                flag: "compensate-elr",
                value: "true".into(),
                expected: "no --corrected-decay / --cautious-decay (the compensation replaces decay on scale-invariant weights)".into(),
            });
        }
        if r.compensate_elr && self.kind != OptimKind::Sgd {
            return Err(OptimError::Invalid { flag: "compensate-elr", value: "true".into(), expected: "--optimizer sgd".into() });
        }
        Ok(())
    }

    /// Checks settings that depend on which tensors are decayed.
    pub fn validate_for(&self, params: &[ParamInfo]) -> Result<(), OptimError> {
        let si_decayed = params.iter().any(|p| p.scale_invariant && self.weight_decay_for(p) > 0.0);
        match self.kind {
            OptimKind::FixedNorm if si_decayed => Err(OptimError::Invalid {
                flag: "weight-decay",
                value: self.si_weight_decay.unwrap_or(self.weight_decay).to_string(),
                expected: "0 on scale-invariant weights with fixed-norm: their norm is held fixed, so decay there would do nothing (use --decay-policy none-on-scale-invariant or --si-weight-decay 0)".into(),
            }),
            _ if self.remedy.compensate_elr && si_decayed => Err(OptimError::Invalid {
                flag: "weight-decay",
                value: self.si_weight_decay.unwrap_or(self.weight_decay).to_string(),
                expected: "0 on scale-invariant weights with --compensate-elr (the compensation replaces decay there: use --decay-policy none-on-scale-invariant)".into(),
            }),
            OptimKind::RvSgd | OptimKind::RvAdamw if params.iter().any(|p| p.scale_invariant) && self.rotation_angle(params) == 0.0 => Err(OptimError::Invalid {
                flag: "weight-decay",
                value: "0".into(),
                expected: "> 0 on scale-invariant weights for the rotational wrapper: its target angle sqrt(2*lr*wd*...) would be 0".into(),
            }),
            _ => Ok(()),
        }
    }

    /// The rotational wrapper's target angle per step at the base lr (F7 for RV-SGDM, F8 for RV-AdamW).
    pub fn rotation_angle(&self, params: &[ParamInfo]) -> f64 {
        let wd = params.iter().find(|p| p.scale_invariant).map(|p| self.weight_decay_for(p)).unwrap_or(0.0);
        theory::predicted_angle(self.family(), self.lr * self.si_lr_scale, wd, None).unwrap_or(0.0)
    }

    /// SGD with momentum and L2 in the gradient (PyTorch's `SGD`), every other setting at its default.
    pub fn sgd(lr: f64, momentum: f64, weight_decay: f64) -> Self {
        OptimConfig {
            kind: OptimKind::Sgd,
            lr,
            momentum,
            nesterov: false,
            weight_decay,
            decay: DecayMode::Coupled,
            betas: OptimKind::Sgd.facts().betas,
            eps: 1e-8,
            si_lr_scale: 1.0,
            si_weight_decay: None,
            remedy: RemedyConfig::default(),
            corrected_decay: false,
            cautious_decay: false,
            muon: MuonConfig::default(),
        }
    }

    /// `kind` with its own decay mode, momentum 0.9 and Adam's default betas.
    pub fn of_kind(kind: OptimKind, lr: f64, weight_decay: f64) -> Self {
        OptimConfig { kind, decay: kind.default_decay(), ..Self::sgd(lr, 0.9, weight_decay) }
    }

    /// Whether this optimizer steps a tensor with Muon (`--optimizer muon` and
    /// [`crate::roles::muon_takes`]).
    pub fn muon_steps(&self, info: &ParamInfo) -> bool {
        self.kind == OptimKind::Muon && info.muon()
    }

    /// A tensor's base lr before the schedule: Muon's for its matrices, `lr` for the rest, times
    /// `si_lr_scale` in the scale-invariant group.
    pub fn base_lr(&self, info: &ParamInfo) -> f64 {
        let lr = if self.muon_steps(info) { self.muon.lr } else { self.lr };
        lr * if info.group == Group::ScaleInvariant { self.si_lr_scale } else { 1.0 }
    }

    /// Weight decay applied to a tensor (0 where the policy excludes it): `si_weight_decay` in
    /// the scale-invariant group where given, Muon's for its matrices, `weight_decay` otherwise.
    pub fn weight_decay_for(&self, info: &ParamInfo) -> f64 {
        if !info.decayed {
            0.0
        } else if let (Group::ScaleInvariant, Some(w)) = (info.group, self.si_weight_decay) {
            w
        } else if self.muon_steps(info) {
            self.muon.weight_decay.unwrap_or(self.weight_decay)
        } else {
            self.weight_decay
        }
    }

    /// The theory's family a tensor is stepped under: Muon's for Muon's matrices, AdamW's for
    /// the rest of a Muon run, [`OptimConfig::family`] otherwise.
    pub fn family_for(&self, info: &ParamInfo) -> Family {
        match self.kind {
            OptimKind::Muon if self.muon_steps(info) => Family::Muon { b: self.muon.momentum, nesterov: self.muon.nesterov },
            OptimKind::Muon => Rule::Adamw.family(false, self.momentum, false, self.betas),
            _ => self.family(),
        }
    }

    /// The weight decay of a scale-invariant weight under `rule` (0 where the rule spares such
    /// weights): [`OptimConfig::weight_decay_for`] on one, for what is judged from the settings
    /// alone (a run's budget, a run read back).
    pub fn scale_invariant_decay(&self, rule: impl Into<DecayRule>) -> f64 {
        self.weight_decay_for(&ParamInfo::new("", vec![1, 1], Role::Weight, Some(Granularity::Tensor), rule))
    }

    /// The decay that acts on a tensor at a step with schedule factor `lr_factor` (`lr_t/lr_max`),
    /// as the closed forms take it: [`OptimConfig::weight_decay_for`], times `lr_factor` on
    /// scale-invariant tensors under corrected decay (F14), times [`theory::CAUTIOUS_SHARE`]
    /// under cautious decay (F16, leading order). The one place predictions learn what the
    /// decay options do.
    pub fn effective_decay(&self, info: &ParamInfo, lr_factor: f64) -> f64 {
        let corrected = self.corrected_decay && crate::roles::corrected_decay_applies(info.scale_invariant);
        theory::decay_acting(self.weight_decay_for(info), lr_factor, corrected, self.cautious_decay)
    }

    /// The decay policy that fits this optimizer when the user chose none: optimizers that hold
    /// scale-invariant weights at a norm or compensate their effective lr must not decay them
    /// (decay there would be refused by [`OptimConfig::validate_for`]), the others exclude norm
    /// layers and biases as timm and fastai do.
    pub fn default_policy(&self) -> DecayPolicy {
        if self.remedy.compensate_elr {
            DecayPolicy::NoneOnScaleInvariant
        } else {
            self.kind.facts().policy
        }
    }

    /// The theory's family of this optimizer, the one mapping probes, `predict` and `inspect`
    /// share: its kind's closed form ([`OptimKind::facts`]) under its decay mode. The
    /// compensation replaces decay, so plain SGD's equilibrium does not apply to it.
    pub fn family(&self) -> Family {
        match self.kind.rule() {
            Some(Rule::Muon) => Family::Muon { b: self.muon.momentum, nesterov: self.muon.nesterov },
            Some(rule) if !self.remedy.compensate_elr => {
                rule.family(self.decay == DecayMode::Coupled, self.momentum, self.nesterov, self.betas)
            }
            _ => Family::Other,
        }
    }

    /// The settings of the scale-invariant weights under `rule` when they relax to a
    /// closed-form equilibrium over `1/(lr*wd)` steps: decayed, under an optimizer whose
    /// equilibrium they reach by relaxing (not imposed by a rotational wrapper) and that has a
    /// fixed rate (not L2 in Adam's gradient). What the budget and a run's report judge a run's
    /// length against.
    pub fn relaxing(&self, rule: impl Into<DecayRule>) -> Option<Hyper> {
        let h = self.hyper(rule)?;
        let relaxes = matches!(self.kind.facts().equilibrium, Equilibrium::Relaxes(_));
        (relaxes && h.weight_decay > 0.0 && h.family() != Family::AdamL2).then_some(h)
    }

    /// The optimizer as the closed forms see it (`None` without one), with the decay of the
    /// scale-invariant weights under `rule`: what `predict`, the budget and `inspect` take.
    pub fn hyper(&self, rule: impl Into<DecayRule>) -> Option<Hyper> {
        let optimizer = self.kind.rule().filter(|_| !self.remedy.compensate_elr)?;
        let muon = optimizer == Rule::Muon;
        let probe = ParamInfo::new("", vec![1, 1], Role::Weight, Some(Granularity::Tensor), rule);
        Some(Hyper {
            optimizer,
            lr: self.base_lr(&probe),
            momentum: if muon { self.muon.momentum } else { self.momentum },
            weight_decay: self.weight_decay_for(&probe),
            coupled: self.decay == DecayMode::Coupled,
            betas: self.betas,
            nesterov: if muon { self.muon.nesterov } else { self.nesterov },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decay options are refused, naming the flag, where the rule they change is absent.
    #[test]
    fn decay_options_need_their_rule() {
        let err = |c: OptimConfig| c.validate().unwrap_err().to_string();
        let cautious = |kind, decay| OptimConfig { cautious_decay: true, decay, ..OptimConfig::of_kind(kind, 0.1, 0.01) };
        assert!(err(cautious(OptimKind::Sgd, DecayMode::Coupled)).starts_with("--cautious-decay true: expected decoupled decay"));
        assert!(err(cautious(OptimKind::Lars, DecayMode::Coupled)).contains("--cautious-decay"));
        for (kind, decay) in
            [(OptimKind::Adamw, DecayMode::Decoupled), (OptimKind::Sgd, DecayMode::Decoupled), (OptimKind::Lion, DecayMode::Decoupled)]
        {
            cautious(kind, decay).validate().unwrap();
        }
        let corrected = |kind, decay| OptimConfig { corrected_decay: true, decay, ..OptimConfig::of_kind(kind, 0.1, 0.01) };
        assert!(err(corrected(OptimKind::Adam, DecayMode::Coupled)).starts_with("--corrected-decay true"));
        assert!(err(corrected(OptimKind::Sgdp, DecayMode::Decoupled)).contains("--corrected-decay"));
        for (kind, decay) in
            [(OptimKind::Sgd, DecayMode::Coupled), (OptimKind::Adamw, DecayMode::Decoupled), (OptimKind::Adam, DecayMode::Decoupled)]
        {
            corrected(kind, decay).validate().unwrap();
        }
        let mut c = OptimConfig { corrected_decay: true, ..OptimConfig::sgd(0.1, 0.9, 0.01) };
        c.remedy.compensate_elr = true;
        assert!(err(c).starts_with("--compensate-elr"));
    }

    /// What the predictions take as the decay: the schedule's factor on scale-invariant tensors
    /// under corrected decay, half under cautious decay.
    #[test]
    fn effective_decay_follows_the_options() {
        let si = ParamInfo::new(
            "w",
            vec![4, 4],
            crate::roles::Role::Weight,
            Some(crate::roles::Granularity::Tensor),
            DecayPolicy::ExcludeNormBias,
        );
        let other = ParamInfo::new("v", vec![4, 4], crate::roles::Role::Weight, None, DecayPolicy::ExcludeNormBias);
        let c = OptimConfig { corrected_decay: true, ..OptimConfig::sgd(0.1, 0.9, 0.01) };
        assert!((c.effective_decay(&si, 0.25) - 0.0025).abs() < 1e-15);
        assert_eq!(c.effective_decay(&other, 0.25), 0.01);
        let c = OptimConfig { cautious_decay: true, ..c };
        assert!((c.effective_decay(&other, 0.25) - 0.005).abs() < 1e-15);
    }

    #[test]
    fn default_policy_spares_what_the_optimizer_holds_fixed() {
        let c = OptimConfig::of_kind(OptimKind::FixedNorm, 0.1, 5e-4);
        assert_eq!(c.default_policy(), DecayPolicy::NoneOnScaleInvariant);
        let mut c = OptimConfig::sgd(0.1, 0.9, 5e-4);
        assert_eq!(c.default_policy(), DecayPolicy::ExcludeNormBias);
        c.remedy.compensate_elr = true;
        assert_eq!(c.default_policy(), DecayPolicy::NoneOnScaleInvariant);
    }
}
