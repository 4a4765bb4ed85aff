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
    /// core (weight-decay regimes) | remedies (SGDP, AdamP, LARS, fixed-norm, RV-SGDM,
    /// compensation) | transformer (a GPT under AdamW: decay groups and QK-norm) | schedules
    /// (decay through a cosine schedule: plain, corrected, cautious; the decay timescale) | muon
    /// (the GPT under Muon + AdamW against AdamW: F18 checked per matrix)
    #[arg(long, default_value = "core")]
    pub suite: String,
    /// embedded | fashion-mnist | PATH (transformer: embedded text or a UTF-8 file or folder)
    #[arg(long, default_value = "embedded")]
    pub data: String,
    /// Output folder (one run directory per regime, report.html); default runs/demo, runs/demo-remedies,
    /// runs/demo-transformer or runs/demo-schedules.
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
    let mut settings = match (a.suite.as_str(), a.quick) {
        ("transformer", q) => demo::transformer::settings(&a.data, q),
        ("schedules", q) => demo::schedules::settings(&a.data, q),
        ("muon", q) => demo::muon::settings(&a.data, q),
        (_, true) => DemoSettings::quick(&a.data),
        (_, false) => DemoSettings::full(&a.data),
    };
    // Opened before the regimes start in parallel (see `device::open`).
    super::open_device(&a.device)?;
    settings.device = a.device.clone();
    let regimes = match a.suite.as_str() {
        "core" => demo::core_regimes(&settings),
        "remedies" => demo::remedy_regimes(&settings),
        "transformer" => demo::transformer::regimes(&settings),
        "schedules" => demo::schedules::regimes(&settings),
        "muon" => demo::muon::regimes(&settings),
        s => return Err(fail(2, format!("--suite {s:?}: expected core, remedies, transformer, schedules or muon"))),
    };
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from(match a.suite.as_str() {
            "core" => "runs/demo",
            "remedies" => "runs/demo-remedies",
            "schedules" => "runs/demo-schedules",
            "muon" => "runs/demo-muon",
            _ => "runs/demo-transformer",
        })
    });
    println!("training {} regimes ({} at a time) into {}", regimes.len(), settings.parallel, out.display());
    let t0 = Instant::now();
    let print = |name: &str, s: &normwd::train::Summary| match s.baseline_loss {
        Some(_) => println!("  {name:<24} held-out loss {:.4} nats/token  ({:.0} windows/s)", s.test_loss, s.images_per_sec),
        None => println!("  {name:<18} test acc {:.2}%  ({:.0} img/s)", 100.0 * s.test_acc, s.images_per_sec),
    };
    let dirs = demo::train_all(&regimes, &out, settings.parallel, &print)?;
    let runs: Vec<RunData> = dirs.iter().map(|d| RunData::load(d)).collect::<Result<_, _>>()?;
    let (findings, title, about) = match a.suite.as_str() {
        "core" => (demo::findings(&runs), "normwd demo: weight decay on a normalized network", demo::CORE_ABOUT),
        "remedies" => (demo::remedy_findings(&runs), "normwd demo: remedies compared", demo::REMEDIES_ABOUT),
        "schedules" => (demo::schedules::findings(&runs), "normwd demo: weight decay through the lr schedule", demo::schedules::ABOUT),
        "muon" => (demo::muon::findings(&runs), "normwd demo: Muon's equilibrium in a transformer", demo::muon::ABOUT),
        _ => (demo::transformer::findings(&runs), "normwd demo: weight decay in a transformer", demo::transformer::ABOUT),
    };
    let path = demo::write(&out, title, about, &regimes, &runs, &findings)?;
    println!();
    let rows: Vec<Vec<String>> = runs.iter().map(report::results_row).collect();
    println!("{}", table(&report::RESULTS_HEADER, &rows));
    println!();
    for f in &findings {
        let tag = match (f.asserted, f.holds) {
            (false, _) => "[info]",
            (true, true) => "[ok]  ",
            (true, false) => "[FAIL]",
        };
        println!("{tag} {}: {}", f.claim, f.detail);
    }
    println!("\n{:.0} s; report: {}", t0.elapsed().as_secs_f64(), path.display());
    Ok(())
}
