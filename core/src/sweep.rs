//! Sweeps as files: a sweep file (`[base]`, `[grid]`, `[[points]]`) parsed into points, each
//! a normal run directory named after its varied settings, and the results table merged from
//! whatever the points' folders hold (any number of shards). Running the points is the engine's.

use crate::config::RunConfig;
use crate::records::{Record, Summary};
use crate::run::{files, window_mean, RunData};
use crate::store::{write_atomic, StoreError};
use std::path::Path;

/// Errors in a sweep file or its folder.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The sweep file is invalid.
    #[error("{file}{line}: {what}")]
    Spec {
        /// The file.
        file: String,
        /// `:LINE` when known.
        line: String,
        /// What is wrong, naming the key.
        what: String,
    },
    /// `--shard` is malformed.
    #[error("--shard {0:?}: expected i/n with 0 <= i < n")]
    Shard(String),
    /// Files of the sweep folder.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One point of a sweep.
#[derive(Debug, Clone)]
pub struct Point {
    /// Folder name, made of the varied settings (`lr=0.1,weight_decay=0.0005`).
    pub name: String,
    /// The varied settings.
    pub settings: Vec<(String, toml::Value)>,
    /// The full configuration.
    pub config: RunConfig,
}

/// A parsed and validated sweep file.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Points in order.
    pub points: Vec<Point>,
    /// Keys that vary across points, in order of appearance.
    pub keys: Vec<String>,
}

fn line_of(text: &str, section: &str, key: &str) -> String {
    let mut in_section = section.is_empty();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            in_section = t.trim_matches(|c| c == '[' || c == ']') == section;
            continue;
        }
        if in_section && (t.starts_with(&format!("{key} ")) || t.starts_with(&format!("{key}="))) {
            return format!(":{}", i + 1);
        }
    }
    String::new()
}

/// Characters allowed in point folder names: names built from settings can never escape the
/// sweep folder (no `/`, no `..` component).
pub fn safe_name(s: &str) -> String {
    let n: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || "._=,-+".contains(c) { c } else { '_' }).collect();
    let n = n.replace("..", "__");
    if n.is_empty() || n.starts_with('.') {
        format!("_{n}")
    } else {
        n
    }
}

fn value_str(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) => format!("{f}"),
        other => other.to_string(),
    }
}

/// Coerces a value to the type of the same key in the default configuration (integers where
/// floats are expected); `Err` with the expected type otherwise.
fn coerce(default: &toml::Value, v: toml::Value) -> Result<toml::Value, String> {
    match (default, v) {
        (toml::Value::Float(_), toml::Value::Integer(i)) => Ok(toml::Value::Float(i as f64)),
        (toml::Value::Float(_), v @ toml::Value::Float(_)) => Ok(v),
        (toml::Value::Float(_), v) => Err(format!("{v} is not a number")),
        (toml::Value::Integer(_), v @ toml::Value::Integer(_)) => Ok(v),
        (toml::Value::Integer(_), v) => Err(format!("{v} is not an integer")),
        (toml::Value::String(_), v @ toml::Value::String(_)) => Ok(v),
        (toml::Value::String(_), v) => Err(format!("{v} is not a string")),
        (toml::Value::Boolean(_), v @ toml::Value::Boolean(_)) => Ok(v),
        (toml::Value::Boolean(_), v) => Err(format!("{v} is not true/false")),
        (toml::Value::Array(_), v @ toml::Value::Array(_)) => Ok(v),
        (toml::Value::Array(_), v) => Err(format!("{v} is not a list")),
        (_, v) => Ok(v),
    }
}

/// Parses and validates a sweep file: `[base]` settings, `[grid]` lists (their Cartesian
/// product) and/or `[[points]]` tables. Every point is resolved before anything runs.
pub fn parse(file: &str, text: &str) -> Result<Spec, SpecError> {
    let err = |line: String, what: String| SpecError::Spec { file: file.to_string(), line, what };
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| err(String::new(), e.to_string().trim().replace('\n', " ")))?;
    // The keys and their types, including those the defaults leave unset.
    let key_types = toml::Table::try_from(RunConfig::every_key_set()).expect("the configuration serializes");
    for k in doc.keys() {
        if !["base", "grid", "points"].contains(&k.as_str()) {
            return Err(err(line_of(text, "", k), format!("unknown section or key {k:?}: expected [base], [grid] or [[points]]")));
        }
    }
    let table = |name: &str| -> Result<toml::Table, SpecError> {
        match doc.get(name) {
            None => Ok(toml::Table::new()),
            Some(toml::Value::Table(t)) => Ok(t.clone()),
            Some(_) => Err(err(line_of(text, "", name), format!("{name} must be a table"))),
        }
    };
    let check_key = |section: &str, k: &str, v: toml::Value| -> Result<toml::Value, SpecError> {
        let d = key_types.get(k).ok_or_else(|| {
            err(
                line_of(text, section, k),
                format!("[{section}] unknown key {k:?} (keys are those of `train`, e.g. lr, weight_decay, optimizer)"),
            )
        })?;
        let v = coerce(d, v).map_err(|e| err(line_of(text, section, k), format!("[{section}] {k}: {e}")))?;
        // Names (`model = "vgg"`) are checked here, with the line, by the setting's own type.
        if let toml::Value::String(_) = v {
            let one = toml::Value::Table(toml::Table::from_iter([(k.to_string(), v.clone())]));
            if let Err(e) = one.try_into::<RunConfig>() {
                return Err(err(line_of(text, section, k), format!("--{} {}", k.replace('_', "-"), e.message())));
            }
        }
        Ok(v)
    };
    let mut base = toml::Table::new();
    for (k, v) in table("base")? {
        base.insert(k.clone(), check_key("base", &k, v)?);
    }
    let mut axes: Vec<(String, Vec<toml::Value>)> = Vec::new();
    for (k, v) in table("grid")? {
        let toml::Value::Array(vals) = v else {
            return Err(err(line_of(text, "grid", &k), format!("[grid] {k}: expected a list of values")));
        };
        if vals.is_empty() {
            return Err(err(line_of(text, "grid", &k), format!("[grid] {k}: empty list")));
        }
        let vals = vals.into_iter().map(|v| check_key("grid", &k, v)).collect::<Result<Vec<_>, _>>()?;
        axes.push((k, vals));
    }
    let mut combos: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
    for (k, vals) in &axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                vals.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((k.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    if axes.is_empty() {
        combos.clear();
    }
    if let Some(p) = doc.get("points") {
        let toml::Value::Array(list) = p else {
            return Err(err(line_of(text, "", "points"), "points must be an array of tables ([[points]])".into()));
        };
        for (i, item) in list.iter().enumerate() {
            let toml::Value::Table(t) = item else {
                return Err(err(String::new(), format!("[[points]] #{}: expected a table", i + 1)));
            };
            let mut c = Vec::new();
            for (k, v) in t {
                c.push((k.clone(), check_key("points", k, v.clone())?));
            }
            combos.push(c);
        }
    }
    if combos.is_empty() {
        return Err(err(String::new(), "no points: give a [grid] with lists of values or [[points]] tables".into()));
    }
    let mut keys: Vec<String> = Vec::new();
    for c in &combos {
        for (k, _) in c {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    let mut points = Vec::new();
    for c in combos {
        let mut t = base.clone();
        for (k, v) in &c {
            t.insert(k.clone(), v.clone());
        }
        let name = safe_name(&c.iter().map(|(k, v)| format!("{k}={}", value_str(v))).collect::<Vec<_>>().join(","));
        let config = RunConfig::from_table(&format!("point {name}"), t).map_err(|e| err(String::new(), e.to_string()))?;
        config.resolve().map_err(|e| err(String::new(), format!("point {name}: {e}")))?;
        if points.iter().any(|p: &Point| p.name == name) {
            return Err(err(String::new(), format!("point {name} appears twice")));
        }
        points.push(Point { name, settings: c, config });
    }
    Ok(Spec { points, keys })
}

/// Parses `i/n`.
pub fn parse_shard(s: &str) -> Result<(usize, usize), SpecError> {
    let bad = || SpecError::Shard(s.to_string());
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// The points of shard `i` of `n`: every n-th point starting at i (interleaved, so shards get
/// similar mixes of cheap and expensive points).
pub fn shard(points: &[Point], i: usize, n: usize) -> Vec<&Point> {
    points.iter().enumerate().filter(|(k, _)| k % n == i).map(|(_, p)| p).collect()
}

/// File a diverged point leaves in its folder (the sweep goes on).
pub const FAILED: &str = "failed.txt";
/// The sweep file as given, kept in the sweep folder.
pub const SPEC: &str = "sweep.toml";
/// The merged results table.
pub const RESULTS: &str = "results.csv";

/// What happened to a point.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Finished.
    Done(Summary),
    /// Stopped by the divergence guard.
    Diverged(String),
    /// Not (yet) run, or in flight elsewhere.
    Pending,
}

/// The outcome recorded in a point's folder.
pub fn outcome(dir: &Path) -> Outcome {
    if let Ok(msg) = std::fs::read_to_string(dir.join(FAILED)) {
        return Outcome::Diverged(msg);
    }
    let text = std::fs::read_to_string(dir.join(files::METRICS)).unwrap_or_default();
    text.lines()
        .rev()
        .find_map(|l| match Record::parse(l) {
            Some(Record::Done(s)) => Some(s),
            _ => None,
        })
        .map(Outcome::Done)
        .unwrap_or(Outcome::Pending)
}

/// One row of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    /// The point.
    pub point: Point,
    /// Its outcome.
    pub outcome: Outcome,
    /// Mean effective learning rate of the scale-invariant weights over the last 10% of steps.
    pub eff_lr_end: Option<f64>,
    /// Mean unit gradient `||g||*||w||` (the gradient at unit norm, F1b) of the scale-invariant
    /// weights over the last 10% of steps: with `lr*wd` it sets their equilibrium effective lr.
    pub unit_grad_end: Option<f64>,
}

/// Reads every point's outcome from `out` (the `--merge` step: works on results written by
/// any number of shards into a shared folder).
pub fn collect(spec: &Spec, out: &Path) -> Vec<Row> {
    spec.points
        .iter()
        .map(|p| {
            let dir = out.join(&p.name);
            let outcome = outcome(&dir);
            let run = match outcome {
                Outcome::Done(_) => RunData::load(&dir).ok(),
                _ => None,
            };
            let end = |f: &dyn Fn(&crate::records::Probe) -> f64| {
                let r = run.as_ref()?;
                let v: Vec<f64> = r.invariant_paths().iter().filter_map(|l| window_mean(&r.series(l), 0.9, 1.0, |x| Some(f(x)))).collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            };
            Row { point: p.clone(), eff_lr_end: end(&|x| x.eff_lr), unit_grad_end: end(&|x| x.grad_norm * x.norm), outcome }
        })
        .collect()
}

/// Writes `results.csv` (atomically) and returns its text.
pub fn write_results(spec: &Spec, rows: &[Row], out: &Path) -> Result<String, SpecError> {
    let mut s = format!("point,{},status,test_acc,test_loss,eff_lr_end,steps\n", spec.keys.join(","));
    for r in rows {
        let vals: Vec<String> = spec
            .keys
            .iter()
            .map(|k| r.point.settings.iter().find(|(kk, _)| kk == k).map(|(_, v)| value_str(v)).unwrap_or_default())
            .collect();
        let (status, acc, loss, steps) = match &r.outcome {
            Outcome::Done(d) => ("done", format!("{}", d.test_acc), format!("{}", d.test_loss), d.steps.to_string()),
            Outcome::Diverged(_) => ("diverged", String::new(), String::new(), String::new()),
            Outcome::Pending => ("pending", String::new(), String::new(), String::new()),
        };
        s.push_str(&format!(
            "{},{},{status},{acc},{loss},{},{steps}\n",
            r.point.name,
            vals.join(","),
            r.eff_lr_end.map(|v| v.to_string()).unwrap_or_default()
        ));
    }
    write_atomic(&out.join(RESULTS), s.as_bytes())?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "[base]\nmodel = \"mlp\"\nepochs = 1\n\n[grid]\nlr = [0.1, 0.2]\nweight_decay = [0, 5e-4]\n";

    #[test]
    fn grid_is_a_cartesian_product_with_safe_names() {
        let s = parse("s.toml", OK).unwrap();
        assert_eq!(s.points.len(), 4);
        assert_eq!(s.keys, vec!["lr", "weight_decay"]);
        assert_eq!(s.points[1].name, "lr=0.1,weight_decay=0.0005");
        assert_eq!(s.points[1].config.weight_decay, 5e-4);
        assert_eq!(s.points[3].config.model.name(), "mlp");
        let sh: Vec<&str> = shard(&s.points, 1, 3).iter().map(|p| p.name.as_str()).collect();
        assert_eq!(sh, vec!["lr=0.1,weight_decay=0.0005"]);
        assert_eq!(safe_name("data=../../etc"), "data=______etc");
        assert!(!safe_name("..").contains(".."));
    }

    #[test]
    fn invalid_files_name_line_and_key() {
        let e = parse("s.toml", "[base]\nmodel = \"mlp\"\n[grid]\nlr = [0.1]\nlearning_rate = [1]\n").unwrap_err().to_string();
        assert!(e.starts_with("s.toml:5:") && e.contains("unknown key \"learning_rate\""), "{e}");
        let e = parse("s.toml", "[base]\nlr = 0.1\nmodel = \"vgg\"\n[grid]\nlr = [0.1]\n").unwrap_err().to_string();
        assert!(e.starts_with("s.toml:3: --model \"vgg\": expected one of mlp, convnet, resnet20"), "{e}");
        let e = parse("s.toml", "[grid]\nlr = []\n").unwrap_err().to_string();
        assert!(e.starts_with("s.toml:2:") && e.contains("lr: empty list"), "{e}");
        let e = parse("s.toml", "[grid]\nlr = [0.1, \"fast\"]\n").unwrap_err().to_string();
        assert!(e.starts_with("s.toml:2:") && e.contains("lr: \"fast\" is not a number"), "{e}");
        let e = parse("s.toml", "[base]\nepochs = 1\n").unwrap_err().to_string();
        assert!(e.contains("no points"), "{e}");
        let e = parse("s.toml", "[grid]\nlr = [-1.0]\n").unwrap_err().to_string();
        assert!(e.contains("--lr -1"), "{e}");
        let e = parse("s.toml", "[grid\nlr = 1").unwrap_err().to_string();
        assert!(e.starts_with("s.toml") && e.contains("line 1"), "{e}");
        assert!(parse_shard("3/3").is_err() && parse_shard("x").is_err());
        assert_eq!(parse_shard("2/4").unwrap(), (2, 4));
    }
}
