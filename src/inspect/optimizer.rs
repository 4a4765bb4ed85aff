//! The optimizer state a training saved beside its weights (`optimizer.state_dict()` in a
//! `torch.save` training checkpoint, Lightning's `optimizer_states`, a Hugging Face Trainer
//! folder's `optimizer.pt`): each parameter group's optimizer and hyperparameters, and which
//! checkpoint tensors each group holds, so that predictions and decay verdicts use what the
//! training used instead of what the user remembers.

use normwd_core::optim::{Hyper, Rule};
use pytorch_reader::PickleValue;
use serde::Serialize;
use std::collections::BTreeMap;

/// One parameter group of a saved `torch.optim` optimizer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredGroup {
    /// Its optimizer and hyperparameters (`lr` as at the checkpoint, after any schedule).
    pub hyper: Hyper,
    /// Whether the state says where decay enters: PyTorch before 2.6 saved Adam and AdamW with
    /// the same keys (`false`: read as AdamW until `--optimizer` says).
    pub decay_mode_known: bool,
    /// The optimizer's indices of its parameters.
    pub params: Vec<usize>,
}

/// A saved optimizer: its groups and the shapes of its per-parameter state.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredOptimizer {
    /// Where it was read: the file and the path inside it (`ckpt.pt: optimizer`).
    pub source: String,
    /// Its parameter groups, in order.
    pub groups: Vec<StoredGroup>,
    /// The shape of each parameter with state (momentum buffer, Adam's moments), by index.
    pub shapes: BTreeMap<usize, Vec<usize>>,
}

/// Whether `v` is an optimizer's `state_dict()`.
fn is_optimizer(v: &PickleValue) -> bool {
    matches!(v, PickleValue::Dict(d) if d.contains_key("state") && d.contains_key("param_groups"))
}

/// The dotted paths of the optimizer state dicts in a `torch.save` file's root, two levels
/// deep (`optimizer`, Lightning's `optimizer_states.0`, or the root itself: `""`).
pub fn find(root: &PickleValue) -> Vec<String> {
    fn walk(v: &PickleValue, path: &str, depth: usize, out: &mut Vec<String>) {
        if is_optimizer(v) {
            out.push(path.to_string());
            return;
        }
        if depth == 0 {
            return;
        }
        let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
        match v {
            PickleValue::Dict(d) => {
                let mut keys: Vec<&String> = d.keys().collect();
                keys.sort();
                for k in keys {
                    walk(&d[k], &join(k), depth - 1, out);
                }
            }
            PickleValue::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &join(&i.to_string()), depth - 1, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(root, "", 2, &mut out);
    out
}

/// The value at the dotted `path` under `root`.
pub fn at_path<'a>(root: &'a PickleValue, path: &str) -> Option<&'a PickleValue> {
    path.split('.').filter(|p| !p.is_empty()).try_fold(root, |v, k| match v {
        PickleValue::Dict(d) => d.get(k),
        PickleValue::List(items) => items.get(k.parse::<usize>().ok()?),
        _ => None,
    })
}

fn number(v: &PickleValue) -> Option<f64> {
    match v {
        PickleValue::Float(x) => Some(*x),
        PickleValue::Int(i) => Some(*i as f64),
        PickleValue::Bool(b) => Some(*b as u8 as f64),
        _ => None,
    }
}

/// One `param_groups` entry: the optimizer it belongs to, told by the keys `torch.optim` writes
/// (SGD: `momentum`, `dampening`, `nesterov`; Adam and AdamW: `betas`, `eps`, and since
/// PyTorch 2.6 `decoupled_weight_decay`; lion-pytorch's Lion: `betas` without `eps`).
pub fn group(g: &PickleValue) -> Result<StoredGroup, String> {
    let PickleValue::Dict(d) = g else { return Err("is not a dictionary".into()) };
    let num = |k: &str| d.get(k).and_then(number);
    let lr = num("lr").ok_or("has no number lr")?;
    let weight_decay = num("weight_decay").unwrap_or(0.0);
    let betas = match d.get("betas") {
        Some(PickleValue::List(b)) if b.len() == 2 => match (number(&b[0]), number(&b[1])) {
            (Some(x), Some(y)) => Some((x, y)),
            _ => return Err("has betas that are not two numbers".into()),
        },
        Some(_) => return Err("has betas that are not two numbers".into()),
        None => None,
    };
    let params: Vec<usize> = match d.get("params") {
        Some(PickleValue::List(p)) => p
            .iter()
            .map(|i| number(i).filter(|x| *x >= 0.0).map(|x| x as usize))
            .collect::<Option<_>>()
            .ok_or("has params that are not indices")?,
        _ => return Err("has no params list".into()),
    };
    let nesterov = matches!(d.get("nesterov"), Some(PickleValue::Bool(true)));
    // Muon's groups hold `nesterov` too: its Newton-Schulz settings tell it from SGD.
    let (optimizer, momentum, coupled, known) = if d.contains_key("ns_coefficients") || d.contains_key("ns_steps") {
        (Rule::Muon, num("momentum").unwrap_or(0.95), false, true)
    } else if d.contains_key("nesterov") || d.contains_key("dampening") {
        (Rule::Sgd, num("momentum").unwrap_or(0.0), true, true)
    } else if betas.is_some() && d.contains_key("eps") {
        match d.get("decoupled_weight_decay").and_then(number) {
            Some(x) if x != 0.0 => (Rule::Adamw, 0.0, false, true),
            Some(_) => (Rule::Adam, 0.0, true, true),
            None => (Rule::Adamw, 0.0, false, false),
        }
    } else if betas.is_some() {
        (Rule::Lion, 0.0, false, true)
    } else {
        let mut keys: Vec<&str> = d.keys().map(|k| k.as_str()).filter(|k| *k != "params").collect();
        keys.sort_unstable();
        return Err(format!("has the keys {}: not SGD, Adam, AdamW, Lion or Muon", keys.join(", ")));
    };
    let checks =
        [("lr", lr, lr > 0.0), ("weight_decay", weight_decay, weight_decay >= 0.0), ("momentum", momentum, (0.0..1.0).contains(&momentum))];
    if let Some((k, v, _)) = checks.iter().find(|(_, v, ok)| !ok || !v.is_finite()) {
        return Err(format!("has {k} {v}, which no closed form takes"));
    }
    let betas = betas.unwrap_or(optimizer.default_betas());
    Ok(StoredGroup { hyper: Hyper { optimizer, lr, momentum, weight_decay, coupled, betas, nesterov }, decay_mode_known: known, params })
}

/// Reads the optimizer at `path` under `root`; `tensors` are the file's tensor names and shapes
/// (the state's buffers are named `<path>.state.<index>.<buffer>`).
pub fn read(source: &str, root: &PickleValue, path: &str, tensors: &[(String, Vec<usize>)]) -> Result<StoredOptimizer, String> {
    let opt = at_path(root, path).filter(|v| is_optimizer(v)).ok_or("no optimizer state there")?;
    let PickleValue::Dict(d) = opt else { unreachable!("is_optimizer checked a dictionary") };
    let PickleValue::List(groups) = &d["param_groups"] else { return Err("param_groups is not a list".into()) };
    let groups =
        groups.iter().enumerate().map(|(i, g)| group(g).map_err(|e| format!("param_groups[{i}] {e}"))).collect::<Result<Vec<_>, _>>()?;
    let prefix = if path.is_empty() { "state.".to_string() } else { format!("{path}.state.") };
    let mut shapes = BTreeMap::new();
    for (name, shape) in tensors {
        let Some((index, buffer)) = name.strip_prefix(&prefix).and_then(|r| r.split_once('.')) else { continue };
        // Adam's `step` is a 0-d tensor; the moment buffers have the parameter's shape.
        if buffer == "step" {
            continue;
        }
        if let Ok(i) = index.parse::<usize>() {
            shapes.entry(i).or_insert_with(|| shape.clone());
        }
    }
    Ok(StoredOptimizer { source: source.to_string(), groups, shapes })
}

/// Several optimizers that trained one model (Muon beside AdamW) as one: their groups in order,
/// each optimizer's parameter indices (each counts from 0) moved past the previous ones'.
pub fn merge(optimizers: Vec<StoredOptimizer>) -> StoredOptimizer {
    let mut out = StoredOptimizer { source: String::new(), groups: Vec::new(), shapes: BTreeMap::new() };
    let mut sources = Vec::new();
    let mut offset = 0;
    for o in optimizers {
        let count = o.groups.iter().flat_map(|g| g.params.iter()).chain(o.shapes.keys()).map(|i| i + 1).max().unwrap_or(0);
        out.groups.extend(o.groups.into_iter().map(|g| StoredGroup { params: g.params.iter().map(|i| i + offset).collect(), ..g }));
        out.shapes.extend(o.shapes.into_iter().map(|(i, s)| (i + offset, s)));
        sources.push(o.source);
        offset += count;
    }
    out.source = sources.join(" + ");
    out
}

/// Which group a checkpoint tensor is in, as far as the saved state tells.
#[derive(Debug, Clone, PartialEq)]
pub enum Membership {
    /// In group `.0`, or in groups that all have its hyperparameters.
    Group(usize),
    /// Given to no group: every parameter's shape is known and none has its shape.
    None,
    /// Groups with different hyperparameters hold tensors of its shape, or some parameters
    /// have no state to tell their shape: why.
    Unknown(String),
}

/// Assigns the checkpoint's parameters (`names` with shapes, buffers left out) to `opt`'s groups.
/// A saved optimizer names its parameters only by index, and the checkpoint's order is lost
/// (safetensors sorts its tensors), so the match is by shape: a tensor whose shape only groups
/// with equal hyperparameters hold takes theirs. timm's, Hugging Face's and nanoGPT's groups
/// split by dimension or name, which shapes almost always separate.
pub fn assign(opt: &StoredOptimizer, names: &[(String, Vec<usize>)]) -> Vec<Membership> {
    let same = |a: usize, b: usize| opt.groups[a].hyper == opt.groups[b].hyper;
    if !opt.groups.is_empty() && (1..opt.groups.len()).all(|g| same(0, g)) {
        return names.iter().map(|_| Membership::Group(0)).collect();
    }
    let mut holders: BTreeMap<&[usize], Vec<usize>> = BTreeMap::new();
    let mut unknown = 0;
    for (g, group) in opt.groups.iter().enumerate() {
        for p in &group.params {
            match opt.shapes.get(p) {
                Some(s) => holders.entry(s.as_slice()).or_default().push(g),
                None => unknown += 1,
            }
        }
    }
    // Parameters without state could be of any shape, so they leave every match open.
    let shapeless = || Membership::Unknown(format!("{unknown} parameter(s) have no state to tell their shape"));
    names
        .iter()
        .map(|(_, shape)| match holders.get(shape.as_slice()) {
            Some(gs) if gs.iter().all(|g| same(gs[0], *g)) && unknown == 0 => Membership::Group(gs[0]),
            Some(gs) if gs.iter().all(|g| same(gs[0], *g)) => shapeless(),
            Some(gs) => {
                let mut gs = gs.clone();
                gs.dedup();
                let list: Vec<String> = gs.iter().map(|g| g.to_string()).collect();
                Membership::Unknown(format!("groups {} hold tensors of shape {shape:?}", list.join(" and ")))
            }
            None if unknown == 0 => Membership::None,
            None => shapeless(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(entries: &[(&str, PickleValue)]) -> PickleValue {
        PickleValue::Dict(entries.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    fn ints(v: &[i64]) -> PickleValue {
        PickleValue::List(v.iter().map(|i| PickleValue::Int(*i)).collect())
    }

    fn sgd(wd: f64, params: &[i64]) -> PickleValue {
        dict(&[
            ("lr", PickleValue::Float(0.1)),
            ("momentum", PickleValue::Float(0.9)),
            ("dampening", PickleValue::Int(0)),
            ("nesterov", PickleValue::Bool(false)),
            ("weight_decay", if wd == 0.0 { PickleValue::Int(0) } else { PickleValue::Float(wd) }),
            ("params", ints(params)),
        ])
    }

    #[test]
    fn groups_name_their_optimizer_by_the_keys_torch_writes() {
        let g = group(&sgd(5e-4, &[0, 1])).unwrap();
        assert_eq!((g.hyper.optimizer, g.hyper.momentum, g.hyper.coupled, g.params), (Rule::Sgd, 0.9, true, vec![0, 1]));
        let adam = |decoupled: Option<bool>| {
            let mut e = vec![
                ("lr", PickleValue::Float(1e-3)),
                ("betas", PickleValue::List(vec![PickleValue::Float(0.9), PickleValue::Float(0.95)])),
                ("eps", PickleValue::Float(1e-8)),
                ("weight_decay", PickleValue::Float(0.1)),
                ("params", ints(&[2])),
            ];
            if let Some(d) = decoupled {
                e.push(("decoupled_weight_decay", PickleValue::Bool(d)));
            }
            group(&dict(&e)).unwrap()
        };
        let w = adam(Some(true));
        assert_eq!((w.hyper.optimizer, w.hyper.coupled, w.hyper.betas, w.decay_mode_known), (Rule::Adamw, false, (0.9, 0.95), true));
        assert_eq!((adam(Some(false)).hyper.optimizer, adam(Some(false)).hyper.coupled), (Rule::Adam, true));
        assert!(!adam(None).decay_mode_known);
        let lion = dict(&[
            ("lr", PickleValue::Float(1e-4)),
            ("betas", PickleValue::List(vec![PickleValue::Float(0.9), PickleValue::Float(0.99)])),
            ("weight_decay", PickleValue::Float(1.0)),
            ("params", ints(&[0])),
        ]);
        assert_eq!(group(&lion).unwrap().hyper.optimizer, Rule::Lion);
        let rms = dict(&[("lr", PickleValue::Float(0.01)), ("alpha", PickleValue::Float(0.99)), ("params", ints(&[0]))]);
        assert!(group(&rms).unwrap_err().contains("alpha, lr: not SGD"), "{:?}", group(&rms));
        let bad = dict(&[("lr", PickleValue::Float(f64::NAN)), ("nesterov", PickleValue::Bool(false)), ("params", ints(&[0]))]);
        assert!(group(&bad).unwrap_err().contains("lr NaN"));
    }

    #[test]
    fn optimizers_are_found_where_trainings_save_them_and_assigned_by_shape() {
        let opt = dict(&[("state", dict(&[])), ("param_groups", PickleValue::List(vec![sgd(5e-4, &[0, 1]), sgd(0.0, &[2, 3])]))]);
        let lightning = dict(&[("state_dict", dict(&[])), ("optimizer_states", PickleValue::List(vec![opt.clone()]))]);
        assert_eq!(find(&lightning), vec!["optimizer_states.0".to_string()]);
        assert_eq!(find(&dict(&[("model", dict(&[])), ("optimizer", opt.clone())])), vec!["optimizer".to_string()]);
        assert_eq!(find(&opt), vec![String::new()]);
        let buffers: Vec<(String, Vec<usize>)> = [
            ("state.0.momentum_buffer", vec![8, 1, 3, 3]),
            ("state.1.momentum_buffer", vec![10, 8]),
            ("state.2.momentum_buffer", vec![8]),
            ("state.3.momentum_buffer", vec![10]),
        ]
        .iter()
        .map(|(n, s)| (format!("optimizer.{n}"), s.clone()))
        .collect();
        let root = dict(&[("optimizer", opt)]);
        let stored = read("c.pt: optimizer", &root, "optimizer", &buffers).unwrap();
        assert_eq!(stored.shapes.len(), 4);
        let names: Vec<(String, Vec<usize>)> = [
            ("conv.weight", vec![8, 1, 3, 3]),
            ("bn.weight", vec![8]),
            ("bn.bias", vec![8]),
            ("fc.weight", vec![10, 8]),
            ("fc.bias", vec![10]),
            ("other.weight", vec![3, 3]),
        ]
        .iter()
        .map(|(n, s)| (n.to_string(), s.clone()))
        .collect();
        use Membership::*;
        assert_eq!(assign(&stored, &names), vec![Group(0), Group(1), Group(1), Group(0), Group(1), None]);
        // The same shape in groups that differ: not told.
        let mut mixed = stored.clone();
        mixed.shapes.insert(1, vec![8]);
        assert!(matches!(&assign(&mixed, &names)[1], Unknown(why) if why.contains("groups 0 and 1")));
        // Without state (SGD without momentum) shapes say nothing, unless the groups agree.
        let mut bare = stored.clone();
        bare.shapes.clear();
        assert!(matches!(&assign(&bare, &names)[0], Unknown(_)));
        bare.groups[1].hyper.weight_decay = 5e-4;
        assert_eq!(assign(&bare, &names)[0], Group(0));
    }

    /// Muon's groups (`torch.optim.Muon` writes `nesterov` as SGD does, and its Newton-Schulz
    /// settings) read as Muon; Muon beside AdamW merged into one optimizer whose second
    /// optimizer's indices follow the first's.
    #[test]
    fn muon_groups_and_two_optimizers() {
        let muon = dict(&[
            ("lr", PickleValue::Float(0.02)),
            ("weight_decay", PickleValue::Float(0.1)),
            ("momentum", PickleValue::Float(0.95)),
            ("nesterov", PickleValue::Bool(true)),
            (
                "ns_coefficients",
                PickleValue::List(vec![PickleValue::Float(3.4445), PickleValue::Float(-4.775), PickleValue::Float(2.0315)]),
            ),
            ("eps", PickleValue::Float(1e-7)),
            ("ns_steps", PickleValue::Int(5)),
            ("adjust_lr_fn", PickleValue::None),
            ("params", ints(&[0, 1])),
        ]);
        let g = group(&muon).unwrap();
        assert_eq!((g.hyper.optimizer, g.hyper.momentum, g.hyper.nesterov, g.hyper.coupled), (Rule::Muon, 0.95, true, false));
        let one = |groups: Vec<StoredGroup>, shapes: &[(usize, Vec<usize>)]| StoredOptimizer {
            source: "m".into(),
            groups,
            shapes: shapes.iter().cloned().collect(),
        };
        let adamw = group(&dict(&[
            ("lr", PickleValue::Float(1e-3)),
            ("betas", PickleValue::List(vec![PickleValue::Float(0.9), PickleValue::Float(0.95)])),
            ("eps", PickleValue::Float(1e-8)),
            ("weight_decay", PickleValue::Float(0.0)),
            ("decoupled_weight_decay", PickleValue::Bool(true)),
            ("params", ints(&[0, 1])),
        ]))
        .unwrap();
        let merged =
            merge(vec![one(vec![g], &[(0, vec![16, 8]), (1, vec![16, 16])]), one(vec![adamw], &[(0, vec![16]), (1, vec![10, 16])])]);
        assert_eq!(merged.groups[1].params, vec![2, 3]);
        assert_eq!(merged.shapes[&3], vec![10, 16]);
        let names: Vec<(String, Vec<usize>)> =
            [("fc1.weight", vec![16, 8]), ("head.weight", vec![10, 16])].iter().map(|(n, s)| (n.to_string(), s.clone())).collect();
        assert_eq!(assign(&merged, &names), vec![Membership::Group(0), Membership::Group(1)]);
    }
}
