//! `normwd predict`: the theory's equilibrium for given hyperparameters, per phase of an lr
//! schedule (with corrected or cautious decay), the decay timescale in steps and epochs, and
//! (`--transfer`) the weight decay that keeps that timescale at another scale; a table or JSON.

use super::hyper::{HyperArgs, Resolved};
use super::values::{milestones, Milestones};
use super::{fail, table, Failure};
use clap::Args;
use normwd::optim::schedule::{Schedule, ScheduleKind};
use normwd::optim::Hyper;
use normwd::theory::muon::AdjustLr;
use normwd::theory::{self, Family, Scale};
use serde_json::json;

/// Flags of `predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// The optimizer and its hyperparameters (`--lr` and `--weight-decay` required).
    #[command(flatten)]
    pub hyper: HyperArgs,
    /// Learning-rate schedule.
    #[arg(long, default_value = "constant", value_parser = super::choice::<ScheduleKind>())]
    pub schedule: ScheduleKind,
    /// Epochs where `step` multiplies the lr by gamma, as `30,60`.
    #[arg(long, value_parser = milestones)]
    pub milestones: Option<Milestones>,
    /// Factor of the step schedule.
    #[arg(long, default_value_t = 0.1)]
    pub gamma: f64,
    /// Length of the run in epochs (for schedules).
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Updates per epoch (to express relaxation in epochs) [default: 391, or from
    /// --dataset-size and --batch-size].
    #[arg(long, conflicts_with = "dataset_size")]
    pub steps_per_epoch: Option<usize>,
    /// Training examples per epoch (with --batch-size: the updates per epoch).
    #[arg(long, requires = "batch_size")]
    pub dataset_size: Option<f64>,
    /// Examples per update.
    #[arg(long)]
    pub batch_size: Option<f64>,
    /// Predict for corrected decay (AdamC / SGDC): decay `wd * lr_t/lr_max` on scale-invariant weights.
    #[arg(long)]
    pub corrected_decay: bool,
    /// Predict for cautious decay (decoupled decay where update and weight agree in sign).
    #[arg(long)]
    pub cautious_decay: bool,
    /// The weight decay that keeps the timescale in epochs at another scale (needs
    /// --dataset-size and --batch-size, and at least one --to-* flag).
    #[arg(long)]
    pub transfer: bool,
    /// --transfer: the new dataset size.
    #[arg(long)]
    pub to_dataset_size: Option<f64>,
    /// --transfer: the new batch size.
    #[arg(long)]
    pub to_batch_size: Option<f64>,
    /// --transfer: the new learning rate.
    #[arg(long)]
    pub to_lr: Option<f64>,
    /// --transfer: the model's width now (with --to-width).
    #[arg(long, requires = "to_width")]
    pub width: Option<f64>,
    /// --transfer: the new width (with --width).
    #[arg(long, requires = "width")]
    pub to_width: Option<f64>,
    /// --transfer: widths under muP, where AdamW's lr for hidden matrices scales as 1/width.
    #[arg(long)]
    pub mup: bool,
    /// muon: the matrix's shape as `ROWSxCOLS` (fan_out x fan_in; a conv kernel's out x in*kh*kw):
    /// Muon's angle depends on it (F18).
    #[arg(long, value_parser = matrix_shape)]
    pub shape: Option<(usize, usize)>,
    /// muon: the step's shape adjustment, for the equilibrium norm [default: original].
    #[arg(long, value_parser = super::choice::<AdjustLr>())]
    pub adjust_lr: Option<AdjustLr>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `ROWSxCOLS`, both whole numbers > 0.
fn matrix_shape(s: &str) -> Result<(usize, usize), String> {
    let parse = |v: &str| v.trim().parse::<usize>().ok().filter(|&n| n > 0);
    match s.split_once(['x', 'X']).map(|(r, c)| (parse(r), parse(c))) {
        Some((Some(r), Some(c))) => Ok((r, c)),
        _ => Err(format!("{s:?}: expected ROWSxCOLS, two whole numbers > 0 (768x3072)")),
    }
}

fn finite(flag: &str, v: f64, ok: bool, expected: &str) -> Result<(), Failure> {
    if v.is_finite() && ok {
        Ok(())
    } else {
        Err(fail(2, format!("--{flag} {v}: expected {expected}")))
    }
}

/// Runs `normwd predict`.
pub fn run(a: PredictArgs) -> Result<(), Failure> {
    finite("gamma", a.gamma, a.gamma > 0.0, "a finite number > 0")?;
    let Resolved { hyper: h, assumed } = a.hyper.resolve(None)?;
    let (decoupled, (b1, b2)) = (!h.coupled, h.betas);
    let family = h.family();
    let shape = match (family, a.shape) {
        (Family::Muon { .. }, None) => {
            return Err(fail(
                2,
                "--shape: required for --optimizer muon (its angle depends on the matrix's shape, F18), e.g. --shape 768x3072",
            ))
        }
        (_, s) => s,
    };
    let sizes = [
        ("dataset-size", a.dataset_size),
        ("batch-size", a.batch_size),
        ("to-dataset-size", a.to_dataset_size),
        ("to-batch-size", a.to_batch_size),
        ("to-lr", a.to_lr),
        ("width", a.width),
        ("to-width", a.to_width),
    ];
    // Sizes and rates: finite and > 0, else exit 2 naming the flag.
    for (flag, v) in sizes {
        if let Some(x) = v {
            finite(flag, x, x > 0.0, "a finite number > 0")?;
        }
    }
    if a.cautious_decay && h.coupled {
        return Err(fail(2, "--cautious-decay: expected decoupled decay (--optimizer adamw or lion, or --decay decoupled): the rule masks the decoupled step"));
    }
    if !assumed.is_empty() {
        eprintln!("note: assuming {} (not given)", assumed.join(", "));
    }
    if a.transfer {
        return transfer(&a, &h);
    }
    let steps_per_epoch = match (a.steps_per_epoch, a.dataset_size, a.batch_size) {
        (Some(0), _, _) => return Err(fail(2, "--steps-per-epoch 0: expected a whole number > 0")),
        (Some(s), _, _) => s,
        (None, Some(d), Some(b)) => (d / b).ceil() as usize,
        _ => 391,
    };
    let milestones = a.milestones.clone().unwrap_or_default().0;
    let schedule = Schedule {
        kind: a.schedule,
        milestones,
        gamma: a.gamma,
        warmup_steps: 0,
        steps_per_epoch,
        total_steps: a.epochs * steps_per_epoch,
    };
    let phases: Vec<(String, f64, f64)> = schedule.phases(a.epochs).into_iter().map(|p| (p.label, p.from_epoch, p.factor)).collect();
    // The decay acting in a phase, as the optimizer applies it to scale-invariant weights.
    let acting = |f: f64| theory::decay_acting(h.weight_decay, f, a.corrected_decay, a.cautious_decay);
    let first = phases.first().map(|p| (h.lr * p.2, acting(p.2)));
    let rows: Vec<serde_json::Value> = phases
        .iter()
        .map(|(label, from, f)| {
            let (lr, wd) = (h.lr * f, acting(*f));
            let angle = theory::predicted_angle(family, lr, wd, shape);
            let rate = Hyper { lr, weight_decay: wd, ..h.clone() }.relax_rate();
            let relax = (rate > 0.0).then(|| 1.0 / rate);
            let ratio = theory::grad_weight_ratio(family, lr, wd);
            let change = first.and_then(|f0| theory::ratio_change(family, f0, (lr, wd)));
            json!({
                "phase": label, "from_epoch": from, "lr": lr, "weight_decay": wd, "lr_times_wd": lr * wd,
                "angle_rad": angle, "angle_deg": angle.map(f64::to_degrees),
                "relaxation_steps": relax, "relaxation_epochs": relax.map(|r| r / steps_per_epoch as f64),
                "grad_weight_ratio": ratio, "ratio_vs_first_phase": change,
            })
        })
        .collect();
    let muon_norm = match (family, shape) {
        (Family::Muon { b, nesterov }, Some((r, c))) if h.weight_decay > 0.0 => {
            let adjust = a.adjust_lr.unwrap_or(AdjustLr::Original);
            Some((adjust, theory::muon::equilibrium_norm(h.lr, h.weight_decay, r, c, b, nesterov, adjust)))
        }
        _ => None,
    };
    let note = match family {
        Family::AdamL2 => Some("Adam with L2 in the gradient has no fixed rotational equilibrium: it depends on the gradient norm (use AdamW for a predictable one)"),
        _ if h.weight_decay == 0.0 => Some("without weight decay the norm of scale-invariant weights only grows (F4): the effective lr decays like 1/t and there is no equilibrium"),
        _ => None,
    };
    if a.json {
        println!(
            "{}",
            json!({"optimizer": h.optimizer, "decay": if decoupled {"decoupled"} else {"coupled"}, "momentum": h.momentum, "betas": [b1, b2],
                "weight_decay": h.weight_decay, "corrected_decay": a.corrected_decay, "cautious_decay": a.cautious_decay,
                "steps_per_epoch": steps_per_epoch, "phases": rows, "note": note, "shape": shape,
                "muon_equilibrium_norm": muon_norm.map(|(adj, n)| json!({"adjust_lr": adj.name(), "frobenius": n}))})
        );
        return Ok(());
    }
    let fmt = |v: &serde_json::Value, prec: usize| v.as_f64().map(|x| format!("{x:.prec$}")).unwrap_or_else(|| "-".into());
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r["phase"].as_str().unwrap_or("").to_string(),
                format!("{:.3e}", r["lr"].as_f64().unwrap_or(0.0)),
                format!("{:.3e}", r["lr_times_wd"].as_f64().unwrap_or(0.0)),
                fmt(&r["angle_rad"], 6),
                fmt(&r["angle_deg"], 4),
                fmt(&r["relaxation_steps"], 0),
                fmt(&r["relaxation_epochs"], 2),
                fmt(&r["grad_weight_ratio"], 4),
                fmt(&r["ratio_vs_first_phase"], 2),
            ]
        })
        .collect();
    let options = match (a.corrected_decay, a.cautious_decay) {
        (true, true) => ", corrected and cautious decay",
        (true, false) => ", corrected decay",
        (false, true) => ", cautious decay",
        (false, false) => "",
    };
    println!(
        "predicted equilibrium of scale-invariant weights: {} ({}{options}), momentum {}, betas ({b1}, {b2}), weight decay {}, {steps_per_epoch} steps per epoch",
        h.optimizer,
        if decoupled { "decoupled decay" } else { "L2 in the gradient" },
        h.momentum,
        h.weight_decay
    );
    println!(
        "{}",
        table(
            &["phase", "lr", "lr*wd", "angle/step (rad)", "angle/step (deg)", "timescale (steps)", "(epochs)", "||g||/||w||", "vs first"],
            &table_rows
        )
    );
    println!(
        "timescale: 1/(lr*wd) steps (F6, F15; L2 under SGD momentum acts as wd/(1-momentum)). ||g||/||w||: F13 at equilibrium \
         (SGD; Adam and Lion: only its change, 'vs first'). A phase shorter than ~2 timescales does not reach the equilibrium shown."
    );
    if let (Some((adjust, norm)), Some((r, c))) = (muon_norm, shape) {
        println!(
            "muon: a {r}x{c} matrix settles at ||W|| = {norm:.4} (Frobenius, adjust_lr {}) in the first phase; the angle is F18's, \
             sqrt(2*lr*wd) times the orthogonalized steps' autocorrelation factor, which adjust_lr does not move",
            adjust.name()
        );
    }
    if a.cautious_decay {
        println!("cautious decay: predicted as decay at wd/2 (F16: half the coordinates are decayed under the noise model; measure it on your run)");
    }
    if let Some(n) = note {
        println!("note: {n}");
    }
    if h.weight_decay > 0.0 {
        println!(
            "transfer: the same equilibrium holds for any (lr, wd) with lr*wd = {:.3e}, e.g. lr {} with wd {:.3e}",
            h.lr * h.weight_decay,
            h.lr / 10.0,
            theory::transfer_weight_decay(h.lr, h.weight_decay, h.lr / 10.0)
        );
    }
    Ok(())
}

/// `predict --transfer`: the weight decay that keeps `tau_epoch = B/(lr*wd*D)` (F15).
fn transfer(a: &PredictArgs, h: &Hyper) -> Result<(), Failure> {
    let (Some(dataset), Some(batch)) = (a.dataset_size, a.batch_size) else {
        return Err(fail(2, "--transfer: needs --dataset-size and --batch-size (the training's now)"));
    };
    if a.to_dataset_size.is_none() && a.to_batch_size.is_none() && a.to_lr.is_none() && a.to_width.is_none() {
        return Err(fail(2, "--transfer: expected at least one of --to-dataset-size, --to-batch-size, --to-lr, --to-width"));
    }
    if h.weight_decay == 0.0 {
        return Err(fail(2, "--weight-decay 0: --transfer expected a weight decay > 0 (without decay there is no timescale to keep)"));
    }
    let mut rule = vec!["tau_epoch = B/(lr*wd*D) kept (Wang & Aitchison 2025; Bergsma et al. 2025)".to_string()];
    let width_lr = match (a.width, a.to_width, a.mup) {
        (Some(w), Some(w2), true) => {
            rule.push(format!("muP: AdamW's lr for hidden matrices scales as 1/width, x{:.4}", w / w2));
            w / w2
        }
        (Some(_), Some(_), false) => {
            rule.push("standard parametrization: a new width leaves lr, and so wd, as they are (give --mup for muP)".into());
            1.0
        }
        _ => 1.0,
    };
    let from = Scale { dataset, batch, lr: h.lr };
    let to = Scale {
        dataset: a.to_dataset_size.unwrap_or(dataset),
        batch: a.to_batch_size.unwrap_or(batch),
        lr: a.to_lr.unwrap_or(h.lr * width_lr),
    };
    let wd = theory::transfer_weight_decay_tau(h.weight_decay, from, to);
    // In epochs: 1/(lr*wd) steps (L2 under SGD momentum: (1-mu)/(lr*wd)) over the steps of one.
    let tau = |s: &Scale, weight_decay: f64| 1.0 / Hyper { lr: s.lr, weight_decay, ..h.clone() }.relax_rate() / (s.dataset / s.batch);
    let (tau_from, tau_to, tau_to_same) = (tau(&from, h.weight_decay), tau(&to, wd), tau(&to, h.weight_decay));
    if a.json {
        println!(
            "{}",
            json!({"rule": rule, "from": {"dataset_size": from.dataset, "batch_size": from.batch, "lr": from.lr, "weight_decay": h.weight_decay, "tau_epoch": tau_from},
                "to": {"dataset_size": to.dataset, "batch_size": to.batch, "lr": to.lr, "weight_decay": wd, "tau_epoch": tau_to},
                "tau_epoch_with_the_same_weight_decay": tau_to_same})
        );
        return Ok(());
    }
    println!("rule: {}", rule.join("; "));
    let rows = vec![
        vec![
            "now".into(),
            format!("{}", from.dataset),
            format!("{}", from.batch),
            format!("{:.3e}", from.lr),
            format!("{:.3e}", h.weight_decay),
            format!("{tau_from:.3}"),
        ],
        vec![
            "new".into(),
            format!("{}", to.dataset),
            format!("{}", to.batch),
            format!("{:.3e}", to.lr),
            format!("{wd:.3e}"),
            format!("{tau_from:.3}"),
        ],
    ];
    println!("{}", table(&["", "dataset", "batch", "lr", "weight decay", "tau (epochs)"], &rows));
    println!("keeping --weight-decay {} at the new scale would give tau_epoch = {tau_to_same:.3}", h.weight_decay);
    Ok(())
}
