//! `normwd predict`: the theory's equilibrium for given hyperparameters, per phase of an lr
//! schedule, as a table or JSON.

use super::hyper::{HyperArgs, Resolved};
use super::values::{milestones, Milestones};
use super::{fail, table, Failure};
use clap::Args;
use normwd::optim::schedule::{Schedule, ScheduleKind};
use normwd::theory::{self, Family};
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
    /// Updates per epoch (to express relaxation in epochs).
    #[arg(long, default_value_t = 391)]
    pub steps_per_epoch: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
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
    if !assumed.is_empty() {
        eprintln!("note: assuming {} (not given)", assumed.join(", "));
    }
    let (decoupled, (b1, b2)) = (!h.coupled, h.betas);
    let family = h.family();
    let milestones = a.milestones.clone().unwrap_or_default().0;
    let schedule = Schedule {
        kind: a.schedule,
        milestones,
        gamma: a.gamma,
        warmup_steps: 0,
        steps_per_epoch: a.steps_per_epoch,
        total_steps: a.epochs * a.steps_per_epoch,
    };
    let phases: Vec<(String, f64, f64)> = schedule.phases(a.epochs).into_iter().map(|p| (p.label, p.from_epoch, p.factor)).collect();
    let rows: Vec<serde_json::Value> = phases
        .iter()
        .map(|(label, from, f)| {
            let lr = h.lr * f;
            let angle = theory::predicted_angle(family, lr, h.weight_decay);
            let relax = (h.weight_decay > 0.0).then(|| theory::relaxation_steps(lr, h.weight_decay));
            json!({
                "phase": label, "from_epoch": from, "lr": lr, "lr_times_wd": lr * h.weight_decay,
                "angle_rad": angle, "angle_deg": angle.map(f64::to_degrees),
                "relaxation_steps": relax, "relaxation_epochs": relax.map(|r| r / a.steps_per_epoch as f64),
            })
        })
        .collect();
    let note = match family {
        Family::AdamL2 => Some("Adam with L2 in the gradient has no fixed rotational equilibrium: it depends on the gradient norm (use AdamW for a predictable one)"),
        _ if h.weight_decay == 0.0 => Some("without weight decay the norm of scale-invariant weights only grows (F4): the effective lr decays like 1/t and there is no equilibrium"),
        _ => None,
    };
    if a.json {
        println!(
            "{}",
            json!({"optimizer": h.optimizer, "decay": if decoupled {"decoupled"} else {"coupled"}, "momentum": h.momentum, "betas": [b1, b2], "weight_decay": h.weight_decay, "phases": rows, "note": note})
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
                fmt(&r["relaxation_epochs"], 1),
            ]
        })
        .collect();
    println!(
        "predicted equilibrium of scale-invariant weights: {} ({}), momentum {}, betas ({b1}, {b2}), weight decay {}",
        h.optimizer,
        if decoupled { "decoupled decay" } else { "L2 in the gradient" },
        h.momentum,
        h.weight_decay
    );
    println!("{}", table(&["phase", "lr", "lr*wd", "angle/step (rad)", "angle/step (deg)", "relaxation (steps)", "(epochs)"], &table_rows));
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
