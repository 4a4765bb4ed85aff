//! Seeded weight initialization. We draw every initial weight from our own ChaCha stream
//! (not the backend's global RNG) so a seed gives the same network on every backend and
//! whatever order burn materializes parameters in.

use burn::tensor::{Device, Shape, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded source of initial weights.
pub struct Init {
    rng: ChaCha8Rng,
}

impl Init {
    /// A source for `seed`.
    pub fn new(seed: u64) -> Self {
        Init { rng: ChaCha8Rng::seed_from_u64(seed ^ 0x1417_0000) }
    }

    /// A tensor of `U(-bound, bound)` samples.
    pub fn uniform<const D: usize, S: Into<Shape>>(&mut self, shape: S, bound: f32, device: &Device) -> Tensor<D> {
        let shape: Shape = shape.into();
        let n = shape.num_elements();
        let v: Vec<f32> = (0..n).map(|_| self.rng.random_range(-bound..bound)).collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }
}
