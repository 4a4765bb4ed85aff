//! `convnet`: the 4-layer ConvNet of van Laarhoven (2017): 3 x [conv3x3 -> norm -> ReLU ->
//! maxpool 2x2], channels 32/64/128, then a linear classifier.

use super::init::Init;
use super::layers::{norm_relu_pool, Conv, Dense, Norm, NormKind};
use burn::module::Module;
use burn::tensor::{Device, Tensor};

/// Channels of the three conv blocks.
pub const CHANNELS: [usize; 3] = [32, 64, 128];

/// conv -> norm -> ReLU -> maxpool.
#[derive(Module, Debug)]
pub struct ConvBlock {
    /// The convolution (no bias when a norm layer follows).
    pub conv: Conv,
    /// The normalization layer.
    pub norm: Option<Norm>,
}

impl ConvBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        norm_relu_pool(&self.norm, self.conv.forward(x))
    }
}

/// The ConvNet.
#[derive(Module, Debug)]
pub struct ConvNet {
    /// First block.
    pub block1: ConvBlock,
    /// Second block.
    pub block2: ConvBlock,
    /// Third block.
    pub block3: ConvBlock,
    /// Classifier.
    pub fc: Dense,
}

impl ConvNet {
    /// Builds the ConvNet for `[c, h, w]` inputs.
    pub fn new(init: &mut Init, shape: [usize; 3], classes: usize, norm: NormKind, bn_momentum: f64, device: &Device) -> Self {
        let mut c_in = shape[0];
        let mut blocks = CHANNELS.iter().map(|&c| {
            let b = ConvBlock { conv: Conv::new(init, c_in, c, 3, 1, norm, device), norm: Norm::new(norm, c, bn_momentum, device) };
            c_in = c;
            b
        });
        let (block1, block2, block3) = (blocks.next().unwrap(), blocks.next().unwrap(), blocks.next().unwrap());
        drop(blocks);
        let (h, w) = (shape[1] / 8, shape[2] / 8);
        let fc = Dense::new(init, CHANNELS[2] * h * w, classes, NormKind::None, device);
        ConvNet { block1, block2, block3, fc }
    }

    /// Logits for an NCHW batch.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.block3.forward(self.block2.forward(self.block1.forward(x)));
        self.fc.forward(x.flatten(1, 3))
    }
}
