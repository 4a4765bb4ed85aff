//! The `normwd` command-line program: a thin layer over the library.

mod cli;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Train normalized networks with correct weight decay; measure and predict the effective
/// learning rate.
#[derive(Parser)]
#[command(name = "normwd", version, about, allow_negative_numbers = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the convnet under the weight-decay regimes of the study and write a report.
    Demo(cli::demo::DemoArgs),
    /// Train one model (flags and/or --config run.toml).
    #[command(allow_negative_numbers = true)]
    Train(Box<cli::train::TrainArgs>),
    /// Print each parameter's role, scale-invariance, decay and lr group.
    Audit(cli::audit::AuditArgs),
    /// Predict the equilibrium angular update and relaxation time for hyperparameters.
    #[command(allow_negative_numbers = true)]
    Predict(cli::predict::PredictArgs),
    /// Charts and tables for runs already on disk.
    Report(cli::report::ReportArgs),
    /// Train a grid of runs (resumable, shardable) and report it.
    Sweep(cli::sweep::SweepArgs),
    /// Measure checkpoints saved by PyTorch / JAX: norms, angles, effective lr, equilibrium, flags.
    #[command(allow_negative_numbers = true)]
    Inspect(cli::inspect::InspectArgs),
    /// Benchmarks printed as ratios against a reference in the same process.
    Bench(cli::bench::BenchArgs),
}

/// The command line, with `train --help` showing each setting's default once, from the one
/// place defaults are kept (`RunConfig::defaults`), the transformer's beside the image models'
/// where they differ; help texts hold no copies of them.
fn command() -> clap::Command {
    use normwd::model::ModelKind;
    use normwd::train::config::RunConfig;
    let table = |m| toml::Table::try_from(RunConfig::defaults(m)).expect("the defaults serialize");
    let (image, gpt) = (table(ModelKind::Convnet), table(ModelKind::Gpt));
    let shown = |v: &toml::Value| match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Array(a) if a.is_empty() => None,
        toml::Value::Array(a) => Some(a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")),
        toml::Value::Boolean(_) => None,
        toml::Value::Float(f) if *f != 0.0 && f.abs() < 1e-3 => Some(format!("{f:e}")),
        other => Some(other.to_string()),
    };
    let optimizer_defaults = optimizer_defaults();
    Cli::command().mut_subcommand("train", |train| {
        let ids: Vec<String> = train.get_arguments().map(|a| a.get_id().to_string()).collect();
        ids.into_iter().fold(train, |c, id| {
            let (d, g) = match optimizer_defaults.iter().find(|(key, _)| *key == id) {
                Some((_, d)) => (Some(d.clone()), None),
                None => (image.get(&id).and_then(shown), gpt.get(&id).and_then(shown)),
            };
            let Some(d) = d else { return c };
            let d = match g.filter(|g| *g != d && id != "model") {
                Some(g) => format!("{d}; gpt: {g}"),
                None => d,
            };
            c.mut_arg(&id, |a| {
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                a.help(format!("{help} [default: {d}]"))
            })
        })
    })
}

/// The defaults each optimizer chooses for itself (`--decay`, `--decay-policy`, `--betas`), in
/// words, from its row of facts (`OptimKind::facts`).
fn optimizer_defaults() -> Vec<(&'static str, String)> {
    use normwd::optim::OptimKind;
    // The value most kinds take, then the kinds that take another, by value.
    fn by_kind<T: PartialEq + Copy>(of: impl Fn(OptimKind) -> T, show: impl Fn(T) -> String) -> String {
        let mut values: Vec<(T, Vec<&str>)> = Vec::new();
        for k in OptimKind::ALL {
            match values.iter_mut().find(|(v, _)| *v == of(k)) {
                Some((_, kinds)) => kinds.push(k.name()),
                None => values.push((of(k), vec![k.name()])),
            }
        }
        values.sort_by_key(|(_, kinds)| std::cmp::Reverse(kinds.len()));
        let mut parts = vec![show(values[0].0)];
        parts.extend(values[1..].iter().map(|(v, kinds)| format!("{}: {}", kinds.join(", "), show(*v))));
        parts.join("; ")
    }
    vec![
        ("decay", by_kind(|k| k.facts().decay, |d| d.name().to_string())),
        ("decay_policy", by_kind(|k| k.facts().policy, |p| p.name().to_string()) + "; --compensate-elr: none-on-scale-invariant"),
        ("betas", by_kind(|k| k.facts().betas, |(a, b)| format!("{a},{b}"))),
    ]
}

/// Exits on a flag clap refused. A bad value gets the one line every other bad input gets
/// (`--model "vgg": expected one of mlp, convnet, resnet20`); the rest (help, unknown flags)
/// is clap's own.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(e.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        if let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) =
            (e.get(ContextKind::InvalidArg), e.get(ContextKind::InvalidValue))
        {
            let flag = arg.split_whitespace().next().unwrap_or(arg);
            let expected = match e.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(names)) => format!("expected one of {}", names.join(", ")),
                _ => std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_else(|| "a valid value".into()),
            };
            eprintln!("error: {flag} {value:?}: {expected}");
            std::process::exit(2);
        }
    }
    e.exit()
}

fn main() {
    // Under a file-size limit (`ulimit -f`) a write then fails with EFBIG and is reported like a
    // full disk, keeping the previous checkpoint, instead of the signal killing the process.
    #[cfg(unix)]
    // SAFETY: setting signals' dispositions before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        // Output piped into `head` ends like any Unix tool's when the reader goes away,
        // instead of `println!` panicking on the broken pipe (Rust ignores SIGPIPE). Files
        // are written to a temporary and renamed, so this never leaves half of one.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // SAFETY: no thread has started yet.
    unsafe { normwd::env::tune_allocator() };
    let matches = command().try_get_matches().unwrap_or_else(|e| usage_error(e));
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| usage_error(e));
    if let Err(message) = normwd::env::check() {
        eprintln!("error: {message}");
        std::process::exit(2);
    }
    let result = match cli.command {
        Command::Demo(a) => cli::demo::run(a),
        Command::Report(a) => cli::report::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Sweep(a) => cli::sweep::run(a),
        Command::Train(a) => cli::train::run(*a),
        Command::Audit(a) => cli::audit::run(a),
        Command::Predict(a) => cli::predict::run(a),
    };
    if let Err(f) = result {
        eprintln!("error: {}", f.message);
        std::process::exit(f.code);
    }
}
