//! normwd: train networks with normalization layers, handle weight decay correctly, and
//! measure and predict its real effect, the effective learning rate.
//!
//! The engine, on burn, over the tensor-free core ([`normwd_core`]: theory, roles and decay
//! rules, optimizer facts, typed settings, probe records, the run format, the report). The
//! core's `fault`, `report` and `theory` are re-exported here under their own names; the
//! others inside the engine module that builds on them: `roles` in [`params`], `optim` and
//! `schedule` in [`optim`] (`optim::schedule`), `probe` and `records` in [`probe`], `config`,
//! `store`, `run` and `records` in [`train`] (`train::config`, `train::store`), `sweep` in
//! [`sweep`], `kinds` in [`model`]. Data flows top to bottom, each layer importing only those
//! above it:
//! - [`data`]: datasets and batches;
//! - [`kernels`], [`device`]: CPU kernels plugged into burn, and the `--device` choice;
//! - [`model`]: the architectures and their norm layers, and the one parameter walker;
//! - [`params`]: each tensor's role, scale-invariance and decay group, read from the model;
//! - [`optim`]: optimizers as chains of masked transforms;
//! - [`check`]: scale-invariance confirmed numerically (AdamP's cosine test and rescaling);
//! - [`probe`]: per-layer measurements beside the theory's predictions;
//! - [`train`]: the loop, run files, resume;
//! - [`jobs`], [`sweep`], [`demo`]: many runs (side by side, grids, the study);
//! - [`inspect`]: foreign checkpoints (PyTorch, JAX) and ONNX graphs (imports down to `optim`);
//! - [`bench`], [`env`], [`fuzzing`]: benchmarks, `NORMWD_*` switches, fuzz entry points.
//!
//! The command-line program (`src/cli`) is a thin layer over these.

pub use normwd_core::{fault, report, theory};

pub mod bench;
pub mod check;
pub mod data;
pub mod demo;
pub mod device;
pub mod env;
pub mod fuzzing;
pub mod inspect;
pub mod jobs;
pub mod kernels;
pub mod model;
pub mod optim;
pub mod params;
pub mod probe;
pub mod sweep;
pub mod train;
