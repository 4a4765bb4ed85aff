//! The training loop: epochs, evaluation, metrics, probes, atomic checkpoints, exact resume
//! and a divergence guard. People-facing output goes through an [`Observer`].
//!
//! May import `data`, `device`, `kernels`, `model`, `params`, `optim` and `probe`.

pub mod config;
pub mod store;

use crate::data::{self, Batch, Data};
use crate::kernels;
use crate::model::{Input, Net};
use crate::optim::schedule::Schedule;
use crate::optim::{OptimError, Optimizer};
use crate::params::{self, ParamInfo};
use crate::probe;
use burn::module::Module;

pub use crate::model::cross_entropy;
use burn::tensor::{Device, Int, Tensor};
use config::{ConfigError, Resolved, RunConfig};
use normwd_core::exit::ExitCode;
pub use normwd_core::records::{EpochRecord, Record, Summary};
pub use normwd_core::run::{current_name, files, CkptState, OPTIM_PREFIX};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use store::{MetricsLog, StoreError};

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Bad settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Bad or missing data.
    #[error(transparent)]
    Data(#[from] data::DataError),
    /// Optimizer state problems.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// Files of the run directory.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The run directory cannot be used as asked.
    #[error("{dir}: {what}")]
    RunDir {
        /// The folder.
        dir: String,
        /// Why.
        what: String,
    },
    /// Loss or weights became NaN/inf.
    #[error("training diverged at epoch {epoch}, step {step}: {what}; {}", kept(last_good))]
    Diverged {
        /// Epoch (1-based).
        epoch: usize,
        /// Update number (1-based).
        step: u64,
        /// What became non-finite, with its value and layer.
        what: String,
        /// Epochs in the last checkpoint.
        last_good: usize,
    },
}

/// What a diverged run leaves behind: a checkpoint only once an epoch has finished.
fn kept(last_good: &usize) -> String {
    match last_good {
        0 => "no epoch finished, so no checkpoint was written (lower --lr)".into(),
        n => format!("the last good checkpoint (epoch {n}) is kept"),
    }
}

impl ExitCode for TrainError {
    fn exit_code(&self) -> i32 {
        match self {
            TrainError::Config(_) | TrainError::Data(_) | TrainError::RunDir { .. } => 2,
            TrainError::Store(StoreError::Corrupt { .. }) | TrainError::Optim(_) => 2,
            TrainError::Store(StoreError::Io { .. }) | TrainError::Diverged { .. } => 1,
        }
    }
}

/// Receives progress for people (the CLI draws bars; tests ignore it).
pub trait Observer {
    /// A resumed run continues after `epochs_done` epochs (`step` updates) of `epochs`.
    fn resumed(&mut self, _epochs_done: usize, _step: u64, _epochs: usize) {}
    /// An epoch begins with `batches` batches.
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _batches: usize) {}
    /// A batch of `images` images finished with this loss.
    fn batch(&mut self, _loss: f64, _images: usize) {}
    /// An epoch finished.
    fn epoch_end(&mut self, _rec: &EpochRecord) {}
    /// Something about the run a person should know before it trains (a phase too short for
    /// its equilibrium, [`normwd_core::budget`]).
    fn warning(&mut self, _message: &str) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}

fn correct(logits: Tensor<2>, labels: Tensor<1, Int>) -> i64 {
    let n = labels.dims()[0];
    let pred = logits.argmax(1).reshape([n]);
    pred.equal(labels).int().sum().into_scalar::<i64>()
}

/// A batch as the model's input and the targets.
pub fn model_batch(
    data: &Data,
    train: bool,
    items: &[usize],
    augment: Option<&mut rand_chacha::ChaCha8Rng>,
    device: &Device,
) -> (Input, Tensor<1, Int>) {
    match data.batch(train, items, augment, device) {
        Batch::Images(x, y) => (Input::Images(x), y),
        Batch::Tokens(x, y) => (Input::Tokens(x), y),
    }
}

/// Held-out loss (nats per example, per token for text) and accuracy (of the next token for
/// text) of `model`, in evaluation mode (running statistics, no autodiff).
pub fn evaluate(model: &Net, data: &Data, device: &Device) -> (f64, f64) {
    let m = model.valid();
    let items = data.test_items();
    let (mut loss, mut ok, mut n) = (0.0, 0i64, 0usize);
    for chunk in items.chunks(data.eval_chunk()) {
        let (x, y) = model_batch(data, false, chunk, None, device);
        let targets = y.dims()[0];
        let logits = m.forward(x);
        loss += cross_entropy(logits.clone(), y.clone()).into_scalar::<f64>() * targets as f64;
        ok += correct(logits, y);
        n += targets;
    }
    (loss / n as f64, ok as f64 / n as f64)
}

/// Everything a training run is built from, resolved and checked.
pub struct Setup {
    /// Settings.
    pub config: RunConfig,
    /// The data.
    pub data: Data,
    /// The model (on the autodiff device).
    pub model: Net,
    /// Roles / invariance / decay of every tensor.
    pub params: Vec<ParamInfo>,
    /// The optimizer.
    pub optim: Optimizer,
    /// Device (autodiff).
    pub device: Device,
    /// Updates per epoch.
    pub steps_per_epoch: usize,
}

impl Setup {
    /// Resolves a configuration, loads data and builds model and optimizer.
    pub fn new(config: RunConfig) -> Result<Self, TrainError> {
        // Settings first: a typo should not wait for (or be hidden by) a slow or broken data load.
        let r = config::resolve(&config)?;
        let data = match r.gpt {
            Some(g) => Data::Text { text: data::load_text(&config.data, config.tokens)?, block: g.block_size },
            None => Data::Images(data::load(&config.data)?),
        };
        Self::build(config, r, data)
    }

    /// As [`Setup::new`], on data already loaded (`config.data` is then only a label).
    pub fn with_data(config: RunConfig, data: Data) -> Result<Self, TrainError> {
        let r = config::resolve(&config)?;
        Self::build(config, r, data)
    }

    fn build(config: RunConfig, r: Resolved, mut data: Data) -> Result<Self, TrainError> {
        let invalid =
            |key: &str, value: String, expected: String| TrainError::Config(ConfigError::Invalid { key: key.into(), value, expected });
        if config.train_subset.is_some() || config.test_subset.is_some() {
            data.truncate(config.train_subset.unwrap_or(usize::MAX), config.test_subset.unwrap_or(usize::MAX));
        }
        let device = crate::device::open(&config.device)
            .map_err(|expected| ConfigError::Invalid { key: "device".into(), value: config.device.clone(), expected })?
            .autodiff();
        let model = match (&mut data, r.gpt) {
            (Data::Images(d), None) => {
                d.augment = config.augment;
                let side = d.shape[1].min(d.shape[2]);
                if side < r.model.min_side() {
                    let m = r.model.min_side();
                    let held = format!("images of at least {m}x{m}; {} holds {}x{}", d.name, d.shape[1], d.shape[2]);
                    return Err(invalid("model", config.model.to_string(), held));
                }
                Net::new(r.model, r.norm, d.shape, config.bn_momentum, config.seed, &device)
            }
            (Data::Text { text, block }, Some(g)) => {
                if config.augment {
                    return Err(invalid("augment", "true".into(), "image data (crops and flips do not apply to text)".into()));
                }
                let vocab = config.vocab_size.unwrap_or_else(|| text.vocab_size());
                text.check(*block, vocab)?;
                Net::gpt(g, r.norm, vocab, config.seed, &device)
            }
            (d, _) => {
                let what = if r.gpt.is_some() { "text for --model gpt" } else { "images for an image model" };
                return Err(invalid("data", d.name().to_string(), what.into()));
            }
        };
        let params = params::describe(&model, r.policy);
        let steps_per_epoch = data.train_len().div_ceil(config.batch_size);
        let schedule = Schedule {
            kind: r.schedule,
            milestones: config.milestones.clone(),
            gamma: config.gamma,
            warmup_steps: config.warmup_steps,
            steps_per_epoch,
            total_steps: steps_per_epoch * config.epochs,
        };
        let optim = Optimizer::new(r.optim, schedule, &params)?;
        Ok(Setup { config, data, model, params, optim, device, steps_per_epoch })
    }
}

/// Restores a run from a checkpoint's contents: the state from its metadata, the model's
/// tensors (every name and shape checked first, all mismatches listed) and the optimizer's.
/// A file that does not fit the run is an error, never a panic later in training.
pub fn restore(file: &str, loaded: store::Loaded, s: &mut Setup) -> Result<CkptState, TrainError> {
    let corrupt = |what: String| StoreError::Corrupt { file: file.to_string(), what };
    let state = loaded
        .metadata
        .get("state")
        .and_then(|s| serde_json::from_str::<CkptState>(s).ok())
        .ok_or_else(|| corrupt("metadata has no valid \"state\" entry".into()))?;
    let steps = state.epoch.checked_mul(s.steps_per_epoch).map(|n| n as u64);
    if state.version != 1 || state.seed != s.config.seed || state.epoch > s.config.epochs || steps != Some(state.step) {
        return Err(corrupt(format!(
            "state {state:?} does not fit this run (version 1, seed {}, at most {} epochs of {} steps)",
            s.config.seed, s.config.epochs, s.steps_per_epoch
        ))
        .into());
    }
    let (model_t, optim_t): (HashMap<_, _>, HashMap<_, _>) =
        loaded.tensors.into_iter().map(|(k, t)| (current_name(&k), t)).partition(|(k, _)| !k.starts_with(OPTIM_PREFIX));
    store::check_fits(file, &s.model, &model_t)?;
    let optim_t = optim_t
        .into_iter()
        .map(|(k, (shape, v))| (k.trim_start_matches(OPTIM_PREFIX).to_string(), burn::tensor::TensorData::new(v, shape)))
        .collect();
    s.optim.load_state(optim_t, state.step, &s.device).map_err(|e| corrupt(e.to_string()))?;
    s.model = store::assign(s.model.clone(), &model_t);
    Ok(state)
}

fn save_checkpoint(dir: &Path, model: &Net, optim: &Optimizer, state: &CkptState) -> Result<(), TrainError> {
    let mut named = store::module_tensors(model);
    for (name, data) in optim.state_tensors() {
        let shape = data.shape().to_vec();
        named.push((format!("{OPTIM_PREFIX}{name}"), shape, data.convert::<f32>().try_into_vec::<f32>().unwrap_or_default()));
    }
    let st = serde_json::to_string(state).expect("state serializes");
    let bytes = store::to_safetensors(&named, HashMap::from([("state".to_string(), st.clone())]));
    store::write_atomic(&dir.join(files::CHECKPOINT), &bytes)?;
    store::write_atomic(&dir.join(files::STATE), serde_json::to_string_pretty(state).expect("state serializes").as_bytes())?;
    Ok(())
}

/// Finds the first parameter holding a non-finite value (for divergence messages).
fn first_non_finite(model: &Net) -> Option<String> {
    store::module_tensors(model).into_iter().find_map(|(p, _, v)| v.iter().find(|x| !x.is_finite()).map(|x| format!("{p} holds {x}")))
}

/// Options of one training call.
pub struct RunOptions<'a> {
    /// Run directory.
    pub dir: PathBuf,
    /// Continue the run in `dir` from its last checkpoint.
    pub resume: bool,
    /// Progress receiver.
    pub observer: &'a mut dyn Observer,
}

/// Trains a run described by `config` into `opts.dir` (or resumes it), writing
/// `config.toml`, `metrics.jsonl`, checkpoints and the final `done` record.
pub fn run(config: RunConfig, opts: RunOptions) -> Result<Summary, TrainError> {
    let dir = opts.dir;
    let dir_s = dir.display().to_string();
    let config_path = dir.join(files::CONFIG);
    let config = settings(config, &dir, opts.resume)?;
    let mut s = Setup::new(config)?;
    for w in normwd_core::budget::shortfalls(&s.config, s.steps_per_epoch) {
        opts.observer.warning(&w.message());
    }
    std::fs::create_dir_all(&dir).map_err(|e| TrainError::RunDir { dir: dir_s.clone(), what: format!("cannot create ({e})") })?;
    let mut start_epoch = 0;
    let mut keep_lines = Some(0);
    // A crashed writer may have left a temporary file (never a torn finished one).
    store::remove_stale_temporaries(&dir);
    if opts.resume {
        let p = dir.join(files::CHECKPOINT);
        if p.exists() {
            let file = p.display().to_string();
            let state = restore(&file, store::read_safetensors(&p)?, &mut s)?;
            start_epoch = state.epoch;
            keep_lines = Some(state.metrics_lines);
            opts.observer.resumed(state.epoch, state.step, s.config.epochs);
        } else {
            opts.observer.resumed(0, 0, s.config.epochs);
        }
    } else {
        store::write_atomic(&config_path, s.config.to_toml().as_bytes())?;
    }
    let mut log = MetricsLog::open(&dir.join(files::METRICS), keep_lines)?;
    let Setup { config: cfg, data, mut model, params, mut optim, device, steps_per_epoch } = s;
    let total_steps = steps_per_epoch * cfg.epochs;
    let probe_every = cfg.probe_every.unwrap_or_else(|| probe::default_every(total_steps));
    let infos: HashMap<String, ParamInfo> = params.iter().map(|p| (p.path.clone(), p.clone())).collect();
    let (mut last, mut wall, mut images) = (None::<EpochRecord>, 0.0, 0usize);
    for epoch in start_epoch..cfg.epochs {
        let order = data.epoch_order(cfg.seed, epoch);
        let augment = matches!(&data, Data::Images(d) if d.augment);
        let mut aug = augment.then(|| data::epoch_rng(cfg.seed, epoch, 1));
        opts.observer.epoch_start(epoch + 1, cfg.epochs, steps_per_epoch);
        let t0 = Instant::now();
        let (mut loss_sum, mut ok, mut seen, mut targets) = (0.0, 0i64, 0usize, 0usize);
        for batch in order.chunks(cfg.batch_size) {
            let (x, y) = model_batch(&data, true, batch, aug.as_mut(), &device);
            targets += y.dims()[0];
            let step = optim.step + 1;
            let measure = step % probe_every as u64 == 0;
            let lr_factor = optim.schedule.factor(optim.step as usize);
            let opt = &mut optim;
            let done = kernels::on_workers(move || {
                let logits = model.forward(x);
                let loss = cross_entropy(logits.clone(), y.clone());
                let lv = loss.clone().into_scalar::<f64>();
                if !lv.is_finite() {
                    return Err((Box::new(model), lv));
                }
                let ok = correct(logits.detach(), y);
                let (m, stats) = opt.step(model, loss.backward(), measure);
                Ok((m, lv, ok, stats))
            });
            let (m, lv, right, stats) = match done {
                Ok(r) => r,
                Err((m, lv)) => {
                    let what = first_non_finite(&m).unwrap_or_else(|| format!("loss is {lv}"));
                    log.flush()?;
                    return Err(TrainError::Diverged { epoch: epoch + 1, step, what, last_good: epoch });
                }
            };
            ok += right;
            loss_sum += lv * batch.len() as f64;
            seen += batch.len();
            model = m;
            log_probes(&mut log, &stats, &infos, &optim, (epoch, step), lr_factor)?;
            opts.observer.batch(lv, batch.len());
        }
        let secs = t0.elapsed().as_secs_f64();
        wall += secs;
        images += seen;
        let (test_loss, test_acc) = kernels::on_workers(|| evaluate(&model, &data, &device));
        let rec = EpochRecord {
            epoch: epoch + 1,
            step: optim.step,
            lr: optim.lr(params::Group::Default),
            train_loss: loss_sum / seen as f64,
            train_acc: ok as f64 / targets as f64,
            test_loss,
            test_acc,
            images_per_sec: seen as f64 / secs,
        };
        log.write(&Record::Epoch(rec.clone()))?;
        log.flush()?;
        opts.observer.epoch_end(&rec);
        let state = CkptState { version: 1, epoch: epoch + 1, step: optim.step, metrics_lines: log.lines, seed: cfg.seed };
        save_checkpoint(&dir, &model, &optim, &state)?;
        last = Some(rec);
    }
    finish(&dir, &mut log, last, &cfg, optim.step, (wall, images), data.baseline_loss())
}

/// The settings of the run in `dir`: `config` for a new run (refused where `dir` already holds
/// one), the run's own when resuming.
fn settings(config: RunConfig, dir: &Path, resume: bool) -> Result<RunConfig, TrainError> {
    let dir_s = dir.display().to_string();
    let config_path = dir.join(files::CONFIG);
    if resume {
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| TrainError::RunDir { dir: dir_s, what: format!("cannot resume: {} ({e})", files::CONFIG) })?;
        return Ok(RunConfig::from_toml(&config_path.display().to_string(), &text)?);
    }
    if config_path.exists() {
        return Err(TrainError::RunDir {
            dir: dir_s,
            what: "already holds a run (config.toml); use --resume to continue it or choose another --out".into(),
        });
    }
    Ok(config)
}

/// Writes the probe records of one update (`at`: its epoch, 0-based, and step) from its
/// measured `stats`; a tensor that turned NaN or inf stops the run, naming it.
fn log_probes(
    log: &mut MetricsLog,
    stats: &[crate::optim::UpdateStats],
    infos: &HashMap<String, ParamInfo>,
    optim: &Optimizer,
    (epoch, step): (usize, u64),
    lr_factor: f64,
) -> Result<(), TrainError> {
    for st in stats {
        let info = &infos[&st.path];
        if !probe::probed(info) {
            continue;
        }
        // The update just taken had 0-based index `step - 1`.
        let lr = optim.lr_for(info, step as usize - 1);
        if !(st.norm_after.is_finite() && st.grad_norm.is_finite()) {
            log.flush()?;
            return Err(TrainError::Diverged {
                epoch: epoch + 1,
                step,
                what: format!("{}: ||w|| = {}, ||g|| = {}", st.path, st.norm_after, st.grad_norm),
                last_good: epoch,
            });
        }
        let n0 = if optim.config.remedy.compensate_elr { optim.slot(&st.path, "init_sq_norm") } else { None };
        log.write(&Record::Probe(probe::record(step, &optim.config, info, lr, lr_factor, st, n0)))?;
    }
    Ok(())
}

/// The run's summary, written as its `done` record unless a resumed finished run has one:
/// `last` is this process's last epoch (`None`: nothing was left to train, so the last epoch on
/// disk), `(wall, images)` its training time and examples.
fn finish(
    dir: &Path,
    log: &mut MetricsLog,
    last: Option<EpochRecord>,
    cfg: &RunConfig,
    steps: u64,
    (wall, images): (f64, usize),
    baseline_loss: Option<f64>,
) -> Result<Summary, TrainError> {
    let last = match last {
        Some(r) => r,
        None => {
            let text = std::fs::read_to_string(dir.join(files::METRICS)).unwrap_or_default();
            let rec = text.lines().rev().find_map(|l| match Record::parse(l) {
                Some(Record::Epoch(e)) => Some(e),
                _ => None,
            });
            rec.ok_or_else(|| TrainError::RunDir { dir: dir.display().to_string(), what: "has a checkpoint but no epoch record".into() })?
        }
    };
    let summary = Summary {
        epochs: cfg.epochs,
        steps,
        test_acc: last.test_acc,
        test_loss: last.test_loss,
        train_loss: last.train_loss,
        images_per_sec: if wall > 0.0 { images as f64 / wall } else { last.images_per_sec },
        wall_s: wall,
        baseline_loss,
    };
    // A resumed finished run already has its done record.
    let done_already = std::fs::read_to_string(dir.join(files::METRICS))
        .unwrap_or_default()
        .lines()
        .any(|l| matches!(Record::parse(l), Some(Record::Done(_))));
    if !done_already {
        log.write(&Record::Done(summary.clone()))?;
        log.flush()?;
    }
    Ok(summary)
}
