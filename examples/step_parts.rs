//! Where a training step's time goes: median forward (with the loss read back), backward and
//! optimizer times of the benchmark models (`normwd bench --train`'s settings, one fixed batch).
//! `bench/pytorch_parts.py` times the same three parts in PyTorch. Run:
//! `RAYON_NUM_THREADS=2 cargo run --release --example step_parts -- mlp|convnet|resnet20`.

use burn::tensor::{Device, Int, Tensor, TensorData};
use normwd::model::{ModelKind, Net, NormKind};
use normwd::optim::schedule::Schedule;
use normwd::optim::{OptimConfig, Optimizer};
use normwd::params::{describe, DecayPolicy};
use normwd::train::cross_entropy;
use std::time::Instant;
fn main() {
    // The `normwd` program's allocator settings: without them every large buffer comes back as
    // fresh pages, and page faults showed up as a third of the MLP's backward.
    // SAFETY: no thread has started yet.
    unsafe { normwd::env::tune_allocator() };
    // The parts are timed apart, so the first 5 steps (allocations, caches) are left out.
    let work = move || {
        let m = match std::env::args().nth(1).as_deref() {
            Some("convnet") => ModelKind::Convnet,
            Some("resnet20") => ModelKind::Resnet20,
            _ => ModelKind::Mlp,
        };
        let shape = normwd::bench::bench_shape(m);
        let device = Device::flex().autodiff();
        let mut net = Net::new(m, NormKind::Bn, shape, 0.1, 0, &device);
        let params = describe(&net, DecayPolicy::ExcludeNormBias);
        let mut opt = Optimizer::new(OptimConfig::sgd(0.1, 0.9, 5e-4), Schedule::constant(1), &params).unwrap();
        let f: usize = shape.iter().product();
        let x = Tensor::<4>::from_data(
            TensorData::new(
                (0..128 * f).map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0).collect::<Vec<_>>(),
                [128, shape[0], shape[1], shape[2]],
            ),
            &device,
        );
        let y = Tensor::<1, Int>::from_data(TensorData::new((0..128).map(|i: i32| i % 10).collect::<Vec<_>>(), [128]), &device);
        let mut t = [vec![], vec![], vec![], vec![]];
        let steps = std::env::var("STEPS").ok().and_then(|v| v.parse().ok()).unwrap_or(if m == ModelKind::Resnet20 { 15 } else { 100 });
        for i in 0..steps {
            let t0 = Instant::now();
            let loss = cross_entropy(net.forward(x.clone()), y.clone());
            let _ = loss.clone().into_scalar::<f64>();
            let t1 = Instant::now();
            let g = loss.backward();
            let t2 = Instant::now();
            let (n, _) = opt.step(net, g, false);
            net = n;
            let t3 = Instant::now();
            if i >= 5 {
                t[0].push((t1 - t0).as_secs_f64());
                t[1].push((t2 - t1).as_secs_f64());
                t[2].push((t3 - t2).as_secs_f64());
                t[3].push((t3 - t0).as_secs_f64());
            }
        }
        for (name, mut v) in ["forward", "backward", "optim", "total"].into_iter().zip(t) {
            v.sort_by(f64::total_cmp);
            println!("{name:9} {:.3} ms", v[v.len() / 2] * 1e3);
        }
    };
    // On the pool, as the program's training loop runs its steps (`kernels::on_workers`).
    normwd::kernels::on_workers(work);
}
