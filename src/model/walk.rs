//! The one walk over a module's float tensors (parameters and buffers), in burn's field order,
//! with each tensor's dotted path: listing, checkpoint writing and loading, gradient collection
//! and the optimizer step all see the same paths because they all walk through here.
//!
//! burn's `ModuleVisitor` / `ModuleMapper` hand out tensors with a const-generic rank and only
//! enter/exit callbacks for the path, so a walker is a small trait with a generic method
//! ([`VisitFloat`], [`MapFloat`]) rather than a closure; the path bookkeeping lives here
//! alone, and every walker goes through [`visit`] / [`map`].

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// What a read-only walk does with each float tensor.
pub trait VisitFloat {
    /// Called once per float tensor: `path` is dotted (`block1.norm.weight`, enum variants left
    /// out), `owner` the type of the struct holding it (`Norm`, `Conv`, `Dense`).
    fn float<const D: usize>(&mut self, path: &str, owner: &str, param: &Param<Tensor<D>>);
}

/// What a rebuilding walk does with each float tensor.
///
/// It receives the bare tensor, not the `Param`: [`map`] unwraps and rewraps it with
/// `Param::map`, which keeps the parameter's id and training state, so no mapper repeats that.
pub trait MapFloat {
    /// Returns the tensor to store at `path` (return `tensor` itself to leave it as it is).
    fn float<const D: usize>(&mut self, path: &str, tensor: Tensor<D>) -> Tensor<D>;
}

/// Calls `f` on every float tensor of `m` in a stable order (burn's field order).
pub fn visit<M: Module, F: VisitFloat>(m: &M, f: &mut F) {
    m.visit(&mut Walker { at: PathTracker::default(), f });
}

/// Rebuilds `m` with every float tensor replaced by what `f` returns for it.
pub fn map<M: Module, F: MapFloat>(m: M, f: &mut F) -> M {
    m.map(&mut Walker { at: PathTracker::default(), f })
}

/// A tensor's values as host `f32`s (empty if the backend cannot give them).
pub fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default()
}

struct Walker<'a, F> {
    at: PathTracker,
    f: &'a mut F,
}

impl<F: VisitFloat> ModuleVisitor for Walker<'_, F> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.at.enter(name, container_type);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.at.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.f.float(&self.at.path(), &self.at.owner(), param);
    }
}

impl<F: MapFloat> ModuleMapper for Walker<'_, F> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.at.enter(name, container_type);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.at.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.at.path();
        param.map(|t| self.f.float(&path, t))
    }
}

/// Tracks the dotted path during a module walk; enum variants do not add a component.
#[derive(Default)]
struct PathTracker {
    parts: Vec<(String, String)>,
}

impl PathTracker {
    /// Enters a submodule.
    fn enter(&mut self, name: &str, container: &str) {
        self.parts.push((name.to_string(), container.to_string()));
    }

    /// Leaves a submodule.
    fn exit(&mut self) {
        self.parts.pop();
    }

    /// The current path (the field name of a tensor is its last component).
    fn path(&self) -> String {
        self.parts.iter().filter(|(_, c)| !c.starts_with("Enum:")).map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(".")
    }

    /// Type of the struct that holds the current field (`Norm` for `block1.norm.weight`):
    /// burn passes the holder's type when it enters a field.
    fn owner(&self) -> String {
        let c = self.parts.last().map(|p| p.1.as_str()).unwrap_or("");
        c.strip_prefix("Struct:").unwrap_or(c).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelKind, Net, NormKind};
    use burn::tensor::Device;

    struct Paths(Vec<(String, String)>);

    impl VisitFloat for Paths {
        fn float<const D: usize>(&mut self, path: &str, owner: &str, _: &Param<Tensor<D>>) {
            self.0.push((path.to_string(), owner.to_string()));
        }
    }

    struct Negate(Vec<String>);

    impl MapFloat for Negate {
        fn float<const D: usize>(&mut self, path: &str, tensor: Tensor<D>) -> Tensor<D> {
            self.0.push(path.to_string());
            tensor.neg()
        }
    }

    #[test]
    fn visit_and_map_see_the_same_paths_in_the_same_order() {
        let build = || Net::new(ModelKind::Convnet, NormKind::Bn, [1, 28, 28], 0.1, 1, &Device::flex());
        let net = build();
        let mut seen = Paths(Vec::new());
        visit(&net, &mut seen);
        assert_eq!(seen.0[0], ("block1.conv.weight".to_string(), "Conv".to_string()));
        assert!(seen.0.contains(&("block1.norm.running_var".to_string(), "Norm".to_string())));
        let mut neg = Negate(Vec::new());
        // A fresh copy, not a clone: clones share burn's running statistics, which `map` updates in place.
        let mapped = map(build(), &mut neg);
        assert_eq!(neg.0, seen.0.iter().map(|p| p.0.clone()).collect::<Vec<_>>());
        let a = crate::model::state::module_tensors(&net);
        let b = crate::model::state::module_tensors(&mapped);
        assert_eq!(a.len(), b.len());
        for ((pa, _, va), (pb, _, vb)) in a.iter().zip(&b) {
            assert_eq!(pa, pb);
            assert!(va.iter().zip(vb).all(|(x, y)| *x == -*y), "{pa}");
        }
    }
}
