//! `normwd sweep`: grids of runs, resumable and shardable, and their report.

use super::{fail, table, Failure};
use clap::Args;
use normwd::report::{self, sweep as sreport};
use normwd::sweep::{self, Outcome};
use std::path::{Path, PathBuf};

/// Flags of `sweep`.
#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Sweep file: [base] settings, [grid] lists, optional [[points]].
    #[arg(long, required_unless_present = "merge")]
    pub config: Option<PathBuf>,
    /// Output folder (one run directory per point, results.csv, report.html).
    #[arg(long, required_unless_present = "merge")]
    pub out: Option<PathBuf>,
    /// Points trained at once (threads of this process sharing the CPU).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Run only slice i of n (interleaved), e.g. --shard $SLURM_ARRAY_TASK_ID/$N.
    #[arg(long)]
    pub shard: Option<String>,
    /// Gather the results of a sweep folder (written by any number of shards) and report.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "out", "shard"])]
    pub merge: Option<PathBuf>,
    /// Compute device of every point, overriding the file's `device` key: cpu, wgpu or auto.
    #[arg(long)]
    pub device: Option<String>,
}

fn load_spec(path: &Path) -> Result<(normwd::sweep::Spec, String), Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| fail(2, format!("{}: cannot read ({e})", path.display())))?;
    let spec = sweep::parse(&path.display().to_string(), &text)?;
    Ok((spec, text))
}

/// Collects results, writes results.csv and the report, prints the table and spreads.
pub fn finish(spec: &sweep::Spec, out: &Path) -> Result<(), Failure> {
    let rows = sweep::collect(spec, out);
    sweep::write_results(spec, &rows, out)?;
    let mut figs = Vec::new();
    let mut statements = Vec::new();
    let mut spreads = Vec::new();
    for s in sreport::slices(spec, &rows) {
        let (f, sp, st) = sreport::slice_figures(&s);
        figs.extend(f);
        statements.push(st);
        spreads.extend(sp.map(|sp| (if s.label.is_empty() { "this sweep".to_string() } else { s.label.clone() }, sp)));
    }
    statements.extend(sreport::comparison(&spreads));
    let path = report::write_report(out, "normwd sweep", &sreport::intro(spec, &statements), &[], figs)?;
    let mut header: Vec<&str> = vec!["point"];
    header.extend(["status", "test acc", "test loss", "eff. lr (end)"]);
    let t: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let (st, a, l) = match &r.outcome {
                Outcome::Done(s) => ("done".to_string(), format!("{:.2}%", 100.0 * s.test_acc), format!("{:.4}", s.test_loss)),
                Outcome::Diverged(_) => ("DIVERGED".into(), "-".into(), "-".into()),
                Outcome::Pending => ("pending".into(), "-".into(), "-".into()),
            };
            vec![r.point.name.clone(), st, a, l, r.eff_lr_end.map(|v| format!("{v:.3e}")).unwrap_or("-".into())]
        })
        .collect();
    println!("{}", table(&header, &t));
    for s in &statements {
        println!("{s}");
    }
    println!("results: {}\nreport: {}", out.join(sweep::RESULTS).display(), path.display());
    Ok(())
}

/// Runs `normwd sweep`.
pub fn run(a: SweepArgs) -> Result<(), Failure> {
    if let Some(dir) = &a.merge {
        let (spec, _) = load_spec(&dir.join(sweep::SPEC))?;
        return finish(&spec, dir);
    }
    let (config, out) = (a.config.expect("clap requires --config"), a.out.expect("clap requires --out"));
    let (mut spec, text) = load_spec(&config)?;
    if let Some(d) = &a.device {
        for p in &mut spec.points {
            p.config.device = d.clone();
        }
    }
    // Every device the points use opens before the first run starts (see `device::open`).
    let mut devices: Vec<&str> = spec.points.iter().map(|p| p.config.device.as_str()).collect();
    devices.sort_unstable();
    devices.dedup();
    for d in devices {
        super::open_device(d)?;
    }
    if a.jobs == 0 {
        return Err(fail(2, "--jobs 0: expected an integer >= 1"));
    }
    let shard = match &a.shard {
        Some(s) => sweep::parse_shard(s)?,
        None => (0, 1),
    };
    let mine = sweep::shard(&spec.points, shard.0, shard.1).len();
    println!("{} points ({} in this shard), {} at a time, into {}", spec.points.len(), mine, a.jobs, out.display());
    let progress = |p: &sweep::Point, o: &Outcome| match o {
        Outcome::Done(s) => println!("  {:<40} test acc {:.2}%", p.name, 100.0 * s.test_acc),
        Outcome::Diverged(m) => println!("  {:<40} DIVERGED: {m}", p.name),
        Outcome::Pending => {}
    };
    let warn = |p: &sweep::Point, m: &str| eprintln!("  {}: warning: {m}", p.name);
    sweep::run(&spec, &text, &out, a.jobs, shard, &progress, &warn)?;
    finish(&spec, &out)
}
