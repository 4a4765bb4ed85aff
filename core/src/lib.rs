//! normwd's core: everything about normalized networks and weight decay that needs no tensors.
//! The engine (`normwd`, on burn) and the Python package stand on it; other tools can read and
//! write normwd runs with it alone.
//!
//! Layers, each importing only those above it:
//! - [`choice`]: closed sets of names (the macro every typed setting uses);
//! - [`gemm`]: the one call into the GEMM crate (the engine's kernels and Muon's iteration);
//! - [`theory`]: the closed forms of THEORY.md;
//! - [`kinds`], [`roles`], [`schedule`], [`optim`]: what a run is made of (architecture and
//!   norm names, parameter roles and the decay rule, lr schedules, optimizer settings);
//! - [`advice`]: the mistakes flagged in how a tensor is trained;
//! - [`config`]: a run's typed settings, resolved once;
//! - [`budget`]: whether a run's schedule gives its weights time to reach equilibrium;
//! - [`probe`]: one probe record from a writer's raw sums, and which tensors get which
//!   prediction;
//! - [`records`], [`fault`], [`store`], [`run`]: the run directory (metrics lines, crash points
//!   for tests, atomic files and checkpoints, a run read back);
//! - [`sweep`]: sweep files and their results table;
//! - [`report`]: charts, sentences and HTML from runs on disk;
//! - [`exit`]: what each error above means for a process (its exit code).

pub mod advice;
pub mod budget;
pub mod choice;
pub mod config;
pub mod exit;
pub mod fault;
pub mod gemm;
pub mod kinds;
pub mod optim;
pub mod probe;
pub mod records;
pub mod report;
pub mod roles;
pub mod run;
pub mod schedule;
pub mod store;
pub mod sweep;
pub mod theory;
