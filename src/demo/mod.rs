//! `normwd demo`: the same ConvNet+BN trained under the regimes that show what weight decay
//! does to a normalized network, measured next to the theory, in one report.
//!
//! Hyperparameters are chosen so the scale-invariant weights pass several relaxation times
//! within the budget (equilibrium is reached, not extrapolated): SGD with momentum 0.9,
//! `lr = 0.1`, `weight_decay = 0.02`, so the decay acts at `lr*wd/(1-mu) = 0.02` per step and
//! relaxes in about 50 steps; the constant-lr phase lasts ~240 steps, then a 10x lower lr
//! anneals for the last epoch.
//!
//! The transformer suite is [`transformer`], Muon against AdamW on it [`muon`]; decay through
//! the lr schedule and across dataset sizes is [`schedules`].
//!
//! May import every layer above it (it runs a study end to end).

pub mod muon;
pub mod schedules;
pub mod transformer;

use crate::model::{ModelKind, NormKind};
use crate::optim::schedule::ScheduleKind;
use crate::optim::{DecayMode, OptimKind};
use crate::params::DecayPolicy;
use crate::report::{self, window_mean, RunData};
use crate::theory;
use crate::train::config::RunConfig;
use crate::train::{self, RunOptions, TrainError};
use std::path::{Path, PathBuf};

/// One training regime of the demo.
#[derive(Debug, Clone)]
pub struct Regime {
    /// Short id (`a-naive-l2-all`), also the run folder name.
    pub name: String,
    /// What it shows.
    pub about: String,
    /// Its settings.
    pub config: RunConfig,
}

/// Budget and data of a demo.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// `--data` value.
    pub data: String,
    /// Epochs per regime.
    pub epochs: usize,
    /// Training examples used (`None`: all).
    pub train_subset: Option<usize>,
    /// Test examples used (`None`: all).
    pub test_subset: Option<usize>,
    /// Seed shared by all regimes.
    pub seed: u64,
    /// Seeds (from `seed` on) of regimes (c) and (d), whose accuracies (d) compares: one seed's
    /// accuracy moves by about a point with the seed alone.
    pub pair_seeds: usize,
    /// Probe interval.
    pub probe_every: usize,
    /// Regimes trained at the same time (the CPU backend leaves cores idle in one run).
    pub parallel: usize,
    /// `--device` of every regime.
    pub device: String,
}

impl DemoSettings {
    /// The settings every regime of a suite shares: data, subsets, epochs, seed, probe interval
    /// and device; the rest at the defaults.
    pub fn base(&self) -> RunConfig {
        RunConfig {
            data: self.data.clone(),
            train_subset: self.train_subset,
            test_subset: self.test_subset,
            epochs: self.epochs,
            seed: self.seed,
            probe_every: Some(self.probe_every),
            device: self.device.clone(),
            ..Default::default()
        }
    }

    /// The full demo: about 400 updates per regime on the embedded data.
    pub fn full(data: &str) -> Self {
        DemoSettings {
            data: data.into(),
            epochs: 4,
            train_subset: None,
            test_subset: None,
            seed: 0,
            pair_seeds: 3,
            probe_every: 2,
            parallel: 3,
            device: "cpu".into(),
        }
    }

    /// A seconds-long version for tests and CI.
    pub fn quick(data: &str) -> Self {
        DemoSettings {
            data: data.into(),
            epochs: 1,
            train_subset: Some(1024),
            test_subset: Some(256),
            seed: 0,
            pair_seeds: 1,
            probe_every: 1,
            parallel: 3,
            device: "cpu".into(),
        }
    }
}

/// SGD settings shared by the SGD regimes.
pub const SGD_LR: f64 = 0.1;
/// Momentum of the SGD regimes.
pub const SGD_MOMENTUM: f64 = 0.9;
/// Weight decay of the SGD regimes.
pub const SGD_WD: f64 = 0.02;
/// Adam / AdamW learning rate.
pub const ADAM_LR: f64 = 0.005;
/// Adam / AdamW weight decay (on scale-invariant weights only, so it acts only on the
/// effective learning rate and `lr*wd = 0.02` relaxes in ~50 steps like the SGD regimes).
pub const ADAM_WD: f64 = 4.0;

/// The regimes of the core suite.
pub fn core_regimes(s: &DemoSettings) -> Vec<Regime> {
    let base = RunConfig {
        model: ModelKind::Convnet,
        norm: Some(NormKind::Bn),
        batch_size: 128,
        optimizer: OptimKind::Sgd,
        lr: SGD_LR,
        momentum: SGD_MOMENTUM,
        weight_decay: SGD_WD,
        // Constant lr (the equilibrium is measured there), then a 10x drop for the last epoch so
        // the final accuracies compare trained models rather than the noise of a high lr.
        schedule: ScheduleKind::Step,
        milestones: vec![s.epochs.saturating_sub(1).max(1)],
        gamma: 0.1,
        ..s.base()
    };
    let r = |name: &str, about: &str, config: RunConfig| Regime { name: name.into(), about: about.into(), config };
    let mut regimes = vec![
        r(
            "a-l2-on-all",
            "SGD+momentum, L2 on every parameter, BN gamma/beta included (the naive setup)",
            RunConfig { decay_policy: Some(DecayPolicy::All), ..base.clone() },
        ),
        r("b-no-decay", "no weight decay at all", RunConfig { weight_decay: 0.0, ..base.clone() }),
        r("c-default", "decay on weights, none on norm scales/shifts and biases (the default policy)", base.clone()),
        r(
            "d-10x-wd-0.1x-lr",
            "as (c) but 10x weight decay and 0.1x lr on the scale-invariant weights: same lr*wd",
            RunConfig { si_lr_scale: 0.1, si_weight_decay: Some(10.0 * SGD_WD), ..base.clone() },
        ),
        r(
            "e1-adam-l2",
            "Adam with L2 in the gradient, decay on scale-invariant weights only",
            RunConfig {
                optimizer: OptimKind::Adam,
                lr: ADAM_LR,
                weight_decay: ADAM_WD,
                decay: Some(DecayMode::Coupled),
                decay_policy: Some(DecayPolicy::ScaleInvariantOnly),
                ..base.clone()
            },
        ),
        r(
            "e2-adamw",
            "AdamW (decoupled), same lr and decay as e1",
            RunConfig {
                optimizer: OptimKind::Adamw,
                lr: ADAM_LR,
                weight_decay: ADAM_WD,
                decay: Some(DecayMode::Decoupled),
                decay_policy: Some(DecayPolicy::ScaleInvariantOnly),
                ..base.clone()
            },
        ),
    ];
    // (c) and (d) again with further seeds, for finding (d).
    let pair: Vec<Regime> = regimes.iter().filter(|g| g.name.starts_with("c-") || g.name.starts_with("d-")).cloned().collect();
    for k in 1..s.pair_seeds.max(1) {
        for g in &pair {
            let seed = s.seed + k as u64;
            regimes.push(r(
                &format!("{}-seed{seed}", g.name),
                &format!("{}, seed {seed}", g.about),
                RunConfig { seed, ..g.config.clone() },
            ));
        }
    }
    regimes
}

/// The regimes of the remedies suite: the baseline (SGD with momentum and L2 on weights, the
/// core suite's (c)) and each remedy at its default settings on the same budget.
pub fn remedy_regimes(s: &DemoSettings) -> Vec<Regime> {
    let base = core_regimes(s).into_iter().find(|r| r.name == "c-default").expect("the core suite has (c)").config;
    let r = |name: &str, about: &str, config: RunConfig| Regime { name: name.into(), about: about.into(), config };
    let no_si_decay = || RunConfig { decay_policy: Some(DecayPolicy::NoneOnScaleInvariant), ..base.clone() };
    vec![
        r("0-baseline-sgd-l2", "SGD with momentum, L2 on weights (the core suite's c)", base.clone()),
        r(
            "1-sgdp",
            "SGDP: radial part of the update removed on scale-invariant weights, decay x0.1/(1-mu) there",
            RunConfig { optimizer: OptimKind::Sgdp, ..base.clone() },
        ),
        r(
            "2-adamp",
            "AdamP at the reference defaults (lr 1e-3, betas 0.9/0.999)",
            RunConfig { optimizer: OptimKind::Adamp, lr: 1e-3, ..base.clone() },
        ),
        r(
            "3-lars",
            "LARS (trust coefficient 0.001, norm/bias excluded from adaptation), lr 1",
            RunConfig { optimizer: OptimKind::Lars, lr: 1.0, ..base.clone() },
        ),
        r(
            "4-fixed-norm",
            "scale-invariant weights held at their initial norm (no decay there)",
            RunConfig { optimizer: OptimKind::FixedNorm, ..no_si_decay() },
        ),
        r(
            "5-rv-sgd",
            "rotational wrapper around SGD with momentum: F7's equilibrium angle from step 1",
            RunConfig { optimizer: OptimKind::RvSgd, ..base.clone() },
        ),
        r(
            "6-compensate-elr",
            "no decay on scale-invariant weights, gradients scaled by ||w||^2/||w_0||^2",
            RunConfig { compensate_elr: true, ..no_si_decay() },
        ),
    ]
}

/// How each remedy compares with the baseline: accuracy difference, and when it loses more
/// than 2 points, why, in terms of its measured angular update per step.
pub fn remedy_findings(runs: &[RunData]) -> Vec<Finding> {
    let Some(base) = find(runs, "0-") else { return Vec::new() };
    let angle = |r: &RunData| -> Option<f64> {
        let (from, to) = r.equilibrium_window();
        let v: Vec<f64> = r.invariant_paths().iter().filter_map(|l| window_mean(&r.series(l), from, to, |p| Some(p.angle))).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let (Some(ba), Some(bang)) = (base.final_acc(), angle(base)) else { return Vec::new() };
    runs.iter()
        .filter(|r| r.name != base.name)
        .filter_map(|r| {
            let (acc, ang) = (r.final_acc()?, angle(r)?);
            let diff = acc - ba;
            let why = if diff < -0.02 {
                format!(
                    "; why: its angular update per step on the scale-invariant weights is {:.2}x the baseline's ({ang:.4} vs {bang:.4} rad) at these default settings, {}",
                    ang / bang,
                    if ang > bang { "a higher effective learning rate" } else { "a lower effective learning rate: it needs a larger lr here" }
                )
            } else {
                String::new()
            };
            Some(Finding {
                claim: format!("{}: within 2 points of the baseline's test accuracy", r.name),
                holds: diff >= -0.02,
                asserted: true,
                detail: format!("{:.2}% vs {:.2}% ({:+.2} points); angular update {ang:.4} rad/step vs {bang:.4}{why}", 100.0 * acc, 100.0 * ba, 100.0 * diff),
            })
        })
        .collect()
}

/// A check the demo makes on its own runs, with the measured numbers.
#[derive(Debug, Clone)]
pub struct Finding {
    /// What is claimed.
    pub claim: String,
    /// Whether the runs show it (always true for a measurement that is only reported).
    pub holds: bool,
    /// False for a measurement reported beside the claims, not checked against a bound.
    pub asserted: bool,
    /// The numbers.
    pub detail: String,
}

/// Trains every regime (skipping finished ones) into `out/<name>`, `parallel` at a time.
pub fn train_all(
    regimes: &[Regime],
    out: &Path,
    parallel: usize,
    observer: &(dyn Fn(&str, &train::Summary) + Sync),
) -> Result<Vec<PathBuf>, TrainError> {
    crate::jobs::run_each(regimes, parallel, &|reg: &Regime| -> Result<(), TrainError> {
        let dir = out.join(&reg.name);
        if let crate::sweep::Outcome::Done(_) = crate::sweep::outcome(&dir) {
            return Ok(());
        }
        let resume = dir.join(train::files::CONFIG).exists();
        let s = train::run(reg.config.clone(), RunOptions { dir, resume, observer: &mut train::Quiet })?;
        observer(&reg.name, &s);
        Ok(())
    })?;
    Ok(regimes.iter().map(|r| out.join(&r.name)).collect())
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Unbiased sample variance (0 for fewer than two values).
fn sample_var(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64
}

fn find<'a>(runs: &'a [RunData], prefix: &str) -> Option<&'a RunData> {
    runs.iter().find(|r| r.name.starts_with(prefix))
}

/// F7 on each BN-followed conv weight of `run`: the angular update in the equilibrium window
/// (after the relaxation time) against `sqrt(2*lr*wd/(1+mu))`.
fn angle_findings(run: &RunData, tag: &str, out: &mut Vec<Finding>) {
    for layer in run.invariant_paths() {
        let s = run.series(&layer);
        let (from, to) = run.equilibrium_window();
        let m = window_mean(&s, from, to, |p| Some(p.angle));
        let earlier = window_mean(&s, from / 2.0, from, |p| Some(p.angle));
        let p = window_mean(&s, from, to, |p| p.pred_angle);
        if let (Some(m), Some(p), Some(e)) = (m, p, earlier) {
            let rel = m / p - 1.0;
            out.push(Finding {
                claim: format!("({tag}) {layer}: equilibrium angular update within 15% of sqrt(2*lr*wd/(1+mu))"),
                holds: rel.abs() <= 0.15,
                asserted: true,
                detail: format!(
                    "measured {m:.5} rad/step over steps {:.0}-{:.0} ({:+.1}% vs the window before), predicted {p:.5}, {:+.1}%",
                    from * run.last_step() as f64,
                    to * run.last_step() as f64,
                    100.0 * (m / e - 1.0),
                    100.0 * rel
                ),
            });
        }
    }
}

/// Checks the claims of THEORY.md on the demo's runs.
pub fn findings(runs: &[RunData]) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(c) = find(runs, "c-") {
        // Equilibrium angle of each BN-followed conv weight, measured after the relaxation time;
        // (d) has the same lr*wd on those weights, so F7 predicts the same angle.
        angle_findings(c, "c", &mut out);
        if let Some(d) = find(runs, "d-") {
            angle_findings(d, "d", &mut out);
        }
        let (from, to) = c.equilibrium_window();
        let steps = c.last_step() as f64;
        let relax = theory::relaxation_steps(c.config.lr, c.config.weight_decay / (1.0 - c.config.momentum));
        out.push(Finding {
            claim: "(c) equilibrium is measured after at least 2 relaxation times (1-mu)/(lr*wd), in a phase of several".into(),
            holds: from * steps >= 2.0 * relax && to * steps >= 3.0 * relax,
            asserted: true,
            detail: format!(
                "window starts at step {:.0} = {:.1} relaxation times of {relax:.0} steps; the constant-lr phase lasts {:.1}",
                from * steps,
                from * steps / relax,
                to * steps / relax
            ),
        });
        let accs = |prefix: &str| runs.iter().filter(|r| r.name.starts_with(prefix)).filter_map(|r| r.final_acc()).collect::<Vec<_>>();
        let (ca, da) = (accs("c-"), accs("d-"));
        if !ca.is_empty() && !da.is_empty() {
            let (mc, md) = (mean(&ca), mean(&da));
            // Two standard errors of the difference of the means over seeds, and never under one
            // point (a single seed, as in the quick demo, has no spread to estimate).
            let se = (sample_var(&ca) / ca.len() as f64 + sample_var(&da) / da.len() as f64).sqrt();
            let band = (2.0 * se).max(0.01);
            out.push(Finding {
                claim: "(d) same lr*wd on scale-invariant weights as (c): final test accuracy equal within seed noise".into(),
                holds: (md - mc).abs() <= band,
                asserted: true,
                detail: format!(
                    "mean over {} seeds: (c) {:.2}%, (d) {:.2}%, difference {:+.2} points; band {:.2} points (2 standard errors over seeds, at least 1)",
                    ca.len().min(da.len()),
                    100.0 * mc,
                    100.0 * md,
                    100.0 * (md - mc),
                    100.0 * band
                ),
            });
        }
    }
    if let Some(b) = find(runs, "b-") {
        let mut worst: Option<(String, f64)> = None;
        let mut ok = true;
        for layer in b.invariant_paths() {
            let s = b.series(&layer);
            for w in s.windows(2) {
                let drop = w[1].norm / w[0].norm - 1.0;
                if drop < 0.0 {
                    ok = false;
                    if worst.as_ref().map(|x| drop < x.1).unwrap_or(true) {
                        worst = Some((format!("{layer} at step {}", w[1].step), drop));
                    }
                }
            }
        }
        out.push(Finding {
            claim: "(b) without decay the norms of scale-invariant weights grow monotonically (F4)".into(),
            holds: ok,
            asserted: true,
            detail: match worst {
                None => "every probed norm is larger than the one before".into(),
                Some((w, d)) => format!("largest decrease {:.2e} relative, {w}", d),
            },
        });
    }
    if let Some(a) = find(runs, "a-") {
        let g: Vec<f64> = a
            .gamma_paths()
            .iter()
            .filter_map(|p| {
                let s = a.series(p);
                Some(s.last()?.norm / s.first()?.norm)
            })
            .collect();
        if !g.is_empty() {
            let mean = g.iter().sum::<f64>() / g.len() as f64;
            out.push(Finding {
                claim: "(a) decaying BN's gamma shrinks it".into(),
                holds: mean < 0.95,
                asserted: true,
                detail: format!("||gamma|| ends at {:.3} of its initial value on average over {} layers", mean, g.len()),
            });
        }
    }
    out
}

/// What the core suite is about (the report's first paragraph).
pub const CORE_ABOUT: &str = "A ConvNet with batch norm trained with the same seed and budget under six weight-decay regimes ((c) and (d) also with further seeds, to compare their accuracies beyond seed noise). Scale-invariant weights (conv kernels before BN) are not regularized by weight decay: decay only shrinks their norm and so raises their effective learning rate lr/||w||^2, until the norm settles at an equilibrium set by lr*wd.";
/// What the remedies suite is about.
pub const REMEDIES_ABOUT: &str = "The same ConvNet with batch norm, seed and budget, trained with SGD+L2 (the baseline) and with each remedy from the literature at its default settings: projection (SGDP, AdamP), layer-wise trust ratios (LARS), fixed norms, the rotational wrapper, and effective-lr compensation without decay.";

/// Writes the demo's report and returns its path.
pub fn write(
    out: &Path,
    title: &str,
    about: &str,
    regimes: &[Regime],
    runs: &[RunData],
    findings: &[Finding],
) -> Result<PathBuf, report::ReportError> {
    let mut intro = format!("<p>{}</p><ul>", report::html_escape(about));
    for r in regimes {
        intro.push_str(&format!("<li><b>{}</b>: {}</li>", report::html_escape(&r.name), report::html_escape(&r.about)));
    }
    intro.push_str("</ul><h2>What the runs show</h2><ul>");
    for f in findings {
        intro.push_str(&format!(
            "<li class=\"{}\">{} {}: {}</li>",
            match (f.asserted, f.holds) {
                (false, _) => "info",
                (true, true) => "ok",
                (true, false) => "bad",
            },
            match (f.asserted, f.holds) {
                (false, _) => "&#8226;",
                (true, true) => "&#10003;",
                (true, false) => "&#10007;",
            },
            report::html_escape(&f.claim),
            report::html_escape(&f.detail)
        ));
    }
    intro.push_str("</ul>");
    // Further seeds and the timescale runs (a claim of their own) would only crowd the charts.
    let charted: Vec<RunData> = runs.iter().filter(|r| !r.name.contains("-seed") && !r.name.starts_with("tau-")).cloned().collect();
    report::write_report_charting(out, title, &intro, runs, &charted, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_variance_is_unbiased_and_zero_for_one_value() {
        assert!((sample_var(&[0.86, 0.87, 0.88]) - 1e-4).abs() < 1e-12);
        assert_eq!(sample_var(&[0.87]), 0.0);
        assert!((mean(&[1.0, 2.0, 6.0]) - 3.0).abs() < 1e-12);
    }
}
