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
    /// The CPU convolutions' FLOPs per timed step as the direct forms count them (what
    /// PyTorch's counter finds), 0 without them.
    pub conv_flops_equivalent: f64,
    /// Those FLOPs as performed: fewer where Winograd ran.
    pub conv_flops_performed: f64,
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
/// nanoGPT's groups), or with `muon` Muon (lr 0.02, decay 0.1, PyTorch's defaults otherwise) on
/// the hidden matrices beside that AdamW; mirrored by `bench/pytorch_ref.py`.
fn bench_gpt(device: &Device, muon: bool) -> (Net, Optimizer) {
    let net = Net::gpt(BENCH_GPT, NormKind::Ln, BENCH_VOCAB, 0, device);
    let params = describe(&net, DecayPolicy::ExcludeNormBias);
    let kind = if muon { crate::optim::OptimKind::Muon } else { crate::optim::OptimKind::Adamw };
    let mut c = OptimConfig { betas: (0.9, 0.95), ..OptimConfig::of_kind(kind, 1e-3, 0.1) };
    c.muon.lr = 0.02;
    (net, Optimizer::new(c, Schedule::constant(1), &params).expect("valid settings"))
}

/// Times `steps` training steps after `warmup` untimed ones: +BN, SGD (lr 0.1, momentum 0.9,
/// decay 5e-4 on weights only), batch `batch`, standard-normal inputs and uniform labels from
/// a fixed seed, a fresh batch each step, prepared before the clock starts; `gpt` with AdamW, or
/// Muon and AdamW with `muon` (reported as `gpt-muon`).
/// Each timed step ends with a device sync: a GPU runs asynchronously, and without it the time of
/// one step's backward pass would land in the next step's measurement.
pub fn train_throughput(
    model: ModelKind,
    device: &Device,
    batch: usize,
    warmup: usize,
    steps: usize,
    muon: bool,
) -> Result<Throughput, String> {
    if muon && !model.reads_text() {
        return Err(format!("--optimizer muon: benchmarked on gpt only, not {}", model.name()));
    }
    let device = device.clone().autodiff();
    let shape = bench_shape(model);
    let (mut net, mut opt) = if model.reads_text() { bench_gpt(&device, muon) } else { bench_model(model, shape, &device) };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let features = shape.iter().product::<usize>();
    let (mut times, mut losses) = (Vec::new(), Vec::new());
    crate::kernels::conv::choice::take_flops();
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
        if i + 1 == warmup {
            // Count the timed steps' convolutions only.
            crate::kernels::conv::choice::take_flops();
        }
    }
    let (equivalent, performed) = crate::kernels::conv::choice::take_flops();
    let step_s = median(times);
    let name = if muon { format!("{}-muon", model.name()) } else { model.name().into() };
    let per_step = |f: u64| f as f64 / steps.max(1) as f64;
    Ok(Throughput {
        model: name,
        shape,
        batch,
        step_s,
        images_per_sec: batch as f64 / step_s,
        steps,
        losses,
        conv_flops_equivalent: per_step(equivalent),
        conv_flops_performed: per_step(performed),
    })
}

/// This process's peak resident memory in bytes (`VmHWM`), where the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The f32 FLOP rate of fused multiply-adds that the thread pool sustains here, measured: each
/// thread runs independent chains of vector FMAs on registers (no memory traffic), in five rounds
/// over about `seconds`, the fastest kept, with the widest of AVX-512 and AVX2+FMA the CPU has.
/// `None` off x86-64 or without those instructions. The nominal peak from `/proc/cpuinfo`'s clock
/// misses the boost clock (on a Zen 4 EPYC here: 166 GFLOP/s nominal, ~227 sustained on 2 cores),
/// so shares of peak are taken against this.
pub fn fma_peak(seconds: f64) -> Option<FmaPeak> {
    use rayon::prelude::*;
    let isa = peak::isa()?;
    let threads = rayon::current_num_threads();
    // One short round wakes every core and sizes the timed ones; each thread counts its own FMAs.
    let round = |reps: u64| {
        let t0 = Instant::now();
        let flops: f64 = (0..threads).into_par_iter().map(|_| peak::fma_flops(isa, reps)).sum();
        flops / t0.elapsed().as_secs_f64()
    };
    let first = round(1 << 20);
    // Five rounds of a fifth each, the fastest kept: on a shared VM a neighbour's burst took one
    // 1-second round down to half the rate (a core's worth), which the table then took as the peak.
    let reps = (seconds / 5.0 * first / threads as f64 / peak::flops_per_rep(isa)).max(1.0) as u64;
    let flops = (0..5).map(|_| round(reps)).fold(0.0, f64::max);
    Some(FmaPeak { flops, threads, isa: isa.name().into() })
}

/// A measured FMA rate ([`fma_peak`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FmaPeak {
    /// f32 FLOP/s, all threads together (an FMA counts 2).
    pub flops: f64,
    /// Threads that ran the chains at once.
    pub threads: usize,
    /// The vector instructions used.
    pub isa: String,
}

mod peak {
    //! The register-only FMA chains [`super::fma_peak`] times.

    /// Vector instructions for the chains.
    #[derive(Debug, Clone, Copy)]
    pub enum Isa {
        Avx512,
        Avx2,
    }

    impl Isa {
        pub fn name(self) -> &'static str {
            match self {
                Isa::Avx512 => "AVX-512",
                Isa::Avx2 => "AVX2+FMA",
            }
        }
    }

    /// The widest this CPU runs.
    pub fn isa() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Some(Isa::Avx512);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Some(Isa::Avx2);
            }
        }
        None
    }

    /// FLOPs of one repetition: 24 FMAs of 16 lanes, or 12 of 8.
    pub fn flops_per_rep(isa: Isa) -> f64 {
        match isa {
            Isa::Avx512 => 24.0 * 16.0 * 2.0,
            Isa::Avx2 => 12.0 * 8.0 * 2.0,
        }
    }

    /// Runs `reps` repetitions and returns the FLOPs done.
    pub fn fma_flops(isa: Isa, reps: u64) -> f64 {
        std::hint::black_box(chains(isa, reps));
        reps as f64 * flops_per_rep(isa)
    }

    /// Runs the chains `reps` times; the sum of the first chain's lanes (always 0).
    pub fn chains(isa: Isa, reps: u64) -> f32 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` came from `isa()` (or a test's own detection) of the instructions.
        unsafe {
            match isa {
                Isa::Avx512 => x86::chains_512(reps),
                Isa::Avx2 => x86::chains_256(reps),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (isa, reps);
            unreachable!("isa() is None off x86-64")
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        //! The chains in assembly: written in Rust, the compiler rotated the 24 accumulators
        //! through registers and spilled some, timing its own moves instead of the FMAs.
        use std::arch::asm;

        /// 24 independent zmm chains (`zmm0..zmm23`, 24 FMAs per repetition): more than two
        /// pipes times the FMA latency. They start at 0 and multiply by 1.99999988 (all ones
        /// shifted right by 2): no subnormal, infinity or NaN ever enters a pipe.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn chains_512(reps: u64) -> f32 {
            let mut out = [0f32; 16];
            asm!(
                "vxorps xmm0, xmm0, xmm0",
                ".irp r, 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23",
                "vmovaps zmm\\r, zmm0",
                ".endr",
                "vpternlogd zmm24, zmm24, zmm24, 0xff",
                "vpsrld zmm24, zmm24, 2",
                "vmovaps zmm25, zmm0",
                "2:",
                ".irp r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23",
                "vfmadd213ps zmm\\r, zmm24, zmm25",
                ".endr",
                "dec {n}",
                "jnz 2b",
                "vmovups [{out}], zmm0",
                n = inout(reg) reps.max(1) => _,
                out = in(reg) out.as_mut_ptr(),
                out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _, out("zmm5") _,
                out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _, out("zmm16") _, out("zmm17") _,
                out("zmm18") _, out("zmm19") _, out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _,
                out("zmm24") _, out("zmm25") _,
                options(nostack),
            );
            out.iter().sum()
        }

        /// 12 independent ymm chains (`ymm0..ymm11`, 12 FMAs per repetition).
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn chains_256(reps: u64) -> f32 {
            let mut out = [0f32; 8];
            asm!(
                "vxorps xmm0, xmm0, xmm0",
                ".irp r, 1,2,3,4,5,6,7,8,9,10,11",
                "vmovaps ymm\\r, ymm0",
                ".endr",
                "vpcmpeqd ymm12, ymm12, ymm12",
                "vpsrld ymm12, ymm12, 2",
                "vmovaps ymm13, ymm0",
                "2:",
                ".irp r, 0,1,2,3,4,5,6,7,8,9,10,11",
                "vfmadd213ps ymm\\r, ymm12, ymm13",
                ".endr",
                "dec {n}",
                "jnz 2b",
                "vmovups [{out}], ymm0",
                n = inout(reg) reps.max(1) => _,
                out = in(reg) out.as_mut_ptr(),
                out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _, out("ymm5") _,
                out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
                out("ymm12") _, out("ymm13") _,
                options(nostack),
            );
            out.iter().sum()
        }
    }
}

#[cfg(test)]
mod tests {
    /// Both chains run where the CPU has their instructions (AVX2's on an AVX-512 CPU too) and
    /// count their FLOPs; the sums stay at exactly 0 (0 x 1.99999988 + 0), so nothing unusual
    /// entered the pipes.
    #[test]
    fn fma_chains_run_and_count() {
        #[cfg(target_arch = "x86_64")]
        {
            let mut isas = Vec::new();
            if is_x86_feature_detected!("avx512f") {
                isas.push(super::peak::Isa::Avx512);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                isas.push(super::peak::Isa::Avx2);
            }
            if isas.is_empty() {
                eprintln!("no AVX2/AVX-512 here: the FMA chains are never run");
            }
            for isa in isas {
                assert_eq!(super::peak::fma_flops(isa, 1000), 1000.0 * super::peak::flops_per_rep(isa), "{isa:?}");
                assert_eq!(super::peak::chains(isa, 1000), 0.0, "{isa:?}");
            }
            assert!(super::fma_peak(0.01).is_some_and(|p| p.flops.is_finite() && p.flops > 0.0) || super::peak::isa().is_none());
        }
    }
}
