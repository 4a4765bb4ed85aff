//! Closed forms from THEORY.md (and F17, docs/theory-f17.md, proposed for it), as pure
//! functions (no tensors, no burn). Each is checked against a simulation or a training run in
//! the tests.
//!
//! Convention: `lr = eta`, `wd = lambda` with the decay adding `lambda*w` to the gradient
//! (coupled) or applying `w -= eta*lambda*w` (decoupled); `mu` is PyTorch's momentum.

use std::f64::consts::PI;

pub mod muon;
mod schedules;
#[cfg(test)]
mod sim;
pub use schedules::*;

/// F3: effective learning rate of a scale-invariant weight under SGD, `eta / ||w||^2`.
pub fn effective_lr_sgd(lr: f64, norm: f64) -> f64 {
    lr / (norm * norm)
}

/// Effective learning rate under Adam-type updates, `eta / ||w||` (the update size does not
/// scale with the gradient, so the relative step is `eta/||w||`).
pub fn effective_lr_adam(lr: f64, norm: f64) -> f64 {
    lr / norm
}

/// F5: equilibrium angular update per step of plain SGD, `sqrt(2*eta*lambda)` (radians).
pub fn angle_sgd(lr: f64, wd: f64) -> f64 {
    (2.0 * lr * wd).sqrt()
}

/// F7: SGD with momentum `mu` and L2 in the gradient (PyTorch's `SGD(weight_decay=...)`):
/// `sqrt(2*eta*lambda/(1+mu))` (Wan et al.; Kosson et al. 2023).
pub fn angle_sgdm(lr: f64, wd: f64, mu: f64) -> f64 {
    (2.0 * lr * wd / (1.0 + mu)).sqrt()
}

/// SGD with momentum and *decoupled* decay (SGDW). Over the slow time scale of the norm, the
/// coupled decay `lambda*w` passes through the momentum buffer and acts as `lambda/(1-mu)`,
/// so SGDW with `lambda` behaves as coupled SGDM with `lambda*(1-mu)`: F7 with that rate.
/// (Derived here from F7, not a published formula; checked by simulation in the tests.)
pub fn angle_sgdw(lr: f64, wd: f64, mu: f64) -> f64 {
    angle_sgdm(lr, wd * (1.0 - mu), mu)
}

/// F8: AdamW, `sqrt(2*eta*lambda*(1-b1)/(1+b1))` (Kosson et al. 2023).
pub fn angle_adamw(lr: f64, wd: f64, b1: f64) -> f64 {
    (2.0 * lr * wd * (1.0 - b1) / (1.0 + b1)).sqrt()
}

/// NAdam with decoupled decay (PyTorch's `NAdam(decoupled_weight_decay=True)`): the step
/// blends the gradient and Adam's first moment, `u = (1-mu)*g + mu*m` with `m` the EMA of
/// `b1`, so one gradient weighs `1 - mu*b1` in its own step and `mu*(1-b1)*b1^k` in the k-th
/// after (together 1). F8's argument (the angle is `sqrt(2*eta*lambda)` times the RMS of one
/// step over the long-run RMS of the summed steps) gives `sqrt(2*eta*lambda*((1-mu*b1)^2 +
/// mu^2*b1^2*(1-b1)/(1+b1)))`; `mu` is PyTorch's `mu_t = b1*(1 - 0.5*0.96^(t*psi))`, which
/// creeps to `b1` over tens of thousands of steps. Derived here; checked by simulation with
/// `torch.optim.NAdam` (python/tests/test_optimizers.py).
pub fn angle_nadam(lr: f64, wd: f64, b1: f64, mu: f64) -> f64 {
    (2.0 * lr * wd * ((1.0 - mu * b1).powi(2) + mu * mu * b1 * b1 * (1.0 - b1) / (1.0 + b1))).sqrt()
}

/// F9: Lion, `sqrt(pi/2) * sqrt(2*eta*lambda) * sqrt((1-b1)^2 + b1^2*(1-b2)/(1+b2))`.
pub fn angle_lion(lr: f64, wd: f64, b1: f64, b2: f64) -> f64 {
    (PI / 2.0).sqrt() * (2.0 * lr * wd).sqrt() * ((1.0 - b1).powi(2) + b1 * b1 * (1.0 - b2) / (1.0 + b2)).sqrt()
}

/// F5: equilibrium norm of plain SGD, `||w*|| = sqrt(||g1|| * sqrt(eta/(2*lambda)))`, where
/// `g1` is the gradient the weight would have at unit norm (`||g1|| = ||g|| * ||w||` by F1b).
pub fn equilibrium_norm_sgd(unit_grad_norm: f64, lr: f64, wd: f64) -> f64 {
    (unit_grad_norm * (lr / (2.0 * wd)).sqrt()).sqrt()
}

/// F6: steps to approach equilibrium, `1/(eta*lambda)` (the "intrinsic learning rate"
/// `eta*lambda` is the rate at which the norm relaxes).
pub fn relaxation_steps(lr: f64, wd: f64) -> f64 {
    1.0 / (lr * wd)
}

/// F12: learning rate at (0-based) step `t` of the decay-free run that follows the same
/// function trajectory as plain GD with `(eta, lambda)`: `eta*(1-eta*lambda)^(-2t-1)`.
pub fn exp_lr(lr: f64, wd: f64, t: u64) -> f64 {
    lr * (1.0 - lr * wd).powf(-2.0 * t as f64 - 1.0)
}

/// F12: the decay-free run's weights are `w_t / (1-eta*lambda)^t`; this is that factor.
pub fn exp_lr_weight_scale(lr: f64, wd: f64, t: u64) -> f64 {
    (1.0 - lr * wd).powf(-(t as f64))
}

/// F12 with momentum: the growth factor `a`, the root of `x^2 - (1+mu-eta*lambda)x + mu = 0`
/// closest to 1, so the equivalent rate is `eta * a^(-2t-1)`. `None` when the roots are complex.
pub fn exp_lr_momentum_root(lr: f64, wd: f64, mu: f64) -> Option<f64> {
    let b = 1.0 + mu - lr * wd;
    let disc = b * b - 4.0 * mu;
    (disc >= 0.0).then(|| (b + disc.sqrt()) / 2.0)
}

/// Hyperparameter transfer: the weight decay that keeps `eta*lambda` (and so the equilibrium
/// of scale-invariant weights under SGD) when the learning rate changes to `new_lr`.
pub fn transfer_weight_decay(lr: f64, wd: f64, new_lr: f64) -> f64 {
    lr * wd / new_lr
}

/// Angle between two vectors given their dot product and norms (radians), clamped for
/// rounding so identical vectors give 0 rather than NaN.
pub fn angle_from_dot(dot: f64, norm_a: f64, norm_b: f64) -> f64 {
    if norm_a == 0.0 || norm_b == 0.0 {
        return 0.0;
    }
    (dot / (norm_a * norm_b)).clamp(-1.0, 1.0).acos()
}

/// Angle (radians) between `w` and `w + d` from the update's own sums: `norm_sq = ||w||^2`,
/// `step_sq = ||d||^2`, `dot = <w, d>`. [`angle_from_dot`]'s arccosine of a cosine near 1 keeps
/// only about `1e-8` of absolute precision in float64; this form keeps the angle's own relative
/// precision at any size, since `||w x (w+d)||^2 = ||w||^2 ||d||^2 - <w,d>^2` involves the step
/// alone (a difference of two same-dtype values, exact for a small update).
pub fn angle_from_step(norm_sq: f64, step_sq: f64, dot: f64) -> f64 {
    if norm_sq == 0.0 {
        return 0.0;
    }
    let cross = (norm_sq * step_sq - dot * dot).max(0.0).sqrt();
    cross.atan2(norm_sq + dot)
}

/// The optimizer family for [`predicted_angle`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Family {
    /// SGD (momentum `mu`), decay coupled (`true`) or decoupled.
    Sgd {
        /// Momentum.
        mu: f64,
        /// L2 in the gradient.
        coupled: bool,
    },
    /// Adam with L2 in the gradient: no fixed rotational rate.
    AdamL2,
    /// AdamW (decoupled).
    AdamW {
        /// `beta1`.
        b1: f64,
        /// `beta2` (how fast the second moment follows a changing gradient: [`track`]).
        b2: f64,
    },
    /// NAdam with decoupled decay ([`angle_nadam`]).
    Nadam {
        /// `beta1` (the first moment's EMA).
        b1: f64,
        /// The momentum blend `mu_t` at this step.
        mu: f64,
    },
    /// An optimizer without a closed-form equilibrium in THEORY.md (SGDP, AdamP, LARS, ...).
    Other,
    /// Lion.
    Lion {
        /// `beta1`.
        b1: f64,
        /// `beta2`.
        b2: f64,
    },
    /// Muon (F18, [`muon`]): its angle depends on the matrix's shape as well.
    Muon {
        /// Momentum `b` (PyTorch's `momentum`).
        b: f64,
        /// Nesterov's blend.
        nesterov: bool,
    },
}

/// Predicted equilibrium angular update per step for `(lr, wd)`, if the theory gives one;
/// `shape` is the tensor's `[rows, cols]` view, which Muon's angle needs (`None` gives no
/// prediction for Muon).
pub fn predicted_angle(family: Family, lr: f64, wd: f64, shape: Option<(usize, usize)>) -> Option<f64> {
    if wd <= 0.0 {
        return None;
    }
    match family {
        Family::Muon { b, nesterov } => shape.map(|(r, c)| muon::angle(lr, wd, r, c, b, nesterov)),
        Family::Sgd { mu, coupled: true } => Some(angle_sgdm(lr, wd, mu)),
        Family::Sgd { mu, coupled: false } => Some(angle_sgdw(lr, wd, mu)),
        Family::AdamL2 | Family::Other => None,
        Family::AdamW { b1, .. } => Some(angle_adamw(lr, wd, b1)),
        Family::Nadam { b1, mu } => Some(angle_nadam(lr, wd, b1, mu)),
        Family::Lion { b1, b2 } => Some(angle_lion(lr, wd, b1, b2)),
    }
}

/// F17: at equilibrium, the expected cosine between a scale-invariant weight and itself `k`
/// updates later, `cos(w_t, w_{t+k})`: what checkpoints `k` steps apart are compared with.
///
/// Derivation (this project's; checked by simulation and on real training in the tests). At
/// equilibrium `||w||` is stationary and each gradient is orthogonal to the weight it is taken
/// at, with no mean component along any fixed direction. So the component `a_j = <w_{t+j}, u>`
/// along the fixed `u = w_t/||w_t||` follows the decay alone, momentum included, and
/// `cos(w_t, w_{t+k}) = a_k / a_0`:
/// - coupled SGD(M): `b_j = mu*b_{j-1} + lambda*a_j`, `a_{j+1} = a_j - eta*b_j`, where the
///   buffer's component along `u` when the gap starts is `b_{-1} = -lambda*a_0/(1+mu)` (the norm
///   balance `2<buf_t, w_t> = eta*||buf_t||^2` gives `<buf_t, w_t/||w||> = lambda||w||/(1+mu)`,
///   and `<buf_{t-1}, w_t>` is its negative);
/// - decoupled decay (SGDW, and AdamW with `mu = beta1`): `a_{j+1} = (1-d)*a_j - mu^(j+1)*R'`
///   with `d = eta*lambda`, `R' = -S^2/(1-mu')`, `S^2 = d(2-d)(1-mu')/(1+mu')`, `mu' = mu(1-d)`
///   (the previous update's component along `u`, from the same norm balance; the step size of
///   the gradient part cancels, so Adam's scaling does not enter).
///
/// For `k = 1` both give back F5/F7/F8; for long gaps the cosine decays as
/// `(1 - eta*lambda/(1-mu))^k` (coupled) or `(1 - eta*lambda)^k` (decoupled), so the angle over
/// a gap is far from `k` times the angle per step once `k` nears the relaxation time.
/// `None` for families without a closed-form equilibrium, or without decay.
pub fn gap_cos(family: Family, lr: f64, wd: f64, k: u64) -> Option<f64> {
    if wd <= 0.0 {
        return None;
    }
    match family {
        Family::Sgd { mu, coupled: true } => {
            // (a_{j+1}, b_j) = M (a_j, b_{j-1}), M = [[1 - eta*lambda, -eta*mu], [lambda, mu]].
            let m = [[1.0 - lr * wd, -lr * mu], [wd, mu]];
            let p = mat_pow(m, k);
            let (a0, b_prev) = (1.0, -wd / (1.0 + mu));
            Some(p[0][0] * a0 + p[0][1] * b_prev)
        }
        Family::Sgd { mu, coupled: false } | Family::AdamW { b1: mu, .. } => {
            let d = lr * wd;
            let mu1 = mu * (1.0 - d);
            let s2 = d * (2.0 - d) * (1.0 - mu1) / (1.0 + mu1);
            let r_prev = -s2 / (1.0 - mu1);
            let q = 1.0 - d;
            // a_k = q^k - R' * sum_{j<k} q^(k-1-j) mu^(j+1), summed in closed form.
            let sum = if (q - mu).abs() > 1e-12 {
                mu * (q.powf(k as f64) - mu.powf(k as f64)) / (q - mu)
            } else {
                k as f64 * mu * q.powf(k as f64 - 1.0)
            };
            Some(q.powf(k as f64) - r_prev * sum)
        }
        Family::AdamL2 | Family::Other | Family::Lion { .. } | Family::Nadam { .. } | Family::Muon { .. } => None,
    }
}

/// F17's angle: `acos` of [`gap_cos`], the equilibrium angle between weights `k` steps apart.
pub fn gap_angle(family: Family, lr: f64, wd: f64, k: u64) -> Option<f64> {
    gap_cos(family, lr, wd, k).map(|c| c.clamp(-1.0, 1.0).acos())
}

fn mat_mul(a: [[f64; 2]; 2], b: [[f64; 2]; 2]) -> [[f64; 2]; 2] {
    [
        [a[0][0] * b[0][0] + a[0][1] * b[1][0], a[0][0] * b[0][1] + a[0][1] * b[1][1]],
        [a[1][0] * b[0][0] + a[1][1] * b[1][0], a[1][0] * b[0][1] + a[1][1] * b[1][1]],
    ]
}

/// `m^k` by squaring: checkpoints can be millions of steps apart.
fn mat_pow(mut m: [[f64; 2]; 2], mut k: u64) -> [[f64; 2]; 2] {
    let mut r = [[1.0, 0.0], [0.0, 1.0]];
    while k > 0 {
        if k & 1 == 1 {
            r = mat_mul(r, m);
        }
        m = mat_mul(m, m);
        k >>= 1;
    }
    r
}

#[cfg(test)]
mod tests {
    //! Each formula against a simulation of the update rule on a scale-invariant objective:
    //! random unit-norm gradients orthogonal to `w` and scaled by `1/||w||` (F1a, F1b), the
    //! model the equilibrium results are derived for. Tolerances are stated per test.
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::sim::{dot, grad, norm, step, Opt, DIM};

    /// Runs `steps` updates and returns (mean angle over the last quarter, final norm).
    fn simulate(opt: Opt, lr: f64, wd: f64, steps: usize) -> (f64, f64) {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut w: Vec<f64> = (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut buf = vec![0.0; DIM];
        let mut v = vec![0.0; DIM];
        let (mut sum, mut n) = (0.0, 0);
        for t in 1..=steps {
            let g = grad(&w, &mut rng);
            let old = w.clone();
            step(&opt, &mut w, &mut buf, &mut v, &g, lr, wd, t, false);
            if t > steps * 3 / 4 {
                sum += angle_from_dot(dot(&old, &w), norm(&old), norm(&w));
                n += 1;
            }
        }
        (sum / n as f64, norm(&w))
    }

    /// Runs `steps` updates and returns, for each gap `k`, the mean `cos(w_t, w_{t+k})` over the
    /// last half of the run (past the relaxation).
    fn simulate_gaps(opt: Opt, lr: f64, wd: f64, steps: usize, gaps: &[usize]) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut w: Vec<f64> = (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect();
        let (mut buf, mut v) = (vec![0.0; DIM], vec![0.0; DIM]);
        let keep = gaps.iter().max().copied().unwrap_or(1) + 1;
        let mut past: std::collections::VecDeque<Vec<f64>> = std::collections::VecDeque::new();
        let (mut sums, mut n) = (vec![0.0; gaps.len()], vec![0usize; gaps.len()]);
        for t in 1..=steps {
            let g = grad(&w, &mut rng);
            step(&opt, &mut w, &mut buf, &mut v, &g, lr, wd, t, false);
            if t > steps / 2 {
                for (gi, &k) in gaps.iter().enumerate() {
                    if let Some(old) = past.len().checked_sub(k).map(|i| &past[i]) {
                        sums[gi] += dot(old, &w) / (norm(old) * norm(&w));
                        n[gi] += 1;
                    }
                }
            }
            past.push_back(w.clone());
            if past.len() > keep {
                past.pop_front();
            }
        }
        sums.iter().zip(&n).map(|(s, n)| s / *n as f64).collect()
    }

    /// F17 against simulation at gaps from one step to past the relaxation time, compared as
    /// `-ln(cos)` (what grows with the gap) within 5%; the naive "k times the per-step angle"
    /// is off by far more at the long gaps, which the test also checks.
    #[test]
    fn f13_gap_cosine_matches_simulation() {
        let gaps = [1, 10, 50, 200];
        let cases = [
            (Opt::Sgd { mu: 0.9, coupled: true }, 0.1, 5e-3, Family::Sgd { mu: 0.9, coupled: true }),
            (Opt::Sgd { mu: 0.0, coupled: true }, 0.5, 4e-3, Family::Sgd { mu: 0.0, coupled: true }),
            (Opt::Sgd { mu: 0.9, coupled: false }, 0.1, 5e-2, Family::Sgd { mu: 0.9, coupled: false }),
            (Opt::AdamW { b1: 0.9, b2: 0.999 }, 1e-3, 5.0, Family::AdamW { b1: 0.9, b2: 0.999 }),
        ];
        for (opt, lr, wd, family) in cases {
            let measured = simulate_gaps(opt, lr, wd, 8_000, &gaps);
            for (&k, m) in gaps.iter().zip(&measured) {
                let p = gap_cos(family, lr, wd, k as u64).unwrap();
                let rel = (m.ln() / p.ln() - 1.0).abs();
                assert!(rel < 0.05, "{family:?} k={k}: measured cos {m}, F17 {p} (-ln rel err {rel:.3})");
            }
            // (Plain SGD's 50 steps turn 50 x its angle past 90 degrees: nothing to compare.)
            let naive = (50.0 * predicted_angle(family, lr, wd, None).unwrap()).cos();
            let p50 = gap_cos(family, lr, wd, 50).unwrap();
            assert!(naive <= 0.0 || (naive.ln() / p50.ln() - 1.0).abs() > 0.3, "{family:?}: 50 x the per-step angle would pass for F17");
        }
        // k = 1 is the per-step angle of F5/F7/F8.
        for f in [Family::Sgd { mu: 0.9, coupled: true }, Family::Sgd { mu: 0.9, coupled: false }, Family::AdamW { b1: 0.9, b2: 0.999 }] {
            let (a1, per) = (gap_angle(f, 0.1, 5e-3, 1).unwrap(), predicted_angle(f, 0.1, 5e-3, None).unwrap());
            assert!((a1 / per - 1.0).abs() < 0.01, "{f:?}: {a1} vs {per}");
        }
    }

    #[test]
    fn f5_sgd_angle_and_norm_match_simulation() {
        let (lr, wd) = (0.5, 1e-3);
        // ~10 relaxation times.
        let (angle, n) = simulate(Opt::Sgd { mu: 0.0, coupled: false }, lr, wd, 20_000);
        let rel = (angle / angle_sgd(lr, wd) - 1.0).abs();
        assert!(rel < 0.05, "F5 angle: measured {angle}, predicted {}, rel err {rel}", angle_sgd(lr, wd));
        let rel = (n / equilibrium_norm_sgd(1.0, lr, wd) - 1.0).abs();
        assert!(rel < 0.05, "F5 norm: measured {n}, predicted {}", equilibrium_norm_sgd(1.0, lr, wd));
    }

    #[test]
    fn f7_sgdm_coupled_and_decoupled_match_simulation() {
        let (lr, wd, mu) = (0.1, 5e-3, 0.9);
        let (a, _) = simulate(Opt::Sgd { mu, coupled: true }, lr, wd, 20_000);
        let rel = (a / angle_sgdm(lr, wd, mu) - 1.0).abs();
        assert!(rel < 0.05, "F7: measured {a}, predicted {}", angle_sgdm(lr, wd, mu));
        let (a, _) = simulate(Opt::Sgd { mu, coupled: false }, lr, wd * 10.0, 20_000);
        let rel = (a / angle_sgdw(lr, wd * 10.0, mu) - 1.0).abs();
        assert!(rel < 0.05, "SGDW: measured {a}, predicted {}", angle_sgdw(lr, wd * 10.0, mu));
    }

    #[test]
    fn f8_adamw_matches_simulation() {
        let (lr, wd, b1) = (1e-3, 0.5, 0.9);
        let (a, _) = simulate(Opt::AdamW { b1, b2: 0.999 }, lr, wd, 20_000);
        let rel = (a / angle_adamw(lr, wd, b1) - 1.0).abs();
        assert!(rel < 0.10, "F8: measured {a}, predicted {}", angle_adamw(lr, wd, b1));
    }

    #[test]
    fn hand_computed_values() {
        assert!((angle_sgdm(0.1, 5e-4, 0.9) - 0.007255).abs() < 1e-6);
        assert!((angle_sgd(0.1, 5e-4) - 0.01).abs() < 1e-12);
        assert!((relaxation_steps(0.1, 5e-4) - 20_000.0).abs() < 1e-6);
        assert!((transfer_weight_decay(0.1, 5e-4, 0.01) - 5e-3).abs() < 1e-15);
        assert!(
            (angle_lion(1e-4, 1.0, 0.9, 0.99) - (PI / 2.0).sqrt() * (2e-4f64).sqrt() * (0.01f64 + 0.81 * 0.01 / 1.99).sqrt()).abs() < 1e-15
        );
        // NAdam: without the blend (mu = 0) the normalized gradient alone, sqrt(2*eta*lambda);
        // at mu = b1 the Nesterov EMA's factor (1-b1^2)^2 + b1^4*(1-b1)/(1+b1), larger than F8's.
        assert!((angle_nadam(1e-3, 0.1, 0.9, 0.0) - (2e-4f64).sqrt()).abs() < 1e-15);
        let nesterov = (2e-4 * ((1.0 - 0.81f64).powi(2) + 0.6561 * 0.1 / 1.9)).sqrt();
        assert!((angle_nadam(1e-3, 0.1, 0.9, 0.9) - nesterov).abs() < 1e-15 && nesterov > angle_adamw(1e-3, 0.1, 0.9));
        // Without momentum the root is 1 - eta*lambda... squared root form: a = 1 - eta*lambda when mu = 0.
        assert!((exp_lr_momentum_root(0.1, 0.01, 0.0).unwrap() - 0.999).abs() < 1e-12);
    }

    #[test]
    fn f4_norm_growth_without_decay() {
        // ||w_{t+1}||^2 = ||w_t||^2 + eta^2 ||g_t||^2 for g orthogonal to w.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut w: Vec<f64> = (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect();
        let lr = 0.3;
        for _ in 0..100 {
            let g = grad(&w, &mut rng);
            let predicted = dot(&w, &w) + lr * lr * dot(&g, &g);
            for i in 0..DIM {
                w[i] -= lr * g[i];
            }
            assert!((dot(&w, &w) / predicted - 1.0).abs() < 1e-12);
        }
    }
}
