//! F12 of THEORY.md (Li & Arora 2019) on a real model: plain GD with weight decay gives the
//! same function trajectory as GD without decay and an exponentially growing learning rate.
//! In its own test binary because it switches the CPU device to f64 for the whole process:
//! in f32, rounding moves a few ReLU inputs across zero at different steps in the two runs,
//! and those discrete events alone separate the trajectories by ~1e-4 within 30 steps.

use burn::tensor::{Device, DeviceConfig, FloatDType};
use normwd::model::{ModelKind, Net, NormKind};
use normwd::optim::schedule::Schedule;
use normwd::optim::{OptimConfig, Optimizer};
use normwd::params::{describe, DecayPolicy, ParamInfo};
use normwd::theory;
use normwd::train::cross_entropy;

fn sgd(lr: f64, wd: f64) -> OptimConfig {
    OptimConfig::sgd(lr, 0.0, wd)
}

fn constant(steps: usize) -> Schedule {
    Schedule::constant(steps)
}

#[test]
fn f12_weight_decay_equals_exponential_lr_without_decay() {
    // Plain full-batch GD with decay on the scale-invariant weights only, against GD without
    // decay whose lr on those weights grows as lr*(1-lr*wd)^(-2t-1) (Li & Arora 2019). Every
    // other parameter gets the same plain GD in both runs.
    let mut plain = Device::flex();
    plain.configure(DeviceConfig::default().float_dtype(FloatDType::F64)).expect("the CPU backend computes in f64");
    let device = plain.autodiff();
    // Gaussian inputs: every feature of the first layer has a healthy variance, so batch norm
    // with a negligible epsilon is exactly scale-invariant up to f32 rounding.
    let mut init = normwd::model::init::Init::new(5);
    let x = init.uniform::<4, _>([256, 1, 28, 28], 1.7, &device);
    let y = burn::tensor::Tensor::<1, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new((0..256).map(|i: i32| i * 7 % 10).collect::<Vec<i32>>(), [256]),
        &device,
    );
    let (lr, wd, steps) = (0.1, 0.1, 40u64);
    // F12 holds for an exactly scale-invariant loss; batch norm's epsilon breaks invariance by
    // ~eps/var per step, so this test sets it to 1e-12.
    let build = || {
        let mut n = Net::new(ModelKind::Mlp, NormKind::Bn, [1, 28, 28], 0.1, 11, &device);
        if let Net::Mlp(m) = &mut n {
            for norm in [&mut m.norm1, &mut m.norm2].into_iter().flatten() {
                norm.epsilon = 1e-12;
            }
        }
        n
    };
    let (mut a, mut b) = (build(), build());
    let pa = describe(&a, DecayPolicy::ScaleInvariantOnly);
    let pb = describe(&b, DecayPolicy::ScaleInvariantOnly);
    let mut oa = Optimizer::new(sgd(lr, wd), constant(steps as usize), &pa).unwrap();
    let mut ob = Optimizer::new(sgd(lr, 0.0), constant(steps as usize), &pb).unwrap();
    for t in 0..steps {
        let ga = cross_entropy(a.forward(x.clone()), y.clone()).backward();
        a = oa.step(a, ga, false).0;
        ob.config.si_lr_scale = theory::exp_lr(lr, wd, t) / lr;
        let gb = cross_entropy(b.forward(x.clone()), y.clone()).backward();
        b = ob.step(b, gb, false).0;
    }
    let ta = normwd::train::store::module_tensors(&a);
    let tb = normwd::train::store::module_tensors(&b);
    let si: Vec<&ParamInfo> = pa.iter().filter(|p| p.scale_invariant).collect();
    assert!(!si.is_empty());
    for p in si {
        let wa = &ta.iter().find(|t| t.0 == p.path).unwrap().2;
        let wb = &tb.iter().find(|t| t.0 == p.path).unwrap().2;
        let na = wa.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        let nb = wb.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        // w~_t = w_t / (1-lr*wd)^t.
        let scale = theory::exp_lr_weight_scale(lr, wd, steps);
        assert!((nb / (na * scale) - 1.0).abs() < 1e-3, "{}: norm ratio {} vs {scale}", p.path, nb / na);
        let err = wa.iter().zip(wb).map(|(u, v)| (*u as f64 / na - *v as f64 / nb).powi(2)).sum::<f64>().sqrt();
        assert!(err < 1e-4, "{}: normalized weights differ by {err}", p.path);
    }
    // Same function: the training-mode outputs agree.
    let la = a.forward(x.clone()).into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
    let lb = b.forward(x).into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
    let (num, den) = la.iter().zip(&lb).fold((0f64, 0f64), |(n, d), (p, q)| (n + (*p as f64 - *q as f64).powi(2), d + (*p as f64).powi(2)));
    assert!((num / den).sqrt() < 1e-4, "outputs differ by {} relative", (num / den).sqrt());
}
