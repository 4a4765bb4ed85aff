//! Optimizers built as chains of [`transform`]s, with per-group learning rate and weight
//! decay taken from [`crate::params`], and learning-rate [`schedule`]s.
//!
//! Weight-decay convention (THEORY.md): `weight_decay = lambda` adds `lambda * w` to the
//! gradient (`coupled`, the loss term `lambda/2 ||w||^2`) or applies `w -= lr * lambda * w`
//! (`decoupled`, SGDW / AdamW, PyTorch's `AdamW`).

pub mod fused;
pub mod remedies;
pub use normwd_core::schedule;
pub mod transform;

use crate::model::PathTracker;
use crate::params::{Group, ParamInfo};
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Gradients;
use burn::tensor::{Device, Tensor, TensorData};
use schedule::Schedule;
use std::collections::{BTreeMap, HashMap};
use transform::{Ctx, Slots, State, Transform};

pub use normwd_core::optim::{DecayMode, FixedNormGranularity, Invariance, NormTarget, OptimConfig, OptimError, OptimKind, RemedyConfig};

/// The transform chain of an optimizer (`params` gives the rotational wrapper its angle).
pub fn chain(c: &OptimConfig, params: &[ParamInfo]) -> Vec<Box<dyn Transform>> {
    let this = c;
    use remedies::*;
    use transform::*;
    let r = &this.remedy;
    let trace = || -> Box<dyn Transform> { Box::new(Trace { momentum: this.momentum, nesterov: this.nesterov }) };
    let adam = || -> Box<dyn Transform> { Box::new(ScaleByAdam { b1: this.betas.0, b2: this.betas.1, eps: this.eps }) };
    let project = || -> Box<dyn Transform> { Box::new(Project { delta: r.delta, wd_ratio: r.wd_ratio, invariance: r.invariance }) };
    let lr = || -> Box<dyn Transform> { Box::new(ScaleByLr) };
    let mut c: Vec<Box<dyn Transform>> = Vec::new();
    if r.compensate_elr {
        c.push(Box::new(CompensateElr));
    }
    match this.kind {
        OptimKind::Sgd | OptimKind::Adam | OptimKind::Adamw => {
            if this.decay == DecayMode::Coupled {
                c.push(Box::new(AddDecayedWeights));
            }
            c.push(if this.kind == OptimKind::Sgd { trace() } else { adam() });
            c.push(lr());
            if this.decay == DecayMode::Decoupled {
                c.push(Box::new(DecoupledDecay { factor: 1.0 }));
            }
        }
        OptimKind::Sgdp => c.extend([trace(), project(), lr(), Box::new(DecoupledDecay { factor: 1.0 / (1.0 - this.momentum) })]),
        OptimKind::Adamp => c.extend([adam(), project(), lr(), Box::new(DecoupledDecay { factor: 1.0 })]),
        OptimKind::Lars => c.extend([
            Box::new(TrustRatio { trust_coeff: r.trust_coeff, eps: 1e-8, clip: r.lars_clip }) as Box<dyn Transform>,
            trace(),
            lr(),
        ]),
        OptimKind::Lamb => c.extend([adam(), Box::new(LambTrust), lr()]),
        OptimKind::FixedNorm => c.extend([
            Box::new(AddDecayedWeights) as Box<dyn Transform>,
            trace(),
            lr(),
            Box::new(FixedNorm { per_channel: r.fixed_norm_per_channel, target: r.fixed_norm_target }),
        ]),
        OptimKind::RvSgd => c.extend([
            Box::new(AddDecayedWeights) as Box<dyn Transform>,
            trace(),
            lr(),
            Box::new(Rotational { angle: this.rotation_angle(params), beta: r.rv_rms_decay }),
        ]),
        OptimKind::RvAdamw => c.extend([
            adam(),
            lr(),
            Box::new(DecoupledDecay { factor: 1.0 }),
            Box::new(Rotational { angle: this.rotation_angle(params), beta: r.rv_rms_decay }),
        ]),
    }
    c
}

/// An optimizer over a model described by `params`: a chain of transforms, per-parameter
/// state keyed by the parameter's path, and a schedule.
pub struct Optimizer {
    /// Hyperparameters.
    pub config: OptimConfig,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    chain: Vec<Box<dyn Transform>>,
    infos: HashMap<String, ParamInfo>,
    state: BTreeMap<String, State>,
    /// Updates taken so far.
    pub step: u64,
    /// Whether element-wise chains run as one fused pass on the CPU ([`fused`]); the tensor ops
    /// otherwise (the same numbers, kept for tests and comparisons).
    pub fused: bool,
}

/// Per-parameter quantities measured during an update (for probes and divergence checks).
#[derive(Debug, Clone)]
pub struct UpdateStats {
    /// Parameter path.
    pub path: String,
    /// `||w||` before the update.
    pub norm: f64,
    /// `||g||` (the raw gradient).
    pub grad_norm: f64,
    /// `<w, g>`.
    pub dot_wg: f64,
    /// `<w, w'>` with `w'` after the update.
    pub dot_ww: f64,
    /// `||w'||`.
    pub norm_after: f64,
    /// Per output channel `(||w_r||, ||g_r||, <w_r,g_r>, <w_r,w'_r>, ||w'_r||)`.
    pub rows: Vec<[f64; 5]>,
}

impl Optimizer {
    /// Creates an optimizer for parameters described by `params`.
    pub fn new(config: OptimConfig, schedule: Schedule, params: &[ParamInfo]) -> Result<Self, OptimError> {
        config.validate()?;
        config.validate_for(params)?;
        Ok(Optimizer {
            chain: chain(&config, params),
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

    /// The learning rate of group `group` for the update with 0-based index `index`.
    pub fn lr_at(&self, group: Group, index: usize) -> f64 {
        let f = self.schedule.factor(index);
        self.config.lr * f * if group == Group::ScaleInvariant { self.config.si_lr_scale } else { 1.0 }
    }

    /// Applies one update to every parameter of `model` that has a gradient in `grads`.
    /// With `measure`, also returns per-parameter [`UpdateStats`].
    pub fn step<M: Module>(&mut self, model: M, grads: Gradients, measure: bool) -> (M, Vec<UpdateStats>) {
        self.step += 1;
        let mut mapper = StepMapper { opt: self, grads, at: PathTracker::default(), measure, pending: Vec::new() };
        let model = model.map(&mut mapper);
        let stats = collect_stats(mapper.pending);
        (model, stats)
    }

    /// One parameter's update; with `measure`, also its probes' per-row sums (a `[rows, 5]`
    /// tensor, see [`row_sums`]).
    fn update(&mut self, path: &str, w: Tensor<2>, g: Tensor<2>, measure: bool) -> Option<(Tensor<2>, Option<Tensor<2>>)> {
        let info = self.infos.get(path)?.clone();
        let ctx = Ctx {
            lr: self.lr_at(info.group, self.step as usize - 1),
            weight_decay: self.config.weight_decay_for(&info),
            step: self.step,
            info: &info,
            grad: &g,
            lr_factor: self.schedule.factor(self.step as usize - 1),
            wd_scale: std::cell::Cell::new(1.0),
        };
        let state = self.state.entry(path.to_string()).or_default();
        let ops: Option<Vec<_>> = self.chain.iter().map(|t| t.elementwise(&ctx)).collect();
        if let Some(ops) = ops.filter(|_| self.fused && crate::kernels::applies(&w)) {
            return Some(update_fused(&ops, w, g, state, measure));
        }
        let mut u = g.clone();
        for (index, t) in self.chain.iter().enumerate() {
            u = t.apply(u, &w, &mut Slots { state, index }, &ctx);
        }
        let w2 = w.clone().add(u);
        let sums = measure.then(|| row_sums(&w, &g, &w2));
        Some((w2, sums))
    }

    /// The first value of a parameter's state slot named `name` (whichever transform owns it).
    pub fn slot(&self, path: &str, name: &str) -> Option<f64> {
        let s = self.state.get(path)?;
        let t = s.iter().find(|(k, _)| k.rsplit_once('.').map(|(_, n)| n == name).unwrap_or(false))?.1;
        host(t.clone()).first().copied()
    }

    /// The optimizer's tensors, named `"{param path}/{slot}"`, as host data.
    pub fn state_tensors(&self) -> Vec<(String, TensorData)> {
        self.state.iter().flat_map(|(p, s)| s.iter().map(move |(k, t)| (format!("{p}/{k}"), t.to_data()))).collect()
    }

    /// Restores tensors saved by [`Optimizer::state_tensors`].
    pub fn load_state(&mut self, tensors: Vec<(String, TensorData)>, step: u64, device: &Device) -> Result<(), OptimError> {
        self.state.clear();
        for (name, data) in tensors {
            let (p, k) = name.rsplit_once('/').ok_or_else(|| OptimError::State(format!("tensor name {name:?} is not PARAM/SLOT")))?;
            let Some(info) = self.infos.get(p) else {
                return Err(OptimError::State(format!("state for unknown parameter {p:?}")));
            };
            let want = slot_shape(info, k, self.chain.len(), self.config.remedy.fixed_norm_per_channel)
                .ok_or_else(|| OptimError::State(format!("{name}: no slot {k:?} in this optimizer's chain")))?;
            if data.shape().to_vec() != want {
                return Err(OptimError::State(format!("{name}: shape {:?}, expected {want:?}", data.shape())));
            }
            self.state.entry(p.to_string()).or_default().insert(k.to_string(), Tensor::from_data(data, device));
        }
        self.step = step;
        Ok(())
    }
}

/// The shape a saved slot `"{index}.{name}"` must have for parameter `info` (`None`: no such slot).
fn slot_shape(info: &ParamInfo, key: &str, chain_len: usize, fixed_norm_per_channel: bool) -> Option<Vec<usize>> {
    let (index, name) = key.split_once('.')?;
    if index.parse::<usize>().ok()? >= chain_len {
        return None;
    }
    let rows = info.rows();
    let cols = info.shape.iter().product::<usize>() / rows.max(1);
    match name {
        "momentum" | "exp_avg" | "exp_avg_sq" => Some(vec![rows, cols]),
        "init_norm" | "rms" => Some(vec![rows, 1]),
        "target_norm" => Some(vec![if fixed_norm_per_channel { rows } else { 1 }, 1]),
        "init_sq_norm" => Some(vec![1, 1]),
        _ => None,
    }
}

/// `w + chain(g)` for a chain of element-wise pieces (`ops`), in place where `w`, `g` and the
/// slots are not shared; missing slots are created (the chain's first step). With `measure`,
/// also the per-row sums, taken in the same pass.
fn update_fused(
    ops: &[transform::Elementwise],
    w: Tensor<2>,
    g: Tensor<2>,
    state: &mut State,
    measure: bool,
) -> (Tensor<2>, Option<Tensor<2>>) {
    let (dims, device) = (w.dims(), w.device());
    let len = dims[0] * dims[1];
    let names: Vec<String> = ops.iter().enumerate().flat_map(|(i, op)| op.slots().iter().map(move |n| format!("{i}.{n}"))).collect();
    let mut held: Vec<(TensorData, bool)> = names
        .iter()
        .map(|k| match state.remove(k) {
            Some(t) => (t.into_data().convert::<f32>(), false),
            None => (TensorData::new(vec![0f32; len], dims), true),
        })
        .collect();
    let (mut wd, gd) = (w.into_data(), g.into_data().convert::<f32>());
    let slots = held
        .iter_mut()
        .map(|(d, fresh)| fused::Slot { values: d.as_mut_slice::<f32>().expect("f32 optimizer state"), fresh: *fresh })
        .collect();
    let cols = measure.then_some(dims[1]);
    let sums = fused::apply(ops, wd.as_mut_slice::<f32>().expect("f32 weights"), gd.as_slice::<f32>().expect("f32 gradient"), slots, cols);
    for (k, (d, _)) in names.into_iter().zip(held) {
        state.insert(k, Tensor::from_data(d, &device));
    }
    let sums = measure.then(|| {
        let flat: Vec<f32> = sums.iter().flat_map(|s| s.map(|v| v as f32)).collect();
        Tensor::from_data(TensorData::new(flat, [dims[0], 5]), &device)
    });
    (Tensor::from_data(wd, &device), sums)
}

fn to_rows<const D: usize>(t: Tensor<D>) -> Tensor<2> {
    let dims = t.dims();
    let rows = if D >= 2 { dims[0] } else { 1 };
    t.reshape([rows as i32, -1])
}

fn host(t: Tensor<2>) -> Vec<f64> {
    t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap_or_default()
}

/// Per-row sums `[||w_r||^2, ||g_r||^2, <w_r,g_r>, <w_r,w'_r>, ||w'_r||^2]` as a `[rows, 5]` tensor,
/// left on the device so all tensors of a step reach the host in one transfer.
fn row_sums(w: &Tensor<2>, g: &Tensor<2>, w2: &Tensor<2>) -> Tensor<2> {
    if crate::kernels::applies(w) {
        return crate::kernels::row_sums(w, g, w2);
    }
    row_sums_ops(w, g, w2)
}

/// [`row_sums`] with tensor ops (any device).
fn row_sums_ops(w: &Tensor<2>, g: &Tensor<2>, w2: &Tensor<2>) -> Tensor<2> {
    Tensor::cat(
        vec![
            w.clone().powi_scalar(2).sum_dim(1),
            g.clone().powi_scalar(2).sum_dim(1),
            w.clone().mul(g.clone()).sum_dim(1),
            w.clone().mul(w2.clone()).sum_dim(1),
            w2.clone().powi_scalar(2).sum_dim(1),
        ],
        1,
    )
}

/// Turns the concatenated row sums of several tensors into [`UpdateStats`].
fn collect_stats(pending: Vec<(String, usize, Tensor<2>)>) -> Vec<UpdateStats> {
    if pending.is_empty() {
        return Vec::new();
    }
    let all = host(Tensor::cat(pending.iter().map(|p| p.2.clone()).collect(), 0));
    let mut at = 0;
    pending
        .into_iter()
        .map(|(path, rows, _)| {
            let mut tot = [0f64; 5];
            let per: Vec<[f64; 5]> = (0..rows)
                .map(|r| {
                    let s = &all[(at + r) * 5..(at + r) * 5 + 5];
                    for i in 0..5 {
                        tot[i] += s[i];
                    }
                    [s[0].sqrt(), s[1].sqrt(), s[2], s[3], s[4].sqrt()]
                })
                .collect();
            at += rows;
            UpdateStats {
                path,
                norm: tot[0].sqrt(),
                grad_norm: tot[1].sqrt(),
                dot_wg: tot[2],
                dot_ww: tot[3],
                norm_after: tot[4].sqrt(),
                rows: per,
            }
        })
        .collect()
}

struct StepMapper<'a> {
    opt: &'a mut Optimizer,
    grads: Gradients,
    at: PathTracker,
    measure: bool,
    pending: Vec<(String, usize, Tensor<2>)>,
}

impl ModuleMapper for StepMapper<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.at.enter(name, container_type);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.at.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        if !tensor.is_require_grad() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let Some(grad) = tensor.grad_remove(&mut self.grads) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let path = self.at.path();
        if !self.opt.infos.contains_key(&path) {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let dims = tensor.dims();
        let w = to_rows(tensor.inner());
        let g = to_rows(grad);
        let rows = w.dims()[0];
        let (w2, sums) = self.opt.update(&path, w, g, self.measure).expect("the parameter is known");
        if let Some(sums) = sums {
            self.pending.push((path.clone(), rows, sums));
        }
        let new = Tensor::from_inner(w2.reshape(dims)).require_grad();
        Param::from_mapped_value(id, new, mapper)
    }
}

#[cfg(test)]
mod tests {
    //! Five steps of each optimizer on a fixed tiny problem, compared with the update formulas
    //! written out by hand in plain f64 (PyTorch's documented algorithms).
    use super::*;
    use crate::params::{DecayPolicy, Granularity, Role};

    fn info(decayed: bool) -> ParamInfo {
        ParamInfo {
            path: "w".into(),
            shape: vec![2, 2],
            role: Role::Weight,
            scale_invariant: false,
            granularity: Granularity::Tensor,
            decayed,
            group: Group::Default,
        }
    }

    fn cfg(kind: OptimKind, decay: DecayMode) -> OptimConfig {
        OptimConfig { kind, decay, ..OptimConfig::sgd(0.1, 0.9, 0.05) }
    }

    fn constant() -> Schedule {
        Schedule::constant(1)
    }

    /// Gradient of the fixed loss `sum(a_i * w_i^3 / 3 + b_i * w_i)` is `a_i*w_i^2 + b_i`.
    fn grad(w: &[f64]) -> Vec<f64> {
        let a = [1.0, -0.5, 2.0, 0.3];
        let b = [0.2, 0.1, -0.3, 0.05];
        w.iter().enumerate().map(|(i, x)| a[i] * x * x + b[i]).collect()
    }

    fn run_ours(c: OptimConfig) -> Vec<f64> {
        let dev = Device::flex();
        let mut opt = Optimizer::new(c, constant(), &[info(true)]).unwrap();
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
        let big = ParamInfo { shape: vec![rows, cols], ..info(true) };
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
        ];
        for c in configs {
            let (mut runs, mut measured) = (Vec::new(), Vec::new());
            for fused in [true, false] {
                let mut opt = Optimizer::new(c.clone(), constant(), std::slice::from_ref(&big)).unwrap();
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

#[cfg(test)]
mod remedy_tests {
    //! One step of each remedy against its formula written out by hand in f64, on a 2x3 weight
    //! (2 output channels) marked scale-invariant per channel.
    use super::*;
    use crate::params::{Granularity, Role};
    use remedies::{Invariance, NormTarget};

    const W: [f64; 6] = [3.0, 0.0, 4.0, 1.0, 2.0, -2.0];
    const G: [f64; 6] = [0.5, -1.0, 0.2, 0.3, 0.1, 0.4];

    fn si() -> ParamInfo {
        ParamInfo {
            path: "w".into(),
            shape: vec![2, 3],
            role: Role::Weight,
            scale_invariant: true,
            granularity: Granularity::Channel,
            decayed: true,
            group: Group::ScaleInvariant,
        }
    }

    fn cfg(kind: OptimKind) -> OptimConfig {
        OptimConfig::of_kind(kind, 0.1, 0.05)
    }

    fn step(c: OptimConfig, info: ParamInfo, w: &[f64], g: &[f64]) -> Vec<f64> {
        let dev = Device::flex();
        let sched = Schedule::constant(1);
        let mut opt = Optimizer::new(c, sched, std::slice::from_ref(&info)).unwrap();
        opt.step = 1;
        let t = |v: &[f64]| Tensor::<2>::from_data(TensorData::new(v.iter().map(|&x| x as f32).collect::<Vec<_>>(), [2, 3]), &dev);
        host(opt.update("w", t(w), t(g), false).unwrap().0)
    }

    fn rows(v: &[f64]) -> [&[f64]; 2] {
        [&v[..3], &v[3..]]
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// `u` minus its projection on `w`, per row.
    fn project(w: &[f64], u: &[f64]) -> Vec<f64> {
        rows(w)
            .iter()
            .zip(rows(u))
            .flat_map(|(wr, ur)| {
                let c = dot(wr, ur) / dot(wr, wr);
                ur.iter().zip(wr.iter()).map(move |(u, w)| u - c * w).collect::<Vec<_>>()
            })
            .collect()
    }

    fn close(a: &[f64], b: &[f64], tol: f64) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < tol * (1.0 + y.abs()), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn sgdp_one_step() {
        // buf = g; d = g - w_hat <w_hat, g> per channel (structural: the weight is scale-invariant);
        // w' = w (1 - lr wd wd_ratio / (1 - mu)) - lr d.
        let ours = step(cfg(OptimKind::Sgdp), si(), &W, &G);
        let d = project(&W, &G);
        let expect: Vec<f64> = W.iter().zip(&d).map(|(w, d)| w * (1.0 - 0.1 * 0.05 * 0.1 / 0.1) - 0.1 * d).collect();
        close(&ours, &expect, 1e-5);
    }

    #[test]
    fn adamp_one_step_with_the_numeric_test() {
        // First Adam step: m_hat = g, v_hat = g^2, perturb = g / (|g| + eps).
        let perturb: Vec<f64> = G.iter().map(|g| g / (g.abs() + 1e-8)).collect();
        let mut c = cfg(OptimKind::Adamp);
        c.lr = 1e-3;
        c.remedy.invariance = Invariance::Numeric;
        // A gradient orthogonal to each row passes the cosine test: projected, decay x wd_ratio.
        let g_orth = project(&W, &G);
        let p_orth: Vec<f64> = g_orth.iter().map(|g| g / (g.abs() + 1e-8)).collect();
        let ours = step(c.clone(), si(), &W, &g_orth);
        let d = project(&W, &p_orth);
        let expect: Vec<f64> = W.iter().zip(&d).map(|(w, d)| w * (1.0 - 1e-3 * 0.05 * 0.1) - 1e-3 * d).collect();
        close(&ours, &expect, 1e-5);
        // G itself is far from orthogonal: no projection, full decay.
        let ours = step(c, si(), &W, &G);
        let expect: Vec<f64> = W.iter().zip(&perturb).map(|(w, p)| w * (1.0 - 1e-3 * 0.05) - 1e-3 * p).collect();
        close(&ours, &expect, 1e-5);
    }

    #[test]
    fn lars_and_lamb_one_step() {
        let (wn, gn) = (dot(&W, &W).sqrt(), dot(&G, &G).sqrt());
        let ratio = 0.001 * wn / (gn + 0.05 * wn + 1e-8);
        let expect: Vec<f64> = W.iter().zip(&G).map(|(w, g)| w - 0.1 * ratio * (g + 0.05 * w)).collect();
        close(&step(cfg(OptimKind::Lars), si(), &W, &G), &expect, 1e-5);
        // LAMB: r = m_hat / (sqrt(v_hat) + eps) + wd w, trust = ||w|| / ||r||.
        let r: Vec<f64> = W.iter().zip(&G).map(|(w, g)| g / (g.abs() + 1e-8) + 0.05 * w).collect();
        let trust = wn / dot(&r, &r).sqrt();
        let expect: Vec<f64> = W.iter().zip(&r).map(|(w, r)| w - 0.1 * trust * r).collect();
        close(&step(cfg(OptimKind::Lamb), si(), &W, &G), &expect, 1e-5);
    }

    #[test]
    fn fixed_norm_one_step() {
        // SGD step (no decay on the scale-invariant weight), then each row back to its norm.
        let mut c = cfg(OptimKind::FixedNorm);
        c.si_weight_decay = Some(0.0);
        let moved: Vec<f64> = W.iter().zip(&G).map(|(w, g)| w - 0.1 * g).collect();
        let expect: Vec<f64> = rows(&moved)
            .iter()
            .zip(rows(&W))
            .flat_map(|(m, w)| {
                let s = dot(w, w).sqrt() / dot(m, m).sqrt();
                m.iter().map(move |x| x * s).collect::<Vec<_>>()
            })
            .collect();
        close(&step(c.clone(), si(), &W, &G), &expect, 1e-5);
        c.remedy.fixed_norm_target = NormTarget::Unit;
        let ours = step(c, si(), &W, &G);
        for r in rows(&ours) {
            assert!((dot(r, r).sqrt() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn rotational_one_step() {
        // Direction: the SGD step -lr*(g + wd*w) / lr, centered per row, orthogonal to w, and
        // RMS-normalized (first step: unit norm); rotate by F7's angle; keep the row norms.
        let ours = step(cfg(OptimKind::RvSgd), si(), &W, &G);
        let theta = crate::theory::angle_sgdm(0.1, 0.05, 0.9);
        let dir: Vec<f64> = W.iter().zip(&G).map(|(w, g)| -(g + 0.05 * w)).collect();
        let centered: Vec<f64> = rows(&dir)
            .iter()
            .flat_map(|r| {
                let m = r.iter().sum::<f64>() / 3.0;
                r.iter().map(move |x| x - m).collect::<Vec<_>>()
            })
            .collect();
        let d = project(&W, &centered);
        let expect: Vec<f64> = rows(&W)
            .iter()
            .zip(rows(&d))
            .flat_map(|(w, d)| {
                let (wn, dn) = (dot(w, w).sqrt(), dot(d, d).sqrt());
                let moved: Vec<f64> = w.iter().zip(d.iter()).map(|(w, d)| w + theta.tan() * wn * d / dn).collect();
                let mn = dot(&moved, &moved).sqrt();
                moved.into_iter().map(move |x| x * wn / mn).collect::<Vec<_>>()
            })
            .collect();
        close(&ours, &expect, 1e-5);
        for (a, b) in rows(&W).iter().zip(rows(&ours)) {
            let ang = (dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())).acos();
            assert!((ang / theta - 1.0).abs() < 1e-4, "angle {ang} vs {theta}");
        }
    }

    #[test]
    fn compensation_scales_by_norm_growth() {
        // The first step has ||w|| = ||w_0||: plain SGD (decay excluded by the policy).
        let mut c = cfg(OptimKind::Sgd);
        c.momentum = 0.0;
        c.remedy.compensate_elr = true;
        let mut info = si();
        info.decayed = false;
        let expect: Vec<f64> = W.iter().zip(&G).map(|(w, g)| w - 0.1 * g).collect();
        close(&step(c, info, &W, &G), &expect, 1e-5);
    }

    #[test]
    fn bad_remedy_settings_are_refused() {
        let mut c = cfg(OptimKind::Lars);
        c.remedy.trust_coeff = -0.001;
        assert!(c.validate().unwrap_err().to_string().contains("--trust-coeff -0.001"));
        let e = Optimizer::new(cfg(OptimKind::FixedNorm), constant(), &[si()]).err().unwrap().to_string();
        assert!(e.contains("fixed-norm") && e.contains("--weight-decay"), "{e}");
        let mut c = cfg(OptimKind::RvSgd);
        c.weight_decay = 0.0;
        let e = Optimizer::new(c, constant(), &[si()]).err().unwrap().to_string();
        assert!(e.contains("rotational") && e.contains("would be 0"), "{e}");
        let mut c = cfg(OptimKind::Sgdp);
        c.decay = DecayMode::Coupled;
        assert!(c.validate().is_err());
    }

    fn constant() -> Schedule {
        Schedule::constant(1)
    }
}
