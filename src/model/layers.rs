//! The building blocks shared by all models: a convolution and a dense layer that can be
//! weight-normalized (PyTorch's `weight_g` / `weight_v` names), and one `Norm` module for
//! batch, layer and group normalization with PyTorch's semantics.
//!
//! We write these instead of using burn-nn's layers for three reasons: PyTorch's weight
//! layout (`[out, in]`, so the output channel is always dimension 0), parameter names that
//! match PyTorch checkpoints, and one place that knows which weights are scale-invariant.

use super::init::Init;
use crate::kernels;
use burn::module::{Module, Param, RunningState};
use burn::tensor::module::{batch_norm_train, conv2d, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor};
use normwd_core::roles::Granularity;

pub use normwd_core::kinds::{NormKind, GN_GROUPS};

/// Weight of a layer: plain, or weight-normalized as `g * v / ||v||` (per output channel).
fn effective_weight<const D: usize>(
    weight: &Option<Param<Tensor<D>>>,
    v: &Option<Param<Tensor<D>>>,
    g: &Option<Param<Tensor<1>>>,
) -> Tensor<D> {
    match (weight, v, g) {
        (Some(w), _, _) => w.val(),
        (None, Some(v), Some(g)) => {
            let v = v.val();
            let dims = v.dims();
            let out = dims[0];
            let mut bshape = [1usize; D];
            bshape[0] = out;
            let norm = v.clone().reshape([out as i32, -1]).powi_scalar(2).sum_dim(1).sqrt();
            let scale = g.val().reshape([out, 1]).div(norm).reshape(bshape);
            v.mul(scale)
        }
        _ => unreachable!("a layer has either `weight` or both `weight_v` and `weight_g`"),
    }
}

/// A 2-D convolution with `[out, in, k, k]` weights, optional bias, optional weight norm.
#[derive(Module, Debug)]
pub struct Conv {
    /// The kernel (absent under weight norm).
    pub weight: Option<Param<Tensor<4>>>,
    /// Weight-norm direction `v` (same shape as the kernel).
    pub weight_v: Option<Param<Tensor<4>>>,
    /// Weight-norm gain `g`, one per output channel.
    pub weight_g: Option<Param<Tensor<1>>>,
    /// Bias, present when no normalization layer follows.
    pub bias: Option<Param<Tensor<1>>>,
    /// Stride (both dimensions).
    pub stride: usize,
    /// Zero padding (both dimensions).
    pub padding: usize,
}

impl Conv {
    /// A `k x k` convolution initialized as PyTorch's `nn.Conv2d`
    /// (`U(-1/sqrt(fan_in), 1/sqrt(fan_in))` for kernel and bias).
    pub fn new(init: &mut Init, c_in: usize, c_out: usize, k: usize, stride: usize, norm: NormKind, device: &Device) -> Self {
        let fan_in = c_in * k * k;
        let bound = 1.0 / (fan_in as f32).sqrt();
        let w: Tensor<4> = init.uniform([c_out, c_in, k, k], bound, device);
        let bias = (!norm.has_layer()).then(|| Param::from_tensor(init.uniform([c_out], bound, device)));
        let (weight, weight_v, weight_g) = wn_split(w, norm);
        Conv { weight, weight_v, weight_g, bias, stride, padding: k / 2 }
    }

    /// The kernel actually applied (`g * v/||v||` under weight norm).
    pub fn kernel(&self) -> Tensor<4> {
        effective_weight(&self.weight, &self.weight_v, &self.weight_g)
    }

    /// `relu(norm(conv(x)) + shortcut)`, or `relu(norm(conv(x)))` without a shortcut: a
    /// convolution and its normalization as one op for batch norm in training on the CPU (the
    /// batch statistics taken from the convolution's output while it is still in cache).
    pub fn forward_norm_relu(&self, norm: &Option<Norm>, x: Tensor<4>, shortcut: Option<Tensor<4>>) -> Tensor<4> {
        if let Some(n) = norm.as_ref().filter(|n| n.fuses(&x) && self.bias.is_none()) {
            let device = x.device();
            let (out, mean, variance) =
                kernels::conv_bn_relu(x, self.kernel(), n.weight.val(), n.bias.val(), shortcut, self.stride, self.padding, n.epsilon);
            let dims = out.dims();
            n.track(mean, variance, dims.iter().product::<usize>() / dims[1], &device);
            return out;
        }
        let y = self.forward(x);
        match (norm, shortcut) {
            (Some(n), Some(s)) => n.forward_add_relu(y, s),
            (None, Some(s)) => burn::tensor::activation::relu(y.add(s)),
            (_, None) => norm_relu(norm, y),
        }
    }

    /// Applies the convolution to an NCHW batch.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if kernels::applies(&x) {
            let y = kernels::conv2d(x, self.kernel(), self.stride, self.padding);
            return match &self.bias {
                Some(b) => y.add(b.val().reshape([1, -1, 1, 1])),
                None => y,
            };
        }
        let opts = ConvOptions::new([self.stride; 2], [self.padding; 2], [1, 1], 1);
        conv2d(x, self.kernel(), self.bias.as_ref().map(|b| b.val()), opts)
    }
}

/// `(weight, weight_v, weight_g)` of a layer.
type WeightParams<const D: usize> = (Option<Param<Tensor<D>>>, Option<Param<Tensor<D>>>, Option<Param<Tensor<1>>>);

fn wn_split<const D: usize>(w: Tensor<D>, norm: NormKind) -> WeightParams<D> {
    if norm == NormKind::Wn {
        // PyTorch's weight_norm starts with g = ||v|| so the initial weight is unchanged.
        let out = w.dims()[0];
        let g = w.clone().reshape([out as i32, -1]).powi_scalar(2).sum_dim(1).sqrt().reshape([out]);
        (None, Some(Param::from_tensor(w)), Some(Param::from_tensor(g)))
    } else {
        (Some(Param::from_tensor(w)), None, None)
    }
}

/// A fully connected layer with PyTorch's `[out, in]` weight layout.
#[derive(Module, Debug)]
pub struct Dense {
    /// The matrix (absent under weight norm).
    pub weight: Option<Param<Tensor<2>>>,
    /// Weight-norm direction `v`.
    pub weight_v: Option<Param<Tensor<2>>>,
    /// Weight-norm gain `g`, one per output.
    pub weight_g: Option<Param<Tensor<1>>>,
    /// Bias.
    pub bias: Option<Param<Tensor<1>>>,
}

impl Dense {
    /// A layer initialized as PyTorch's `nn.Linear`. `norm` says what follows it: with a
    /// normalization layer the bias is dropped, with `Wn` the layer is weight-normalized.
    pub fn new(init: &mut Init, d_in: usize, d_out: usize, norm: NormKind, device: &Device) -> Self {
        let bound = 1.0 / (d_in as f32).sqrt();
        let w: Tensor<2> = init.uniform([d_out, d_in], bound, device);
        let bias = (!norm.has_layer()).then(|| Param::from_tensor(init.uniform([d_out], bound, device)));
        let (weight, weight_v, weight_g) = wn_split(w, norm);
        Dense { weight, weight_v, weight_g, bias }
    }

    /// Applies `x W^T + b` to a `[batch, in]` input.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.forward_in(x, false)
    }

    /// As [`Dense::forward`], the output stored row-major on the CPU (what the transformer's
    /// row-wise ops read without a copy).
    pub fn forward_rows(&self, x: Tensor<2>) -> Tensor<2> {
        self.forward_in(x, true)
    }

    fn forward_in(&self, x: Tensor<2>, rows: bool) -> Tensor<2> {
        let y = matmul_t_in(x, effective_weight(&self.weight, &self.weight_v, &self.weight_g), rows);
        match &self.bias {
            Some(b) => y.add(b.val().unsqueeze_dim(0)),
            None => y,
        }
    }
}

/// `x W^T` for a `[batch, in]` input and an `[out, in]` weight (the CPU kernel on the CPU,
/// its output stored channel-major for the batch-norm kernels).
pub fn matmul_t(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    matmul_t_in(x, w, false)
}

/// As [`matmul_t`], the CPU kernel's output stored row-major when `rows` (for row-wise ops).
pub fn matmul_t_in(x: Tensor<2>, w: Tensor<2>, rows: bool) -> Tensor<2> {
    if crate::kernels::applies(&x) {
        if rows {
            return crate::kernels::linear_rows(x, w);
        }
        crate::kernels::linear(x, w)
    } else {
        // y = (w x^T)^T rather than x w^T: the weight's gradient then comes out of autodiff
        // as a contiguous [out, in] matrix instead of a transposed view the optimizer copies.
        w.matmul(x.transpose()).transpose()
    }
}

/// Batch, layer, group or RMS normalization over dimension 1 (channels / features), with a
/// per-channel affine `weight` (the scale, gamma) and `bias` (the shift, beta), named as
/// PyTorch names them. Batch norm keeps running averages (buffers) and uses them when the
/// input is not tracked by autodiff (evaluation).
#[derive(Module, Debug)]
pub struct Norm {
    /// Per-channel scale (gamma).
    pub weight: Param<Tensor<1>>,
    /// Per-channel shift (beta).
    pub bias: Param<Tensor<1>>,
    /// Running mean of batch statistics (batch norm only).
    pub running_mean: Option<RunningState<Tensor<1>>>,
    /// Running unbiased variance of batch statistics (batch norm only).
    pub running_var: Option<RunningState<Tensor<1>>>,
    /// What it normalizes over: each channel across the batch (`Bn`), all of a sample (`Ln`)
    /// or groups of channels of a sample (`Gn`); never `Wn` or `None`, which have no layer.
    #[module(skip)]
    pub kind: NormKind,
    /// Running-average momentum (PyTorch convention: `new = (1-m)*old + m*batch`).
    pub momentum: f64,
    /// Added to the variance.
    pub epsilon: f64,
}

impl Norm {
    /// A normalization layer of kind `kind` over `channels`; `None` for kinds without a layer.
    pub fn new(kind: NormKind, channels: usize, bn_momentum: f64, device: &Device) -> Option<Self> {
        if !kind.has_layer() {
            return None;
        }
        let bn = kind == NormKind::Bn;
        Some(Norm {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            running_mean: bn.then(|| RunningState::new(Tensor::zeros([channels], device))),
            running_var: bn.then(|| RunningState::new(Tensor::ones([channels], device))),
            kind,
            momentum: bn_momentum,
            epsilon: 1e-5,
        })
    }

    /// Groups of channels normalized together within a sample (`None` for batch norm, which
    /// normalizes each channel across the batch).
    fn groups(&self) -> Option<usize> {
        match self.kind {
            NormKind::Bn => None,
            NormKind::Ln | NormKind::Rms => Some(1),
            NormKind::Gn => Some(GN_GROUPS.min(self.channels())),
            NormKind::Wn | NormKind::None => unreachable!("{:?} builds no Norm layer", self.kind),
        }
    }

    fn channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Over which slices of the weight that feeds this layer the loss is invariant to positive
    /// rescaling: each output channel (batch norm), the whole tensor (one group: layer norm), or
    /// each group of channels (group norm).
    pub fn granularity(&self) -> Granularity {
        match self.groups() {
            None => Granularity::Channel,
            Some(1) => Granularity::Tensor,
            Some(g) => Granularity::Group(self.channels() / g),
        }
    }

    /// Normalizes an `[N, C, ...]` input.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.apply(x, false)
    }

    /// Normalizes, then applies a ReLU (one fused op for batch norm in training on the CPU).
    pub fn forward_relu<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.apply(x, true)
    }

    /// Normalizes, applies a ReLU, then 2x2 stride-2 max pooling (one fused op for batch norm in
    /// training on the CPU: the full-size normalized map is never stored).
    pub fn forward_relu_pool(&self, x: Tensor<4>) -> Tensor<4> {
        if self.fuses(&x) {
            return self.train_step(x, |x| kernels::bn_relu_pool(x, self.weight.val(), self.bias.val(), self.epsilon));
        }
        max_pool(self.forward_relu(x), 2, 2)
    }

    /// `relu(norm(x) + shortcut)`, a residual block's end (one fused op for batch norm in
    /// training on the CPU: neither the sum nor the normalized map is stored).
    pub fn forward_add_relu<const D: usize>(&self, x: Tensor<D>, shortcut: Tensor<D>) -> Tensor<D> {
        if self.fuses(&x) {
            return self.train_step(x, |x| kernels::bn_add_relu(x, self.weight.val(), self.bias.val(), shortcut, self.epsilon));
        }
        burn::tensor::activation::relu(self.forward(x).add(shortcut))
    }

    /// Whether batch norm in training mode on `x` runs as one of the fused CPU kernels.
    fn fuses<const D: usize>(&self, x: &Tensor<D>) -> bool {
        self.kind == NormKind::Bn && x.is_autodiff() && kernels::applies(x)
    }

    /// A training-mode batch norm `op` of `x` (returning the output, the batch mean and the
    /// biased batch variance), its statistics folded into the running averages.
    fn train_step<const D: usize, const E: usize>(
        &self,
        x: Tensor<D>,
        op: impl FnOnce(Tensor<D>) -> (Tensor<E>, Tensor<1>, Tensor<1>),
    ) -> Tensor<E> {
        let dims = x.dims();
        let device = x.device();
        let (out, mean, variance) = op(x);
        self.track(mean, variance, dims.iter().product::<usize>() / dims[1], &device);
        out
    }

    fn apply<const D: usize>(&self, x: Tensor<D>, relu: bool) -> Tensor<D> {
        let dims = x.dims();
        let c = dims[1];
        let mut cshape = [1usize; D];
        cshape[1] = c;
        let Some(g) = self.groups() else {
            return self.batch_norm(x, cshape, relu);
        };
        let n = dims[0];
        let grouped: Tensor<3> = x.reshape([n as i32, g as i32, -1]);
        // RMS normalization divides by the root mean square without removing the mean.
        let centered = if self.kind == NormKind::Rms {
            grouped
        } else {
            let mean = grouped.clone().mean_dim(2);
            grouped.sub(mean)
        };
        let var = centered.clone().powi_scalar(2).mean_dim(2);
        let normed = centered.div(var.add_scalar(self.epsilon).sqrt()).reshape(dims);
        relu_if(normed.mul(self.weight.val().reshape(cshape)).add(self.bias.val().reshape(cshape)), relu)
    }

    fn running(&self) -> (&RunningState<Tensor<1>>, &RunningState<Tensor<1>>) {
        match (&self.running_mean, &self.running_var) {
            (Some(m), Some(v)) => (m, v),
            _ => unreachable!("batch norm has running statistics"),
        }
    }

    fn batch_norm<const D: usize>(&self, x: Tensor<D>, cshape: [usize; D], relu: bool) -> Tensor<D> {
        let (rm, rv) = self.running();
        if !x.is_autodiff() {
            let device = x.device();
            let mean = rm.value().to_device(&device).reshape(cshape);
            let std = rv.value().to_device(&device).add_scalar(self.epsilon).sqrt().reshape(cshape);
            let scale = self.weight.val().reshape(cshape).div(std);
            return relu_if(x.sub(mean).mul(scale).add(self.bias.val().reshape(cshape)), relu);
        }
        self.train_step(x, |x| {
            if kernels::applies(&x) {
                kernels::batch_norm_train(x, self.weight.val(), self.bias.val(), self.epsilon, relu)
            } else {
                let out = batch_norm_train(x, self.weight.val(), self.bias.val(), self.epsilon);
                (relu_if(out.output, relu), out.mean, out.variance)
            }
        })
    }

    /// Folds a batch's mean and biased variance (over `count` values per channel) into the
    /// running averages.
    fn track(&self, mean: Tensor<1>, variance: Tensor<1>, count: usize, device: &Device) {
        let (rm, rv) = self.running();
        let m = self.momentum;
        // PyTorch keeps the unbiased variance in the running average.
        let unbias = if count > 1 { count as f64 / (count as f64 - 1.0) } else { 1.0 };
        let mean = mean.detach();
        let var = variance.detach().mul_scalar(unbias);
        let old_m = rm.value_sync().to_device(device);
        let old_v = rv.value_sync().to_device(device);
        rm.update(old_m.mul_scalar(1.0 - m).add(mean.mul_scalar(m)).detach());
        rv.update(old_v.mul_scalar(1.0 - m).add(var.mul_scalar(m)).detach());
        // burn keeps updates pending per thread until the next `value_sync`; syncing now makes
        // the stored value current, so evaluation and checkpoints never see a stale average.
        let _ = (rm.value_sync(), rv.value_sync());
    }
}

/// Max pooling over `kernel x kernel` windows with `stride` and no padding (the CPU kernel on
/// the CPU, burn's op elsewhere).
pub fn max_pool(x: Tensor<4>, kernel: usize, stride: usize) -> Tensor<4> {
    if kernels::applies(&x) {
        kernels::max_pool2d(x, kernel, stride)
    } else {
        max_pool2d(x, MaxPoolOptions::new([kernel; 2]).with_stride([stride; 2]))
    }
}

fn relu_if<const D: usize>(x: Tensor<D>, relu: bool) -> Tensor<D> {
    if relu {
        burn::tensor::activation::relu(x)
    } else {
        x
    }
}

/// Applies an optional normalization layer, a ReLU and 2x2 stride-2 max pooling.
pub fn norm_relu_pool(norm: &Option<Norm>, x: Tensor<4>) -> Tensor<4> {
    match norm {
        Some(n) => n.forward_relu_pool(x),
        None => max_pool(burn::tensor::activation::relu(x), 2, 2),
    }
}

/// Applies an optional normalization layer, then a ReLU.
pub fn norm_relu<const D: usize>(norm: &Option<Norm>, x: Tensor<D>) -> Tensor<D> {
    match norm {
        Some(n) => n.forward_relu(x),
        None => burn::tensor::activation::relu(x),
    }
}
