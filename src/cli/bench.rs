//! `normwd bench`: ratios measured in one process.

use super::{choice, fail, table, Failure};
use clap::Args;
use normwd::bench;
use normwd::model::ModelKind;

/// Flags of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Measure the cost of per-layer probes (ratio of step times with and without).
    #[arg(long)]
    pub probe: bool,
    /// Measure training throughput on synthetic batches (what bench/compare.sh compares with PyTorch).
    #[arg(long)]
    pub train: bool,
    /// Measure the f32 FMA rate the thread pool sustains on registers alone (the peak that
    /// bench/compare.sh's shares are taken against).
    #[arg(long)]
    pub peak: bool,
    /// Models to time (comma-separated).
    #[arg(long, default_value = "mlp,convnet", value_delimiter = ',', value_parser = choice::<ModelKind>())]
    pub models: Vec<ModelKind>,
    /// Timed steps per variant.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed steps first (with --train).
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Batch size (with --train).
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// One JSON object per model on stdout (with --train), for scripts.
    #[arg(long)]
    pub json: bool,
    /// Compute device (with --train): cpu or wgpu.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// gpt's optimizer (with --train): adamw, or muon (Muon on the hidden matrices beside AdamW).
    #[arg(long, default_value = "adamw", value_parser = ["adamw", "muon"])]
    pub optimizer: String,
}

/// Runs `normwd bench`.
pub fn run(a: BenchArgs) -> Result<(), Failure> {
    if !a.probe && !a.train && !a.peak {
        return Err(fail(2, "nothing to measure: pass --probe, --train or --peak (bench/compare.sh sets --train beside PyTorch)"));
    }
    if a.steps == 0 {
        return Err(fail(2, "--steps 0: expected an integer >= 1"));
    }
    if a.batch_size == 0 {
        return Err(fail(2, "--batch-size 0: expected an integer >= 1"));
    }
    if a.peak {
        let p = bench::fma_peak(1.0)
            .ok_or_else(|| fail(1, "--peak: this CPU has neither AVX-512 nor AVX2 with FMA, whose rate it measures"))?;
        if a.json {
            println!("{}", serde_json::to_value(&p).expect("serializes"));
        } else {
            println!("sustained f32 FMA rate: {:.0} GFLOP/s ({}, {} threads, registers only)", p.flops / 1e9, p.isa, p.threads);
        }
        if !a.train && !a.probe {
            return Ok(());
        }
    }
    let models = a.models.clone();
    if a.train {
        return train(&a, &models);
    }
    if let Some(m) = models.iter().find(|m| m.reads_text()) {
        return Err(fail(
            2,
            format!("--models {m}: the probe benchmark times the image models on the embedded images (use --train for gpt)"),
        ));
    }
    let mut rows = Vec::new();
    for m in models {
        let r = bench::probe_overhead(m, a.steps);
        rows.push(vec![
            m.name().to_string(),
            format!("{:.2}", 1e3 * r.plain_s),
            format!("{:.2}", 1e3 * r.every_step_s),
            format!("{:.3}", r.every_step_s / r.plain_s),
            format!("{:+.1}%", 100.0 * r.overhead()),
            format!("{:+.1}%", 100.0 * r.overhead() / 3.0),
        ]);
    }
    println!("probe overhead (+BN, batch 128, embedded data; medians of {} steps each, interleaved):", a.steps);
    let header = [
        "model",
        "step ms, no probes",
        "step ms, probe every step",
        "ratio",
        "overhead, every step",
        "overhead, every 3rd step (densest default)",
    ];
    println!("{}", table(&header, &rows));
    println!("the default interval probes ~200 times per run and at most every 3rd step");
    Ok(())
}

fn train(a: &BenchArgs, models: &[ModelKind]) -> Result<(), Failure> {
    let mut rows = Vec::new();
    let device = super::open_device(&a.device)?;
    for &m in models {
        if a.optimizer == "muon" && !m.reads_text() {
            return Err(fail(2, format!("--optimizer muon: benchmarked on gpt only (--models gpt), not {}", m.name())));
        }
        let t = bench::train_throughput(m, &device, a.batch_size, a.warmup, a.steps, a.optimizer == "muon").map_err(|e| fail(1, e))?;
        let rss = bench::peak_rss_bytes();
        if a.json {
            let mut v = serde_json::to_value(&t).expect("serializes");
            v["peak_rss_mb"] = rss.map(|b| b as f64 / 1048576.0).into();
            v["threads"] = rayon::current_num_threads().into();
            v["device"] = a.device.clone().into();
            println!("{v}");
        }
        let [c, h, w] = t.shape;
        rows.push(vec![
            t.model.clone(),
            format!("{c}x{h}x{w}"),
            format!("{:.2}", 1e3 * t.step_s),
            format!("{:.0}", t.images_per_sec * if m.reads_text() { w as f64 } else { 1.0 }),
            rss.map(|b| format!("{:.0}", b as f64 / 1048576.0)).unwrap_or_else(|| "-".into()),
        ]);
    }
    if !a.json {
        println!(
            "training throughput (image models +BN and SGD, gpt AdamW; batch {}, medians of {} steps after {} warm-up):",
            a.batch_size, a.steps, a.warmup
        );
        println!("{}", table(&["model", "input", "step ms", "images/s (gpt: tokens/s)", "peak RSS MB (process, so far)"], &rows));
    }
    Ok(())
}
