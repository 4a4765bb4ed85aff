//! Compute devices by name (`--device`). The CPU backend (burn's flex) is always built in; a
//! GPU is reached through burn's wgpu backend (Vulkan on Linux) when normwd is built with
//! `--features wgpu` (WGSL kernels) or `--features vulkan` (SPIR-V kernels, for NVIDIA cards).
//! burn 0.22's CUDA backend is not offered: its build script downloads LLVM, so it cannot build
//! offline (PERFORMANCE.md, "Why wgpu").
//!
//! May import burn; nothing of the engine.

use burn::tensor::Device;

/// The names `--device` accepts.
pub const CHOICES: &str = "cpu, wgpu, cuda or auto";

/// Whether this build has the GPU (wgpu) backend.
pub const HAS_WGPU: bool = cfg!(feature = "wgpu");

/// Checks a `--device` value against what this build can run, without touching any device.
pub fn validate(name: &str) -> Result<(), String> {
    match name {
        "cpu" | "auto" => Ok(()),
        "wgpu" if HAS_WGPU => Ok(()),
        "wgpu" => Err("a build with the GPU backend: this one has none (build with `cargo build --release --features wgpu`)".into()),
        "cuda" => Err(format!(
            "cpu or wgpu: normwd reaches NVIDIA GPUs through Vulkan, as --device wgpu{}",
            if HAS_WGPU { "" } else { " (in a build with `--features wgpu`)" }
        )),
        _ => Err(CHOICES.into()),
    }
}

/// Opens the device `name` names (`auto` is the CPU: a GPU is used only when asked for).
/// A GPU that cannot be opened (no adapter, no Vulkan loader) is an error naming the cause.
pub fn open(name: &str) -> Result<Device, String> {
    validate(name)?;
    match name {
        "wgpu" => wgpu(),
        _ => Ok(Device::flex()),
    }
}

#[cfg(feature = "wgpu")]
fn wgpu() -> Result<Device, String> {
    use burn::tensor::{DeviceKind, Tensor};
    use std::sync::OnceLock;
    // wgpu finds its adapter lazily and panics when there is none; probe once, quietly. The
    // panic hook is process-wide, so the commands that start runs in parallel (sweep, demo)
    // open their devices first, before any run thread exists.
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    let dev = Device::wgpu(DeviceKind::DefaultDevice);
    let probe = PROBE.get_or_init(|| {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let d = dev.clone();
        let r = std::panic::catch_unwind(move || Tensor::<1>::ones([4], &d).sum().into_scalar::<f32>());
        std::panic::set_hook(hook);
        match r {
            Ok(v) if v == 4.0 => Ok(()),
            Ok(v) => Err(format!("the GPU computed 1+1+1+1 = {v}")),
            Err(e) => {
                let why = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
                Err(format!(
                    "a GPU adapter: none could be opened ({}); a Vulkan driver and loader (libvulkan1) are needed",
                    why.unwrap_or_else(|| "wgpu panicked".into()).lines().next().unwrap_or_default()
                ))
            }
        }
    });
    probe.clone().map(|_| dev)
}

#[cfg(not(feature = "wgpu"))]
fn wgpu() -> Result<Device, String> {
    Err("unreachable: validate refuses wgpu in a build without it".into())
}
