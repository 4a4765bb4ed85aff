//! Benchmarks: the cost of per-layer probes relative to plain training steps (a ratio in one
//! process), and training throughput on synthetic batches, which `bench/compare.sh` sets
//! beside PyTorch's on the same models (`bench/pytorch_ref.py`).
//!
//! May import every layer above it.

use crate::data;
use crate::model::cross_entropy;
use crate::model::{GptShape, Input, ModelKind, Net, NormKind};
use crate::optim::schedule::Schedule;
use crate::optim::{OptimConfig, Optimizer};
use crate::params::{describe, DecayPolicy};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
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

/// The model and optimizer every benchmark times: +BN, SGD (lr 0.1, momentum 0.9, decay 5e-4
/// on weights only), the settings `bench/pytorch_ref.py` mirrors.
fn bench_model(model: ModelKind, shape: [usize; 3], device: &Device) -> (Net, Optimizer) {
    let net = Net::new(model, NormKind::Bn, shape, 0.1, 0, device);
    let params = describe(&net, DecayPolicy::ExcludeNormBias);
    let opt = Optimizer::new(OptimConfig::sgd(0.1, 0.9, 5e-4), Schedule::constant(1), &params).expect("valid settings");
    (net, opt)
}

/// Times `steps` training steps of `model` (+BN, SGD with momentum and decay, batch 128, the
/// embedded data) with probes off and on, interleaved so both see the same machine state.
pub fn probe_overhead(model: ModelKind, steps: usize) -> ProbeOverhead {
    let device = Device::flex().autodiff();
    let d = data::embedded();
    let (mut net, mut opt) = bench_model(model, d.shape, &device);
    let (mut plain, mut probed) = (Vec::new(), Vec::new());
    for i in 0..2 * (steps + 2) {
        let idx: Vec<usize> = ((i * 128) % 9000..(i * 128) % 9000 + 128).collect();
        let (x, y) = d.batch(&d.train, &idx, None, &device);
        let measure = i % 2 == 1;
        let t = Instant::now();
        let (n, stats) = crate::kernels::on_workers(|| {
            let loss = cross_entropy(net.forward(x), y);
            let _ = loss.clone().into_scalar::<f64>();
            opt.step(net, loss.backward(), measure)
        });
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

/// Training throughput of one model on synthetic batches.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Throughput {
    /// Model name.
    pub model: String,
    /// Input shape `[c, h, w]`.
    pub shape: [usize; 3],
    /// Batch size.
    pub batch: usize,
    /// Median seconds per step (forward, backward, optimizer step, loss read back).
    pub step_s: f64,
    /// `batch / step_s` (windows per second for `gpt`; times `shape[2]` tokens).
    pub images_per_sec: f64,
    /// Timed steps.
    pub steps: usize,
    /// Loss of every step, warm-up included (the run is deterministic).
    pub losses: Vec<f64>,
}

/// The input shape the comparison uses for each model: Fashion-MNIST's for the MLP and the
/// ConvNet, CIFAR-10's for ResNet-20, `[1, 1, block]` token windows for `gpt`.
pub fn bench_shape(model: ModelKind) -> [usize; 3] {
    match model {
        ModelKind::Mlp | ModelKind::Convnet => [1, 28, 28],
        ModelKind::Resnet20 => [3, 32, 32],
        ModelKind::Gpt => [1, 1, BENCH_GPT.block_size],
    }
}

/// The `gpt` the comparison times: the default shape (4 layers, 4 heads, 128 wide, block 64),
/// layer norm, tied embeddings, the embedded text's 62 characters.
pub const BENCH_GPT: GptShape = GptShape { n_layer: 4, n_head: 4, n_embd: 128, block_size: 64, qk_norm: false, tie_embeddings: true };
/// Vocabulary of the benchmarked `gpt`.
pub const BENCH_VOCAB: usize = 62;

/// The `gpt` and optimizer the comparison times: AdamW (lr 1e-3, decay 0.1 on matrices only,
/// nanoGPT's groups), mirrored by `bench/pytorch_ref.py`.
fn bench_gpt(device: &Device) -> (Net, Optimizer) {
    let net = Net::gpt(BENCH_GPT, NormKind::Ln, BENCH_VOCAB, 0, device);
    let params = describe(&net, DecayPolicy::ExcludeNormBias);
    let c = OptimConfig { betas: (0.9, 0.95), ..OptimConfig::of_kind(crate::optim::OptimKind::Adamw, 1e-3, 0.1) };
    (net, Optimizer::new(c, Schedule::constant(1), &params).expect("valid settings"))
}

/// Times `steps` training steps after `warmup` untimed ones: +BN, SGD (lr 0.1, momentum 0.9,
/// decay 5e-4 on weights only), batch `batch`, standard-normal inputs and uniform labels from
/// a fixed seed, a fresh batch each step, prepared before the clock starts.
/// Each timed step ends with a device sync: a GPU runs asynchronously, and without it the time of
/// one step's backward pass would land in the next step's measurement.
pub fn train_throughput(model: ModelKind, device: &Device, batch: usize, warmup: usize, steps: usize) -> Result<Throughput, String> {
    let device = device.clone().autodiff();
    let shape = bench_shape(model);
    let (mut net, mut opt) = if model.reads_text() { bench_gpt(&device) } else { bench_model(model, shape, &device) };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let features = shape.iter().product::<usize>();
    let (mut times, mut losses) = (Vec::new(), Vec::new());
    for i in 0..warmup + steps {
        let (x, y): (Input, _) = if model.reads_text() {
            // Uniform token ids and next tokens: the step's cost does not depend on the text.
            let ids: Vec<i32> = (0..batch * (features + 1)).map(|_| rng.random_range(0..BENCH_VOCAB as i32)).collect();
            let y = Tensor::<1, Int>::from_data(TensorData::new(ids[batch..].to_vec(), [batch * features]), &device);
            (Tensor::<2, Int>::from_data(TensorData::new(ids[..batch * features].to_vec(), [batch, features]), &device).into(), y)
        } else {
            // Box-Muller normals: the same distribution as torch.randn.
            let x: Vec<f32> = (0..batch * features)
                .map(|_| {
                    let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
                    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
                })
                .collect();
            let y: Vec<i32> = (0..batch).map(|_| rng.random_range(0..10)).collect();
            let x = Tensor::<4>::from_data(TensorData::new(x, [batch, shape[0], shape[1], shape[2]]), &device);
            (x.into(), Tensor::<1, Int>::from_data(TensorData::new(y, [batch]), &device))
        };
        let t = Instant::now();
        let (n, lv) = crate::kernels::on_workers(|| {
            let loss = cross_entropy(net.forward(x), y);
            let lv = loss.clone().into_scalar::<f64>();
            (opt.step(net, loss.backward(), false).0, lv)
        });
        net = n;
        device.sync().map_err(|e| format!("the device failed during a training step: {e:?}"))?;
        let s = t.elapsed().as_secs_f64();
        losses.push(lv);
        if i >= warmup {
            times.push(s);
        }
    }
    let step_s = median(times);
    Ok(Throughput { model: model.name().into(), shape, batch, step_s, images_per_sec: batch as f64 / step_s, steps, losses })
}

/// This process's peak resident memory in bytes (`VmHWM`), where the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
