//! Parameter roles, scale-invariance and decay groups: the one place that decides, for every
//! tensor, what it is and whether weight decay touches it (timm's `param_groups_weight_decay`
//! idea, plus the structural knowledge of which weights feed a normalization layer).

use crate::model::{tensors, Net};
use serde::{Deserialize, Serialize};

/// What a tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A conv kernel or linear matrix (or weight norm's direction `v`).
    Weight,
    /// An additive bias.
    Bias,
    /// A normalization layer's per-channel scale (gamma, or weight norm's gain `g`).
    NormScale,
    /// A normalization layer's per-channel shift (beta).
    NormShift,
    /// Running statistics: never optimized, never decayed.
    Buffer,
}

impl Role {
    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Role::Weight => "weight",
            Role::Bias => "bias",
            Role::NormScale => "norm-scale",
            Role::NormShift => "norm-shift",
            Role::Buffer => "buffer",
        }
    }
}

/// Over which slices of a weight the loss is invariant to positive rescaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Granularity {
    /// Each output channel separately (batch norm, weight norm).
    Channel,
    /// Each group of `n` output channels jointly (group norm with `n` channels per group).
    Group(usize),
    /// Only the whole tensor (layer norm).
    Tensor,
}

impl Granularity {
    /// Short name for tables.
    pub fn name(self) -> String {
        match self {
            Granularity::Channel => "channel".into(),
            Granularity::Group(n) => format!("group of {n}"),
            Granularity::Tensor => "tensor".into(),
        }
    }
}

/// Which tensors weight decay applies to (the `--decay-policy` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecayPolicy {
    /// Every trainable tensor, norm gamma/beta and biases included (the naive setup).
    All,
    /// Weights only; no decay on norm scales/shifts and biases (timm, fastai, Keras).
    ExcludeNormBias,
    /// Only the scale-invariant weights (decay as an effective-learning-rate control).
    ScaleInvariantOnly,
    /// Weights that are not scale-invariant (decay only where it regularizes the function).
    NoneOnScaleInvariant,
}

impl DecayPolicy {
    /// All choices.
    pub const ALL: [DecayPolicy; 4] =
        [DecayPolicy::All, DecayPolicy::ExcludeNormBias, DecayPolicy::ScaleInvariantOnly, DecayPolicy::NoneOnScaleInvariant];

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            DecayPolicy::All => "all",
            DecayPolicy::ExcludeNormBias => "exclude-norm-bias",
            DecayPolicy::ScaleInvariantOnly => "scale-invariant-only",
            DecayPolicy::NoneOnScaleInvariant => "none-on-scale-invariant",
        }
    }

    /// Parses a CLI name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Whether a tensor with this role and invariance is decayed under the policy.
    pub fn decays(self, role: Role, scale_invariant: bool) -> bool {
        match (self, role) {
            (_, Role::Buffer) => false,
            (DecayPolicy::All, _) => true,
            (DecayPolicy::ExcludeNormBias, r) => r == Role::Weight,
            (DecayPolicy::ScaleInvariantOnly, _) => scale_invariant,
            (DecayPolicy::NoneOnScaleInvariant, r) => r == Role::Weight && !scale_invariant,
        }
    }
}

/// The learning-rate / decay group of a parameter. Scale-invariant weights form their own
/// group so their `lr` and `weight_decay` can be set apart (only `lr*weight_decay` matters
/// for them at equilibrium).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// Scale-invariant weights.
    ScaleInvariant,
    /// Everything else.
    Default,
}

impl Group {
    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Group::ScaleInvariant => "scale-invariant",
            Group::Default => "default",
        }
    }
}

/// Everything normwd knows about one tensor of a model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParamInfo {
    /// Dotted path, PyTorch-style (`block1.conv.weight`).
    pub path: String,
    /// Shape; dimension 0 is the output channel for weights.
    pub shape: Vec<usize>,
    /// What the tensor is.
    pub role: Role,
    /// True when the loss is invariant to rescaling it (it feeds a normalization layer).
    pub scale_invariant: bool,
    /// The slices over which invariance holds (meaningful when `scale_invariant`).
    pub granularity: Granularity,
    /// Whether weight decay applies under the chosen policy.
    pub decayed: bool,
    /// Learning-rate / decay group.
    pub group: Group,
}

impl ParamInfo {
    /// Number of output channels (rows of the `[out, rest]` view).
    pub fn rows(&self) -> usize {
        if self.shape.len() >= 2 {
            self.shape[0]
        } else {
            1
        }
    }

    /// Number of scalars.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Describes every tensor (parameters and buffers) of `net` under `policy`.
pub fn describe(net: &Net, policy: DecayPolicy) -> Vec<ParamInfo> {
    let links = net.links();
    tensors(net)
        .into_iter()
        .map(|t| {
            let layer = t.path.rsplit_once('.').map(|(p, _)| p.to_string()).unwrap_or_default();
            let role = match (t.owner.as_str(), t.field.as_str()) {
                (_, f) if f.starts_with("running_") => Role::Buffer,
                ("Norm", "gamma") => Role::NormScale,
                ("Norm", "beta") => Role::NormShift,
                (_, "weight_g") => Role::NormScale,
                (_, "bias") => Role::Bias,
                _ => Role::Weight,
            };
            let (scale_invariant, granularity) = match (role, t.field.as_str()) {
                (Role::Weight, "weight_v") => (true, Granularity::Channel),
                (Role::Weight, _) => match links.iter().find(|l| l.layer == layer).and_then(|l| l.norm.as_ref()) {
                    Some(n) => (true, n.granularity),
                    None => (false, Granularity::Tensor),
                },
                _ => (false, Granularity::Tensor),
            };
            ParamInfo {
                decayed: policy.decays(role, scale_invariant),
                group: if scale_invariant { Group::ScaleInvariant } else { Group::Default },
                path: t.path,
                shape: t.shape,
                role,
                scale_invariant,
                granularity,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelKind, NormKind};
    use burn::tensor::Device;

    fn table(kind: ModelKind, norm: NormKind, policy: DecayPolicy) -> Vec<ParamInfo> {
        let shape = if kind == ModelKind::Resnet20 { [3, 32, 32] } else { [1, 28, 28] };
        describe(&Net::new(kind, norm, shape, 0.1, 0, &Device::flex()), policy)
    }

    #[test]
    fn convnet_bn_roles_and_default_decay() {
        let t = table(ModelKind::Convnet, NormKind::Bn, DecayPolicy::ExcludeNormBias);
        let get = |p: &str| t.iter().find(|i| i.path == p).unwrap_or_else(|| panic!("no {p} in {t:?}"));
        for b in ["block1", "block2", "block3"] {
            let w = get(&format!("{b}.conv.weight"));
            assert!(w.scale_invariant && w.decayed && w.role == Role::Weight && w.granularity == Granularity::Channel);
            assert!(!t.iter().any(|i| i.path == format!("{b}.conv.bias")), "conv before BN has no bias");
            for (f, r) in
                [("gamma", Role::NormScale), ("beta", Role::NormShift), ("running_mean", Role::Buffer), ("running_var", Role::Buffer)]
            {
                let p = get(&format!("{b}.norm.{f}"));
                assert_eq!(p.role, r);
                assert!(!p.decayed && !p.scale_invariant);
            }
        }
        let fc = get("fc.weight");
        assert!(!fc.scale_invariant && fc.decayed);
        assert!(!get("fc.bias").decayed);
        assert_eq!(get("block2.conv.weight").shape, vec![64, 32, 3, 3]);
    }

    #[test]
    fn policies() {
        let all = table(ModelKind::Convnet, NormKind::Bn, DecayPolicy::All);
        assert!(all.iter().all(|i| i.decayed == (i.role != Role::Buffer)));
        let si = table(ModelKind::Convnet, NormKind::Bn, DecayPolicy::ScaleInvariantOnly);
        assert!(si.iter().all(|i| i.decayed == i.scale_invariant));
        let nsi = table(ModelKind::Convnet, NormKind::Bn, DecayPolicy::NoneOnScaleInvariant);
        let decayed: Vec<_> = nsi.iter().filter(|i| i.decayed).map(|i| i.path.as_str()).collect();
        assert_eq!(decayed, vec!["fc.weight"]);
    }

    #[test]
    fn invariance_per_norm_kind() {
        for (norm, gran) in [
            (NormKind::Bn, Some(Granularity::Channel)),
            (NormKind::Ln, Some(Granularity::Tensor)),
            (NormKind::Gn, Some(Granularity::Group(4))),
            (NormKind::None, None),
        ] {
            let t = table(ModelKind::Convnet, norm, DecayPolicy::ExcludeNormBias);
            let w = t.iter().find(|i| i.path == "block1.conv.weight").unwrap();
            assert_eq!(w.scale_invariant, gran.is_some(), "{norm:?}");
            if let Some(g) = gran {
                assert_eq!(w.granularity, g);
            }
        }
        let wn = table(ModelKind::Mlp, NormKind::Wn, DecayPolicy::ExcludeNormBias);
        let v = wn.iter().find(|i| i.path == "fc1.weight_v").unwrap();
        assert!(v.scale_invariant && v.decayed);
        let g = wn.iter().find(|i| i.path == "fc1.weight_g").unwrap();
        assert!(g.role == Role::NormScale && !g.decayed);
        assert!(wn.iter().any(|i| i.path == "fc1.bias"));
    }

    #[test]
    fn resnet20_size_and_links() {
        let t = table(ModelKind::Resnet20, NormKind::Bn, DecayPolicy::ExcludeNormBias);
        let n: usize = t.iter().filter(|i| i.role != Role::Buffer).map(|i| i.numel()).sum();
        assert!((265_000..275_000).contains(&n), "ResNet-20 has ~0.27M parameters, got {n}");
        let convs = t.iter().filter(|i| i.role == Role::Weight && i.shape.len() == 4).count();
        assert_eq!(convs, 19);
        assert!(t.iter().filter(|i| i.role == Role::Weight && i.shape.len() == 4).all(|i| i.scale_invariant));
    }
}
