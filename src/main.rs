//! The `normwd` command-line program: a thin layer over the library.

mod cli;

use clap::{Parser, Subcommand};

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
    /// Train one model (flags and/or --config run.toml).
    Train(Box<cli::train::TrainArgs>),
    /// Print each parameter's role, scale-invariance, decay and lr group.
    Audit(cli::audit::AuditArgs),
    /// Predict the equilibrium angular update and relaxation time for hyperparameters.
    Predict(cli::predict::PredictArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => cli::train::run(*a),
        Command::Audit(a) => cli::audit::run(a),
        Command::Predict(a) => cli::predict::run(a),
    };
    if let Err(f) = result {
        eprintln!("error: {}", f.message);
        std::process::exit(f.code);
    }
}
