//! Parsers of list-valued flags that several commands take (`--betas`, `--milestones`): one
//! spelling, one message.

use serde::Serialize;

/// `--betas b1,b2`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Betas(pub [f64; 2]);

/// Parses `--betas`.
pub fn betas(s: &str) -> Result<Betas, String> {
    match numbers::<f64>(s)?[..] {
        [b1, b2] => Ok(Betas([b1, b2])),
        _ => Err("expected two numbers b1,b2".into()),
    }
}

/// `--milestones 30,60`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Milestones(pub Vec<usize>);

/// Parses `--milestones`.
pub fn milestones(s: &str) -> Result<Milestones, String> {
    numbers(s).map(Milestones)
}

/// Parses a count flag (`--train-subset`, `--probe-every`): an integer >= 1 (leaving the flag
/// out is how to ask for the default).
pub fn count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected an integer >= 1 (leave the flag out for the default)".into()),
    }
}

fn numbers<T: std::str::FromStr>(s: &str) -> Result<Vec<T>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.trim().parse::<T>().map_err(|_| "expected comma-separated numbers".to_string()))
        .collect()
}
