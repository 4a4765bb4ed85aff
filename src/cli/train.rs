//! `normwd train`: flags and `--config` merged into a [`RunConfig`], progress bars, summary.

use super::choice;
use super::values::{betas, count, milestones, Betas, Milestones};
use super::{fail, Failure};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use normwd::data::text::Tokens;
use normwd::model::{ModelKind, NormKind};
use normwd::optim::schedule::ScheduleKind;
use normwd::optim::{DecayMode, FixedNormGranularity, Invariance, NormTarget, OptimKind};
use normwd::params::DecayPolicy;
use normwd::train::config::{self, RunConfig};
use normwd::train::{self, EpochRecord, Observer, RunOptions};
use normwd_core::theory::muon::AdjustLr;
use serde::Serialize;
use std::path::PathBuf;

/// Flags of `train`: the run's settings, and where the run goes.
#[derive(Args, Debug, Default, Clone)]
pub struct TrainArgs {
    /// TOML file with run settings (keys = flag names with `_`).
    #[arg(long, conflicts_with = "resume")]
    pub config: Option<PathBuf>,
    /// The settings; each overrides the key of the same name in `--config`.
    #[command(flatten)]
    pub settings: Settings,
    /// Run directory (default: runs/MODEL-NORM-OPTIMIZER-sSEED).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, conflicts_with = "out")]
    pub resume: Option<PathBuf>,
}

/// The settings of a run as flags, typed by the same enums the config file uses; those given
/// become a TOML table laid over `--config` (unset flags and `false` switches are left out).
#[derive(Args, Debug, Default, Clone, Serialize)]
pub struct Settings {
    /// Architecture.
    #[arg(long, value_parser = choice::<ModelKind>())]
    pub model: Option<ModelKind>,
    /// Normalization after each linear layer (gpt: in each block; ln, rms or none) [default: bn;
    /// gpt: ln]
    #[arg(long, value_parser = choice::<NormKind>())]
    pub norm: Option<NormKind>,
    /// embedded | fashion-mnist | cifar10 | PATH
    #[arg(long)]
    pub data: Option<String>,
    /// Use only the first N training examples [default: all].
    #[arg(long, value_parser = count)]
    pub train_subset: Option<usize>,
    /// Use only the first N test examples [default: all].
    #[arg(long, value_parser = count)]
    pub test_subset: Option<usize>,
    /// Random crop + flip augmentation (CIFAR).
    #[arg(long)]
    #[serde(skip_serializing_if = "off")]
    pub augment: bool,
    /// Passes over the training set.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Examples per update.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// The optimizer.
    #[arg(long, value_parser = choice::<OptimKind>())]
    pub optimizer: Option<OptimKind>,
    /// Learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// SGD momentum.
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Nesterov momentum.
    #[arg(long)]
    #[serde(skip_serializing_if = "off")]
    pub nesterov: bool,
    /// Weight decay lambda (coupled: adds lambda*w to the gradient; decoupled: w -= lr*lambda*w).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Where decay enters.
    #[arg(long, value_parser = choice::<DecayMode>())]
    pub decay: Option<DecayMode>,
    /// Which tensors are decayed.
    #[arg(long, value_parser = choice::<DecayPolicy>())]
    pub decay_policy: Option<DecayPolicy>,
    /// Learning-rate multiplier of the scale-invariant group.
    #[arg(long)]
    pub si_lr_scale: Option<f64>,
    /// Weight decay of the scale-invariant group [default: --weight-decay]
    #[arg(long)]
    pub si_weight_decay: Option<f64>,
    /// Adam / Lion betas as `b1,b2`.
    #[arg(long, value_parser = betas)]
    pub betas: Option<Betas>,
    /// Adam epsilon.
    #[arg(long)]
    pub eps: Option<f64>,
    /// Learning-rate schedule.
    #[arg(long, value_parser = choice::<ScheduleKind>())]
    pub schedule: Option<ScheduleKind>,
    /// Epochs where `step` multiplies the lr by gamma, as `30,60`.
    #[arg(long, value_parser = milestones)]
    pub milestones: Option<Milestones>,
    /// Factor of the step schedule.
    #[arg(long)]
    pub gamma: Option<f64>,
    /// Steps of linear warmup.
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// Batch-norm running-average momentum (PyTorch convention).
    #[arg(long)]
    pub bn_momentum: Option<f64>,
    /// Seed of weights, data order and augmentation.
    #[arg(long)]
    pub seed: Option<u64>,
    /// cpu | wgpu | auto
    #[arg(long)]
    pub device: Option<String>,
    /// Probe every N steps [default: about 200 points per run, at most every 3rd step]
    #[arg(long, value_parser = count)]
    pub probe_every: Option<usize>,
    /// sgdp/adamp: where scale-invariance comes from (numeric: AdamP's cosine test).
    #[arg(long, value_parser = choice::<Invariance>())]
    pub invariance: Option<Invariance>,
    /// sgdp/adamp: cosine-test delta.
    #[arg(long)]
    pub delta: Option<f64>,
    /// sgdp/adamp: decay multiplier on projected tensors.
    #[arg(long)]
    pub wd_ratio: Option<f64>,
    /// lars: trust coefficient.
    #[arg(long)]
    pub trust_coeff: Option<f64>,
    /// lars: LARC clipping of the trust ratio.
    #[arg(long)]
    #[serde(skip_serializing_if = "off")]
    pub lars_clip: bool,
    /// fixed-norm: hold the norm per output channel or per tensor.
    #[arg(long, value_parser = choice::<FixedNormGranularity>())]
    pub fixed_norm_granularity: Option<FixedNormGranularity>,
    /// fixed-norm: the norm held (the initial one, or 1).
    #[arg(long, value_parser = choice::<NormTarget>())]
    pub fixed_norm_target: Option<NormTarget>,
    /// Scale gradients of scale-invariant weights by ||w||^2/||w_0||^2 instead of decaying them (sgd).
    #[arg(long)]
    #[serde(skip_serializing_if = "off")]
    pub compensate_elr: bool,
    /// rv-sgd/rv-adamw: decay of the running RMS of update sizes (0: each step's own; the paper's 0.9).
    #[arg(long)]
    pub rv_rms_decay: Option<f64>,
    /// Corrected decay (AdamC / SGDC): on scale-invariant weights the decay follows the lr
    /// schedule, `weight_decay * lr_t/lr_max`, so ||g||/||w|| stays flat as the lr falls.
    #[arg(long)]
    #[serde(skip_serializing_if = "off")]
    pub corrected_decay: bool,
    /// Cautious decay: decoupled decay only where the update and the weight agree in sign.
    #[arg(long)]
    #[serde(skip_serializing_if = "off")]
    pub cautious_decay: bool,
    /// muon: base lr of the hidden matrices (the other tensors take --lr, AdamW's)
    #[arg(long)]
    pub muon_lr: Option<f64>,
    /// muon: decay of the hidden matrices, decoupled at --muon-lr [default: --weight-decay]
    #[arg(long)]
    pub muon_weight_decay: Option<f64>,
    /// muon: momentum
    #[arg(long)]
    pub muon_momentum: Option<f64>,
    /// muon: Nesterov's blend, true/false [default: true]
    #[arg(long)]
    pub muon_nesterov: Option<bool>,
    /// muon: the step's shape adjustment (PyTorch's adjust_lr_fn)
    #[arg(long, value_parser = choice::<AdjustLr>())]
    pub muon_adjust_lr: Option<AdjustLr>,
    /// muon: Newton-Schulz steps
    #[arg(long)]
    pub muon_ns_steps: Option<usize>,
    /// Decay embeddings and position embeddings (true/false) [default: only under --decay-policy all]
    #[arg(long)]
    pub decay_embeddings: Option<bool>,
    /// gpt: one token per character or per byte of the text.
    #[arg(long, value_parser = choice::<Tokens>())]
    pub tokens: Option<Tokens>,
    /// gpt: transformer blocks.
    #[arg(long)]
    pub n_layer: Option<usize>,
    /// gpt: attention heads.
    #[arg(long)]
    pub n_head: Option<usize>,
    /// gpt: width of the residual stream.
    #[arg(long)]
    pub n_embd: Option<usize>,
    /// gpt: context length in tokens.
    #[arg(long)]
    pub block_size: Option<usize>,
    /// gpt: normalize queries and keys per head (QK-norm, of the --norm kind).
    #[arg(long)]
    #[serde(skip_serializing_if = "off")]
    pub qk_norm: bool,
    /// gpt: the output head is the token embedding (true/false).
    #[arg(long)]
    pub tie_embeddings: Option<bool>,
    /// gpt: rows of the token embedding [default: the text's vocabulary]
    #[arg(long, value_parser = count)]
    pub vocab_size: Option<usize>,
}

fn off(on: &bool) -> bool {
    !*on
}

impl TrainArgs {
    /// The configuration: defaults, then `--config`, then flags; resolved once to check it.
    pub fn config(&self) -> Result<RunConfig, Failure> {
        let mut table: toml::Table = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| fail(2, format!("{}: cannot read ({e})", p.display())))?;
                // Parse once as a RunConfig for unknown-key and type errors with line numbers.
                RunConfig::from_toml(&p.display().to_string(), &text)?;
                text.parse().map_err(|e: toml::de::Error| fail(2, format!("{}: {e}", p.display())))?
            }
            None => toml::Table::new(),
        };
        table.extend(toml::Table::try_from(&self.settings).map_err(|e| fail(2, format!("flags: {e}")))?);
        let c = RunConfig::from_table("settings", table)?;
        config::resolve(&c)?;
        Ok(c)
    }
}

/// What a rate counts: tokens per example (1: the rate counts images) and the unit's names.
#[derive(Clone, Copy)]
struct Unit {
    per_example: usize,
    short: &'static str,
    long: &'static str,
}

const IMAGES: Unit = Unit { per_example: 1, short: "img/s", long: "images/s" };

/// Shows progress on stderr: a bar per epoch on a terminal, else a line every tenth of an
/// epoch (a batch job's log shows progress within an epoch); one line per epoch on stdout.
/// Rates are images (or tokens) per second, and the ETA covers the whole run.
pub struct Bars {
    bar: Option<ProgressBar>,
    unit: Unit,
    tty: bool,
    images: usize,
    epoch: usize,
    epochs: usize,
    batches: usize,
    done: usize,
    started: Option<std::time::Instant>,
}

impl Bars {
    /// A new observer.
    pub fn new() -> Self {
        use std::io::IsTerminal;
        Bars {
            bar: None,
            unit: IMAGES,
            tty: std::io::stderr().is_terminal(),
            images: 0,
            epoch: 0,
            epochs: 0,
            batches: 0,
            done: 0,
            started: None,
        }
    }

    /// Rates in tokens per second, for `block` tokens per example.
    pub fn tokens(block: usize) -> Self {
        Bars { unit: Unit { per_example: block, short: "tok/s", long: "tokens/s" }, ..Self::new() }
    }

    /// Images per second in this epoch and the time left for the whole run.
    fn rate_and_eta(&self) -> (f64, String) {
        let secs = self.started.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0).max(1e-9);
        let batches_per_s = self.done as f64 / secs;
        let left = (self.batches - self.done) + (self.epochs - self.epoch) * self.batches;
        let eta = left as f64 / batches_per_s.max(1e-9);
        ((self.images * self.unit.per_example) as f64 / secs, format!("{:.0}m{:02.0}s", (eta / 60.0).floor(), eta % 60.0))
    }
}

impl Observer for Bars {
    fn warning(&mut self, message: &str) {
        eprintln!("warning: {message}");
    }
    fn resumed(&mut self, epochs_done: usize, step: u64, epochs: usize) {
        if step > 0 {
            eprintln!("resuming after epoch {epochs_done} of {epochs} (step {step})");
        }
    }
    fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize) {
        (self.epoch, self.epochs, self.batches, self.done, self.images) = (epoch, epochs, batches, 0, 0);
        self.started = Some(std::time::Instant::now());
        if self.tty {
            let b = ProgressBar::new(batches as u64);
            b.set_style(
                ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} batches, {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_prefix(format!("{epoch}/{epochs}"));
            self.bar = Some(b);
        }
    }
    fn batch(&mut self, loss: f64, images: usize) {
        self.done += 1;
        self.images += images;
        let (img_s, eta) = self.rate_and_eta();
        if let Some(b) = &self.bar {
            b.set_message(format!("loss {loss:.4}, {img_s:.0} {}, run eta {eta}", self.unit.short));
            b.inc(1);
        } else if self.done.is_multiple_of((self.batches / 10).max(1)) && self.done < self.batches {
            eprintln!(
                "epoch {}/{} batch {}/{}: loss {loss:.4}, {img_s:.0} {}, run eta {eta}",
                self.epoch, self.epochs, self.done, self.batches, self.unit.short
            );
        }
    }
    fn epoch_end(&mut self, r: &EpochRecord) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        println!(
            "epoch {:>3}  train loss {:.4} acc {:5.2}%  test loss {:.4} acc {:5.2}%  lr {:.4}  {:.0} {}",
            r.epoch,
            r.train_loss,
            100.0 * r.train_acc,
            r.test_loss,
            100.0 * r.test_acc,
            r.lr,
            r.images_per_sec * self.unit.per_example as f64,
            self.unit.short
        );
    }
}

/// What Ctrl-C prints before the process ends; set once, before the handler is installed.
#[cfg(unix)]
static RESUME_HINT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

#[cfg(unix)]
extern "C" fn interrupted(_: libc::c_int) {
    // Only async-signal-safe calls here: write(2) and _exit(2). Every run file is written to a
    // temporary and renamed, so stopping anywhere leaves the last checkpoint whole.
    if let Some(m) = RESUME_HINT.get() {
        // SAFETY: writing a buffer that lives for the whole process to stderr.
        unsafe { libc::write(2, m.as_ptr().cast(), m.len()) };
    }
    // SAFETY: ends the process at once, as the default SIGINT action would.
    unsafe { libc::_exit(130) };
}

/// On Ctrl-C, says how to continue the run in `dir` (exit 130).
fn on_interrupt_say_how_to_resume(dir: &std::path::Path) {
    #[cfg(unix)]
    {
        let hint = format!("\ninterrupted: continue from the last finished epoch with `normwd train --resume {}`\n", dir.display());
        if RESUME_HINT.set(hint.into_bytes()).is_ok() {
            // SAFETY: installing a handler that only calls async-signal-safe functions.
            unsafe { libc::signal(libc::SIGINT, interrupted as *const () as libc::sighandler_t) };
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Picks `runs/NAME`, or `runs/NAME-2`, ... if taken.
pub fn default_out(c: &RunConfig) -> PathBuf {
    let base = format!("runs/{}-{}-{}-s{}", c.model, c.norm_kind(), c.optimizer, c.seed);
    let mut p = PathBuf::from(&base);
    let mut k = 2;
    while p.exists() {
        p = PathBuf::from(format!("{base}-{k}"));
        k += 1;
    }
    p
}

/// The settings of the run in `dir`, if it has readable ones.
fn run_config(dir: &std::path::Path) -> Option<RunConfig> {
    let p = dir.join(train::files::CONFIG);
    RunConfig::from_toml(&p.display().to_string(), &std::fs::read_to_string(&p).ok()?).ok()
}

/// Runs `normwd train`.
pub fn run(args: TrainArgs) -> Result<(), Failure> {
    let (config, dir, resume) = match &args.resume {
        Some(d) => {
            // A resumed run keeps the settings it started with (its schedule, data order and
            // checkpoints depend on them): a flag here would be silently ignored, so refuse it.
            let given = toml::Table::try_from(&args.settings).map_err(|e| fail(2, format!("flags: {e}")))?;
            if let Some(key) = given.keys().next() {
                return Err(fail(
                    2,
                    format!(
                        "--{} cannot be changed by --resume: the run keeps the settings of {} (start a new run with --out to change them)",
                        key.replace('_', "-"),
                        d.join(train::files::CONFIG).display()
                    ),
                ));
            }
            (RunConfig::default(), d.clone(), true)
        }
        None => {
            let c = args.config()?;
            let d = args.out.clone().unwrap_or_else(|| default_out(&c));
            (c, d, false)
        }
    };
    println!("run directory: {}", dir.display());
    on_interrupt_say_how_to_resume(&dir);
    // A language model's rates are in tokens per second (a resumed run's settings are on disk).
    let settings = if resume { run_config(&dir) } else { Some(config.clone()) };
    let mut bars = match settings.filter(|c| c.model.reads_text()) {
        Some(c) => Bars::tokens(c.block_size),
        None => Bars::new(),
    };
    let s = train::run(config, RunOptions { dir: dir.clone(), resume, observer: &mut bars })?;
    if let Some(base) = s.baseline_loss {
        let bits = normwd::data::text::bits;
        println!(
            "held-out loss {:.4} nats ({:.3} bits) per token; the unigram model's: {base:.4} nats ({:.3} bits)",
            s.test_loss,
            bits(s.test_loss),
            bits(base)
        );
    }
    println!(
        "done: {} epochs, {} steps, test acc {:.2}%, test loss {:.4}, training throughput {:.0} {}; metrics in {}",
        s.epochs,
        s.steps,
        100.0 * s.test_acc,
        s.test_loss,
        s.images_per_sec * bars.unit.per_example as f64,
        bars.unit.long,
        dir.join(train::files::METRICS).display()
    );
    Ok(())
}
