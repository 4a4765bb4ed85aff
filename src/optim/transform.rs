//! The pieces optimizers are chained from (optax's design) and the trait they share: each
//! piece turns the incoming update (at first the gradient) into the next one, keeping its own
//! per-parameter state; a chain's output is the delta added to the parameter. A piece's place
//! in the chain is its meaning (decay after the preconditioner is decoupled decay), and no piece
//! tests a tensor's role itself: [`masked`] applies a piece where a [`Mask`] holds, so the rules
//! of which tensors a remedy touches are written in [`super::alias`], once per optimizer.
//!
//! Tensors are seen as `[rows, cols]` views with the output channel as the row, so per-channel
//! pieces (projections, rotations) need no special cases. This module may import burn's tensors
//! and [`crate::params`]; the remedies' pieces live in [`super::remedies`].

use crate::params::{ParamInfo, Role};
use burn::tensor::Tensor;
use std::collections::BTreeMap;

/// What a transform knows about the parameter and the step.
#[derive(Clone, Copy)]
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
}

/// Per-parameter state of a whole chain: named tensors, keyed `"{index}.{slot}"` (the names
/// saved runs hold, so they must not change).
pub type State = BTreeMap<String, Tensor<2>>;

/// The shape of a state slot, as a function of the parameter's `[rows, cols]` view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotShape {
    /// `[rows, cols]`: one value per element (moments).
    Param,
    /// `[rows, 1]`: one value per output channel.
    Row,
    /// `[1, 1]`: one value per tensor.
    One,
}

impl SlotShape {
    /// The shape for a parameter viewed as `[rows, cols]`.
    pub fn of(self, rows: usize, cols: usize) -> [usize; 2] {
        match self {
            SlotShape::Param => [rows, cols],
            SlotShape::Row => [rows, 1],
            SlotShape::One => [1, 1],
        }
    }
}

/// A state slot a piece keeps: declared once, so saving, loading (its shape check) and the
/// fused pass name it the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotSpec {
    /// The slot's name (the part after `"{index}."` in saved state).
    pub name: &'static str,
    /// Its shape.
    pub shape: SlotShape,
}

/// [`Trace`]'s momentum buffer.
pub const MOMENTUM: SlotSpec = SlotSpec { name: "momentum", shape: SlotShape::Param };
/// [`ScaleByAdam`]'s first moment.
pub const EXP_AVG: SlotSpec = SlotSpec { name: "exp_avg", shape: SlotShape::Param };
/// [`ScaleByAdam`]'s second moment.
pub const EXP_AVG_SQ: SlotSpec = SlotSpec { name: "exp_avg_sq", shape: SlotShape::Param };
/// [`MuonMomentum`]'s buffer (PyTorch's Muon's name).
pub const MOMENTUM_BUFFER: SlotSpec = SlotSpec { name: "momentum_buffer", shape: SlotShape::Param };

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
    /// The state slots this piece may keep (none by default).
    fn slots(&self) -> Vec<SlotSpec> {
        Vec::new()
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
    /// `u - w * by` where `u * w <= 0` (the step and the weight disagree in sign: the direction
    /// and the weight agree), `u` elsewhere: cautious decay.
    CautiousSubScaledWeights {
        /// The factor.
        by: f32,
    },
}

impl Elementwise {
    /// The state slots the piece keeps, in the order the fused pass takes them (the same
    /// declarations as the tensor pieces').
    pub fn slots(&self) -> &'static [SlotSpec] {
        match self {
            Elementwise::Trace { .. } => &[MOMENTUM],
            Elementwise::Adam { .. } => &[EXP_AVG, EXP_AVG_SQ],
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
    pub fn take(&mut self, slot: SlotSpec) -> Option<Tensor<2>> {
        let k = self.key(slot.name);
        self.state.remove(&k)
    }

    /// Stores a slot.
    pub fn put(&mut self, slot: SlotSpec, t: Tensor<2>) {
        let k = self.key(slot.name);
        self.state.insert(k, t);
    }
}

/// Pieces applied in order, itself a piece (optax's `chain`). Nested in another chain it takes
/// one index there: its pieces share that index's slots, so they must declare distinct names.
pub struct Chain(pub Vec<Box<dyn Transform>>);

/// A chain of `pieces`.
pub fn chain<const N: usize>(pieces: [Box<dyn Transform>; N]) -> Chain {
    Chain(pieces.into_iter().collect())
}

impl Transform for Chain {
    fn name(&self) -> &'static str {
        "chain"
    }
    fn apply(&self, u: Tensor<2>, w: &Tensor<2>, s: &mut Slots<'_>, ctx: &Ctx) -> Tensor<2> {
        self.0.iter().fold(u, |u, t| t.apply(u, w, s, ctx))
    }
    fn elementwise(&self, ctx: &Ctx) -> Option<Elementwise> {
        // One piece keeps its map; several would need a list, which no optimizer needs yet.
        match &self.0[..] {
            [one] => one.elementwise(ctx),
            _ => None,
        }
    }
    fn slots(&self) -> Vec<SlotSpec> {
        self.0.iter().flat_map(|t| t.slots()).collect()
    }
}

/// Which tensors a masked piece applies to: a predicate on [`ParamInfo`], named so chains can
/// be printed and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask {
    /// Tensors `params` marks scale-invariant.
    ScaleInvariant,
    /// Scale-invariant tensors with at least two dimensions (per-channel pieces).
    ScaleInvariantMatrix,
    /// Weights (not norm scales/shifts, biases or buffers).
    Weight,
    /// Tensors with at least two dimensions.
    Matrix,
    /// Tensors corrected decay reaches ([`normwd_core::roles::corrected_decay_applies`]).
    CorrectedDecay,
    /// Tensors Muon steps ([`normwd_core::roles::muon_takes`]).
    Muon,
}

impl Mask {
    /// Whether the mask holds for a tensor.
    pub fn holds(self, info: &ParamInfo) -> bool {
        match self {
            Mask::ScaleInvariant => info.scale_invariant,
            Mask::ScaleInvariantMatrix => info.scale_invariant && info.shape.len() >= 2,
            Mask::Weight => info.role == Role::Weight,
            Mask::Matrix => info.shape.len() >= 2,
            Mask::CorrectedDecay => normwd_core::roles::corrected_decay_applies(info.scale_invariant),
            Mask::Muon => info.muon(),
        }
    }
}

/// `inner` where `mask` holds, the identity elsewhere (optax's `masked`).
pub struct Masked {
    /// The piece.
    pub inner: Box<dyn Transform>,
    /// Where it applies.
    pub mask: Mask,
}

/// `inner` applied only where `mask` holds.
pub fn masked(inner: impl Transform + 'static, mask: Mask) -> Box<dyn Transform> {
    Box::new(Masked { inner: Box::new(inner), mask })
}

impl Transform for Masked {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn apply(&self, u: Tensor<2>, w: &Tensor<2>, s: &mut Slots<'_>, ctx: &Ctx) -> Tensor<2> {
        if self.mask.holds(ctx.info) {
            self.inner.apply(u, w, s, ctx)
        } else {
            u
        }
    }
    fn elementwise(&self, ctx: &Ctx) -> Option<Elementwise> {
        if self.mask.holds(ctx.info) {
            self.inner.elementwise(ctx)
        } else {
            Some(Elementwise::Scale { by: 1.0 })
        }
    }
    fn slots(&self) -> Vec<SlotSpec> {
        self.inner.slots()
    }
}

/// `on` where `mask` holds, `off` elsewhere (optax's `partition` of two): for optimizers whose
/// later pieces differ by role, such as SGDP's decay on projected tensors.
pub struct Partition {
    /// Where `on` applies.
    pub mask: Mask,
    /// The pieces where the mask holds.
    pub on: Box<dyn Transform>,
    /// The pieces elsewhere.
    pub off: Box<dyn Transform>,
}

impl Transform for Partition {
    fn name(&self) -> &'static str {
        "partition"
    }
    fn apply(&self, u: Tensor<2>, w: &Tensor<2>, s: &mut Slots<'_>, ctx: &Ctx) -> Tensor<2> {
        if self.mask.holds(ctx.info) {
            self.on.apply(u, w, s, ctx)
        } else {
            self.off.apply(u, w, s, ctx)
        }
    }
    fn elementwise(&self, ctx: &Ctx) -> Option<Elementwise> {
        if self.mask.holds(ctx.info) {
            self.on.elementwise(ctx)
        } else {
            self.off.elementwise(ctx)
        }
    }
    fn slots(&self) -> Vec<SlotSpec> {
        let mut s = self.on.slots();
        s.extend(self.off.slots());
        s
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
        let buf = match s.take(MOMENTUM) {
            Some(b) => b.mul_scalar(self.momentum).add(u.clone()),
            None => u.clone(),
        };
        s.put(MOMENTUM, buf.clone());
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
    fn slots(&self) -> Vec<SlotSpec> {
        vec![MOMENTUM]
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
        let m = match s.take(EXP_AVG) {
            Some(m) => m.mul_scalar(self.b1).add(u.clone().mul_scalar(1.0 - self.b1)),
            None => u.clone().mul_scalar(1.0 - self.b1),
        };
        let sq = u.clone().mul(u);
        let v = match s.take(EXP_AVG_SQ) {
            Some(v) => v.mul_scalar(self.b2).add(sq.mul_scalar(1.0 - self.b2)),
            None => sq.mul_scalar(1.0 - self.b2),
        };
        s.put(EXP_AVG, m.clone());
        s.put(EXP_AVG_SQ, v.clone());
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
    fn slots(&self) -> Vec<SlotSpec> {
        vec![EXP_AVG, EXP_AVG_SQ]
    }
}

/// Lion's direction (Chen et al. 2023, `lion-pytorch`): `sign(b1*m + (1-b1)*u)`, then the
/// momentum moves on with `b2`: `m = b2*m + (1-b2)*u` (state `exp_avg`, zero at the start).
pub struct ScaleByLion {
    /// Blend of momentum and gradient in the step.
    pub b1: f64,
    /// Decay of the momentum.
    pub b2: f64,
}

impl Transform for ScaleByLion {
    fn name(&self) -> &'static str {
        "scale_by_lion"
    }
    fn apply(&self, u: Tensor<2>, _: &Tensor<2>, s: &mut Slots<'_>, _: &Ctx) -> Tensor<2> {
        let (dir, m) = match s.take(EXP_AVG) {
            Some(m) => {
                let dir = m.clone().mul_scalar(self.b1).add(u.clone().mul_scalar(1.0 - self.b1)).sign();
                (dir, m.mul_scalar(self.b2).add(u.mul_scalar(1.0 - self.b2)))
            }
            None => (u.clone().sign(), u.mul_scalar(1.0 - self.b2)),
        };
        s.put(EXP_AVG, m);
        dir
    }
    fn slots(&self) -> Vec<SlotSpec> {
        vec![EXP_AVG]
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

/// Decoupled weight decay (SGDW / AdamW, optax's `add_decayed_weights` after the lr): subtracts
/// `lr * weight_decay * factor * ratio` times `w` from the step.
pub struct DecoupledDecay {
    /// Extra factor (SGDP divides its decay by `1 - momentum`).
    pub factor: f64,
    /// SGDP / AdamP's `wd_ratio` on projected tensors (1 elsewhere); apart from `factor` so the
    /// product is taken in the order it always was, which keeps the `f32` scalar bit for bit.
    pub ratio: f64,
}

impl Transform for DecoupledDecay {
    fn name(&self) -> &'static str {
        "decoupled_decay"
    }
    fn apply(&self, u: Tensor<2>, w: &Tensor<2>, _: &mut Slots<'_>, ctx: &Ctx) -> Tensor<2> {
        if ctx.weight_decay == 0.0 {
            return u;
        }
        u.sub(w.clone().mul_scalar(ctx.lr * ctx.weight_decay * self.factor * self.ratio))
    }
    fn elementwise(&self, ctx: &Ctx) -> Option<Elementwise> {
        Some(if ctx.weight_decay == 0.0 {
            Elementwise::Scale { by: 1.0 }
        } else {
            Elementwise::SubScaledWeights { by: (ctx.lr * ctx.weight_decay * self.factor * self.ratio) as f32 }
        })
    }
}

/// Cautious weight decay (arXiv 2510.12402, F16): decoupled decay `lr * weight_decay * w` only
/// on the coordinates where the step's direction and the weight agree in sign. After
/// [`ScaleByLr`] the update is `-lr * direction`, so those are the coordinates where
/// `u * w <= 0` (a zero step counts as agreeing, as the paper's `1[u*x >= 0]`).
pub struct CautiousDecay;

impl Transform for CautiousDecay {
    fn name(&self) -> &'static str {
        "cautious_decay"
    }
    fn apply(&self, u: Tensor<2>, w: &Tensor<2>, _: &mut Slots<'_>, ctx: &Ctx) -> Tensor<2> {
        if ctx.weight_decay == 0.0 {
            return u;
        }
        let agree = u.clone().mul(w.clone()).lower_equal_elem(0.0).float();
        u.sub(w.clone().mul_scalar(ctx.lr * ctx.weight_decay).mul(agree))
    }
    fn elementwise(&self, ctx: &Ctx) -> Option<Elementwise> {
        Some(if ctx.weight_decay == 0.0 {
            Elementwise::Scale { by: 1.0 }
        } else {
            Elementwise::CautiousSubScaledWeights { by: (ctx.lr * ctx.weight_decay) as f32 }
        })
    }
}

/// Corrected weight decay (AdamC / SGDC, Defazio et al. 2025, F14): the decay piece `inner`
/// with its coefficient multiplied by the schedule's factor `lr_t / lr_max`, so a decoupled
/// step decays by `lr_t^2 / lr_max * weight_decay` (and L2 in the gradient by the same amount
/// after the lr). [`super::alias`] puts it on the scale-invariant tensors only.
pub struct Corrected {
    /// The decay piece corrected.
    pub inner: Box<dyn Transform>,
}

impl Corrected {
    fn ctx<'a>(ctx: &Ctx<'a>) -> Ctx<'a> {
        Ctx { weight_decay: ctx.weight_decay * ctx.lr_factor, ..*ctx }
    }
}

impl Transform for Corrected {
    fn name(&self) -> &'static str {
        "corrected"
    }
    fn apply(&self, u: Tensor<2>, w: &Tensor<2>, s: &mut Slots<'_>, ctx: &Ctx) -> Tensor<2> {
        self.inner.apply(u, w, s, &Self::ctx(ctx))
    }
    fn elementwise(&self, ctx: &Ctx) -> Option<Elementwise> {
        self.inner.elementwise(&Self::ctx(ctx))
    }
    fn slots(&self) -> Vec<SlotSpec> {
        self.inner.slots()
    }
}

/// Muon's momentum with PyTorch's semantics (`buf.lerp_(grad, 1-b)`): `B = b*B + (1-b)*u`,
/// output `B`, or with Nesterov `(1-b)*u + b*B`.
pub struct MuonMomentum {
    /// Momentum `b`.
    pub b: f64,
    /// Nesterov's blend.
    pub nesterov: bool,
}

impl Transform for MuonMomentum {
    fn name(&self) -> &'static str {
        "muon_momentum"
    }
    fn apply(&self, u: Tensor<2>, _: &Tensor<2>, s: &mut Slots<'_>, _: &Ctx) -> Tensor<2> {
        let fresh = u.clone().mul_scalar(1.0 - self.b);
        let buf = match s.take(MOMENTUM_BUFFER) {
            Some(b) => b.mul_scalar(self.b).add(fresh.clone()),
            None => fresh.clone(),
        };
        s.put(MOMENTUM_BUFFER, buf.clone());
        if self.nesterov {
            fresh.add(buf.mul_scalar(self.b))
        } else {
            buf
        }
    }
    fn slots(&self) -> Vec<SlotSpec> {
        vec![MOMENTUM_BUFFER]
    }
}

/// Muon's direction: Newton-Schulz's near-orthogonal `O` of the update's `[rows, cols]` view
/// (the core's [`normwd_core::theory::muon::newton_schulz`], its products through the kernels'
/// GEMM), times the shape's lr adjustment over the base lr (`adjust_lr_fn`), so the next
/// [`ScaleByLr`] steps by `lr_adj` while the decay after it uses the base lr.
pub struct Orthogonalize {
    /// Newton-Schulz steps.
    pub steps: usize,
    /// The shape adjustment.
    pub adjust: normwd_core::theory::muon::AdjustLr,
}

impl Transform for Orthogonalize {
    fn name(&self) -> &'static str {
        "orthogonalize"
    }
    fn apply(&self, u: Tensor<2>, _: &Tensor<2>, _: &mut Slots<'_>, _: &Ctx) -> Tensor<2> {
        use normwd_core::theory::muon::{newton_schulz, NS_COEFFICIENTS, NS_EPS};
        let ([rows, cols], device) = (u.dims(), u.device());
        let data = u.into_data().convert::<f32>();
        let values = data.as_slice::<f32>().expect("f32 data after convert");
        let o = newton_schulz(values, rows, cols, NS_COEFFICIENTS, self.steps, NS_EPS, true);
        let ratio = self.adjust.lr(1.0, rows, cols);
        Tensor::from_data(burn::tensor::TensorData::new(o, [rows, cols]), &device).mul_scalar(ratio)
    }
}
