//! A model's tensors as host data by path, and back: what checkpoints and the numerical
//! checks read and write. (The checkpoint files themselves are the core's, `normwd_core::store`.)

use super::tensors;
use super::walk::{self, host, MapFloat, VisitFloat};
use burn::module::{Module, Param};
use burn::tensor::{Tensor, TensorData};
use normwd_core::store::StoreError;
use std::collections::HashMap;

struct Collect(Vec<(String, Vec<usize>, Vec<f32>)>);

impl VisitFloat for Collect {
    fn float<const D: usize>(&mut self, path: &str, _: &str, param: &Param<Tensor<D>>) {
        let t = param.val();
        self.0.push((path.to_string(), t.dims().to_vec(), host(t)));
    }
}

/// Every float tensor of a module (parameters and buffers) by path, as host data.
pub fn module_tensors<M: Module>(m: &M) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut c = Collect(Vec::new());
    walk::visit(m, &mut c);
    c.0
}

/// Checks that `loaded` holds exactly the tensors of `m` with the same shapes; the error
/// lists every mismatch.
pub fn check_fits<M: Module>(file: &str, m: &M, loaded: &HashMap<String, (Vec<usize>, Vec<f32>)>) -> Result<(), StoreError> {
    let mut problems = Vec::new();
    let want = tensors(m);
    for t in &want {
        match loaded.get(&t.path) {
            None => problems.push(format!("missing {} {:?}", t.path, t.shape)),
            Some((s, _)) if *s != t.shape => problems.push(format!("{}: shape {:?}, model has {:?}", t.path, s, t.shape)),
            _ => {}
        }
    }
    let mut extra: Vec<&String> = loaded.keys().filter(|k| !want.iter().any(|t| &t.path == *k)).collect();
    extra.sort();
    problems.extend(extra.into_iter().map(|k| format!("unexpected {k}")));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Corrupt { file: file.to_string(), what: format!("does not match the model: {}", problems.join("; ")) })
    }
}

struct Assign<'a>(&'a HashMap<String, (Vec<usize>, Vec<f32>)>);

impl MapFloat for Assign<'_> {
    fn float<const D: usize>(&mut self, path: &str, tensor: Tensor<D>) -> Tensor<D> {
        let Some((shape, v)) = self.0.get(path) else { return tensor };
        let t = Tensor::<D>::from_data(TensorData::new(v.clone(), shape.clone()), &tensor.device());
        if tensor.is_require_grad() {
            t.require_grad()
        } else {
            t
        }
    }
}

/// Replaces `m`'s tensors by the loaded ones (call [`check_fits`] first).
pub fn assign<M: Module>(m: M, from: &HashMap<String, (Vec<usize>, Vec<f32>)>) -> M {
    walk::map(m, &mut Assign(from))
}
