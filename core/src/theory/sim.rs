//! The scale-invariant objective the closed forms are derived for, for the tests: random
//! gradients orthogonal to `w` with norm `1/||w||` (F1a, F1b).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Dimension of the simulated weight.
pub const DIM: usize = 2000;

/// Euclidean norm.
pub fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Dot product.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A gradient of a scale-invariant loss at `w`: random direction, orthogonal to `w`,
/// norm `1/||w||` (unit-norm gradient `g1` of norm 1).
pub fn grad(w: &[f64], rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut g: Vec<f64> = (0..w.len()).map(|_| rng.random_range(-1.0..1.0)).collect();
    let p = dot(&g, w) / dot(w, w);
    for (gi, wi) in g.iter_mut().zip(w) {
        *gi -= p * wi;
    }
    let s = 1.0 / (norm(&g) * norm(w));
    g.iter().map(|x| x * s).collect()
}

/// The update rules simulated.
#[derive(Debug, Clone, Copy)]
pub enum Opt {
    /// SGD with momentum, L2 in the gradient (`coupled`) or decoupled decay.
    Sgd {
        /// Momentum.
        mu: f64,
        /// L2 in the gradient.
        coupled: bool,
    },
    /// AdamW.
    AdamW {
        /// `beta1`.
        b1: f64,
        /// `beta2`.
        b2: f64,
    },
}

/// One update of `w` (momentum or Adam's first moment in `buf`, Adam's second in `v`) at the
/// 1-based step `t`; with `cautious`, decoupled decay only where the step's direction and the
/// weight agree in sign (F16).
#[allow(clippy::too_many_arguments)]
pub fn step(opt: &Opt, w: &mut [f64], buf: &mut [f64], v: &mut [f64], g: &[f64], lr: f64, wd: f64, t: usize, cautious: bool) {
    for i in 0..w.len() {
        let (dir, coupled) = match *opt {
            Opt::Sgd { mu, coupled } => {
                buf[i] = mu * buf[i] + g[i] + if coupled { wd * w[i] } else { 0.0 };
                (buf[i], coupled)
            }
            Opt::AdamW { b1, b2 } => {
                buf[i] = b1 * buf[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                let mh = buf[i] / (1.0 - b1.powi(t as i32));
                let vh = v[i] / (1.0 - b2.powi(t as i32));
                (mh / (vh.sqrt() + 1e-12), false)
            }
        };
        let decay = !coupled && (!cautious || dir * w[i] >= 0.0);
        w[i] -= lr * dir + if decay { lr * wd * w[i] } else { 0.0 };
    }
}
