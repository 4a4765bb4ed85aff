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

#[cfg(test)]
mod tests {
    //! The saved names of every optimizer's state, as runs saved before the chains were composed
    //! from masks hold them, and their round trip through `load_state`.
    use super::*;
    use crate::optim::schedule::Schedule;
    use crate::optim::{OptimConfig, OptimKind};
    use crate::params::{DecayPolicy, Granularity, Role};

    #[test]
    fn state_names_stay_and_load_back() {
        let info = ParamInfo::new("w", vec![2, 3], Role::Weight, Some(Granularity::Channel), DecayPolicy::All);
        let m = ["1.momentum"];
        let adam = ["0.exp_avg", "0.exp_avg_sq"];
        let cases: [(OptimKind, &[&str]); 11] = [
            (OptimKind::Sgd, &m),
            (OptimKind::Adam, &["1.exp_avg", "1.exp_avg_sq"]),
            (OptimKind::Adamw, &adam),
            (OptimKind::Sgdp, &["0.momentum"]),
            (OptimKind::Adamp, &adam),
            (OptimKind::Lars, &m),
            (OptimKind::Lamb, &adam),
            (OptimKind::FixedNorm, &["1.momentum", "3.target_norm"]),
            (OptimKind::RvSgd, &["1.momentum", "3.init_norm", "3.rms"]),
            (OptimKind::RvAdamw, &["0.exp_avg", "0.exp_avg_sq", "3.init_norm", "3.rms"]),
            (OptimKind::Muon, &["0.momentum_buffer"]),
        ];
        let dev = Device::flex();
        for (kind, names) in cases {
            let mut c = OptimConfig::of_kind(kind, 0.1, 0.05);
            if kind == OptimKind::FixedNorm {
                c.si_weight_decay = Some(0.0);
            }
            let mut opt = Optimizer::new(c.clone(), Schedule::constant(1), std::slice::from_ref(&info)).unwrap();
            opt.step = 1;
            let t = |s: u32| {
                Tensor::<2>::from_data(TensorData::new((0..6).map(|i| (i * 7 + s) as f32 % 5.0 - 2.0).collect::<Vec<_>>(), [2, 3]), &dev)
            };
            opt.update("w", t(1), t(3), false).unwrap();
            let saved = opt.state_tensors();
            let got: Vec<String> = saved.iter().map(|(k, _)| k.clone()).collect();
            let want: Vec<String> = names.iter().map(|n| format!("w/{n}")).collect();
            assert_eq!(got, want, "{kind:?}");
            let mut again = Optimizer::new(c, Schedule::constant(1), std::slice::from_ref(&info)).unwrap();
            again.load_state(saved, 1, &dev).unwrap();
            let mut wrong = opt.state_tensors();
            wrong[0].1 = TensorData::new(vec![0f32; 2], [2, 1]);
            let e = again.load_state(wrong, 1, &dev).unwrap_err().to_string();
            assert!(e.contains("shape"), "{kind:?}: {e}");
            let e =
                again.load_state(vec![("w/9.momentum".into(), TensorData::new(vec![0f32; 6], [2, 3]))], 1, &dev).unwrap_err().to_string();
            assert!(e.contains("no slot"), "{kind:?}: {e}");
        }
    }
}
