//! `resnet20`: the CIFAR ResNet-20 v1 of He et al. (2016): conv3x3(16) -> 3 stages of 3
//! basic blocks (16, 32, 64 channels, stride 2 at the start of stages 2 and 3) with the
//! parameter-free "option A" shortcut (subsample + zero channels), global average pool,
//! linear classifier. About 0.27M parameters.

use super::init::Init;
use super::layers::{max_pool, Conv, Dense, Norm, NormKind};
use burn::module::Module;
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};

/// conv-norm-relu-conv-norm + shortcut, relu.
#[derive(Module, Debug)]
pub struct BasicBlock {
    /// First conv (carries the stride).
    pub conv1: Conv,
    /// Its norm.
    pub norm1: Option<Norm>,
    /// Second conv.
    pub conv2: Conv,
    /// Its norm.
    pub norm2: Option<Norm>,
    /// Channels added by the shortcut's zero padding (0 for identity).
    pub pad_channels: usize,
    /// Stride of the block.
    pub stride: usize,
}

impl BasicBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = self.conv1.forward_norm_relu(&self.norm1, x.clone(), None);
        let short = if self.stride == 1 && self.pad_channels == 0 {
            x
        } else {
            // Option A: x[:, :, ::2, ::2] (a 1x1 max-pool with stride 2 subsamples), zero channels.
            let s = max_pool(x, 1, self.stride);
            let [n, _, h, w] = s.dims();
            let half = self.pad_channels / 2;
            let zeros = |c: usize| Tensor::<4>::zeros([n, c, h, w], &s.device());
            Tensor::cat(vec![zeros(half), s.clone(), zeros(self.pad_channels - half)], 1)
        };
        self.conv2.forward_norm_relu(&self.norm2, out, Some(short))
    }
}

/// ResNet-20.
#[derive(Module, Debug)]
pub struct ResNet20 {
    /// Stem convolution.
    pub conv1: Conv,
    /// Stem norm.
    pub norm1: Option<Norm>,
    /// Stage 1 (16 channels).
    pub layer1: Vec<BasicBlock>,
    /// Stage 2 (32 channels).
    pub layer2: Vec<BasicBlock>,
    /// Stage 3 (64 channels).
    pub layer3: Vec<BasicBlock>,
    /// Classifier.
    pub fc: Dense,
}

impl ResNet20 {
    /// Builds ResNet-20 for `[c, h, w]` inputs.
    pub fn new(init: &mut Init, shape: [usize; 3], classes: usize, norm: NormKind, bn_momentum: f64, device: &Device) -> Self {
        let conv1 = Conv::new(init, shape[0], 16, 3, 1, norm, device);
        let norm1 = Norm::new(norm, 16, bn_momentum, device);
        let mut c_in = 16;
        let mut stage = |init: &mut Init, c: usize, stride: usize| {
            (0..3)
                .map(|i| {
                    let s = if i == 0 { stride } else { 1 };
                    let b = BasicBlock {
                        conv1: Conv::new(init, c_in, c, 3, s, norm, device),
                        norm1: Norm::new(norm, c, bn_momentum, device),
                        conv2: Conv::new(init, c, c, 3, 1, norm, device),
                        norm2: Norm::new(norm, c, bn_momentum, device),
                        pad_channels: c - c_in,
                        stride: s,
                    };
                    c_in = c;
                    b
                })
                .collect::<Vec<_>>()
        };
        let layer1 = stage(init, 16, 1);
        let layer2 = stage(init, 32, 2);
        let layer3 = stage(init, 64, 2);
        let fc = Dense::new(init, 64, classes, NormKind::None, device);
        ResNet20 { conv1, norm1, layer1, layer2, layer3, fc }
    }

    /// Logits for an NCHW batch.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = self.conv1.forward_norm_relu(&self.norm1, x, None);
        for b in self.layer1.iter().chain(&self.layer2).chain(&self.layer3) {
            x = b.forward(x);
        }
        let x = adaptive_avg_pool2d(x, [1, 1]);
        self.fc.forward(x.flatten(1, 3))
    }
}
