//! Hand-written CPU kernels for the training ops where burn flex's generic implementations
//! cost most (PERFORMANCE.md has the profiles): batch norm in training mode (alone, with a ReLU,
//! with a residual sum and a ReLU, or with a ReLU and 2x2 max pooling), the 2-D convolution (also
//! as one op with the batch norm and ReLU after it, ResNet-20's layers) and max pooling, and for
//! the transformer causal attention, layer / RMS norm and GELU, forward
//! and backward. They plug into burn through its backend-extension
//! mechanism, with the backward passes written here, and run only on the CPU (flex) device with
//! f32 data; everywhere else the models use burn's own ops ([`applies`] decides).
//! `tests/kernels.rs` checks values and gradients against burn's ops, `tests/kernels_training.rs`
//! whole models. Also here: the probes' per-row sums ([`row_sums`]) and [`on_workers`], which
//! runs a training step on the CPU pool's threads.
//!
//! May import burn and the core; nothing of the engine's other layers.

pub mod attention;
pub mod batch_norm;
pub mod bn_pool;
pub mod conv;
pub mod feature_norm;
pub mod gelu;
use normwd_core::gemm;
pub mod linear;
pub mod pool;
mod uninit;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, AutodiffBackend, Backend, Dispatch, DispatchDevice, Flex};
use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;
use std::sync::atomic::{AtomicU8, Ordering};

/// The ops normwd computes with its own kernels.
#[backend_extension(Flex, Autodiff)]
pub trait Kernels: Backend {
    /// Batch-norm training forward over dimension 1, followed by a ReLU when `relu`:
    /// `(output, batch mean, biased batch variance)`.
    fn nw_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// Square-kernel convolution without bias, groups or dilation.
    fn nw_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, stride: usize, padding: usize) -> FloatTensor<Self>;
    /// `x[n, in] @ w[out, in]^T`, stored channel-major or row-major (see [`linear`]).
    fn nw_linear(x: FloatTensor<Self>, w: FloatTensor<Self>, row_major: bool) -> FloatTensor<Self>;
    /// Max pooling over `kernel x kernel` windows, no padding.
    fn nw_max_pool2d(x: FloatTensor<Self>, kernel: usize, stride: usize) -> FloatTensor<Self>;
    /// The probes' per-row sums of an update `w -> w2` with gradient `g` (all `[rows, cols]`):
    /// `[rows, 5]` holding `||w_r||^2, ||g_r||^2, <w_r,g_r>, <w_r,w2_r>, ||w2_r||^2`, untracked.
    fn nw_row_sums(w: FloatTensor<Self>, g: FloatTensor<Self>, w2: FloatTensor<Self>) -> FloatTensor<Self>;
    /// A residual block's end in one op: `max(batch_norm_train(x) + shortcut, 0)`, the shortcut
    /// laid out like `x`: `(output, batch mean, biased batch variance)`.
    fn nw_bn_add_relu(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        shortcut: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// A convolution (as [`Kernels::nw_conv2d`]) and the training-mode batch norm of its output,
    /// then a ReLU, in one op:
    /// `(output, batch mean, biased batch variance)`. The batch statistics are taken from the
    /// convolution's output while it is still in cache instead of in another pass over memory.
    fn nw_conv_bn_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stride: usize,
        padding: usize,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// [`Kernels::nw_conv_bn_relu`] with `shortcut` added before the ReLU.
    #[allow(clippy::too_many_arguments)]
    fn nw_conv_bn_add_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        shortcut: FloatTensor<Self>,
        stride: usize,
        padding: usize,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// Exact GELU, `x * Phi(x)`.
    fn nw_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Layer norm over the last dimension of `[rows, features]`.
    fn nw_layer_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self>;
    /// RMS norm over the last dimension of `[rows, features]`.
    fn nw_rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self>;
    /// Causal self-attention of `[batch * seq, heads * head_dim]` queries, keys and values.
    fn nw_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, batch: usize, heads: usize) -> FloatTensor<Self>;
    /// Batch-norm training forward, ReLU and 2x2 stride-2 max pooling in one op:
    /// `(pooled output, batch mean, biased batch variance)`.
    fn nw_bn_relu_pool(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// Whether the kernels are used: 0 not decided yet, 1 yes, 2 no.
static ENABLED: AtomicU8 = AtomicU8::new(0);

/// Whether the models use these kernels on the CPU: yes unless turned off by [`set_enabled`] or
/// by `NORMWD_KERNELS=off` in the environment (for comparing with burn's own ops).
pub fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("NORMWD_KERNELS").map_or(true, |v| v != "off");
            ENABLED.store(if on { 1 } else { 2 }, Ordering::Relaxed);
            on
        }
        v => v == 1,
    }
}

/// Turns the kernels on or off for the whole process (models then use burn's ops).
pub fn set_enabled(on: bool) {
    ENABLED.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// True when the kernels are [`enabled`] and `x` lives on the CPU (flex) device, tracked or
/// not, and holds f32: the kernels' domain.
pub fn applies<const D: usize>(x: &Tensor<D>) -> bool {
    if !enabled() {
        return false;
    }
    let device = x.device();
    let flex = match device.as_dispatch() {
        DispatchDevice::Flex(_) => true,
        DispatchDevice::Autodiff(inner) => matches!(**inner, DispatchDevice::Flex(_)),
        #[allow(unreachable_patterns)]
        _ => false,
    };
    flex && x.dtype() == DType::F32
}

/// Batch-norm training forward with the CPU kernels, and a ReLU after it when `relu`:
/// `(output, mean, biased variance)`. Call only where [`applies`] holds.
pub fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    relu: bool,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    let (y, mean, var) =
        <Dispatch as Kernels>::nw_batch_norm(x.into_dispatch(), gamma.into_dispatch(), beta.into_dispatch(), epsilon, relu);
    (Tensor::from_dispatch(y), Tensor::from_dispatch(mean), Tensor::from_dispatch(var))
}

/// Convolution with the CPU kernels. Call only where [`applies`] holds.
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, stride: usize, padding: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as Kernels>::nw_conv2d(x.into_dispatch(), weight.into_dispatch(), stride, padding))
}

/// `relu(batch_norm_train(conv2d(x, weight)) + shortcut)` (no sum without a shortcut) with the
/// CPU kernels, one op: `(output, mean, biased variance)`. Call only where [`applies`] holds.
#[allow(clippy::too_many_arguments)]
pub fn conv_bn_relu(
    x: Tensor<4>,
    weight: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    shortcut: Option<Tensor<4>>,
    stride: usize,
    padding: usize,
    epsilon: f64,
) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
    let (x, weight, gamma, beta) = (x.into_dispatch(), weight.into_dispatch(), gamma.into_dispatch(), beta.into_dispatch());
    let (y, mean, var) = match shortcut {
        Some(s) => <Dispatch as Kernels>::nw_conv_bn_add_relu(x, weight, gamma, beta, s.into_dispatch(), stride, padding, epsilon),
        None => <Dispatch as Kernels>::nw_conv_bn_relu(x, weight, gamma, beta, stride, padding, epsilon),
    };
    (Tensor::from_dispatch(y), Tensor::from_dispatch(mean), Tensor::from_dispatch(var))
}

/// `maxpool2x2(relu(batch_norm_train(x)))` with the CPU kernels, one op:
/// `(output, mean, biased variance)`. Call only where [`applies`] holds.
pub fn bn_relu_pool(x: Tensor<4>, gamma: Tensor<1>, beta: Tensor<1>, epsilon: f64) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
    let (y, mean, var) = <Dispatch as Kernels>::nw_bn_relu_pool(x.into_dispatch(), gamma.into_dispatch(), beta.into_dispatch(), epsilon);
    (Tensor::from_dispatch(y), Tensor::from_dispatch(mean), Tensor::from_dispatch(var))
}

/// `max(batch_norm_train(x) + shortcut, 0)` with the CPU kernels, one op: `(output, mean,
/// biased variance)`. Call only where [`applies`] holds.
pub fn bn_add_relu<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    shortcut: Tensor<D>,
    epsilon: f64,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    assert_eq!(x.dims(), shortcut.dims(), "bn_add_relu: input and shortcut differ in shape");
    let (y, mean, var) = <Dispatch as Kernels>::nw_bn_add_relu(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        shortcut.into_dispatch(),
        epsilon,
    );
    (Tensor::from_dispatch(y), Tensor::from_dispatch(mean), Tensor::from_dispatch(var))
}

/// `x @ w^T` for `x[n, in]`, `w[out, in]` with the CPU kernels, stored channel-major (what the
/// batch-norm kernels read in place). Call only where [`applies`] holds.
pub fn linear(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as Kernels>::nw_linear(x.into_dispatch(), w.into_dispatch(), false))
}

/// As [`linear`], stored row-major (and its input gradient too): what row-wise ops read
/// without a copy. Call only where [`applies`] holds.
pub fn linear_rows(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as Kernels>::nw_linear(x.into_dispatch(), w.into_dispatch(), true))
}

/// Exact GELU of a `[rows, cols]` tensor with the CPU kernel. Call only where [`applies`] holds.
pub fn gelu(x: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as Kernels>::nw_gelu(x.into_dispatch()))
}

/// Layer norm (`bias` given) or RMS norm over the last dimension of `[rows, features]` with the
/// CPU kernel. Call only where [`applies`] holds.
pub fn feature_norm(x: Tensor<2>, weight: Tensor<1>, bias: Option<Tensor<1>>, epsilon: f64) -> Tensor<2> {
    Tensor::from_dispatch(match bias {
        Some(b) => <Dispatch as Kernels>::nw_layer_norm(x.into_dispatch(), weight.into_dispatch(), b.into_dispatch(), epsilon),
        None => <Dispatch as Kernels>::nw_rms_norm(x.into_dispatch(), weight.into_dispatch(), epsilon),
    })
}

/// Causal self-attention of `[batch * seq, heads * head_dim]` queries, keys and values with the
/// CPU kernel (scale `1/sqrt(head_dim)`): the output in the same layout. Call only where
/// [`applies`] holds.
pub fn causal_attention(q: Tensor<2>, k: Tensor<2>, v: Tensor<2>, batch: usize, heads: usize) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as Kernels>::nw_attention(q.into_dispatch(), k.into_dispatch(), v.into_dispatch(), batch, heads))
}

fn feature_norm_forward(x: &FlexTensor, weight: &FlexTensor, bias: Option<&FlexTensor>, epsilon: f64) -> (FlexTensor, feature_norm::Stats) {
    let (rows, c) = dims2(x, "nw_feature_norm");
    let (w, b) = (values(weight), bias.map(values));
    let (y, st) = feature_norm::forward(&values(x), c, &w, b.as_deref(), epsilon, bias.is_none());
    (flex(y, vec![rows, c]), st)
}

fn attention_shape(q: &FlexTensor, batch: usize, heads: usize) -> attention::Shape {
    let (n, c) = dims2(q, "nw_attention");
    assert!(
        batch > 0 && heads > 0 && n.is_multiple_of(batch) && c.is_multiple_of(heads),
        "nw_attention: [{n}, {c}] for {batch} sequences of {heads} heads"
    );
    attention::Shape { batch, seq: n / batch, heads, head_dim: c / heads }
}

/// A 2-D flex tensor as a strided matrix view of its storage.
fn view(t: &FlexTensor) -> gemm::Mat<'_> {
    let l = t.layout();
    assert_eq!(l.num_dims(), 2, "nw_linear: a 2-D tensor");
    gemm::Mat::strided(t.storage::<f32>(), l.start_offset(), l.strides()[0], l.strides()[1])
}

/// `(rows, cols)` of a 2-D flex tensor (`what` names the op in the message).
fn dims2(t: &FlexTensor, what: &str) -> (usize, usize) {
    let s = shape(t);
    assert_eq!(s.len(), 2, "{what}: {s:?} is not 2-D");
    (s[0], s[1])
}

/// `y = x w^T` on flex tensors: the transpose of a contiguous `[out, n]`, or row-major.
fn linear_forward(x: &FlexTensor, w: &FlexTensor, row_major: bool) -> FlexTensor {
    let ((n, d_in), (d_out, w_in)) = (dims2(x, "nw_linear"), dims2(w, "nw_linear"));
    assert_eq!(d_in, w_in, "nw_linear: input has {d_in} features, the weight {w_in}");
    if row_major {
        return flex(linear::matmul_rm(n, d_out, d_in, view(x), view(w).t()), vec![n, d_out]);
    }
    // y^T[out, n] = w[out, in] @ x^T[in, n], stored contiguous: channel-major y.
    let yt = linear::matmul_cm(n, d_out, d_in, view(x), view(w).t());
    flex(yt, vec![d_out, n]).transpose(0, 1)
}

/// Max pooling (`kernel x kernel` windows, no padding) with the CPU kernels. Call only where
/// [`applies`] holds.
pub fn max_pool2d(x: Tensor<4>, kernel: usize, stride: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as Kernels>::nw_max_pool2d(x.into_dispatch(), kernel, stride))
}

/// The probes' per-row sums (see [`Kernels::nw_row_sums`]) in one pass over the three tensors,
/// accumulated in f64, instead of ten tensor ops with full-size temporaries (which made a probed
/// MLP step 80% slower than a plain one). Call only where [`applies`] holds.
pub fn row_sums(w: &Tensor<2>, g: &Tensor<2>, w2: &Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as Kernels>::nw_row_sums(
        w.clone().into_dispatch(),
        g.clone().into_dispatch(),
        w2.clone().into_dispatch(),
    ))
}

/// Adds the probes' five terms of an update `w -> w2` with gradient `g` to `t`:
/// `||w||^2, ||g||^2, <w,g>, <w,w2>, ||w2||^2`, in f64, each a [`dot`] of its own (the slices
/// are a cache-resident block). One in-order accumulator per term was a chain of dependent f64
/// additions, ~4 cycles per element, and all five at once spilled registers: either way most
/// of what a probed MLP step cost over a plain one.
pub fn add_row_terms(t: &mut [f64; 5], w: &[f32], g: &[f32], w2: &[f32]) {
    for (t, (a, b)) in t.iter_mut().zip([(w, w), (g, g), (w, g), (w, w2), (w2, w2)]) {
        *t += dot(a, b);
    }
}

/// `sum(a_i * b_i)` in f64: element `i` in lane `i % 8`, the tail in lane 0, the lanes then
/// added in order (a fixed order for given lengths).
fn dot(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    for (&x, &y) in a8.remainder().iter().zip(b8.remainder()) {
        acc[0] += x as f64 * y as f64;
    }
    for (x, y) in a8.zip(b8) {
        for l in 0..8 {
            acc[l] += x[l] as f64 * y[l] as f64;
        }
    }
    acc.iter().sum()
}

fn row_sums_flex(w: &FlexTensor, g: &FlexTensor, w2: &FlexTensor) -> FlexTensor {
    let s = shape(w);
    assert!(s.len() == 2 && shape(g) == s && shape(w2) == s, "nw_row_sums: shapes {s:?}, {:?}, {:?}", shape(g), shape(w2));
    let (w, g, w2) = (values(w), values(g), values(w2));
    let cols = s[1].max(1);
    let sums: Vec<f32> = w
        .par_chunks(cols)
        .zip(g.par_chunks(cols))
        .zip(w2.par_chunks(cols))
        .flat_map_iter(|((a, b), c)| {
            let mut t = [0f64; 5];
            add_row_terms(&mut t, a, b, c);
            t.map(|v| v as f32)
        })
        .collect();
    flex(sums, vec![s[0], 5])
}

/// Runs `f`, a training or evaluation step, on a thread of rayon's global pool (which the CPU
/// ops split their work over) and waits for it. Called from another thread, every parallel op
/// hands its work to the pool and the caller sleeps until it is done: one wake-up per op, 25-90
/// us on this project's VM (`examples/rayon_latency.rs`), which was a third of an MLP step in
/// `normwd bench`. From a pool thread the op's halves are split without that round trip.
/// One step at a time holds the pool this way; a concurrent caller (sweep jobs, tests) runs `f`
/// on its own thread as before, so two steps are never nested on one pool thread.
pub fn on_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    static HOLDER: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let _held = match HOLDER.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return f(),
    };
    rayon::scope(|_| f())
}

/// A flex tensor whose values are one contiguous slice (a copy only when it is a strided view).
#[derive(Debug, Clone)]
struct Contiguous(FlexTensor);

impl std::ops::Deref for Contiguous {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        self.0.as_slice::<f32>().expect("a contiguous f32 tensor is a slice")
    }
}

fn values(t: &FlexTensor) -> Contiguous {
    Contiguous(if t.as_slice::<f32>().is_some() { t.clone() } else { t.to_contiguous() })
}

fn flex(data: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

fn shape(t: &FlexTensor) -> Vec<usize> {
    t.layout().shape().to_vec()
}

fn bn_dims(shape: &[usize]) -> batch_norm::Dims {
    batch_norm::Dims { n: shape[0], c: shape[1], s: shape[2..].iter().product() }
}

fn conv_geometry(x: &[usize], w: &[usize], stride: usize, padding: usize) -> conv::Geometry {
    assert!(x.len() == 4 && w.len() == 4 && x[1] == w[1] && w[2] == w[3], "nw_conv2d: input {x:?} and weight {w:?} do not fit");
    conv::Geometry { n: x[0], c_in: x[1], h: x[2], w: x[3], c_out: w[0], k: w[2], stride, pad: padding }
}

/// Forward on flex tensors; also returns the statistics the backward pass needs.
/// Whether `t` is a 2-D `[n, c]` tensor stored channel-major (the transpose of a contiguous
/// `[c, n]`), as a `Dense` layer's `(w x^T)^T` output is. Batch norm then runs on `c` rows of `n`
/// values in place: copying it to `[n, c]` first and reading channels with stride `c` made the
/// MLP's batch norm slower than burn's, which gets this layout for free from its axis swap.
fn channel_major(t: &FlexTensor) -> bool {
    let l = t.layout();
    l.num_dims() == 2 && !l.is_contiguous() && t.transpose(0, 1).as_slice::<f32>().is_some()
}

/// Runs a batch-norm kernel on `x` (and the tensors read with it, laid out like `x`) as
/// `[n, c, rest]` data, or as channel rows when `x` is [`channel_major`]; the result tensor comes
/// back in `x`'s layout.
fn in_layout<R>(
    x: &FlexTensor,
    others: &[&FlexTensor],
    f: impl FnOnce(&[f32], &[Contiguous], batch_norm::Dims) -> (Vec<f32>, R),
) -> (FlexTensor, R) {
    let s = shape(x);
    if channel_major(x) {
        let (n, c) = (s[0], s[1]);
        let rows: Vec<Contiguous> = others.iter().map(|t| values(&t.transpose(0, 1))).collect();
        let (out, r) = f(&values(&x.transpose(0, 1)), &rows, batch_norm::Dims { n: 1, c, s: n });
        return (flex(out, vec![c, n]).transpose(0, 1), r);
    }
    let dense: Vec<Contiguous> = others.iter().map(|t| values(t)).collect();
    let (out, r) = f(&values(x), &dense, bn_dims(&s));
    (flex(out, s), r)
}

fn bn_forward(x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor, epsilon: f64, relu: bool) -> (FlexTensor, batch_norm::Stats) {
    let (g, b) = (values(gamma), values(beta));
    in_layout(x, &[], |xs, _, d| batch_norm::forward(xs, d, &g, &b, epsilon, relu))
}

fn bn_add_relu_forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    shortcut: &FlexTensor,
    epsilon: f64,
) -> (FlexTensor, batch_norm::Stats) {
    let (g, b) = (values(gamma), values(beta));
    in_layout(x, &[shortcut], |xs, res, d| batch_norm::forward_add_relu(xs, &res[0], d, &g, &b, epsilon))
}

fn conv_forward(x: &FlexTensor, weight: &FlexTensor, stride: usize, padding: usize) -> (FlexTensor, conv::Prepared) {
    let g = conv_geometry(&shape(x), &shape(weight), stride, padding);
    let (y, prepared) = conv::forward_prepared(&g, &values(x), &values(weight));
    (flex(y, vec![g.n, g.c_out, g.h_out(), g.w_out()]), prepared)
}

/// What [`conv_bn_forward`] leaves for the backward pass besides the output.
#[derive(Debug, Clone)]
struct ConvBn {
    /// The convolution's output (the batch norm's input).
    conv_out: FlexTensor,
    prepared: conv::Prepared,
    stats: batch_norm::Stats,
}

/// The convolution, then batch norm and ReLU (after adding `shortcut`) on flex tensors.
fn conv_bn_forward(
    x: &FlexTensor,
    weight: &FlexTensor,
    (gamma, beta): (&FlexTensor, &FlexTensor),
    shortcut: Option<&FlexTensor>,
    (stride, padding): (usize, usize),
    epsilon: f64,
) -> (FlexTensor, ConvBn) {
    let g = conv_geometry(&shape(x), &shape(weight), stride, padding);
    let (y, prepared, rows) = conv::forward_moments(&g, &values(x), &values(weight));
    let d = conv::output_dims(&g);
    let stats = batch_norm::from_moments(&rows, d, epsilon);
    let residual = shortcut.map(values);
    let out = batch_norm::normalize(&y, d, &values(gamma), &values(beta), &stats, true, residual.as_deref());
    let dims = vec![g.n, g.c_out, g.h_out(), g.w_out()];
    (flex(out, dims.clone()), ConvBn { conv_out: flex(y, dims), prepared, stats })
}

/// [`conv_bn_forward`] untracked: `(output, mean, variance)`.
fn conv_bn_flex(
    x: &FlexTensor,
    weight: &FlexTensor,
    norm: (&FlexTensor, &FlexTensor),
    shortcut: Option<&FlexTensor>,
    conv: (usize, usize),
    epsilon: f64,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let (y, cb) = conv_bn_forward(x, weight, norm, shortcut, conv, epsilon);
    let c = cb.stats.mean.len();
    (y, flex(cb.stats.mean, vec![c]), flex(cb.stats.var, vec![c]))
}

fn pool_window(x: &[usize], kernel: usize, stride: usize) -> pool::Window {
    assert!(x.len() == 4 && stride >= 1, "nw_max_pool2d: input {x:?}, stride {stride}");
    pool::Window { planes: x[0] * x[1], h: x[2], w: x[3], k: kernel, stride }
}

fn pool_forward(x: &FlexTensor, kernel: usize, stride: usize) -> (FlexTensor, pool::Window, Vec<u8>) {
    let s = shape(x);
    let p = pool_window(&s, kernel, stride);
    let (y, winner) = pool::forward(&p, &values(x));
    (flex(y, vec![s[0], s[1], p.h_out(), p.w_out()]), p, winner)
}

/// The fused batch norm, ReLU and pooling on flex tensors: `(output, winners, statistics)`.
fn bn_pool_forward(x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor, epsilon: f64) -> (FlexTensor, Vec<u8>, batch_norm::Stats) {
    let s = shape(x);
    assert!(s.len() == 4, "nw_bn_relu_pool: input {s:?} is not NCHW");
    let map = bn_pool::Map { n: s[0], c: s[1], h: s[2], w: s[3] };
    let (y, winner, st) = bn_pool::forward(&values(x), map, &values(gamma), &values(beta), epsilon);
    (flex(y, vec![s[0], s[1], s[2] / 2, s[3] / 2]), winner, st)
}

impl Kernels for Flex {
    fn nw_gelu(x: FlexTensor) -> FlexTensor {
        in_layout(&x, &[], |x, _, _| (gelu::forward(x), ())).0
    }

    fn nw_layer_norm(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, epsilon: f64) -> FlexTensor {
        feature_norm_forward(&x, &weight, Some(&bias), epsilon).0
    }

    fn nw_rms_norm(x: FlexTensor, weight: FlexTensor, epsilon: f64) -> FlexTensor {
        feature_norm_forward(&x, &weight, None, epsilon).0
    }

    fn nw_attention(q: FlexTensor, k: FlexTensor, v: FlexTensor, batch: usize, heads: usize) -> FlexTensor {
        let s = attention_shape(&q, batch, heads);
        let (y, _) = attention::forward(&values(&q), &values(&k), &values(&v), s);
        flex(y, shape(&q))
    }

    fn nw_batch_norm(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, epsilon: f64, relu: bool) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (y, st) = bn_forward(&x, &gamma, &beta, epsilon, relu);
        let c = st.mean.len();
        (y, flex(st.mean, vec![c]), flex(st.var, vec![c]))
    }

    fn nw_conv2d(x: FlexTensor, weight: FlexTensor, stride: usize, padding: usize) -> FlexTensor {
        conv_forward(&x, &weight, stride, padding).0
    }

    fn nw_conv_bn_relu(
        x: FlexTensor,
        weight: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        stride: usize,
        padding: usize,
        epsilon: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        conv_bn_flex(&x, &weight, (&gamma, &beta), None, (stride, padding), epsilon)
    }

    fn nw_conv_bn_add_relu(
        x: FlexTensor,
        weight: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        shortcut: FlexTensor,
        stride: usize,
        padding: usize,
        epsilon: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        conv_bn_flex(&x, &weight, (&gamma, &beta), Some(&shortcut), (stride, padding), epsilon)
    }

    fn nw_max_pool2d(x: FlexTensor, kernel: usize, stride: usize) -> FlexTensor {
        pool_forward(&x, kernel, stride).0
    }

    fn nw_row_sums(w: FlexTensor, g: FlexTensor, w2: FlexTensor) -> FlexTensor {
        row_sums_flex(&w, &g, &w2)
    }

    fn nw_linear(x: FlexTensor, w: FlexTensor, row_major: bool) -> FlexTensor {
        linear_forward(&x, &w, row_major)
    }

    fn nw_bn_add_relu(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        shortcut: FlexTensor,
        epsilon: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (y, st) = bn_add_relu_forward(&x, &gamma, &beta, &shortcut, epsilon);
        let c = st.mean.len();
        (y, flex(st.mean, vec![c]), flex(st.var, vec![c]))
    }

    fn nw_bn_relu_pool(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, epsilon: f64) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (y, _, st) = bn_pool_forward(&x, &gamma, &beta, epsilon);
        let c = st.mean.len();
        (y, flex(st.mean, vec![c]), flex(st.var, vec![c]))
    }
}

/// Registers a normalization's gradients `(dx, dgamma, dbeta)` for those of its parents
/// `[x, gamma, beta]` that are tracked.
fn register_norm_grads(grads: &mut Gradients, parents: [Option<NodeId>; 3], dx: FlexTensor, (dgamma, dbeta): (Vec<f32>, Vec<f32>)) {
    let c = dgamma.len();
    let [x, gamma, beta] = parents;
    if let Some(id) = x {
        grads.register::<Flex>(id, dx);
    }
    for (id, value) in [(gamma, dgamma), (beta, dbeta)] {
        if let Some(id) = id {
            grads.register::<Flex>(id, flex(value, vec![c]));
        }
    }
}

/// Batch norm's backward step: parents `[x, gamma, beta]`.
#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    /// Input, gamma, statistics, and beta when a ReLU was fused (it tells where the ReLU passed).
    type State = (FlexTensor, FlexTensor, batch_norm::Stats, Option<FlexTensor>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, gamma, st, relu_beta) = ops.state;
        let (gamma, beta) = (values(&gamma), relu_beta.as_ref().map(values));
        let (dx, g) = in_layout(&x, &[&dy], |xs, dys, d| {
            let (dx, dgamma, dbeta) = batch_norm::backward(xs, &dys[0], d, &gamma, &st, beta.as_deref());
            (dx, (dgamma, dbeta))
        });
        register_norm_grads(grads, ops.parents.map(|p| p.map(|n| n.id)), dx, g);
    }
}

/// The residual block end's backward step: parents `[x, gamma, beta, shortcut]`.
#[derive(Debug)]
struct BnAddReluBackward;

impl Backward<Flex, 4> for BnAddReluBackward {
    /// Input, gamma, statistics and the output (positive where the ReLU passed).
    type State = (FlexTensor, FlexTensor, batch_norm::Stats, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, gamma, st, y) = ops.state;
        let [node_x, node_gamma, node_beta, node_shortcut] = ops.parents.map(|p| p.map(|n| n.id));
        // The gradient past the ReLU is the shortcut's and the normalization's output's.
        let (through, ()) = in_layout(&y, &[&dy], |ys, dys, _| (batch_norm::relu_mask(&dys[0], ys), ()));
        let gamma = values(&gamma);
        let (dx, g) = in_layout(&x, &[&through], |xs, ds, d| {
            let (dx, dgamma, dbeta) = batch_norm::backward(xs, &ds[0], d, &gamma, &st, None);
            (dx, (dgamma, dbeta))
        });
        register_norm_grads(grads, [node_x, node_gamma, node_beta], dx, g);
        if let Some(id) = node_shortcut {
            grads.register::<Flex>(id, through);
        }
    }
}

/// The convolution's backward step: parents `[x, weight]`.
#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 2> for ConvBackward {
    type State = (FlexTensor, FlexTensor, usize, usize, conv::Prepared);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, weight, stride, padding, prepared) = ops.state;
        let (xs, ws) = (shape(&x), shape(&weight));
        let g = conv_geometry(&xs, &ws, stride, padding);
        let (dx, dw) =
            conv::backward(&g, &values(&x), &values(&weight), Some(&prepared), conv::OutGrad::Given(&values(&dy)), node_x.is_some());
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, flex(dx, xs));
        }
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, flex(dw, ws));
        }
    }
}

/// The convolution + batch norm + ReLU op's backward step: parents `[x, weight, gamma, beta]`,
/// and `shortcut` fifth when one was added (`N` = 4 or 5).
#[derive(Debug)]
struct ConvBnBackward;

impl<const N: usize> Backward<Flex, N> for ConvBnBackward {
    /// Input, weight, stride and padding, gamma, what the forward left, and the ReLU's witness:
    /// beta without a shortcut (the ReLU passed where the normalized value is positive, which
    /// the batch-norm backward recomputes), the output with one (positive where it passed).
    type State = (FlexTensor, FlexTensor, (usize, usize), FlexTensor, ConvBn, FlexTensor);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, weight, (stride, padding), gamma, cb, witness) = ops.state;
        let ids = ops.parents.map(|p| p.map(|n| n.id));
        let (xs, ws) = (shape(&x), shape(&weight));
        let g = conv_geometry(&xs, &ws, stride, padding);
        let d = conv::output_dims(&g);
        let (conv_out, gamma) = (values(&cb.conv_out), values(&gamma));
        // The gradient past the ReLU: with a shortcut it is also the shortcut's, so it is stored;
        // without, the batch-norm backward masks `dy` itself.
        let (through, relu_beta) =
            if N == 5 { (Some(batch_norm::relu_mask(&values(&dy), &values(&witness))), None) } else { (None, Some(values(&witness))) };
        let dy = values(&dy);
        let at_norm: &[f32] = through.as_deref().unwrap_or(&dy[..]);
        let (coef, dgamma, dbeta) = batch_norm::grad_coefficients(&conv_out, at_norm, d, &gamma, &cb.stats, relu_beta.as_deref());
        let c = dgamma.len();
        for (id, value) in [(ids[2], dgamma), (ids[3], dbeta)] {
            if let Some(id) = id {
                grads.register::<Flex>(id, flex(value, vec![c]));
            }
        }
        // The convolution reads the batch norm's input gradient image by image as it needs it.
        let out_grad = conv::OutGrad::Norm { x: &conv_out, dy: at_norm, coef: &coef };
        let (dx, dw) = conv::backward(&g, &values(&x), &values(&weight), Some(&cb.prepared), out_grad, ids[0].is_some());
        if let (Some(id), Some(through)) = (ids.get(4).copied().flatten(), through) {
            grads.register::<Flex>(id, flex(through, shape(&witness)));
        }
        if let Some(id) = ids[0] {
            grads.register::<Flex>(id, flex(dx, xs));
        }
        if let Some(id) = ids[1] {
            grads.register::<Flex>(id, flex(dw, ws));
        }
    }
}

/// The linear product's backward step: parents `[x, w]`.
#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 2> for LinearBackward {
    /// Input, weight, and whether the input's gradient is stored row-major.
    type State = (FlexTensor, FlexTensor, bool);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, w, row_major) = ops.state;
        let ((n, d_in), (d_out, _)) = (dims2(&x, "nw_linear"), dims2(&w, "nw_linear"));
        if let Some(node) = node_x {
            // dx[n, in] = dy[n, out] @ w[out, in], in y's layout.
            let dx = if row_major {
                flex(linear::matmul_rm(n, d_in, d_out, view(&dy), view(&w)), vec![n, d_in])
            } else {
                flex(linear::matmul_cm(n, d_in, d_out, view(&dy), view(&w)), vec![d_in, n]).transpose(0, 1)
            };
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = node_w {
            // dw^T[in, out] = x^T[in, n] @ dy[n, out] stored channel-major: dw[out, in] contiguous.
            let dw = linear::matmul_cm(d_in, d_out, n, view(&x).t(), view(&dy));
            grads.register::<Flex>(node.id, flex(dw, vec![d_out, d_in]));
        }
    }
}

/// Max pooling's backward step: parent `[x]`.
#[derive(Debug)]
struct PoolBackward;

impl Backward<Flex, 1> for PoolBackward {
    type State = (pool::Window, Vec<u8>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (p, winner) = ops.state;
        if let Some(node) = node_x {
            let dx = pool::backward(&p, &winner, &values(&dy));
            let s = shape(&dy);
            grads.register::<Flex>(node.id, flex(dx, vec![s[0], s[1], p.h, p.w]));
        }
    }
}

/// The fused op's backward step: parents `[x, gamma, beta]`.
#[derive(Debug)]
struct BnPoolBackward;

impl Backward<Flex, 3> for BnPoolBackward {
    /// Input, gamma, beta, statistics and the pooling winners.
    type State = (FlexTensor, FlexTensor, FlexTensor, batch_norm::Stats, Vec<u8>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, gamma, beta, st, winner) = ops.state;
        let s = shape(&x);
        let map = bn_pool::Map { n: s[0], c: s[1], h: s[2], w: s[3] };
        let (dx, dgamma, dbeta) = bn_pool::backward(&values(&x), &values(&dy), &winner, map, &values(&gamma), &values(&beta), &st);
        register_norm_grads(grads, ops.parents.map(|p| p.map(|n| n.id)), flex(dx, s), (dgamma, dbeta));
    }
}

/// GELU's backward step: parent `[x]`.
#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        if let [Some(node)] = ops.parents {
            // Element-wise: computed in `x`'s own layout (a linear layer's channel-major output
            // needs no copy).
            let (dx, ()) = in_layout(&ops.state, &[&dy], |x, dy, _| (gelu::backward(x, &dy[0]), ()));
            grads.register::<Flex>(node.id, dx);
        }
    }
}

/// Layer / RMS norm's gradients, registered for the tracked parents `[x, weight, bias]`.
fn feature_norm_grads(
    grads: &mut Gradients,
    dy: FlexTensor,
    state: (FlexTensor, FlexTensor, feature_norm::Stats),
    rms: bool,
    parents: [Option<NodeId>; 3],
) {
    let (x, weight, st) = state;
    let (rows, c) = dims2(&x, "nw_feature_norm backward");
    let (dx, dw, db) = feature_norm::backward(&values(&x), &values(&dy), c, &values(&weight), &st, rms);
    register_norm_grads(grads, parents, flex(dx, vec![rows, c]), (dw, db));
}

/// Layer norm's backward step: parents `[x, weight, bias]`.
#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    /// Input, weight and row statistics.
    type State = (FlexTensor, FlexTensor, feature_norm::Stats);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        feature_norm_grads(grads, dy, ops.state, false, ops.parents.map(|p| p.map(|n| n.id)));
    }
}

/// RMS norm's backward step: parents `[x, weight]`.
#[derive(Debug)]
struct RmsNormBackward;

impl Backward<Flex, 2> for RmsNormBackward {
    /// Input, weight and row statistics.
    type State = (FlexTensor, FlexTensor, feature_norm::Stats);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let [x, w] = ops.parents.map(|p| p.map(|n| n.id));
        feature_norm_grads(grads, dy, ops.state, true, [x, w, None]);
    }
}

/// Attention's backward step: parents `[q, k, v]`.
#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 3> for AttentionBackward {
    /// Contiguous queries, keys, values, the softmax of every (sequence, head), the sizes.
    type State = (Contiguous, Contiguous, Contiguous, Vec<Vec<f32>>, attention::Shape);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let (q, k, v, probs, s) = ops.state;
        let (dq, dk, dv) = attention::backward(&q, &k, &v, &probs, &values(&dy), s);
        let dims = vec![s.batch * s.seq, s.heads * s.head_dim];
        for (node, g) in ops.parents.into_iter().zip([dq, dk, dv]) {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, flex(g, dims.clone()));
            }
        }
    }
}

/// A float tensor of the CPU backend under autodiff.
type TrackedTensor<C> = FloatTensor<Autodiff<Flex, C>>;

/// Batch statistics as untracked tensors: they feed running averages, never the loss.
fn constant_stats<C: CheckpointStrategy>(st: &batch_norm::Stats) -> (TrackedTensor<C>, TrackedTensor<C>) {
    let c = st.mean.len();
    let constant = |v: &[f32]| <Autodiff<Flex, C> as AutodiffBackend>::from_inner(flex(v.to_vec(), vec![c]));
    (constant(&st.mean), constant(&st.var))
}

/// The convolution + batch norm + ReLU op under autodiff (with a shortcut added when given).
fn conv_bn_tracked<C: CheckpointStrategy>(
    x: TrackedTensor<C>,
    weight: TrackedTensor<C>,
    (gamma, beta): (TrackedTensor<C>, TrackedTensor<C>),
    shortcut: Option<TrackedTensor<C>>,
    conv: (usize, usize),
    epsilon: f64,
) -> (TrackedTensor<C>, TrackedTensor<C>, TrackedTensor<C>) {
    let (xp, wp, gp, bp) = (x.primitive().clone(), weight.primitive().clone(), gamma.primitive().clone(), beta.primitive().clone());
    let (y, cb) = conv_bn_forward(&xp, &wp, (&gp, &bp), shortcut.as_ref().map(|s| s.primitive()), conv, epsilon);
    let (mean, var) = constant_stats::<C>(&cb.stats);
    let out = match shortcut {
        Some(short) => {
            match ConvBnBackward.prepare::<C>([x.node(), weight.node(), gamma.node(), beta.node(), short.node()]).compute_bound().stateful()
            {
                OpsKind::Tracked(prep) => prep.finish((xp, wp, conv, gp, cb, y.clone()), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            }
        }
        None => match ConvBnBackward.prepare::<C>([x.node(), weight.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((xp, wp, conv, gp, cb, bp), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        },
    };
    (out, mean, var)
}

impl<C: CheckpointStrategy> Kernels for Autodiff<Flex, C> {
    fn nw_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let xp = x.primitive().clone();
        let (y, ()) = in_layout(&xp, &[], |x, _, _| (gelu::forward(x), ()));
        match GeluBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(xp, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn nw_layer_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        let (xp, wp) = (x.primitive().clone(), weight.primitive().clone());
        let (y, st) = feature_norm_forward(&xp, &wp, Some(bias.primitive()), epsilon);
        match LayerNormBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((xp, wp, st), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn nw_rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        let (xp, wp) = (x.primitive().clone(), weight.primitive().clone());
        let (y, st) = feature_norm_forward(&xp, &wp, None, epsilon);
        match RmsNormBackward.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((xp, wp, st), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn nw_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, batch: usize, heads: usize) -> FloatTensor<Self> {
        let s = attention_shape(q.primitive(), batch, heads);
        let (qc, kc, vc) = (values(q.primitive()), values(k.primitive()), values(v.primitive()));
        let (y, probs) = attention::forward(&qc, &kc, &vc, s);
        let y = flex(y, shape(q.primitive()));
        match AttentionBackward.prepare::<C>([q.node(), k.node(), v.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((qc, kc, vc, probs, s), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn nw_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (xp, gp) = (x.primitive().clone(), gamma.primitive().clone());
        let (y, st) = bn_forward(&xp, &gp, beta.primitive(), epsilon, relu);
        let relu_beta = relu.then(|| beta.primitive().clone());
        let (mean, var) = constant_stats::<C>(&st);
        let out = match BatchNormBackward.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((xp, gp, st, relu_beta), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (out, mean, var)
    }

    fn nw_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, stride: usize, padding: usize) -> FloatTensor<Self> {
        let (xp, wp) = (x.primitive().clone(), weight.primitive().clone());
        let (y, prepared) = conv_forward(&xp, &wp, stride, padding);
        match ConvBackward.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((xp, wp, stride, padding, prepared), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn nw_conv_bn_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stride: usize,
        padding: usize,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        conv_bn_tracked::<C>(x, weight, (gamma, beta), None, (stride, padding), epsilon)
    }

    fn nw_conv_bn_add_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        shortcut: FloatTensor<Self>,
        stride: usize,
        padding: usize,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        conv_bn_tracked::<C>(x, weight, (gamma, beta), Some(shortcut), (stride, padding), epsilon)
    }

    fn nw_bn_relu_pool(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (xp, gp, bp) = (x.primitive().clone(), gamma.primitive().clone(), beta.primitive().clone());
        let (y, winner, st) = bn_pool_forward(&xp, &gp, &bp, epsilon);
        let (mean, var) = constant_stats::<C>(&st);
        let out = match BnPoolBackward.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((xp, gp, bp, st, winner), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (out, mean, var)
    }

    fn nw_bn_add_relu(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        shortcut: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (xp, gp) = (x.primitive().clone(), gamma.primitive().clone());
        let (y, st) = bn_add_relu_forward(&xp, &gp, beta.primitive(), shortcut.primitive(), epsilon);
        let (mean, var) = constant_stats::<C>(&st);
        let out = match BnAddReluBackward.prepare::<C>([x.node(), gamma.node(), beta.node(), shortcut.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((xp, gp, st, y.clone()), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (out, mean, var)
    }

    fn nw_row_sums(w: FloatTensor<Self>, g: FloatTensor<Self>, w2: FloatTensor<Self>) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(row_sums_flex(w.primitive(), g.primitive(), w2.primitive()))
    }

    fn nw_linear(x: FloatTensor<Self>, w: FloatTensor<Self>, row_major: bool) -> FloatTensor<Self> {
        let (xp, wp) = (x.primitive().clone(), w.primitive().clone());
        let y = linear_forward(&xp, &wp, row_major);
        match LinearBackward.prepare::<C>([x.node(), w.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((xp, wp, row_major), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn nw_max_pool2d(x: FloatTensor<Self>, kernel: usize, stride: usize) -> FloatTensor<Self> {
        let (y, p, winner) = pool_forward(x.primitive(), kernel, stride);
        match PoolBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((p, winner), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}
