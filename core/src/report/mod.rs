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

/// A figure's name as a file stem: a tensor path from another framework (`blocks/q/kernel[0]`
/// from JAX) holds characters a file name cannot.
fn file_stem(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect()
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

/// `||g||/||w||` of a scale-invariant tensor in each run, beside F13 at equilibrium (dashed,
/// SGD) and F13 tracked through the run's schedule (dashed too: the weight lagging a falling lr).
fn ratio_figure(runs: &[RunData], layer: &str, short: &str) -> Figure {
    let mut series = Vec::new();
    let mut sentences = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let s = r.series(layer);
        let measured = crate::run::ratio_points(&s);
        series.push(Series {
            label: r.name.clone(),
            points: measured.iter().map(|&(s, v)| (s as f64, v)).collect(),
            color: color(i),
            dashed: false,
        });
        let quasi: Vec<(f64, f64)> = s.iter().filter_map(|p| Some((p.step as f64, p.pred_ratio?))).collect();
        if !quasi.is_empty() {
            series.push(Series { label: format!("{} F13 at equilibrium", r.name), points: quasi, color: color(i), dashed: true });
        }
        let tracked = r.tracked_ratio(layer);
        if let Some(t) = &tracked {
            series.push(Series {
                label: format!("{} F13 tracked", r.name),
                points: t.iter().map(|(s, v)| (*s as f64, *v)).collect(),
                color: color(i),
                dashed: true,
            });
        }
        if let Some(m) = crate::run::rise(&measured) {
            let t = tracked.as_deref().and_then(crate::run::rise);
            sentences.push(format!(
                "{} x{m:.2} from the middle tenth of the run to 85-95%{}",
                r.name,
                t.map(|t| format!(" (F13 tracked: x{t:.2})")).unwrap_or_default()
            ));
        }
    }
    Figure {
        name: format!("{short}-grad-ratio"),
        svg: LineChart {
            title: format!("||g||/||w|| of {layer}"),
            x_label: "step (updates)".into(),
            y_label: "||g|| / ||w||".into(),
            log_y: true,
            series,
            ..Default::default()
        }
        .to_svg(),
        reading: format!(
            "Gradient norm over weight norm of {layer}: {}. A normalized layer's ratio settles at sqrt(2*wd/lr) under SGD (F13, Defazio et al. 2025; first dashed line), so it rises as a schedule lowers the lr, unless the decay is corrected (F14). The second dashed line tracks the norm through the schedule from the measured gradient (it lags a falling lr, as the weight does; for Adam scaled to the measurement at mid-run).",
            if sentences.is_empty() { "no probe data".to_string() } else { sentences.join("; ") }
        ),
    }
}

/// Charts of norm, effective lr, angle and `||g||/||w||` for every scale-invariant layer, of
/// gamma, and of test accuracy.
pub fn figures(runs: &[RunData]) -> Vec<Figure> {
    let mut out = Vec::new();
    let layers: Vec<String> = runs.first().map(|r| r.invariant_paths()).unwrap_or_default();
    for layer in &layers {
        let short = layer.trim_end_matches(".weight").trim_end_matches(".weight_v").to_string();
        out.push(norm_figure(runs, layer, &short));
        out.push(eff_lr_figure(runs, layer, &short));
        out.push(angle_figure(runs, layer, &short));
        out.push(ratio_figure(runs, layer, &short));
    }
    out.extend(gamma_figure(runs));
    out.extend(accuracy_figure(runs));
    out
}

/// The norm of scale-invariant `layer` (`short` in file names) in each run.
fn norm_figure(runs: &[RunData], layer: &str, short: &str) -> Figure {
    let series: Vec<Series> = per_run(runs, |r| r.series(layer).iter().map(|p| (p.step as f64, p.norm)).collect());
    let ends: Vec<(String, f64, f64)> = runs
        .iter()
        .filter_map(|r| {
            let s = r.series(layer);
            Some((r.name.clone(), s.first()?.norm, s.last()?.norm))
        })
        .collect();
    let moved = |e: &(String, f64, f64), solo: bool| {
        let verb = if e.2 > e.1 { "grows" } else { "shrinks" };
        if solo {
            format!("{verb} from {:.2} to {:.2}", e.1, e.2)
        } else {
            format!("{} ({:.2} to {:.2})", e.0, e.1, e.2)
        }
    };
    let trend = if let [only] = &ends[..] {
        moved(only, true)
    } else {
        let grow: Vec<String> = ends.iter().filter(|e| e.2 > e.1).map(|e| moved(e, false)).collect();
        let shrink: Vec<String> = ends.iter().filter(|e| e.2 <= e.1).map(|e| moved(e, false)).collect();
        let mut parts = Vec::new();
        if !grow.is_empty() {
            parts.push(format!("grows in {}", grow.join(", ")));
        }
        if !shrink.is_empty() {
            parts.push(format!("shrinks in {}", shrink.join(", ")));
        }
        parts.join(" and ")
    };
    let reading = format!(
        "The norm of {layer} {trend}. Without weight decay the norm can only grow (F4); with decay it settles where shrinking balances growth."
    );
    Figure {
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
    }
}

/// The effective learning rate of `layer` in each run.
fn eff_lr_figure(runs: &[RunData], layer: &str, short: &str) -> Figure {
    let series: Vec<Series> = per_run(runs, |r| r.series(layer).iter().map(|p| (p.step as f64, p.eff_lr)).collect());
    let ends: Vec<(String, f64)> =
        runs.iter().filter_map(|r| Some((r.name.clone(), window_mean(&r.series(layer), 0.75, 1.0, |p| Some(p.eff_lr))?))).collect();
    let (hi, lo) = (ends.iter().max_by(|a, b| a.1.total_cmp(&b.1)), ends.iter().min_by(|a, b| a.1.total_cmp(&b.1)));
    let reading = match (hi, lo) {
        (Some(h), Some(_)) if ends.len() == 1 => format!("Over the last quarter of training the effective learning rate of {layer} is {:.3e}. Shrinking the norm raises it: that, not regularization, is what weight decay does to this layer.", h.1),
        (Some(h), Some(l)) => format!("Over the last quarter of training the effective learning rate of {layer} is highest in {} ({:.3e}) and lowest in {} ({:.3e}), a factor {:.1}. Shrinking the norm raises it: that, not regularization, is what weight decay does to this layer.", h.0, h.1, l.0, l.1, h.1 / l.1),
        _ => "No probe data.".into(),
    };
    Figure {
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
    }
}

/// The angular update per step of `layer` in each run, with the prediction dashed.
fn angle_figure(runs: &[RunData], layer: &str, short: &str) -> Figure {
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
            let start = from * r.last_step() as f64;
            if let (Some(m), Some(p)) = (window_mean(&s, from, to, |p| Some(p.angle)), window_mean(&s, from, to, |p| p.pred_angle)) {
                // Before two relaxation times the weights are still on their way: a percentage
                // would read as the theory's error.
                let sentence = match r.relaxation_steps() {
                    Some(t) if start < crate::budget::RELAXATIONS * t => format!(
                        "{} not yet at equilibrium: {m:.4} rad measured vs {p:.4} predicted over {}, which starts at step {start:.0}, before two relaxation times ({:.0} steps each)",
                        r.name,
                        r.window_label(),
                        t
                    ),
                    _ => format!("{} {m:.4} rad measured vs {p:.4} predicted ({:+.0}%) over {}", r.name, 100.0 * (m / p - 1.0), r.window_label()),
                };
                sentences.push(sentence);
            }
        }
    }
    let reading = if sentences.is_empty() {
        format!("No run has a predicted equilibrium for {layer} (no decay, or Adam with L2). The angular update is set by the gradient and the norm alone.")
    } else {
        format!("Mean angular update per step of {layer}: {}. Dashed lines are the equilibrium predicted by the theory (docs/theory.md: F7 for SGD with momentum, F8 for AdamW).", sentences.join("; "))
    };
    Figure {
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
    }
}

/// The norm-layer scales (gamma) relative to their initial norm, averaged over layers, in each
/// run; `None` without probed norm scales.
fn gamma_figure(runs: &[RunData]) -> Option<Figure> {
    let gammas: Vec<String> = runs.first().map(|r| r.gamma_paths()).unwrap_or_default();
    if gammas.is_empty() {
        return None;
    }
    // Relative to the initial norm; a scale that starts at zero (zero-init residual
    // branches) has no relative size and is left out.
    let mean_gamma = |r: &RunData| -> Vec<(f64, f64)> {
        let mut by_step: BTreeMap<u64, (f64, usize)> = BTreeMap::new();
        for p in r.probes.iter().filter(|p| gammas.contains(&p.path)) {
            let c = r.probes.iter().find(|q| q.path == p.path).map(|q| q.norm).unwrap_or(1.0);
            if c > 0.0 {
                let e = by_step.entry(p.step).or_default();
                e.0 += p.norm / c;
                e.1 += 1;
            }
        }
        by_step.into_iter().map(|(s, (v, n))| (s as f64, v / n as f64)).collect()
    };
    let series: Vec<Series> = per_run(runs, mean_gamma);
    let ends: Vec<(&RunData, f64)> = runs.iter().zip(&series).filter_map(|(r, s)| Some((r, s.points.last()?.1))).collect();
    let size = if let [(_, v)] = &ends[..] {
        format!("{v:.2}")
    } else {
        ends.iter().map(|(r, v)| format!("{v:.2} in {}", r.name)).collect::<Vec<_>>().join(", ")
    };
    let names = |decayed: bool, shrunk: bool| -> Vec<String> {
        ends.iter().filter(|(r, v)| r.decays_norm_scales() == decayed && (*v < 0.95) == shrunk).map(|(r, _)| r.name.clone()).collect()
    };
    let one = runs.len() == 1;
    let mut said = Vec::new();
    for (decayed, shrunk, text) in [
        (true, true, "shrink under the decay their policy puts on gamma"),
        (true, false, "are decayed but do not shrink by more than 5% (their gradient holds them up)"),
        (false, true, "shrink by more than 5% without being decayed (their gradient does it)"),
        (false, false, "are not decayed and do not shrink by more than 5%"),
    ] {
        let n = names(decayed, shrunk);
        if !n.is_empty() {
            said.push(if one { format!("They {text}.") } else { format!("They {text} in {}.", n.join(", ")) });
        }
    }
    if names(true, true).len() + names(true, false).len() > 0 {
        said.push("Gamma is not scale-invariant, so decaying it changes the function.".into());
    }
    let reading = format!("The norm-layer scales gamma end at {size} of their initial size. {}", said.join(" "));
    Some(Figure {
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
    })
}

/// Test accuracy per epoch in each run; `None` when every run was measured in another
/// program's training (no epochs).
fn accuracy_figure(runs: &[RunData]) -> Option<Figure> {
    if runs.iter().all(|r| r.config.external.is_some() && r.epochs.is_empty()) {
        return None;
    }
    let series: Vec<Series> = per_run(runs, |r| r.epochs.iter().map(|e| (e.epoch as f64, 100.0 * e.test_acc)).collect());
    let best = runs.iter().filter_map(|r| Some((r.name.clone(), r.final_acc()?))).max_by(|a, b| a.1.total_cmp(&b.1));
    let worst = runs.iter().filter_map(|r| Some((r.name.clone(), r.final_acc()?))).min_by(|a, b| a.1.total_cmp(&b.1));
    let reading = match (best, worst) {
        (Some(b), Some(_)) if runs.len() == 1 => format!("Final test accuracy: {}.", pct(b.1)),
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
    Some(Figure {
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
    })
}

/// One row of the results table.
pub fn results_row(r: &RunData) -> Vec<String> {
    let layers = r.invariant_paths();
    let effs: Vec<f64> = layers.iter().filter_map(|l| window_mean(&r.series(l), 0.75, 1.0, |p| Some(p.eff_lr))).collect();
    let eff = if effs.is_empty() { "-".into() } else { format!("{:.3e}", effs.iter().sum::<f64>() / effs.len() as f64) };
    let last = r.epochs.last();
    if let Some(e) = &r.config.external {
        // Measured in another program's training: its own names, and no test set.
        let c = &r.config;
        let lr = match e.lr_range {
            Some([lo, hi]) if lo != hi => format!("{lo}..{hi}"),
            _ => c.lr.to_string(),
        };
        let schedule = e.scheduler.as_deref().map(|s| format!(", {s}")).unwrap_or_default();
        return vec![
            r.name.clone(),
            format!("{} on {} lr={lr}{schedule} wd={} ({}, {})", e.optimizer, e.model, c.weight_decay, r.policy(), e.source),
            "-".into(),
            "-".into(),
            eff,
        ];
    }
    vec![
        r.name.clone(),
        {
            // The scale-invariant group's own lr and decay, where set: (d) of the demo differs
            // from (c) only there.
            let c = &r.config;
            let mut si = Vec::new();
            if c.si_lr_scale != 1.0 {
                si.push(format!("lr x{}", c.si_lr_scale));
            }
            if let Some(w) = c.si_weight_decay {
                si.push(format!("wd={w}"));
            }
            let si = if si.is_empty() { String::new() } else { format!(", scale-invariant {}", si.join(" ")) };
            // Muon's matrices have their own lr and decay; `lr` and `wd` are then AdamW's.
            let (name, adamw) = match c.optimizer {
                crate::optim::OptimKind::Muon => {
                    (format!("muon lr={} wd={} + adamw", c.muon_lr, c.muon_weight_decay.unwrap_or(c.weight_decay)), true)
                }
                k => (k.name().to_string(), false),
            };
            let decay = if adamw { "" } else { c.decay.map(|d| d.name()).unwrap_or("") };
            format!("{name} {decay} lr={} wd={} ({}{si})", c.lr, c.weight_decay, r.policy()).replace("  ", " ")
        },
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
    write_report_charting(out, title, intro, runs, runs, extra)
}

/// Where a report's reader finds the formulas behind its predictions.
const THEORY_NOTE: &str = "<p>The predictions, the formulas behind them, where each is computed and tested, and which tensors get which prediction (a probe record's <code>pred_basis</code>: <code>scale-invariant</code> or <code>approximate</code>) are in <code>docs/theory.md</code> of normwd's repository.</p>";

/// [`write_report`] with the per-layer charts drawn for `charted` only (a demo's further seeds
/// add lines, not information); the results table lists every run.
pub fn write_report_charting(
    out: &Path,
    title: &str,
    intro: &str,
    runs: &[RunData],
    charted: &[RunData],
    extra: Vec<Figure>,
) -> Result<PathBuf, ReportError> {
    let mut figs = if charted.is_empty() { Vec::new() } else { figures(charted) };
    figs.extend(extra);
    let plots = out.join("plots");
    std::fs::create_dir_all(&plots).map_err(|e| StoreError::Io { file: plots.display().to_string(), source: e })?;
    for f in &figs {
        write_atomic(&plots.join(format!("{}.svg", file_stem(&f.name))), f.svg.as_bytes())?;
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
    h.push_str(THEORY_NOTE);
    h.push_str("</body></html>\n");
    let path = out.join("report.html");
    write_atomic(&path, h.as_bytes())?;
    Ok(path)
}

/// Escapes text for HTML.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;
    use crate::records::{EpochRecord, Probe};
    use crate::roles::DecayPolicy;
    use crate::schedule::ScheduleKind;

    fn probe(step: u64, path: &str, norm: f64, si: bool) -> Probe {
        Probe {
            step,
            path: path.into(),
            norm,
            grad_norm: 1.0,
            eff_lr: 0.1 / (norm * norm),
            angle: 0.01,
            cos_wg: 0.0,
            pred_angle: si.then_some(0.011),
            pred_norm: None,
            pred_ratio: None,
            pred_basis: None,
            scale_invariant: si,
            lr: 0.1,
            channel_norm: Vec::new(),
            channel_angle: Vec::new(),
            channel_norm_q: Vec::new(),
            channel_angle_q: Vec::new(),
            role: None,
        }
    }

    /// A one-epoch run whose gamma shrinks 10% under the default policy (which does not decay
    /// it), one gamma starting at zero, on a cosine schedule.
    fn run(name: &str, policy: Option<DecayPolicy>) -> RunData {
        let mut probes = Vec::new();
        for step in 1..=10u64 {
            probes.push(probe(step, "block1.conv.weight", 3.0 - 0.1 * step as f64, true));
            probes.push(probe(step, "block1.norm.gamma", 4.0 * (1.0 - 0.01 * step as f64), false));
            probes.push(probe(step, "block2.norm.gamma", 0.1 * (step - 1) as f64, false));
        }
        let epoch = EpochRecord {
            epoch: 1,
            step: 10,
            lr: 0.0,
            train_loss: 1.0,
            train_acc: 0.5,
            test_loss: 1.0,
            test_acc: 0.6,
            images_per_sec: 1.0,
        };
        RunData {
            name: name.into(),
            dir: PathBuf::from(name),
            config: RunConfig { epochs: 1, schedule: ScheduleKind::Cosine, decay_policy: policy, ..Default::default() },
            epochs: vec![epoch],
            probes,
            done: None,
        }
    }

    #[test]
    fn figure_files_are_named_from_any_tensor_path() {
        assert_eq!(file_stem("blocks/q/kernel[0]-angle"), "blocks_q_kernel_0_-angle");
        assert_eq!(file_stem("layer1.0.conv1.weight-norm"), "layer1.0.conv1.weight-norm");
    }

    #[test]
    fn every_sentence_follows_from_the_runs_config_and_reads_well_for_one_run() {
        let figs = figures(&[run("r1", None)]);
        let text: String = figs.iter().map(|f| format!("{}\n", f.reading)).collect();
        for wrong in ["no run", "lowest in", "a factor 1.0", "constant-lr phase", "xinf", "inf", "NaN", "are decayed", "under the decay"] {
            assert!(!text.contains(wrong), "{wrong:?} in:\n{text}");
        }
        for right in ["shrinks from 2.90 to 2.00", "the cosine lr falls", "without being decayed", "Final test accuracy: 60.00%"] {
            assert!(text.contains(right), "{right:?} missing in:\n{text}");
        }
        assert!(figs.iter().find(|f| f.name == "test-acc").unwrap().svg.contains("<circle"), "one epoch's accuracy is drawn");
        // Two runs, one decaying everything: each is told apart by its own policy.
        let figs = figures(&[run("exclude", None), run("all", Some(DecayPolicy::All))]);
        let gamma = &figs.iter().find(|f| f.name == "gamma").unwrap().reading;
        assert!(
            gamma.contains("under the decay their policy puts on gamma in all.")
                && gamma.contains("without being decayed (their gradient does it) in exclude."),
            "{gamma}"
        );
    }
}
