//! Models (`mlp`, `convnet`, `resnet20` on images, `gpt` on text) with the normalization
//! choice in one place ([`NormKind`]), and the structural facts `params` needs: which layer
//! feeds which norm.
//!
//! May import `kernels` and the core (roles, kinds).

pub mod convnet;
pub mod gpt;
pub mod init;
pub mod layers;
pub mod mlp;
pub mod resnet;
pub mod state;
pub mod walk;

pub use layers::{NormKind, GN_GROUPS};

use burn::module::{Module, Param};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor};
use normwd_core::roles::Granularity;

pub use normwd_core::kinds::{GptShape, ModelKind};

/// What a model reads: an NCHW batch of images, or `[batch, seq]` token ids.
#[derive(Debug, Clone)]
pub enum Input {
    /// Images (the image models).
    Images(Tensor<4>),
    /// Token ids (`gpt`).
    Tokens(Tensor<2, Int>),
}

impl From<Tensor<4>> for Input {
    fn from(x: Tensor<4>) -> Self {
        Input::Images(x)
    }
}

impl From<Tensor<2, Int>> for Input {
    fn from(x: Tensor<2, Int>) -> Self {
        Input::Tokens(x)
    }
}

/// A built model of any architecture. (Variants differ in size, but a model is built once
/// per run and moved, never stored in bulk, so boxing would buy nothing.)
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Net {
    /// See [`mlp::Mlp`].
    Mlp(mlp::Mlp),
    /// See [`convnet::ConvNet`].
    ConvNet(convnet::ConvNet),
    /// See [`resnet::ResNet20`].
    ResNet20(resnet::ResNet20),
    /// See [`gpt::Gpt`].
    Gpt(gpt::Gpt),
}

/// A linear op (conv or dense) and the normalization layer its output goes through directly,
/// if any: the graph fact that makes its weight scale-invariant.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// Path of the layer (`block1.conv`).
    pub layer: String,
    /// The norm layer that follows it, if any.
    pub norm: Option<LinkNorm>,
}

/// The norm layer of a [`Link`], and what it implies for the layer's weight.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkNorm {
    /// Path of the norm layer (`block1.norm`).
    pub path: String,
    /// The slices of the layer's weight over which the loss is scale-invariant.
    pub granularity: Granularity,
}

fn link(layer: impl Into<String>, norm: &Option<layers::Norm>, norm_path: impl Into<String>) -> Link {
    Link { layer: layer.into(), norm: norm.as_ref().map(|n| LinkNorm { path: norm_path.into(), granularity: n.granularity() }) }
}

impl Net {
    /// Builds the image model `kind` for `[c, h, w]` inputs and 10 classes, with weights drawn
    /// from `seed` (`gpt` is built by [`Net::gpt`]).
    pub fn new(kind: ModelKind, norm: NormKind, shape: [usize; 3], bn_momentum: f64, seed: u64, device: &Device) -> Self {
        let mut init = init::Init::new(seed);
        let features = shape.iter().product();
        match kind {
            ModelKind::Mlp => Net::Mlp(mlp::Mlp::new(&mut init, features, 10, norm, bn_momentum, device)),
            ModelKind::Convnet => Net::ConvNet(convnet::ConvNet::new(&mut init, shape, 10, norm, bn_momentum, device)),
            ModelKind::Resnet20 => Net::ResNet20(resnet::ResNet20::new(&mut init, shape, 10, norm, bn_momentum, device)),
            ModelKind::Gpt => unreachable!("a gpt is built by Net::gpt, from its shape and vocabulary"),
        }
    }

    /// Builds a `gpt` of `shape` for `vocab` tokens, with weights drawn from `seed`.
    pub fn gpt(shape: GptShape, norm: NormKind, vocab: usize, seed: u64, device: &Device) -> Self {
        Net::Gpt(gpt::Gpt::new(&mut init::Init::new(seed), shape, norm, vocab, device))
    }

    /// Logits `[examples, classes]`: per image, or per token position for `gpt`.
    pub fn forward(&self, x: impl Into<Input>) -> Tensor<2> {
        match (self, x.into()) {
            (Net::Mlp(m), Input::Images(x)) => m.forward(x),
            (Net::ConvNet(m), Input::Images(x)) => m.forward(x),
            (Net::ResNet20(m), Input::Images(x)) => m.forward(x),
            (Net::Gpt(m), Input::Tokens(x)) => m.forward(x),
            (_, x) => unreachable!("the data module gives each model its own input, not {x:?}"),
        }
    }

    /// Every linear op with the norm layer that directly follows it.
    pub fn links(&self) -> Vec<Link> {
        match self {
            Net::Mlp(m) => vec![link("fc1", &m.norm1, "norm1"), link("fc2", &m.norm2, "norm2"), link("fc3", &None, "")],
            Net::ConvNet(m) => {
                let mut v: Vec<Link> = [("block1", &m.block1), ("block2", &m.block2), ("block3", &m.block3)]
                    .iter()
                    .map(|(p, b)| link(format!("{p}.conv"), &b.norm, format!("{p}.norm")))
                    .collect();
                v.push(link("fc", &None, ""));
                v
            }
            Net::ResNet20(m) => {
                let mut v = vec![link("conv1", &m.norm1, "norm1")];
                for (name, layer) in [("layer1", &m.layer1), ("layer2", &m.layer2), ("layer3", &m.layer3)] {
                    for (i, b) in layer.iter().enumerate() {
                        v.push(link(format!("{name}.{i}.conv1"), &b.norm1, format!("{name}.{i}.norm1")));
                        v.push(link(format!("{name}.{i}.conv2"), &b.norm2, format!("{name}.{i}.norm2")));
                    }
                }
                v.push(link("fc", &None, ""));
                v
            }
            Net::Gpt(m) => m.links(),
        }
    }

    /// The layer that produces the logits (`None` where the token embedding does, tied).
    pub fn output_layer(&self) -> Option<String> {
        match self {
            Net::Gpt(m) => m.lm_head.as_ref().map(|_| "lm_head".to_string()),
            _ => self.links().pop().map(|l| l.layer),
        }
    }
}

/// One float tensor of a module as seen by [`tensors`].
#[derive(Debug, Clone)]
pub struct TensorEntry {
    /// Dotted path (`block1.conv.weight`); enum variant names are left out.
    pub path: String,
    /// Type of the struct holding it (`Norm`, `Conv`, `Dense`).
    pub owner: String,
    /// Field name (`weight`, `bias`, `running_mean`, ...).
    pub field: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// False for buffers (running statistics).
    pub trainable: bool,
}

struct Lister(Vec<TensorEntry>);

impl walk::VisitFloat for Lister {
    fn float<const D: usize>(&mut self, path: &str, owner: &str, param: &Param<Tensor<D>>) {
        let field = path.rsplit('.').next().unwrap_or("").to_string();
        self.0.push(TensorEntry {
            path: path.to_string(),
            owner: owner.to_string(),
            trainable: !field.starts_with("running_"),
            field,
            shape: param.lazy_shape().to_vec(),
        });
    }
}

/// Lists every float tensor of a module (parameters and buffers) in a stable order.
pub fn tensors<M: Module>(m: &M) -> Vec<TensorEntry> {
    let mut l = Lister(Vec::new());
    walk::visit(m, &mut l);
    l.0
}

/// Number of trainable scalars.
pub fn num_params<M: Module>(m: &M) -> usize {
    tensors(m).iter().filter(|t| t.trainable).map(|t| t.shape.iter().product::<usize>()).sum()
}

/// Mean cross-entropy of logits against integer labels.
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let n = labels.dims()[0];
    let logp = log_softmax(logits, 1);
    logp.gather(1, labels.reshape([n, 1])).mean().neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn every_model_and_norm_gives_logits() {
        let dev = Device::flex();
        for kind in ModelKind::IMAGE {
            let shape = if kind == ModelKind::Resnet20 { [3, 32, 32] } else { [1, 28, 28] };
            for norm in NormKind::ALL {
                let net = Net::new(kind, norm, shape, 0.1, 1, &dev);
                let x = Tensor::<4>::random([3, shape[0], shape[1], shape[2]], Distribution::Normal(0.0, 1.0), &dev);
                let y = net.forward(x);
                assert_eq!(y.dims(), [3, 10], "{kind:?} {norm:?}");
                let v = y.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
                assert!(v.iter().all(|x| x.is_finite()));
            }
        }
    }

    #[test]
    fn same_seed_same_weights() {
        let dev = Device::flex();
        let a = state::module_tensors(&Net::new(ModelKind::Convnet, NormKind::Bn, [1, 28, 28], 0.1, 5, &dev));
        let b = state::module_tensors(&Net::new(ModelKind::Convnet, NormKind::Bn, [1, 28, 28], 0.1, 5, &dev));
        let c = state::module_tensors(&Net::new(ModelKind::Convnet, NormKind::Bn, [1, 28, 28], 0.1, 6, &dev));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn batch_norm_train_and_eval() {
        // Training mode (autodiff input): batch statistics, running averages updated with
        // momentum 0.1 and the unbiased variance (PyTorch). Eval mode: running averages.
        let dev = Device::flex().autodiff();
        let bn = layers::Norm::new(NormKind::Bn, 2, 0.1, &dev).unwrap();
        // Channel 0: values 1,2,3,4 (mean 2.5, biased var 1.25, unbiased 5/3); channel 1: 10,10,10,14.
        let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 10.0, 2.0, 10.0, 3.0, 10.0, 4.0, 14.0], [4, 2]), &dev);
        let y = bn.forward(x.clone()).into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let expect0 = (1.0 - 2.5) / (1.25f32 + 1e-5).sqrt();
        assert!((y[0] - expect0).abs() < 1e-4, "{y:?}");
        let rm = bn.running_mean.as_ref().unwrap().value().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let rv = bn.running_var.as_ref().unwrap().value().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        assert!((rm[0] - 0.25).abs() < 1e-6 && (rm[1] - 1.1).abs() < 1e-6, "{rm:?}");
        assert!((rv[0] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-5, "{rv:?}");
        // Eval: the running statistics are used, not the batch's.
        let plain = Device::flex();
        let bn_eval = bn.valid();
        let xe = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 10.0], [1, 2]), &plain);
        let ye = bn_eval.forward(xe).into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        assert!((ye[0] - (1.0 - rm[0]) / (rv[0] + 1e-5).sqrt()).abs() < 1e-5, "{ye:?}");
    }

    #[test]
    fn weight_norm_starts_at_the_plain_weight() {
        let dev = Device::flex();
        let mut i1 = init::Init::new(3);
        let mut i2 = init::Init::new(3);
        let plain = layers::Dense::new(&mut i1, 6, 4, NormKind::None, &dev);
        let wn = layers::Dense::new(&mut i2, 6, 4, NormKind::Wn, &dev);
        let x = Tensor::<2>::random([5, 6], Distribution::Normal(0.0, 1.0), &dev);
        let a = plain.forward(x.clone()).into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let b = wn.forward(x).into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-5);
        }
    }
}
