//! Model tensors to and from checkpoint files: the run files themselves (atomic writes, the
//! metrics log, safetensors) are the core's ([`normwd_core::store`]), re-exported here.

use crate::model::tensors;
use crate::model::walk::{self, host, MapFloat, VisitFloat};
use burn::module::{Module, Param};
use burn::tensor::{Tensor, TensorData};
pub use normwd_core::store::*;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_log_drops_torn_line_and_truncates() {
        let dir = std::env::temp_dir().join(format!("normwd-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("metrics.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        let log = MetricsLog::open(&p, None).unwrap();
        assert_eq!(log.lines, 2);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n{\"a\":2}\n");
        drop(log);
        let mut log = MetricsLog::open(&p, Some(1)).unwrap();
        log.write(&serde_json::json!({"a": 3})).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n{\"a\":3}\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn half_precision_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.33325195);
        assert_eq!(f16_to_f32(0x0001), 5.9604645e-8);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    fn safetensors_round_trip_and_corrupt_input() {
        let named = vec![("a.w".to_string(), vec![2, 2], vec![1.0, 2.0, 3.0, 4.0])];
        let bytes = to_safetensors(&named, HashMap::from([("k".into(), "v".into())]));
        let l = parse_safetensors("c", &bytes).unwrap();
        assert_eq!(l.tensors["a.w"], (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]));
        assert_eq!(l.metadata["k"], "v");
        let e = parse_safetensors("ckpt.safetensors", &bytes[..bytes.len() - 3]).unwrap_err().to_string();
        assert!(e.contains("ckpt.safetensors") && e.contains("not a valid safetensors"), "{e}");
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(parse_safetensors("c", &huge).is_err());
    }
}
