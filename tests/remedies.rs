//! Each remedy's key property on a real model (ConvNet with BN, embedded data):
//! SGDP / AdamP make no radial update, fixed-norm keeps norms to 1e-6, the rotational wrapper
//! rotates by its target angle from step 1 (within 5%), and the compensation makes the
//! effective learning rate follow the schedule (within 5%).

use burn::tensor::Device;
use normwd::data;
use normwd::model::{ModelKind, Net, NormKind};
use normwd::optim::remedies::Invariance;
use normwd::optim::schedule::{Schedule, ScheduleKind};
use normwd::optim::{OptimConfig, OptimKind, Optimizer, UpdateStats};
use normwd::params::{describe, DecayPolicy, ParamInfo};
use normwd::theory;
use normwd::train::{cross_entropy, store};

fn config(kind: OptimKind, lr: f64, wd: f64) -> OptimConfig {
    OptimConfig::of_kind(kind, lr, wd)
}

/// Trains `steps` updates and returns, per step, the stats of the scale-invariant tensors.
fn train(c: OptimConfig, policy: DecayPolicy, schedule: ScheduleKind, steps: usize) -> (Vec<ParamInfo>, Vec<Vec<UpdateStats>>) {
    let device = Device::flex().autodiff();
    let d = data::embedded();
    let mut net = Net::new(ModelKind::Convnet, NormKind::Bn, d.shape, 0.1, 2, &device);
    let params = describe(&net, policy);
    let sched = Schedule { kind: schedule, ..Schedule::constant(steps) };
    let mut opt = Optimizer::new(c, sched, &params).unwrap();
    let mut out = Vec::new();
    for s in 0..steps {
        let idx: Vec<usize> = (s * 64..(s + 1) * 64).collect();
        let (x, y) = d.batch(&d.train, &idx, None, &device);
        let grads = cross_entropy(net.forward(x), y).backward();
        let (n, stats) = opt.step(net, grads, true);
        net = n;
        out.push(stats.into_iter().filter(|st| params.iter().any(|p| p.path == st.path && p.scale_invariant)).collect());
    }
    (params, out)
}

#[test]
fn sgdp_and_adamp_make_no_radial_update() {
    for (kind, lr, inv) in [(OptimKind::Sgdp, 0.1, Invariance::Structural), (OptimKind::Adamp, 1e-3, Invariance::Numeric)] {
        // No decay, so the whole update is the projected gradient step.
        let mut c = config(kind, lr, 0.0);
        c.remedy.invariance = inv;
        let device = Device::flex().autodiff();
        let d = data::embedded();
        let mut net = Net::new(ModelKind::Convnet, NormKind::Bn, d.shape, 0.1, 2, &device);
        let params = describe(&net, DecayPolicy::ExcludeNormBias);
        let sched = Schedule::constant(8);
        let mut opt = Optimizer::new(c, sched, &params).unwrap();
        for t in 0..8 {
            let (x, y) = d.batch(&d.train, &(t * 64..(t + 1) * 64).collect::<Vec<_>>(), None, &device);
            let before = store::module_tensors(&net);
            let grads = cross_entropy(net.forward(x), y).backward();
            net = opt.step(net, grads, false).0;
            let after = store::module_tensors(&net);
            for (p, (b, a)) in params.iter().zip(before.iter().zip(&after)).filter(|(p, _)| p.scale_invariant) {
                // Per output channel, in f64 on the host: <w, dw> relative to ||w|| ||dw||.
                let cols = b.2.len() / p.rows();
                for r in 0..p.rows() {
                    let (w, w2) = (&b.2[r * cols..(r + 1) * cols], &a.2[r * cols..(r + 1) * cols]);
                    let dw: Vec<f64> = w.iter().zip(w2).map(|(x, y)| *y as f64 - *x as f64).collect();
                    let radial: f64 = w.iter().zip(&dw).map(|(x, d)| *x as f64 * d).sum();
                    let (nw, nd) =
                        (w.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt(), dw.iter().map(|x| x * x).sum::<f64>().sqrt());
                    assert!(
                        radial.abs() <= 1e-3 * nw * nd,
                        "{kind:?} step {t} {} channel {r}: cos(w, dw) = {}",
                        p.path,
                        radial / (nw * nd)
                    );
                }
            }
        }
    }
}

#[test]
fn fixed_norm_keeps_norms() {
    let (_, steps) = train(config(OptimKind::FixedNorm, 0.1, 5e-4), DecayPolicy::NoneOnScaleInvariant, ScheduleKind::Constant, 10);
    let first = &steps[0];
    for stats in &steps {
        for (s, f) in stats.iter().zip(first) {
            for (r, r0) in s.rows.iter().zip(&f.rows) {
                assert!((r[4] / r0[0] - 1.0).abs() < 1e-6, "{}: row norm {} vs initial {}", s.path, r[4], r0[0]);
            }
        }
    }
}

#[test]
fn rotational_wrapper_rotates_by_the_target_from_step_one() {
    for kind in [OptimKind::RvSgd, OptimKind::RvAdamw] {
        let (lr, wd) = if kind == OptimKind::RvSgd { (0.1, 5e-3) } else { (1e-3, 0.5) };
        let (params, steps) = train(config(kind, lr, wd), DecayPolicy::ExcludeNormBias, ScheduleKind::Constant, 10);
        let target = config(kind, lr, wd).rotation_angle(&params);
        let expect = if kind == OptimKind::RvSgd { theory::angle_sgdm(lr, wd, 0.9) } else { theory::angle_adamw(lr, wd, 0.9) };
        assert!((target - expect).abs() < 1e-15);
        for (t, stats) in steps.iter().enumerate() {
            for s in stats {
                let angles: Vec<f64> = s.rows.iter().map(|r| theory::angle_from_dot(r[3], r[0], r[4])).collect();
                let mean = angles.iter().sum::<f64>() / angles.len() as f64;
                assert!(
                    (mean / target - 1.0).abs() < 0.05,
                    "{kind:?} step {} {}: mean channel angle {mean} vs target {target}",
                    t + 1,
                    s.path
                );
            }
        }
    }
}

#[test]
fn compensation_makes_the_effective_lr_follow_the_schedule() {
    // Plain SGD (no momentum) so the step is exactly -lr*c*g: measured effective lr
    // = ||dw|| / (||g|| ||w||^2) must equal lr*schedule(t)/||w_0||^2 while the norm grows.
    let mut c = config(OptimKind::Sgd, 0.2, 0.0);
    c.momentum = 0.0;
    c.remedy.compensate_elr = true;
    let steps_n = 12;
    let (_, steps) = train(c, DecayPolicy::NoneOnScaleInvariant, ScheduleKind::Cosine, steps_n);
    let sched = Schedule {
        kind: ScheduleKind::Cosine,
        milestones: vec![],
        gamma: 0.1,
        warmup_steps: 0,
        steps_per_epoch: steps_n,
        total_steps: steps_n,
    };
    let n0: Vec<f64> = steps[0].iter().map(|s| s.norm).collect();
    for (t, stats) in steps.iter().enumerate().take(steps_n - 1) {
        for (s, n0) in stats.iter().zip(&n0) {
            let du = (s.norm_after * s.norm_after - 2.0 * s.dot_ww + s.norm * s.norm).max(0.0).sqrt();
            let measured = du / (s.grad_norm * s.norm * s.norm);
            let expect = 0.2 * sched.factor(t) / (n0 * n0);
            assert!((measured / expect - 1.0).abs() < 0.05, "step {t} {}: effective lr {measured:e} vs {expect:e}", s.path);
        }
    }
    // The norms did grow (without decay), so the compensation had work to do.
    let last = steps.last().unwrap();
    assert!(last.iter().zip(&n0).any(|(s, n0)| s.norm > 1.01 * n0));
}
