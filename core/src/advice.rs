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
        /// An embedding table or token stepped by Muon.
        MuonOnEmbedding = "muon-on-embedding",
        /// The output layer (the head that produces the logits) stepped by Muon.
        MuonOnHead = "muon-on-head",
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
            Mistake::TwoGroups => "a parameter in two groups (or two optimizers) is updated twice per step, with two settings",
            Mistake::MuonOnEmbedding => "Muon orthogonalizes a whole matrix's update, which fits a layer that multiplies its input, not a table whose rows are looked up one at a time: Keller Jordan's and Moonshot's recipes give embeddings and tokens to AdamW",
            Mistake::MuonOnHead => "the output layer's rows are the classes' or tokens' own vectors, updated by how often each is seen; an orthogonalized update spreads it evenly over them (Keller Jordan's and Moonshot's recipes give the head to AdamW)",
        }
    }
}

/// The mistakes of a tensor with `role` and scale-invariance `scale_invariant` (`output`: the
/// layer that produces the logits), trained with its group's `weight_decay` by an optimizer of
/// `family` (`Other` for one without a closed form: the mistakes of roles still apply). Group
/// membership (in none, in two) is the caller's to tell.
pub fn mistakes(role: Role, scale_invariant: bool, output: bool, weight_decay: f64, family: Family) -> Vec<Mistake> {
    let decayed = weight_decay > 0.0;
    let mut out = Vec::new();
    if matches!(family, Family::Muon { .. }) {
        if matches!(role, Role::Embedding | Role::Token) {
            out.push(Mistake::MuonOnEmbedding);
        } else if output && role == Role::Weight {
            out.push(Mistake::MuonOnHead);
        }
    }
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
        super::mistakes(role, scale_invariant, false, h.weight_decay, h.family())
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
        // Muon: embeddings and the head are AdamW's; an undecayed invariant matrix as anywhere.
        let muon = Hyper { momentum: 0.95, nesterov: true, ..h(Rule::Muon, 0.1, false) };
        assert_eq!(mistakes(Role::Embedding, false, &muon), [Mistake::MuonOnEmbedding, Mistake::EmbeddingDecayed]);
        assert_eq!(super::mistakes(Role::Weight, false, true, 0.1, muon.family()), [Mistake::MuonOnHead]);
        assert!(super::mistakes(Role::Weight, false, true, 0.1, sgd.family()).is_empty(), "a head under SGD is fine");
        assert_eq!(mistakes(Role::Weight, true, &Hyper { weight_decay: 0.0, ..muon }), [Mistake::InvariantUndecayed]);
        assert!(mistakes(Role::Weight, true, &muon).is_empty());
    }
}
