//! The run directory's files: the core's atomic writes, metrics log and safetensors
//! ([`normwd_core::store`]), and a model's tensors to and from them ([`crate::model::state`]).

pub use crate::model::state::*;
pub use normwd_core::store::*;
