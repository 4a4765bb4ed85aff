//! The float32 error of each convolution algorithm against a float64 computation, per stride-1
//! 3x3 layer of ResNet-20 and the ConvNet: the forward, the input gradient and the weight
//! gradient of the direct forms, Winograd F(2x2, 3x3) and F(4x4, 3x3). Values at training
//! scale: inputs N(0, 1) (what a batch norm hands on), He-initialized weights N(0, 2 / (9 c_in)),
//! output gradients N(0, 1). Errors are relative: the largest absolute error over the largest
//! absolute value ("max"), and the root-mean-square error over the root-mean-square value
//! ("rms"), each the worst of 3 seeds. Run:
//! `cargo run --release --example winograd_error`.

use normwd::kernels::conv::choice::Algo;
use normwd::kernels::conv::{forward_with, input_grad_with, weight_grad_with, Geometry};

/// `len` values N(0, sd^2) from a fixed generator (splitmix64 and Box-Muller).
fn normal(len: usize, sd: f64, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut uniform = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..len)
        .map(|_| {
            let (u, v) = (uniform().max(1e-300), uniform());
            (sd * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
        })
        .collect()
}

/// The three parts in float64, directly from the definition (cross-correlation, zero padding).
fn reference(g: &Geometry, x: &[f32], w: &[f32], dy: &[f32]) -> [Vec<f64>; 3] {
    let (ho, wo) = (g.h_out(), g.w_out());
    let mut y = vec![0f64; g.n * g.c_out * ho * wo];
    let mut dx = vec![0f64; g.n * g.c_in * g.h * g.w];
    let mut dw = vec![0f64; g.c_out * g.c_in * 9];
    for n in 0..g.n {
        for co in 0..g.c_out {
            for oy in 0..ho {
                for ox in 0..wo {
                    let o = ((n * g.c_out + co) * ho + oy) * wo + ox;
                    let d = dy[o] as f64;
                    let mut acc = 0f64;
                    for ci in 0..g.c_in {
                        for ky in 0..3 {
                            let Some(iy) = (oy + ky).checked_sub(g.pad).filter(|&v| v < g.h) else { continue };
                            for kx in 0..3 {
                                let Some(ix) = (ox + kx).checked_sub(g.pad).filter(|&v| v < g.w) else { continue };
                                let (xi, wi) = (((n * g.c_in + ci) * g.h + iy) * g.w + ix, ((co * g.c_in + ci) * 3 + ky) * 3 + kx);
                                acc += x[xi] as f64 * w[wi] as f64;
                                dx[xi] += d * w[wi] as f64;
                                dw[wi] += d * x[xi] as f64;
                            }
                        }
                    }
                    y[o] = acc;
                }
            }
        }
    }
    [y, dx, dw]
}

/// `(max, rms)` relative errors of `got` against `want`.
fn errors(want: &[f64], got: &[f32]) -> (f64, f64) {
    let (mut err_max, mut ref_max, mut err_sq, mut ref_sq) = (0f64, 0f64, 0f64, 0f64);
    for (&a, &b) in want.iter().zip(got) {
        let e = (a - b as f64).abs();
        err_max = err_max.max(e);
        ref_max = ref_max.max(a.abs());
        err_sq += e * e;
        ref_sq += a * a;
    }
    (err_max / ref_max, (err_sq / ref_sq).sqrt())
}

fn main() {
    let layers = [
        ("resnet20 stem", 3, 32, 16),
        ("resnet20 stage 1", 16, 32, 16),
        ("resnet20 stage 2", 32, 16, 32),
        ("resnet20 stage 3", 64, 8, 64),
        ("convnet conv1", 1, 28, 32),
        ("convnet conv2", 32, 14, 64),
        ("convnet conv3", 64, 7, 128),
    ];
    println!("| layer | geometry | algorithm | forward max / rms | input gradient max / rms | weight gradient max / rms |");
    println!("|---|---|---|---|---|---|");
    for (name, c_in, hw, c_out) in layers {
        let g = Geometry { n: 8, c_in, h: hw, w: hw, c_out, k: 3, stride: 1, pad: 1 };
        let mut worst = [[(0f64, 0f64); 3]; 3];
        for seed in 0..3 {
            let x = normal(g.n * c_in * hw * hw, 1.0, 3 * seed + 1);
            let w = normal(c_out * c_in * 9, (2.0 / (9 * c_in) as f64).sqrt(), 3 * seed + 2);
            let dy = normal(g.n * c_out * hw * hw, 1.0, 3 * seed + 3);
            let want = reference(&g, &x, &w, &dy);
            for (i, a) in Algo::ALL.into_iter().enumerate() {
                let got = [forward_with(&g, a, &x, &w, None), input_grad_with(&g, a, &w, None, &dy), weight_grad_with(&g, a, &x, &dy)];
                for (part, (r, o)) in want.iter().zip(&got).enumerate() {
                    let (m, s) = errors(r, o);
                    let cell = &mut worst[i][part];
                    *cell = (cell.0.max(m), cell.1.max(s));
                }
            }
        }
        for (i, a) in Algo::ALL.into_iter().enumerate() {
            let cells: Vec<String> = worst[i].iter().map(|(m, s)| format!("{m:.1e} / {s:.1e}")).collect();
            println!("| {name} | {c_in}->{c_out} {hw}x{hw} | {} | {} |", a.name(), cells.join(" | "));
        }
    }
}
