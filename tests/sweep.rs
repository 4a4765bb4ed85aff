//! Sweeps from the command line: validation before any run, kill -9 and restart, shards and
//! merge, and two sweeps on one folder.

mod common;

use common::{bin, tmp};
use std::path::{Path, PathBuf};
use std::process::Stdio;

const SPEC: &str = "[base]\nmodel = \"mlp\"\nnorm = \"bn\"\ntrain_subset = 512\ntest_subset = 128\nepochs = 2\nbatch_size = 64\n\n[grid]\nlr = [0.05, 0.1, 0.2]\nweight_decay = [0.001, 0.01]\n";

fn write_spec(d: &Path, text: &str) -> PathBuf {
    let p = d.join("sweep.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// results.csv without the point folders' timing-dependent columns (there are none: it holds
/// accuracies, losses and the effective lr, all deterministic).
fn results(d: &Path) -> String {
    std::fs::read_to_string(d.join("results.csv")).unwrap()
}

fn sweep(args: &[&str]) -> std::process::Output {
    bin().arg("sweep").args(args).output().unwrap()
}

#[test]
fn invalid_sweep_files_fail_before_any_run() {
    let d = tmp("invalid");
    let out = d.join("out");
    for (text, needle) in [
        ("[base]\nmodel = \"mlp\"\n[grid]\nlr = [0.1]\nlearnin_rate = [0.1]\n", "sweep.toml:5: [grid] unknown key \"learnin_rate\""),
        ("[grid]\nlr = []\n", "sweep.toml:2: [grid] lr: empty list"),
        ("[grid]\nweight_decay = [0.1, \"x\"]\n", "sweep.toml:2: [grid] weight_decay: \"x\" is not a number"),
        ("[base]\nmodel = \"vgg\"\n[grid]\nlr = [0.1]\n", "--model \"vgg\""),
    ] {
        let p = write_spec(&d, text);
        let o = sweep(&["--config", p.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(needle), "expected {needle:?} in {err:?}");
        assert!(!out.exists(), "nothing runs before the file is valid");
    }
}

#[test]
fn kill_and_restart_skips_finished_points_and_matches_an_uninterrupted_sweep() {
    let d = tmp("kill");
    let p = write_spec(&d, SPEC);
    let full = d.join("full");
    let o = sweep(&["--config", p.to_str().unwrap(), "--out", full.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cut = d.join("cut");
    let mut child =
        bin().args(["sweep", "--config", p.to_str().unwrap(), "--out", cut.to_str().unwrap()]).stdout(Stdio::null()).spawn().unwrap();
    // Kill -9 once two points have finished (mid-way through the third).
    let done = |dir: &Path| {
        std::fs::read_dir(dir)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .filter(|e| {
                        std::fs::read_to_string(e.path().join("metrics.jsonl")).map(|t| t.contains("\"kind\":\"done\"")).unwrap_or(false)
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    while done(&cut) < 2 && child.try_wait().unwrap().is_none() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let finished: Vec<(PathBuf, std::time::SystemTime)> = std::fs::read_dir(&cut)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| std::fs::read_to_string(p.join("metrics.jsonl")).map(|t| t.contains("\"kind\":\"done\"")).unwrap_or(false))
        .map(|p| (p.clone(), std::fs::metadata(p.join("checkpoint.safetensors")).unwrap().modified().unwrap()))
        .collect();
    assert!(finished.len() >= 2);
    let o = sweep(&["--config", p.to_str().unwrap(), "--out", cut.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (p, t) in finished {
        assert_eq!(std::fs::metadata(p.join("checkpoint.safetensors")).unwrap().modified().unwrap(), t, "{} was not rerun", p.display());
    }
    assert_eq!(results(&full), results(&cut), "complete and identical table");
    assert_eq!(results(&full).lines().filter(|l| l.contains(",done,")).count(), 6);
    assert!(full.join("report.html").is_file());
}

#[test]
fn shards_then_merge_equal_one_sweep_and_two_sweeps_share_a_folder() {
    let d = tmp("shards");
    let p = write_spec(&d, SPEC);
    let one = d.join("one");
    assert!(sweep(&["--config", p.to_str().unwrap(), "--out", one.to_str().unwrap(), "--jobs", "2"]).status.success());
    let sh = d.join("sharded");
    for i in 0..3 {
        let s = format!("{i}/3");
        assert!(sweep(&["--config", p.to_str().unwrap(), "--out", sh.to_str().unwrap(), "--shard", &s]).status.success());
    }
    let o = sweep(&["--merge", sh.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(results(&one), results(&sh));
    // Two sweeps started together on one folder: every point trains once, both finish.
    let both = d.join("both");
    let a = bin().args(["sweep", "--config", p.to_str().unwrap(), "--out", both.to_str().unwrap()]).stdout(Stdio::null()).spawn().unwrap();
    let b = bin().args(["sweep", "--config", p.to_str().unwrap(), "--out", both.to_str().unwrap()]).stdout(Stdio::null()).spawn().unwrap();
    assert!(a.wait_with_output().unwrap().status.success() && b.wait_with_output().unwrap().status.success());
    for e in std::fs::read_dir(&both).unwrap().filter_map(|e| e.ok()).filter(|e| e.path().join("config.toml").is_file()) {
        let m = std::fs::read_to_string(e.path().join("metrics.jsonl")).unwrap();
        assert_eq!(m.matches("\"kind\":\"done\"").count(), 1, "{}", e.path().display());
        assert_eq!(m.matches("\"kind\":\"epoch\"").count(), 2, "{}: trained once", e.path().display());
    }
    assert_eq!(results(&one), results(&both));
    let o = sweep(&["--config", p.to_str().unwrap(), "--out", both.to_str().unwrap(), "--shard", "3/3"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_diverging_point_is_marked_and_the_sweep_goes_on() {
    let d = tmp("diverge");
    let p = write_spec(
        &d,
        "[base]\nmodel = \"mlp\"\nnorm = \"none\"\ntrain_subset = 1024\ntest_subset = 64\nepochs = 1\n\n[grid]\nlr = [0.05, 1e6]\n",
    );
    let out = d.join("out");
    let o = sweep(&["--config", p.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = results(&out);
    assert!(r.contains("lr=0.05,0.05,done,") && r.contains("lr=1000000,1000000,diverged"), "{r}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("DIVERGED"));
}

/// A sweep over `gpt` settings (QK-norm on and off, two decay rates): every point trains on the
/// embedded text and lands in the results table with its held-out loss.
#[test]
fn a_gpt_sweep_runs_every_point() {
    let d = tmp("gpt-sweep");
    let p = write_spec(
        &d,
        "[base]\nmodel = \"gpt\"\nn_layer = 1\nn_head = 2\nn_embd = 16\nblock_size = 16\ntrain_subset = 64\ntest_subset = 16\nepochs = 1\nbatch_size = 16\noptimizer = \"adamw\"\nlr = 3e-3\n\n[grid]\nqk_norm = [false, true]\nweight_decay = [0.0, 0.1]\n",
    );
    let out = d.join("out");
    let o = sweep(&["--config", p.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = results(&out);
    assert_eq!(r.lines().filter(|l| l.contains(",done,")).count(), 4, "{r}");
    assert!(r.contains("qk_norm=true"), "{r}");
}
