//! Checkpoints written by `torch.save` (`.pt`, `.pth`, `.bin`, `.ckpt`), the form most PyTorch
//! trainings leave. burn's `pytorch-reader` parses them without Python: every container
//! `torch.save` has written (zip, the legacy pickle stream, tar), strided views gathered into
//! row-major order, and sizes checked against the file before anything is allocated.

use super::optimizer::{self, StoredOptimizer};
use super::{at, InspectError, Tensors};
use pytorch_reader::{DType, PickleValue, PytorchReader};
use std::io::Read;
use std::path::Path;

/// Where training scripts nest the weights of a whole checkpoint, tried in this order: Lightning
/// writes `state_dict`, and `{"model": ..., "optimizer": ..., "epoch": ...}` is the common
/// hand-written form. Its optimizer state (momentum buffers) must not be read as weights.
pub const WEIGHT_KEYS: [&str; 5] = ["state_dict", "model_state_dict", "model", "module", "net"];

/// Whether `path` starts like a safetensors file (an 8-byte header length, then the JSON
/// header's `{`); every other file is read as a `torch.save` checkpoint. Sniffed rather than
/// judged by extension, since `.bin` and `.ckpt` name either.
pub fn is_safetensors(path: &Path) -> Result<bool, InspectError> {
    let mut head = [0u8; 9];
    let mut f = std::fs::File::open(path).map_err(|e| at(path, format!("cannot read ({e})")))?;
    let n = f.read(&mut head).map_err(|e| at(path, format!("cannot read ({e})")))?;
    Ok(n == head.len() && head[8] == b'{')
}

/// What a `torch.save` checkpoint holds for `inspect`.
pub struct TorchFile {
    /// The key the weights were read under, if any (printed, so a guess is visible).
    pub key: Option<String>,
    /// The float tensors.
    pub tensors: Tensors,
    /// The optimizer state saved beside them, or why it could not be used.
    pub optimizer: Option<Result<StoredOptimizer, String>>,
}

/// The float tensors of a `torch.save` checkpoint, under `key` when given; otherwise under
/// the first of [`WEIGHT_KEYS`] that holds a dictionary, else the whole file (a plain
/// `state_dict`, or a whole module saved with `torch.save(model)`). Integer tensors, such as
/// batch norm's `num_batches_tracked`, are counters and left out, as for safetensors. A training
/// checkpoint's optimizer state comes with them ([`optimizer_state`]).
pub fn read(path: &Path, key: Option<&str>) -> Result<TorchFile, InspectError> {
    let bad = |e: pytorch_reader::PytorchError| at(path, format!("not a safetensors or PyTorch checkpoint ({e})"));
    let root = PytorchReader::read_pickle_data(path, None).map_err(bad)?;
    let key = match key {
        Some(k) => Some(k.to_string()),
        None => weights_key(path, &root)?,
    };
    let reader = match &key {
        Some(k) => PytorchReader::with_top_level_key(path, k).map_err(|e| at(path, format!("--key {k}: {e}")))?,
        None => PytorchReader::new(path).map_err(bad)?,
    };
    let mut tensors = Tensors::new();
    for (name, t) in reader.into_tensors() {
        let bytes = t.read().map_err(|e| at(path, format!("cannot read ({e})")))?;
        let v: Vec<f32> = match t.dtype() {
            DType::F32 => bytes.chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect(),
            DType::F64 => bytes.chunks_exact(8).map(|c| f64::from_ne_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
            DType::BF16 => bytes.chunks_exact(2).map(|c| f32::from_bits((u16::from_ne_bytes([c[0], c[1]]) as u32) << 16)).collect(),
            DType::F16 => bytes.chunks_exact(2).map(|c| normwd_core::store::f16_to_f32(u16::from_ne_bytes([c[0], c[1]]))).collect(),
            DType::I64 | DType::I32 | DType::I16 | DType::I8 | DType::U64 | DType::U32 | DType::U16 | DType::U8 | DType::Bool => continue,
        };
        tensors.insert(name, (t.shape().to_vec(), v));
    }
    if tensors.is_empty() {
        let under = key.map(|k| format!(" under key {k}")).unwrap_or_default();
        return Err(at(path, format!("no float tensors{under}: expected a state_dict or a checkpoint holding one")));
    }
    Ok(TorchFile { key, tensors, optimizer: optimizer_state(path, &root) })
}

/// The optimizer state in the `torch.save` file at `path` with pickle `root` (`None`: it holds
/// none), or why it cannot be used: one `inspect` does not know. Several optimizers (Muon beside
/// AdamW: `{"optimizers": [muon.state_dict(), adamw.state_dict()]}`) are read as one, their groups
/// in the order found ([`optimizer::merge`]).
pub fn optimizer_state(path: &Path, root: &PickleValue) -> Option<Result<StoredOptimizer, String>> {
    let found = optimizer::find(root);
    if found.is_empty() {
        return None;
    }
    let shapes: Vec<(String, Vec<usize>)> = match PytorchReader::new(path) {
        Ok(r) => r.tensors().iter().map(|(n, t)| (n.clone(), t.shape().to_vec())).collect(),
        Err(e) => return Some(Err(format!("its tensors cannot be listed ({e})"))),
    };
    let read = |one: &String| {
        let source = if one.is_empty() { path.display().to_string() } else { format!("{}: {one}", path.display()) };
        optimizer::read(&source, root, one, &shapes).map_err(|e| format!("{source}: {e}"))
    };
    Some(found.iter().map(read).collect::<Result<Vec<_>, _>>().map(optimizer::merge))
}

/// The optimizer state file a Hugging Face Trainer writes beside the weights (`optimizer.pt`),
/// read as [`optimizer_state`].
pub fn trainer_optimizer(path: &Path) -> Option<Result<StoredOptimizer, String>> {
    if !path.is_file() {
        return None;
    }
    match PytorchReader::read_pickle_data(path, None) {
        Ok(root) => optimizer_state(path, &root),
        Err(e) => Some(Err(format!("{}: not a readable torch.save file ({e})", path.display()))),
    }
}

/// The key of [`WEIGHT_KEYS`] to read the weights from, if the file is a training checkpoint
/// holding one as a dictionary: the key is its only entry, or it sits beside bookkeeping
/// (numbers, strings, lists, an optimizer's `state_dict()`). A root of nothing but tensors and
/// dictionaries is read whole even when it has such a key, since a whole module saved with
/// `torch.save(model)` reads as exactly that, and its submodule `net` is not all its weights.
/// Without a key, a dictionary beside an optimizer's state is ambiguous: reading the whole file
/// would take momentum buffers for weights, so the error lists the keys for `--key`.
fn weights_key(path: &Path, root: &PickleValue) -> Result<Option<String>, InspectError> {
    let PickleValue::Dict(d) = root else { return Ok(None) };
    let optimizer = |v: &PickleValue| matches!(v, PickleValue::Dict(e) if e.contains_key("state") && e.contains_key("param_groups"));
    // Tensors come back as `Unsupported` (the reader's name for values it does not convert).
    let bookkeeping = d.values().any(|v| optimizer(v) || !matches!(v, PickleValue::Dict(_) | PickleValue::Unsupported(_)));
    if let Some(k) = WEIGHT_KEYS.iter().find(|k| matches!(d.get(**k), Some(PickleValue::Dict(_)))) {
        if d.len() == 1 || bookkeeping {
            return Ok(Some(k.to_string()));
        }
    }
    if d.values().any(optimizer) {
        let mut keys: Vec<&str> =
            d.iter().filter(|(_, v)| matches!(v, PickleValue::Dict(_)) && !optimizer(v)).map(|(k, _)| k.as_str()).collect();
        keys.sort();
        return Err(at(
            path,
            format!("holds an optimizer's state beside other entries ({}): pass --key with the one holding the weights", keys.join(", ")),
        ));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(entries: &[(&str, PickleValue)]) -> PickleValue {
        PickleValue::Dict(entries.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    #[test]
    fn the_weights_key_is_a_known_one_or_asked_for() {
        let p = Path::new("c.pt");
        let tensor = PickleValue::Unsupported("torch.Tensor".into());
        let weights = dict(&[("conv.weight", tensor.clone())]);
        // A plain state_dict: the whole file.
        assert_eq!(weights_key(p, &weights).unwrap(), None);
        // Known keys, in order, and only when they hold a dictionary.
        let whole = dict(&[("optimizer", weights.clone()), ("model", weights.clone()), ("epoch", PickleValue::Int(3))]);
        assert_eq!(weights_key(p, &whole).unwrap().as_deref(), Some("model"));
        let both = dict(&[("model", weights.clone()), ("state_dict", weights.clone()), ("epoch", PickleValue::Int(3))]);
        assert_eq!(weights_key(p, &both).unwrap().as_deref(), Some("state_dict"));
        assert_eq!(weights_key(p, &dict(&[("state_dict", weights.clone())])).unwrap().as_deref(), Some("state_dict"));
        // A whole module with a submodule called `net`: tensors and dictionaries only, read whole.
        let module = dict(&[("net", weights.clone()), ("head", weights.clone()), ("scale", tensor.clone())]);
        assert_eq!(weights_key(p, &module).unwrap(), None);
        let not_dict = dict(&[("model", tensor.clone()), ("other.weight", tensor.clone())]);
        assert_eq!(weights_key(p, &not_dict).unwrap(), None);
        // Nested dictionaries of tensors are read whole; beside an optimizer's state, the
        // file is ambiguous and the error lists the other entries.
        assert_eq!(weights_key(p, &dict(&[("encoder", weights.clone()), ("decoder", weights.clone())])).unwrap(), None);
        let opt = dict(&[("state", dict(&[])), ("param_groups", PickleValue::List(vec![]))]);
        let e = weights_key(p, &dict(&[("weights", weights.clone()), ("opt", opt), ("ema", weights.clone())])).unwrap_err().to_string();
        assert!(e.contains("c.pt") && e.contains("(ema, weights)") && e.contains("--key"), "{e}");
        // A whole module saved with torch.save(model) is no dictionary at the root.
        assert_eq!(weights_key(p, &tensor).unwrap(), None);
    }
}
