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
        norm: Some(NormKind::Bn),
        epochs: 8,
        batch_size: 128,
        schedule: ScheduleKind::Constant,
        probe_every: Some(1),
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

/// F17 on a real training run (the MLP with BN, SGD with momentum and L2, at equilibrium after
/// the first half): the mean `cos(w_t, w_{t+k})` of a scale-invariant weight at gaps from one
/// step to one epoch, against the formula, compared as `-ln(cos)` within 15% (F7's tolerance on
/// real runs). Then `inspect` on the same run's checkpoints, saved every step and once per
/// epoch, says "at equilibrium" for both: it compares the angle over a gap with F17 for that
/// gap. (The angle per step read off a once-per-epoch gap, what it compared before, is far
/// from the per-step prediction; the test checks that too.)
#[test]
fn f13_gap_angles_on_a_real_run_and_inspects_verdict_at_every_gap() {
    use normwd::inspect::{self, Hyper};
    use normwd::theory::Family;
    let device = Device::flex().autodiff();
    let d = data::embedded();
    let mut net = Net::new(ModelKind::Mlp, NormKind::Bn, [1, 28, 28], 0.1, 0, &device);
    let params = describe(&net, DecayPolicy::ExcludeNormBias);
    let (lr, mu, wd, batch) = (0.05, 0.9, 0.02, 128);
    let probe = "fc2.weight";
    let n = d.train.len();
    // Whole batches only: a last batch of a few examples has batch norm statistics of its own.
    let per_epoch = n / batch;
    let total = 8 * per_epoch;
    let mut opt = Optimizer::new(sgd(lr, mu, wd), constant(total), &params).unwrap();
    let mut order: Vec<usize> = (0..n).collect();
    let gaps = [1usize, 5, 20, per_epoch];
    let mut past: std::collections::VecDeque<Vec<f32>> = std::collections::VecDeque::new();
    let (mut sums, mut counts) = (vec![0.0f64; gaps.len()], vec![0usize; gaps.len()]);
    let root = std::env::temp_dir().join(format!("normwd-theory-{}-f13", std::process::id()));
    let (every, epochs, early) = (root.join("every-step"), root.join("per-epoch"), root.join("early"));
    for dir in [&every, &epochs, &early] {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
    }
    let cos = |a: &[f32], b: &[f32]| {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        dot / (n(a) * n(b))
    };
    for step in 0..total {
        if step % per_epoch == 0 {
            // A new order each epoch, as training shuffles (a fixed order correlates weights one
            // epoch apart).
            shuffle(&mut order, step as u64);
        }
        let start = (step % per_epoch) * batch;
        let idx = &order[start..start + batch];
        let (x, y) = d.batch(&d.train, idx, None, &device);
        let grads = cross_entropy(net.forward(x), y).backward();
        net = opt.step(net, grads, false).0;
        let done = step + 1;
        if done <= total / 2 {
            if done % per_epoch == 0 && done <= 3 * per_epoch {
                let tensors = normwd::train::store::module_tensors(&net);
                let name = format!("ckpt_{done:06}.safetensors");
                std::fs::write(early.join(name), normwd::train::store::to_safetensors(&tensors, Default::default())).unwrap();
            }
            continue;
        }
        let tensors = normwd::train::store::module_tensors(&net);
        let w = tensors.iter().find(|t| t.0 == probe).unwrap().2.clone();
        for (i, &k) in gaps.iter().enumerate() {
            if let Some(old) = past.len().checked_sub(k).map(|j| &past[j]) {
                sums[i] += cos(old, &w);
                counts[i] += 1;
            }
        }
        past.push_back(w);
        if past.len() > per_epoch {
            past.pop_front();
        }
        let name = format!("ckpt_{done:06}.safetensors");
        for (dir, keep) in [(&every, done + 30 > total), (&epochs, done % per_epoch == 0 && done > total / 2)] {
            if keep {
                std::fs::write(dir.join(&name), normwd::train::store::to_safetensors(&tensors, Default::default())).unwrap();
            }
        }
    }
    let family = Family::Sgd { mu, coupled: true };
    let rate = lr * wd / (1.0 - mu);
    let uncorrelated = -theory::predicted_angle(family, lr, wd, None).unwrap().cos().ln();
    for (i, &k) in gaps.iter().enumerate() {
        let measured = sums[i] / counts[i] as f64;
        let predicted = theory::gap_cos(family, lr, wd, k as u64).unwrap();
        let rel = measured.ln() / predicted.ln() - 1.0;
        if rate * k as f64 <= 0.05 {
            assert!(rel.abs() < 0.2, "gap {k}: measured cos {measured:.5}, F17 {predicted:.5} (-ln {:+.1}%)", 100.0 * rel);
        } else {
            // Longer gaps: real gradients pull the weight back, so it rotates less than F17's
            // noise-only model, and more than steps without momentum's correlation would.
            let low = k as f64 * uncorrelated;
            assert!(
                -measured.ln() < -predicted.ln() && -measured.ln() > low,
                "gap {k}: -ln cos measured {:.4}, expected between {low:.4} and F17's {:.4}",
                -measured.ln(),
                -predicted.ln()
            );
        }
    }
    let h = Hyper {
        optimizer: normwd::optim::Rule::Sgd,
        lr,
        momentum: mu,
        weight_decay: wd,
        coupled: true,
        betas: (0.9, 0.999),
        nesterov: false,
    };
    for (dir, expected) in [(&every, true), (&epochs, true), (&early, false)] {
        let series = inspect::load_series(std::slice::from_ref(dir), None, None).unwrap();
        let reports = inspect::measure(&series, None, &inspect::Training::uniform(&series, &h));
        let invariant: Vec<_> = reports.iter().filter(|r| r.scale_invariant).collect();
        assert_eq!(invariant.len(), 2, "fc1 and fc2 feed batch norm");
        for r in invariant {
            let (name, n) = (&r.name, &r.norms);
            assert_eq!(
                r.at_equilibrium,
                Some(expected),
                "{dir:?} {name}: norms {n:?}, angle {} over {} steps",
                r.last_gap_angle,
                r.last_gap_steps
            );
            if dir == &epochs {
                // What inspect compared before: the gap's angle divided by the gap, against the
                // angle per step.
                let per_step = r.last_gap_angle / r.last_gap_steps as f64;
                assert!(
                    (per_step / r.pred_angle.unwrap() - 1.0).abs() > 0.2,
                    "{name}: the per-step reading of an epoch's gap would have passed"
                );
            }
        }
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// Fisher-Yates with a small LCG: a fixed, seeded permutation.
fn shuffle(v: &mut [usize], seed: u64) {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    for i in (1..v.len()).rev() {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        v.swap(i, ((x >> 33) % (i as u64 + 1)) as usize);
    }
}
