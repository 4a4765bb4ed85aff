//! Optimizers as chains of small transforms (optax's design): each piece turns the incoming
//! update (at first the gradient) into the next one, keeping its own per-parameter state.
//! The chain's output is the delta added to the parameter. Tensors are seen as
//! `[rows, cols]` views with the output channel as the row, so per-channel pieces
//! (projections, rotations) need no special cases.

use crate::params::ParamInfo;
use burn::tensor::Tensor;
use std::collections::BTreeMap;

/// What a transform knows about the parameter and the step.
pub struct Ctx<'a> {
    /// The parameter's description (role, invariance, group).
    pub info: &'a ParamInfo,
    /// Learning rate for this parameter at this step (schedule and group scale applied).
    pub lr: f64,
    /// Weight decay for this parameter (0 where the policy excludes it).
    pub weight_decay: f64,
    /// 1-based number of this update.
    pub step: u64,
    /// The raw gradient (for tests that look at it, such as AdamP's cosine test).
    pub grad: &'a Tensor<2>,
    /// The lr schedule's factor at this step (the rotational wrapper scales its angle by it).
    pub lr_factor: f64,
    /// Multiplier of decoupled decay set by earlier pieces (AdamP's `wd_ratio`).
    pub wd_scale: std::cell::Cell<f64>,
}

/// Per-parameter state of a whole chain: named tensors, keyed `"{index}.{slot}"`.
pub type State = BTreeMap<String, Tensor<2>>;

/// One piece of an optimizer.
pub trait Transform: Send + Sync {
    /// Short name (for logs and errors).
    fn name(&self) -> &'static str;
    /// Maps the update `u` for parameter `w`; `slot(name)` namespaces this piece's state.
    fn apply(&self, u: Tensor<2>, w: &Tensor<2>, state: &mut Slots<'_>, ctx: &Ctx) -> Tensor<2>;
    /// The same map written per element, where it is one (no norms, no projections): a chain
    /// made only of such pieces runs as one pass over memory ([`super::fused`]) instead of one
    /// tensor op per arithmetic step.
    fn elementwise(&self, _ctx: &Ctx) -> Option<Elementwise> {
        None
    }
}

/// A transform as a per-element map, with its scalars as the tensor ops use them (`f32`, cast
/// from the `f64` settings), so the fused pass reproduces [`Transform::apply`] bit for bit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Elementwise {
    /// `u + w * wd`.
    AddDecayed {
        /// The decay coefficient.
        wd: f32,
    },
    /// `buf = buf * mu + u`; output `buf`, or `u + buf * mu` with Nesterov. State: `momentum`.
    Trace {
        /// Momentum.
        mu: f32,
        /// Nesterov's variant.
        nesterov: bool,
    },
    /// Adam's bias-corrected scaling. State: `exp_avg`, `exp_avg_sq`.
    Adam {
        /// `beta1` and `1 - beta1`.
        b1: (f32, f32),
        /// `beta2` and `1 - beta2`.
        b2: (f32, f32),
        /// Bias corrections `1 - beta1^t`, `1 - beta2^t`.
        bc: (f32, f32),
        /// Added to the denominator.
        eps: f32,
    },
    /// `u * by`.
    Scale {
        /// The factor.
        by: f32,
    },
    /// `u - w * by`.
    SubScaledWeights {
        /// The factor.
        by: f32,
    },
}

impl Elementwise {
    /// Names of the state slots the piece keeps, in the order the fused pass takes them.
    pub fn slots(&self) -> &'static [&'static str] {
        match self {
            Elementwise::Trace { .. } => &["momentum"],
            Elementwise::Adam { .. } => &["exp_avg", "exp_avg_sq"],
            _ => &[],
        }
    }
}

/// A transform's view of the chain state: its slots are prefixed by its index.
pub struct Slots<'a> {
    /// The parameter's whole state.
    pub state: &'a mut State,
    /// This transform's index in the chain.
    pub index: usize,
}

impl Slots<'_> {
    fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.index)
    }

    /// Takes a slot out (to update and put back).
    pub fn take(&mut self, name: &str) -> Option<Tensor<2>> {
        let k = self.key(name);
        self.state.remove(&k)
    }

    /// Stores a slot.
    pub fn put(&mut self, name: &str, t: Tensor<2>) {
        let k = self.key(name);
        self.state.insert(k, t);
    }
}

/// Coupled L2: adds `weight_decay * w` to the gradient (the loss term `lambda/2 ||w||^2`).
pub struct AddDecayedWeights;

impl Transform for AddDecayedWeights {
    fn name(&self) -> &'static str {
        "add_decayed_weights"
    }
    fn apply(&self, u: Tensor<2>, w: &Tensor<2>, _: &mut Slots<'_>, ctx: &Ctx) -> Tensor<2> {
        if ctx.weight_decay == 0.0 {
            return u;
        }
        u.add(w.clone().mul_scalar(ctx.weight_decay))
    }
    fn elementwise(&self, ctx: &Ctx) -> Option<Elementwise> {
        // A zero decay is skipped by `apply`; adding `w * 0` could turn a -0 update into +0.
        Some(if ctx.weight_decay == 0.0 { Elementwise::Scale { by: 1.0 } } else { Elementwise::AddDecayed { wd: ctx.weight_decay as f32 } })
    }
}

/// Heavy-ball momentum with PyTorch's semantics (dampening 0): `buf = mu*buf + u`,
/// output `buf`, or `u + mu*buf` with Nesterov.
pub struct Trace {
    /// Momentum `mu`.
    pub momentum: f64,
    /// Nesterov's variant.
    pub nesterov: bool,
}

impl Transform for Trace {
    fn name(&self) -> &'static str {
        "trace"
    }
    fn apply(&self, u: Tensor<2>, _: &Tensor<2>, s: &mut Slots<'_>, _: &Ctx) -> Tensor<2> {
        if self.momentum == 0.0 {
            return u;
        }
        let buf = match s.take("momentum") {
            Some(b) => b.mul_scalar(self.momentum).add(u.clone()),
            None => u.clone(),
        };
        s.put("momentum", buf.clone());
        if self.nesterov {
            u.add(buf.mul_scalar(self.momentum))
        } else {
            buf
        }
    }
    fn elementwise(&self, _: &Ctx) -> Option<Elementwise> {
        Some(if self.momentum == 0.0 {
            Elementwise::Scale { by: 1.0 }
        } else {
            Elementwise::Trace { mu: self.momentum as f32, nesterov: self.nesterov }
        })
    }
}

/// Adam's scaling: bias-corrected first moment over the root of the bias-corrected second
/// moment plus `eps` (PyTorch's placement of `eps`).
pub struct ScaleByAdam {
    /// `beta1`.
    pub b1: f64,
    /// `beta2`.
    pub b2: f64,
    /// Added to the denominator.
    pub eps: f64,
}

impl Transform for ScaleByAdam {
    fn name(&self) -> &'static str {
        "scale_by_adam"
    }
    fn apply(&self, u: Tensor<2>, _: &Tensor<2>, s: &mut Slots<'_>, ctx: &Ctx) -> Tensor<2> {
        let m = match s.take("exp_avg") {
            Some(m) => m.mul_scalar(self.b1).add(u.clone().mul_scalar(1.0 - self.b1)),
            None => u.clone().mul_scalar(1.0 - self.b1),
        };
        let sq = u.clone().mul(u);
        let v = match s.take("exp_avg_sq") {
            Some(v) => v.mul_scalar(self.b2).add(sq.mul_scalar(1.0 - self.b2)),
            None => sq.mul_scalar(1.0 - self.b2),
        };
        s.put("exp_avg", m.clone());
        s.put("exp_avg_sq", v.clone());
        let t = ctx.step as i32;
        let bc1 = 1.0 - self.b1.powi(t);
        let bc2 = 1.0 - self.b2.powi(t);
        let denom = v.div_scalar(bc2).sqrt().add_scalar(self.eps);
        m.div_scalar(bc1).div(denom)
    }
    fn elementwise(&self, ctx: &Ctx) -> Option<Elementwise> {
        let t = ctx.step as i32;
        Some(Elementwise::Adam {
            b1: (self.b1 as f32, (1.0 - self.b1) as f32),
            b2: (self.b2 as f32, (1.0 - self.b2) as f32),
            bc: ((1.0 - self.b1.powi(t)) as f32, (1.0 - self.b2.powi(t)) as f32),
            eps: self.eps as f32,
        })
    }
}

/// Turns a descent direction into a step: `-lr * u`.
pub struct ScaleByLr;

impl Transform for ScaleByLr {
    fn name(&self) -> &'static str {
        "scale_by_lr"
    }
    fn apply(&self, u: Tensor<2>, _: &Tensor<2>, _: &mut Slots<'_>, ctx: &Ctx) -> Tensor<2> {
        u.mul_scalar(-ctx.lr)
    }
    fn elementwise(&self, ctx: &Ctx) -> Option<Elementwise> {
        Some(Elementwise::Scale { by: -ctx.lr as f32 })
    }
}

/// Decoupled weight decay (SGDW / AdamW): subtracts `lr * weight_decay * w` from the step,
/// times `factor` and any `wd_scale` set earlier in the chain.
pub struct DecoupledDecay {
    /// Extra factor (SGDP divides its decay by `1 - momentum`).
    pub factor: f64,
}

impl Transform for DecoupledDecay {
    fn name(&self) -> &'static str {
        "decoupled_decay"
    }
    fn apply(&self, u: Tensor<2>, w: &Tensor<2>, _: &mut Slots<'_>, ctx: &Ctx) -> Tensor<2> {
        if ctx.weight_decay == 0.0 {
            return u;
        }
        u.sub(w.clone().mul_scalar(ctx.lr * ctx.weight_decay * self.factor * ctx.wd_scale.get()))
    }
    fn elementwise(&self, ctx: &Ctx) -> Option<Elementwise> {
        Some(if ctx.weight_decay == 0.0 {
            Elementwise::Scale { by: 1.0 }
        } else {
            Elementwise::SubScaledWeights { by: (ctx.lr * ctx.weight_decay * self.factor * ctx.wd_scale.get()) as f32 }
        })
    }
}
