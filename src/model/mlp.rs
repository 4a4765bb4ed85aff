//! `mlp`: 784-512-512-10 (inputs flattened), each hidden layer followed by the chosen
//! normalization and ReLU.

use super::init::Init;
use super::layers::{norm_relu, Dense, Norm, NormKind};
use burn::module::Module;
use burn::tensor::{Device, Tensor};

/// Hidden width of the MLP.
pub const HIDDEN: usize = 512;

/// The MLP.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Input layer.
    pub fc1: Dense,
    /// Its normalization.
    pub norm1: Option<Norm>,
    /// Hidden layer.
    pub fc2: Dense,
    /// Its normalization.
    pub norm2: Option<Norm>,
    /// Classifier (never normalized).
    pub fc3: Dense,
}

impl Mlp {
    /// Builds the MLP for `features` inputs and `classes` outputs.
    pub fn new(init: &mut Init, features: usize, classes: usize, norm: NormKind, bn_momentum: f64, device: &Device) -> Self {
        Mlp {
            fc1: Dense::new(init, features, HIDDEN, norm, device),
            norm1: Norm::new(norm, HIDDEN, bn_momentum, device),
            fc2: Dense::new(init, HIDDEN, HIDDEN, norm, device),
            norm2: Norm::new(norm, HIDDEN, bn_momentum, device),
            fc3: Dense::new(init, HIDDEN, classes, NormKind::None, device),
        }
    }

    /// Logits for an NCHW batch.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x: Tensor<2> = x.flatten(1, 3);
        let x = norm_relu(&self.norm1, self.fc1.forward(x));
        let x = norm_relu(&self.norm2, self.fc2.forward(x));
        self.fc3.forward(x)
    }
}
