//! Benchmarks that print ratios against a reference measured in the same process: the cost of
//! per-layer probes relative to plain training steps.

use crate::data;
use crate::model::{ModelKind, Net, NormKind};
use crate::optim::schedule::Schedule;
use crate::optim::{OptimConfig, Optimizer};
use crate::params::{describe, DecayPolicy};
use crate::train::cross_entropy;
use burn::tensor::Device;
use std::time::Instant;

/// Median seconds per training step with and without probes.
#[derive(Debug, Clone)]
pub struct ProbeOverhead {
    /// Model benchmarked.
    pub model: ModelKind,
    /// Median step time without measurements.
    pub plain_s: f64,
    /// Median step time when every step is probed.
    pub every_step_s: f64,
    /// Steps timed per variant.
    pub steps: usize,
}

impl ProbeOverhead {
    /// `every_step_s / plain_s - 1`, the overhead when probing every step (the worst case;
    /// the default interval probes ~300 times per run).
    pub fn overhead(&self) -> f64 {
        self.every_step_s / self.plain_s - 1.0
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `steps` training steps of `model` (+BN, SGD with momentum and decay, batch 128, the
/// embedded data) with probes off and on, interleaved so both see the same machine state.
pub fn probe_overhead(model: ModelKind, steps: usize) -> ProbeOverhead {
    let device = Device::flex().autodiff();
    let d = data::embedded();
    let mut net = Net::new(model, NormKind::Bn, d.shape, 0.1, 0, &device);
    let params = describe(&net, DecayPolicy::ExcludeNormBias);
    let cfg = OptimConfig::sgd(0.1, 0.9, 5e-4);
    let sched = Schedule::constant(1);
    let mut opt = Optimizer::new(cfg, sched, &params).expect("valid settings");
    let (mut plain, mut probed) = (Vec::new(), Vec::new());
    for i in 0..2 * (steps + 2) {
        let idx: Vec<usize> = ((i * 128) % 9000..(i * 128) % 9000 + 128).collect();
        let (x, y) = d.batch(&d.train, &idx, None, &device);
        let measure = i % 2 == 1;
        let t = Instant::now();
        let loss = cross_entropy(net.forward(x), y);
        let _ = loss.clone().into_scalar::<f64>();
        let (n, stats) = opt.step(net, loss.backward(), measure);
        net = n;
        let _ = std::hint::black_box(stats);
        let s = t.elapsed().as_secs_f64();
        // The first two steps of each kind warm up allocations and caches.
        if i >= 4 {
            if measure {
                probed.push(s)
            } else {
                plain.push(s)
            }
        }
    }
    ProbeOverhead { model, plain_s: median(plain), every_step_s: median(probed), steps }
}
