//! `normwd inspect` on checkpoints and an ONNX graph saved by PyTorch
//! (tests/fixtures/pytorch, made by examples/pytorch/train_and_checkpoint.py), and on broken
//! series.

mod common;

use common::{bin, tmp};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorch")
}

#[test]
fn angles_match_pytorch_and_the_graph_marks_convs_before_bn() {
    let out = tmp("ok");
    let f = fixtures();
    let o = bin()
        .args(["inspect", f.to_str().unwrap(), "--graph", f.join("model.onnx").to_str().unwrap(), "--json", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let reference: HashMap<String, Vec<f64>> = serde_json::from_str(&std::fs::read_to_string(f.join("angles.json")).unwrap()).unwrap();
    let tensors = v["tensors"].as_array().unwrap();
    let mut compared = 0;
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let ours: Vec<f64> = t["angles"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let theirs = &reference[name];
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(theirs) {
            assert!((a - b).abs() < 1e-5, "{name}: {a} vs PyTorch {b}");
        }
        compared += 1;
    }
    assert_eq!(compared, 12, "every float tensor (the int64 counters are skipped)");
    let si = |n: &str| tensors.iter().find(|t| t["name"] == n).unwrap()["scale_invariant"].as_bool().unwrap();
    assert!(si("conv1.weight") && si("conv2.weight") && !si("fc.weight") && !si("bn1.weight"));
    assert!(tensors.iter().all(|t| t["invariance_source"] == "graph"));
    assert!(out.join("report.html").is_file());
    // Without the graph the column is a guess, and it says so.
    let o = bin().args(["inspect", f.to_str().unwrap(), "--out", out.to_str().unwrap()]).output().unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && s.contains("is a guess") && s.contains("conv1.weight  weight     yes (guess)"), "{s}");
}

fn expect_error(args: &[&str], needles: &[&str]) {
    let o = bin().arg("inspect").args(args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in {err:?}");
    }
    assert!(!err.contains("panicked"));
}

#[test]
fn broken_series_name_the_file_and_tensor() {
    let f = fixtures();
    let copy = |d: &Path| {
        for e in std::fs::read_dir(&f).unwrap().filter_map(|e| e.ok()) {
            if e.path().extension().map(|x| x == "safetensors").unwrap_or(false) {
                std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
            }
        }
    };
    // Truncated file.
    let d = tmp("truncated");
    copy(&d);
    let p = d.join("ckpt_000040.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    expect_error(&[d.to_str().unwrap()], &["ckpt_000040.safetensors", "not a valid safetensors"]);
    // A header declaring huge sizes.
    std::fs::write(&p, [&(u64::MAX / 4).to_le_bytes()[..], b"{}"].concat()).unwrap();
    expect_error(&[d.to_str().unwrap()], &["ckpt_000040.safetensors"]);
    // Different tensor names / shapes across the series.
    let d = tmp("mismatch");
    copy(&d);
    let named = vec![("conv1.weight".to_string(), vec![8, 1, 3, 3], vec![0.5f32; 72])];
    std::fs::write(d.join("ckpt_000080.safetensors"), normwd::train::store::to_safetensors(&named, HashMap::new())).unwrap();
    expect_error(&[d.to_str().unwrap()], &["ckpt_000080.safetensors", "missing"]);
    let named = vec![("conv1.weight".to_string(), vec![8, 9], vec![0.5f32; 72])];
    let d = tmp("shape");
    copy(&d);
    let l = normwd::train::store::read_safetensors(&d.join("ckpt_000000.safetensors")).unwrap();
    let mut all: Vec<(String, Vec<usize>, Vec<f32>)> = l.tensors.into_iter().map(|(k, (s, v))| (k, s, v)).collect();
    all.retain(|t| t.0 != "conv1.weight");
    all.extend(named);
    all.sort_by(|a, b| a.0.cmp(&b.0));
    std::fs::write(d.join("ckpt_000080.safetensors"), normwd::train::store::to_safetensors(&all, HashMap::new())).unwrap();
    expect_error(&[d.to_str().unwrap()], &["ckpt_000080.safetensors", "conv1.weight", "shape [8, 9]"]);
    // A graph that is not ONNX, and a single checkpoint.
    expect_error(&[f.to_str().unwrap(), "--graph", f.join("angles.json").to_str().unwrap()], &["angles.json"]);
    expect_error(&[f.join("ckpt_000000.safetensors").to_str().unwrap()], &["need at least 2"]);
}
