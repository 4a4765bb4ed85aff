//! `normwd bench`: ratios measured in one process.

use super::{fail, table, Failure};
use clap::Args;
use normwd::bench;
use normwd::model::ModelKind;

/// Flags of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Measure the cost of per-layer probes (ratio of step times with and without).
    #[arg(long)]
    pub probe: bool,
    /// Models to time (comma-separated).
    #[arg(long, default_value = "mlp,convnet")]
    pub models: String,
    /// Timed steps per variant.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
}

/// Runs `normwd bench`.
pub fn run(a: BenchArgs) -> Result<(), Failure> {
    if !a.probe {
        return Err(fail(2, "nothing to measure: pass --probe (the PyTorch comparison lives in bench/compare.sh)"));
    }
    if a.steps == 0 {
        return Err(fail(2, "--steps 0: expected an integer >= 1"));
    }
    let models: Vec<ModelKind> = a
        .models
        .split(',')
        .map(|m| ModelKind::parse(m.trim()).ok_or_else(|| fail(2, format!("--models {m:?}: expected mlp, convnet or resnet20"))))
        .collect::<Result<_, _>>()?;
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
