//! `normwd report`: the demo's charts for any runs on disk.

use super::{fail, table, Failure};
use clap::Args;
use normwd::report::{self, RunData};
use std::path::PathBuf;

/// Flags of `report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Run directories, or folders holding run directories.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Where to write report.html (default: the first folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Expands folders of runs into run directories (a run has a config.toml).
pub fn run_dirs(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, Failure> {
    let mut out = Vec::new();
    for d in dirs {
        if d.join("config.toml").is_file() {
            out.push(d.clone());
            continue;
        }
        let entries = std::fs::read_dir(d).map_err(|e| fail(2, format!("{}: cannot read ({e})", d.display())))?;
        let mut subs: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.join("config.toml").is_file()).collect();
        subs.sort();
        if subs.is_empty() {
            return Err(fail(2, format!("{}: not a run directory (no config.toml) and holds none", d.display())));
        }
        out.extend(subs);
    }
    Ok(out)
}

/// Runs `normwd report`.
pub fn run(a: ReportArgs) -> Result<(), Failure> {
    // A sweep folder gets the sweep report.
    if a.dirs.len() == 1 && a.dirs[0].join(normwd::sweep::SPEC).is_file() {
        let spec = a.dirs[0].join(normwd::sweep::SPEC);
        let text = std::fs::read_to_string(&spec).map_err(|e| fail(2, format!("{}: cannot read ({e})", spec.display())))?;
        let spec = normwd::sweep::parse(&a.dirs[0].join(normwd::sweep::SPEC).display().to_string(), &text)?;
        return super::sweep::finish(&spec, &a.dirs[0]);
    }
    let dirs = run_dirs(&a.dirs)?;
    let runs: Vec<RunData> = dirs.iter().map(|d| RunData::load(d)).collect::<Result<_, _>>()?;
    let out = a.out.unwrap_or_else(|| a.dirs[0].clone());
    let path = report::write_report(&out, "normwd report", "", &runs, Vec::new())?;
    let rows: Vec<Vec<String>> = runs.iter().map(report::results_row).collect();
    println!("{}", table(&report::RESULTS_HEADER, &rows));
    println!("report: {}", path.display());
    Ok(())
}
