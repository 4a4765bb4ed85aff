//! The names of what a run trains: architecture and normalization. The engine builds them;
//! here they are names with the facts about them that need no tensors.
//!
//! Adding a norm: its [`NormKind`] variant and its facts here (which models take it); the
//! layer in `src/model/layers.rs` (`Norm::groups` says which channels it normalizes together,
//! `Norm::apply` computes it; a kind with no `Norm` layer, as weight norm, goes in `Dense` /
//! `Conv`); the granularity of the scale-invariance it gives in `src/params.rs`'s `describe`;
//! the PyTorch twin in `bench/` and the Python package's `is_norm` if PyTorch has it under
//! another class; a row in `params`' test of invariance per norm.
//!
//! Adding a model: its [`ModelKind`] variant, its facts here and its defaults in
//! `RunConfig::defaults` (`core/src/config.rs`); the module in `src/model/` with PyTorch's
//! parameter names, its arm in `Net::new` and `Net::forward` (`src/model/mod.rs`) and its
//! `links` (which layer feeds which norm); its data in `src/data` if it reads something new; a
//! PyTorch twin in `bench/` for the speed comparison.

crate::choice! {
    /// Which architecture (the `--model` flag).
    pub enum ModelKind {
        /// 784-512-512-10 MLP.
        Mlp = "mlp",
        /// 4-layer ConvNet (32/64/128 channels).
        Convnet = "convnet",
        /// CIFAR ResNet-20 v1.
        Resnet20 = "resnet20",
        /// A small decoder-only transformer (nanoGPT's layout) for text.
        Gpt = "gpt",
    }
}

impl ModelKind {
    /// The smallest image side the architecture accepts (the ConvNet halves it three times).
    pub fn min_side(self) -> usize {
        match self {
            ModelKind::Convnet => 8,
            ModelKind::Mlp | ModelKind::Resnet20 | ModelKind::Gpt => 1,
        }
    }

    /// The architectures trained on images (every one but `gpt`, which reads text).
    pub const IMAGE: [ModelKind; 3] = [ModelKind::Mlp, ModelKind::Convnet, ModelKind::Resnet20];

    /// True for a language model (text data, tokens in, next-token logits out).
    pub fn reads_text(self) -> bool {
        self == ModelKind::Gpt
    }

    /// The normalization used when the run names none: batch norm for the image models,
    /// layer norm for `gpt` (nanoGPT's).
    pub fn default_norm(self) -> NormKind {
        if self.reads_text() {
            NormKind::Ln
        } else {
            NormKind::Bn
        }
    }

    /// The normalizations the architecture can be built with.
    pub fn norms(self) -> &'static [NormKind] {
        match self {
            ModelKind::Gpt => &[NormKind::Ln, NormKind::Rms, NormKind::None],
            _ => &NormKind::ALL,
        }
    }
}

crate::choice! {
    /// Which normalization follows a linear op (the `--norm` flag).
    pub enum NormKind {
        /// Batch normalization (batch statistics in training, running averages in eval).
        Bn = "bn",
        /// Layer normalization: over all features of a sample (`GroupNorm(1, C)` for conv maps).
        Ln = "ln",
        /// Group normalization with [`GN_GROUPS`] groups.
        Gn = "gn",
        /// RMS normalization (`nn.RMSNorm`): like layer norm, without removing the mean.
        Rms = "rms",
        /// Weight normalization `w = g * v / ||v||` per output channel, no activation norm.
        Wn = "wn",
        /// No normalization.
        None = "none",
    }
}

/// Number of groups used by `--norm gn` (every channel count in the built-in models divides by it).
pub const GN_GROUPS: usize = 8;

impl NormKind {
    /// True when a normalization layer follows the linear op (so the op needs no bias).
    pub fn has_layer(self) -> bool {
        matches!(self, NormKind::Bn | NormKind::Ln | NormKind::Gn | NormKind::Rms)
    }
}

/// The shape of a `gpt` model (nanoGPT's names), fixed by the run's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptShape {
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block.
    pub n_head: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Context length in tokens.
    pub block_size: usize,
    /// Per-head normalization of queries and keys (QK-norm), of the blocks' norm kind.
    pub qk_norm: bool,
    /// The output head is the token embedding (nanoGPT's weight tying).
    pub tie_embeddings: bool,
}

impl GptShape {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }
}

crate::choice! {
    /// How text becomes tokens (the `--tokens` setting of text data).
    pub enum Tokens {
        /// One token per Unicode character of the text, the vocabulary its distinct characters.
        Char = "char",
        /// One token per byte, a vocabulary of 256 (any file, UTF-8 or not).
        Byte = "byte",
    }
}
