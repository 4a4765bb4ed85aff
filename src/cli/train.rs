//! `normwd train`: flags and `--config` merged into a [`RunConfig`], progress bars, summary.

use super::{fail, Failure};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use normwd::train::config::RunConfig;
use normwd::train::{self, EpochRecord, Observer, RunOptions};
use std::path::PathBuf;

/// Flags of `train`; each overrides the key of the same name in `--config`.
#[derive(Args, Debug, Default, Clone)]
pub struct TrainArgs {
    /// TOML file with run settings (keys = flag names with `_`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// mlp | convnet | resnet20
    #[arg(long)]
    pub model: Option<String>,
    /// bn | ln | gn | wn | none
    #[arg(long)]
    pub norm: Option<String>,
    /// embedded | fashion-mnist | cifar10 | PATH
    #[arg(long)]
    pub data: Option<String>,
    /// Use only the first N training examples.
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// Use only the first N test examples.
    #[arg(long)]
    pub test_subset: Option<usize>,
    /// Random crop + flip augmentation (CIFAR).
    #[arg(long)]
    pub augment: bool,
    /// Passes over the training set.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Examples per update.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// sgd | adam | adamw | sgdp | adamp | lars | lamb | fixed-norm | rv-sgd | rv-adamw
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// SGD momentum.
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay lambda (coupled: adds lambda*w to the gradient; decoupled: w -= lr*lambda*w).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// coupled | decoupled (default: decoupled for adamw, coupled otherwise)
    #[arg(long)]
    pub decay: Option<String>,
    /// exclude-norm-bias | all | scale-invariant-only | none-on-scale-invariant
    #[arg(long)]
    pub decay_policy: Option<String>,
    /// Learning-rate multiplier of the scale-invariant group.
    #[arg(long)]
    pub si_lr_scale: Option<f64>,
    /// Weight decay of the scale-invariant group.
    #[arg(long)]
    pub si_weight_decay: Option<f64>,
    /// Adam betas as `b1,b2`.
    #[arg(long)]
    pub betas: Option<String>,
    /// Adam epsilon.
    #[arg(long)]
    pub eps: Option<f64>,
    /// constant | step | cosine
    #[arg(long)]
    pub schedule: Option<String>,
    /// Epochs where `step` multiplies the lr by gamma, as `30,60`.
    #[arg(long)]
    pub milestones: Option<String>,
    /// Factor of the step schedule.
    #[arg(long)]
    pub gamma: Option<f64>,
    /// Steps of linear warmup.
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// Batch-norm running-average momentum (PyTorch convention, default 0.1).
    #[arg(long)]
    pub bn_momentum: Option<f64>,
    /// Seed of weights, data order and augmentation.
    #[arg(long)]
    pub seed: Option<u64>,
    /// cpu | auto
    #[arg(long)]
    pub device: Option<String>,
    /// Probe every N steps (default: ~200 points per run, at most every 3rd step).
    #[arg(long)]
    pub probe_every: Option<usize>,
    /// sgdp/adamp: structural (from the graph) | numeric (AdamP's cosine test).
    #[arg(long)]
    pub invariance: Option<String>,
    /// sgdp/adamp: cosine-test delta (0.1).
    #[arg(long)]
    pub delta: Option<f64>,
    /// sgdp/adamp: decay multiplier on projected tensors (0.1).
    #[arg(long)]
    pub wd_ratio: Option<f64>,
    /// lars: trust coefficient (0.001).
    #[arg(long)]
    pub trust_coeff: Option<f64>,
    /// lars: LARC clipping of the trust ratio.
    #[arg(long)]
    pub lars_clip: bool,
    /// fixed-norm: channel | tensor.
    #[arg(long)]
    pub fixed_norm_granularity: Option<String>,
    /// fixed-norm: init | unit.
    #[arg(long)]
    pub fixed_norm_target: Option<String>,
    /// Scale gradients of scale-invariant weights by ||w||^2/||w_0||^2 instead of decaying them (sgd).
    #[arg(long)]
    pub compensate_elr: bool,
    /// rv-sgd/rv-adamw: decay of the running RMS of update sizes (0 = each step's own; the paper's 0.9).
    #[arg(long)]
    pub rv_rms_decay: Option<f64>,
    /// Run directory (default: runs/MODEL-NORM-OPTIMIZER-sSEED).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, conflicts_with = "out")]
    pub resume: Option<PathBuf>,
}

fn list<T: std::str::FromStr>(flag: &str, s: &str) -> Result<Vec<T>, Failure> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.trim().parse::<T>().map_err(|_| fail(2, format!("--{flag} {s:?}: expected comma-separated numbers"))))
        .collect()
}

impl TrainArgs {
    /// The configuration: defaults, then `--config`, then flags.
    pub fn config(&self) -> Result<RunConfig, Failure> {
        let mut table: toml::Table = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| fail(2, format!("{}: cannot read ({e})", p.display())))?;
                // Parse once as a RunConfig for unknown-key and type errors with line numbers.
                RunConfig::from_toml(&p.display().to_string(), &text).map_err(|e| fail(2, e.to_string()))?;
                text.parse().map_err(|e: toml::de::Error| fail(2, format!("{}: {e}", p.display())))?
            }
            None => toml::Table::new(),
        };
        let mut set = |k: &str, v: toml::Value| {
            table.insert(k.to_string(), v);
        };
        macro_rules! opt {
            ($field:ident, $conv:expr) => {
                if let Some(v) = &self.$field {
                    set(stringify!($field), $conv(v.clone()));
                }
            };
        }
        let s = |v: String| toml::Value::String(v);
        let f = toml::Value::Float;
        let i = |v: usize| toml::Value::Integer(v as i64);
        opt!(model, s);
        opt!(norm, s);
        opt!(data, s);
        opt!(train_subset, i);
        opt!(test_subset, i);
        opt!(epochs, i);
        opt!(batch_size, i);
        opt!(optimizer, s);
        opt!(lr, f);
        opt!(momentum, f);
        opt!(weight_decay, f);
        opt!(decay, s);
        opt!(decay_policy, s);
        opt!(si_lr_scale, f);
        opt!(si_weight_decay, f);
        opt!(eps, f);
        opt!(schedule, s);
        opt!(gamma, f);
        opt!(warmup_steps, i);
        opt!(bn_momentum, f);
        opt!(device, s);
        opt!(probe_every, i);
        opt!(invariance, s);
        opt!(rv_rms_decay, f);
        opt!(delta, f);
        opt!(wd_ratio, f);
        opt!(trust_coeff, f);
        opt!(fixed_norm_granularity, s);
        opt!(fixed_norm_target, s);
        for (flag, on) in [("lars_clip", self.lars_clip), ("compensate_elr", self.compensate_elr)] {
            if on {
                set(flag, toml::Value::Boolean(true));
            }
        }
        if let Some(seed) = self.seed {
            set("seed", toml::Value::Integer(seed as i64));
        }
        if self.nesterov {
            set("nesterov", toml::Value::Boolean(true));
        }
        if self.augment {
            set("augment", toml::Value::Boolean(true));
        }
        if let Some(b) = &self.betas {
            let v: Vec<f64> = list("betas", b)?;
            if v.len() != 2 {
                return Err(fail(2, format!("--betas {b:?}: expected two numbers b1,b2")));
            }
            set("betas", toml::Value::Array(v.into_iter().map(toml::Value::Float).collect()));
        }
        if let Some(m) = &self.milestones {
            let v: Vec<i64> = list("milestones", m)?;
            set("milestones", toml::Value::Array(v.into_iter().map(toml::Value::Integer).collect()));
        }
        let c: RunConfig = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| fail(2, format!("settings: {e}")))?;
        c.resolve().map_err(|e| fail(2, e.to_string()))?;
        Ok(c)
    }
}

/// Draws one progress bar per epoch on stderr (hidden when stderr is not a terminal) and
/// prints one line per epoch on stdout.
pub struct Bars {
    bar: Option<ProgressBar>,
}

impl Bars {
    /// A new observer.
    pub fn new() -> Self {
        Bars { bar: None }
    }
}

impl Observer for Bars {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize) {
        let b = ProgressBar::new(batches as u64);
        b.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} batches, loss {msg} ({per_sec}, eta {eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b.set_prefix(format!("{epoch}/{epochs}"));
        self.bar = Some(b);
    }
    fn batch(&mut self, loss: f64) {
        if let Some(b) = &self.bar {
            b.set_message(format!("{loss:.4}"));
            b.inc(1);
        }
    }
    fn epoch_end(&mut self, r: &EpochRecord) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        println!(
            "epoch {:>3}  train loss {:.4} acc {:5.2}%  test loss {:.4} acc {:5.2}%  lr {:.4}  {:.0} img/s",
            r.epoch,
            r.train_loss,
            100.0 * r.train_acc,
            r.test_loss,
            100.0 * r.test_acc,
            r.lr,
            r.images_per_sec
        );
    }
}

/// Picks `runs/NAME`, or `runs/NAME-2`, ... if taken.
pub fn default_out(c: &RunConfig) -> PathBuf {
    let base = format!("runs/{}-{}-{}-s{}", c.model, c.norm, c.optimizer, c.seed);
    let mut p = PathBuf::from(&base);
    let mut k = 2;
    while p.exists() {
        p = PathBuf::from(format!("{base}-{k}"));
        k += 1;
    }
    p
}

/// Runs `normwd train`.
pub fn run(args: TrainArgs) -> Result<(), Failure> {
    let (config, dir, resume) = match &args.resume {
        Some(d) => (RunConfig::default(), d.clone(), true),
        None => {
            let c = args.config()?;
            let d = args.out.clone().unwrap_or_else(|| default_out(&c));
            (c, d, false)
        }
    };
    println!("run directory: {}", dir.display());
    let mut bars = Bars::new();
    let s =
        train::run(config, RunOptions { dir: dir.clone(), resume, observer: &mut bars }).map_err(|e| fail(e.exit_code(), e.to_string()))?;
    println!(
        "done: {} epochs, {} steps, test acc {:.2}%, test loss {:.4}, training throughput {:.0} images/s; metrics in {}",
        s.epochs,
        s.steps,
        100.0 * s.test_acc,
        s.test_loss,
        s.images_per_sec,
        dir.join(train::files::METRICS).display()
    );
    Ok(())
}
