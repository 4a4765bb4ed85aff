//! Reports from run directories: charts of weight norm, effective learning rate and angular
//! update per layer (with the theory's prediction dashed), a results table, and a reading of
//! each chart computed from the numbers. Self-contained HTML with inline SVG.

pub mod svg;
pub mod sweep;

pub use crate::run::{window_mean, ReportError, RunData};

use crate::store::{write_atomic, StoreError};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use svg::{LineChart, Series, COLORS};

/// A chart with the sentences that read it.
pub struct Figure {
    /// File stem for `plots/NAME.svg`.
    pub name: String,
    /// The SVG.
    pub svg: String,
    /// Two sentences computed from the data.
    pub reading: String,
}

/// One solid series per run, labelled with the run's name.
fn per_run(runs: &[RunData], points: impl Fn(&RunData) -> Vec<(f64, f64)>) -> Vec<Series> {
    runs.iter().enumerate().map(|(i, r)| Series { label: r.name.clone(), points: points(r), color: color(i), dashed: false }).collect()
}

fn color(i: usize) -> String {
    COLORS[i % COLORS.len()].to_string()
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// Charts of norm, effective lr and angle for every scale-invariant layer, and of gamma.
pub fn figures(runs: &[RunData]) -> Vec<Figure> {
    let mut out = Vec::new();
    let layers: Vec<String> = runs.first().map(|r| r.invariant_paths()).unwrap_or_default();
    for layer in &layers {
        let short = layer.trim_end_matches(".weight").trim_end_matches(".weight_v").to_string();
        // Norm.
        let series: Vec<Series> = per_run(runs, |r| r.series(layer).iter().map(|p| (p.step as f64, p.norm)).collect());
        let ends: Vec<(String, f64, f64)> = runs
            .iter()
            .filter_map(|r| {
                let s = r.series(layer);
                Some((r.name.clone(), s.first()?.norm, s.last()?.norm))
            })
            .collect();
        let grow = ends.iter().filter(|e| e.2 > e.1).map(|e| e.0.clone()).collect::<Vec<_>>();
        let shrink = ends.iter().filter(|e| e.2 <= e.1).map(|e| format!("{} ({:.2} to {:.2})", e.0, e.1, e.2)).collect::<Vec<_>>();
        let reading = format!(
            "The norm of {layer} grows in {} and shrinks in {}. Without weight decay the norm can only grow (F4); with decay it settles where shrinking balances growth.",
            if grow.is_empty() { "no run".into() } else { grow.join(", ") },
            if shrink.is_empty() { "no run".into() } else { shrink.join(", ") }
        );
        out.push(Figure {
            name: format!("{short}-norm"),
            svg: LineChart {
                title: format!("Weight norm of {layer}"),
                x_label: "step (updates)".into(),
                y_label: "||w|| (L2 norm)".into(),
                series,
                ..Default::default()
            }
            .to_svg(),
            reading,
        });
        // Effective lr.
        let series: Vec<Series> = per_run(runs, |r| r.series(layer).iter().map(|p| (p.step as f64, p.eff_lr)).collect());
        let ends: Vec<(String, f64)> =
            runs.iter().filter_map(|r| Some((r.name.clone(), window_mean(&r.series(layer), 0.75, 1.0, |p| Some(p.eff_lr))?))).collect();
        let (hi, lo) = (ends.iter().max_by(|a, b| a.1.total_cmp(&b.1)), ends.iter().min_by(|a, b| a.1.total_cmp(&b.1)));
        let reading = match (hi, lo) {
            (Some(h), Some(l)) => format!("Over the last quarter of training the effective learning rate of {layer} is highest in {} ({:.3e}) and lowest in {} ({:.3e}), a factor {:.1}. Shrinking the norm raises it: that, not regularization, is what weight decay does to this layer.", h.0, h.1, l.0, l.1, h.1 / l.1),
            _ => "No probe data.".into(),
        };
        out.push(Figure {
            name: format!("{short}-efflr"),
            svg: LineChart {
                title: format!("Effective learning rate of {layer}"),
                x_label: "step (updates)".into(),
                y_label: "lr/||w||^2 (SGD), lr/||w|| (Adam)".into(),
                log_y: true,
                series,
                ..Default::default()
            }
            .to_svg(),
            reading,
        });
        // Angle, with the prediction dashed.
        let mut series = Vec::new();
        let mut sentences = Vec::new();
        for (i, r) in runs.iter().enumerate() {
            let s = r.series(layer);
            series.push(Series {
                label: r.name.clone(),
                points: s.iter().map(|p| (p.step as f64, p.angle)).collect(),
                color: color(i),
                dashed: false,
            });
            let pred: Vec<(f64, f64)> = s.iter().filter_map(|p| Some((p.step as f64, p.pred_angle?))).collect();
            if !pred.is_empty() {
                series.push(Series { label: format!("{} predicted", r.name), points: pred, color: color(i), dashed: true });
                let (from, to) = r.equilibrium_window();
                if let (Some(m), Some(p)) = (window_mean(&s, from, to, |p| Some(p.angle)), window_mean(&s, from, to, |p| p.pred_angle)) {
                    sentences.push(format!("{} {:.4} rad measured vs {:.4} predicted ({:+.0}%)", r.name, m, p, 100.0 * (m / p - 1.0)));
                }
            }
        }
        let reading = if sentences.is_empty() {
            format!("No run has a predicted equilibrium for {layer} (no decay, or Adam with L2). The angular update is set by the gradient and the norm alone.")
        } else {
            format!("Mean angular update per step of {layer} in the second half of the constant-lr phase: {}. Dashed lines are the equilibrium predicted by THEORY.md (F7 for SGD with momentum, F8 for AdamW).", sentences.join("; "))
        };
        out.push(Figure {
            name: format!("{short}-angle"),
            svg: LineChart {
                title: format!("Angular update per step of {layer}"),
                x_label: "step (updates)".into(),
                y_label: "angle(w_t, w_t+1) (rad)".into(),
                log_y: true,
                series,
                ..Default::default()
            }
            .to_svg(),
            reading,
        });
    }
    // Norm-layer scales.
    let gammas: Vec<String> = runs.first().map(|r| r.gamma_paths()).unwrap_or_default();
    if !gammas.is_empty() {
        let mean_gamma = |r: &RunData| -> Vec<(f64, f64)> {
            let mut by_step: BTreeMap<u64, (f64, usize)> = BTreeMap::new();
            for p in r.probes.iter().filter(|p| gammas.contains(&p.path)) {
                let e = by_step.entry(p.step).or_default();
                // ||gamma|| / sqrt(C): the RMS of gamma, 1 at initialization.
                let c = r.probes.iter().find(|q| q.path == p.path).map(|q| q.norm).unwrap_or(1.0);
                e.0 += p.norm / c;
                e.1 += 1;
            }
            by_step.into_iter().map(|(s, (v, n))| (s as f64, v / n as f64)).collect()
        };
        let series: Vec<Series> = per_run(runs, mean_gamma);
        let ends: Vec<(String, f64)> = series.iter().filter_map(|s| Some((s.label.clone(), s.points.last()?.1))).collect();
        let shrunk: Vec<String> = ends.iter().filter(|e| e.1 < 0.95).map(|e| format!("{} (to {:.2})", e.0, e.1)).collect();
        let reading = format!(
            "The norm-layer scales gamma end at {} of their initial size. {}",
            ends.iter().map(|e| format!("{:.2} in {}", e.1, e.0)).collect::<Vec<_>>().join(", "),
            if shrunk.is_empty() {
                "None shrinks by more than 5%.".to_string()
            } else {
                format!(
                    "They shrink where gamma is decayed: {}; gamma is not scale-invariant, so this decay changes the function.",
                    shrunk.join(", ")
                )
            }
        );
        out.push(Figure {
            name: "gamma".into(),
            svg: LineChart {
                title: "Norm-layer scales gamma (relative to initial norm)".into(),
                x_label: "step (updates)".into(),
                y_label: "||gamma|| / ||gamma_0||".into(),
                series,
                ..Default::default()
            }
            .to_svg(),
            reading,
        });
    }
    // Test accuracy per epoch.
    let series: Vec<Series> = per_run(runs, |r| r.epochs.iter().map(|e| (e.epoch as f64, 100.0 * e.test_acc)).collect());
    let best = runs.iter().filter_map(|r| Some((r.name.clone(), r.final_acc()?))).max_by(|a, b| a.1.total_cmp(&b.1));
    let worst = runs.iter().filter_map(|r| Some((r.name.clone(), r.final_acc()?))).min_by(|a, b| a.1.total_cmp(&b.1));
    let reading = match (best, worst) {
        (Some(b), Some(w)) => format!(
            "Final test accuracy ranges from {} ({}) to {} ({}). The spread is {:.2} percentage points.",
            pct(w.1),
            w.0,
            pct(b.1),
            b.0,
            100.0 * (b.1 - w.1)
        ),
        _ => "No epoch finished.".into(),
    };
    out.push(Figure {
        name: "test-acc".into(),
        svg: LineChart {
            title: "Test accuracy".into(),
            x_label: "epoch".into(),
            y_label: "test accuracy (%)".into(),
            series,
            ..Default::default()
        }
        .to_svg(),
        reading,
    });
    out
}

/// One row of the results table.
pub fn results_row(r: &RunData) -> Vec<String> {
    let layers = r.invariant_paths();
    let effs: Vec<f64> = layers.iter().filter_map(|l| window_mean(&r.series(l), 0.75, 1.0, |p| Some(p.eff_lr))).collect();
    let eff = if effs.is_empty() { "-".into() } else { format!("{:.3e}", effs.iter().sum::<f64>() / effs.len() as f64) };
    let last = r.epochs.last();
    vec![
        r.name.clone(),
        format!(
            "{} {} lr={} wd={} ({})",
            r.config.optimizer,
            r.config.decay.map(|d| d.name()).unwrap_or(""),
            r.config.lr,
            r.config.weight_decay,
            r.policy()
        )
        .replace("  ", " "),
        last.map(|e| pct(e.test_acc)).unwrap_or("-".into()),
        last.map(|e| format!("{:.4}", e.test_loss)).unwrap_or("-".into()),
        eff,
    ]
}

/// Header of [`results_row`].
pub const RESULTS_HEADER: [&str; 5] = ["run", "settings", "test acc", "test loss", "mean eff. lr (SI weights, last 25%)"];

/// Writes `report.html` (and `plots/*.svg`) for runs into `out`; `intro` is HTML placed
/// before the table (the demo's findings). Returns the report's path.
pub fn write_report(out: &Path, title: &str, intro: &str, runs: &[RunData], extra: Vec<Figure>) -> Result<PathBuf, ReportError> {
    let mut figs = if runs.is_empty() { Vec::new() } else { figures(runs) };
    figs.extend(extra);
    let plots = out.join("plots");
    std::fs::create_dir_all(&plots).map_err(|e| StoreError::Io { file: plots.display().to_string(), source: e })?;
    for f in &figs {
        write_atomic(&plots.join(format!("{}.svg", f.name)), f.svg.as_bytes())?;
    }
    let mut h = String::new();
    let _ = write!(h, "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}th{{background:#f4f4f4}}figure{{margin:2em 0}}figcaption{{max-width:640px;color:#333}}.ok{{color:#176617}}.bad{{color:#a11}}</style></head><body>", html_escape(title));
    let _ = write!(h, "<h1>{}</h1>{intro}", html_escape(title));
    if !runs.is_empty() {
        h.push_str("<h2>Results</h2><table><tr>");
        for c in RESULTS_HEADER {
            let _ = write!(h, "<th>{}</th>", html_escape(c));
        }
        h.push_str("</tr>");
        for r in runs {
            h.push_str("<tr>");
            for c in results_row(r) {
                let _ = write!(h, "<td>{}</td>", html_escape(&c));
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Charts</h2>");
    for f in &figs {
        let _ = write!(h, "<figure>{}<figcaption>{}</figcaption></figure>", f.svg, html_escape(&f.reading));
    }
    h.push_str("</body></html>\n");
    let path = out.join("report.html");
    write_atomic(&path, h.as_bytes())?;
    Ok(path)
}

/// Escapes text for HTML.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
