//! Numerical detection of scale-invariance, to set beside the structural flag of `params`:
//! AdamP's cosine test (`|cos(grad, w)| < delta/sqrt(dim)`, per output channel first, then for
//! the whole tensor) and a direct test (scale the weight by `c`, the logits must not change).
//!
//! May import `model`, `params` and `optim` (AdamP's cosine test).

use crate::model::cross_entropy;
use crate::model::walk::{self, host, VisitFloat};
use crate::model::{Input, Net};
use crate::params::{ParamInfo, Role};
use burn::module::Param;
use burn::tensor::{Gradients, Int, Tensor};
use std::collections::HashMap;

/// AdamP's default `delta`.
pub const DELTA: f64 = 0.1;
/// Factor used by the direct test.
pub const SCALE: f64 = 3.0;
/// Relative change of the logits (`||f(c*w) - f(w)|| / ||f(w)||`) under which the direct test
/// calls a tensor invariant. The logits, not the loss: a freshly initialized transformer's loss
/// sits at `ln(vocab)` whatever its attention values, so scaling `v_proj` moves the loss by
/// under 1e-4 of itself while it moves the logits by far more.
pub const OUTPUT_TOL: f64 = 1e-4;

pub use crate::optim::remedies::CosineVerdict;

fn cos(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// AdamP's test ([`crate::optim::remedies::cosine_verdict`]) on host data: `rows` output
/// channels of `w` and `g` (same layout).
pub fn cosine_test(w: &[f32], g: &[f32], rows: usize, delta: f64) -> CosineVerdict {
    crate::optim::remedies::cosine_verdict(rows, w.len(), delta, |groups| {
        let n = w.len() / groups.max(1);
        (0..groups).map(|r| cos(&w[r * n..(r + 1) * n], &g[r * n..(r + 1) * n]).abs()).fold(0.0, f64::max)
    })
}

/// Gradients of every parameter by path, as host data.
pub struct GradsByPath(pub HashMap<String, Vec<f32>>);

struct GradVisitor<'a> {
    grads: &'a Gradients,
    out: HashMap<String, Vec<f32>>,
}

impl VisitFloat for GradVisitor<'_> {
    fn float<const D: usize>(&mut self, path: &str, _: &str, param: &Param<Tensor<D>>) {
        if !param.is_require_grad() {
            return;
        }
        if let Some(g) = param.val().grad(self.grads) {
            self.out.insert(path.to_string(), host(g));
        }
    }
}

/// Loss of `model` (training mode, batch statistics) on a batch, and the gradients.
pub fn loss_and_grads(model: &Net, x: impl Into<Input>, y: Tensor<1, Int>) -> (f64, GradsByPath) {
    let loss = cross_entropy(model.forward(x), y);
    let v = loss.clone().into_scalar::<f64>();
    let grads = loss.backward();
    let mut g = GradVisitor { grads: &grads, out: HashMap::new() };
    walk::visit(model, &mut g);
    (v, GradsByPath(g.out))
}

/// `model` with the tensor at `path` multiplied by `c` (through the checkpoint loader's
/// assignment, so there is one path-matching mapper).
pub fn scaled(model: Net, path: &str, c: f64) -> Net {
    let Some((_, shape, v)) = crate::model::state::module_tensors(&model).into_iter().find(|t| t.0 == path) else { return model };
    let scaled: Vec<f32> = v.iter().map(|x| x * c as f32).collect();
    crate::model::state::assign(model, &HashMap::from([(path.to_string(), (shape, scaled))]))
}

/// `model` after `steps` AdamW updates (lr 1e-2, no decay) on the batch `(x, y)`: a freshly
/// initialized transformer's attention is almost uniform, which makes its query and key
/// projections nearly invariant by accident; a few steps away from the start, only the
/// invariance the graph implies remains.
pub fn warm_up(model: Net, params: &[ParamInfo], x: impl Into<Input>, y: Tensor<1, Int>, steps: usize) -> Net {
    use crate::optim::{schedule::Schedule, OptimConfig, OptimKind, Optimizer};
    let x: Input = x.into();
    let c = OptimConfig::of_kind(OptimKind::Adamw, 1e-2, 0.0);
    let mut opt = Optimizer::new(c, Schedule::constant(1), params).expect("valid settings");
    let mut m = model;
    for _ in 0..steps {
        let loss = cross_entropy(m.forward(x.clone()), y.clone());
        m = opt.step(m, loss.backward(), false).0;
    }
    m
}

/// Both numerical verdicts for one weight tensor, beside the structural one.
#[derive(Debug, Clone)]
pub struct InvarianceCheck {
    /// Parameter path.
    pub path: String,
    /// The structural flag from `params`.
    pub structural: bool,
    /// AdamP's cosine test.
    pub cosine: CosineVerdict,
    /// Relative change of the logits when the tensor is scaled by [`SCALE`].
    pub output_change: f64,
}

impl InvarianceCheck {
    /// Direct test verdict.
    pub fn direct(&self) -> bool {
        self.output_change < OUTPUT_TOL
    }

    /// True when the structural flag and both numerical tests agree.
    pub fn agree(&self) -> bool {
        let cosine = self.cosine != CosineVerdict::No;
        self.structural == cosine && cosine == self.direct()
    }
}

/// Runs both numerical tests on every weight tensor of `model` (built on an autodiff device)
/// with one batch, and compares them with the structural flags in `params`.
pub fn check(model: &Net, params: &[ParamInfo], x: impl Into<Input>, y: Tensor<1, Int>) -> Vec<InvarianceCheck> {
    let x: Input = x.into();
    let (_, grads) = loss_and_grads(model, x.clone(), y.clone());
    let logits = host(model.forward(x.clone()).detach());
    let weights = crate::model::state::module_tensors(model);
    params
        .iter()
        .filter(|p| p.role == Role::Weight)
        .filter_map(|p| {
            let w = &weights.iter().find(|t| t.0 == p.path)?.2;
            let g = grads.0.get(&p.path)?;
            let cosine = cosine_test(w, g, p.rows(), DELTA);
            let after = host(scaled(model.clone(), &p.path, SCALE).forward(x.clone()).detach());
            let (d, n) =
                logits.iter().zip(&after).fold((0f64, 0f64), |(d, n), (a, b)| (d + ((b - a) as f64).powi(2), n + (*a as f64).powi(2)));
            let output_change = if n > 0.0 { (d / n).sqrt() } else { d.sqrt() };
            Some(InvarianceCheck { path: p.path.clone(), structural: p.scale_invariant, cosine, output_change })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Theory tests F1a, F1b and F2 on every scale-invariant tensor of every built-in model with
    //! every normalization, and the agreement of the numerical and structural flags.
    use super::*;
    use crate::data;
    use crate::model::{ModelKind, NormKind};
    use crate::params::{describe, DecayPolicy, Granularity};
    use burn::tensor::Device;

    fn batch(kind: ModelKind, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        if kind == ModelKind::Resnet20 {
            // Seeded, so the test sees the same batch every time.
            let x = crate::model::init::Init::new(1).uniform::<4, _>([16, 3, 32, 32], 1.7, device);
            let y = Tensor::<1, Int>::from_data(burn::tensor::TensorData::new((0..16).map(|i| i % 10).collect::<Vec<i32>>(), [16]), device);
            (x, y)
        } else {
            let d = data::embedded();
            d.batch(&d.train, &(0..32).collect::<Vec<_>>(), None, device)
        }
    }

    /// Groups of rows over which invariance holds.
    fn groups(g: Granularity, rows: usize) -> Vec<std::ops::Range<usize>> {
        match g {
            Granularity::Channel => (0..rows).map(|r| r..r + 1).collect(),
            Granularity::Group(n) => (0..rows / n).map(|k| k * n..(k + 1) * n).collect(),
            Granularity::Tensor => std::iter::once(0..rows).collect(),
        }
    }

    #[test]
    fn f1a_f1b_f2_on_every_model_and_norm_and_checks_agree() {
        let device = Device::flex().autodiff();
        for kind in ModelKind::IMAGE {
            for norm in NormKind::ALL {
                let shape = if kind == ModelKind::Resnet20 { [3, 32, 32] } else { [1, 28, 28] };
                let net = Net::new(kind, norm, shape, 0.1, 7, &device);
                let params = describe(&net, DecayPolicy::ExcludeNormBias);
                let (x, y) = batch(kind, &device);
                let (loss, grads) = loss_and_grads(&net, x.clone(), y.clone());
                let host = crate::model::state::module_tensors(&net);
                let si: Vec<&ParamInfo> = params.iter().filter(|p| p.scale_invariant).collect();
                assert_eq!(si.is_empty(), norm == NormKind::None, "{kind:?} {norm:?}");
                for p in &si {
                    let w = &host.iter().find(|t| t.0 == p.path).unwrap().2;
                    let g = &grads.0[&p.path];
                    let cols = w.len() / p.rows();
                    // F1a: <g, w> = 0 on every slice the loss is invariant over (relative to ||g|| ||w||).
                    for r in groups(p.granularity, p.rows()) {
                        let (ws, gs) = (&w[r.start * cols..r.end * cols], &g[r.start * cols..r.end * cols]);
                        let c = cos(ws, gs);
                        assert!(c.abs() < 2e-3, "F1a {kind:?} {norm:?} {} rows {r:?}: cos(g, w) = {c}", p.path);
                    }
                    // F1b: grad(c*w) = grad(w)/c, F2: loss unchanged.
                    let net2 = scaled(net.clone(), &p.path, SCALE);
                    let (loss2, grads2) = loss_and_grads(&net2, x.clone(), y.clone());
                    assert!(((loss2 - loss) / loss).abs() < 1e-4, "F2 {kind:?} {norm:?} {}: {loss} vs {loss2}", p.path);
                    let g2 = &grads2.0[&p.path];
                    let (num, den) = g.iter().zip(g2).fold((0f64, 0f64), |(n, d), (a, b)| {
                        (n + ((*a as f64) / SCALE - *b as f64).powi(2), d + ((*a as f64) / SCALE).powi(2))
                    });
                    let rel = (num / den).sqrt();
                    // Seen here: below 1e-4 for most tensors, up to 2e-2 where f32 sums over ~1e5
                    // activations in the batch-norm backward cancel; a wrong gradient scaling would give
                    // an error of order 1 (e.g. 2 for grad(c*w) = grad(w)).
                    assert!(rel < 3e-2, "F1b {kind:?} {norm:?} {}: relative error {rel}", p.path);
                }
                // The numerical tests agree with the structural flag on every weight.
                for c in check(&net, &params, x, y) {
                    assert!(c.agree(), "{kind:?} {norm:?}: {c:?}");
                }
            }
        }
    }

    /// F1a and F2 on the query and key projections of a `gpt` under QK-norm (per head), and the
    /// numerical tests against the structural flag on every matrix, with and without QK-norm.
    #[test]
    fn gpt_qk_norm_invariance_and_checks_agree() {
        use crate::data::{text, Batch, Data};
        use crate::model::GptShape;
        let device = Device::flex().autodiff();
        let t = text::embedded(text::Tokens::Char);
        let data = Data::Text { text: t, block: 32 };
        let Batch::Tokens(x, y) = data.batch(true, &(0..16).map(|i| 1000 * i).collect::<Vec<_>>(), None, &device) else { unreachable!() };
        for (norm, qk_norm) in [(NormKind::Ln, true), (NormKind::Rms, true), (NormKind::Ln, false), (NormKind::None, false)] {
            let shape = GptShape { n_layer: 2, n_head: 4, n_embd: 32, block_size: 32, qk_norm, tie_embeddings: false };
            let net = Net::gpt(shape, norm, 62, 5, &device);
            let params = describe(&net, DecayPolicy::ExcludeNormBias);
            let net = warm_up(net, &params, x.clone(), y.clone(), 40);
            let (loss, grads) = loss_and_grads(&net, x.clone(), y.clone());
            let host = crate::model::state::module_tensors(&net);
            for p in params.iter().filter(|p| p.scale_invariant) {
                let w = &host.iter().find(|t| t.0 == p.path).unwrap().2;
                let g = &grads.0[&p.path];
                let cols = w.len() / p.rows();
                for r in groups(p.granularity, p.rows()) {
                    let c = cos(&w[r.start * cols..r.end * cols], &g[r.start * cols..r.end * cols]);
                    assert!(c.abs() < 2e-3, "F1a {norm:?} {} rows {r:?}: cos(g, w) = {c}", p.path);
                }
                let l2 = loss_and_grads(&scaled(net.clone(), &p.path, SCALE), x.clone(), y.clone()).0;
                assert!(((l2 - loss) / loss).abs() < 1e-4, "F2 {norm:?} {}: {loss} vs {l2}", p.path);
            }
            let checks = check(&net, &params, x.clone(), y.clone());
            assert_eq!(checks.len(), 2 * 6 + 1, "every matrix of the blocks and the head");
            for c in checks {
                assert_eq!(c.structural, c.direct(), "{norm:?} qk {qk_norm}: {c:?}");
                if c.structural {
                    assert!(c.agree(), "{norm:?}: {c:?}");
                }
            }
        }
    }

    #[test]
    fn cosine_test_granularity() {
        // Two rows orthogonal to their gradients -> channel; only the whole tensor -> tensor.
        let w = [1.0f32, 0.0, 0.0, 1.0];
        assert_eq!(cosine_test(&w, &[0.0, 1.0, 1.0, 0.0], 2, DELTA), CosineVerdict::Channel);
        assert_eq!(cosine_test(&w, &[1.0, 0.0, 0.0, -1.0], 2, DELTA), CosineVerdict::Tensor);
        assert_eq!(cosine_test(&w, &[1.0, 0.0, 0.0, 1.0], 2, DELTA), CosineVerdict::No);
    }
}
