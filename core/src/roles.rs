//! Parameter roles, scale-invariance granularity and decay rules: the types every layer
//! shares (the engine's `params`, `check` and `inspect`, the Python package) and the one rule
//! that decides, from a tensor's role and invariance, whether weight decay touches it.
//! Finding roles and invariance in a model is the engine's job; this module holds no tensors.

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
    /// A per-channel multiplier outside a normalization layer (timm's LayerScale `gamma`).
    Gain,
    /// A lookup table (`nn.Embedding`): rows are read, not multiplied into a normalized output.
    Embedding,
    /// A learned position embedding or class/distillation token added to the activations
    /// (ViT's `pos_embed`, `cls_token`).
    Token,
    /// A state-space model's dynamics parameter (Mamba's log-parameterised decay rate `A_log`
    /// and its skip gain `D`): decay would pull the layer's memory toward a fixed point, so it
    /// is decayed only under `all` (mamba_ssm marks them `_no_weight_decay`).
    Dynamics,
    /// Running statistics: never optimized, never decayed.
    Buffer,
}

impl Role {
    /// Every role, in the order tables list them.
    pub const ALL: [Role; 9] = [
        Role::Weight,
        Role::Bias,
        Role::NormScale,
        Role::NormShift,
        Role::Gain,
        Role::Embedding,
        Role::Token,
        Role::Dynamics,
        Role::Buffer,
    ];

    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Role::Weight => "weight",
            Role::Bias => "bias",
            Role::NormScale => "norm-scale",
            Role::NormShift => "norm-shift",
            Role::Gain => "gain",
            Role::Embedding => "embedding",
            Role::Token => "token",
            Role::Dynamics => "dynamics",
            Role::Buffer => "buffer",
        }
    }
}

/// The names of bare parameters added to the activations (ViT's `pos_embed`, `cls_token`,
/// DeiT's `dist_token`, Swin's `absolute_pos_embed`, CLIP's `position_embedding`).
pub const TOKEN_NAMES: [&str; 8] =
    ["pos_embed", "cls_token", "dist_token", "reg_token", "mask_token", "absolute_pos_embed", "position_embedding", "pos_embedding"];

/// Weight norm's gain `g`: the old hook's `weight_g`, `torch.nn.utils.parametrize`'s `original0`.
pub const WEIGHT_NORM_GAINS: [&str; 2] = ["weight_g", "original0"];

/// A state-space layer's dynamics parameters (Mamba, Mamba-2, S4D: `A_log`, `D`).
pub const DYNAMICS_NAMES: [&str; 2] = ["A_log", "D"];

/// The role a tensor's own (last) name says whatever module holds it: a position embedding or
/// token ([`TOKEN_NAMES`], any `*_token`, a name with `pos` and `emb`), weight norm's gain
/// ([`WEIGHT_NORM_GAINS`]), a state-space layer's dynamics ([`DYNAMICS_NAMES`], spelled
/// exactly); `None` where the name alone does not tell. Shared by `inspect`
/// (names only) and the Python package (which knows the module too).
pub fn role_from_name(local: &str) -> Option<Role> {
    if DYNAMICS_NAMES.contains(&local) {
        return Some(Role::Dynamics);
    }
    let low = local.to_ascii_lowercase();
    if TOKEN_NAMES.contains(&low.as_str()) || low.ends_with("_token") || (low.contains("pos") && low.contains("emb")) {
        Some(Role::Token)
    } else if WEIGHT_NORM_GAINS.contains(&low.as_str()) {
        Some(Role::NormScale)
    } else {
        None
    }
}

/// Whether corrected decay (F14, AdamC / SGDC) reaches a tensor: only the scale-invariant
/// weights, whose decay sets the effective lr rather than regularizing; elsewhere decay is a
/// regularizer and keeps its coefficient. The one rule the engine's chain, the predictions and
/// the Python package's `decay_control` follow.
pub fn corrected_decay_applies(scale_invariant: bool) -> bool {
    scale_invariant
}

/// Roles are a closed set of names too (parsing and the list for messages come with it). They
/// keep their derived serde form (by variant, as [`ParamInfo`] serializes them), so they are
/// not a [`crate::choice!`] enum.
impl crate::choice::Choice for Role {
    const ALL: &'static [Role] = &Role::ALL;
    fn name(self) -> &'static str {
        Role::name(self)
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

crate::choice! {
    /// Which tensors weight decay applies to (the `--decay-policy` flag).
    pub enum DecayPolicy {
        /// Every trainable tensor, norm gamma/beta and biases included (the naive setup).
        All = "all",
        /// Weights only; no decay on norm scales/shifts, gains, biases, embeddings and tokens
        /// (timm, fastai, Keras, with timm's `no_weight_decay()` tokens).
        ExcludeNormBias = "exclude-norm-bias",
        /// Only the scale-invariant weights (decay as an effective-learning-rate control).
        ScaleInvariantOnly = "scale-invariant-only",
        /// Weights that are not scale-invariant (decay only where it regularizes the function).
        /// Embeddings and tokens are decayed only under `all`.
        NoneOnScaleInvariant = "none-on-scale-invariant",
    }
}

impl DecayPolicy {
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

/// A decay policy with the embeddings' own choice (`--decay-embeddings`): the one rule that
/// decides whether decay touches a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecayRule {
    /// Which tensors are decayed.
    pub policy: DecayPolicy,
    /// Decay embeddings and position embeddings/tokens (`Some(true)`), spare them
    /// (`Some(false)`), or follow the policy (`None`).
    pub embeddings: Option<bool>,
}

impl From<DecayPolicy> for DecayRule {
    fn from(policy: DecayPolicy) -> Self {
        DecayRule { policy, embeddings: None }
    }
}

impl DecayRule {
    /// Whether a tensor with this role and invariance is decayed.
    pub fn decays(self, role: Role, scale_invariant: bool) -> bool {
        match (role, self.embeddings) {
            (Role::Embedding | Role::Token, Some(d)) => d,
            _ => self.policy.decays(role, scale_invariant),
        }
    }
}

crate::choice! {
    /// The learning-rate / decay group of a parameter. Scale-invariant weights form their own
    /// group so their `lr` and `weight_decay` can be set apart (only `lr*weight_decay` matters
    /// for them at equilibrium).
    pub enum Group {
        /// Scale-invariant weights.
        ScaleInvariant = "scale-invariant",
        /// Everything else.
        Default = "default",
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
    /// Whether it is the output layer's weight (the head that produces the logits), which Muon
    /// leaves to AdamW ([`muon_takes`]).
    #[serde(default)]
    pub output: bool,
}

/// Whether Muon steps a tensor: a hidden weight matrix or conv kernel (seen as `[out, in*k*k]`,
/// Keller Jordan's practice); embeddings, tokens, the output head, norm gains and shifts, biases
/// and 1-D tensors go to AdamW. The one place the split is decided, for the engine's optimizer
/// and the Python package's audit and groups.
pub fn muon_takes(role: Role, ndim: usize, output: bool) -> bool {
    role == Role::Weight && ndim >= 2 && !output
}

impl ParamInfo {
    /// A tensor's description under `rule` (a [`DecayPolicy`] or a [`DecayRule`]), from its role
    /// and the slices over which the loss is invariant to its scale (`None`: not
    /// scale-invariant). Whether it is decayed and its group follow from those here, and only here.
    pub fn new(
        path: impl Into<String>,
        shape: Vec<usize>,
        role: Role,
        invariance: Option<Granularity>,
        rule: impl Into<DecayRule>,
    ) -> Self {
        let scale_invariant = invariance.is_some();
        ParamInfo {
            path: path.into(),
            shape,
            role,
            scale_invariant,
            granularity: invariance.unwrap_or(Granularity::Tensor),
            decayed: rule.into().decays(role, scale_invariant),
            group: if scale_invariant { Group::ScaleInvariant } else { Group::Default },
            output: false,
        }
    }

    /// The same description, marked as the output layer's weight.
    pub fn as_output(self) -> Self {
        ParamInfo { output: true, ..self }
    }

    /// Whether Muon steps this tensor ([`muon_takes`]).
    pub fn muon(&self) -> bool {
        muon_takes(self.role, self.shape.len(), self.output)
    }

    /// Columns of the `[out, rest]` view.
    pub fn cols(&self) -> usize {
        self.numel() / self.rows().max(1)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_policy_decays_what_it_names() {
        let si = |p| ParamInfo::new("w", vec![4, 3], Role::Weight, Some(Granularity::Channel), p);
        let plain = |p| ParamInfo::new("fc", vec![4, 3], Role::Weight, None, p);
        let gamma = |p| ParamInfo::new("g", vec![4], Role::NormScale, None, p);
        let buffer = |p| ParamInfo::new("m", vec![4], Role::Buffer, None, p);
        use DecayPolicy::*;
        let table = [
            (All, [true, true, true]),
            (ExcludeNormBias, [true, true, false]),
            (ScaleInvariantOnly, [true, false, false]),
            (NoneOnScaleInvariant, [false, true, false]),
        ];
        for (p, [a, b, c]) in table {
            assert_eq!([si(p).decayed, plain(p).decayed, gamma(p).decayed], [a, b, c], "{p}");
            assert!(!buffer(p).decayed, "{p}: buffers are never decayed");
        }
        assert_eq!(si(All).group, Group::ScaleInvariant);
        assert_eq!(plain(All).group, Group::Default);
        assert_eq!(DecayPolicy::parse("exclude-norm-bias"), Some(ExcludeNormBias));
        for r in [Role::Gain, Role::Embedding, Role::Token] {
            let i = |p| ParamInfo::new("e", vec![8, 4], r, None, p);
            assert!(
                i(All).decayed && !i(ExcludeNormBias).decayed && !i(ScaleInvariantOnly).decayed && !i(NoneOnScaleInvariant).decayed,
                "{r:?}"
            );
        }
        assert!(Role::ALL.iter().all(|r| <Role as crate::choice::Choice>::parse(r.name()) == Some(*r)));
        // `--decay-embeddings` decides for embeddings and tokens alone, under any policy.
        for p in DecayPolicy::ALL {
            for (d, want) in [(Some(true), true), (Some(false), false)] {
                let rule = DecayRule { policy: p, embeddings: d };
                assert_eq!(ParamInfo::new("wte", vec![8, 4], Role::Embedding, None, rule).decayed, want, "{p}");
                assert_eq!(ParamInfo::new("wpe", vec![8, 4], Role::Token, None, rule).decayed, want, "{p}");
                assert_eq!(ParamInfo::new("g", vec![4], Role::NormScale, None, rule).decayed, p.decays(Role::NormScale, false));
            }
        }
    }
}
