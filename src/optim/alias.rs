//! One constructor per optimizer kind, each a short chain of pieces (optax's `alias.py`), and
//! [`chain`], the one place that maps an [`OptimKind`] to its constructor. Adding an optimizer
//! is one variant of [`OptimKind`] with its row of facts (`OptimKind::facts` in the core, which
//! lists everything else a kind touches) and one function here.
//!
//! A piece's index in the top-level chain names its saved state (`"{index}.{slot}"`): pieces
//! that keep state must stay at the index they have, so steps made of several stateless pieces
//! are nested chains at one index. This module may import the core's optimizer settings ([`normwd_core::optim`]),
//! [`super::transform`], [`super::remedies`] and [`crate::params`].

use super::remedies::{CompensateElr, CosineProject, FixedNorm, LambTrust, ProjectOut, Rotational, TrustRatio};
use super::transform::{
    chain as seq, masked, AddDecayedWeights, CautiousDecay, Chain, Corrected, DecoupledDecay, Mask, MuonMomentum, Orthogonalize, Partition,
    ScaleByAdam, ScaleByLion, ScaleByLr, Trace, Transform,
};
use crate::params::ParamInfo;
use normwd_core::optim::{DecayMode, Invariance, OptimConfig, OptimKind};

fn trace(c: &OptimConfig) -> Box<dyn Transform> {
    Box::new(Trace { momentum: c.momentum, nesterov: c.nesterov })
}

fn adam_scaling(c: &OptimConfig) -> Box<dyn Transform> {
    Box::new(ScaleByAdam { b1: c.betas.0, b2: c.betas.1, eps: c.eps })
}

fn lr() -> Box<dyn Transform> {
    Box::new(ScaleByLr)
}

fn add_decayed_weights() -> Box<dyn Transform> {
    Box::new(AddDecayedWeights)
}

fn decoupled(factor: f64, ratio: f64) -> Box<dyn Transform> {
    Box::new(DecoupledDecay { factor, ratio })
}

/// The decay piece of a plain optimizer or Lion: L2 in the gradient (`coupled`), decoupled
/// decay, or cautious decay (F16); under corrected decay (F14) its coefficient follows the
/// schedule on the scale-invariant tensors (the normalized layers) and stays as it is elsewhere.
fn decay(c: &OptimConfig, coupled: bool) -> Box<dyn Transform> {
    let piece = || -> Box<dyn Transform> {
        match (coupled, c.cautious_decay) {
            (true, _) => add_decayed_weights(),
            (false, true) => Box::new(CautiousDecay),
            (false, false) => decoupled(1.0, 1.0),
        }
    };
    if c.corrected_decay {
        Box::new(Partition { mask: Mask::CorrectedDecay, on: Box::new(Corrected { inner: piece() }), off: piece() })
    } else {
        piece()
    }
}

/// A plain optimizer (SGD, Adam, AdamW): the preconditioner `inner`, with L2 added to the
/// gradient before it (coupled) or the decay applied after the lr (decoupled).
fn plain(c: &OptimConfig, inner: Box<dyn Transform>) -> Chain {
    let mut v = Vec::new();
    if c.remedy.compensate_elr {
        v.push(masked(CompensateElr, Mask::ScaleInvariant));
    }
    if c.decay == DecayMode::Coupled {
        v.push(decay(c, true));
    }
    v.extend([inner, lr()]);
    if c.decay == DecayMode::Decoupled {
        v.push(decay(c, false));
    }
    Chain(v)
}

/// The projection step of SGDP / AdamP after the preconditioner: projected tensors (matrices,
/// scale-invariant from the graph or by the cosine test) take the step and `wd * wd_ratio`
/// decay, the others the step and the full decay (the reference's `p.mul_(1 - lr*wd*wd_ratio)`);
/// `factor` is SGDP's `1/(1 - momentum)`.
fn projection(c: &OptimConfig, factor: f64) -> Box<dyn Transform> {
    let r = &c.remedy;
    let rest = |ratio: f64| -> Box<dyn Transform> { Box::new(seq([lr(), decoupled(factor, ratio)])) };
    let on: Box<dyn Transform> = match r.invariance {
        Invariance::Structural => Box::new(seq([Box::new(ProjectOut) as Box<dyn Transform>, lr(), decoupled(factor, r.wd_ratio)])),
        Invariance::Numeric => Box::new(CosineProject { delta: r.delta, projected: rest(r.wd_ratio), plain: rest(1.0) }),
    };
    let mask = match r.invariance {
        Invariance::Structural => Mask::ScaleInvariantMatrix,
        Invariance::Numeric => Mask::Matrix,
    };
    Box::new(Partition { mask, on, off: rest(1.0) })
}

/// SGD with momentum / Nesterov (PyTorch's `SGD`, or SGDW with decoupled decay).
pub fn sgd(c: &OptimConfig) -> Chain {
    plain(c, trace(c))
}

/// Adam (PyTorch's `Adam`: L2 in the gradient unless `--decay decoupled`).
pub fn adam(c: &OptimConfig) -> Chain {
    plain(c, adam_scaling(c))
}

/// AdamW (decoupled decay unless `--decay coupled`).
pub fn adamw(c: &OptimConfig) -> Chain {
    plain(c, adam_scaling(c))
}

/// SGDP (Heo et al. 2021): momentum, then the projection; decay divided by `1 - momentum`.
pub fn sgdp(c: &OptimConfig) -> Chain {
    Chain(vec![trace(c), projection(c, 1.0 / (1.0 - c.momentum))])
}

/// AdamP (Heo et al. 2021): Adam's scaling, then the projection.
pub fn adamp(c: &OptimConfig) -> Chain {
    Chain(vec![adam_scaling(c), projection(c, 1.0)])
}

/// LARS (You et al. 2017, as apex's LARC): L2, the trust ratio on weights, momentum, lr.
pub fn lars(c: &OptimConfig) -> Chain {
    let r = &c.remedy;
    let trust = TrustRatio { trust_coeff: r.trust_coeff, eps: 1e-8, clip: r.lars_clip };
    Chain(vec![Box::new(seq([add_decayed_weights(), masked(trust, Mask::Weight)])), trace(c), lr()])
}

/// LAMB (You et al. 2020): Adam's scaling plus the decay, the trust ratio on weights, lr.
pub fn lamb(c: &OptimConfig) -> Chain {
    Chain(vec![adam_scaling(c), Box::new(seq([add_decayed_weights(), masked(LambTrust, Mask::Weight)])), lr()])
}

/// SGD with momentum whose scale-invariant weights are held at a fixed norm (van Laarhoven 2017).
pub fn fixed_norm(c: &OptimConfig) -> Chain {
    let r = &c.remedy;
    let hold = FixedNorm { per_channel: r.fixed_norm_per_channel, target: r.fixed_norm_target };
    Chain(vec![add_decayed_weights(), trace(c), lr(), masked(hold, Mask::ScaleInvariant)])
}

/// RV-SGDM (Kosson et al. 2024): SGD with momentum and L2, rotated on scale-invariant matrices
/// by F7's angle (`params` gives the decay it is computed from).
pub fn rv_sgd(c: &OptimConfig, params: &[ParamInfo]) -> Chain {
    let rotate = Rotational { angle: c.rotation_angle(params), beta: c.remedy.rv_rms_decay };
    Chain(vec![add_decayed_weights(), trace(c), lr(), masked(rotate, Mask::ScaleInvariantMatrix)])
}

/// RV-AdamW (Kosson et al. 2024): AdamW, rotated on scale-invariant matrices by F8's angle.
pub fn rv_adamw(c: &OptimConfig, params: &[ParamInfo]) -> Chain {
    let rotate = Rotational { angle: c.rotation_angle(params), beta: c.remedy.rv_rms_decay };
    Chain(vec![adam_scaling(c), lr(), decoupled(1.0, 1.0), masked(rotate, Mask::ScaleInvariantMatrix)])
}

/// Lion (Chen et al. 2023): the sign of the momentum blend, lr, decoupled decay
/// (`lion-pytorch`'s `p *= 1 - lr*wd` before the step, the same as after it for a sign update).
pub fn lion(c: &OptimConfig) -> Chain {
    Chain(vec![Box::new(ScaleByLion { b1: c.betas.0, b2: c.betas.1 }), lr(), decay(c, false)])
}

/// Muon (PyTorch's `torch.optim.Muon`) beside AdamW, one optimizer with two branches (optax's
/// `partition`): on Muon's matrices ([`Mask::Muon`]) its momentum, Newton-Schulz, the adjusted
/// lr and decoupled decay at the base lr; elsewhere AdamW. Each tensor's lr and decay (Muon's or
/// AdamW's) come with it ([`OptimConfig::base_lr`], [`OptimConfig::weight_decay_for`]); the
/// decay options apply to both branches.
pub fn muon(c: &OptimConfig) -> Chain {
    let m = &c.muon;
    let on: Box<dyn Transform> = Box::new(seq([
        Box::new(MuonMomentum { b: m.momentum, nesterov: m.nesterov }) as Box<dyn Transform>,
        Box::new(Orthogonalize { steps: m.ns_steps, adjust: m.adjust_lr }),
        lr(),
        decay(c, false),
    ]));
    let off: Box<dyn Transform> = Box::new(seq([adam_scaling(c), lr(), decay(c, false)]));
    Chain(vec![Box::new(Partition { mask: Mask::Muon, on, off })])
}

/// The chain of `c`'s optimizer (`params` gives the rotational wrappers their angle).
pub fn chain(c: &OptimConfig, params: &[ParamInfo]) -> Chain {
    match c.kind {
        OptimKind::Sgd => sgd(c),
        OptimKind::Adam => adam(c),
        OptimKind::Adamw => adamw(c),
        OptimKind::Sgdp => sgdp(c),
        OptimKind::Adamp => adamp(c),
        OptimKind::Lars => lars(c),
        OptimKind::Lamb => lamb(c),
        OptimKind::FixedNorm => fixed_norm(c),
        OptimKind::RvSgd => rv_sgd(c, params),
        OptimKind::RvAdamw => rv_adamw(c, params),
        OptimKind::Lion => lion(c),
        OptimKind::Muon => muon(c),
    }
}
