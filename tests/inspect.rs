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

/// Checks each reported tensor's angles against the first `n` of `reference` (a fixture's
/// angles.json, computed by `by`) to 1e-5; returns how many tensors were compared.
fn assert_angles(tensors: &[serde_json::Value], reference: &Path, n: usize, by: &str) -> usize {
    let reference: HashMap<String, Vec<f64>> = serde_json::from_str(&std::fs::read_to_string(reference).unwrap()).unwrap();
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let ours: Vec<f64> = t["angles"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let theirs = &reference[name][..n];
        assert_eq!(ours.len(), theirs.len(), "{name}");
        for (a, b) in ours.iter().zip(theirs) {
            assert!((a - b).abs() < 1e-5, "{name}: {a} vs {by} {b}");
        }
    }
    tensors.len()
}

/// Runs `inspect --json` with the fixtures' graph on `dir` and checks every float tensor's
/// angles against the first `n` that PyTorch computed (angles.json, to 1e-5) and the graph's
/// marks; returns the output folder.
fn angles_match_pytorch(dir: &Path, n: usize) -> PathBuf {
    let out = tmp(&format!("ok-{}", dir.file_name().unwrap().to_string_lossy()));
    let f = fixtures();
    let o = bin()
        .args([
            "inspect",
            dir.to_str().unwrap(),
            "--graph",
            f.join("model.onnx").to_str().unwrap(),
            "--json",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tensors = v["tensors"].as_array().unwrap();
    let compared = assert_angles(tensors, &f.join("angles.json"), n, &format!("PyTorch (in {dir:?})"));
    assert_eq!(compared, 12, "every float tensor, nothing else (the int64 counters are skipped) in {dir:?}");
    let si = |n: &str| tensors.iter().find(|t| t["name"] == n).unwrap()["scale_invariant"].as_bool().unwrap();
    assert!(si("conv1.weight") && si("conv2.weight") && !si("fc.weight") && !si("bn1.weight"));
    assert!(tensors.iter().all(|t| t["invariance_source"] == "graph"));
    out
}

#[test]
fn angles_match_pytorch_and_the_graph_marks_convs_before_bn() {
    let f = fixtures();
    let out = angles_match_pytorch(&f, 3);
    assert!(out.join("report.html").is_file());
    // Without the graph the column is a guess, and it says so.
    let o = bin().args(["inspect", f.to_str().unwrap(), "--out", out.to_str().unwrap()]).output().unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    let conv1 = s.lines().find(|l| l.starts_with("conv1.weight ")).unwrap_or_default();
    assert!(
        o.status.success() && s.contains("is a guess") && conv1.split_whitespace().take(3).eq(["conv1.weight", "weight", "yes"]),
        "{s}"
    );
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
    expect_error(&[f.to_str().unwrap(), "--graph", f.join("angles.json").to_str().unwrap()], &["angles.json", "not a readable ONNX model"]);
    expect_error(&[f.join("ckpt_000000.safetensors").to_str().unwrap()], &["need at least 2"]);
    // A path that does not exist is named as such, not counted as zero checkpoints.
    expect_error(&["/nonexistent/normwd-ckpts"], &["/nonexistent/normwd-ckpts: no such file or folder"]);
}

/// A checkpoint of a diverged training (the fixture's step-40 weights with NaN and inf written
/// into one tensor) is named with the tensor and the step, exit 1, instead of a table of NaN.
#[test]
fn non_finite_checkpoints_fail_naming_the_tensor() {
    let f = fixtures();
    let d = tmp("nonfinite");
    for s in ["000000", "000020"] {
        std::fs::copy(f.join(format!("ckpt_{s}.safetensors")), d.join(format!("ckpt_{s}.safetensors"))).unwrap();
    }
    let l = normwd::train::store::read_safetensors(&f.join("ckpt_000040.safetensors")).unwrap();
    let mut all: Vec<(String, Vec<usize>, Vec<f32>)> = l.tensors.into_iter().map(|(k, (s, v))| (k, s, v)).collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let w = all.iter_mut().find(|t| t.0 == "conv2.weight").unwrap();
    (w.2[0], w.2[5]) = (f32::NAN, f32::INFINITY);
    std::fs::write(d.join("ckpt_000040.safetensors"), normwd::train::store::to_safetensors(&all, HashMap::new())).unwrap();
    let o = bin().args(["inspect", d.to_str().unwrap(), "--out", tmp("nonfinite-out").to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("ckpt_000040.safetensors: tensor conv2.weight holds 2 NaN/inf values") && err.contains("step 40"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// A Hugging Face Trainer output folder (`checkpoint-N/model.safetensors` beside the
/// optimizer's, scheduler's and RNG files, and the final model at the top) is read as its
/// checkpoints, their steps taken from the folder names; the same folders given one by one too.
#[test]
fn trainer_folders_are_a_series() {
    let f = fixtures();
    let d = tmp("trainer").join("output");
    for s in [0, 20, 40, 60] {
        let c = d.join(format!("checkpoint-{s}"));
        std::fs::create_dir_all(&c).unwrap();
        std::fs::copy(f.join(format!("ckpt_{s:06}.safetensors")), c.join("model.safetensors")).unwrap();
        for other in ["optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"] {
            std::fs::write(c.join(other), b"not weights").unwrap();
        }
        std::fs::write(c.join("trainer_state.json"), "{}").unwrap();
    }
    std::fs::copy(f.join("ckpt_000060.safetensors"), d.join("model.safetensors")).unwrap();
    angles_match_pytorch(&d, 3);
    let one_by_one: Vec<String> = [0, 20].iter().map(|s| d.join(format!("checkpoint-{s}")).display().to_string()).collect();
    let o =
        bin().args(["inspect", &one_by_one[0], &one_by_one[1], "--json", "--out", tmp("trainer-out").to_str().unwrap()]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let steps: Vec<u64> = v["checkpoints"].as_array().map(|a| a.iter().filter_map(|c| c["step"].as_u64()).collect()).unwrap_or_default();
    assert_eq!(steps, [0, 20], "{}", String::from_utf8_lossy(&o.stderr));
    // A checkpoint folder without weights says what it expected.
    std::fs::remove_file(d.join("checkpoint-40/model.safetensors")).unwrap();
    expect_error(&[d.to_str().unwrap()], &["checkpoint-40: a Trainer checkpoint folder without weights", "model.safetensors"]);
}

/// The same checkpoints written by `torch.save` (tests/fixtures/pytorch/torch_save.py): a
/// plain state_dict in the zip container with a strided tensor, whole training checkpoints
/// (`{"model", "optimizer", "step"}`) in the legacy container, whose momentum buffers must not
/// be taken for weights, and whole modules of the example's own class.
#[test]
fn torch_save_checkpoints_read_like_safetensors() {
    let t = fixtures().join("torch-save");
    angles_match_pytorch(&t.join("zip"), 3);
    angles_match_pytorch(&t.join("legacy"), 1);
    angles_match_pytorch(&t.join("whole"), 1);
    // The optimizer's dictionary asked for by name is read, and is not the model.
    let (out, legacy) = (tmp("torch-key"), t.join("legacy"));
    let args = ["inspect", legacy.to_str().unwrap(), "--key", "optimizer", "--json", "--out", out.to_str().unwrap()];
    let o = bin().args(args).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert!(
        o.status.success() && v["tensors"].as_array().is_some_and(|a| a.iter().all(|t| t["name"].as_str().unwrap().starts_with("state."))),
        "{o:?}"
    );
    assert_eq!(v["checkpoints"][0]["key"], "optimizer");
    // Without --key the weights' key is found, and said.
    let o = bin().args(["inspect", legacy.to_str().unwrap(), "--out", out.to_str().unwrap()]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("weights read under the key model"), "{o:?}");
}

#[test]
fn broken_torch_save_series_name_the_file() {
    let t = fixtures().join("torch-save");
    let d = tmp("torch-truncated");
    for e in std::fs::read_dir(t.join("zip")).unwrap().filter_map(|e| e.ok()) {
        std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
    }
    let legacy = t.join("legacy");
    let key_args = [legacy.to_str().unwrap(), "--key", "weights"];
    expect_error(&key_args, &["ckpt_000000.pth", "--key weights", "not found"]);
    // A safetensors and a torch.save file of the same step.
    std::fs::copy(fixtures().join("ckpt_000020.safetensors"), d.join("ckpt_000020.safetensors")).unwrap();
    expect_error(&[d.to_str().unwrap()], &["step 20 is also the step of"]);
    std::fs::remove_file(d.join("ckpt_000020.safetensors")).unwrap();
    let p = d.join("ckpt_000040.pt");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    expect_error(&[d.to_str().unwrap()], &["ckpt_000040.pt", "not a safetensors or PyTorch checkpoint"]);
    std::fs::write(&p, b"not a checkpoint").unwrap();
    expect_error(&[d.to_str().unwrap()], &["ckpt_000040.pt", "not a safetensors or PyTorch checkpoint"]);
}

/// Damaged `torch.save` files (cut at many lengths, single bytes overwritten across the file)
/// give errors or, where only tensor bytes changed, values; never a panic. The reader is
/// burn's, and a panic there would take the whole program down.
#[test]
fn damaged_torch_save_files_never_panic() {
    let d = tmp("torch-damaged");
    for src in [fixtures().join("torch-save/zip/ckpt_000020.pt"), fixtures().join("torch-save/legacy/ckpt_000020.pth")] {
        let bytes = std::fs::read(&src).unwrap();
        let p = d.join(src.file_name().unwrap());
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        let mut errors = 0;
        for k in 0..300 {
            let mut b = bytes.clone();
            if k % 2 == 0 {
                b.truncate(next() % b.len());
            } else {
                let at = next() % b.len();
                b[at] ^= 1 + (next() % 255) as u8;
            }
            std::fs::write(&p, &b).unwrap();
            let r = std::panic::catch_unwind(|| normwd::inspect::torch::read(&p, None));
            match r {
                Err(_) => panic!("{}: the reader panicked on damage {k}", src.display()),
                Ok(Err(e)) => {
                    assert!(e.to_string().contains(p.to_str().unwrap()), "names the file: {e}");
                    errors += 1;
                }
                Ok(Ok(_)) => {}
            }
        }
        assert!(errors >= 150, "{}: every cut file is refused ({errors} errors)", src.display());
    }
}

/// A graph exported from the bare model still marks the weights of a checkpoint saved from
/// `DistributedDataParallel` (`module.` in front of every name); one from another model is
/// refused rather than marking nothing.
#[test]
fn the_graph_matches_prefixed_names_and_refuses_another_model() {
    let f = fixtures();
    let graph = f.join("model.onnx");
    let rename = |name: &str, prefix: &str| {
        let d = tmp(name);
        for step in ["000000", "000020"] {
            let l = normwd::train::store::read_safetensors(&f.join(format!("ckpt_{step}.safetensors"))).unwrap();
            let mut all: Vec<(String, Vec<usize>, Vec<f32>)> =
                l.tensors.into_iter().map(|(k, (s, v))| (format!("{prefix}{k}"), s, v)).collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            std::fs::write(d.join(format!("ckpt_{step}.safetensors")), normwd::train::store::to_safetensors(&all, HashMap::new())).unwrap();
        }
        d
    };
    let d = rename("ddp", "module.");
    let o = bin()
        .args(["inspect", d.to_str().unwrap(), "--graph", graph.to_str().unwrap(), "--json", "--out", tmp("ddp-out").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let si = |n: &str| v["tensors"].as_array().unwrap().iter().find(|t| t["name"] == n).unwrap()["scale_invariant"].as_bool().unwrap();
    assert!(si("module.conv1.weight") && si("module.conv2.weight") && !si("module.fc.weight"));
    let d = rename("other", "encoder_");
    expect_error(
        &[d.to_str().unwrap(), "--graph", graph.to_str().unwrap()],
        &["--graph", "none of its 2 weights before a normalization", "encoder_"],
    );
}

/// Checkpoints of a Flax training (tests/fixtures/flax, made by its make.py with
/// `flax.serialization.to_bytes`): every float array's angles match those computed in NumPy
/// (to 1e-5), and without a graph the convolutions' kernels are guessed scale-invariant from
/// their BatchNorm neighbours (Flax's layout: output channels last).
#[test]
fn flax_msgpack_checkpoints_match_numpy() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flax");
    let o = bin().args(["inspect", f.to_str().unwrap(), "--json", "--out", tmp("flax").to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tensors = v["tensors"].as_array().unwrap();
    let reference = f.join("angles.json");
    let arrays = serde_json::from_str::<HashMap<String, serde_json::Value>>(&std::fs::read_to_string(&reference).unwrap()).unwrap().len();
    assert_eq!(assert_angles(tensors, &reference, 2, "NumPy"), arrays, "every float array, nothing else");
    let si = |n: &str| tensors.iter().find(|t| t["name"] == n).unwrap()["scale_invariant"].as_bool().unwrap();
    assert!(si("params/Conv_0/kernel") && si("params/Conv_1/kernel") && !si("params/Dense_0/kernel"));
    // A damaged file names itself.
    let d = tmp("flax-cut");
    for s in ["000000", "000020"] {
        std::fs::copy(f.join(format!("ckpt_{s}.msgpack")), d.join(format!("ckpt_{s}.msgpack"))).unwrap();
    }
    let p = d.join("ckpt_000020.msgpack");
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() - 7]).unwrap();
    expect_error(&[d.to_str().unwrap()], &["ckpt_000020.msgpack", "not a Flax msgpack checkpoint", "truncated"]);
}

/// 5000 damaged copies of a Flax checkpoint (bytes overwritten, inserted or cut) through the
/// fuzz target's entry: errors, or arrays that fit their shapes; never a panic.
#[test]
fn damaged_flax_files_never_panic() {
    let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flax/ckpt_000000.msgpack")).unwrap();
    let mut state = 0x2545f4914f6cdd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as usize
    };
    for k in 0..5000 {
        let mut b = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let at = next() % b.len();
            match next() % 3 {
                0 => b[at] = next() as u8,
                1 => b.insert(at, next() as u8),
                _ => b.truncate(at.max(1)),
            }
        }
        let r = std::panic::catch_unwind(|| normwd::fuzzing::flax(&b));
        assert!(r.is_ok(), "damage {k} panics");
    }
}

/// A Hugging Face GPT-2 trained here (tests/fixtures/hf/make.py) in the Trainer's
/// `checkpoint-N/model.safetensors` layout: read as a series with the folders' steps, and no
/// embedding guessed scale-invariant. (The position table `transformer.wpe.weight` shares its
/// parent and width with `transformer.ln_f.weight`, which once counted as evidence.)
#[test]
fn gpt2_trainer_checkpoints_and_no_embedding_guessed_scale_invariant() {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/gpt2");
    let out = tmp("gpt2");
    let o = bin().args(["inspect", d.to_str().unwrap(), "--json", "--out", out.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let steps: Vec<u64> = v["checkpoints"].as_array().unwrap().iter().map(|c| c["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [20, 40]);
    let tensors = v["tensors"].as_array().unwrap();
    let si = |n: &str| tensors.iter().find(|t| t["name"] == n).unwrap_or_else(|| panic!("no {n}"))["scale_invariant"].as_bool().unwrap();
    for embedding in ["transformer.wpe.weight", "transformer.wte.weight"] {
        assert!(!si(embedding), "{embedding} is an embedding");
    }
    assert_eq!(tensors.iter().filter(|t| t["scale_invariant"] == true).count(), 0, "no GPT-2 weight feeds a norm directly (pre-LN)");
}

/// The graph most people export (`torch.onnx.export(model.eval(), x, f, dynamo=False)`, made by
/// tests/fixtures/pytorch/folded_onnx.py) folds batch norm into the convolutions. It lacks the
/// fact, so it is refused with the export that keeps it, instead of marking every conv "no
/// (graph)" with exit 0.
#[test]
fn a_graph_with_folded_batch_norm_is_refused_naming_the_export_that_keeps_it() {
    let f = fixtures();
    expect_error(
        &[f.to_str().unwrap(), "--graph", f.join("model-folded.onnx").to_str().unwrap()],
        &[
            "model-folded.onnx",
            "folded into the convolutions",
            "onnx::Conv_",
            "training=torch.onnx.TrainingMode.TRAINING",
            "do_constant_folding=False",
        ],
    );
}

/// The timm ResNet runs of tests/fixtures/timm (made by its make.py): `all` decays every
/// tensor, `timm` uses timm's groups (weight decay 0 on norm layers and biases).
fn timm_run(run: &str, form: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/timm").join(run).join(form)
}

/// `inspect --json` on `paths` with `flags`: the JSON and stderr.
fn inspect_json(paths: &[PathBuf], flags: &[&str]) -> (serde_json::Value, String) {
    let out = tmp("inspect-json");
    let mut cmd = bin();
    cmd.arg("inspect").args(paths).args(flags).args(["--json", "--out", out.to_str().unwrap()]);
    let o = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{stderr}");
    (serde_json::from_slice(&o.stdout).unwrap(), stderr)
}

/// Norm scales of a report: (name, norms, the decay reading's verdict).
fn norm_scales(v: &serde_json::Value) -> Vec<(String, Vec<f64>, String)> {
    v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["role"] == "norm-scale")
        .map(|t| {
            let norms = t["norms"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            (t["name"].as_str().unwrap().to_string(), norms, t["decay"]["decayed"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Without the optimizer state, a gamma is called decayed when its norm shrinks by the factor
/// decay alone causes (`exp(-lr*wd/(1-mu)*k)`, 25%), never in a run whose norm layers are not
/// decayed, and not at all over a gap too short for decay to show.
#[test]
fn norm_scales_are_called_decayed_when_they_shrink_as_decay_alone_would() {
    let sgd = ["--lr", "0.1", "--momentum", "0.9", "--weight-decay", "5e-4"];
    let (all, _) = inspect_json(&[timm_run("all", "safetensors")], &sgd);
    let gammas = norm_scales(&all);
    assert_eq!(gammas.len(), 13);
    let looks = gammas.iter().filter(|g| g.2 == "looks-decayed").count();
    assert!(looks >= 5, "of 13 decayed gammas only {looks} read as decayed: {gammas:?}");
    // What inspect flagged before (a shrink at every checkpoint to under 0.9 of the first
    // norm) caught none of them: decay takes these to 0.97 over the series.
    let old_rule = gammas.iter().filter(|(_, n, _)| n.windows(2).all(|w| w[1] < w[0]) && n[n.len() - 1] / n[0] < 0.9).count();
    assert_eq!(old_rule, 0);
    for t in all["tensors"].as_array().unwrap().iter().filter(|t| t["decay"]["decayed"] == "looks-decayed") {
        let (observed, decay_only) = (t["decay"]["observed"].as_f64().unwrap(), t["decay"]["decay_only"].as_f64().unwrap());
        assert!((observed.ln() / decay_only.ln() - 1.0).abs() <= 0.25, "{}: x{observed} against x{decay_only}", t["name"]);
    }
    let (timm, _) = inspect_json(&[timm_run("timm", "safetensors")], &sgd);
    let wrongly: Vec<_> = norm_scales(&timm).into_iter().filter(|g| g.2 == "looks-decayed").collect();
    assert!(wrongly.is_empty(), "gammas with weight_decay 0 called decayed: {wrongly:?}");
    // 3 steps: decay alone removes 0.15%, less than a gamma's gradient moves it.
    let d = timm_run("all", "safetensors");
    let (short, _) = inspect_json(&[d.join("ckpt_000260.safetensors"), d.join("ckpt_000263.safetensors")], &sgd);
    for (name, _, verdict) in norm_scales(&short) {
        assert_eq!(verdict, "cannot-tell", "{name}");
    }
}

/// A training checkpoint's optimizer state gives each tensor its group's settings, matched to
/// the truth the training recorded (decay.json), with no assumption said; a flag still wins.
#[test]
fn training_checkpoints_carry_their_optimizer_settings() {
    for run in ["all", "timm"] {
        let (v, stderr) = inspect_json(&[timm_run(run, "pt")], &[]);
        assert!(!stderr.contains("assume"), "{run}: {stderr}");
        let truth: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(timm_run(run, "decay.json")).unwrap()).unwrap();
        let truth = truth["weight_decay"].as_object().unwrap();
        let tensors = v["tensors"].as_array().unwrap();
        for (name, wd) in truth {
            let t = tensors.iter().find(|t| t["name"] == name.as_str()).unwrap_or_else(|| panic!("{run}: no {name}"));
            let h = &t["hyper"];
            assert_eq!(
                (h["optimizer"].as_str(), h["lr"].as_f64(), h["momentum"].as_f64()),
                (Some("sgd"), Some(0.1), Some(0.9)),
                "{run} {name}"
            );
            assert_eq!(h["weight_decay"].as_f64(), wd.as_f64(), "{run} {name}: its group's weight decay");
            let expect = if wd.as_f64().unwrap() > 0.0 { "yes" } else { "no" };
            assert_eq!(t["decay"]["decayed"], expect, "{run} {name}");
        }
        let flagged = tensors
            .iter()
            .filter(|t| {
                t["flags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| ["norm-decayed", "bias-decayed"].iter().any(|m| f.as_str().unwrap().starts_with(m)))
            })
            .count();
        assert_eq!(flagged, if run == "all" { 27 } else { 0 }, "{run}: 13 gammas, 13 betas and fc.bias are decayed in `all`");
    }
    let (v, stderr) = inspect_json(&[timm_run("timm", "pt")], &["--lr", "0.05"]);
    assert!(stderr.contains("the flags replace the saved"), "{stderr}");
    assert!(v["tensors"].as_array().unwrap().iter().filter(|t| t["role"] != "buffer").all(|t| t["hyper"]["lr"] == 0.05));
    // Lightning's own checkpoints (tests/fixtures/timm/lightning_run.py): the step from the file
    // name, the weights under state_dict, the optimizer under optimizer_states; timm's groups.
    let (v, stderr) = inspect_json(&[timm_run("lightning", "")], &[]);
    assert!(!stderr.contains("assume"), "{stderr}");
    let steps: Vec<u64> = v["checkpoints"].as_array().unwrap().iter().map(|c| c["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [30, 60, 90]);
    for t in v["tensors"].as_array().unwrap().iter().filter(|t| t["role"] != "buffer") {
        let matrix = t["shape"].as_array().unwrap().len() >= 2;
        assert_eq!(t["hyper"]["weight_decay"].as_f64(), Some(if matrix { 5e-4 } else { 0.0 }), "{}", t["name"]);
    }
    // A Hugging Face Trainer folder's optimizer.pt: AdamW, decay on the matrices only.
    let gpt2 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/gpt2");
    let (v, _) = inspect_json(&[gpt2], &[]);
    for t in v["tensors"].as_array().unwrap() {
        let matrix = t["shape"].as_array().unwrap().len() >= 2;
        assert_eq!(t["hyper"]["optimizer"], "adamw", "{}", t["name"]);
        assert_eq!(t["hyper"]["weight_decay"].as_f64(), Some(if matrix { 0.1 } else { 0.0 }), "{}", t["name"]);
    }
}

/// L2 in Adam's gradient is flagged once for the run, in the core's words (advice.rs).
#[test]
fn adam_with_l2_is_flagged_for_the_run() {
    let out = tmp("adam-l2");
    let f = fixtures();
    let o = bin()
        .args([
            "inspect",
            f.to_str().unwrap(),
            "--optimizer",
            "adam",
            "--lr",
            "1e-3",
            "--weight-decay",
            "1e-4",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && s.contains("FLAG run: adam-l2-on-scale-invariant: with L2 in an adaptive optimizer's gradient"), "{s}");
    let o = bin()
        .args([
            "inspect",
            f.to_str().unwrap(),
            "--optimizer",
            "adamw",
            "--lr",
            "1e-3",
            "--weight-decay",
            "1e-2",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&o.stdout).contains("FLAG run:"), "AdamW decouples its decay");
}
