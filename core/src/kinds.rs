//! The names of what a run trains: architecture and normalization. The engine builds them;
//! here they are names with the facts about them that need no tensors.

crate::choice! {
    /// Which architecture (the `--model` flag).
    pub enum ModelKind {
        /// 784-512-512-10 MLP.
        Mlp = "mlp",
        /// 4-layer ConvNet (32/64/128 channels).
        Convnet = "convnet",
        /// CIFAR ResNet-20 v1.
        Resnet20 = "resnet20",
    }
}

impl ModelKind {
    /// The smallest image side the architecture accepts (the ConvNet halves it three times).
    pub fn min_side(self) -> usize {
        match self {
            ModelKind::Convnet => 8,
            ModelKind::Mlp | ModelKind::Resnet20 => 1,
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
        matches!(self, NormKind::Bn | NormKind::Ln | NormKind::Gn)
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
