//! `normwd demo`: trains the regimes of the study and writes the report.

use super::{fail, table, Failure};
use clap::Args;
use normwd::demo::{self, DemoSettings};
use normwd::report::{self, RunData};
use std::path::PathBuf;
use std::time::Instant;

/// Flags of `demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// core (weight-decay regimes) | remedies (SGDP, AdamP, LARS, fixed-norm, RV-SGDM, compensation)
    #[arg(long, default_value = "core")]
    pub suite: String,
    /// embedded | fashion-mnist | PATH
    #[arg(long, default_value = "embedded")]
    pub data: String,
    /// Output folder (one run directory per regime, report.html); default runs/demo or runs/demo-remedies.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A seconds-long version (tiny subset, one epoch) to check that everything works.
    #[arg(long)]
    pub quick: bool,
    /// Compute device of every regime: cpu, wgpu (a build with `--features wgpu`) or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Runs `normwd demo`.
pub fn run(a: DemoArgs) -> Result<(), Failure> {
    let mut settings = if a.quick { DemoSettings::quick(&a.data) } else { DemoSettings::full(&a.data) };
    // Opened before the regimes start in parallel (see `device::open`).
    super::open_device(&a.device)?;
    settings.device = a.device.clone();
    let regimes = match a.suite.as_str() {
        "core" => demo::core_regimes(&settings),
        "remedies" => demo::remedy_regimes(&settings),
        s => return Err(fail(2, format!("--suite {s:?}: expected core or remedies"))),
    };
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from(if a.suite == "core" { "runs/demo" } else { "runs/demo-remedies" }));
    println!("training {} regimes ({} at a time) into {}", regimes.len(), settings.parallel, out.display());
    let t0 = Instant::now();
    let print = |name: &str, s: &normwd::train::Summary| {
        println!("  {name:<18} test acc {:.2}%  ({:.0} img/s)", 100.0 * s.test_acc, s.images_per_sec)
    };
    let dirs = demo::train_all(&regimes, &out, settings.parallel, &print)?;
    let runs: Vec<RunData> = dirs.iter().map(|d| RunData::load(d)).collect::<Result<_, _>>()?;
    let (findings, title, about) = if a.suite == "core" {
        (demo::findings(&runs), "normwd demo: weight decay on a normalized network", demo::CORE_ABOUT)
    } else {
        (demo::remedy_findings(&runs), "normwd demo: remedies compared", demo::REMEDIES_ABOUT)
    };
    let path = demo::write(&out, title, about, &regimes, &runs, &findings)?;
    println!();
    let rows: Vec<Vec<String>> = runs.iter().map(report::results_row).collect();
    println!("{}", table(&report::RESULTS_HEADER, &rows));
    println!();
    for f in &findings {
        println!("{} {}: {}", if f.holds { "[ok]  " } else { "[FAIL]" }, f.claim, f.detail);
    }
    println!("\n{:.0} s; report: {}", t0.elapsed().as_secs_f64(), path.display());
    Ok(())
}
