//! `normwd inspect`: measurements and predictions on checkpoints saved by PyTorch / JAX.

use super::hyper::{HyperArgs, Resolved};
use super::{fail, table, Failure};
use clap::Args;
use normwd::inspect::{self, onnx};
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
    /// The training's optimizer and hyperparameters, for predictions (unset: SGD, lr 0.1,
    /// momentum 0.9, weight decay 5e-4, said on stderr).
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
    let Resolved { hyper: h, assumed } = a.hyper.resolve(Some((0.1, 5e-4)))?;
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
        Some(g) => {
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
            Some(found)
        }
        None => None,
    };
    if !assumed.is_empty() {
        eprintln!("note: predictions assume {} (the training's settings were not given)", assumed.join(", "));
    }
    let reports = inspect::measure(&series, si.as_deref(), &h);
    let run_flags = inspect::run_flags(&h);
    let steps: Vec<u64> = series.iter().map(|c| c.step).collect();
    if a.json {
        let v = serde_json::json!({"checkpoints": series.iter().map(|c| serde_json::json!({"file": c.file, "step": c.step, "key": c.key})).collect::<Vec<_>>(), "tensors": reports, "flags": run_flags});
        println!("{}", serde_json::to_string_pretty(&v).expect("reports serialize"));
    } else {
        let rows: Vec<Vec<String>> = reports
            .iter()
            .filter(|r| r.role != Role::Buffer)
            .map(|r| {
                vec![
                    r.name.clone(),
                    format!("{:?}", r.role).to_lowercase(),
                    if r.scale_invariant { format!("yes ({})", r.invariance_source) } else { format!("no ({})", r.invariance_source) },
                    format!("{:.4} -> {:.4}", r.norms[0], r.norms.last().unwrap()),
                    format!("{:.2e}", r.last_gap_angle),
                    r.pred_last_gap_angle.map(|p| format!("{p:.2e}")).unwrap_or("-".into()),
                    match r.at_equilibrium {
                        Some(true) => "yes".into(),
                        Some(false) => "no".into(),
                        None => "-".into(),
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
        // equilibrium angle for a gap of that length (F13), not an angle per step.
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
            "eff. lr (last)",
        ];
        println!("{}", table(&header, &rows));
        if si.is_none() {
            println!("note: without --graph the scale-invariance column is a guess from names and shapes");
        }
        for r in &reports {
            for f in &r.flags {
                println!("FLAG {}: {f}", r.name);
            }
        }
        for f in &run_flags {
            println!("FLAG run: {f}");
        }
    }
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from(&series[0].file).parent().map(|p| p.join("inspect-report")).unwrap_or_else(|| PathBuf::from("inspect-report"))
    });
    let mut intro = format!(
        "<p>{} checkpoints at steps {:?}; optimizer settings given: {} lr={} momentum={} weight decay={} ({}).</p>",
        series.len(),
        steps,
        h.optimizer,
        h.lr,
        h.momentum,
        h.weight_decay,
        if h.coupled { "L2 in the gradient" } else { "decoupled" }
    );
    let flags: Vec<String> =
        reports.iter().flat_map(|r| r.flags.iter().map(move |f| format!("{}: {f}", r.name))).chain(run_flags).collect();
    if !flags.is_empty() {
        intro.push_str(&format!(
            "<h2>Flags</h2><ul>{}</ul>",
            flags.iter().map(|f| format!("<li>{}</li>", report::html_escape(f))).collect::<String>()
        ));
    }
    let path = report::write_report(&out, "normwd inspect", &intro, &[], inspect::charts::figures(&reports, &steps))?;
    if !a.json {
        println!("report: {}", path.display());
    }
    Ok(())
}
