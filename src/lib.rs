//! normwd: train networks with normalization layers, handle weight decay correctly, and
//! measure and predict its real effect, the effective learning rate.
//!
//! The engine, on burn, over the tensor-free core ([`normwd_core`]: theory, roles and decay
//! rules, typed settings, the run format, the report), whose modules are re-exported here
//! under the same names. Data flows top to bottom, each layer importing only those above it:
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
