//! THEORY.md's formulas against real computations on the built-in models and the embedded
//! data: F4 (norm growth without decay), F5/F7/F8 (equilibrium angular update after the
//! relaxation time, within 15%), F12 (weight decay = exponentially growing lr without decay).

use burn::tensor::Device;
use normwd::data;
use normwd::model::{ModelKind, Net, NormKind};
use normwd::optim::schedule::{Schedule, ScheduleKind};
use normwd::optim::{OptimConfig, OptimKind, Optimizer};
use normwd::params::{describe, DecayPolicy};
use normwd::report::{window_mean, RunData};
use normwd::theory;
use normwd::train::config::RunConfig;
use normwd::train::{self, cross_entropy, Quiet, RunOptions};

fn sgd(lr: f64, momentum: f64, wd: f64) -> OptimConfig {
    OptimConfig::sgd(lr, momentum, wd)
}

fn constant(steps: usize) -> Schedule {
    Schedule::constant(steps)
}

#[test]
fn f4_norms_grow_by_lr_squared_grad_squared_without_decay() {
    let device = Device::flex().autodiff();
    let d = data::embedded();
    let mut net = Net::new(ModelKind::Convnet, NormKind::Bn, [1, 28, 28], 0.1, 3, &device);
    let params = describe(&net, DecayPolicy::ExcludeNormBias);
    let lr = 0.5;
    let mut opt = Optimizer::new(sgd(lr, 0.0, 0.0), constant(20), &params).unwrap();
    for step in 0..20 {
        let idx: Vec<usize> = (step * 64..(step + 1) * 64).collect();
        let (x, y) = d.batch(&d.train, &idx, None, &device);
        let grads = cross_entropy(net.forward(x), y).backward();
        let (n, stats) = opt.step(net, grads, true);
        net = n;
        for s in stats.iter().filter(|s| params.iter().any(|p| p.path == s.path && p.scale_invariant)) {
            let predicted = s.norm * s.norm + lr * lr * s.grad_norm * s.grad_norm;
            let rel = (s.norm_after * s.norm_after / predicted - 1.0).abs();
            assert!(rel < 1e-4, "F4 step {step} {}: ||w'||^2 = {}, predicted {predicted}", s.path, s.norm_after * s.norm_after);
            assert!(s.norm_after > s.norm);
        }
    }
}

/// Trains the MLP with BN on the embedded data with probes on every step and returns the run.
fn train_mlp(name: &str, config: RunConfig) -> RunData {
    let dir = std::env::temp_dir().join(format!("normwd-theory-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    train::run(config, RunOptions { dir: dir.clone(), resume: false, observer: &mut Quiet }).unwrap();
    let r = RunData::load(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    r
}

fn mlp_config() -> RunConfig {
    RunConfig {
        model: ModelKind::Mlp,
        norm: NormKind::Bn,
        epochs: 8,
        batch_size: 128,
        schedule: ScheduleKind::Constant,
        probe_every: 1,
        decay_policy: Some(DecayPolicy::ExcludeNormBias),
        ..Default::default()
    }
}

/// Mean measured and predicted angle over the second half of the run, per scale-invariant tensor.
fn angles(r: &RunData) -> Vec<(String, f64, f64)> {
    r.invariant_paths()
        .into_iter()
        .map(|p| {
            let s = r.series(&p);
            (p.clone(), window_mean(&s, 0.5, 1.0, |x| Some(x.angle)).unwrap(), window_mean(&s, 0.5, 1.0, |x| x.pred_angle).unwrap())
        })
        .collect()
}

#[test]
fn f5_f7_f8_equilibrium_angle_on_real_training_runs() {
    // 8 epochs x 79 steps = 632 steps; every run has lr*wd (times 1/(1-mu) for SGD with L2 in
    // the gradient) of at least 0.01 per step. The initial norms are ~9x the equilibrium ones, so
    // reaching equilibrium takes ~ln(81)/(2*0.01) = 220 steps: the second half starts after it.
    let cases = [
        ("f5-sgd", RunConfig { lr: 0.05, momentum: 0.0, weight_decay: 0.2, ..mlp_config() }, theory::angle_sgd(0.05, 0.2)),
        ("f7-sgdm", RunConfig { lr: 0.05, momentum: 0.9, weight_decay: 0.02, ..mlp_config() }, theory::angle_sgdm(0.05, 0.02, 0.9)),
        (
            "f8-adamw",
            RunConfig {
                optimizer: OptimKind::Adamw,
                lr: 0.004,
                weight_decay: 4.0,
                decay_policy: Some(DecayPolicy::ScaleInvariantOnly),
                ..mlp_config()
            },
            theory::angle_adamw(0.004, 4.0, 0.9),
        ),
    ];
    for (name, cfg, formula) in cases {
        let r = train_mlp(name, cfg);
        for (path, measured, predicted) in angles(&r) {
            assert!((predicted - formula).abs() < 1e-12, "{name}: the probe's prediction is the formula");
            let rel = measured / predicted - 1.0;
            assert!(rel.abs() < 0.15, "{name} {path}: measured {measured:.5} rad/step, predicted {predicted:.5} ({:+.1}%)", 100.0 * rel);
        }
        if name == "f5-sgd" {
            // F5's equilibrium norm, from the gradient measured at the same steps.
            for p in r.invariant_paths() {
                let s = r.series(&p);
                let n = window_mean(&s, 0.5, 1.0, |x| Some(x.norm)).unwrap();
                let pn = window_mean(&s, 0.5, 1.0, |x| x.pred_norm).unwrap();
                assert!((n / pn - 1.0).abs() < 0.15, "F5 norm {p}: measured {n}, predicted {pn}");
            }
        }
    }
}
