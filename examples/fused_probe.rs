//! Does stacking K configurations into one model pay on a backend? Times a ConvNet-shaped
//! training step (3 x [conv3x3 -> per-channel normalization -> ReLU -> max-pool], batched linear
//! head) for K configs at once as grouped convolutions (`groups = K`), against K = 1.
//! The answer decides `sweep --fused` (PERFORMANCE.md): `cargo run --release --example fused_probe`,
//! or on a GPU `cargo run --release --features wgpu --example fused_probe -- wgpu`.

use burn::tensor::activation::relu;
use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;

/// Median seconds of one fused step for `k` configs (batch 128, 1x28x28 inputs).
fn step(k: usize, dev: &Device) -> f64 {
    let b = 128;
    let chans = [1usize, 32, 64, 128];
    let ws: Vec<Tensor<4>> = (0..3)
        .map(|i| Tensor::<4>::random([k * chans[i + 1], chans[i], 3, 3], Distribution::Normal(0.0, 0.1), dev).require_grad())
        .collect();
    let fc = Tensor::<3>::random([k, 128 * 9, 10], Distribution::Normal(0.0, 0.1), dev).require_grad();
    let mut times = vec![];
    // The first steps compile and autotune kernels on a GPU: not timed.
    for i in 0..12 {
        let x = Tensor::<4>::random([b, k, 28, 28], Distribution::Normal(0.0, 1.0), dev);
        let t = Instant::now();
        let mut h = x;
        for w in &ws {
            h = conv2d(h, w.clone(), None, ConvOptions::new([1, 1], [1, 1], [1, 1], k));
            let mean = h.clone().mean_dim(0).mean_dim(2).mean_dim(3);
            let c = h.sub(mean);
            let var = c.clone().powi_scalar(2).mean_dim(0).mean_dim(2).mean_dim(3);
            h = max_pool2d(relu(c.div(var.add_scalar(1e-5).sqrt())), MaxPoolOptions::new([2, 2]).with_stride([2, 2]));
        }
        let h: Tensor<3> = h.reshape([b, k, 128 * 9]).swap_dims(0, 1);
        let loss = h.matmul(fc.clone()).powi_scalar(2).mean();
        let g = loss.backward();
        for w in &ws {
            let _ = w.grad(&g).expect("a weight gradient").into_data();
        }
        if i >= 3 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "cpu".into());
    let dev = match normwd::device::open(&name) {
        Ok(d) => d.autodiff(),
        Err(e) => {
            eprintln!("device {name}: expected {e}");
            std::process::exit(2);
        }
    };
    println!("device {name}, batch 128, 1x28x28, median of 9 steps after 3 untimed");
    let one = step(1, &dev);
    for k in [1, 4, 16] {
        let s = if k == 1 { one } else { step(k, &dev) };
        println!(
            "K={k:2}: {:7.1} ms per fused step, {:6.1} ms per config, speedup vs K separate steps {:.2}x",
            1e3 * s,
            1e3 * s / k as f64,
            one * k as f64 / s
        );
    }
}
