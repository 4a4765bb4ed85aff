//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and every input that once
//! crashed a target (`fuzz/regressions/<target>/`) through the same entry points the libFuzzer
//! targets call, on the stable toolchain. A panic in any of them fails the test.

use normwd::fuzzing;
use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files: Vec<PathBuf> = ["corpus", "regressions"]
        .iter()
        .filter_map(|d| std::fs::read_dir(root.join(d).join(target)).ok())
        .flat_map(|rd| rd.flatten().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, min: usize, f: &mut dyn FnMut(&[u8])) {
    let files = inputs(target);
    assert!(files.len() >= min, "{target}: {} committed inputs, expected at least {min}", files.len());
    for p in &files {
        let bytes = std::fs::read(p).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&bytes)));
        assert!(r.is_ok(), "{} panics", p.display());
    }
}

#[test]
fn idx_corpus_replays() {
    replay("idx", 4, &mut fuzzing::idx);
}

#[test]
fn cifar_corpus_replays() {
    replay("cifar", 1, &mut fuzzing::cifar);
}

#[test]
fn text_corpus_replays() {
    replay("text", 4, &mut fuzzing::text);
}

#[test]
fn config_corpus_replays() {
    replay("config", 4, &mut fuzzing::config);
}

#[test]
fn onnx_corpus_replays() {
    replay("onnx", 1, &mut fuzzing::onnx);
}

#[test]
fn flax_corpus_replays() {
    replay("flax", 1, &mut fuzzing::flax);
}

#[test]
fn torch_corpus_replays() {
    replay("torch", 2, &mut fuzzing::torch);
}

#[test]
fn checkpoint_corpus_replays() {
    let mut t = fuzzing::CheckpointTarget::new();
    // The seed header restores cleanly: the target reaches the checks behind a valid file.
    let seed = t.seed.clone();
    assert!(t.run(&seed), "the seed header restores");
    replay("checkpoint", 2, &mut |b| {
        t.run(b);
    });
}
