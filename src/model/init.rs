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

    /// A tensor of `N(0, std^2)` samples (Box-Muller on the same stream), as nanoGPT's
    /// `normal_(0, 0.02)`.
    pub fn normal<const D: usize, S: Into<Shape>>(&mut self, shape: S, std: f32, device: &Device) -> Tensor<D> {
        let shape: Shape = shape.into();
        let n = shape.num_elements();
        let mut v = Vec::with_capacity(n + 1);
        while v.len() < n {
            // 1 - u lies in (0, 1], so the logarithm is finite.
            let (u1, u2): (f64, f64) = (1.0 - self.rng.random::<f64>(), self.rng.random::<f64>());
            let r = (-2.0 * u1.ln()).sqrt();
            let t = 2.0 * std::f64::consts::PI * u2;
            v.extend([(r * t.cos()) as f32 * std, (r * t.sin()) as f32 * std]);
        }
        v.truncate(n);
        Tensor::from_data(TensorData::new(v, shape), device)
    }
}
