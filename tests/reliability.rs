//! Faults injected into real `normwd train` processes: kill -9 at random moments, crashes
//! inside file writes, a full disk and a file-size limit, and checkpoints that do not fit the
//! model. After each, `--resume` must end bit-identical to an uninterrupted run.

mod common;

use common::{assert_same_run, bin, checkpoint, quick_args, quick_gpt_args, run, text, tmp};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

const EPOCHS: usize = 6;

/// How a test's runs are started: the settings for a run folder and a number of epochs.
type Args = fn(&Path, usize) -> Vec<String>;

/// An uninterrupted reference run.
fn reference(base: &Path) -> std::path::PathBuf {
    reference_of(base, quick_args)
}

fn reference_of(base: &Path, quick: Args) -> std::path::PathBuf {
    let full = base.join("full");
    let o = bin().args(quick(&full, EPOCHS)).output().unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    full
}

fn resume(dir: &Path) -> Output {
    run(&["train", "--resume", dir.to_str().unwrap()])
}

/// Resumes `dir` to the end and checks it finished like the uninterrupted run `full`.
fn resume_to_the_end_like(full: &Path, dir: &Path) {
    let o = resume(dir);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_same_run(full, dir);
}

/// Starts the `QUICK` run into `dir` and crashes it while the 2nd checkpoint is written, so
/// `dir` holds a run stopped after its first epoch.
fn run_stopped_after_first_checkpoint(dir: &Path, epochs: usize) {
    let o = bin().args(quick_args(dir, epochs)).env("NORMWD_FAULT", "mid-write:checkpoint.safetensors@2").output().unwrap();
    assert!(!o.status.success() && text(&o).1.contains("aborting at"), "{:?}", text(&o));
}

/// The epoch recorded in a run's checkpoint (from `state.json`'s twin inside the file).
fn checkpoint_epoch(dir: &Path) -> u64 {
    let bytes = checkpoint(dir);
    let st = safetensors::SafeTensors::read_metadata(&bytes).unwrap().1;
    let state: serde_json::Value = serde_json::from_str(&st.metadata().as_ref().unwrap()["state"]).unwrap();
    state["epoch"].as_u64().unwrap()
}

#[test]
fn kill_at_random_moments_then_resume_matches_an_uninterrupted_run() {
    kill_at_random_moments(&tmp("randkill"), quick_args);
}

#[test]
fn a_gpt_killed_at_random_moments_resumes_bit_identical() {
    kill_at_random_moments(&tmp("randkill-gpt"), quick_gpt_args);
}

/// Muon's state (its momentum buffers beside AdamW's moments) resumes bit-identical: a `gpt`
/// under `--optimizer muon` crashed while writing its second checkpoint, resumed to the end.
#[test]
fn a_muon_gpt_resumes_bit_identical() {
    let base = tmp("resume-muon");
    let args = |dir: &Path| {
        let mut v = quick_gpt_args(dir, 3);
        let at = v.iter().position(|a| a == "--optimizer").expect("QUICK_GPT names its optimizer");
        v[at + 1] = "muon".into();
        v.extend(["--muon-lr", "0.02"].map(String::from));
        v
    };
    let full = base.join("full");
    let o = bin().args(args(&full)).output().unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    let stopped = base.join("stopped");
    let o = bin().args(args(&stopped)).env("NORMWD_FAULT", "mid-write:checkpoint.safetensors@2").output().unwrap();
    assert!(!o.status.success() && text(&o).1.contains("aborting at"), "{:?}", text(&o));
    assert_eq!(checkpoint_epoch(&stopped), 1);
    resume_to_the_end_like(&full, &stopped);
}

fn kill_at_random_moments(base: &Path, quick: Args) {
    let full = reference_of(base, quick);
    // Same seed and config: same bytes.
    let again = base.join("again");
    let t_run = Instant::now();
    assert!(bin().args(quick(&again, EPOCHS)).output().unwrap().status.success());
    // Kill moments scale with how long a whole run takes on this machine (and this build), so
    // faster training still gets killed several times.
    let run_ms = (t_run.elapsed().as_millis() as u64).max(80);
    eprintln!("an uninterrupted run takes {run_ms} ms");
    assert!(checkpoint(&full) == checkpoint(&again), "same seed and config give the same weights");

    // Kill moments drawn from a fixed-seed generator (reproducible), spread over start-up,
    // epochs, evaluation and checkpoint writes: 5% to 17.5% of a whole run at first (each resume
    // starts up again, so most attempts end killed and the run still finishes). The window is
    // narrow enough that a run timed on a busy machine and resumed on a quieter one is still
    // killed at least three times: it would have to go more than twice as fast to finish in three
    // attempts.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let cut = base.join("cut");
    let (mut kills, mut finished) = (0, false);
    for _ in 0..100 {
        let started = cut.join("config.toml").exists();
        let args = if started { vec!["train".to_string(), "--resume".into(), cut.to_str().unwrap().into()] } else { quick(&cut, EPOCHS) };
        let mut child = bin().args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        // The window widens a little with each kill, so a slow, busy machine still lets the run
        // progress to the end.
        let at = Duration::from_millis(run_ms / 20 + next() % (run_ms / 8 + kills * run_ms / 40));
        let t0 = Instant::now();
        while t0.elapsed() < at {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        match child.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success(), "an unkilled run succeeds");
                finished = true;
                break;
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
            }
        }
    }
    eprintln!("killed {kills} times before the run finished");
    assert!(finished, "the run finishes after {kills} kills");
    assert!(kills >= 3, "the test killed the run several times ({kills})");
    assert_same_run(&full, &cut);
}

#[test]
fn crashes_inside_file_writes_keep_the_previous_checkpoint() {
    let base = tmp("faults");
    let full = reference(&base);
    for fault in [
        "mid-write:checkpoint.safetensors@2",
        "before-rename:checkpoint.safetensors@3",
        "mid-write:state.json@2",
        "mid-write:config.toml@1",
    ] {
        let dir = base.join(fault.replace([':', '@', '.'], "-"));
        let o = bin().args(quick_args(&dir, EPOCHS)).env("NORMWD_FAULT", fault).output().unwrap();
        assert!(!o.status.success() && text(&o).1.contains("aborting at"), "{fault}: the process crashed there: {:?}", text(&o));
        let o = if dir.join("config.toml").exists() {
            // The crash left the last complete checkpoint and a temporary file; resume uses the first.
            if fault.contains("checkpoint") {
                let n: u64 = fault.rsplit('@').next().unwrap().parse().unwrap();
                assert_eq!(checkpoint_epoch(&dir), n - 1, "{fault}: the previous checkpoint is intact");
            }
            resume(&dir)
        } else {
            // Crashed before the run existed: the same command starts it.
            bin().args(quick_args(&dir, EPOCHS)).output().unwrap()
        };
        assert!(o.status.success(), "{fault}: {:?}", text(&o));
        assert_same_run(&full, &dir);
        let leftovers: Vec<_> =
            std::fs::read_dir(&dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains(".tmp-")).collect();
        assert!(leftovers.is_empty(), "{fault}: resume removed the crashed writer's temporary file");
    }
}

/// Runs `normwd` inside a new user+mount namespace with a tmpfs of `kib` KiB at `mnt`, then
/// copies the run out to `keep`. `None` when this machine does not allow such namespaces.
fn train_on_small_tmpfs(mnt: &Path, kib: usize, args: &[String], keep: &Path) -> Option<Output> {
    let probe = std::process::Command::new("unshare").args(["-rm", "true"]).output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        return None;
    }
    let script = format!(
        "mount -t tmpfs -o size={kib}k tmpfs '{m}' || exit 99; \"$0\" \"$@\"; rc=$?; cp -r '{m}/run' '{k}'; exit $rc",
        m = mnt.display(),
        k = keep.display()
    );
    let o =
        std::process::Command::new("unshare").args(["-rm", "sh", "-c", &script, env!("CARGO_BIN_EXE_normwd")]).args(args).output().unwrap();
    (o.status.code() != Some(99)).then_some(o)
}

#[test]
fn full_disk_fails_clearly_and_keeps_the_previous_checkpoint() {
    let base = tmp("diskfull");
    let full = reference(&base);
    let ckpt_kib = checkpoint(&full).len() / 1024;
    let mnt = base.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let kept = base.join("kept");
    // Room for one checkpoint and the metrics, not for the second checkpoint's temporary copy.
    let args = quick_args(&mnt.join("run"), EPOCHS);
    let Some(o) = train_on_small_tmpfs(&mnt, ckpt_kib * 3 / 2 + 512, &args, &kept) else {
        eprintln!("skipped: this machine does not allow a user+mount namespace for a small tmpfs (unshare -rm)");
        return;
    };
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device") && err.contains("checkpoint.safetensors"), "clear error: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(checkpoint_epoch(&kept), 1, "the first checkpoint is intact");
    resume_to_the_end_like(&full, &kept);
}

#[test]
fn file_size_limit_fails_clearly_and_keeps_the_previous_checkpoint() {
    let base = tmp("fsize");
    let full = reference(&base);
    let dir = base.join("run");
    run_stopped_after_first_checkpoint(&dir, EPOCHS);
    let first = checkpoint(&dir);
    // Resume under a file-size limit below the checkpoint's size (bash counts 1024-byte blocks).
    let limit = first.len() / 1024 / 2;
    let o = std::process::Command::new("bash")
        .args(["-c", &format!("ulimit -f {limit}; exec \"$0\" train --resume \"$1\""), env!("CARGO_BIN_EXE_normwd"), dir.to_str().unwrap()])
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "an error, not a signal: {err}");
    assert!(err.contains("File too large") && err.contains("checkpoint.safetensors"), "clear error: {err}");
    assert!(checkpoint(&dir) == first, "the previous checkpoint is intact");
    resume_to_the_end_like(&full, &dir);
}

#[test]
fn checkpoints_that_do_not_fit_the_model_are_refused_with_every_mismatch() {
    let base = tmp("misfit");
    let dir = base.join("run");
    run_stopped_after_first_checkpoint(&dir, 2);
    let bytes = checkpoint(&dir);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let meta = safetensors::SafeTensors::read_metadata(&bytes).unwrap().1.metadata().clone();
    // An edit maps (name, shape, bytes) to the tensor to write instead, or None to drop it.
    type Edit<'a> = &'a dyn Fn(&str, Vec<usize>, Vec<u8>) -> Option<(Vec<usize>, Vec<u8>)>;
    let write = |edit: Edit, meta: &Option<std::collections::HashMap<String, String>>| {
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, v) in st.tensors() {
            if let Some((shape, data)) = edit(&name, v.shape().to_vec(), v.data().to_vec()) {
                owned.push((name, shape, data));
            }
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = owned
            .iter()
            .map(|(n, s, d)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap()))
            .collect();
        std::fs::write(dir.join("checkpoint.safetensors"), safetensors::serialize(views, meta).unwrap()).unwrap();
    };
    // A model tensor with a wrong shape and a missing one.
    write(
        &|name, shape, data| match name {
            "fc3.bias" => None,
            "fc1.weight" => Some((vec![shape[1], shape[0]], data)),
            _ => Some((shape, data)),
        },
        &meta,
    );
    let o = resume(&dir);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("missing fc3.bias") && err.contains("fc1.weight: shape"), "every mismatch listed: {err}");
    // An optimizer slot with the wrong shape would fail inside a later step: refused at load.
    write(
        &|name, shape, data| {
            if name.starts_with("optim/") && name.ends_with("momentum") && shape[0] > 1 {
                Some((vec![1, data.len() / 4], data))
            } else {
                Some((shape, data))
            }
        },
        &meta,
    );
    let o = resume(&dir);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("momentum") && err.contains("expected ["), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Tensors that fit, with a state from another run (seed 7 instead of 0).
    let mut other = meta.clone().unwrap();
    let state = other["state"].replace("\"seed\":0", "\"seed\":7");
    assert_ne!(state, other["state"]);
    other.insert("state".into(), state);
    write(&|_, shape, data| Some((shape, data)), &Some(other));
    let o = resume(&dir);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("does not fit this run (version 1, seed 0"), "{err}");
}

/// A run written before the norm layers took PyTorch's names (`gamma`, `beta` in its
/// checkpoint, the optimizer's slots under the same paths) resumes, and ends bit-identical to
/// an uninterrupted run.
#[test]
fn a_checkpoint_with_the_old_norm_names_resumes() {
    let base = tmp("oldnames");
    let full = reference(&base);
    let dir = base.join("old");
    run_stopped_after_first_checkpoint(&dir, EPOCHS);
    let path = dir.join("checkpoint.safetensors");
    let loaded = normwd::train::store::read_safetensors(&path).unwrap();
    // The MLP's norm layers are `norm1`, `norm2`.
    let old = |name: &str| {
        ["norm1", "norm2"].iter().fold(name.to_string(), |n, l| {
            n.replace(&format!("{l}.weight"), &format!("{l}.gamma")).replace(&format!("{l}.bias"), &format!("{l}.beta"))
        })
    };
    let named: Vec<(String, Vec<usize>, Vec<f32>)> = loaded.tensors.into_iter().map(|(k, (s, v))| (old(&k), s, v)).collect();
    assert!(
        named.iter().any(|(k, _, _)| k == "norm1.gamma") && named.iter().any(|(k, _, _)| k == "optim/norm2.beta/1.momentum"),
        "{:?}",
        named.iter().map(|n| &n.0).collect::<Vec<_>>()
    );
    std::fs::write(&path, normwd::train::store::to_safetensors(&named, loaded.metadata)).unwrap();
    resume_to_the_end_like(&full, &dir);
}
