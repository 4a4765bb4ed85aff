//! normwd: train networks with normalization layers, handle weight decay correctly, and
//! measure and predict its real effect, the effective learning rate.
//!
//! Data flows top to bottom: [`data`] -> [`model`] -> [`params`] -> [`optim`] -> [`train`].

pub mod bench;
pub mod check;
pub mod data;
pub mod demo;
pub mod device;
pub mod env;
pub mod fault;
pub mod fuzzing;
pub mod inspect;
pub mod kernels;
pub mod model;
pub mod optim;
pub mod params;
pub mod probe;
pub mod report;
pub mod sweep;
pub mod theory;
pub mod train;
