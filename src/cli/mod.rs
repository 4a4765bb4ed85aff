//! The command-line layer: parses flags, calls the library, prints for people, and maps
//! errors to exit codes (2 for bad usage or input, 1 for failures during a run).

pub mod audit;
pub mod bench;
pub mod demo;
pub mod hyper;
pub mod inspect;
pub mod predict;
pub mod report;
pub mod sweep;
pub mod train;
pub mod values;

use normwd_core::exit::ExitCode;

/// A failure to report: message and exit code.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: i32,
    /// One-line message.
    pub message: String,
}

/// Any library error becomes a failure with the exit code its type decides.
impl<E: std::error::Error + ExitCode> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure { code: e.exit_code(), message: e.to_string() }
    }
}

/// Builds a [`Failure`].
pub fn fail(code: i32, message: impl Into<String>) -> Failure {
    Failure { code, message: message.into() }
}

/// A flag's parser for a closed set of names: `--help` and a misspelt value list the names of
/// the enum itself.
pub fn choice<T: normwd_core::choice::Choice + Clone + Send + Sync>() -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(T::ALL.iter().map(|v| v.name())).map(|s| T::parse(&s).expect("a listed name"))
}

/// Opens the `--device` named `name`, or says why it cannot (exit 2).
pub fn open_device(name: &str) -> Result<burn::tensor::Device, Failure> {
    normwd::device::open(name).map_err(|e| fail(2, format!("--device {name}: expected {e}")))
}

/// Formats a table with a header row, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells.iter().enumerate().map(|(i, c)| format!("{c:<width$}", width = w[i])).collect::<Vec<_>>().join("  ").trim_end().to_string()
    };
    let mut out = vec![line(header.iter().map(|s| s.to_string()).collect()), line(w.iter().map(|n| "-".repeat(*n)).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}
