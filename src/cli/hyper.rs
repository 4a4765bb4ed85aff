//! The training's optimizer and hyperparameters as `predict` and `inspect` take them: one set
//! of flags, one parser, the same defaults, and every value not given said aloud.

use super::{choice, fail, Failure};
use clap::Args;
use normwd::optim::{DecayMode, Rule};

/// Flags naming an optimizer and its hyperparameters (PyTorch's names).
#[derive(Args, Debug, Clone)]
pub struct HyperArgs {
    /// The optimizer.
    #[arg(long, default_value = "sgd", value_parser = choice::<Rule>())]
    pub optimizer: Rule,
    /// Learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Momentum (SGD) [default: 0.9].
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Weight decay lambda.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Where decay enters (default: decoupled for adamw and lion, coupled otherwise).
    #[arg(long, value_parser = choice::<DecayMode>())]
    pub decay: Option<DecayMode>,
    /// Betas as `b1,b2` (default 0.9,0.999; Lion 0.9,0.99).
    #[arg(long)]
    pub betas: Option<String>,
}

/// Hyperparameters checked, and the ones assumed because they were not given.
#[derive(Debug, Clone)]
pub struct Hyper {
    /// The optimizer.
    pub rule: Rule,
    /// Learning rate.
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Decay applied to the weights directly (else L2 in the gradient).
    pub decoupled: bool,
    /// Betas.
    pub betas: (f64, f64),
    /// What was assumed, as `--flag value` (empty when everything was given).
    pub assumed: Vec<String>,
}

fn check(flag: &str, v: f64, ok: bool, expected: &str) -> Result<f64, Failure> {
    if v.is_finite() && ok {
        Ok(v)
    } else {
        Err(fail(2, format!("--{flag} {v}: expected {expected}")))
    }
}

impl HyperArgs {
    /// Checks every value. An unset `--lr` / `--weight-decay` takes `assume` (and is listed in
    /// [`Hyper::assumed`]), or is required when `assume` is `None`.
    pub fn resolve(&self, assume: Option<(f64, f64)>) -> Result<Hyper, Failure> {
        let mut assumed = Vec::new();
        let mut given = |flag: &str, v: Option<f64>, default: Option<f64>| -> Result<f64, Failure> {
            match (v, default) {
                (Some(v), _) => Ok(v),
                (None, Some(d)) => {
                    assumed.push(format!("--{flag} {d}"));
                    Ok(d)
                }
                (None, None) => Err(fail(2, format!("--{flag}: required (the training's value)"))),
            }
        };
        let lr = given("lr", self.lr, assume.map(|a| a.0))?;
        let weight_decay = given("weight-decay", self.weight_decay, assume.map(|a| a.1))?;
        let momentum = match self.optimizer {
            Rule::Sgd => given("momentum", self.momentum, Some(0.9))?,
            _ => self.momentum.unwrap_or(0.0),
        };
        let betas = match &self.betas {
            Some(s) => {
                let v: Vec<f64> = s
                    .split(',')
                    .map(|x| x.trim().parse().map_err(|_| fail(2, format!("--betas {s:?}: expected b1,b2"))))
                    .collect::<Result<_, _>>()?;
                match v[..] {
                    [x, y] if (0.0..1.0).contains(&x) && (0.0..1.0).contains(&y) => (x, y),
                    _ => return Err(fail(2, format!("--betas {s:?}: expected two numbers in [0, 1)"))),
                }
            }
            None => self.optimizer.default_betas(),
        };
        Ok(Hyper {
            rule: self.optimizer,
            lr: check("lr", lr, lr > 0.0, "a finite number > 0")?,
            momentum: check("momentum", momentum, (0.0..1.0).contains(&momentum), "a number in [0, 1)")?,
            weight_decay: check("weight-decay", weight_decay, weight_decay >= 0.0, "a finite number >= 0")?,
            decoupled: self.decay.map(|d| d == DecayMode::Decoupled).unwrap_or(self.optimizer.decoupled_by_default()),
            betas,
            assumed,
        })
    }
}
