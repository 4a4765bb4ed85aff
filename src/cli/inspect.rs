//! `normwd inspect`: measurements and predictions on checkpoints saved by PyTorch / JAX.

use super::hyper::{HyperArgs, Resolved};
use super::{fail, table, Failure};
use clap::Args;
use normwd::inspect::decay::Decayed;
use normwd::inspect::{self, onnx, Checkpoint, Hyper, Training};
use normwd::params::Role;
use normwd::report;
use std::path::PathBuf;

/// Flags of `inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Checkpoints (safetensors, torch.save's .pt/.pth/.bin/.ckpt, Flax's .msgpack), or folders of them (ordered by the step in the file name).
    #[arg(required = true)]
    pub checkpoints: Vec<PathBuf>,
    /// The top-level key holding the weights in torch.save checkpoints (default: the first of state_dict, model_state_dict, model, module, net that the file has, else the whole file).
    #[arg(long)]
    pub key: Option<String>,
    /// ONNX export of the model, to know which weights feed a normalization layer.
    #[arg(long)]
    pub graph: Option<PathBuf>,
    /// Steps of the checkpoints, comma-separated, when the file names hold none.
    #[arg(long)]
    pub steps: Option<String>,
    /// The training's optimizer and hyperparameters, for predictions: read from the optimizer
    /// state the checkpoints hold (a training checkpoint's `optimizer`, a Trainer folder's
    /// `optimizer.pt`), a flag replacing the saved value; without a saved state, unset ones are
    /// SGD, lr 0.1, momentum 0.9, weight decay 5e-4, said on stderr.
    #[command(flatten)]
    pub hyper: HyperArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Folder for report.html (default: inspect-report next to the first checkpoint).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs `normwd inspect`.
pub fn run(a: InspectArgs) -> Result<(), Failure> {
    let steps: Option<Vec<u64>> = match &a.steps {
        Some(s) => Some(
            s.split(',')
                .map(|x| x.trim().parse().map_err(|_| fail(2, format!("--steps {s:?}: expected comma-separated integers"))))
                .collect::<Result<_, _>>()?,
        ),
        None => None,
    };
    let series = inspect::load_series(&a.checkpoints, steps.as_deref(), a.key.as_deref())?;
    let si = match &a.graph {
        Some(g) => graph_weights(g, &series)?,
        None => None,
    };
    let (trainings, settings) = trainings(&a.hyper, &series)?;
    let reports = inspect::measure(&series, si.as_deref(), &trainings);
    let hypers: Vec<Hyper> = settings.iter().map(|s| s.1.clone()).collect();
    let run_flags = inspect::run_flags(&hypers);
    if a.json {
        let settings: Vec<_> = settings.iter().map(|(source, h)| serde_json::json!({"source": source, "hyper": h})).collect();
        let v = serde_json::json!({"checkpoints": series.iter().map(|c| serde_json::json!({"file": c.file, "step": c.step, "key": c.key})).collect::<Vec<_>>(), "settings": settings, "tensors": reports, "flags": run_flags});
        println!("{}", serde_json::to_string_pretty(&v).expect("reports serialize"));
    } else {
        print_table(&reports, &series, si.is_some(), &run_flags);
    }
    let path = write_html(a.out.clone(), &reports, &series, &settings, run_flags)?;
    if !a.json {
        println!("report: {}", path.display());
    }
    Ok(())
}

/// The checkpoint names of the weights that ONNX graph `g` shows feeding a normalization
/// (`--graph`), checked against the checkpoints' names.
fn graph_weights(g: &std::path::Path, series: &[inspect::Checkpoint]) -> Result<Option<Vec<String>>, Failure> {
    let bytes = std::fs::read(g).map_err(|e| fail(2, format!("{}: cannot read ({e})", g.display())))?;
    let graph = onnx::parse(&bytes).map_err(|e| fail(2, format!("{}: not a readable ONNX model ({e})", g.display())))?;
    let names: Vec<&str> = series[0].tensors.keys().map(|k| k.as_str()).collect();
    // A graph whose norms were folded away lacks the fact, which is not "no": refuse it.
    let shapes: Vec<(String, Vec<usize>)> = series[0].tensors.iter().map(|(n, (s, _))| (n.clone(), s.clone())).collect();
    let has_norms = inspect::guess_roles(&shapes).iter().any(|(r, _)| *r == Role::NormScale);
    let in_checkpoint = |w: &str| names.iter().any(|n| *n == w || n.ends_with(&format!(".{w}")));
    if let Some(why) = onnx::folded_norms(&graph, has_norms, in_checkpoint) {
        return Err(fail(2, format!("--graph {}: {why}", g.display())));
    }
    let before_norm = onnx::weights_before_norm(&graph);
    let (found, missing) = inspect::graph_names_in(&names, &before_norm);
    let some = |v: &[String]| v.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if found.is_empty() && !missing.is_empty() {
        let theirs: Vec<String> = names.iter().take(3).map(|n| n.to_string()).collect();
        return Err(fail(
            2,
            format!(
                "--graph {}: none of its {} weights before a normalization ({}, ...) is in the checkpoints (whose names run {}, ...): expected the same model's export",
                g.display(),
                missing.len(),
                some(&missing),
                theirs.join(", ")
            ),
        ));
    }
    if !missing.is_empty() {
        eprintln!(
            "warning: --graph {}: {} weights before a normalization are in no checkpoint ({}); the scale-invariant column leaves them out",
            g.display(),
            missing.len(),
            some(&missing)
        );
    }
    Ok(Some(found))
}

/// The table of `reports` on stdout, with the checkpoints' steps and the flags.
fn print_table(reports: &[inspect::TensorReport], series: &[inspect::Checkpoint], graph: bool, run_flags: &[String]) {
    let steps: Vec<u64> = series.iter().map(|c| c.step).collect();
    let rows: Vec<Vec<String>> = reports
        .iter()
        .filter(|r| r.role != Role::Buffer)
        .map(|r| {
            vec![
                r.name.clone(),
                r.role.name().to_string(),
                if r.scale_invariant { format!("yes ({})", r.invariance_source) } else { format!("no ({})", r.invariance_source) },
                format!("{:.4} -> {:.4}", r.norms[0], r.norms.last().unwrap()),
                format!("{:.2e}", r.last_gap_angle),
                r.pred_last_gap_angle.map(|p| format!("{p:.2e}")).unwrap_or("-".into()),
                match r.at_equilibrium {
                    Some(true) => "yes".into(),
                    Some(false) => "no".into(),
                    None => "-".into(),
                },
                match (&r.decay, r.optimizer_group) {
                    (Some(d), Some(g)) => format!("{} (group {g})", if d.decayed == Decayed::Yes { "yes" } else { "no" }),
                    (Some(d), None) => match d.decayed {
                        Decayed::LooksDecayed => "looks so".into(),
                        Decayed::NoSign => "no sign".into(),
                        _ => "cannot tell".into(),
                    },
                    (None, _) => "-".into(),
                },
                // lr/||w||^2 is the effective lr of a scale-invariant weight only: for a bias
                // or a norm scale it would be a number without a meaning.
                Some(*r.eff_lr.last().unwrap())
                    .filter(|v| v.is_finite() && r.scale_invariant)
                    .map(|v| format!("{v:.2e}"))
                    .unwrap_or("-".into()),
            ]
        })
        .collect();
    println!("{} checkpoints, steps {:?}", series.len(), steps);
    let mut keys: Vec<&str> = series.iter().filter_map(|c| c.key.as_deref()).collect();
    keys.sort_unstable();
    keys.dedup();
    if !keys.is_empty() {
        println!("weights read under the key {} of the torch.save files (--key to choose another)", keys.join(", "));
    }
    // The verdict compares like with like: the angle over the last gap against the
    // equilibrium angle for a gap of that length (F17), not an angle per step.
    let gap = steps[steps.len() - 1] - steps[steps.len() - 2];
    let (measured, predicted) = (format!("angle over last {gap} steps"), format!("predicted for {gap} steps"));
    let header = [
        "tensor",
        "role",
        "scale-invariant",
        "norm first -> last",
        measured.as_str(),
        predicted.as_str(),
        "at equilibrium",
        "decayed",
        "eff. lr (last)",
    ];
    println!("{}", table(&header, &rows));
    if !graph {
        println!("note: without --graph the scale-invariance column is a guess from names and shapes");
    }
    // A flag that many tensors share (every gamma of a run that decays all) is one line.
    let mut shared: Vec<(&str, Vec<&str>)> = Vec::new();
    for r in reports {
        for f in &r.flags {
            match shared.iter_mut().find(|(t, _)| *t == f.as_str()) {
                Some((_, names)) => names.push(&r.name),
                None => shared.push((f, vec![&r.name])),
            }
        }
    }
    for (f, names) in &shared {
        let who = match names.len() {
            1..=3 => names.join(", "),
            n => format!("{} and {} more", names[..2].join(", "), n - 2),
        };
        println!("FLAG {who}: {f}");
    }
    for f in run_flags {
        println!("FLAG run: {f}");
    }
}

/// Writes the HTML report of `reports` (into `--out`, else beside the first checkpoint).
fn write_html(
    out: Option<PathBuf>,
    reports: &[inspect::TensorReport],
    series: &[inspect::Checkpoint],
    settings: &[(String, Hyper)],
    run_flags: Vec<String>,
) -> Result<PathBuf, Failure> {
    let steps: Vec<u64> = series.iter().map(|c| c.step).collect();
    let out = out.unwrap_or_else(|| {
        PathBuf::from(&series[0].file).parent().map(|p| p.join("inspect-report")).unwrap_or_else(|| PathBuf::from("inspect-report"))
    });
    let described: Vec<String> = settings.iter().map(|(source, h)| format!("{}: {}", report::html_escape(source), describe(h))).collect();
    let mut intro = format!("<p>{} checkpoints at steps {:?}; optimizer settings: {}.</p>", series.len(), steps, described.join("; "));
    let flags: Vec<String> =
        reports.iter().flat_map(|r| r.flags.iter().map(move |f| format!("{}: {f}", r.name))).chain(run_flags).collect();
    if !flags.is_empty() {
        intro.push_str(&format!(
            "<h2>Flags</h2><ul>{}</ul>",
            flags.iter().map(|f| format!("<li>{}</li>", report::html_escape(f))).collect::<String>()
        ));
    }
    Ok(report::write_report(&out, "normwd inspect", &intro, &[], inspect::charts::figures(reports, &steps))?)
}

/// A training's settings in one line.
fn describe(h: &Hyper) -> String {
    let mut s = format!("{} lr {} weight_decay {}", h.optimizer, h.lr, h.weight_decay);
    if h.optimizer == normwd::optim::Rule::Sgd {
        s.push_str(&format!(" momentum {}", h.momentum));
    } else {
        s.push_str(&format!(" betas {},{}", h.betas.0, h.betas.1));
    }
    s.push_str(if h.coupled { " (L2 in the gradient)" } else { " (decoupled)" });
    s
}

/// Sets of settings, each with where it came from (`flags`, or a saved optimizer's group).
type Settings = Vec<(String, Hyper)>;

/// Each tensor's settings and, for the report, where each set came from: the optimizer state
/// of the last checkpoint with the flags laid over it, or the flags alone (unset ones assumed,
/// said on stderr).
fn trainings(flags: &HyperArgs, series: &[Checkpoint]) -> Result<(Vec<Training>, Settings), Failure> {
    match &series[series.len() - 1].optimizer {
        Some(Ok(opt)) => {
            let hypers = opt.groups.iter().map(|g| flags.over(&g.hyper)).collect::<Result<Vec<_>, _>>()?;
            if opt.groups.iter().any(|g| !g.decay_mode_known) && flags.optimizer.is_none() && flags.decay.is_none() {
                eprintln!("note: {}: the saved state does not say Adam or AdamW (PyTorch before 2.6 saved both alike): predictions assume adamw; pass --optimizer adam if it was Adam", opt.source);
            }
            let ts = Training::from_optimizer(series, opt, &hypers, flags.lr.is_some());
            let settings: Vec<(String, Hyper)> =
                hypers.iter().enumerate().map(|(g, h)| (format!("{} group {g}", opt.source), h.clone())).collect();
            for (g, (saved, used)) in opt.groups.iter().zip(&hypers).enumerate() {
                let n = ts.iter().filter(|t| t.group.is_some_and(|(x, _)| x == g)).count();
                let over =
                    if saved.hyper != *used { format!(" (the flags replace the saved {})", describe(&saved.hyper)) } else { String::new() };
                eprintln!("settings of group {g} ({n} tensors), read from {}: {}{over}", opt.source, describe(used));
            }
            Ok((ts, settings))
        }
        other => {
            if let Some(Err(why)) = other {
                eprintln!("note: the saved optimizer state is not used: {why}");
            }
            let Resolved { hyper, assumed } = flags.resolve(Some((0.1, 5e-4)))?;
            if !assumed.is_empty() {
                eprintln!(
                    "note: predictions assume {} (the training's settings were not given, and the checkpoints hold no optimizer state)",
                    assumed.join(", ")
                );
            }
            Ok((Training::uniform(series, &hyper), vec![("flags".into(), hyper)]))
        }
    }
}
