//! `gpt`: a decoder-only, pre-norm transformer in nanoGPT's layout, names and initialization
//! (`transformer.wte`, `transformer.h.0.ln_1`, ..., `lm_head`): causal self-attention, a GELU
//! MLP, layer or RMS normalization (or none), optional per-head QK-norm, tied or untied
//! embeddings, no biases in the linear layers (nanoGPT's `bias=False`).
//!
//! Queries, keys and values are three projections (`attn.q_proj`, `attn.k_proj`,
//! `attn.v_proj`) rather than nanoGPT's fused `c_attn`, so that under QK-norm `q_proj` and
//! `k_proj` are each exactly scale-invariant per head and the decay groups can say so.

use super::init::Init;
use super::layers::{matmul_t_in, Dense};
use super::{Link, LinkNorm};
use crate::kernels;
use burn::module::{Module, Param};
use burn::tensor::activation::gelu;
use burn::tensor::module::{attention, embedding, layer_norm};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Int, Tensor};
use normwd_core::kinds::{GptShape, NormKind};
use normwd_core::roles::Granularity;

/// nanoGPT's initial standard deviation of every matrix and embedding.
const INIT_STD: f32 = 0.02;
/// `nn.LayerNorm`'s epsilon.
const LN_EPS: f64 = 1e-5;
/// RMSNorm's epsilon (Llama's; `nn.RMSNorm` is given it explicitly in the PyTorch mirror).
const RMS_EPS: f64 = 1e-6;

/// The token embedding (`nn.Embedding`): `[vocab, n_embd]`.
#[derive(Module, Debug)]
pub struct Embedding {
    /// One row per token.
    pub weight: Param<Tensor<2>>,
}

/// The learned position embedding (`nn.Embedding` over positions): `[block_size, n_embd]`.
#[derive(Module, Debug)]
pub struct PositionEmbedding {
    /// One row per position.
    pub weight: Param<Tensor<2>>,
}

/// Layer or RMS normalization over the last dimension (`nn.LayerNorm` with its `weight` and
/// `bias`, `nn.RMSNorm` with its `weight` alone).
#[derive(Module, Debug)]
pub struct FeatureNorm {
    /// Per-feature scale.
    pub weight: Param<Tensor<1>>,
    /// Per-feature shift (layer norm only).
    pub bias: Option<Param<Tensor<1>>>,
    /// Added to the variance (or mean square).
    pub epsilon: f64,
}

impl FeatureNorm {
    /// A norm of kind `kind` over `features`; `None` for `--norm none`.
    pub fn new(kind: NormKind, features: usize, device: &Device) -> Option<Self> {
        let (bias, epsilon) = match kind {
            NormKind::Ln => (Some(Param::from_tensor(Tensor::zeros([features], device))), LN_EPS),
            NormKind::Rms => (None, RMS_EPS),
            _ => return None,
        };
        Some(FeatureNorm { weight: Param::from_tensor(Tensor::ones([features], device)), bias, epsilon })
    }

    /// Normalizes each row of `[rows, features]` (the CPU kernel on the CPU, burn's ops elsewhere).
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        if kernels::applies(&x) {
            return kernels::feature_norm(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()), self.epsilon);
        }
        match &self.bias {
            Some(b) => layer_norm(x, self.weight.val(), Some(b.val()), self.epsilon),
            None => {
                let ms = x.clone().powi_scalar(2).mean_dim(1);
                x.div(ms.add_scalar(self.epsilon).sqrt()).mul(self.weight.val().unsqueeze_dim(0))
            }
        }
    }
}

/// Exact GELU (the CPU kernel on the CPU, burn's op elsewhere).
fn gelu_op(x: Tensor<2>) -> Tensor<2> {
    if kernels::applies(&x) {
        kernels::gelu(x)
    } else {
        gelu(x)
    }
}

fn norm_opt(n: &Option<FeatureNorm>, x: Tensor<2>) -> Tensor<2> {
    match n {
        Some(n) => n.forward(x),
        None => x,
    }
}

fn linear(init: &mut Init, d_in: usize, d_out: usize, std: f32, device: &Device) -> Dense {
    Dense { weight: Some(Param::from_tensor(init.normal([d_out, d_in], std, device))), weight_v: None, weight_g: None, bias: None }
}

/// Causal multi-head self-attention with separate projections and optional QK-norm.
#[derive(Module, Debug)]
pub struct Attention {
    /// Queries.
    pub q_proj: Dense,
    /// Keys.
    pub k_proj: Dense,
    /// Values.
    pub v_proj: Dense,
    /// Output projection (into the residual stream).
    pub c_proj: Dense,
    /// Per-head normalization of the queries (QK-norm).
    pub q_norm: Option<FeatureNorm>,
    /// Per-head normalization of the keys.
    pub k_norm: Option<FeatureNorm>,
    /// Heads.
    pub n_head: usize,
}

impl Attention {
    /// Attention over `[batch * seq, n_embd]` activations of `batch` sequences (the CPU kernel
    /// on the CPU, burn's op elsewhere).
    fn forward(&self, x: Tensor<2>, batch: usize) -> Tensor<2> {
        let [rows, c] = x.dims();
        let (t, h) = (rows / batch, self.n_head);
        let hd = c / h;
        let normed = |y: Tensor<2>, norm: &Option<FeatureNorm>| match norm {
            Some(n) => n.forward(y.reshape([rows * h, hd])).reshape([rows, c]),
            None => y,
        };
        let q = normed(self.q_proj.forward_rows(x.clone()), &self.q_norm);
        let k = normed(self.k_proj.forward_rows(x.clone()), &self.k_norm);
        let v = self.v_proj.forward_rows(x);
        let y = if kernels::applies(&q) {
            kernels::causal_attention(q, k, v, batch, h)
        } else {
            let heads = |y: Tensor<2>| -> Tensor<4> { y.reshape([batch, t, h, hd]).swap_dims(1, 2) };
            let opts = AttentionModuleOptions { is_causal: true, ..Default::default() };
            attention(heads(q), heads(k), heads(v), None, None, opts).swap_dims(1, 2).reshape([rows, c])
        };
        self.c_proj.forward_rows(y)
    }
}

/// The MLP of a block: `n_embd -> 4*n_embd -> GELU -> n_embd`.
#[derive(Module, Debug)]
pub struct FeedForward {
    /// Expansion.
    pub c_fc: Dense,
    /// Projection back into the residual stream.
    pub c_proj: Dense,
}

/// One pre-norm block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Module, Debug)]
pub struct Block {
    /// Norm before attention.
    pub ln_1: Option<FeatureNorm>,
    /// Attention.
    pub attn: Attention,
    /// Norm before the MLP.
    pub ln_2: Option<FeatureNorm>,
    /// The MLP.
    pub mlp: FeedForward,
}

/// nanoGPT's `transformer` container.
#[derive(Module, Debug)]
pub struct Transformer {
    /// Token embedding.
    pub wte: Embedding,
    /// Position embedding.
    pub wpe: PositionEmbedding,
    /// Blocks.
    pub h: Vec<Block>,
    /// Final norm.
    pub ln_f: Option<FeatureNorm>,
}

/// The model.
#[derive(Module, Debug)]
pub struct Gpt {
    /// Embeddings, blocks and final norm.
    pub transformer: Transformer,
    /// Output head (absent when tied to `transformer.wte`).
    pub lm_head: Option<Dense>,
}

impl Gpt {
    /// Builds the model for a vocabulary of `vocab` tokens, initialized as nanoGPT does
    /// (`N(0, 0.02)`, residual projections `N(0, 0.02/sqrt(2*n_layer))`).
    pub fn new(init: &mut Init, shape: GptShape, norm: NormKind, vocab: usize, device: &Device) -> Self {
        let c = shape.n_embd;
        let proj_std = INIT_STD / (2.0 * shape.n_layer as f32).sqrt();
        let wte = Embedding { weight: Param::from_tensor(init.normal([vocab, c], INIT_STD, device)) };
        let wpe = PositionEmbedding { weight: Param::from_tensor(init.normal([shape.block_size, c], INIT_STD, device)) };
        let qk = || if shape.qk_norm { FeatureNorm::new(norm, shape.head_dim(), device) } else { None };
        let h = (0..shape.n_layer)
            .map(|_| Block {
                ln_1: FeatureNorm::new(norm, c, device),
                attn: Attention {
                    q_proj: linear(init, c, c, INIT_STD, device),
                    k_proj: linear(init, c, c, INIT_STD, device),
                    v_proj: linear(init, c, c, INIT_STD, device),
                    c_proj: linear(init, c, c, proj_std, device),
                    q_norm: qk(),
                    k_norm: qk(),
                    n_head: shape.n_head,
                },
                ln_2: FeatureNorm::new(norm, c, device),
                mlp: FeedForward { c_fc: linear(init, c, 4 * c, INIT_STD, device), c_proj: linear(init, 4 * c, c, proj_std, device) },
            })
            .collect();
        let lm_head = (!shape.tie_embeddings).then(|| linear(init, c, vocab, INIT_STD, device));
        Gpt { transformer: Transformer { wte, wpe, h, ln_f: FeatureNorm::new(norm, c, device) }, lm_head }
    }

    /// Next-token logits `[batch * seq, vocab]` for `[batch, seq]` token ids (`seq <= block_size`).
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<2> {
        let [b, t] = tokens.dims();
        let tr = &self.transformer;
        let tok: Tensor<3> = embedding(tr.wte.weight.val(), tokens);
        let c = tok.dims()[2];
        let pos = tr.wpe.weight.val().narrow(0, 0, t).unsqueeze_dim::<3>(0);
        let mut x: Tensor<2> = tok.add(pos).reshape([b * t, c]);
        for blk in &tr.h {
            x = x.clone().add(blk.attn.forward(norm_opt(&blk.ln_1, x.clone()), b));
            x = x.clone().add(blk.mlp.c_proj.forward_rows(gelu_op(blk.mlp.c_fc.forward_rows(norm_opt(&blk.ln_2, x.clone())))));
        }
        let x = norm_opt(&tr.ln_f, x);
        match &self.lm_head {
            Some(head) => head.forward_rows(x),
            None => matmul_t_in(x, tr.wte.weight.val(), true),
        }
    }

    /// The linear layers with the norm that makes them scale-invariant: under QK-norm the query
    /// and key projections, per head (each head's rows jointly); no other matrix (the
    /// residual stream is a sum, so no single writer into it is normalized alone).
    pub fn links(&self) -> Vec<Link> {
        let mut v = Vec::new();
        for (i, blk) in self.transformer.h.iter().enumerate() {
            let a = &blk.attn;
            let p = format!("transformer.h.{i}.attn");
            for (name, norm) in [("q_proj", &a.q_norm), ("k_proj", &a.k_norm)] {
                let norm = norm.as_ref().map(|n| LinkNorm {
                    path: format!("{p}.{}_norm", &name[..1]),
                    granularity: head_granularity(a.n_head, n.weight.dims()[0]),
                });
                v.push(Link { layer: format!("{p}.{name}"), norm });
            }
            for name in ["attn.v_proj", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"] {
                v.push(Link { layer: format!("transformer.h.{i}.{name}"), norm: None });
            }
        }
        if self.lm_head.is_some() {
            v.push(Link { layer: "lm_head".into(), norm: None });
        }
        v
    }
}

/// The slices of a `[n_head * head_dim, in]` projection normalized together by a per-head norm.
fn head_granularity(n_head: usize, head_dim: usize) -> Granularity {
    match head_dim {
        1 => Granularity::Channel,
        _ if n_head == 1 => Granularity::Tensor,
        hd => Granularity::Group(hd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{tensors, Net};
    use burn::tensor::TensorData;

    fn shape(qk_norm: bool, tie_embeddings: bool) -> GptShape {
        GptShape { n_layer: 2, n_head: 2, n_embd: 16, block_size: 8, qk_norm, tie_embeddings }
    }

    fn ids(v: &[i32], dev: &Device) -> Tensor<2, Int> {
        Tensor::from_data(TensorData::new(v.to_vec(), [1, v.len()]), dev)
    }

    #[test]
    fn logits_are_causal_and_shaped() {
        let dev = Device::flex();
        for norm in [NormKind::Ln, NormKind::Rms, NormKind::None] {
            let net = Net::gpt(shape(norm != NormKind::None, true), norm, 11, 3, &dev);
            let a = net.forward(ids(&[1, 2, 3, 4, 5, 6], &dev));
            assert_eq!(a.dims(), [6, 11], "{norm:?}");
            // Changing the last two tokens leaves the logits of the first four positions alone.
            let b = net.forward(ids(&[1, 2, 3, 4, 9, 0], &dev));
            let (a, b) = (crate::model::walk::host(a), crate::model::walk::host(b));
            assert!(a[..44].iter().zip(&b[..44]).all(|(x, y)| (x - y).abs() < 1e-6), "{norm:?}: a position sees the future");
            assert!(a[44..].iter().zip(&b[44..]).any(|(x, y)| (x - y).abs() > 1e-6), "{norm:?}: later positions see their tokens");
        }
    }

    #[test]
    fn names_are_nanogpt_s() {
        let dev = Device::flex();
        let names = |s, norm| tensors(&Net::gpt(s, norm, 11, 0, &dev)).into_iter().map(|t| (t.path, t.shape)).collect::<Vec<_>>();
        let tied = names(shape(false, true), NormKind::Ln);
        let want = [
            ("transformer.wte.weight", vec![11, 16]),
            ("transformer.wpe.weight", vec![8, 16]),
            ("transformer.h.0.ln_1.weight", vec![16]),
            ("transformer.h.0.ln_1.bias", vec![16]),
            ("transformer.h.0.attn.q_proj.weight", vec![16, 16]),
            ("transformer.h.0.attn.k_proj.weight", vec![16, 16]),
            ("transformer.h.0.attn.v_proj.weight", vec![16, 16]),
            ("transformer.h.0.attn.c_proj.weight", vec![16, 16]),
            ("transformer.h.0.ln_2.weight", vec![16]),
            ("transformer.h.0.ln_2.bias", vec![16]),
            ("transformer.h.0.mlp.c_fc.weight", vec![64, 16]),
            ("transformer.h.0.mlp.c_proj.weight", vec![16, 64]),
        ];
        for (i, (p, s)) in want.iter().enumerate() {
            assert_eq!((tied[i].0.as_str(), &tied[i].1), (*p, s));
        }
        assert_eq!(tied.last().unwrap().0, "transformer.ln_f.bias");
        assert_eq!(tied.len(), 2 + 2 * 10 + 2);
        let untied = names(shape(true, false), NormKind::Rms);
        assert_eq!(untied.last().unwrap(), &("lm_head.weight".to_string(), vec![11, 16]));
        assert!(untied.iter().any(|t| t.0 == "transformer.h.1.attn.q_norm.weight" && t.1 == vec![8]));
        assert!(!untied.iter().any(|t| t.0.ends_with(".bias")), "RMSNorm has no bias, nor do the linear layers");
        // nanoGPT's CPU scale: 4 layers of 12*128^2, the embeddings and the norms.
        let default = GptShape { n_layer: 4, n_head: 4, n_embd: 128, block_size: 64, qk_norm: false, tie_embeddings: true };
        let n = crate::model::num_params(&Net::gpt(default, NormKind::Ln, 62, 0, &dev));
        assert_eq!(n, 4 * (12 * 128 * 128 + 4 * 128) + 62 * 128 + 64 * 128 + 2 * 128);
    }
}
