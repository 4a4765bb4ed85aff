//! The convolution + batch norm + ReLU op (`kernels::conv_bn_relu`, a residual block's end with
//! its shortcut) against the separate ops it replaces (`kernels::conv2d`, then
//! `kernels::bn_add_relu`): median forward + backward time of each on ResNet-20's three stage
//! geometries (batch 128), the two run alternately in one process so that the host's drift
//! falls on both. Run: `RAYON_NUM_THREADS=2 cargo run --release --example conv_bn_parts`.

use burn::tensor::{Device, Tensor, TensorData};
use normwd::kernels;
use std::time::Instant;
fn med(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2] * 1e3
}
fn main() {
    // The `normwd` program's allocator settings: without them every large buffer comes back as
    // fresh pages, and page faults showed up as a third of the MLP's backward.
    // SAFETY: no thread has started yet.
    unsafe { normwd::env::tune_allocator() };
    let device = Device::flex().autodiff();
    for (c, hw) in [(16usize, 32usize), (32, 16), (64, 8)] {
        let t = |shape: [usize; 4], seed: u64| {
            let mut s = seed;
            let v: Vec<f32> = (0..shape.iter().product::<usize>())
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 0.8
                })
                .collect();
            Tensor::<4>::from_data(TensorData::new(v, shape), &device)
        };
        let x = t([128, c, hw, hw], 1).require_grad();
        let w = t([c, c, 3, 3], 2).mul_scalar(0.1).require_grad();
        let gamma = Tensor::<1>::ones([c], &device).require_grad();
        let beta = Tensor::<1>::zeros([c], &device).require_grad();
        let short = t([128, c, hw, hw], 3).require_grad();
        let up = t([128, c, hw, hw], 4);
        let (mut tf, mut ts) = (vec![], vec![]);
        for r in 0..40 {
            for fused in [r % 2 == 0, r % 2 == 1] {
                let t0 = Instant::now();
                kernels::on_workers(|| {
                    let y = if fused {
                        kernels::conv_bn_relu(x.clone(), w.clone(), gamma.clone(), beta.clone(), Some(short.clone()), 1, 1, 1e-5).0
                    } else {
                        let cv = kernels::conv2d(x.clone(), w.clone(), 1, 1);
                        kernels::bn_add_relu(cv, gamma.clone(), beta.clone(), short.clone(), 1e-5).0
                    };
                    let g = y.mul(up.clone()).sum().backward();
                    std::hint::black_box(x.grad(&g));
                });
                let e = t0.elapsed().as_secs_f64();
                if r >= 4 {
                    if fused {
                        tf.push(e)
                    } else {
                        ts.push(e)
                    }
                }
            }
        }
        println!("c {c} {hw}x{hw}: separate {:.2} ms  fused {:.2} ms", med(ts), med(tf));
    }
}
