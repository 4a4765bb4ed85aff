//! `normwd._core`: the core's decisions and closed forms for Python. Every value crosses as a
//! plain number, string or tuple; a bad one comes back as a `ValueError` naming the argument,
//! never a panic.

use normwd_core::advice::{self, Mistake, Severity};
use normwd_core::choice::Choice;
use normwd_core::config::{External, RunConfig};
use normwd_core::optim::{DecayMode, Hyper, OptimError, OptimKind, Rule};
use normwd_core::records::{Probe, Record};
use normwd_core::roles::{DecayPolicy, Granularity, ParamInfo, Role};
use normwd_core::run::{files, RunData};
use normwd_core::store::write_atomic;
use normwd_core::theory;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

/// A `ValueError` for argument `arg` with value `value`, listing what was expected.
fn invalid(arg: &str, value: impl std::fmt::Display, expected: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("{arg}={value}: expected {expected}"))
}

/// The value of a closed set named `name`, passed as argument `arg`.
fn parse<T: Choice>(arg: &str, name: &str) -> PyResult<T> {
    T::parse(name).ok_or_else(|| invalid(arg, format!("{name:?}"), format!("one of {}", T::names())))
}

/// The optimizer settings, checked by the core (PyTorch's argument names in the message).
fn hyper(
    optimizer: &str,
    lr: f64,
    weight_decay: f64,
    momentum: f64,
    betas: Option<(f64, f64)>,
    decoupled: Option<bool>,
) -> PyResult<Hyper> {
    let rule: Rule = parse("optimizer", optimizer)?;
    let h = Hyper {
        optimizer: rule,
        lr,
        momentum,
        weight_decay,
        coupled: !decoupled.unwrap_or(rule.decoupled_by_default()),
        betas: betas.unwrap_or(rule.default_betas()),
    };
    h.validate().map_err(|e| match e {
        OptimError::Invalid { flag, value, expected } => invalid(&flag.replace('-', "_"), value, expected),
        other => PyValueError::new_err(other.to_string()),
    })?;
    Ok(h)
}

/// The names of the roles a tensor can have.
#[pyfunction]
fn roles() -> Vec<&'static str> {
    Role::ALL.map(|r| r.name()).to_vec()
}

/// The names of the decay policies.
#[pyfunction]
fn policies() -> Vec<&'static str> {
    DecayPolicy::ALL.map(|p| p.name()).to_vec()
}

/// The names of the optimizers the closed forms know.
#[pyfunction]
fn optimizers() -> Vec<&'static str> {
    Rule::ALL.map(|r| r.name()).to_vec()
}

/// Whether a tensor with `role` and scale-invariance is decayed under `policy`, and its group:
/// the core's one decision (`ParamInfo::new`).
#[pyfunction]
fn decide(role_name: &str, scale_invariant: bool, policy: &str) -> PyResult<(bool, &'static str)> {
    let invariance = scale_invariant.then_some(Granularity::Tensor);
    let info = ParamInfo::new("", vec![], parse("role", role_name)?, invariance, parse::<DecayPolicy>("policy", policy)?);
    Ok((info.decayed, info.group.name()))
}

/// The mistakes of a tensor trained with its group's settings: `(code, severity, why)` each.
#[pyfunction]
#[pyo3(signature = (role_name, scale_invariant, optimizer, lr, weight_decay, momentum=0.0, betas=None, decoupled=None))]
#[allow(clippy::too_many_arguments)]
fn mistakes(
    role_name: &str,
    scale_invariant: bool,
    optimizer: &str,
    lr: f64,
    weight_decay: f64,
    momentum: f64,
    betas: Option<(f64, f64)>,
    decoupled: Option<bool>,
) -> PyResult<Vec<(&'static str, &'static str, &'static str)>> {
    let h = hyper(optimizer, lr, weight_decay, momentum, betas, decoupled)?;
    Ok(advice::mistakes(parse("role", role_name)?, scale_invariant, &h).into_iter().map(described).collect())
}

fn described(m: Mistake) -> (&'static str, &'static str, &'static str) {
    let severity = match m.severity() {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    (m.name(), severity, m.why())
}

/// `(code, severity, why)` of the mistake named `code` (the group ones: `no-group`, `two-groups`).
#[pyfunction]
fn mistake(code: &str) -> PyResult<(&'static str, &'static str, &'static str)> {
    Ok(described(parse("code", code)?))
}

/// The equilibrium angle per step of a scale-invariant weight (F7/F8/F9) and the relaxation
/// time in steps (`1/(lr*wd)`, SGD's L2 divided by `1-momentum`); the angle is `None` without
/// a closed form (L2 in an Adam gradient, or no decay).
#[pyfunction]
#[pyo3(signature = (optimizer, lr, weight_decay, momentum=0.0, betas=None, decoupled=None))]
fn equilibrium(
    optimizer: &str,
    lr: f64,
    weight_decay: f64,
    momentum: f64,
    betas: Option<(f64, f64)>,
    decoupled: Option<bool>,
) -> PyResult<(Option<f64>, f64)> {
    let h = hyper(optimizer, lr, weight_decay, momentum, betas, decoupled)?;
    let angle = if weight_decay > 0.0 { theory::predicted_angle(h.family(), lr, weight_decay) } else { None };
    Ok((angle, 1.0 / h.relax_rate()))
}

/// The equilibrium angle between weights `k` steps apart (F17), or `None` without a closed form.
#[pyfunction]
#[pyo3(signature = (optimizer, lr, weight_decay, k, momentum=0.0, betas=None, decoupled=None))]
#[allow(clippy::too_many_arguments)]
fn gap_angle(
    optimizer: &str,
    lr: f64,
    weight_decay: f64,
    k: u64,
    momentum: f64,
    betas: Option<(f64, f64)>,
    decoupled: Option<bool>,
) -> PyResult<Option<f64>> {
    let h = hyper(optimizer, lr, weight_decay, momentum, betas, decoupled)?;
    Ok(theory::gap_angle(h.family(), lr, weight_decay, k))
}

/// The decay acting at a step whose lr is `lr_factor` of its peak: `weight_decay * lr_factor`
/// under corrected decay (F14), half under cautious decay (F16), as the predictions take it.
#[pyfunction]
#[pyo3(signature = (weight_decay, lr_factor, corrected=false, cautious=false))]
fn decay_acting(weight_decay: f64, lr_factor: f64, corrected: bool, cautious: bool) -> PyResult<f64> {
    for (name, v) in [("weight_decay", weight_decay), ("lr_factor", lr_factor)] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(PyValueError::new_err(format!("{name}={v}: expected a finite number >= 0")));
        }
    }
    Ok(theory::decay_acting(weight_decay, lr_factor, corrected, cautious))
}

/// F13: `||g||/||w||` of a scale-invariant weight at equilibrium under SGD, or `None` where it
/// depends on the gradient (Adam, Lion) or without decay.
#[pyfunction]
#[pyo3(signature = (optimizer, lr, weight_decay, momentum=0.0, betas=None, decoupled=None))]
fn grad_weight_ratio(
    optimizer: &str,
    lr: f64,
    weight_decay: f64,
    momentum: f64,
    betas: Option<(f64, f64)>,
    decoupled: Option<bool>,
) -> PyResult<Option<f64>> {
    let h = hyper(optimizer, lr, weight_decay, momentum, betas, decoupled)?;
    Ok(theory::grad_weight_ratio(h.family(), lr, weight_decay))
}

/// The effective learning rate of a scale-invariant weight of norm `norm`: `lr/norm^2` for SGD,
/// `lr/norm` for the sign-like updates of Adam and Lion.
#[pyfunction]
fn effective_lr(optimizer: &str, lr: f64, norm: f64) -> PyResult<f64> {
    let rule: Rule = parse("optimizer", optimizer)?;
    if !(norm.is_finite() && norm > 0.0) {
        return Err(invalid("norm", norm, "a finite number > 0"));
    }
    Ok(if rule.sign_like() { theory::effective_lr_adam(lr, norm) } else { theory::effective_lr_sgd(lr, norm) })
}

/// The equilibrium norm of a scale-invariant weight under plain SGD with L2 (F5), from
/// `unit_grad_norm` (the gradient norm times the weight norm, which is scale-free).
#[pyfunction]
fn equilibrium_norm_sgd(unit_grad_norm: f64, lr: f64, weight_decay: f64) -> f64 {
    theory::equilibrium_norm_sgd(unit_grad_norm, lr, weight_decay)
}

/// The angle (radians) between two tensors from their dot product and norms, as every normwd
/// measurement computes it (stable near 0 and pi).
#[pyfunction]
fn angle_from_dot(dot: f64, norm_a: f64, norm_b: f64) -> f64 {
    theory::angle_from_dot(dot, norm_a, norm_b)
}

/// One `metrics.jsonl` line of normwd's run format for the probe record `fields` (a JSON
/// object with the record's fields: `step`, `path`, `norm`, `grad_norm`, `eff_lr`, `angle`,
/// `cos_wg`, `pred_angle`, `pred_norm`, `scale_invariant`, `lr`, optionally `channel_norm`,
/// `channel_angle`), checked and written by the core.
#[pyfunction]
fn probe_line(fields: &str) -> PyResult<String> {
    let probe: Probe = serde_json::from_str(fields).map_err(|e| PyValueError::new_err(format!("probe record: {e}")))?;
    Ok(Record::Probe(probe).to_line())
}

/// What `normwd.torch.Monitor` knows of the training it measures, for `config.toml`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Measured {
    source: String,
    model: String,
    optimizer: String,
    rule: Option<String>,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    betas: Option<(f64, f64)>,
    decoupled: Option<bool>,
    policy: String,
    every: usize,
    lr_varies: bool,
}

/// Writes `config.toml` into run folder `dir` (atomically) for a training another program ran
/// and `normwd.torch.Monitor` measured, from `fields` (JSON, [`Measured`]'s fields): the run
/// format's settings as far as they are known, marked external, so `normwd report` reads it and
/// `normwd train --resume` refuses it.
#[pyfunction]
fn write_run_config(dir: &str, fields: &str) -> PyResult<()> {
    let m: Measured = serde_json::from_str(fields).map_err(|e| PyValueError::new_err(format!("run settings: {e}")))?;
    let optimizer = match m.rule.as_deref() {
        Some("adam") => OptimKind::Adam,
        Some("adamw") => OptimKind::Adamw,
        Some("lion") => OptimKind::Lion,
        _ => OptimKind::Sgd,
    };
    let config = RunConfig {
        optimizer,
        lr: m.lr,
        momentum: m.momentum,
        weight_decay: m.weight_decay,
        betas: m.betas.map(|(a, b)| [a, b]),
        decay: m.decoupled.map(|d| if d { DecayMode::Decoupled } else { DecayMode::Coupled }),
        decay_policy: Some(parse("policy", &m.policy)?),
        probe_every: m.every,
        external: Some(External { source: m.source, model: m.model, optimizer: m.optimizer, lr_varies: m.lr_varies }),
        ..Default::default()
    };
    let text = toml::to_string(&config).map_err(|e| PyValueError::new_err(format!("run settings: {e}")))?;
    let path = std::path::Path::new(dir).join(files::CONFIG);
    write_atomic(&path, text.as_bytes()).map_err(|e| PyOSError::new_err(e.to_string()))
}

/// Writes the report of the runs in `dirs` (normwd's or Monitor's) into `out`; returns the path
/// of `report.html`.
#[pyfunction]
fn report(dirs: Vec<String>, out: &str) -> PyResult<String> {
    let runs = dirs
        .iter()
        .map(|d| RunData::load(std::path::Path::new(d)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    if runs.is_empty() {
        return Err(PyValueError::new_err("run_dirs: expected at least one run folder"));
    }
    let path = normwd_core::report::write_report(std::path::Path::new(out), "normwd report", "", &runs, Vec::new())
        .map_err(|e| PyOSError::new_err(e.to_string()))?;
    Ok(path.display().to_string())
}

/// The extension module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(roles, m)?)?;
    m.add_function(wrap_pyfunction!(policies, m)?)?;
    m.add_function(wrap_pyfunction!(optimizers, m)?)?;
    m.add_function(wrap_pyfunction!(decide, m)?)?;
    m.add_function(wrap_pyfunction!(mistakes, m)?)?;
    m.add_function(wrap_pyfunction!(mistake, m)?)?;
    m.add_function(wrap_pyfunction!(equilibrium, m)?)?;
    m.add_function(wrap_pyfunction!(gap_angle, m)?)?;
    m.add_function(wrap_pyfunction!(effective_lr, m)?)?;
    m.add_function(wrap_pyfunction!(decay_acting, m)?)?;
    m.add_function(wrap_pyfunction!(grad_weight_ratio, m)?)?;
    m.add_function(wrap_pyfunction!(angle_from_dot, m)?)?;
    m.add_function(wrap_pyfunction!(equilibrium_norm_sgd, m)?)?;
    m.add_function(wrap_pyfunction!(probe_line, m)?)?;
    m.add_function(wrap_pyfunction!(write_run_config, m)?)?;
    m.add_function(wrap_pyfunction!(report, m)?)?;
    Ok(())
}
