//! The mistakes normwd flags in how a tensor is trained, decided once for every surface that
//! shows them: `inspect` on saved checkpoints, `audit`, and the Python package's
//! `normwd.torch.audit` on a live model and optimizer.

use crate::roles::Role;
use crate::theory::Family;

crate::choice! {
    /// A mistake in a training's setup.
    pub enum Mistake {
        /// A norm layer's scale or shift, or a gain, is decayed.
        NormDecayed = "norm-decayed",
        /// A bias is decayed.
        BiasDecayed = "bias-decayed",
        /// An embedding table or a position/class token is decayed.
        EmbeddingDecayed = "embedding-decayed",
        /// A state-space layer's dynamics parameter (`A_log`, `D`) is decayed.
        DynamicsDecayed = "dynamics-decayed",
        /// A scale-invariant weight under L2 in an Adam gradient (coupled decay).
        AdamL2OnInvariant = "adam-l2-on-scale-invariant",
        /// A scale-invariant weight without any decay.
        InvariantUndecayed = "scale-invariant-undecayed",
        /// A trainable parameter in no optimizer group.
        NoGroup = "no-group",
        /// A parameter in more than one optimizer group.
        TwoGroups = "two-groups",
    }
}

/// How much a mistake matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Wrong for any normalized network.
    Error,
    /// Often deliberate, but worth knowing.
    Warning,
}

impl Mistake {
    /// How much it matters.
    pub fn severity(self) -> Severity {
        match self {
            Mistake::BiasDecayed | Mistake::EmbeddingDecayed => Severity::Warning,
            _ => Severity::Error,
        }
    }

    /// Why it is a mistake and what to do, in a sentence.
    pub fn why(self) -> &'static str {
        match self {
            Mistake::NormDecayed => "decay pulls a norm layer's scale or shift (or a gain) toward 0 and the layer's output with it, which does not regularize a normalized network; give it weight_decay 0",
            Mistake::BiasDecayed => "decay barely regularizes a bias, and timm, Hugging Face and nanoGPT leave biases out of it; give it weight_decay 0",
            Mistake::EmbeddingDecayed => "an embedding row or a position/class token is looked up or added, not multiplied into a normalized output: decay pulls rarely used rows and the tokens toward 0 (timm's no_weight_decay() and most LLM recipes exclude them); give it weight_decay 0 unless that is meant",
            Mistake::DynamicsDecayed => "decay pulls a state-space layer's log decay rate (A_log) or skip gain (D) toward 0, which changes how long the layer remembers rather than regularizing it (mamba_ssm marks them _no_weight_decay); give it weight_decay 0",
            Mistake::AdamL2OnInvariant => "with L2 in an adaptive optimizer's gradient (Adam and its variants, RMSprop, Adagrad) the decay is divided by its denominator, so it neither regularizes nor sets a predictable equilibrium of this scale-invariant weight; use decoupled decay (AdamW, decoupled_weight_decay=True)",
            Mistake::InvariantUndecayed => "without decay a scale-invariant weight's norm only grows, so its effective learning rate lr/||w||^2 keeps falling (F4); decay it to hold the effective learning rate at its equilibrium",
            Mistake::NoGroup => "a trainable parameter the optimizer does not hold is never updated: frozen by accident, or left out when the groups were built",
            Mistake::TwoGroups => "a parameter in two groups is updated twice per step, with two settings",
        }
    }
}

/// The mistakes of a tensor with `role` and scale-invariance `scale_invariant`, trained with
/// its group's `weight_decay` by an optimizer of `family` (`Other` for one without a closed
/// form: the mistakes of roles still apply). Group membership (in none, in two) is the
/// caller's to tell.
pub fn mistakes(role: Role, scale_invariant: bool, weight_decay: f64, family: Family) -> Vec<Mistake> {
    let decayed = weight_decay > 0.0;
    let mut out = Vec::new();
    match role {
        Role::NormScale | Role::NormShift | Role::Gain if decayed => out.push(Mistake::NormDecayed),
        Role::Bias if decayed => out.push(Mistake::BiasDecayed),
        Role::Embedding | Role::Token if decayed => out.push(Mistake::EmbeddingDecayed),
        Role::Dynamics if decayed => out.push(Mistake::DynamicsDecayed),
        Role::Weight if scale_invariant => {
            if decayed && family == Family::AdamL2 {
                out.push(Mistake::AdamL2OnInvariant);
            }
            if !decayed {
                out.push(Mistake::InvariantUndecayed);
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{Hyper, Rule};

    fn mistakes(role: Role, scale_invariant: bool, h: &Hyper) -> Vec<Mistake> {
        super::mistakes(role, scale_invariant, h.weight_decay, h.family())
    }

    #[test]
    fn each_mistake_where_it_applies() {
        let h = |optimizer, wd, coupled| Hyper {
            optimizer,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: wd,
            coupled,
            betas: (0.9, 0.999),
            nesterov: false,
        };
        let sgd = h(Rule::Sgd, 5e-4, true);
        assert_eq!(mistakes(Role::NormScale, false, &sgd), [Mistake::NormDecayed]);
        assert_eq!(mistakes(Role::Gain, false, &sgd), [Mistake::NormDecayed]);
        assert_eq!(mistakes(Role::Bias, false, &sgd), [Mistake::BiasDecayed]);
        assert_eq!(mistakes(Role::Token, false, &sgd), [Mistake::EmbeddingDecayed]);
        assert!(mistakes(Role::Weight, true, &sgd).is_empty() && mistakes(Role::Buffer, false, &sgd).is_empty());
        assert_eq!(mistakes(Role::Weight, true, &h(Rule::Adam, 1e-4, true)), [Mistake::AdamL2OnInvariant]);
        assert!(mistakes(Role::Weight, true, &h(Rule::Adamw, 1e-2, false)).is_empty());
        let none = h(Rule::Sgd, 0.0, true);
        assert_eq!(mistakes(Role::Weight, true, &none), [Mistake::InvariantUndecayed]);
        assert!(mistakes(Role::Weight, false, &none).is_empty() && mistakes(Role::NormScale, false, &none).is_empty());
        assert_eq!(Mistake::EmbeddingDecayed.severity(), Severity::Warning);
    }
}
