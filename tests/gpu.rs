//! The GPU path (`--device wgpu`) where this build has it (`--features wgpu`) and a Vulkan
//! device exists (an NVIDIA card, or Mesa's lavapipe on a CPU-only machine: Debian
//! `mesa-vulkan-drivers`): a short run with the same seed agrees with the CPU run. Elsewhere
//! the test prints why it is skipped; the CPU-only build refuses the flag clearly instead.

mod common;

use common::{bin, epochs_without_timing, quick_args, quick_gpt_args, text, tmp};
use std::path::Path;

#[test]
fn gpu_run_agrees_with_the_cpu_run_of_the_same_seed() {
    if !normwd::device::HAS_WGPU {
        let o = bin().args(["train", "--device", "wgpu", "--out", tmp("nogpu").join("run").to_str().unwrap()]).output().unwrap();
        assert_eq!(o.status.code(), Some(2));
        assert!(text(&o).1.contains("--features wgpu"), "{}", text(&o).1);
        eprintln!("skipped the GPU comparison: this build has no GPU backend (cargo test --release --features wgpu)");
        return;
    }
    if let Err(e) = normwd::device::open("wgpu") {
        eprintln!("skipped the GPU comparison: --device wgpu: {e}");
        return;
    }
    agree_on_devices(&tmp("gpu"), quick_args);
    // The transformer too: burn's attention, layer norm and GELU on the GPU, the kernels on the CPU.
    agree_on_devices(&tmp("gpu-gpt"), quick_gpt_args);
}

fn agree_on_devices(base: &Path, quick: fn(&Path, usize) -> Vec<String>) {
    let run = |dev: &str| {
        let d = base.join(dev);
        let mut args = quick(&d, 2);
        args.extend(["--device".into(), dev.into()]);
        let o = bin().args(&args).output().unwrap();
        assert!(o.status.success(), "{dev}: {:?}", text(&o));
        epochs_without_timing(&d)
    };
    let (cpu, gpu) = (run("cpu"), run("wgpu"));
    for (c, g) in cpu.iter().zip(&gpu) {
        for k in ["train_loss", "test_loss"] {
            let (a, b) = (c[k].as_f64().unwrap(), g[k].as_f64().unwrap());
            // Different summation orders in f32 over 32 steps: agreement to 1e-3 relative.
            assert!((a - b).abs() <= 1e-3 * a.abs().max(1.0), "epoch {}: {k} cpu {a} gpu {b}", c["epoch"]);
        }
        let (a, b) = (c["test_acc"].as_f64().unwrap(), g["test_acc"].as_f64().unwrap());
        assert!((a - b).abs() <= 0.02, "test accuracy cpu {a} gpu {b}");
    }
}
