//! End-to-end tests of the `normwd` program on the embedded data: a training run and bad input
//! (exit code 2, one clear line, nothing half-written). Crashes and resume: `reliability.rs`.

mod common;

use common::{bin, records, run, text, tmp, QUICK};
use normwd::data::idx::encode as idx;
use std::path::Path;

#[test]
fn train_writes_a_complete_run() {
    let d = tmp("train").join("run");
    let o = bin().args(QUICK).args(["--epochs", "2", "--out", d.to_str().unwrap()]).output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("images/s"), "throughput printed: {out}");
    for f in ["config.toml", "metrics.jsonl", "checkpoint.safetensors", "state.json"] {
        assert!(d.join(f).is_file(), "missing {f}");
    }
    let epochs = records(&d, "epoch");
    assert_eq!(epochs.len(), 2);
    for k in ["epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "images_per_sec"] {
        assert!(epochs[1][k].is_number(), "epoch record has {k}");
    }
    assert!(epochs[1]["test_acc"].as_f64().unwrap() > 0.5, "learns something: {:?}", epochs[1]);
    let probes = records(&d, "probe");
    assert!(!probes.is_empty());
    for k in ["step", "path", "norm", "grad_norm", "eff_lr", "angle", "cos_wg"] {
        assert!(!probes[0][k].is_null(), "probe record has {k}");
    }
    assert_eq!(records(&d, "done").len(), 1);
    // No temporary files are left behind.
    let leftovers: Vec<_> =
        std::fs::read_dir(&d).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().contains(".tmp")).collect();
    assert!(leftovers.is_empty());
    // A resumed run keeps its settings: a flag beside --resume is refused, not ignored.
    let o = bin().args(["train", "--resume", d.to_str().unwrap(), "--epochs", "3"]).output().unwrap();
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--epochs cannot be changed by --resume") && err.trim().lines().count() == 1, "{err}");
    // The same directory cannot be reused by accident.
    let o = bin().args(QUICK).args(["--epochs", "1", "--out", d.to_str().unwrap()]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("already holds a run"));
}

fn expect_usage_error(args: &[&str], needle: &str) {
    let o = run(args);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "args {args:?}: {err}");
    assert!(err.contains(needle), "args {args:?}: expected {needle:?} in {err:?}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "no panic: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    let d = tmp("badflags");
    let out = d.join("run");
    let o = out.to_str().unwrap();
    expect_usage_error(&["train", "--model", "vgg", "--out", o], "--model \"vgg\": expected one of mlp, convnet, resnet20, gpt");
    expect_usage_error(&["train", "--norm", "batch", "--out", o], "--norm \"batch\"");
    expect_usage_error(&["train", "--optimizer", "rmsprop", "--out", o], "--optimizer \"rmsprop\"");
    expect_usage_error(&["train", "--lr", "-0.1", "--out", o], "--lr -0.1: expected a finite number > 0");
    expect_usage_error(&["train", "--lr", "NaN", "--out", o], "--lr NaN");
    expect_usage_error(&["train", "--weight-decay", "nan", "--out", o], "--weight-decay NaN");
    expect_usage_error(&["train", "--weight-decay", "-1", "--out", o], "--weight-decay -1");
    expect_usage_error(&["train", "--batch-size", "0", "--out", o], "--batch-size 0: expected an integer >= 1");
    expect_usage_error(&["train", "--data", "/nonexistent/normwd", "--out", o], "/nonexistent/normwd");
    expect_usage_error(&["audit", "--model", "vgg"], "--model \"vgg\"");
    expect_usage_error(&["train", "--device", "tpu", "--out", o], "--device tpu: expected cpu, wgpu, cuda or auto");
    expect_usage_error(&["train", "--device", "cuda", "--out", o], "NVIDIA GPUs through Vulkan, as --device wgpu");
    assert!(!out.exists(), "nothing is written for bad input");
    let cfg = d.join("bad.toml");
    std::fs::write(&cfg, "model = \"mlp\"\nlearning_rate = 0.1\n").unwrap();
    expect_usage_error(&["train", "--config", cfg.to_str().unwrap(), "--out", o], "learning_rate");
    // Counts have no `0` meaning "all" or "auto": leaving the flag out asks for the default.
    expect_usage_error(&["train", "--probe-every", "0", "--out", o], "--probe-every \"0\": expected an integer >= 1");
    expect_usage_error(&["train", "--train-subset", "0", "--out", o], "--train-subset \"0\"");
}

/// `train --help` gives each default once, from the one place defaults are kept (the
/// transformer's beside the image models' where they differ), and no sentinel value.
#[test]
fn train_help_prints_each_default_once() {
    let o = run(&["train", "--help"]);
    let (help, _) = text(&o);
    assert!(o.status.success());
    for line in help.lines() {
        assert!(line.matches("default").count() <= 1, "a default said twice: {line}");
        // Counts whose `0` once meant "all" or "auto" now say what leaving them out does.
        let count = ["Probe every", "first N", "rows of the token embedding"].iter().any(|c| line.contains(c));
        assert!(!(count && line.contains("[default: 0]")), "a sentinel: {line}");
        assert!(!line.contains("(0 ="), "a sentinel: {line}");
    }
    for said in [
        "[default: 0.1; gpt: 0.003]",
        "[default: sgd; gpt: adamw]",
        "[default: 128; gpt: 32]",
        "[default: 0.9,0.999; lion: 0.9,0.99]",
        "[default: about 200 points per run",
        "[default: 1e-8]",
    ] {
        assert!(help.contains(said), "{said} in {help}");
    }
}

/// A run of the transformer with no other flag trains with the transformer's own defaults, and
/// its `config.toml` records them, so it reruns exactly (the full run: README).
#[test]
fn a_gpt_alone_trains_with_its_own_defaults() {
    let d = tmp("gptdefaults").join("run");
    let o = run(&["train", "--model", "gpt", "--train-subset", "64", "--test-subset", "16", "--epochs", "1", "--out", d.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o).1);
    let c = normwd::train::config::RunConfig::from_toml("config.toml", &std::fs::read_to_string(d.join("config.toml")).unwrap()).unwrap();
    let expected = normwd::train::config::RunConfig::defaults(normwd::model::ModelKind::Gpt);
    assert_eq!(
        (c.optimizer, c.lr, c.weight_decay, c.batch_size),
        (expected.optimizer, expected.lr, expected.weight_decay, expected.batch_size)
    );
    assert_eq!((c.optimizer.name(), c.lr, c.batch_size), ("adamw", 3e-3, 32));
    assert_eq!((c.train_subset, c.probe_every), (Some(64), None), "unset stays unset, not a sentinel");
}

/// Text a `gpt` cannot train on is refused before training, naming the file and what was expected.
#[test]
fn bad_text_exits_2_naming_the_file() {
    let d = tmp("badtext");
    let o = d.join("run");
    let o = o.to_str().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    let gpt = |data: &str, extra: &[&str]| {
        let mut v = vec!["train", "--model", "gpt", "--data"];
        v.push(data);
        v.extend_from_slice(extra);
        v.extend_from_slice(&["--out", o]);
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let cases: Vec<(Vec<String>, String)> = vec![
        (gpt(&file("latin1.txt", b"caf\xe9 au lait"), &[]), "latin1.txt: byte 3 is not UTF-8: expected UTF-8 text".into()),
        (gpt(&file("empty.txt", b""), &[]), "empty.txt: holds no text".into()),
        (
            gpt(&file("short.txt", "hello world, hello world".as_bytes()), &["--block-size", "64"]),
            "short.txt: its training part holds 22 tokens: expected at least one block of 64 + 1".into(),
        ),
        (
            gpt(&file("wide.txt", "abcdefghijklmnopqrstuvwxyz".repeat(20).as_bytes()), &["--vocab-size", "16", "--block-size", "8"]),
            "wide.txt: 26 distinct tokens: expected at most 16 (the model's embedding)".into(),
        ),
        (gpt("fashion-mnist", &[]), "--data fashion-mnist: images, not text".into()),
        (gpt("embedded", &["--norm", "bn"]), "--norm bn: expected one of ln, rms, none for --model gpt".into()),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        expect_usage_error(&args, &needle);
    }
    assert!(!Path::new(o).exists(), "nothing is written for bad text");
}

#[test]
fn misspelt_environment_switches_exit_2_naming_the_variable() {
    // Each switch is read deep inside a kernel or the thread pool; a bad value must not
    // quietly mean the default.
    for (name, value, needle) in [
        ("NORMWD_POOL_SPIN_US", "5ms", "NORMWD_POOL_SPIN_US=\"5ms\": expected a whole number of microseconds"),
        ("NORMWD_CONV_DIRECT", "avx512", "NORMWD_CONV_DIRECT=\"avx512\": expected on, off or avx2"),
        ("NORMWD_KERNELS", "0", "NORMWD_KERNELS=\"0\": expected on or off"),
    ] {
        let o = bin().args(["audit", "--model", "mlp"]).env(name, value).output().unwrap();
        let err = text(&o).1;
        assert_eq!(o.status.code(), Some(2), "{name}={value}: {err}");
        assert!(err.contains(needle), "{name}={value}: {err}");
    }
    let o = bin().args(["audit", "--model", "mlp"]).env("NORMWD_CONV_DIRECT", "off").output().unwrap();
    assert!(o.status.success(), "a valid value runs: {:?}", text(&o));
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `normwd audit | head -1`: the reader leaves after one line.
    let mut child = bin()
        .args(["audit", "--model", "resnet20"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
}

/// Writes a tiny valid IDX dataset into `d` (4 train, 2 test images of 8x8).
fn write_idx_set(d: &Path) {
    std::fs::write(d.join("train-images-idx3-ubyte"), idx(2051, &[4, 8, 8], &[7; 256])).unwrap();
    std::fs::write(d.join("train-labels-idx1-ubyte"), idx(2049, &[4], &[0, 1, 2, 3])).unwrap();
    std::fs::write(d.join("t10k-images-idx3-ubyte"), idx(2051, &[2, 8, 8], &[9; 128])).unwrap();
    std::fs::write(d.join("t10k-labels-idx1-ubyte"), idx(2049, &[2], &[4, 5])).unwrap();
}

#[test]
fn corrupt_data_files_exit_2_naming_the_file() {
    let d = tmp("corrupt");
    write_idx_set(&d);
    let out = d.join("run");
    let train =
        |data: &Path| run(&["train", "--model", "mlp", "--epochs", "1", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    // The valid set trains.
    let o = train(&d);
    assert!(o.status.success(), "{:?}", text(&o));
    std::fs::remove_dir_all(&out).unwrap();
    // Wrong magic.
    std::fs::write(d.join("train-images-idx3-ubyte"), idx(2049, &[4, 8, 8], &[7; 256])).unwrap();
    expect_usage_error(
        &["train", "--model", "mlp", "--data", d.to_str().unwrap(), "--out", out.to_str().unwrap()],
        "train-images-idx3-ubyte: magic number is 2049, expected 2051",
    );
    // Truncated.
    std::fs::write(d.join("train-images-idx3-ubyte"), idx(2051, &[4, 8, 8], &[7; 200])).unwrap();
    expect_usage_error(
        &["train", "--model", "mlp", "--data", d.to_str().unwrap(), "--out", out.to_str().unwrap()],
        "256 data bytes, file holds 200",
    );
    // Label / image count mismatch.
    write_idx_set(&d);
    std::fs::write(d.join("train-labels-idx1-ubyte"), idx(2049, &[3], &[0, 1, 2])).unwrap();
    expect_usage_error(
        &["train", "--model", "mlp", "--data", d.to_str().unwrap(), "--out", out.to_str().unwrap()],
        "3 labels for 4 images",
    );
    assert!(!out.exists());
    // CIFAR with a wrong length, and a folder with neither format.
    let c = tmp("cifar-bad");
    std::fs::write(c.join("data_batch_1.bin"), vec![1u8; 3073 * 2 + 5]).unwrap();
    std::fs::write(c.join("test_batch.bin"), vec![1u8; 3073]).unwrap();
    expect_usage_error(
        &["train", "--data", c.to_str().unwrap(), "--out", out.to_str().unwrap()],
        "data_batch_1.bin: file is 6151 bytes, expected a positive multiple of 3073",
    );
    // Images too small for the architecture, and a file with no images.
    write_idx_set(&d);
    std::fs::write(d.join("train-images-idx3-ubyte"), idx(2051, &[16, 4, 4], &[7; 256])).unwrap();
    std::fs::write(d.join("train-labels-idx1-ubyte"), idx(2049, &[16], &[1; 16])).unwrap();
    std::fs::write(d.join("t10k-images-idx3-ubyte"), idx(2051, &[2, 4, 4], &[7; 32])).unwrap();
    expect_usage_error(
        &["train", "--model", "convnet", "--data", d.to_str().unwrap(), "--out", out.to_str().unwrap()],
        "--model convnet: expected images of at least 8x8",
    );
    write_idx_set(&d);
    std::fs::write(d.join("train-images-idx3-ubyte"), idx(2051, &[0, 8, 8], &[])).unwrap();
    std::fs::write(d.join("train-labels-idx1-ubyte"), idx(2049, &[0], &[])).unwrap();
    expect_usage_error(
        &["train", "--model", "mlp", "--data", d.to_str().unwrap(), "--out", out.to_str().unwrap()],
        "train-images-idx3-ubyte: holds 0 images of 8x8, expected at least one non-empty image",
    );
    assert!(!out.exists());
    let e = tmp("empty");
    expect_usage_error(&["train", "--data", e.to_str().unwrap(), "--out", out.to_str().unwrap()], "neither IDX files");
}

#[test]
fn cifar_binary_files_train_with_augmentation() {
    // Files generated in the CIFAR-10 binary format: 1 label byte + 3072 pixel bytes.
    let c = tmp("cifar");
    let mut rec = Vec::new();
    for i in 0..64u32 {
        rec.push((i % 10) as u8);
        rec.extend((0..3072u32).map(|p| ((p * 7 + i * 13) % 256) as u8));
    }
    std::fs::write(c.join("data_batch_1.bin"), &rec).unwrap();
    std::fs::write(c.join("test_batch.bin"), &rec[..3073 * 16]).unwrap();
    let out = c.join("run");
    let o = run(&[
        "train",
        "--model",
        "resnet20",
        "--data",
        c.to_str().unwrap(),
        "--augment",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(records(&out, "epoch").len(), 1);
}

#[test]
fn audit_marks_conv_weights_scale_invariant_and_excludes_norm_and_bias() {
    let o = run(&["audit", "--model", "convnet", "--norm", "bn"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    let row = |p: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{p} ")))
            .unwrap_or_else(|| panic!("no row {p}:\n{out}"))
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    for b in ["block1", "block2", "block3"] {
        let r = row(&format!("{b}.conv.weight"));
        assert!(r.join(" ").contains("weight yes (channel) yes scale-invariant"), "{r:?}");
        for f in ["weight", "bias"] {
            let r = row(&format!("{b}.norm.{f}"));
            assert!(r.join(" ").contains(" no no default"), "{r:?}");
        }
    }
    assert!(row("fc.weight").join(" ").contains("weight no yes default"));
    assert!(row("fc.bias").join(" ").contains("bias no no default"));
}

#[test]
fn predict_matches_hand_computed_values() {
    let o = run(&["predict", "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9", "--weight-decay", "5e-4", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = &v["phases"][0];
    // sqrt(2*0.1*5e-4/1.9) = 0.0072548...
    assert!((p["angle_rad"].as_f64().unwrap() - (2.0f64 * 0.1 * 5e-4 / 1.9).sqrt()).abs() < 1e-12);
    // L2 under momentum 0.9 acts as wd/(1-mu): (1-0.9)/(0.1*5e-4) = 2000 steps; 391 per epoch.
    assert!((p["relaxation_steps"].as_f64().unwrap() - 2000.0).abs() < 1e-6);
    assert!((p["relaxation_epochs"].as_f64().unwrap() - 2000.0 / 391.0).abs() < 1e-9);
    // F13: sqrt(wd*(1-mu)*(2/lr - wd/(1+mu))).
    let ratio = (5e-4f64 * 0.1 * (2.0 / 0.1 - 5e-4 / 1.9)).sqrt();
    assert!((p["grad_weight_ratio"].as_f64().unwrap() - ratio).abs() < 1e-12);
    let o = run(&["predict", "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9", "--weight-decay", "5e-4"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("0.007255"));
    expect_usage_error(&["predict", "--lr", "nan", "--weight-decay", "1e-4"], "--lr NaN");
}

/// The timescale in epochs from the dataset and batch sizes; corrected decay keeps F13's ratio
/// flat through a cosine (AdamW: only its change is predicted), plain decay's rises; cautious
/// decay is predicted at half the decay.
#[test]
fn predict_follows_the_schedule_and_the_decay_options() {
    let json = |extra: &[&str]| -> serde_json::Value {
        let mut args =
            vec!["predict", "--optimizer", "adamw", "--lr", "1e-3", "--weight-decay", "0.1", "--schedule", "cosine", "--epochs", "10"];
        args.extend(extra);
        args.push("--json");
        let o = run(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let v = json(&["--dataset-size", "60000", "--batch-size", "128"]);
    assert_eq!(v["steps_per_epoch"], 469);
    let p0 = &v["phases"][0];
    assert!((p0["relaxation_steps"].as_f64().unwrap() - 10_000.0).abs() < 1e-6);
    assert!((p0["relaxation_epochs"].as_f64().unwrap() - 10_000.0 / 469.0).abs() < 1e-9);
    // At 50% of a cosine the lr halves: AdamW's ratio doubles without correction.
    assert!((v["phases"][2]["ratio_vs_first_phase"].as_f64().unwrap() - 2.0).abs() < 1e-9);
    let c = json(&["--corrected-decay"]);
    assert!((c["phases"][2]["ratio_vs_first_phase"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    assert!((c["phases"][2]["weight_decay"].as_f64().unwrap() - 0.05).abs() < 1e-12);
    let k = json(&["--cautious-decay"]);
    let plain = v["phases"][0]["angle_rad"].as_f64().unwrap();
    assert!((k["phases"][0]["angle_rad"].as_f64().unwrap() - plain / 2f64.sqrt()).abs() < 1e-12);
    expect_usage_error(&["predict", "--optimizer", "sgd", "--lr", "0.1", "--weight-decay", "1e-4", "--cautious-decay"], "--cautious-decay");
}

/// `predict --transfer` keeps tau_epoch = B/(lr*wd*D), names its rule, and refuses impossible
/// sizes naming the flag.
#[test]
fn predict_transfer_keeps_the_timescale() {
    let base = ["predict", "--optimizer", "adamw", "--lr", "1e-3", "--weight-decay", "0.1", "--transfer"];
    let with = |extra: &[&str]| -> Vec<String> { base.iter().chain(extra).map(|s| s.to_string()).collect() };
    let args = with(&["--dataset-size", "50000", "--batch-size", "128", "--to-dataset-size", "200000", "--to-batch-size", "256", "--json"]);
    let o = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // 4x the data: wd/4; 2x the batch: wd*2.
    assert!((v["to"]["weight_decay"].as_f64().unwrap() - 0.05).abs() < 1e-12, "{v}");
    assert!(v["rule"][0].as_str().unwrap().contains("B/(lr*wd*D)"));
    let tau = |side: &str| v[side]["tau_epoch"].as_f64().unwrap();
    // AdamW: 1/(1e-3*0.1) = 10,000 steps over 50000/128 per epoch, the same after the transfer.
    assert!((tau("from") - 10_000.0 / (50_000.0 / 128.0)).abs() < 1e-9 && (tau("to") / tau("from") - 1.0).abs() < 1e-12, "{v}");
    let args = with(&["--dataset-size", "1000", "--batch-size", "100", "--width", "256", "--to-width", "1024", "--mup", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&run(&args.iter().map(String::as_str).collect::<Vec<_>>()).stdout).unwrap();
    // muP: lr/4 at 4x the width, so wd*4.
    assert!((v["to"]["weight_decay"].as_f64().unwrap() - 0.4).abs() < 1e-12, "{v}");
    for (bad, named) in [
        (vec!["--dataset-size", "0", "--batch-size", "128", "--to-batch-size", "64"], "--dataset-size 0"),
        (vec!["--dataset-size", "-50", "--batch-size", "128", "--to-batch-size", "64"], "--dataset-size -50"),
        (vec!["--dataset-size", "50", "--batch-size", "128", "--to-batch-size", "inf"], "--to-batch-size inf"),
        (vec!["--dataset-size", "50", "--batch-size", "128", "--to-lr", "NaN"], "--to-lr NaN"),
        (vec!["--dataset-size", "50", "--batch-size", "128"], "--to-dataset-size"),
        (vec!["--to-lr", "1e-4"], "--dataset-size"),
    ] {
        let args = with(&bad);
        expect_usage_error(&args.iter().map(String::as_str).collect::<Vec<_>>(), named);
    }
}

#[test]
fn divergence_stops_with_step_and_layer_and_exit_1() {
    let d = tmp("diverge").join("run");
    let o = run(&[
        "train",
        "--model",
        "mlp",
        "--norm",
        "none",
        "--lr",
        "1e6",
        "--train-subset",
        "512",
        "--test-subset",
        "64",
        "--epochs",
        "1",
        "--out",
        d.to_str().unwrap(),
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("training diverged at epoch 1, step"), "{err}");
    // Diverged in its first epoch, it has no checkpoint, and does not promise one.
    assert!(err.contains("no checkpoint was written") && !d.join("checkpoint.safetensors").exists(), "{err}");
    assert!(!err.contains("panicked"));
    // What was written is whole: the config parses and every metrics line is JSON.
    let cfg = std::fs::read_to_string(d.join("config.toml")).unwrap();
    assert!(cfg.contains("lr = 1000000"));
    for l in std::fs::read_to_string(d.join("metrics.jsonl")).unwrap().lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap();
    }
}

#[test]
fn bench_smoke_prints_throughput_and_json() {
    // A few steps only: speed is compared in bench/compare.sh, never asserted here.
    let o = run(&["bench", "--train", "--models", "mlp,convnet", "--steps", "2", "--warmup", "1", "--json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert!(r["images_per_sec"].as_f64().unwrap() > 0.0 && r["peak_rss_mb"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["losses"].as_array().unwrap().len(), 3);
    }
    let o = run(&["bench", "--probe", "--models", "mlp", "--steps", "2"]);
    assert!(o.status.success() && text(&o).0.contains("overhead"), "{:?}", text(&o));
    expect_usage_error(&["bench", "--train", "--device", "cuda"], "--device cuda");
    // The measured FMA peak bench/compare.sh takes shares against: one JSON line, a finite
    // positive rate, on a CPU with the vector instructions; elsewhere a clear refusal.
    let o = run(&["bench", "--peak", "--json"]);
    let (out, err) = text(&o);
    if o.status.success() {
        let p: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let flops = p["flops"].as_f64().unwrap();
        assert!(flops.is_finite() && flops > 1e8 && p["threads"].as_u64().unwrap() >= 1, "{p}");
        assert!(["AVX-512", "AVX2+FMA"].contains(&p["isa"].as_str().unwrap()), "{p}");
    } else {
        assert!(o.status.code() == Some(1) && err.contains("--peak") && !err.contains("panicked"), "{err}");
    }
}

/// Ctrl-C during training ends the run with exit 130 and a line saying how to continue it,
/// and the run then resumes from its last checkpoint.
#[cfg(unix)]
#[test]
fn ctrl_c_says_how_to_resume() {
    let d = tmp("ctrl-c").join("run");
    let child = bin()
        .args(QUICK)
        .args(["--epochs", "40", "--out", d.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the first epoch's checkpoint is written (or after 60 s regardless).
    let t0 = std::time::Instant::now();
    while !d.join("checkpoint.safetensors").exists() && t0.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: sending SIGINT to the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains(&format!("normwd train --resume {}", d.display())), "{err}");
    let o = bin().args(["train", "--resume", d.to_str().unwrap()]).output().unwrap();
    let (_, err) = text(&o);
    assert!(o.status.success() && err.contains("resuming after epoch"), "{err}");
}

/// `predict` and `inspect` read the training's hyperparameters with one parser: the same names
/// (lion included), the same checks, and what was not given is said, not silently assumed.
#[test]
fn predict_and_inspect_share_one_hyperparameter_parser() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorch");
    let out = tmp("hyper");
    for cmd in [vec!["predict"], vec!["inspect", fixtures.to_str().unwrap(), "--out", out.to_str().unwrap()]] {
        expect_usage_error(
            &[&cmd[..], &["--optimizer", "rmsprop", "--lr", "0.1", "--weight-decay", "0"]].concat(),
            "--optimizer \"rmsprop\": expected one of sgd, adam, adamw, lion",
        );
        expect_usage_error(&[&cmd[..], &["--lr", "-1", "--weight-decay", "0"]].concat(), "--lr -1: expected a finite number > 0");
        let o = run(&[&cmd[..], &["--optimizer", "lion", "--lr", "1e-4", "--weight-decay", "1"]].concat());
        assert!(o.status.success(), "{cmd:?} takes lion: {}", text(&o).1);
        let o = run(&[&cmd[..], &["--optimizer", "sgd", "--lr", "0.1", "--weight-decay", "5e-4"]].concat());
        assert!(o.status.success() && text(&o).1.contains("--momentum 0.9"), "{cmd:?}: the assumed momentum is said: {}", text(&o).1);
    }
    // predict needs the two numbers it predicts from; inspect assumes them, and says so.
    expect_usage_error(&["predict", "--weight-decay", "5e-4"], "--lr: required");
    let o = run(&["inspect", fixtures.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(text(&o).1.contains("predictions assume --optimizer sgd, --lr 0.1, --weight-decay 0.0005, --momentum 0.9"), "{}", text(&o).1);
}

/// A run whose constant-lr phase ends before two relaxation times of its scale-invariant
/// weights says so before it trains; one that passes them does not. Corrected and cautious
/// decay train and reach the run format.
#[test]
fn train_warns_of_a_budget_short_of_equilibrium() {
    let base = ["--schedule", "constant", "--epochs", "1", "--momentum", "0.9"];
    let d = tmp("budget");
    // 1024 examples, batch 64: 16 steps; (1-0.9)/(0.1*5e-4) = 2000 steps to relax.
    let o = bin()
        .args(QUICK)
        .args(base)
        .args(["--lr", "0.1", "--weight-decay", "5e-4", "--out", d.join("short").to_str().unwrap()])
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.contains("warning: the whole run lasts 16 steps, 0.01 relaxation times") && err.contains("2000 steps"), "{err}");
    let o = bin()
        .args(QUICK)
        .args(base)
        .args(["--lr", "0.1", "--weight-decay", "2", "--out", d.join("long").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success() && !text(&o).1.contains("warning:"), "{}", text(&o).1);
    for flags in [["--corrected-decay", "--decay", "coupled"], ["--cautious-decay", "--decay", "decoupled"]] {
        let dir = d.join(flags[0].trim_start_matches('-'));
        let o = bin()
            .args(QUICK)
            .args(["--schedule", "cosine", "--epochs", "2"])
            .args(flags)
            .args(["--out", dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{flags:?}: {}", text(&o).1);
        let cfg = std::fs::read_to_string(dir.join("config.toml")).unwrap();
        assert!(cfg.contains(&format!("{} = true", flags[0].trim_start_matches("--").replace('-', "_"))), "{cfg}");
    }
    expect_usage_error(
        &["train", "--model", "mlp", "--cautious-decay", "--decay", "coupled", "--out", d.join("bad").to_str().unwrap()],
        "--cautious-decay",
    );
    assert!(!d.join("bad").exists());
}
