//! The direct 3x3 convolution's kernels timed alone on ResNet-20's and the ConvNet's geometries
//! (batch 128): median milliseconds and GFLOP/s of the forward (the input gradient runs the same
//! kernel) and of the weight gradient, per layer shape, and Winograd's two gradients fused; then
//! ResNet-20's two stride-2 layers, forward and both gradients. Run:
//! `RAYON_NUM_THREADS=2 cargo run --release --example conv_parts`.

use normwd::kernels::conv::winograd::{self, Tile};
use normwd::kernels::conv::{self, direct, Geometry};
use std::time::Instant;

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// ResNet-20's downsampling layers: their forward and gradients through [`conv`]'s entry points,
/// as a training step calls them.
fn strided(reps: usize) {
    for (c_in, hw, c_out) in [(16, 32, 32), (32, 16, 64)] {
        let g = Geometry { n: 128, c_in, h: hw, w: hw, c_out, k: 3, stride: 2, pad: 1 };
        if std::env::var("ONLY").is_ok_and(|v| v != format!("s{c_in}")) {
            continue;
        }
        let (ho, wo) = (g.h_out(), g.w_out());
        let x: Vec<f32> = (0..g.n * c_in * hw * hw).map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0).collect();
        let w: Vec<f32> = (0..c_out * c_in * 9).map(|i| ((i * 104729 % 1000) as f32) / 5000.0 - 0.1).collect();
        let dy: Vec<f32> = (0..g.n * c_out * ho * wo).map(|i| ((i * 31 % 1000) as f32) / 500.0 - 1.0).collect();
        let flop = 2.0 * (g.n * c_out * c_in * 9 * ho * wo) as f64;
        let time = |f: &dyn Fn()| {
            median(
                (0..reps)
                    .map(|_| {
                        let t0 = Instant::now();
                        f();
                        t0.elapsed().as_secs_f64()
                    })
                    .collect(),
            )
        };
        let direct = conv::choice::Algo::Direct;
        let fwd = time(&|| _ = std::hint::black_box(conv::forward(&g, &x, &w)));
        let wgrad = time(&|| _ = std::hint::black_box(conv::weight_grad_with(&g, direct, &x, &dy)));
        let igrad = time(&|| _ = std::hint::black_box(conv::input_grad_with(&g, direct, &w, None, &dy)));
        println!(
            "stride 2, c_in {c_in:>2} {hw:>2}x{hw:<2} c_out {c_out:>2}: forward {:6.2} ms {:5.0} GFLOP/s | weight grad {:6.2} ms {:5.0} GFLOP/s | input grad {:6.2} ms {:5.0} GFLOP/s",
            fwd * 1e3,
            flop / fwd / 1e9,
            wgrad * 1e3,
            flop / wgrad / 1e9,
            igrad * 1e3,
            flop / igrad / 1e9
        );
    }
}

fn main() {
    let reps: usize = std::env::var("REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    strided(reps);
    for (c_in, hw, c_out) in [(3, 32, 16), (16, 32, 16), (32, 16, 32), (64, 8, 64), (1, 28, 32), (32, 14, 64), (64, 7, 128)] {
        let g = Geometry { n: 128, c_in, h: hw, w: hw, c_out, k: 3, stride: 1, pad: 1 };
        // ONLY=16 times only the layers with that many input channels (for a profiler).
        if std::env::var("ONLY").is_ok_and(|v| v != c_in.to_string()) {
            continue;
        }
        if !direct::suits(&g) {
            println!("{g:?}: the direct form does not run here");
            continue;
        }
        let x: Vec<f32> = (0..g.n * c_in * hw * hw).map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0).collect();
        let w: Vec<f32> = (0..c_out * c_in * 9).map(|i| ((i * 104729 % 1000) as f32) / 5000.0 - 0.1).collect();
        let dy: Vec<f32> = (0..g.n * c_out * hw * hw).map(|i| ((i * 31 % 1000) as f32) / 500.0 - 1.0).collect();
        let flop = 2.0 * (g.n * c_out * c_in * 9 * hw * hw) as f64;
        let time = |f: &dyn Fn() -> Vec<f32>| {
            median(
                (0..reps)
                    .map(|_| {
                        let t0 = Instant::now();
                        std::hint::black_box(f());
                        t0.elapsed().as_secs_f64()
                    })
                    .collect(),
            )
        };
        let fwd = time(&|| direct::forward(&g, &x, &w));
        let wgrad = time(&|| direct::weight_grad(&g, &x, &dy));
        println!(
            "c_in {c_in:>2} {hw:>2}x{hw:<2} c_out {c_out:>2}: forward {:6.2} ms {:5.0} GFLOP/s | weight grad {:6.2} ms {:5.0} GFLOP/s",
            fwd * 1e3,
            flop / fwd / 1e9,
            wgrad * 1e3,
            flop / wgrad / 1e9
        );
        for tile in Tile::ALL {
            let k = winograd::kernel_transform(&g, tile, &w);
            let fwd = time(&|| winograd::forward(&g, &x, &k));
            let igrad = time(&|| winograd::input_grad(&g, tile, Some(&k), &w, &dy));
            let wgrad = time(&|| winograd::weight_grad(&g, tile, &x, &dy));
            // Both gradients in one pass (the output gradient spread once), beside their sum.
            let both = time(&|| winograd::backward(&g, tile, Some(&k), &w, &x, normwd::kernels::conv::OutGrad::Given(&dy)).1);
            println!(
                "    {:10}: forward {:6.2} ms {:5.0} GFLOP/s equiv | input grad {:6.2} ms | weight grad {:6.2} ms {:5.0} GFLOP/s equiv | both fused {:6.2} ms",
                tile.name(),
                fwd * 1e3,
                flop / fwd / 1e9,
                igrad * 1e3,
                wgrad * 1e3,
                flop / wgrad / 1e9,
                both * 1e3
            );
        }
    }
}
