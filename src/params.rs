//! Roles, scale-invariance and decay groups of a model's tensors: the structural knowledge of
//! which weights feed a normalization layer, read from the model, with the types and the decay
//! rule of the core ([`normwd_core::roles`], timm's `param_groups_weight_decay` idea).
//! May import `model`; nothing below `params` in the layer order.

pub use normwd_core::roles::*;

use crate::model::{tensors, Net};

/// Describes every tensor (parameters and buffers) of `net` under `policy` (a
/// [`DecayPolicy`] or a [`DecayRule`]).
pub fn describe(net: &Net, policy: impl Into<DecayRule>) -> Vec<ParamInfo> {
    let policy = policy.into();
    let links = net.links();
    let output = net.output_layer();
    tensors(net)
        .into_iter()
        .map(|t| {
            let layer = t.path.rsplit_once('.').map(|(p, _)| p.to_string()).unwrap_or_default();
            let role = match (t.owner.as_str(), t.field.as_str()) {
                (_, f) if f.starts_with("running_") => Role::Buffer,
                ("Norm" | "FeatureNorm", "weight") => Role::NormScale,
                ("Norm" | "FeatureNorm", "bias") => Role::NormShift,
                ("Embedding", _) => Role::Embedding,
                ("PositionEmbedding", _) => Role::Token,
                (_, "weight_g") => Role::NormScale,
                (_, "bias") => Role::Bias,
                _ => Role::Weight,
            };
            let invariance = match (role, t.field.as_str()) {
                (Role::Weight, "weight_v") => Some(Granularity::Channel),
                (Role::Weight, _) => links.iter().find(|l| l.layer == layer).and_then(|l| l.norm.as_ref()).map(|n| n.granularity),
                _ => None,
            };
            let info = ParamInfo::new(t.path, t.shape, role, invariance, policy);
            if role == Role::Weight && output.as_deref() == Some(layer.as_str()) {
                info.as_output()
            } else {
                info
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

    /// The output layer is marked, and Muon takes the hidden matrices and conv kernels only.
    #[test]
    fn output_layer_and_muon_split() {
        let t = table(ModelKind::Resnet20, NormKind::Bn, DecayPolicy::ExcludeNormBias);
        let muon: Vec<&str> = t.iter().filter(|i| i.muon()).map(|i| i.path.as_str()).collect();
        assert!(t.iter().any(|i| i.path == "fc.weight" && i.output && !i.muon()));
        assert!(muon.contains(&"conv1.weight") && muon.contains(&"layer3.2.conv2.weight"), "{muon:?}");
        assert!(muon.iter().all(|p| p.ends_with("conv1.weight") || p.ends_with("conv2.weight")), "{muon:?}");
        let shape = crate::model::GptShape { n_layer: 1, n_head: 2, n_embd: 8, block_size: 4, qk_norm: false, tie_embeddings: false };
        let gpt = describe(&Net::gpt(shape, NormKind::Ln, 11, 0, &Device::flex()), DecayPolicy::ExcludeNormBias);
        let muon: Vec<&str> = gpt.iter().filter(|i| i.muon()).map(|i| i.path.as_str()).collect();
        assert_eq!(muon.len(), 6, "q, k, v, o, fc, proj: {muon:?}");
        assert!(gpt.iter().any(|i| i.path == "lm_head.weight" && i.output && !i.muon()));
        assert!(gpt.iter().all(|i| !(i.path.contains("wte") || i.path.contains("wpe")) || !i.muon()));
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
                [("weight", Role::NormScale), ("bias", Role::NormShift), ("running_mean", Role::Buffer), ("running_var", Role::Buffer)]
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
    fn gpt_roles_and_invariance_under_qk_norm() {
        use crate::model::GptShape;
        let dev = Device::flex();
        for qk_norm in [false, true] {
            let shape = GptShape { n_layer: 2, n_head: 4, n_embd: 32, block_size: 8, qk_norm, tie_embeddings: true };
            let t = describe(&Net::gpt(shape, NormKind::Ln, 20, 0, &dev), DecayPolicy::ExcludeNormBias);
            let get = |p: &str| t.iter().find(|i| i.path == p).unwrap_or_else(|| panic!("no {p}"));
            assert_eq!(get("transformer.wte.weight").role, Role::Embedding);
            assert_eq!(get("transformer.wpe.weight").role, Role::Token);
            assert!(!get("transformer.wte.weight").decayed && !get("transformer.wpe.weight").decayed);
            assert_eq!(get("transformer.h.0.ln_1.weight").role, Role::NormScale);
            assert_eq!(get("transformer.h.0.ln_1.bias").role, Role::NormShift);
            for p in ["q_proj", "k_proj"] {
                let w = get(&format!("transformer.h.1.attn.{p}.weight"));
                assert_eq!(w.scale_invariant, qk_norm, "{p}");
                if qk_norm {
                    assert_eq!(w.granularity, Granularity::Group(8), "{p}: per head of 8 rows");
                    assert_eq!(get(&format!("transformer.h.1.attn.{}_norm.weight", &p[..1])).role, Role::NormScale);
                }
            }
            let si: Vec<_> = t.iter().filter(|i| i.scale_invariant).map(|i| i.path.as_str()).collect();
            assert_eq!(si.len(), if qk_norm { 4 } else { 0 }, "only q/k under QK-norm: {si:?}");
            assert!(t.iter().filter(|i| i.role == Role::Weight).all(|i| i.decayed));
        }
        let shape = GptShape { n_layer: 1, n_head: 2, n_embd: 8, block_size: 4, qk_norm: false, tie_embeddings: true };
        let net = Net::gpt(shape, NormKind::Ln, 5, 0, &dev);
        let rule = DecayRule { policy: DecayPolicy::ExcludeNormBias, embeddings: Some(true) };
        let t = describe(&net, rule);
        assert!(t.iter().filter(|i| matches!(i.role, Role::Embedding | Role::Token)).all(|i| i.decayed), "--decay-embeddings true");
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
