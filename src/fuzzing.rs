//! Entry points of the fuzz targets (`fuzz/`, run by `scripts/fuzz.sh`), kept in the library so
//! the committed corpus and every input that once crashed replay in the ordinary test suite
//! (`tests/fuzz_corpus.rs`) on a stable toolchain. Each function feeds arbitrary bytes to a
//! reader and checks what a successful read promises; a panic is a bug.
//!
//! May import the readers it exercises (`data`, `inspect`, `sweep`, `train`).

use crate::data::{cifar, idx, idx_dataset, Dataset};
use crate::inspect::onnx;
use crate::train::config::RunConfig;
use crate::train::{files, restore, store, Quiet, RunOptions, Setup};
use rand::SeedableRng;
use std::path::Path;

/// The four IDX files of a tiny dataset: 16 training and 4 test images of 8x8.
fn tiny_files() -> [(&'static str, Vec<u8>); 4] {
    let px = |n: usize| (0..n * 64).map(|i| (i * 37 % 251) as u8).collect::<Vec<u8>>();
    let labels = |n: usize| (0..n).map(|i| (i % 10) as u8).collect::<Vec<u8>>();
    [
        ("train-images-idx3-ubyte", idx::encode(2051, &[16, 8, 8], &px(16))),
        ("train-labels-idx1-ubyte", idx::encode(2049, &[16], &labels(16))),
        ("t10k-images-idx3-ubyte", idx::encode(2051, &[4, 8, 8], &px(4))),
        ("t10k-labels-idx1-ubyte", idx::encode(2049, &[4], &labels(4))),
    ]
}

/// The tiny dataset in memory.
fn tiny_data() -> Dataset {
    let f = tiny_files();
    idx_dataset("tiny", std::array::from_fn(|i| (f[i].0, f[i].1.as_slice()))).expect("valid by construction")
}

/// The run the checkpoint target restores into: a BN MLP on the tiny data, one epoch.
fn tiny_config(data: &Path) -> RunConfig {
    RunConfig {
        model: crate::model::ModelKind::Mlp,
        norm: Some(crate::model::NormKind::Bn),
        data: data.display().to_string(),
        epochs: 1,
        batch_size: 8,
        ..RunConfig::default()
    }
}

/// Trains the tiny run into a temporary folder and returns its checkpoint's bytes.
fn tiny_checkpoint() -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("normwd-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).expect("temp dir");
    for (name, bytes) in tiny_files() {
        std::fs::write(dir.join("data").join(name), bytes).expect("write tiny data");
    }
    let opts = RunOptions { dir: dir.join("run"), resume: false, observer: &mut Quiet };
    crate::train::run(tiny_config(&dir.join("data")), opts).expect("the tiny run trains");
    let bytes = std::fs::read(dir.join("run").join(files::CHECKPOINT)).expect("checkpoint written");
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

/// Text for `gpt` from arbitrary bytes, as characters and as bytes: a successful read holds
/// every token in its vocabulary, a held-out tenth, and decodes back to the input.
pub fn text(input: &[u8]) {
    use crate::data::text::{Text, Tokens};
    for tokens in [Tokens::Char, Tokens::Byte] {
        let Ok(t) = Text::new("fuzz", input, tokens) else { continue };
        let v = t.vocab_size() as u32;
        assert!(t.train.iter().chain(&t.test).all(|&i| i < v), "a token beyond the vocabulary");
        assert!(!t.train.is_empty() && !t.test.is_empty(), "both parts hold tokens");
        let mut all = t.train.clone();
        all.extend(&t.test);
        if tokens == Tokens::Char {
            assert_eq!(t.decode(&all).as_bytes(), input, "characters decode back to the text");
        }
        for block in [1, 4, 64] {
            if t.check(block, v as usize).is_ok() {
                let starts = Text::starts(&t.train, block, 3, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
                let (x, y) = Text::windows(&t.train, block, &starts);
                assert_eq!((x.len(), y.len()), (3 * block, 3 * block));
            }
        }
    }
}

/// Splits safetensors bytes into the JSON header and the data buffer.
fn split_header(bytes: &[u8]) -> (&[u8], &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    (&bytes[8..8 + n], &bytes[8 + n..])
}

/// Joins a header and a data buffer into safetensors bytes.
fn with_header(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header);
    v.extend_from_slice(data);
    v
}

/// IDX images (mode byte 0), labels (1), or four files cut at offsets from the next 6 bytes
/// into a whole dataset that must then make batches (2).
pub fn idx(input: &[u8]) {
    let Some((&mode, rest)) = input.split_first() else { return };
    match mode % 3 {
        0 => {
            if let Ok(im) = idx::parse_images("images", rest) {
                assert_eq!(im.pixels.len(), im.n * im.rows * im.cols);
            }
        }
        1 => {
            if let Ok(l) = idx::parse_labels("labels", rest, 10) {
                assert!(l.iter().all(|&x| x < 10));
            }
        }
        _ => {
            if rest.len() < 6 {
                return;
            }
            let body = &rest[6..];
            let mut cut = [0, 2, 4].map(|i| (u16::from_le_bytes([rest[i], rest[i + 1]]) as usize).min(body.len()));
            cut.sort();
            let files = [("a", &body[..cut[0]]), ("b", &body[cut[0]..cut[1]]), ("c", &body[cut[1]..cut[2]]), ("d", &body[cut[2]..])];
            if let Ok(d) = idx_dataset("fuzz", files) {
                let device = burn::tensor::Device::flex();
                let first: Vec<usize> = (0..d.train.len().min(4)).collect();
                let (x, y) = d.batch(&d.train, &first, None, &device);
                assert_eq!(x.dims()[0], y.dims()[0]);
            }
        }
    }
}

/// A CIFAR-10 binary batch.
pub fn cifar(input: &[u8]) {
    if let Ok((pixels, labels)) = cifar::parse_batch("batch.bin", input) {
        assert_eq!(pixels.len(), labels.len() * (cifar::RECORD - 1));
        assert!(labels.iter().all(|&l| l < 10));
    }
}

/// A run config (mode byte even; one that validates must build its model and optimizer on
/// the tiny data) or a sweep spec (odd).
pub fn config(input: &[u8]) {
    let Some((&mode, rest)) = input.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    if mode % 2 == 0 {
        if let Ok(c) = RunConfig::from_toml("run.toml", text) {
            if c.resolve().is_ok() {
                let _ = Setup::with_data(c, crate::data::Data::Images(tiny_data()));
            }
        }
    } else {
        let _ = crate::sweep::parse("sweep.toml", text);
    }
}

/// An ONNX graph.
pub fn onnx(input: &[u8]) {
    if let Ok(g) = onnx::parse(input) {
        let _ = onnx::weights_before_norm(&g);
    }
}

/// What a successful read of any checkpoint format promises: values that fit their shapes.
fn assert_fit(t: &crate::inspect::Tensors) {
    for (name, (shape, v)) in t {
        assert_eq!(shape.iter().product::<usize>(), v.len(), "{name}: values fit the shape");
    }
}

/// Flax msgpack checkpoints: a successful parse holds arrays whose values fit their shapes.
pub fn flax(input: &[u8]) {
    if let Ok(t) = crate::inspect::flax::parse(input) {
        assert_fit(&t);
    }
}

/// `torch.save` checkpoints: the reader works on files (a zip's entries are read by offset), so
/// the input is written to one first. A successful read holds tensors that fit their shapes.
pub fn torch(input: &[u8]) {
    let path = std::env::temp_dir().join(format!("normwd-fuzz-torch-{}-{:?}.pt", std::process::id(), std::thread::current().id()));
    std::fs::write(&path, input).expect("temp file");
    if let Ok(t) = crate::inspect::torch::read(&path, None) {
        assert_fit(&t.tensors);
    }
    let _ = std::fs::remove_file(&path);
}

/// Checkpoints restored into the tiny run. Mode byte 0: the rest replaces the header of a
/// real checkpoint of that run (names, shapes, dtypes, offsets, state), so inputs reach the
/// checks behind a valid header without carrying megabytes of weights; 1: a whole file.
pub struct CheckpointTarget {
    setup: Setup,
    data: Vec<u8>,
    /// The real checkpoint's header, as a mode-0 input (the seed of the corpus).
    pub seed: Vec<u8>,
}

impl CheckpointTarget {
    /// Trains the tiny run once for its checkpoint.
    pub fn new() -> Self {
        let ckpt = tiny_checkpoint();
        let (header, data) = split_header(&ckpt);
        let mut seed = vec![0u8];
        seed.extend_from_slice(header);
        let setup = Setup::with_data(tiny_config(Path::new("tiny")), crate::data::Data::Images(tiny_data())).expect("the tiny run builds");
        CheckpointTarget { setup, data: data.to_vec(), seed }
    }

    /// Feeds one input; true when it restored into the run.
    pub fn run(&mut self, input: &[u8]) -> bool {
        let Some((&mode, rest)) = input.split_first() else { return false };
        if mode % 2 == 1 {
            // A whole foreign file: only the parser is under test (it cannot fit the tiny run).
            let _ = store::parse_safetensors("checkpoint.safetensors", rest);
            return false;
        }
        let bytes = with_header(rest, &self.data);
        match store::parse_safetensors("checkpoint.safetensors", &bytes) {
            Ok(loaded) => restore("checkpoint.safetensors", loaded, &mut self.setup).is_ok(),
            Err(_) => false,
        }
    }
}

impl Default for CheckpointTarget {
    fn default() -> Self {
        Self::new()
    }
}
