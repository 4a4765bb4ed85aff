//! `normwd._core`: the core's decisions and closed forms for Python. Settings cross as two
//! classes, `Hyper` (an optimizer's checked hyperparameters, with the closed forms as methods)
//! and `StepSettings` (a group's settings at one step, for the probe-record builder); the rest
//! as plain numbers, strings and lists. A bad value comes back as a `ValueError` with the core's
//! one-line message naming the argument, never a panic.

use normwd_core::advice::{self, Mistake, Severity};
use normwd_core::choice::Choice;
use normwd_core::config::{External, RunConfig};
use normwd_core::optim::{DecayMode, Hyper, OptimError, OptimKind, Rule};
use normwd_core::probe::{self, StepSettings, Sums, TensorFacts};
use normwd_core::records::Record;
use normwd_core::roles::{DecayPolicy, Granularity, ParamInfo, Role};
use normwd_core::run::{files, RunData};
use normwd_core::store::write_atomic;
use normwd_core::theory::{self, Family};
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
    nesterov: Option<bool>,
) -> PyResult<Hyper> {
    let rule: Rule = parse("optimizer", optimizer)?;
    let h = Hyper {
        optimizer: rule,
        lr,
        momentum,
        weight_decay,
        coupled: !decoupled.unwrap_or(rule.decoupled_by_default()),
        betas: betas.unwrap_or(rule.default_betas()),
        nesterov: nesterov.unwrap_or(rule == Rule::Muon),
    };
    h.validate().map_err(|e| match e {
        OptimError::Invalid { flag, value, expected } => invalid(&flag.replace('-', "_"), value, expected),
        other => PyValueError::new_err(other.to_string()),
    })?;
    Ok(h)
}

/// An optimizer's settings as the closed forms take them (the core's `Hyper`), checked once
/// when made: `Hyper("sgd", lr=0.1, weight_decay=5e-4, momentum=0.9)`. A value out of its
/// domain raises `ValueError` naming the argument. `nesterov` is Muon's blend (default `True`
/// for `muon`, as PyTorch's).
#[pyclass(name = "Hyper", frozen, module = "normwd._core")]
#[derive(Clone)]
struct PyHyper {
    inner: Hyper,
}

#[pymethods]
impl PyHyper {
    #[new]
    #[pyo3(signature = (optimizer, lr, weight_decay, momentum=0.0, betas=None, decoupled=None, nesterov=None))]
    fn new(
        optimizer: &str,
        lr: f64,
        weight_decay: f64,
        momentum: f64,
        betas: Option<(f64, f64)>,
        decoupled: Option<bool>,
        nesterov: Option<bool>,
    ) -> PyResult<Self> {
        Ok(PyHyper { inner: hyper(optimizer, lr, weight_decay, momentum, betas, decoupled, nesterov)? })
    }

    /// The optimizer's closed-form name (`sgd`, `adam`, `adamw`, `lion`).
    #[getter]
    fn optimizer(&self) -> &'static str {
        self.inner.optimizer.name()
    }

    /// Learning rate.
    #[getter]
    fn lr(&self) -> f64 {
        self.inner.lr
    }

    /// Weight decay.
    #[getter]
    fn weight_decay(&self) -> f64 {
        self.inner.weight_decay
    }

    /// Momentum.
    #[getter]
    fn momentum(&self) -> f64 {
        self.inner.momentum
    }

    /// Betas (the optimizer's defaults where none were given).
    #[getter]
    fn betas(&self) -> (f64, f64) {
        self.inner.betas
    }

    /// Whether the decay is decoupled (the optimizer's default where not given).
    #[getter]
    fn decoupled(&self) -> bool {
        !self.inner.coupled
    }

    /// The equilibrium angle per step of a scale-invariant weight (F7/F8/F9; Muon's F18 for a
    /// matrix of `shape = (rows, cols)`), `None` without a closed form (L2 in an Adam gradient,
    /// no decay, Muon without a shape), and the relaxation time in steps (`1/(lr*wd)`, SGD's L2
    /// divided by `1-momentum`).
    #[pyo3(signature = (shape=None))]
    fn equilibrium(&self, shape: Option<(usize, usize)>) -> (Option<f64>, f64) {
        let h = &self.inner;
        (theory::predicted_angle(h.family(), h.lr, h.weight_decay, shape), 1.0 / h.relax_rate())
    }

    /// The equilibrium angle between weights `k` steps apart (F17), or `None`.
    fn gap_angle(&self, k: u64) -> Option<f64> {
        theory::gap_angle(self.inner.family(), self.inner.lr, self.inner.weight_decay, k)
    }

    /// F13: `||g||/||w||` at equilibrium under SGD, or `None` where it depends on the gradient.
    fn grad_weight_ratio(&self) -> Option<f64> {
        theory::grad_weight_ratio(self.inner.family(), self.inner.lr, self.inner.weight_decay)
    }

    /// The effective learning rate of a weight of norm `norm` (`lr/norm^2` or `lr/norm`).
    fn effective_lr(&self, norm: f64) -> PyResult<f64> {
        if !(norm.is_finite() && norm > 0.0) {
            return Err(invalid("norm", norm, "a finite number > 0"));
        }
        Ok(self.inner.optimizer.step_scale().effective_lr(self.inner.lr, norm))
    }

    /// The mistakes of a tensor of role `role_name` trained with these settings:
    /// `(code, severity, why)` each.
    #[pyo3(signature = (role_name, scale_invariant, output=false))]
    fn mistakes(&self, role_name: &str, scale_invariant: bool, output: bool) -> PyResult<Vec<(&'static str, &'static str, &'static str)>> {
        let h = &self.inner;
        Ok(advice::mistakes(parse("role", role_name)?, scale_invariant, output, h.weight_decay, h.family())
            .into_iter()
            .map(described)
            .collect())
    }

    fn __repr__(&self) -> String {
        let h = &self.inner;
        format!(
            "Hyper({:?}, lr={}, weight_decay={}, momentum={}, betas={:?}, decoupled={})",
            h.optimizer.name(),
            h.lr,
            h.weight_decay,
            h.momentum,
            h.betas,
            if h.coupled { "False" } else { "True" }
        )
    }
}

/// A tensor's group's settings at one step, as the probe-record builder takes them:
/// `StepSettings(hyper, lr, weight_decay)` with the group's closed form (`None` for an optimizer
/// without one: no prediction and no effective lr), its lr at this step and the decay acting
/// then (corrected and cautious decay accounted for). Unlike `Hyper` it takes an lr of 0 (the
/// end of a schedule), where nothing is predicted.
#[pyclass(name = "StepSettings", frozen, module = "normwd._core")]
struct PyStepSettings {
    inner: StepSettings,
}

#[pymethods]
impl PyStepSettings {
    #[new]
    #[pyo3(signature = (optimizer, lr, weight_decay, momentum=0.0, betas=None, decoupled=None, nesterov=None))]
    fn new(
        optimizer: Option<&str>,
        lr: f64,
        weight_decay: f64,
        momentum: f64,
        betas: Option<(f64, f64)>,
        decoupled: Option<bool>,
        nesterov: Option<bool>,
    ) -> PyResult<Self> {
        for (name, v) in [("lr", lr), ("weight_decay", weight_decay)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(name, v, "a finite number >= 0"));
            }
        }
        let inner = match optimizer {
            Some(name) => {
                let rule: Rule = parse("optimizer", name)?;
                // An lr of 0 has no equilibrium: the family is only taken from valid settings.
                let family =
                    if lr > 0.0 { hyper(name, lr, weight_decay, momentum, betas, decoupled, nesterov)?.family() } else { Family::Other };
                StepSettings { family, step: Some(rule.step_scale()), lr, weight_decay }
            }
            None => StepSettings { family: Family::Other, step: None, lr, weight_decay },
        };
        Ok(PyStepSettings { inner })
    }

    /// The lr at this step.
    #[getter]
    fn lr(&self) -> f64 {
        self.inner.lr
    }

    /// The decay acting at this step.
    #[getter]
    fn weight_decay(&self) -> f64 {
        self.inner.weight_decay
    }

    /// The mistakes of a tensor of role `role_name` in this group: `(code, severity, why)`
    /// each (an optimizer without a closed form: the mistakes of roles only).
    #[pyo3(signature = (role_name, scale_invariant, output=false))]
    fn mistakes(&self, role_name: &str, scale_invariant: bool, output: bool) -> PyResult<Vec<(&'static str, &'static str, &'static str)>> {
        let s = &self.inner;
        Ok(advice::mistakes(parse("role", role_name)?, scale_invariant, output, s.weight_decay, s.family)
            .into_iter()
            .map(described)
            .collect())
    }
}

/// The names of the roles a tensor can have.
#[pyfunction]
fn roles() -> Vec<&'static str> {
    Role::ALL.map(|r| r.name()).to_vec()
}

/// The role a tensor's own (last) name says whatever module holds it (a position embedding or
/// token: `token`; weight norm's gain: `norm-scale`), or `None`: the core's name lists.
#[pyfunction]
fn role_from_name(local: &str) -> Option<&'static str> {
    normwd_core::roles::role_from_name(local).map(Role::name)
}

/// Whether Muon steps a tensor of role `role_name` with `ndim` dimensions (`output`: the layer
/// that produces the logits): hidden weight matrices and conv kernels, the core's one rule.
#[pyfunction]
fn muon_takes(role_name: &str, ndim: usize, output: bool) -> PyResult<bool> {
    Ok(normwd_core::roles::muon_takes(parse("role", role_name)?, ndim, output))
}

/// Whether corrected decay reaches a tensor of this scale-invariance: the core's one rule.
#[pyfunction]
fn corrected_decay_applies(scale_invariant: bool) -> bool {
    normwd_core::roles::corrected_decay_applies(scale_invariant)
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

/// The effective learning rate of a scale-invariant weight of norm `norm`: `lr/norm^2` for SGD,
/// `lr/norm` for the sign-like updates of Adam and Lion (the core's one rule, `StepScale`).
#[pyfunction]
fn effective_lr(optimizer: &str, lr: f64, norm: f64) -> PyResult<f64> {
    let rule: Rule = parse("optimizer", optimizer)?;
    if !(norm.is_finite() && norm > 0.0) {
        return Err(invalid("norm", norm, "a finite number > 0"));
    }
    Ok(rule.step_scale().effective_lr(lr, norm))
}

/// One `metrics.jsonl` line: the probe record of tensor `path` (role `role_name`, `ndim`
/// dimensions) at update `step`, built by the core's one builder from the raw float64 sums a
/// writer measured, `sums = [||w||^2, ||g||^2, <w,g>, ||w'||^2, <w,w'>]` followed, for per
/// channel measurements, by the rows' `||w_r||^2`, then `||w'_r||^2`, then `<w_r,w'_r>`, under
/// the tensor's group's `settings` at that step. `steps`, where the writer measured the update
/// `d = w' - w` itself: `[||d||^2, <w,d>]`, then (with rows) the rows' `||d_r||^2`, then
/// `<w_r,d_r>`; the angles are then taken from it, precise at any size. `channels`: how the
/// per-channel measurements are kept (`full`, `summary`: five quantiles each, `none`). `shape`:
/// the tensor's `(rows, cols)` view, which Muon's prediction needs.
#[pyfunction]
#[pyo3(signature = (step, path, role_name, ndim, scale_invariant, sums, settings, steps=None, channels="full", shape=None))]
#[allow(clippy::too_many_arguments)]
fn probe_record(
    step: u64,
    path: &str,
    role_name: &str,
    ndim: usize,
    scale_invariant: bool,
    sums: Vec<f64>,
    settings: &PyStepSettings,
    steps: Option<Vec<f64>>,
    channels: &str,
    shape: Option<(usize, usize)>,
) -> PyResult<String> {
    let channels: probe::Channels = parse("channels", channels)?;
    let (head, rows) = match sums.split_first_chunk::<5>() {
        Some((head, rows)) if rows.len() % 3 == 0 => (head, rows),
        _ => return Err(invalid("sums", format!("a list of {} numbers", sums.len()), "5 numbers, then 3 per output channel")),
    };
    let n = rows.len() / 3;
    let m = Sums {
        path: path.to_string(),
        norm: head[0].sqrt(),
        grad_norm: head[1].sqrt(),
        dot_wg: head[2],
        norm_after: head[3].sqrt(),
        dot_ww: head[4],
        // The Monitor does not measure the rows' gradients (no field needs them).
        rows: (0..n).map(|i| [rows[i].sqrt(), f64::NAN, f64::NAN, rows[2 * n + i], rows[n + i].sqrt()]).collect(),
        step: None,
        row_steps: Vec::new(),
    };
    let m = match steps {
        None => m,
        Some(d) if d.len() == 2 + 2 * n || d.len() == 2 => {
            let row_steps = if d.len() == 2 { Vec::new() } else { (0..n).map(|i| [d[2 + i], d[2 + n + i]]).collect() };
            Sums { step: Some([d[0], d[1]]), row_steps, ..m }
        }
        Some(d) => {
            return Err(invalid(
                "steps",
                format!("a list of {} numbers", d.len()),
                format!("2 numbers, or 2 + 2 per output channel ({})", 2 + 2 * n),
            ))
        }
    };
    let facts = TensorFacts { role: parse("role", role_name)?, ndim, scale_invariant, shape: shape.unwrap_or((1, 1)) };
    let mut record = probe::record(step, facts, &settings.inner, &m, None);
    record.keep_channels(channels);
    Ok(Record::Probe(record).to_line())
}

/// Whether a tensor of role `role_name` is probed (weights and norm scales): the core's rule.
#[pyfunction]
fn probed(role_name: &str) -> PyResult<bool> {
    Ok(probe::probed(parse("role", role_name)?))
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
    lr_range: Option<[f64; 2]>,
    #[serde(default)]
    lr_initial: Option<f64>,
    #[serde(default)]
    scheduler: Option<String>,
}

/// Writes `config.toml` into run folder `dir` (atomically) for a training another program ran
/// and `normwd.torch.Monitor` measured, from `fields` (JSON, [`Measured`]'s fields): the run
/// format's settings as far as they are known, marked external, so `normwd report` reads it and
/// `normwd train --resume` refuses it.
#[pyfunction]
fn write_run_config(dir: &str, fields: &str) -> PyResult<()> {
    let m: Measured = serde_json::from_str(fields).map_err(|e| PyValueError::new_err(format!("run settings: {e}")))?;
    // An optimizer without a closed form is recorded as such (`no_closed_form`), never as
    // SGD's; NAdam, which the engine does not train with, as the kind whose facts it shares
    // (Adam's), its own name in `external.optimizer`.
    let rule: Option<Rule> = m.rule.as_deref().map(|r| parse("rule", r)).transpose()?;
    let config = RunConfig {
        optimizer: rule.map(|r| r.kind().unwrap_or(OptimKind::Adam)).unwrap_or(OptimKind::Sgd),
        lr: m.lr,
        momentum: m.momentum,
        weight_decay: m.weight_decay,
        betas: m.betas.map(|(a, b)| [a, b]),
        decay: m.decoupled.map(|d| if d { DecayMode::Decoupled } else { DecayMode::Coupled }),
        decay_policy: Some(parse("policy", &m.policy)?),
        probe_every: Some(m.every),
        external: Some(External {
            source: m.source,
            model: m.model,
            optimizer: m.optimizer,
            lr_varies: m.lr_varies,
            no_closed_form: rule.is_none(),
            lr_range: m.lr_range,
            lr_initial: m.lr_initial,
            scheduler: m.scheduler,
        }),
        ..Default::default()
    };
    // Muon's first group (Muon beside AdamW: `lr` and the rest are Muon's) holds Muon's own
    // settings, which the report's relaxation time reads.
    let config = match rule {
        Some(Rule::Muon) => {
            RunConfig { muon_lr: config.lr, muon_momentum: config.momentum, muon_weight_decay: Some(config.weight_decay), ..config }
        }
        _ => config,
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
    m.add_class::<PyHyper>()?;
    m.add_class::<PyStepSettings>()?;
    m.add_function(wrap_pyfunction!(roles, m)?)?;
    m.add_function(wrap_pyfunction!(policies, m)?)?;
    m.add_function(wrap_pyfunction!(role_from_name, m)?)?;
    m.add_function(wrap_pyfunction!(corrected_decay_applies, m)?)?;
    m.add_function(wrap_pyfunction!(muon_takes, m)?)?;
    m.add_function(wrap_pyfunction!(optimizers, m)?)?;
    m.add_function(wrap_pyfunction!(decide, m)?)?;
    m.add_function(wrap_pyfunction!(mistake, m)?)?;
    m.add_function(wrap_pyfunction!(effective_lr, m)?)?;
    m.add_function(wrap_pyfunction!(decay_acting, m)?)?;
    m.add_function(wrap_pyfunction!(angle_from_dot, m)?)?;
    m.add_function(wrap_pyfunction!(equilibrium_norm_sgd, m)?)?;
    m.add_function(wrap_pyfunction!(probe_record, m)?)?;
    m.add_function(wrap_pyfunction!(probed, m)?)?;
    m.add_function(wrap_pyfunction!(write_run_config, m)?)?;
    m.add_function(wrap_pyfunction!(report, m)?)?;
    Ok(())
}
