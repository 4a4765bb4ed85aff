//! Optimizers composed as optax composes them, on burn tensors, with per-group learning rate
//! and weight decay taken from [`crate::params`]. The modules, in the order data flows:
//!
//! - the hyperparameters as data are the core's ([`normwd_core::optim`]), re-exported here;
//! - [`transform`]: the pieces, the [`transform::Transform`] trait, masks and chains;
//! - [`remedies`]: the literature's pieces (projection, trust ratios, fixed norm, rotation,
//!   compensation);
//! - [`alias`]: one constructor per optimizer kind;
//! - this module: the runtime, [`Optimizer`], which walks a model and runs each parameter
//!   through the chain (fused into one pass on the CPU where the chain allows, [`fused`]);
//! - [`state`]: saving and restoring the optimizer's state;
//! - [`stats`]: the probes' raw measurements of each update;
//! - [`schedule`]: learning-rate schedules.
//!
//! May import `kernels`, `model` (its walker) and `params`.

pub mod alias;
pub mod fused;
pub mod remedies;
pub use normwd_core::schedule;
pub mod state;
pub mod stats;
pub mod transform;

pub use normwd_core::optim::{
    DecayMode, FixedNormGranularity, Hyper, Invariance, NormTarget, OptimConfig, OptimError, OptimKind, RemedyConfig, Rule,
};
pub use stats::UpdateStats;

use crate::model::walk::{self, MapFloat};
use crate::params::{Group, ParamInfo};
use burn::module::Module;
use burn::tensor::Gradients;
use burn::tensor::Tensor;
use rayon::prelude::*;
use schedule::Schedule;
use stats::{collect_stats, row_sums, to_rows};
use std::collections::{BTreeMap, HashMap};
use transform::{Chain, Ctx, Slots, State};

/// An optimizer over a model described by `params`: a chain of transforms, per-parameter
/// state keyed by the parameter's path, and a schedule.
pub struct Optimizer {
    /// Hyperparameters.
    pub config: OptimConfig,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    chain: Chain,
    infos: HashMap<String, ParamInfo>,
    state: BTreeMap<String, State>,
    /// Updates taken so far.
    pub step: u64,
    /// Whether element-wise chains run as one fused pass on the CPU ([`fused`]); the tensor ops
    /// otherwise (the same numbers, kept for tests and comparisons).
    pub fused: bool,
}

impl Optimizer {
    /// Creates an optimizer for parameters described by `params`.
    pub fn new(config: OptimConfig, schedule: Schedule, params: &[ParamInfo]) -> Result<Self, OptimError> {
        config.validate()?;
        config.validate_for(params)?;
        Ok(Optimizer {
            chain: alias::chain(&config, params),
            config,
            schedule,
            infos: params.iter().filter(|p| p.role != crate::params::Role::Buffer).map(|p| (p.path.clone(), p.clone())).collect(),
            state: BTreeMap::new(),
            step: 0,
            fused: true,
        })
    }

    /// The learning rate of group `group` at the next update.
    pub fn lr(&self, group: Group) -> f64 {
        self.lr_at(group, self.step as usize)
    }

    /// The learning rate of group `group` for the update with 0-based index `index` (AdamW's
    /// under Muon: [`Optimizer::lr_for`] gives each tensor its own).
    pub fn lr_at(&self, group: Group, index: usize) -> f64 {
        let f = self.schedule.factor(index);
        self.config.lr * f * if group == Group::ScaleInvariant { self.config.si_lr_scale } else { 1.0 }
    }

    /// The learning rate of tensor `info` for the update with 0-based index `index`.
    pub fn lr_for(&self, info: &ParamInfo, index: usize) -> f64 {
        self.config.base_lr(info) * self.schedule.factor(index)
    }

    /// Applies one update to every parameter of `model` that has a gradient in `grads`.
    /// With `measure`, also returns per-parameter [`UpdateStats`].
    ///
    /// The parameters' updates are independent, so they run in parallel on the thread pool (the
    /// numbers do not depend on the order): one walk takes each weight and gradient, the updates
    /// run, a second walk puts the new weights in. Muon's Newton-Schulz iterations, a few
    /// hundred-million multiply-adds each, then fill both cores.
    pub fn step<M: Module>(&mut self, model: M, grads: Gradients, measure: bool) -> (M, Vec<UpdateStats>) {
        self.step += 1;
        let mut take = Take { infos: &self.infos, grads, jobs: Vec::new() };
        let model = walk::map(model, &mut take);
        let jobs = take.jobs;
        let states: Vec<State> = jobs.iter().map(|j| self.state.remove(&j.path).unwrap_or_default()).collect();
        let meta: Vec<(String, usize, Vec<usize>)> = jobs.iter().map(|j| (j.path.clone(), j.rows, j.dims.clone())).collect();
        let this = &*self;
        let done: Vec<(Tensor<2>, Option<Tensor<2>>, State)> = jobs
            .into_par_iter()
            .zip(states)
            .map(|(job, mut state)| {
                let (w2, sums) = this.update_with(&job.path, job.w, job.g, &mut state, measure);
                (w2, sums, state)
            })
            .collect();
        let mut pending = Vec::new();
        let mut new = HashMap::new();
        for ((path, rows, dims), (w2, sums, state)) in meta.into_iter().zip(done) {
            self.state.insert(path.clone(), state);
            if let Some(sums) = sums {
                pending.push((path.clone(), rows, sums));
            }
            new.insert(path, (w2, dims));
        }
        let model = walk::map(model, &mut Put { new });
        (model, collect_stats(pending))
    }

    /// One parameter's update with its state; with `measure`, also its probes' per-row sums
    /// (a `[rows, 5]` tensor, see [`row_sums`]). `None` for a tensor the optimizer does not hold.
    #[cfg(test)]
    fn update(&mut self, path: &str, w: Tensor<2>, g: Tensor<2>, measure: bool) -> Option<(Tensor<2>, Option<Tensor<2>>)> {
        self.infos.get(path)?;
        let mut state = self.state.remove(path).unwrap_or_default();
        let out = self.update_with(path, w, g, &mut state, measure);
        self.state.insert(path.to_string(), state);
        Some(out)
    }

    /// [`Optimizer::update`] of a known parameter with its state taken out of the map (so that
    /// updates can run in parallel).
    fn update_with(&self, path: &str, w: Tensor<2>, g: Tensor<2>, state: &mut State, measure: bool) -> (Tensor<2>, Option<Tensor<2>>) {
        let info = &self.infos[path];
        let ctx = Ctx {
            lr: self.lr_for(info, self.step as usize - 1),
            weight_decay: self.config.weight_decay_for(info),
            step: self.step,
            info,
            grad: &g,
            lr_factor: self.schedule.factor(self.step as usize - 1),
        };
        let ops: Option<Vec<_>> = self.chain.0.iter().map(|t| t.elementwise(&ctx)).collect();
        if let Some(ops) = ops.filter(|_| self.fused && crate::kernels::applies(&w)) {
            return fused::update_fused(&ops, w, g, state, measure);
        }
        let mut u = g.clone();
        for (index, t) in self.chain.0.iter().enumerate() {
            u = t.apply(u, &w, &mut Slots { state, index }, &ctx);
        }
        let w2 = w.clone().add(u);
        let sums = measure.then(|| row_sums(&w, &g, &w2));
        (w2, sums)
    }
}

/// One parameter's update to make: its weight and gradient as `[rows, cols]` views.
struct Job {
    path: String,
    rows: usize,
    dims: Vec<usize>,
    w: Tensor<2>,
    g: Tensor<2>,
}

/// The first walk of a step: takes every held parameter's gradient and a view of its weight,
/// leaving the model as it is.
struct Take<'a> {
    infos: &'a HashMap<String, ParamInfo>,
    grads: Gradients,
    jobs: Vec<Job>,
}

impl MapFloat for Take<'_> {
    fn float<const D: usize>(&mut self, path: &str, tensor: Tensor<D>) -> Tensor<D> {
        if !tensor.is_require_grad() || !self.infos.contains_key(path) {
            return tensor;
        }
        let Some(grad) = tensor.grad_remove(&mut self.grads) else {
            return tensor;
        };
        let (dims, device) = (tensor.dims(), tensor.device());
        let w = to_rows(tensor.inner());
        let rows = w.dims()[0];
        self.jobs.push(Job { path: path.to_string(), rows, dims: dims.to_vec(), w, g: to_rows(grad) });
        // A one-element stand-in until the second walk: the weight's storage is then the update's
        // alone, which the fused pass rewrites in place instead of copying.
        Tensor::zeros([1; D], &device)
    }
}

/// The second walk of a step: the updated weights in their parameters' shapes.
struct Put {
    new: HashMap<String, (Tensor<2>, Vec<usize>)>,
}

impl MapFloat for Put {
    fn float<const D: usize>(&mut self, path: &str, tensor: Tensor<D>) -> Tensor<D> {
        match self.new.remove(path) {
            Some((w2, dims)) => {
                let dims: [usize; D] = dims.try_into().expect("the first walk saw this tensor with rank D");
                Tensor::from_inner(w2.reshape(dims)).require_grad()
            }
            None => tensor,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Five steps of each optimizer on a fixed tiny problem, compared with the update formulas
    //! written out by hand in plain f64 (PyTorch's documented algorithms).
    use super::*;
    use crate::params::{DecayPolicy, Granularity, Role};
    use burn::tensor::{Device, TensorData};
    use stats::{host, row_sums_ops};

    fn info(decayed: bool) -> ParamInfo {
        ParamInfo {
            path: "w".into(),
            shape: vec![2, 2],
            role: Role::Weight,
            scale_invariant: false,
            granularity: Granularity::Tensor,
            decayed,
            group: Group::Default,
            output: false,
        }
    }

    /// Newton-Schulz in f64 on a 2x2 matrix, PyTorch's steps written out.
    fn ns5(u: &[f64]) -> Vec<f64> {
        let (a, b, c) = normwd_core::theory::muon::NS_COEFFICIENTS;
        let n = u.iter().map(|x| x * x).sum::<f64>().sqrt();
        let mut x: Vec<f64> = u.iter().map(|v| v / n).collect();
        let mul = |p: &[f64], q: &[f64]| {
            vec![p[0] * q[0] + p[1] * q[2], p[0] * q[1] + p[1] * q[3], p[2] * q[0] + p[3] * q[2], p[2] * q[1] + p[3] * q[3]]
        };
        for _ in 0..5 {
            let xt = [x[0], x[2], x[1], x[3]];
            let g = mul(&x, &xt);
            let gg = mul(&g, &g);
            let poly: Vec<f64> = g.iter().zip(&gg).map(|(g, gg)| b * g + c * gg).collect();
            let px = mul(&poly, &x);
            x = x.iter().zip(&px).map(|(x, p)| a * x + p).collect();
        }
        x
    }

    /// Muon against PyTorch's algorithm written out (lerp momentum, Nesterov blend, NS5, decay
    /// at the base lr, step at the adjusted lr), on a hidden matrix; the same config steps an
    /// output head with AdamW at `lr`.
    #[test]
    fn muon_and_its_adamw_branch() {
        for nesterov in [true, false] {
            let mut c = cfg(OptimKind::Muon, DecayMode::Decoupled);
            c.betas = (0.9, 0.999);
            c.muon = normwd_core::optim::MuonConfig { lr: 0.2, weight_decay: Some(0.3), nesterov, ..Default::default() };
            let ours = run_ours(c.clone());
            let (lr, wd, b) = (0.2, 0.3, 0.95);
            let mut w = vec![0.5, -1.0, 0.25, 2.0];
            let mut buf = vec![0.0; 4];
            for _ in 0..5 {
                let g = grad(&w);
                buf = buf.iter().zip(&g).map(|(m, g)| b * m + (1.0 - b) * g).collect();
                let u: Vec<f64> = if nesterov { g.iter().zip(&buf).map(|(g, m)| (1.0 - b) * g + b * m).collect() } else { buf.clone() };
                let o = ns5(&u);
                // A square matrix: `original` adjusts by sqrt(max(1, 2/2)) = 1.
                w = w.iter().zip(&o).map(|(w, o)| w * (1.0 - lr * wd) - lr * o).collect();
            }
            close(&ours, &w);
            // The head is AdamW's, with `lr` 0.1 and `weight_decay` 0.05.
            let head = run_ours_on(c, constant(), info(true).as_output());
            let adamw = run_ours(cfg(OptimKind::Adamw, DecayMode::Decoupled));
            close(&head, &adamw);
        }
    }

    fn cfg(kind: OptimKind, decay: DecayMode) -> OptimConfig {
        OptimConfig { kind, decay, ..OptimConfig::sgd(0.1, 0.9, 0.05) }
    }

    fn constant() -> Schedule {
        Schedule::constant(1)
    }

    /// Linear decay to 0 over `total` updates: the factor of update `t` (1-based) is `1 - (t-1)/total`.
    fn linear(total: usize) -> Schedule {
        Schedule { kind: schedule::ScheduleKind::Linear, ..Schedule::constant(total) }
    }

    /// Gradient of the fixed loss `sum(a_i * w_i^3 / 3 + b_i * w_i)` is `a_i*w_i^2 + b_i`.
    fn grad(w: &[f64]) -> Vec<f64> {
        let a = [1.0, -0.5, 2.0, 0.3];
        let b = [0.2, 0.1, -0.3, 0.05];
        w.iter().enumerate().map(|(i, x)| a[i] * x * x + b[i]).collect()
    }

    fn run_ours(c: OptimConfig) -> Vec<f64> {
        run_ours_on(c, constant(), info(true))
    }

    /// Five steps of `c` on a tensor described by `p`, under schedule `s`.
    fn run_ours_on(c: OptimConfig, s: Schedule, p: ParamInfo) -> Vec<f64> {
        let dev = Device::flex();
        let mut opt = Optimizer::new(c, s, &[p]).unwrap();
        let mut w = vec![0.5, -1.0, 0.25, 2.0];
        for _ in 0..5 {
            let g = grad(&w);
            opt.step += 1;
            let wt = Tensor::<2>::from_data(TensorData::new(w.iter().map(|&x| x as f32).collect::<Vec<_>>(), [2, 2]), &dev);
            let gt = Tensor::<2>::from_data(TensorData::new(g.iter().map(|&x| x as f32).collect::<Vec<_>>(), [2, 2]), &dev);
            w = host(opt.update("w", wt, gt, false).unwrap().0);
        }
        w
    }

    fn close(a: &[f64], b: &[f64]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5 * (1.0 + y.abs()), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn sgd_momentum_coupled_and_nesterov_and_decoupled() {
        for (nesterov, decay) in [(false, DecayMode::Coupled), (true, DecayMode::Coupled), (false, DecayMode::Decoupled)] {
            let mut c = cfg(OptimKind::Sgd, decay);
            c.nesterov = nesterov;
            let ours = run_ours(c.clone());
            let (lr, mu, wd) = (0.1, 0.9, 0.05);
            let mut w = vec![0.5, -1.0, 0.25, 2.0];
            let mut buf: Option<Vec<f64>> = None;
            for _ in 0..5 {
                let mut g = grad(&w);
                if decay == DecayMode::Coupled {
                    g = g.iter().zip(&w).map(|(g, w)| g + wd * w).collect();
                }
                let b: Vec<f64> = match &buf {
                    None => g.clone(),
                    Some(b) => b.iter().zip(&g).map(|(b, g)| mu * b + g).collect(),
                };
                let d: Vec<f64> = if nesterov { g.iter().zip(&b).map(|(g, b)| g + mu * b).collect() } else { b.clone() };
                buf = Some(b);
                w = w.iter().zip(&d).map(|(w, d)| w - lr * d - if decay == DecayMode::Decoupled { lr * wd * w } else { 0.0 }).collect();
            }
            close(&ours, &w);
        }
    }

    /// The fused pass against the chain of tensor ops it replaces, on a tensor spanning several
    /// parallel jobs and a partial block: equal bit for bit, weights and state, over 5 steps; the
    /// probes' row sums it takes in the same pass (rows straddling jobs) equal the tensor ops'
    /// within f32 summation error.
    #[test]
    fn fused_pass_equals_the_tensor_ops() {
        let dev = Device::flex();
        let (rows, cols) = (50, 701);
        // Scale-invariant, under a schedule that moves every step: the corrected decay acts.
        let big = ParamInfo { shape: vec![rows, cols], scale_invariant: true, group: Group::ScaleInvariant, ..info(true) };
        let values = |seed: u32| -> Vec<f32> {
            (0..rows * cols)
                .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 16777216.0 - 0.5) * 2.0)
                .collect()
        };
        let sgd = |momentum, nesterov, decay| OptimConfig { momentum, nesterov, decay, ..OptimConfig::sgd(0.1, 0.9, 0.05) };
        let configs = [
            sgd(0.9, false, DecayMode::Coupled),
            sgd(0.9, true, DecayMode::Coupled),
            sgd(0.9, false, DecayMode::Decoupled),
            sgd(0.0, false, DecayMode::Coupled),
            cfg(OptimKind::Adam, DecayMode::Coupled),
            cfg(OptimKind::Adamw, DecayMode::Decoupled),
            OptimConfig { cautious_decay: true, ..cfg(OptimKind::Adamw, DecayMode::Decoupled) },
            OptimConfig { corrected_decay: true, ..sgd(0.9, false, DecayMode::Coupled) },
            OptimConfig { corrected_decay: true, cautious_decay: true, ..sgd(0.9, true, DecayMode::Decoupled) },
        ];
        for c in configs {
            let (mut runs, mut measured) = (Vec::new(), Vec::new());
            for fused in [true, false] {
                let mut opt = Optimizer::new(c.clone(), linear(10), std::slice::from_ref(&big)).unwrap();
                opt.fused = fused;
                let mut w = Tensor::<2>::from_data(TensorData::new(values(1), [rows, cols]), &dev);
                assert!(crate::kernels::applies(&w), "the fused pass must be the one under test");
                for step in 0..5 {
                    let g = Tensor::<2>::from_data(TensorData::new(values(100 + step), [rows, cols]), &dev);
                    opt.step += 1;
                    let (before, grad) = (w.clone(), g.clone());
                    let (w2, sums) = opt.update("w", w, g, true).unwrap();
                    // The fused run's own sums; for the other, burn's ops on the same tensors.
                    measured.push(host(if fused { sums.expect("measured") } else { row_sums_ops(&before, &grad, &w2) }));
                    w = w2;
                }
                let state: Vec<(String, Vec<f32>)> =
                    opt.state_tensors().into_iter().map(|(k, d)| (k, d.convert::<f32>().try_into_vec().unwrap())).collect();
                runs.push((w.into_data().convert::<f32>().try_into_vec::<f32>().unwrap(), state));
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(bits(&runs[0].0) == bits(&runs[1].0), "{:?}: weights differ", c.kind);
            assert_eq!(runs[0].1.len(), runs[1].1.len(), "{:?}: state slots differ", c.kind);
            for ((k, a), (_, b)) in runs[0].1.iter().zip(&runs[1].1) {
                assert!(bits(a) == bits(b), "{:?}: slot {k} differs", c.kind);
            }
            let (a, b) = measured.split_at(5);
            for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
                assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{:?}: row sums {x} (fused) vs {y}", c.kind);
            }
            assert_eq!(a.iter().flatten().count(), 5 * rows * 5, "{:?}: one [rows, 5] per step", c.kind);
        }
    }

    #[test]
    fn adam_and_adamw() {
        for (kind, decay) in [(OptimKind::Adam, DecayMode::Coupled), (OptimKind::Adamw, DecayMode::Decoupled)] {
            let ours = run_ours(cfg(kind, decay));
            let (lr, b1, b2, eps, wd) = (0.1f64, 0.9f64, 0.999f64, 1e-8, 0.05);
            let mut w = vec![0.5, -1.0, 0.25, 2.0];
            let (mut m, mut v) = (vec![0.0; 4], vec![0.0; 4]);
            for t in 1..=5 {
                let mut g = grad(&w);
                if decay == DecayMode::Decoupled {
                    w = w.iter().map(|w| w * (1.0 - lr * wd)).collect();
                } else {
                    g = g.iter().zip(&w).map(|(g, w)| g + wd * w).collect();
                }
                for i in 0..4 {
                    m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                    v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                    let mh = m[i] / (1.0 - b1.powi(t));
                    let vh = v[i] / (1.0 - b2.powi(t));
                    w[i] -= lr * mh / (vh.sqrt() + eps);
                }
            }
            close(&ours, &w);
        }
    }

    /// Lion as `lion-pytorch` writes it: decay `p *= 1 - lr*wd`, step `sign(b1*m + (1-b1)*g)`,
    /// then `m = b2*m + (1-b2)*g`.
    #[test]
    fn lion() {
        let c = OptimConfig { betas: (0.9, 0.99), ..cfg(OptimKind::Lion, DecayMode::Decoupled) };
        let ours = run_ours(c);
        let (lr, b1, b2, wd) = (0.1f64, 0.9, 0.99, 0.05);
        let mut w = vec![0.5, -1.0, 0.25, 2.0];
        let mut m = [0.0; 4];
        for _ in 1..=5 {
            let g = grad(&w);
            for i in 0..4 {
                w[i] *= 1.0 - lr * wd;
                let c = b1 * m[i] + (1.0 - b1) * g[i];
                w[i] -= lr
                    * if c > 0.0 {
                        1.0
                    } else if c < 0.0 {
                        -1.0
                    } else {
                        0.0
                    };
                m[i] = b2 * m[i] + (1.0 - b2) * g[i];
            }
        }
        close(&ours, &w);
    }

    /// Corrected decay (F14) on a scale-invariant tensor under a linear schedule: SGD's L2 and
    /// AdamW's decoupled decay take `wd * lr_t/lr_max`; on a tensor that is not scale-invariant
    /// nothing changes. Cautious decay (F16) decays where the direction and the weight agree.
    /// Five steps each against the rule written out in f64.
    #[test]
    fn corrected_and_cautious_decay() {
        let si = ParamInfo { scale_invariant: true, group: Group::ScaleInvariant, ..info(true) };
        let (lr, mu, wd, b1, b2, eps) = (0.1f64, 0.9, 0.05, 0.9f64, 0.999f64, 1e-8);
        let factor = |t: i32| 1.0 - (t - 1) as f64 / 10.0;
        // SGDC: L2 in the gradient, corrected on the scale-invariant tensor only.
        for (p, corrected) in [(si.clone(), true), (info(true), false)] {
            let c = OptimConfig { corrected_decay: true, ..cfg(OptimKind::Sgd, DecayMode::Coupled) };
            let ours = run_ours_on(c, linear(10), p);
            let mut w = vec![0.5, -1.0, 0.25, 2.0];
            let mut buf = [0.0; 4];
            for t in 1..=5 {
                let g = grad(&w);
                let f = factor(t);
                let l2 = if corrected { wd * f } else { wd };
                for i in 0..4 {
                    let gi = g[i] + l2 * w[i];
                    buf[i] = if t == 1 { gi } else { mu * buf[i] + gi };
                    w[i] -= lr * f * buf[i];
                }
            }
            close(&ours, &w);
        }
        // AdamW with cautious decay, and with both.
        for corrected in [false, true] {
            let c = OptimConfig { cautious_decay: true, corrected_decay: corrected, ..cfg(OptimKind::Adamw, DecayMode::Decoupled) };
            let ours = run_ours_on(c, linear(10), si.clone());
            let mut w = vec![0.5, -1.0, 0.25, 2.0];
            let (mut m, mut v) = (vec![0.0; 4], vec![0.0; 4]);
            let mut decayed = 0;
            for t in 1..=5 {
                let g = grad(&w);
                let f = factor(t);
                let d = if corrected { wd * f } else { wd };
                for i in 0..4 {
                    m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                    v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                    let dir = (m[i] / (1.0 - b1.powi(t))) / ((v[i] / (1.0 - b2.powi(t))).sqrt() + eps);
                    let agree = dir * w[i] >= 0.0;
                    decayed += agree as usize;
                    w[i] -= lr * f * dir + if agree { lr * f * d * w[i] } else { 0.0 };
                }
            }
            assert!(decayed > 0 && decayed < 20, "the test must see both kinds of coordinates ({decayed} of 20 decayed)");
            close(&ours, &w);
        }
    }

    #[test]
    fn invalid_hyperparameters_are_named() {
        let mut c = cfg(OptimKind::Sgd, DecayMode::Coupled);
        c.lr = f64::NAN;
        assert!(c.validate().unwrap_err().to_string().starts_with("--lr NaN"));
        c.lr = 0.1;
        c.weight_decay = -1.0;
        assert!(c.validate().unwrap_err().to_string().contains("--weight-decay -1"));
        c.weight_decay = 0.0;
        c.momentum = 1.5;
        assert!(c.validate().is_err());
        let _ = DecayPolicy::All;
    }
}
