//! The training's optimizer and hyperparameters as `predict` and `inspect` take them: one set
//! of flags, one parser, the same defaults, and every value not given said aloud.

use super::values::{betas, Betas};
use super::{choice, fail, Failure};
use clap::Args;
use normwd::optim::{DecayMode, Hyper, Rule};

/// Flags naming an optimizer and its hyperparameters (PyTorch's names).
#[derive(Args, Debug, Clone)]
pub struct HyperArgs {
    /// The optimizer [default: sgd].
    #[arg(long, value_parser = choice::<Rule>())]
    pub optimizer: Option<Rule>,
    /// Learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Momentum (SGD) [default: 0.9]; for nadam its blend mu_t [default: beta1]; muon [default: 0.95].
    #[arg(long)]
    pub momentum: Option<f64>,
    /// muon: Nesterov's blend, true/false [default: true].
    #[arg(long)]
    pub nesterov: Option<bool>,
    /// Weight decay lambda.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Where decay enters (default: decoupled for adamw and lion, coupled otherwise).
    #[arg(long, value_parser = choice::<DecayMode>())]
    pub decay: Option<DecayMode>,
    /// Betas as `b1,b2` (default 0.9,0.999; Lion 0.9,0.99).
    #[arg(long, value_parser = betas)]
    pub betas: Option<Betas>,
}

/// Hyperparameters checked, and the ones assumed because they were not given.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The training's optimizer settings.
    pub hyper: Hyper,
    /// What was assumed, as `--flag value` (empty when everything was given).
    pub assumed: Vec<String>,
}

impl HyperArgs {
    /// Checks every value. An unset `--lr` / `--weight-decay` takes `assume` (and is listed in
    /// [`Resolved::assumed`]), or is required when `assume` is `None`.
    pub fn resolve(&self, assume: Option<(f64, f64)>) -> Result<Resolved, Failure> {
        let mut assumed = Vec::new();
        let optimizer = self.optimizer.unwrap_or_else(|| {
            if assume.is_some() {
                assumed.push("--optimizer sgd".into());
            }
            Rule::Sgd
        });
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
        let betas = match self.betas {
            Some(Betas([x, y])) if (0.0..1.0).contains(&x) && (0.0..1.0).contains(&y) => (x, y),
            Some(Betas([x, y])) => return Err(fail(2, format!("--betas {x},{y}: expected two numbers in [0, 1)"))),
            None => optimizer.default_betas(),
        };
        let momentum = match optimizer {
            Rule::Sgd => given("momentum", self.momentum, Some(0.9))?,
            // NAdam's Nesterov blend mu_t, which tends to beta1 as a training goes on.
            Rule::Nadam => self.momentum.unwrap_or(betas.0),
            Rule::Muon => given("momentum", self.momentum, Some(0.95))?,
            _ => self.momentum.unwrap_or(0.0),
        };
        let decoupled = self.decay.map(|d| d == DecayMode::Decoupled).unwrap_or(optimizer.decoupled_by_default());
        if optimizer == Rule::Muon && !decoupled {
            return Err(fail(2, "--decay coupled: Muon's decay is decoupled (PyTorch's Muon has no L2 mode)"));
        }
        let nesterov = self.nesterov.unwrap_or(optimizer == Rule::Muon);
        let hyper = Hyper { optimizer, lr, momentum, weight_decay, coupled: !decoupled, betas, nesterov };
        hyper.validate().map_err(|e| fail(2, e.to_string()))?;
        Ok(Resolved { hyper, assumed })
    }

    /// The flags laid over `base` (settings a training saved): what a flag gives replaces the
    /// saved value, the rest is kept, and the result is checked as [`HyperArgs::resolve`] checks.
    /// Naming another optimizer keeps only the learning rate and weight decay.
    pub fn over(&self, base: &Hyper) -> Result<Hyper, Failure> {
        let optimizer = self.optimizer.unwrap_or(base.optimizer);
        let same = optimizer == base.optimizer;
        let mode = if base.coupled { DecayMode::Coupled } else { DecayMode::Decoupled };
        let filled = HyperArgs {
            optimizer: Some(optimizer),
            lr: self.lr.or(Some(base.lr)),
            momentum: self.momentum.or(Some(base.momentum).filter(|_| same)),
            weight_decay: self.weight_decay.or(Some(base.weight_decay)),
            decay: self.decay.or(Some(mode).filter(|_| same)),
            betas: self.betas.or(Some(Betas([base.betas.0, base.betas.1])).filter(|_| same)),
            nesterov: self.nesterov.or(Some(base.nesterov).filter(|_| same)),
        };
        Ok(filled.resolve(None)?.hyper)
    }
}
