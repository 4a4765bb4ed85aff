//! Training with normwd's CPU kernels against training with burn's ops, on every built-in
//! model: the same network and batch must give the same loss and parameter gradients, and the
//! same seed the same first training steps. One file (its own process) because it switches the
//! kernels off for the whole process.

use burn::tensor::{Device, Int, Tensor, TensorData};
use normwd::bench::train_throughput;
use normwd::check::loss_and_grads;
use normwd::kernels;
use normwd::model::{ModelKind, Net, NormKind};

const MODELS: [(ModelKind, [usize; 3]); 3] =
    [(ModelKind::Mlp, [1, 28, 28]), (ModelKind::Convnet, [1, 28, 28]), (ModelKind::Resnet20, [3, 32, 32])];

fn batch(shape: [usize; 3], n: usize, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let mut s = 12345u64;
    let mut next = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let x: Vec<f32> = (0..n * shape.iter().product::<usize>()).map(|_| next() * 4.0 - 2.0).collect();
    let y: Vec<i32> = (0..n).map(|_| (next() * 10.0) as i32 % 10).collect();
    (Tensor::from_data(TensorData::new(x, [n, shape[0], shape[1], shape[2]]), device), Tensor::from_data(TensorData::new(y, [n]), device))
}

fn relative_distance(a: &[f32], b: &[f32]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (diff / norm.max(1e-30)).sqrt()
}

/// Held by the tests that set process-wide switches (the kernels, the convolution algorithm),
/// so they do not change them under each other.
static SWITCHES: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn kernels_match_burns_ops_on_whole_models() {
    let _switches = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    // The direct forms: Winograd's rounding is compared with theirs below.
    normwd::kernels::conv::choice::force(Some(normwd::kernels::conv::choice::Algo::Direct));
    let device = Device::flex().autodiff();
    for (model, shape) in MODELS {
        let net = Net::new(model, NormKind::Bn, shape, 0.1, 3, &device);
        let (x, y) = batch(shape, 24, &device);
        kernels::set_enabled(true);
        let (loss_k, grads_k) = loss_and_grads(&net, x.clone(), y.clone());
        kernels::set_enabled(false);
        let (loss_b, grads_b) = loss_and_grads(&net, x.clone(), y.clone());
        // How far burn's own gradients move when the input moves by 1e-6 (relative): ResNet-20's
        // deep layers sit next to ReLU kinks, where such a change flips an activation and moves
        // some gradients by ~2e-3 (measured); the other models move by ~1e-6. Which activations
        // flip depends on the direction of the change, so both directions are taken and the larger
        // move counts (one direction alone put a rounding change of the batch-norm sums 0.4% over
        // three times its move).
        let (_, grads_p) = loss_and_grads(&net, x.clone().mul_scalar(1.0 + 1e-6), y.clone());
        let (_, grads_m) = loss_and_grads(&net, x.clone().mul_scalar(1.0 - 1e-6), y);
        kernels::set_enabled(true);
        assert!((loss_k - loss_b).abs() <= 1e-5 * loss_b.abs(), "{model:?}: loss {loss_k} with the kernels, {loss_b} with burn's ops");
        assert_eq!(grads_k.0.len(), grads_b.0.len(), "{model:?}: not the same parameters got gradients");
        for (path, gb) in &grads_b.0 {
            let d = relative_distance(&grads_k.0[path], gb);
            let noise = relative_distance(&grads_p.0[path], gb).max(relative_distance(&grads_m.0[path], gb));
            // A 1% error in one op moves every gradient before it by ~1e-2.
            let tol = (3.0 * noise).max(1e-4);
            assert!(d <= tol, "{model:?} {path}: gradients differ by {d:e} (relative L2; allowed {tol:e})");
        }

        // The first steps of the benchmark's training (SGD lr 0.1, momentum 0.9, random labels).
        // That regime amplifies last-bit differences about 3x per step (measured), so only the
        // first 4 steps are compared.
        let cpu = Device::flex();
        let ours = train_throughput(model, &cpu, 64, 0, 4, false).unwrap().losses;
        kernels::set_enabled(false);
        let burns = train_throughput(model, &cpu, 64, 0, 4, false).unwrap().losses;
        kernels::set_enabled(true);
        for (step, (a, b)) in ours.iter().zip(&burns).enumerate() {
            assert!((a - b).abs() <= 1e-3 * b.abs(), "{model:?} step {step}: loss {a} with the kernels, {b} with burn's ops");
        }
    }
}

/// Every convolution algorithm (the direct forms, Winograd F(2x2) and F(4x4) on every stride-1
/// 3x3 layer, forward and both gradients) gives the direct forms' loss and gradients. Per layer,
/// F(2x2) rounds like the direct forms (~3e-7 of float64) and F(4x4) ~10x more
/// (examples/winograd_error). Through a network that is amplified where a value sits next to a
/// ReLU kink: the ConvNet's gradients stay within 3x of what a 1e-6 change of the input moves
/// them (as above); in ResNet-20 with this seed a different last bit in stage 3 flips a kink,
/// which moves every gradient before it by ~1.6e-2 under either tile size (measured; an
/// additive 3e-7 change of the input moves them by ~2e-3, and other seeds show no flip), so
/// there the bound is that of a flipped kink, 5e-2, with the loss within 1e-5.
#[test]
fn every_convolution_algorithm_gives_the_direct_gradients() {
    use normwd::kernels::conv::choice::{self, Algo};
    let _switches = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    let device = Device::flex().autodiff();
    for (model, shape) in &MODELS[1..] {
        let net = Net::new(*model, NormKind::Bn, *shape, 0.1, 3, &device);
        let (x, y) = batch(*shape, 24, &device);
        choice::force(Some(Algo::Direct));
        let (loss_d, grads_d) = loss_and_grads(&net, x.clone(), y.clone());
        let (_, grads_p) = loss_and_grads(&net, x.clone().mul_scalar(1.0 + 1e-6), y.clone());
        for a in &Algo::ALL[1..] {
            choice::force(Some(*a));
            let (loss, grads) = loss_and_grads(&net, x.clone(), y.clone());
            assert!((loss - loss_d).abs() <= 1e-5 * loss_d.abs(), "{model:?} {a:?}: loss {loss}, direct {loss_d}");
            assert_eq!(grads.0.len(), grads_d.0.len(), "{model:?} {a:?}: not the same parameters got gradients");
            for (path, gd) in &grads_d.0 {
                let d = relative_distance(&grads.0[path], gd);
                let tol = match model {
                    ModelKind::Resnet20 => 5e-2,
                    _ => (3.0 * relative_distance(&grads_p.0[path], gd)).max(1e-4),
                };
                assert!(d <= tol, "{model:?} {a:?} {path}: gradients differ by {d:e} from the direct forms' (allowed {tol:e})");
            }
        }
        choice::force(None);
    }
}

/// A `gpt` (layer norm with QK-norm, and RMS norm) with the kernels against burn's ops: loss and
/// every gradient on one batch of token windows, then the benchmark's first AdamW steps.
#[test]
fn kernels_match_burns_ops_on_a_gpt() {
    use normwd::model::GptShape;
    let _switches = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    let device = Device::flex().autodiff();
    let ids: Vec<i32> = (0..4 * 17).map(|i| (i * 7 + i / 5) % 23).collect();
    let x = Tensor::<2, Int>::from_data(TensorData::new(ids[..4 * 16].to_vec(), [4, 16]), &device);
    let y = Tensor::<1, Int>::from_data(TensorData::new(ids[4..].to_vec(), [4 * 16]), &device);
    for (norm, qk_norm) in [(NormKind::Ln, true), (NormKind::Rms, false)] {
        let shape = GptShape { n_layer: 2, n_head: 4, n_embd: 32, block_size: 16, qk_norm, tie_embeddings: true };
        let net = Net::gpt(shape, norm, 23, 3, &device);
        kernels::set_enabled(true);
        let (loss_k, grads_k) = loss_and_grads(&net, x.clone(), y.clone());
        kernels::set_enabled(false);
        let (loss_b, grads_b) = loss_and_grads(&net, x.clone(), y.clone());
        kernels::set_enabled(true);
        assert!((loss_k - loss_b).abs() <= 1e-5 * loss_b.abs(), "{norm:?}: loss {loss_k} with the kernels, {loss_b} with burn's ops");
        assert_eq!(grads_k.0.len(), grads_b.0.len());
        // The key norm's bias has a zero gradient in exact arithmetic (a shift of every key moves
        // all of a query's scores alike, which the softmax ignores): there both sides are f32
        // noise, so differences are measured against the largest gradient, not against it.
        let l2 = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let largest = grads_b.0.values().map(|g| l2(g)).fold(0.0, f64::max);
        for (path, gb) in &grads_b.0 {
            let diff: Vec<f32> = grads_k.0[path].iter().zip(gb).map(|(a, b)| a - b).collect();
            let d = l2(&diff) / l2(gb).max(1e-3 * largest);
            assert!(d <= 1e-4, "{norm:?} {path}: gradients differ by {d:e} (relative L2)");
        }
    }
    let cpu = Device::flex();
    let ours = train_throughput(ModelKind::Gpt, &cpu, 8, 0, 4, false).unwrap().losses;
    kernels::set_enabled(false);
    let burns = train_throughput(ModelKind::Gpt, &cpu, 8, 0, 4, false).unwrap().losses;
    kernels::set_enabled(true);
    for (step, (a, b)) in ours.iter().zip(&burns).enumerate() {
        assert!((a - b).abs() <= 1e-4 * b.abs(), "gpt step {step}: loss {a} with the kernels, {b} with burn's ops");
    }
}

/// A tensor's values as bits, for exact comparisons.
fn bits<const D: usize>(t: Tensor<D>) -> Vec<u32> {
    t.into_data().try_to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// The convolution + batch norm + ReLU op (ResNet-20's layers) gives the bits of the separate
/// ops it replaces, output and every gradient, with and without a shortcut, for each convolution
/// algorithm: it runs the same kernels in the same order, only taking the batch statistics'
/// per-row moments from the convolution's output while it is in cache.
#[test]
fn fused_convolution_and_batch_norm_give_the_separate_ops_bits() {
    use normwd::kernels::conv::choice::{self, Algo};
    let _switches = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    let device = Device::flex().autodiff();
    let t = |shape: [usize; 4], seed: u64| {
        let mut s = seed;
        let v: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 0.8
            })
            .collect();
        Tensor::<4>::from_data(TensorData::new(v, shape), &device).require_grad()
    };
    // [n, c_in, h, w], c_out, stride: a stage-1-like layer and a downsampling one.
    for (xs, c_out, stride) in [([5usize, 16, 12, 10], 16usize, 1usize), ([4, 16, 9, 8], 32, 2)] {
        for a in Algo::ALL {
            choice::force(Some(a));
            let (h, w) = ((xs[2] - 1) / stride + 1, (xs[3] - 1) / stride + 1);
            for with_shortcut in [false, true] {
                let run = |fused: bool| {
                    let (x, wt) = (t(xs, 1), t([c_out, xs[1], 3, 3], 2).mul_scalar(0.2).detach().require_grad());
                    let gamma = Tensor::<1>::from_floats([0.5, -0.3, 1.2, 0.8].repeat(c_out / 4).as_slice(), &device).require_grad();
                    let beta = Tensor::<1>::from_floats([0.1, 0.2, -0.1, 0.0].repeat(c_out / 4).as_slice(), &device).require_grad();
                    let short = with_shortcut.then(|| t([xs[0], c_out, h, w], 3));
                    let (y, mean, var) = if fused {
                        kernels::conv_bn_relu(x.clone(), wt.clone(), gamma.clone(), beta.clone(), short.clone(), stride, 1, 1e-5)
                    } else {
                        let c = kernels::conv2d(x.clone(), wt.clone(), stride, 1);
                        match short.clone() {
                            Some(s) => kernels::bn_add_relu(c, gamma.clone(), beta.clone(), s, 1e-5),
                            None => kernels::batch_norm_train(c, gamma.clone(), beta.clone(), 1e-5, true),
                        }
                    };
                    let grads = y.clone().mul(t(y.dims(), 4).detach()).sum().backward();
                    let mut out = vec![bits(y), bits(mean), bits(var)];
                    out.extend([x.grad(&grads), wt.grad(&grads)].map(|g| bits(g.unwrap())));
                    out.extend([gamma.grad(&grads), beta.grad(&grads)].map(|g| bits(g.unwrap())));
                    if let Some(s) = short {
                        out.push(bits(s.grad(&grads).unwrap()));
                    }
                    out
                };
                let names = ["output", "mean", "variance", "dx", "dweight", "dgamma", "dbeta", "dshortcut"];
                for ((f, s), name) in run(true).iter().zip(run(false)).zip(names) {
                    assert!(*f == s, "{a:?} {xs:?} stride {stride} shortcut {with_shortcut}: {name} differs from the separate ops'");
                }
            }
        }
    }
    choice::force(None);
}
