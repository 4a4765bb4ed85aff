//! What an error means for a process, decided once per error type: 2 for bad usage or input
//! (a flag, a config key, a file given to read), 1 for a failure during a run (a write that
//! failed, a diverged training). Programs map errors to exit codes through this alone.

/// An error's process exit code.
pub trait ExitCode {
    /// 2 for bad usage or input, 1 for a failure during a run.
    fn exit_code(&self) -> i32;
}

impl ExitCode for crate::config::ConfigError {
    fn exit_code(&self) -> i32 {
        2
    }
}

impl ExitCode for crate::optim::OptimError {
    fn exit_code(&self) -> i32 {
        2
    }
}

impl ExitCode for crate::run::ReportError {
    /// A run folder that cannot be read was given as input; writing the report is the run.
    fn exit_code(&self) -> i32 {
        match self {
            crate::run::ReportError::Run { .. } => 2,
            crate::run::ReportError::Store(_) => 1,
        }
    }
}

impl ExitCode for crate::sweep::SpecError {
    /// The sweep file and `--shard` are input; the folder's files are written.
    fn exit_code(&self) -> i32 {
        match self {
            crate::sweep::SpecError::Spec { .. } | crate::sweep::SpecError::Shard(_) => 2,
            crate::sweep::SpecError::Store(_) => 1,
        }
    }
}
