//! `inspect`: the same measurements as a normwd run, on a series of checkpoints saved by any
//! framework (safetensors from PyTorch's `state_dict` or flattened Flax/JAX parameters,
//! PyTorch's own `torch.save` files, Flax's msgpack files):
//! norms, angles between consecutive checkpoints, effective learning rates, the theory's
//! equilibrium, and flags for the common mistakes.
//!
//! May import `params`, `optim` (the theory family of named optimizers) and the core.

pub mod charts;
pub mod decay;
pub mod equilibrium;
pub mod flax;
pub mod onnx;
pub mod optimizer;
pub mod torch;

use crate::params::Role;
use crate::theory::{self, Family};
use normwd_core::probe::{self, StepSettings, TensorFacts};
use normwd_core::run::OPTIM_PREFIX;
use normwd_core::store::{self, StoreError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Errors of `inspect`.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// A checkpoint cannot be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The series is inconsistent or unusable.
    #[error("{file}: {what}")]
    Series {
        /// The file.
        file: String,
        /// What is wrong, naming the tensor.
        what: String,
    },
    /// A checkpoint holds NaN or inf: the training it comes from diverged.
    #[error("{file}: tensor {tensor} holds {bad} NaN/inf values of {of}: the training diverged by step {step}")]
    NonFinite {
        /// The file.
        file: String,
        /// The first tensor with such values.
        tensor: String,
        /// How many of its values are not finite.
        bad: usize,
        /// How many values it has.
        of: usize,
        /// The checkpoint's step.
        step: u64,
    },
}

impl normwd_core::exit::ExitCode for InspectError {
    /// Checkpoints are the command's input; one that holds NaN/inf is a failed training (1).
    fn exit_code(&self) -> i32 {
        match self {
            InspectError::NonFinite { .. } => 1,
            _ => 2,
        }
    }
}

/// The [`InspectError::Series`] for `path`.
fn at(path: &Path, what: String) -> InspectError {
    InspectError::Series { file: path.display().to_string(), what }
}

/// One tensor: shape and values.
pub type Array = (Vec<usize>, Vec<f32>);

/// Tensors by name.
pub type Tensors = BTreeMap<String, Array>;

/// One checkpoint of the series.
pub struct Checkpoint {
    /// File path.
    pub file: String,
    /// Training step.
    pub step: u64,
    /// Tensors by name.
    pub tensors: Tensors,
    /// The top-level key a `torch.save` file's weights were read under, if any.
    pub key: Option<String>,
    /// The optimizer state saved with it (in the `torch.save` file, or a Trainer folder's
    /// `optimizer.pt`), or why it cannot be used.
    pub optimizer: Option<Result<optimizer::StoredOptimizer, String>>,
}

/// The weights files of a Hugging Face Trainer checkpoint folder, in the order they are looked for.
pub const TRAINER_WEIGHTS: [&str; 3] = ["model.safetensors", "pytorch_model.bin", "flax_model.msgpack"];

/// The step of a Hugging Face Trainer checkpoint folder (`checkpoint-500` -> 500).
fn trainer_step(dir: &Path) -> Option<u64> {
    dir.file_name()?.to_str()?.strip_prefix("checkpoint-")?.parse().ok()
}

/// The weights file of the Trainer checkpoint folder `dir` (the optimizer's, scheduler's and
/// RNG files beside it are not weights).
fn trainer_weights(dir: &Path) -> Result<PathBuf, InspectError> {
    if let Some(w) = TRAINER_WEIGHTS.iter().map(|w| dir.join(w)).find(|w| w.is_file()) {
        return Ok(w);
    }
    let sharded = ["model.safetensors.index.json", "pytorch_model.bin.index.json"].iter().any(|i| dir.join(i).is_file());
    Err(at(
        dir,
        if sharded {
            "holds a sharded checkpoint (model-0000N-of-0000M files): not supported, save with a larger max_shard_size".into()
        } else {
            format!("a Trainer checkpoint folder without weights: expected one of {}", TRAINER_WEIGHTS.join(", "))
        },
    ))
}

/// The Trainer checkpoint folder `path` is the weights file of, if it is one.
fn trainer_folder(path: &Path) -> Option<&Path> {
    let weights = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| TRAINER_WEIGHTS.contains(&n));
    path.parent().filter(|d| weights && trainer_step(d).is_some())
}

/// A checkpoint's step from its name: the Trainer folder it sits in (`checkpoint-500/model.safetensors`
/// -> 500), else the last run of digits in the file stem (`ckpt_000300.safetensors` -> 300,
/// Lightning's `epoch=1-step=10.ckpt` -> 10).
pub fn step_from_name(path: &Path) -> Option<u64> {
    if let Some(step) = trainer_folder(path).and_then(trainer_step) {
        return Some(step);
    }
    let stem = path.file_stem()?.to_string_lossy();
    let digits: String = stem.chars().rev().skip_while(|c| !c.is_ascii_digit()).take_while(|c| c.is_ascii_digit()).collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

/// File extensions a folder's checkpoints are recognized by: safetensors, and what
/// `torch.save` files are usually called (`.bin`: Hugging Face's `pytorch_model.bin`;
/// `.ckpt`: Lightning), and Flax's msgpack.
pub const EXTENSIONS: [&str; 6] = ["safetensors", "pt", "pth", "bin", "ckpt", "msgpack"];

/// Expands folders into their checkpoint files ([`EXTENSIONS`]). A Hugging Face Trainer
/// output folder gives the weights of each of its `checkpoint-N/` folders, and such a folder
/// given itself gives its weights file.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InspectError> {
    let mut out = Vec::new();
    for p in paths {
        if !p.exists() {
            return Err(at(p, "no such file or folder".into()));
        }
        if p.is_dir() && trainer_step(p).is_some() {
            out.push(trainer_weights(p)?);
        } else if p.is_dir() {
            let entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| at(p, format!("cannot read folder ({e})")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            let mut trainer: Vec<&PathBuf> = entries.iter().filter(|d| d.is_dir() && trainer_step(d).is_some()).collect();
            if !trainer.is_empty() {
                trainer.sort_by_key(|d| trainer_step(d));
                for d in trainer {
                    out.push(trainer_weights(d)?);
                }
                continue;
            }
            let mut v: Vec<PathBuf> =
                entries.into_iter().filter(|f| f.extension().is_some_and(|e| EXTENSIONS.iter().any(|x| e == *x))).collect();
            v.sort();
            out.extend(v);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Reads a series of checkpoints, ordered by step (from `steps`, or the file names), and checks
/// that every checkpoint holds the same tensor names and shapes and that no two share a step.
/// `key` picks the dictionary holding the weights in `torch.save` files ([`torch::read`]).
pub fn load_series(paths: &[PathBuf], steps: Option<&[u64]>, key: Option<&str>) -> Result<Vec<Checkpoint>, InspectError> {
    let files = expand(paths)?;
    if files.len() < 2 {
        return Err(InspectError::Series {
            file: paths.first().map(|p| p.display().to_string()).unwrap_or_default(),
            what: format!("{} checkpoint(s): need at least 2 to measure angles", files.len()),
        });
    }
    if let Some(s) = steps {
        if s.len() != files.len() {
            return Err(InspectError::Series {
                file: "--steps".into(),
                what: format!("{} steps for {} checkpoints", s.len(), files.len()),
            });
        }
    }
    let mut series = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let step = match steps {
            Some(s) => s[i],
            None => step_from_name(f).ok_or_else(|| InspectError::Series {
                file: f.display().to_string(),
                what: "no step number in the file name: pass --steps".into(),
            })?,
        };
        // Flax's by name, first: a msgpack map's first byte can equal a pickle's, and its
        // ninth a safetensors header's.
        let (key_used, tensors, mut opt) = if f.extension().is_some_and(|e| e == "msgpack") {
            (None, flax::read(f)?, None)
        } else if torch::is_safetensors(f)? {
            // A normwd checkpoint holds its optimizer's state beside the model, under `optim/`:
            // not tensors of the model.
            let model = store::read_safetensors(f)?.tensors.into_iter().filter(|(name, _)| !name.starts_with(OPTIM_PREFIX)).collect();
            (None, model, None)
        } else {
            let t = torch::read(f, key)?;
            (t.key, t.tensors, t.optimizer)
        };
        // A Trainer saves the optimizer beside the weights.
        if let Some(dir) = trainer_folder(f) {
            opt = opt.or_else(|| torch::trainer_optimizer(&dir.join("optimizer.pt")));
        }
        if let Some((name, (_, v))) = tensors.iter().find(|(_, (_, v))| v.iter().any(|x| !x.is_finite())) {
            let bad = v.iter().filter(|x| !x.is_finite()).count();
            return Err(InspectError::NonFinite { file: f.display().to_string(), tensor: name.clone(), bad, of: v.len(), step });
        }
        series.push(Checkpoint { file: f.display().to_string(), step, tensors, key: key_used, optimizer: opt });
    }
    series.sort_by_key(|c| c.step);
    // The same step twice is the same checkpoint saved twice (ckpt_20.pt beside
    // ckpt_20.safetensors): its angle of 0 would read as a frozen layer.
    if let Some(w) = series.windows(2).find(|w| w[0].step == w[1].step) {
        return Err(at(Path::new(&w[1].file), format!("step {} is also the step of {}", w[1].step, w[0].file)));
    }
    let first = &series[0];
    for c in &series[1..] {
        for (name, (shape, _)) in &first.tensors {
            match c.tensors.get(name) {
                None => {
                    return Err(InspectError::Series {
                        file: c.file.clone(),
                        what: format!("tensor {name} is missing (present in {})", first.file),
                    })
                }
                Some((s, _)) if s != shape => {
                    return Err(InspectError::Series {
                        file: c.file.clone(),
                        what: format!("tensor {name} has shape {s:?}, {} has {shape:?}", first.file),
                    })
                }
                _ => {}
            }
        }
        if let Some(extra) = c.tensors.keys().find(|k| !first.tensors.contains_key(*k)) {
            return Err(InspectError::Series { file: c.file.clone(), what: format!("tensor {extra} is not in {}", first.file) });
        }
    }
    Ok(series)
}

/// Writes a role in inspect's JSON as its table name (`norm-scale`), the spelling inspect's
/// JSON has always used.
fn role_name<S: serde::Serializer>(role: &Role, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(role.name())
}

/// Roles from names and shapes (no graph): buffers by name, biases by suffix, 1-D weights as
/// norm scales, and a >= 2-D weight counts as scale-invariant (a guess) when a norm layer's
/// scale of the same width sits next to it by name: `conv1`/`bn1` (same parent, same trailing
/// number) or `features.0`/`features.1` (the next index of a sequence). Weight norm's `weight_v`
/// always is.
pub fn guess_roles(names: &[(String, Vec<usize>)]) -> Vec<(Role, bool)> {
    // A 1-D `bias` whose sibling scale (`weight`, `scale`, `gamma`) is also 1-D belongs to a norm layer.
    let sibling_scale = |n: &str| -> bool {
        let Some((module, _)) = n.rsplit_once(['.', '/']) else { return false };
        names.iter().any(|(m, ms)| {
            ms.len() <= 1 && ["weight", "scale", "gamma"].iter().any(|s| *m == format!("{module}.{s}") || *m == format!("{module}/{s}"))
        })
    };
    // Embedding tables are looked up, not multiplied into a normalized output, and tokens are
    // added: never scale-invariant by name.
    let embedding = |n: &str| {
        let module = n.rsplit_once(['.', '/']).map(|(m, _)| m).unwrap_or("");
        let module = module.rsplit(['.', '/']).next().unwrap_or(module).to_ascii_lowercase();
        ["embed", "wte", "wpe", "emb"].iter().any(|k| module.contains(k))
    };
    let role = |n: &str, s: &[usize]| {
        let last = n.rsplit(['.', '/']).next().unwrap_or(n);
        if ["running_mean", "running_var", "num_batches_tracked", "mean", "var"].contains(&last) {
            Role::Buffer
        } else if let Some(r @ (Role::Token | Role::Dynamics)) = normwd_core::roles::role_from_name(last) {
            r
        } else if s.len() <= 1
            && (["weight", "gamma", "scale"].contains(&last) || normwd_core::roles::role_from_name(last) == Some(Role::NormScale))
        {
            Role::NormScale
        } else if s.len() <= 1 && (last == "beta" || (last == "bias" && sibling_scale(n))) {
            Role::NormShift
        } else if last == "bias" {
            Role::Bias
        } else if s.len() >= 2 && embedding(n) {
            Role::Embedding
        } else {
            Role::Weight
        }
    };
    // Output channels: dimension 0 in PyTorch's layout, the last one for Flax's `kernel`.
    let out_dim = |n: &str, s: &[usize]| if n.ends_with("kernel") { s.last().copied() } else { s.first().copied() };
    let roles: Vec<Role> = names.iter().map(|(n, s)| role(n, s)).collect();
    // Splits `a.b.conv1.weight` into (`a.b`, `conv1`).
    let layer = |n: &str| -> (String, String) {
        let module = n.rsplit_once(['.', '/']).map(|(m, _)| m).unwrap_or("");
        match module.rsplit_once(['.', '/']) {
            Some((parent, last)) => (parent.to_string(), last.to_string()),
            None => (String::new(), module.to_string()),
        }
    };
    let trailing =
        |s: &str| -> String { s.chars().rev().take_while(|c| c.is_ascii_digit()).collect::<Vec<_>>().into_iter().rev().collect() };
    // Evidence that norm `b` is the layer right after `a`: the next index of a sequence
    // (`0.weight`, `1.weight`), or a module named as a norm with the same number in the same
    // block (`conv1`/`bn1`, `conv`/`norm`). Two siblings are not evidence by themselves: GPT-2's
    // `wpe` and `ln_f` share a parent and, in small models, a width.
    let normish = |m: &str| {
        let m = m.to_ascii_lowercase();
        ["bn", "norm", "ln", "gn"].iter().any(|k| m.contains(k))
    };
    let neighbours = |a: &str, b: &str| -> bool {
        let ((pa, la), (pb, lb)) = (layer(a), layer(b));
        if pa != pb {
            return false;
        }
        match (la.parse::<u64>(), lb.parse::<u64>()) {
            (Ok(x), Ok(y)) => y == x + 1,
            _ => {
                normish(&lb)
                    && !normish(&la)
                    && trailing(&la) == trailing(&lb)
                    && la.trim_end_matches(char::is_numeric) != lb.trim_end_matches(char::is_numeric)
            }
        }
    };
    names
        .iter()
        .enumerate()
        .map(|(i, (n, s))| {
            let r = roles[i];
            let si = r == Role::Weight
                && s.len() >= 2
                && (n.ends_with("weight_v")
                    || names
                        .iter()
                        .zip(&roles)
                        .any(|((m, ms), mr)| *mr == Role::NormScale && ms.first().copied() == out_dim(n, s) && neighbours(n, m)));
            (r, si)
        })
        .collect()
}

/// The training's optimizer settings, for predictions (the core's).
pub use normwd_core::optim::Hyper;

/// How one tensor was trained, as far as `inspect` knows.
#[derive(Debug, Clone)]
pub struct Training {
    /// Its optimizer settings (`None`: its group is not told, so nothing is predicted).
    pub hyper: Option<Hyper>,
    /// The learning rate at each checkpoint (a schedule's, from the saved optimizer states; else
    /// `hyper.lr` throughout).
    pub lrs: Vec<f64>,
    /// Its group in the saved optimizer, and the group's weight decay.
    pub group: Option<(usize, f64)>,
    /// Why its group is not told, or that it is in none.
    pub note: Option<String>,
}

impl Training {
    /// Every tensor trained with `h` at a constant learning rate (the flags' settings).
    pub fn uniform(series: &[Checkpoint], h: &Hyper) -> Vec<Training> {
        let t = Training { hyper: Some(h.clone()), lrs: vec![h.lr; series.len()], group: None, note: None };
        vec![t; series[0].tensors.len()]
    }

    /// Each tensor's settings from the saved optimizer `opt` (the last checkpoint's), its groups'
    /// settings as `hypers` (the saved ones with the flags laid over): the group it is in, by
    /// [`optimizer::assign`], and each checkpoint's learning rate from that checkpoint's state
    /// unless `lr_given` (the flag fixes it).
    pub fn from_optimizer(series: &[Checkpoint], opt: &optimizer::StoredOptimizer, hypers: &[Hyper], lr_given: bool) -> Vec<Training> {
        let names: Vec<(String, Vec<usize>)> = series[0].tensors.iter().map(|(n, (s, _))| (n.clone(), s.clone())).collect();
        let roles = guess_roles(&names);
        let params: Vec<(String, Vec<usize>)> =
            names.iter().zip(&roles).filter(|(_, (r, _))| *r != Role::Buffer).map(|(n, _)| n.clone()).collect();
        let mut membership = optimizer::assign(opt, &params).into_iter();
        let lr_at = |c: &Checkpoint, g: usize| match &c.optimizer {
            Some(Ok(o)) if !lr_given && o.groups.len() == opt.groups.len() => o.groups[g].hyper.lr,
            _ => hypers[g].lr,
        };
        // No settings to predict with: a buffer (no note), or a parameter the state does not place.
        let untold = |note: Option<String>| Training { hyper: None, lrs: vec![f64::NAN; series.len()], group: None, note };
        roles
            .iter()
            .map(|(role, _)| {
                if *role == Role::Buffer {
                    return untold(None);
                }
                match membership.next().expect("one membership per parameter") {
                    optimizer::Membership::Group(g) => Training {
                        hyper: Some(hypers[g].clone()),
                        lrs: series.iter().map(|c| lr_at(c, g)).collect(),
                        group: Some((g, hypers[g].weight_decay)),
                        note: None,
                    },
                    optimizer::Membership::None => untold(Some(format!(
                        "in no group of the optimizer saved in {}: frozen, or left out when the groups were built",
                        opt.source
                    ))),
                    optimizer::Membership::Unknown(why) => {
                        untold(Some(format!("its optimizer group is not told by {}: {why}", opt.source)))
                    }
                }
            })
            .collect()
    }
}

/// Measurements of one tensor over the series.
#[derive(Debug, Clone, Serialize)]
pub struct TensorReport {
    /// Name in the checkpoint.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Role (running statistics and counters such as `num_batches_tracked` are buffers).
    #[serde(serialize_with = "role_name")]
    pub role: Role,
    /// Whether it is scale-invariant.
    pub scale_invariant: bool,
    /// `graph` when an ONNX graph said so, `guess` when inferred from names and shapes.
    pub invariance_source: String,
    /// Norm at each checkpoint.
    pub norms: Vec<f64>,
    /// Angle between consecutive checkpoints (radians).
    pub angles: Vec<f64>,
    /// Effective learning rate at each checkpoint (`lr/||w||^2`, Adam: `lr/||w||`), given `--lr`.
    pub eff_lr: Vec<f64>,
    /// Predicted equilibrium angle per step, by the core's one rule ([`probe::prediction`]:
    /// scale-invariant weights, and decayed matrices approximately).
    pub pred_angle: Option<f64>,
    /// What the prediction stands on (`scale-invariant` or `approximate`).
    pub pred_basis: Option<probe::Basis>,
    /// F17's equilibrium angle over each gap between consecutive checkpoints (empty without a
    /// prediction).
    pub pred_gap_angles: Vec<f64>,
    /// Steps between the last two checkpoints (the gap the verdict compares over).
    pub last_gap_steps: u64,
    /// Angle between the last two checkpoints (radians): `angles`' last entry.
    pub last_gap_angle: f64,
    /// Predicted equilibrium angle between weights `last_gap_steps` apart (F17), which is not
    /// `last_gap_steps` times the angle per step once the gap nears the relaxation time.
    pub pred_last_gap_angle: Option<f64>,
    /// The optimizer settings its predictions were made with (`None`: its group is not told).
    pub hyper: Option<Hyper>,
    /// The saved optimizer's group holding it, when the checkpoints hold the optimizer state.
    pub optimizer_group: Option<usize>,
    /// Whether it is decayed ([`decay`]): norm scales always, other tensors when the optimizer
    /// state tells.
    pub decay: Option<decay::DecayReading>,
    /// Whether the weight is at equilibrium ([`equilibrium::verdict`]); `None` without a
    /// prediction (not scale-invariant, no decay, or no closed form for the optimizer).
    pub at_equilibrium: Option<bool>,
    /// What the verdict was read from: `angle` (gaps against F17) or `norm` (stationary norm).
    pub equilibrium_basis: Option<&'static str>,
    /// Common mistakes seen on this tensor.
    pub flags: Vec<String>,
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

fn angle(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    theory::angle_from_dot(dot, norm(a), norm(b))
}

/// The checkpoint names of an ONNX graph's weights before a normalization, and the graph
/// names found in no checkpoint. A name matches as it is, or under a leading component that
/// every checkpoint name has and the graph's lack (`module.` from DistributedDataParallel, a
/// wrapper's `model.`, a `torch.save` checkpoint's nesting key): a graph exported from the bare
/// model then still marks the weights, instead of marking none without a word.
pub fn graph_names_in(checkpoint: &[&str], graph: &[String]) -> (Vec<String>, Vec<String>) {
    // (found under `p`, missing) for one prefix.
    let under = |p: &str| {
        let (found, missing): (Vec<String>, Vec<String>) =
            graph.iter().cloned().partition(|g| checkpoint.contains(&format!("{p}{g}").as_str()));
        (found.into_iter().map(|g| format!("{p}{g}")).collect::<Vec<_>>(), missing)
    };
    let direct = under("");
    let common = checkpoint
        .first()
        .and_then(|n| n.split_once('.'))
        .map(|(p, _)| format!("{p}."))
        .filter(|p| checkpoint.iter().all(|n| n.starts_with(p.as_str())));
    match common.map(|p| under(&p)) {
        Some(prefixed) if prefixed.0.len() > direct.0.len() => prefixed,
        _ => direct,
    }
}

/// Measures every tensor of the series; `si_from_graph` lists the weights an ONNX graph shows
/// feeding a normalization layer (None: guess from names); `trainings` holds each tensor's
/// settings, in the checkpoints' order ([`Training::uniform`], [`Training::from_optimizer`]).
pub fn measure(series: &[Checkpoint], si_from_graph: Option<&[String]>, trainings: &[Training]) -> Vec<TensorReport> {
    let names: Vec<(String, Vec<usize>)> = series[0].tensors.iter().map(|(n, (s, _))| (n.clone(), s.clone())).collect();
    let guessed = guess_roles(&names);
    let steps: Vec<u64> = series.iter().map(|c| c.step).collect();
    let gap = steps[steps.len() - 1] - steps[steps.len() - 2];
    names
        .iter()
        .zip(guessed)
        .zip(trainings)
        .map(|(((name, shape), (role, guess)), t)| {
            let (si, source) = match si_from_graph {
                Some(list) => (list.contains(name), "graph"),
                None => (guess, "guess"),
            };
            let vals: Vec<&Vec<f32>> = series.iter().map(|c| &c.tensors[name].1).collect();
            let norms: Vec<f64> = vals.iter().map(|v| norm(v)).collect();
            let angles: Vec<f64> = vals.windows(2).map(|w| angle(w[0], w[1])).collect();
            let last_angle = angles.last().copied().unwrap_or(0.0);
            // The settings over gap `i`: a schedule's lr taken as the mean of the gap's ends.
            let at_gap = |h: &Hyper, i: usize| Hyper { lr: 0.5 * (t.lrs[i] + t.lrs[i + 1]), ..h.clone() };
            let h = t.hyper.as_ref();
            // The core's settings at checkpoint `i` (an unknown optimizer: no effective lr).
            let step_settings = |i: usize| match h {
                Some(h) => StepSettings {
                    family: h.family(),
                    step: Some(h.optimizer.step_scale()),
                    lr: t.lrs[i],
                    weight_decay: h.weight_decay,
                },
                None => StepSettings { family: Family::Other, step: None, lr: t.lrs[i], weight_decay: 0.0 },
            };
            let eff_lr: Vec<f64> = norms.iter().enumerate().map(|(i, n)| probe::effective_lr(&step_settings(i), *n)).collect();
            let rows = shape.first().copied().unwrap_or(1).max(1);
            let facts = TensorFacts { role, ndim: shape.len(), scale_invariant: si, shape: (rows, shape.iter().product::<usize>() / rows) };
            let prediction = probe::prediction(facts, &step_settings(t.lrs.len() - 1));
            let pred = prediction.angle;
            let pred_gap_angles: Vec<f64> = match (h, pred) {
                (Some(h), Some(_)) => (0..angles.len()).filter_map(|i| theory::gap_angle(h.family(), at_gap(h, i).lr, h.weight_decay, steps[i + 1] - steps[i])).collect(),
                _ => Vec::new(),
            };
            let verdict = match (h, pred) {
                (Some(h), Some(_)) => {
                    let last = Hyper { lr: t.lrs[t.lrs.len() - 1], ..h.clone() };
                    equilibrium::verdict(&steps, &norms, &angles, last.relax_rate(), |i| pred_gap_angles.get(i).copied())
                }
                _ => None,
            };
            let decay = match (t.group, h) {
                (Some((g, wd)), _) => Some(decay::from_group(g, wd)),
                (None, Some(h)) if role == Role::NormScale => Some(decay::from_norms(&steps, &norms, |i| at_gap(h, i).decay_rate())),
                (None, None) if role == Role::NormScale => Some(decay::DecayReading {
                    decayed: decay::Decayed::CannotTell,
                    source: "optimizer",
                    observed: None,
                    decay_only: None,
                    why: t.note.clone().unwrap_or_default(),
                }),
                _ => None,
            };
            let mut flags = Vec::new();
            if let Some(n) = t.note.as_ref().filter(|n| n.starts_with("in no group")) {
                flags.push(n.clone());
            }
            let decayed = decay.as_ref().map(|d| d.decayed);
            if let (Some(_), Some(h)) = (t.group, h) {
                // The group is known: the mistakes are facts, decided by the core.
                for m in normwd_core::advice::mistakes(role, si, false, h.weight_decay, h.family()) {
                    // Growing norms say more than the rule alone (below).
                    if m != normwd_core::advice::Mistake::InvariantUndecayed {
                        flags.push(format!("{}: {} ({})", m.name(), m.why(), decay.as_ref().map(|d| d.why.as_str()).unwrap_or_default()));
                    }
                }
            } else if decayed == Some(decay::Decayed::LooksDecayed) {
                flags.push(format!(
                    "norm-layer scale {}: it looks decayed; exclude norm layers from weight decay",
                    decay.as_ref().map(|d| d.why.as_str()).unwrap_or_default()
                ));
            }
            let change = norms.last().unwrap_or(&1.0) / norms.first().unwrap_or(&1.0);
            let growing = norms.windows(2).all(|w| w[1] > w[0]);
            if let Some(h) = h.filter(|_| si && role == Role::Weight && growing && norms.len() >= 3) {
                let span = series.last().map(|c| c.step).unwrap_or(0) - series[0].step;
                if h.weight_decay == 0.0 {
                    flags.push(format!("scale-invariant weight without weight decay: its norm grows at every checkpoint (x{change:.2}), so its effective learning rate keeps falling (F4)"));
                } else {
                    let relax = 1.0 / h.relax_rate();
                    flags.push(format!(
                        "norm still grows at every checkpoint (x{change:.2}): not at equilibrium yet; with these settings it relaxes over ~{relax:.0} steps, the series covers {span}{}",
                        if (span as f64) > 3.0 * relax { ", so the decay that reaches it is weaker than the weight decay says (is it excluded from decay?)" } else { "" }
                    ));
                }
            }
            let pred_gap = pred_gap_angles.last().copied();
            TensorReport {
                name: name.clone(),
                shape: shape.clone(),
                role,
                scale_invariant: si,
                invariance_source: source.into(),
                norms,
                angles,
                eff_lr,
                pred_angle: pred,
                pred_basis: prediction.basis,
                pred_gap_angles,
                last_gap_steps: gap,
                last_gap_angle: last_angle,
                pred_last_gap_angle: pred_gap,
                hyper: t.hyper.clone(),
                optimizer_group: t.group.map(|g| g.0),
                decay,
                at_equilibrium: verdict.map(|v| v.at_equilibrium),
                equilibrium_basis: verdict.map(|v| v.basis),
                flags,
            }
        })
        .collect()
}

/// Flags about the whole run (not one tensor), from the settings of its groups: L2 in an Adam
/// gradient, said once for the run in the core's words.
pub fn run_flags(hypers: &[Hyper]) -> Vec<String> {
    let adam_l2 = hypers.iter().any(|h| h.family() == Family::AdamL2 && h.weight_decay > 0.0);
    let m = normwd_core::advice::Mistake::AdamL2OnInvariant;
    adam_l2.then(|| format!("{}: {}", m.name(), m.why())).into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_names_match_as_they_are_or_under_a_common_prefix() {
        let graph = vec!["conv1.weight".to_string(), "conv2.weight".to_string()];
        let bare = ["conv1.weight", "conv2.weight", "fc.weight"];
        assert_eq!(graph_names_in(&bare, &graph), (graph.clone(), vec![]));
        let ddp = ["module.conv1.weight", "module.conv2.weight", "module.fc.weight"];
        assert_eq!(graph_names_in(&ddp, &graph), (vec!["module.conv1.weight".into(), "module.conv2.weight".into()], vec![]));
        let partial = ["conv1.weight", "fc.weight"];
        assert_eq!(graph_names_in(&partial, &graph), (vec!["conv1.weight".into()], vec!["conv2.weight".into()]));
        let other = ["encoder.w", "decoder.w"];
        assert_eq!(graph_names_in(&other, &graph), (vec![], graph.clone()));
    }

    #[test]
    fn json_spells_roles_as_the_table_does() {
        let spelled: Vec<String> = [Role::Weight, Role::Bias, Role::NormScale, Role::NormShift, Role::Buffer]
            .into_iter()
            .map(|role| role_name(&role, serde_json::value::Serializer).unwrap().as_str().unwrap().to_string())
            .collect();
        assert_eq!(spelled, ["weight", "bias", "norm-scale", "norm-shift", "buffer"]);
    }

    #[test]
    fn steps_from_names_and_guessed_roles() {
        assert_eq!(step_from_name(Path::new("ckpt_000300.safetensors")), Some(300));
        assert_eq!(step_from_name(Path::new("model-step12-final.safetensors")), Some(12));
        assert_eq!(step_from_name(Path::new("final.safetensors")), None);
        let names: Vec<(String, Vec<usize>)> = [
            ("params/Conv_0/kernel", vec![3, 3, 1, 8]),
            ("params/BatchNorm_0/scale", vec![8]),
            ("params/BatchNorm_0/bias", vec![8]),
            ("conv1.weight", vec![16, 3, 3, 3]),
            ("bn1.weight", vec![16]),
            ("bn1.bias", vec![16]),
            ("bn1.running_mean", vec![16]),
            ("bn1.num_batches_tracked", vec![]),
            ("fc.weight", vec![10, 16]),
            ("fc.bias", vec![10]),
            ("layer1.0.conv2.weight", vec![16, 16, 3, 3]),
            ("layer1.0.bn2.weight", vec![16]),
            ("features.3.weight", vec![32, 16, 3, 3]),
            ("features.4.weight", vec![32]),
            ("features.4.bias", vec![32]),
        ]
        .iter()
        .map(|(n, s)| (n.to_string(), s.clone()))
        .collect();
        use Role::*;
        let expect = [
            (Weight, true),
            (NormScale, false),
            (NormShift, false),
            (Weight, true),
            (NormScale, false),
            (NormShift, false),
            (Buffer, false),
            (Buffer, false),
            (Weight, false),
            (Bias, false),
            (Weight, true),
            (NormScale, false),
            (Weight, true),
            (NormScale, false),
            (NormShift, false),
        ];
        for ((n, _), (got, want)) in names.iter().zip(guess_roles(&names).into_iter().zip(expect)) {
            assert_eq!(got, want, "{n}");
        }
    }
}
