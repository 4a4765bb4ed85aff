//! Saving and restoring an optimizer's state. Saved tensors are named `"{param path}/{index}.{slot}"`
//! (the index of the piece in the top-level chain, the slot its piece declares): runs saved
//! before keep resuming only while these names stay. The shape a loaded slot must have comes
//! from the pieces' own declarations ([`super::transform::Transform::slots`]).
//!
//! This module may import burn's tensors and the rest of [`super`].

use super::stats::host;
use super::transform::Chain;
use super::{OptimError, Optimizer};
use crate::params::ParamInfo;
use burn::tensor::{Device, Tensor, TensorData};

impl Optimizer {
    /// The first value of a parameter's state slot named `name` (whichever transform owns it).
    pub fn slot(&self, path: &str, name: &str) -> Option<f64> {
        let s = self.state.get(path)?;
        let t = s.iter().find(|(k, _)| k.rsplit_once('.').map(|(_, n)| n == name).unwrap_or(false))?.1;
        host(t.clone()).first().copied()
    }

    /// The optimizer's tensors, named `"{param path}/{slot}"`, as host data.
    pub fn state_tensors(&self) -> Vec<(String, TensorData)> {
        self.state.iter().flat_map(|(p, s)| s.iter().map(move |(k, t)| (format!("{p}/{k}"), t.to_data()))).collect()
    }

    /// Restores tensors saved by [`Optimizer::state_tensors`].
    pub fn load_state(&mut self, tensors: Vec<(String, TensorData)>, step: u64, device: &Device) -> Result<(), OptimError> {
        self.state.clear();
        for (name, data) in tensors {
            let (p, k) = name.rsplit_once('/').ok_or_else(|| OptimError::State(format!("tensor name {name:?} is not PARAM/SLOT")))?;
            let Some(info) = self.infos.get(p) else {
                return Err(OptimError::State(format!("state for unknown parameter {p:?}")));
            };
            let want = slot_shape(&self.chain, info, k)
                .ok_or_else(|| OptimError::State(format!("{name}: no slot {k:?} in this optimizer's chain")))?;
            if data.shape().to_vec() != want {
                return Err(OptimError::State(format!("{name}: shape {:?}, expected {want:?}", data.shape())));
            }
            self.state.entry(p.to_string()).or_default().insert(k.to_string(), Tensor::from_data(data, device));
        }
        self.step = step;
        Ok(())
    }
}

/// The shape a saved slot `"{index}.{name}"` must have for parameter `info` (`None`: the piece at
/// that index declares no such slot).
fn slot_shape(chain: &Chain, info: &ParamInfo, key: &str) -> Option<Vec<usize>> {
    let (index, name) = key.split_once('.')?;
    let piece = chain.0.get(index.parse::<usize>().ok()?)?;
    let rows = info.rows();
    let cols = info.shape.iter().product::<usize>() / rows.max(1);
    piece.slots().into_iter().find(|s| s.name == name).map(|s| s.shape.of(rows, cols).to_vec())
}
