//! Helpers shared by the end-to-end tests that drive the `normwd` program.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The program under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_normwd"))
}

/// A fresh folder for one test (unique per test process).
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("normwd-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the program to completion.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

/// Stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Small, fast training settings on the embedded data.
pub const QUICK: &[&str] =
    &["train", "--model", "mlp", "--norm", "bn", "--train-subset", "1024", "--test-subset", "256", "--batch-size", "64"];

/// Small, fast `gpt` settings on the embedded text (QK-norm, untied head, AdamW).
pub const QUICK_GPT: &[&str] = &[
    "train",
    "--model",
    "gpt",
    "--n-layer",
    "2",
    "--n-head",
    "2",
    "--n-embd",
    "32",
    "--block-size",
    "16",
    "--qk-norm",
    "--tie-embeddings",
    "false",
    "--train-subset",
    "256",
    "--test-subset",
    "64",
    "--batch-size",
    "16",
    "--optimizer",
    "adamw",
    "--lr",
    "3e-3",
    "--weight-decay",
    "0.1",
];

/// The `QUICK` run with `epochs` into `dir`.
pub fn quick_args(dir: &Path, epochs: usize) -> Vec<String> {
    with_epochs(QUICK, dir, epochs)
}

/// The `QUICK_GPT` run with `epochs` into `dir`.
pub fn quick_gpt_args(dir: &Path, epochs: usize) -> Vec<String> {
    with_epochs(QUICK_GPT, dir, epochs)
}

fn with_epochs(quick: &[&str], dir: &Path, epochs: usize) -> Vec<String> {
    let mut v: Vec<String> = quick.iter().map(|s| s.to_string()).collect();
    v.extend(["--epochs".to_string(), epochs.to_string(), "--out".to_string(), dir.to_str().unwrap().to_string()]);
    v
}

/// The metrics records of one kind.
pub fn records(dir: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .collect()
}

/// Epoch records without the wall-clock field (which differs between runs).
pub fn epochs_without_timing(dir: &Path) -> Vec<serde_json::Value> {
    records(dir, "epoch")
        .into_iter()
        .map(|mut r| {
            r.as_object_mut().unwrap().remove("images_per_sec");
            r
        })
        .collect()
}

/// The checkpoint file's bytes.
pub fn checkpoint(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("checkpoint.safetensors")).unwrap()
}

/// Asserts that `dir` ended exactly like the uninterrupted run `reference`: bit-identical
/// checkpoint (weights, optimizer state, step), the same epoch and probe records.
pub fn assert_same_run(reference: &Path, dir: &Path) {
    assert!(checkpoint(reference) == checkpoint(dir), "{}: weights and optimizer state differ from the uninterrupted run", dir.display());
    assert_eq!(epochs_without_timing(reference), epochs_without_timing(dir));
    assert_eq!(records(reference, "probe"), records(dir, "probe"));
    assert_eq!(records(dir, "done").len(), 1, "one done record");
}
