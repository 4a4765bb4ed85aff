//! normwd's CPU kernels against burn's own ops: outputs and every gradient, on odd shapes
//! (sizes not multiples of the vector width, strides 1 and 2, padding 0 and 1).

use burn::tensor::module::{batch_norm_train, conv2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor};
use normwd::kernels;

/// Deterministic values in [-1.5, 2.5) (an offset mean, as real activations have).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 1.5
        })
        .collect()
}

fn tensor<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let n = shape.iter().product();
    Tensor::<1>::from_floats(values(n, seed).as_slice(), device).reshape(shape)
}

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    a.sub(b).abs().max().into_scalar::<f32>()
}

fn assert_close<const D: usize>(what: &str, ours: Tensor<D>, burns: Tensor<D>, tol: f32) {
    let scale = burns.clone().abs().max().into_scalar::<f32>().max(1.0);
    let diff = max_abs_diff(ours, burns);
    assert!(diff <= tol * scale, "{what}: max |ours - burn| = {diff:e} > {tol:e} * {scale}");
}

/// A tracked normalization input with its gamma (around 0.5, never all-positive) and beta.
fn norm_inputs<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    let c = shape[1];
    let x = tensor(shape, seed, device).require_grad();
    let gamma = tensor([c], seed + 1, device).add_scalar(0.5).require_grad();
    let beta = tensor([c], seed + 2, device).require_grad();
    (x, gamma, beta)
}

/// One normalization run's results: output, batch statistics and the gradients of x, gamma, beta.
struct NormRun<const D: usize> {
    y: Tensor<D>,
    mean: Tensor<1>,
    var: Tensor<1>,
    dx: Tensor<D>,
    dgamma: Tensor<1>,
    dbeta: Tensor<1>,
}

impl<const D: usize> NormRun<D> {
    fn new(
        y: Tensor<D>,
        (mean, var): (Tensor<1>, Tensor<1>),
        grads: &burn::tensor::Gradients,
        (x, g, b): (&Tensor<D>, &Tensor<1>, &Tensor<1>),
    ) -> Self {
        NormRun { y, mean, var, dx: x.grad(grads).unwrap(), dgamma: g.grad(grads).unwrap(), dbeta: b.grad(grads).unwrap() }
    }

    /// Asserts that every result is within `tol` (relative to burn's largest value) of burn's.
    fn assert_close_to(self, burns: NormRun<D>, what: &str, tol: f32) {
        assert_close(&format!("{what}: output"), self.y, burns.y, tol);
        assert_close(&format!("{what}: mean"), self.mean, burns.mean, tol);
        assert_close(&format!("{what}: variance"), self.var, burns.var, tol);
        assert_close(&format!("{what}: dx"), self.dx, burns.dx, tol);
        assert_close(&format!("{what}: dgamma"), self.dgamma, burns.dgamma, tol);
        assert_close(&format!("{what}: dbeta"), self.dbeta, burns.dbeta, tol);
    }
}

fn check_batch_norm<const D: usize>(shape: [usize; D], relu: bool) {
    let device = Device::flex().autodiff();
    let make = || norm_inputs(shape, 1, &device);
    let weights = tensor(shape, 4, &device);
    assert!(kernels::applies(&weights));

    let (x1, g1, b1) = make();
    let (y1, mean1, var1) = kernels::batch_norm_train(x1.clone(), g1.clone(), b1.clone(), 1e-5, relu);
    let grads1 = y1.clone().mul(weights.clone()).sum().backward();

    let (x2, g2, b2) = make();
    let out = batch_norm_train(x2.clone(), g2.clone(), b2.clone(), 1e-5);
    let output = if relu { burn::tensor::activation::relu(out.output) } else { out.output };
    let grads2 = output.clone().mul(weights).sum().backward();

    let ours = NormRun::new(y1, (mean1, var1), &grads1, (&x1, &g1, &b1));
    let burns = NormRun::new(output, (out.mean, out.variance), &grads2, (&x2, &g2, &b2));
    ours.assert_close_to(burns, &format!("batch norm {shape:?}, relu {relu}"), 2e-5);
}

#[test]
fn batch_norm_matches_burn_on_dense_and_conv_shapes() {
    check_batch_norm([7, 5], false);
    check_batch_norm([4, 3, 5, 7], false);
    check_batch_norm([3, 17, 9, 9], false);
}

#[test]
fn batch_norm_with_fused_relu_matches_burn_batch_norm_then_relu() {
    check_batch_norm([7, 5], true);
    check_batch_norm([3, 17, 9, 9], true);
}

fn check_conv(x_shape: [usize; 4], c_out: usize, k: usize, stride: usize, padding: usize) {
    let device = Device::flex().autodiff();
    let make = || (tensor(x_shape, 5, &device).require_grad(), tensor([c_out, x_shape[1], k, k], 6, &device).require_grad());
    let (x1, w1) = make();
    let y1 = kernels::conv2d(x1.clone(), w1.clone(), stride, padding);
    let out_weights = tensor(y1.dims(), 7, &device);
    let grads1 = y1.clone().mul(out_weights.clone()).sum().backward();

    let (x2, w2) = make();
    let y2 = conv2d(x2.clone(), w2.clone(), None, ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1));
    let grads2 = y2.clone().mul(out_weights).sum().backward();

    let what = format!("conv {x_shape:?} -> {c_out}, k {k}, stride {stride}, pad {padding}");
    let tol = 2e-5;
    assert_close(&format!("{what}: output"), y1, y2, tol);
    assert_close(&format!("{what}: dx"), x1.grad(&grads1).unwrap(), x2.grad(&grads2).unwrap(), tol);
    assert_close(&format!("{what}: dweight"), w1.grad(&grads1).unwrap(), w2.grad(&grads2).unwrap(), tol);
}

#[test]
fn conv2d_matches_burn_for_strides_and_paddings() {
    check_conv([3, 2, 7, 9], 4, 3, 1, 1);
    check_conv([11, 3, 8, 8], 5, 3, 2, 1);
    check_conv([2, 4, 6, 5], 3, 3, 1, 0);
    check_conv([5, 3, 7, 7], 2, 1, 2, 0);
    // More samples than one GEMM chunk (16), with a remainder.
    check_conv([19, 2, 5, 5], 3, 3, 1, 1);
    // "Same" convolutions, whose taps im2col and col2im move in one copy each: k 5, k 1.
    check_conv([2, 3, 6, 7], 4, 5, 1, 2);
    check_conv([3, 4, 5, 6], 2, 1, 1, 0);
}

#[test]
fn kernels_run_untracked_for_evaluation() {
    let device = Device::flex();
    let x = tensor([2, 3, 6, 6], 8, &device);
    let w = tensor([4, 3, 3, 3], 9, &device);
    assert!(kernels::applies(&x));
    let ours = kernels::conv2d(x.clone(), w.clone(), 1, 1);
    let burns = conv2d(x, w, None, ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
    assert_close("untracked conv", ours, burns, 2e-5);
}

#[test]
fn kernel_results_do_not_depend_on_thread_count() {
    // `[n, c_in, h, w]` and `c_out`: im2col (6 output channels), then the direct form's two walks
    // (8x8 spread over its padded positions; 32x32 rows of whole vectors, the weight gradient in
    // three chunks of samples x two blocks of channels).
    for (shape, c_out) in [([21, 3, 8, 8], 6), ([21, 8, 8, 8], 8), ([9, 8, 32, 32], 16)] {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let device = Device::flex().autodiff();
                let x = tensor(shape, 10, &device).require_grad();
                let w = tensor([c_out, shape[1], 3, 3], 11, &device).require_grad();
                let g = tensor([c_out], 12, &device).require_grad();
                let b = tensor([c_out], 13, &device).require_grad();
                let (y, _, _) = kernels::batch_norm_train(kernels::conv2d(x.clone(), w.clone(), 1, 1), g, b, 1e-5, true);
                let grads = y.powi_scalar(2).sum().backward();
                (
                    x.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap(),
                    w.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap(),
                )
            })
        };
        assert!(run(1) == run(3), "{shape:?} -> {c_out}: gradients differ between 1 and 3 threads");
    }
}

fn check_max_pool(x_shape: [usize; 4], k: usize, stride: usize) {
    use burn::tensor::module::max_pool2d;
    let device = Device::flex().autodiff();
    let x1 = tensor(x_shape, 14, &device).require_grad();
    let y1 = kernels::max_pool2d(x1.clone(), k, stride);
    let out_weights = tensor(y1.dims(), 15, &device);
    let grads1 = y1.clone().mul(out_weights.clone()).sum().backward();
    let x2 = tensor(x_shape, 14, &device).require_grad();
    let y2 = max_pool2d(x2.clone(), burn::tensor::ops::MaxPoolOptions::new([k, k]).with_stride([stride, stride]));
    let grads2 = y2.clone().mul(out_weights).sum().backward();
    let what = format!("max pool {x_shape:?}, k {k}, stride {stride}");
    assert_close(&format!("{what}: output"), y1, y2, 0.0);
    assert_close(&format!("{what}: dx"), x1.grad(&grads1).unwrap(), x2.grad(&grads2).unwrap(), 0.0);
}

#[test]
fn max_pool_matches_burn() {
    check_max_pool([3, 4, 8, 8], 2, 2);
    check_max_pool([2, 3, 7, 9], 2, 2);
    check_max_pool([2, 3, 7, 7], 3, 2);
    check_max_pool([2, 5, 9, 8], 1, 2);
}

#[test]
fn ops_match_burn_at_resnet20_sizes() {
    check_conv([24, 32, 16, 16], 64, 3, 2, 1);
    check_conv([24, 16, 32, 32], 32, 3, 2, 1);
    check_max_pool([24, 32, 16, 16], 1, 2);
    check_batch_norm([24, 64, 8, 8], true);
    check_batch_norm([24, 64, 8, 8], false);
    check_conv([24, 64, 8, 8], 64, 3, 1, 1);
    // The 3x3 "same" layers take the direct form on CPUs with AVX2 or AVX-512
    // (src/kernels/conv/direct.rs), a stride-1 layer without padding the shifted one.
    check_conv([6, 16, 32, 32], 16, 3, 1, 1);
    check_conv([5, 32, 16, 16], 32, 3, 1, 1);
    check_conv([3, 8, 20, 17], 8, 3, 1, 0);
}

#[test]
fn conv_matches_burn_at_convnet_sizes() {
    // Planes whose rows are no whole number of vectors: the direct form runs along the padded
    // positions and crops.
    check_conv([4, 1, 28, 28], 32, 3, 1, 1);
    check_conv([3, 32, 14, 14], 64, 3, 1, 1);
    check_conv([3, 64, 7, 7], 128, 3, 1, 1);
}

fn check_bn_relu_pool(shape: [usize; 4]) {
    use burn::tensor::module::max_pool2d;
    use burn::tensor::ops::MaxPoolOptions;
    let device = Device::flex().autodiff();
    let make = || norm_inputs(shape, 16, &device);
    let (x1, g1, b1) = make();
    let (y1, mean1, var1) = kernels::bn_relu_pool(x1.clone(), g1.clone(), b1.clone(), 1e-5);
    let weights = tensor(y1.dims(), 19, &device);
    let grads1 = y1.clone().mul(weights.clone()).sum().backward();

    let (x2, g2, b2) = make();
    let out = batch_norm_train(x2.clone(), g2.clone(), b2.clone(), 1e-5);
    let y2 = max_pool2d(burn::tensor::activation::relu(out.output), MaxPoolOptions::new([2, 2]).with_stride([2, 2]));
    let grads2 = y2.clone().mul(weights).sum().backward();

    let ours = NormRun::new(y1, (mean1, var1), &grads1, (&x1, &g1, &b1));
    let burns = NormRun::new(y2, (out.mean, out.variance), &grads2, (&x2, &g2, &b2));
    ours.assert_close_to(burns, &format!("bn+relu+pool {shape:?}"), 2e-5);
}

#[test]
fn fused_batch_norm_relu_pool_matches_burns_three_ops() {
    check_bn_relu_pool([4, 3, 8, 8]);
    // Odd sides: the last row and column are normalized but not pooled.
    check_bn_relu_pool([3, 5, 7, 9]);
    check_bn_relu_pool([2, 17, 28, 28]);
}

fn check_bn_add_relu(shape: [usize; 4]) {
    let device = Device::flex().autodiff();
    let make = || {
        let (x, g, b) = norm_inputs(shape, 30, &device);
        (x, g, b, tensor(shape, 33, &device).require_grad())
    };
    let weights = tensor(shape, 34, &device);
    let (x1, g1, b1, s1) = make();
    let (y1, mean1, var1) = kernels::bn_add_relu(x1.clone(), g1.clone(), b1.clone(), s1.clone(), 1e-5);
    let grads1 = y1.clone().mul(weights.clone()).sum().backward();

    let (x2, g2, b2, s2) = make();
    let out = batch_norm_train(x2.clone(), g2.clone(), b2.clone(), 1e-5);
    let y2 = burn::tensor::activation::relu(out.output.add(s2.clone()));
    let grads2 = y2.clone().mul(weights).sum().backward();

    let what = format!("bn+add+relu {shape:?}");
    assert_close(&format!("{what}: dshortcut"), s1.grad(&grads1).unwrap(), s2.grad(&grads2).unwrap(), 2e-5);
    let ours = NormRun::new(y1, (mean1, var1), &grads1, (&x1, &g1, &b1));
    let burns = NormRun::new(y2, (out.mean, out.variance), &grads2, (&x2, &g2, &b2));
    ours.assert_close_to(burns, &what, 2e-5);
}

#[test]
fn fused_batch_norm_add_relu_matches_burns_three_ops() {
    check_bn_add_relu([4, 3, 8, 8]);
    check_bn_add_relu([3, 17, 7, 9]);
    check_bn_add_relu([6, 16, 32, 32]);
}

#[test]
fn batch_norm_on_a_channel_major_dense_input_matches_burn() {
    // A Dense layer's output is the transpose of a contiguous [c, n] matrix; the kernel then works
    // on channel rows in place.
    let device = Device::flex().autodiff();
    let (n, c) = (9, 6);
    for relu in [false, true] {
        let run = |ours: bool| {
            let leaf = tensor([c, n], 20, &device).require_grad();
            let (_, gamma, beta) = norm_inputs([n, c], 20, &device);
            let x: Tensor<2> = leaf.clone().transpose();
            let y = if ours {
                kernels::batch_norm_train(x, gamma.clone(), beta.clone(), 1e-5, relu).0
            } else {
                let y = batch_norm_train(x, gamma.clone(), beta.clone(), 1e-5).output;
                if relu {
                    burn::tensor::activation::relu(y)
                } else {
                    y
                }
            };
            let grads = y.clone().mul(tensor([n, c], 21, &device)).sum().backward();
            (y, leaf.grad(&grads).unwrap(), gamma.grad(&grads).unwrap(), beta.grad(&grads).unwrap())
        };
        let (a, b) = (run(true), run(false));
        assert_close("output", a.0, b.0, 2e-5);
        assert_close("dx", a.1, b.1, 2e-5);
        assert_close("dgamma", a.2, b.2, 2e-5);
        assert_close("dbeta", a.3, b.3, 2e-5);
    }
}

/// The linear kernel against burn's matmul: output and both gradients, for a contiguous input
/// and a channel-major one (as a batch-normalized layer hands it on), small and large products
/// (one thread and the pool), and an output gradient that is itself channel-major.
fn check_linear(n: usize, d_in: usize, d_out: usize, channel_major: bool) {
    let device = Device::flex().autodiff();
    let make = || {
        let x = if channel_major { tensor([d_in, n], 11, &device).transpose() } else { tensor([n, d_in], 11, &device) };
        (x.require_grad(), tensor([d_out, d_in], 12, &device).require_grad())
    };
    let out_weights = tensor([d_out, n], 13, &device).transpose();
    let (x2, w2) = make();
    let y2 = x2.clone().matmul(w2.clone().transpose());
    let grads2 = y2.clone().mul(out_weights.clone()).sum().backward();
    // Both output layouts: channel-major (for batch norm) and row-major (for the transformer).
    for (layout, kernel) in [("channel-major", kernels::linear as fn(_, _) -> _), ("row-major", kernels::linear_rows)] {
        let (x1, w1) = make();
        let y1 = kernel(x1.clone(), w1.clone());
        let grads1 = y1.clone().mul(out_weights.clone()).sum().backward();
        let what = format!("linear {n}x{d_in} -> {d_out} ({layout} output), channel-major input {channel_major}");
        assert_close(&format!("{what}: output"), y1, y2.clone(), 2e-5);
        assert_close(&format!("{what}: dx"), x1.grad(&grads1).unwrap(), x2.grad(&grads2).unwrap(), 2e-5);
        assert_close(&format!("{what}: dw"), w1.grad(&grads1).unwrap(), w2.grad(&grads2).unwrap(), 2e-5);
    }
}

#[test]
fn linear_matches_burn() {
    for cm in [false, true] {
        check_linear(7, 5, 3, cm);
        check_linear(128, 512, 10, cm);
        check_linear(128, 784, 512, cm);
    }
}

/// GELU against burn's: output and gradient, on a contiguous input and a channel-major one (a
/// linear layer's output) with a gradient in the other layout.
#[test]
fn gelu_matches_burn() {
    let device = Device::flex().autodiff();
    for (n, c, channel_major) in [(7, 5, false), (129, 67, true), (64, 512, true)] {
        let make = || {
            let x = if channel_major { tensor([c, n], 21, &device).transpose() } else { tensor([n, c], 21, &device) };
            x.mul_scalar(2.0).require_grad()
        };
        let w = tensor([n, c], 22, &device);
        let (x1, x2) = (make(), make());
        let y1 = kernels::gelu(x1.clone());
        let g1 = y1.clone().mul(w.clone()).sum().backward();
        let y2 = burn::tensor::activation::gelu(x2.clone());
        let g2 = y2.clone().mul(w.clone()).sum().backward();
        let what = format!("gelu [{n}, {c}], channel-major {channel_major}");
        assert_close(&format!("{what}: output"), y1, y2, 1e-6);
        assert_close(&format!("{what}: dx"), x1.grad(&g1).unwrap(), x2.grad(&g2).unwrap(), 2e-6);
    }
}

/// Layer norm and RMS norm over the last dimension against burn's ops: output and the
/// gradients of input, weight and bias, on odd widths and a channel-major input.
#[test]
fn feature_norms_match_burn() {
    let device = Device::flex().autodiff();
    for (n, c, channel_major) in [(5, 3, false), (130, 67, false), (96, 128, true)] {
        for rms in [false, true] {
            let make = || {
                let x = if channel_major { tensor([c, n], 31, &device).transpose() } else { tensor([n, c], 31, &device) };
                (x.require_grad(), tensor([c], 32, &device).add_scalar(0.5).require_grad(), tensor([c], 33, &device).require_grad())
            };
            let w = tensor([n, c], 34, &device);
            let (x1, g1, b1) = make();
            let y1 = kernels::feature_norm(x1.clone(), g1.clone(), (!rms).then(|| b1.clone()), 1e-5);
            let gr1 = y1.clone().mul(w.clone()).sum().backward();
            let (x2, g2, b2) = make();
            let y2 = if rms {
                let ms = x2.clone().powi_scalar(2).mean_dim(1);
                x2.clone().div(ms.add_scalar(1e-5).sqrt()).mul(g2.clone().unsqueeze_dim(0))
            } else {
                burn::tensor::module::layer_norm(x2.clone(), g2.clone(), Some(b2.clone()), 1e-5)
            };
            let gr2 = y2.clone().mul(w.clone()).sum().backward();
            let what = format!("{} [{n}, {c}], channel-major {channel_major}", if rms { "rms norm" } else { "layer norm" });
            assert_close(&format!("{what}: output"), y1, y2, 2e-5);
            assert_close(&format!("{what}: dx"), x1.grad(&gr1).unwrap(), x2.grad(&gr2).unwrap(), 2e-5);
            assert_close(&format!("{what}: dweight"), g1.grad(&gr1).unwrap(), g2.grad(&gr2).unwrap(), 2e-5);
            if !rms {
                assert_close(&format!("{what}: dbias"), b1.grad(&gr1).unwrap(), b2.grad(&gr2).unwrap(), 2e-5);
            }
        }
    }
}

/// Causal attention against burn's `attention` op (with `is_causal`): output and the gradients
/// of queries, keys and values, for one and several heads, odd lengths and channel-major inputs.
#[test]
fn causal_attention_matches_burn() {
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;
    let device = Device::flex().autodiff();
    for (batch, seq, heads, head_dim, channel_major) in [(1, 1, 1, 4, false), (2, 7, 3, 5, false), (3, 33, 4, 16, true)] {
        let (n, c) = (batch * seq, heads * head_dim);
        let make = |seed| {
            let x = if channel_major { tensor([c, n], seed, &device).transpose() } else { tensor([n, c], seed, &device) };
            x.require_grad()
        };
        let w = tensor([n, c], 44, &device);
        let (q1, k1, v1) = (make(41), make(42), make(43));
        let y1 = kernels::causal_attention(q1.clone(), k1.clone(), v1.clone(), batch, heads);
        let gr1 = y1.clone().mul(w.clone()).sum().backward();
        let (q2, k2, v2) = (make(41), make(42), make(43));
        let split = |x: Tensor<2>| -> Tensor<4> { x.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2) };
        let opts = AttentionModuleOptions { is_causal: true, ..Default::default() };
        let y2 = attention(split(q2.clone()), split(k2.clone()), split(v2.clone()), None, None, opts).swap_dims(1, 2).reshape([n, c]);
        let gr2 = y2.clone().mul(w.clone()).sum().backward();
        let what = format!("attention {batch}x{seq}, {heads} heads of {head_dim}, channel-major {channel_major}");
        assert_close(&format!("{what}: output"), y1, y2, 2e-5);
        for (name, a, b) in [("dq", &q1, &q2), ("dk", &k1, &k2), ("dv", &v1, &v2)] {
            assert_close(&format!("{what}: {name}"), a.grad(&gr1).unwrap(), b.grad(&gr2).unwrap(), 5e-5);
        }
    }
}
