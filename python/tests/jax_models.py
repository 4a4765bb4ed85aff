"""Flax NNX models and the embedded data for normwd.jax's tests and benchmark: a small ResNet
with BatchNorm (Fashion-MNIST) and a GPT whose blocks are stacked on a leading axis and run by
``nnx.scan`` (pre-LayerNorm, RMS QK-norm; the King James text); a small Linen MLP."""

import gzip
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def fashion_mnist(n: int):
    """The first ``n`` embedded training images (NHWC, standardized) and labels."""
    with gzip.open(os.path.join(ROOT, "data", "embedded", "train-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), dtype=np.uint8)[16:].reshape(-1, 28, 28, 1)[:n]
    with gzip.open(os.path.join(ROOT, "data", "embedded", "train-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), dtype=np.uint8)[8:][:n]
    return jnp.asarray((x.astype(np.float32) / 255 - 0.286) / 0.353), jnp.asarray(y.astype(np.int32))


def kjv_bytes(n: int) -> np.ndarray:
    """The first ``n`` bytes of the embedded King James text."""
    with gzip.open(os.path.join(ROOT, "data", "embedded", "kjv.txt.gz")) as f:
        return np.frombuffer(f.read(n), dtype=np.uint8).astype(np.int32)


class ResBlock(nnx.Module):
    def __init__(self, c: int, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(c, c, (3, 3), use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(c, rngs=rngs)
        self.conv2 = nnx.Conv(c, c, (3, 3), use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(c, rngs=rngs)

    def __call__(self, x):
        return nnx.relu(x + self.bn2(self.conv2(nnx.relu(self.bn1(self.conv1(x))))))


class ResNet(nnx.Module):
    """A stem, two residual blocks at ``width`` channels (the second after a stride-2 pooling),
    global pooling and a linear head: every conv before a BatchNorm."""

    def __init__(self, width: int = 16, rngs: nnx.Rngs = None):
        rngs = rngs or nnx.Rngs(0)
        self.stem = nnx.Conv(1, width, (3, 3), use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(width, rngs=rngs)
        self.block1 = ResBlock(width, rngs)
        self.block2 = ResBlock(width, rngs)
        self.head = nnx.Linear(width, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn(self.stem(x)))
        x = self.block1(x)
        x = nnx.avg_pool(x, (2, 2), (2, 2))
        x = self.block2(x)
        return self.head(x.mean((1, 2)))


class Block(nnx.Module):
    """A pre-LayerNorm transformer block with RMS-normalized queries and keys per head."""

    def __init__(self, d: int, heads: int, rngs: nnx.Rngs):
        self.heads = heads
        self.ln1 = nnx.LayerNorm(d, rngs=rngs)
        self.q = nnx.Linear(d, d, use_bias=False, rngs=rngs)
        self.k = nnx.Linear(d, d, use_bias=False, rngs=rngs)
        self.v = nnx.Linear(d, d, use_bias=False, rngs=rngs)
        self.q_norm = nnx.RMSNorm(d // heads, rngs=rngs)
        self.k_norm = nnx.RMSNorm(d // heads, rngs=rngs)
        self.proj = nnx.Linear(d, d, use_bias=False, rngs=rngs)
        self.ln2 = nnx.LayerNorm(d, rngs=rngs)
        self.up = nnx.Linear(d, 4 * d, use_bias=False, rngs=rngs)
        self.down = nnx.Linear(4 * d, d, use_bias=False, rngs=rngs)

    def __call__(self, x):
        b, t, d = x.shape
        h = self.ln1(x)
        split = lambda a: a.reshape(b, t, self.heads, d // self.heads)  # noqa: E731
        q, k, v = self.q_norm(split(self.q(h))), self.k_norm(split(self.k(h))), split(self.v(h))
        att = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(d // self.heads)
        att = jnp.where(jnp.tril(jnp.ones((t, t), bool)), att, -1e9)
        y = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(att, -1), v).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.down(nnx.gelu(self.up(self.ln2(x))))


class ScannedGPT(nnx.Module):
    """A byte-level GPT whose ``layers`` blocks are made by ``nnx.vmap`` (each parameter has a
    leading layer axis: the norms' scales are 2-D) and run by ``nnx.scan``."""

    def __init__(self, d: int = 32, heads: int = 4, layers: int = 2, ctx: int = 32, rngs: nnx.Rngs = None):
        rngs = rngs or nnx.Rngs(0)
        self.embed = nnx.Embed(256, d, rngs=rngs)
        self.pos = nnx.Embed(ctx, d, rngs=rngs)

        @nnx.split_rngs(splits=layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(r):
            return Block(d, heads, r)

        self.blocks = make(rngs)
        self.ln = nnx.LayerNorm(d, rngs=rngs)
        self.head = nnx.Linear(d, 256, use_bias=False, rngs=rngs)

    def __call__(self, ids):
        x = self.embed(ids) + self.pos(jnp.arange(ids.shape[1]))

        @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry)
        def run(block, x):
            return block(x)

        x = run(self.blocks, x)
        return self.head(self.ln(x))


class LinenMlp(nn.Module):
    """A Linen MLP with named layers: a bias-free ``hidden`` Dense, a ``norm`` (``layer`` or
    ``rms``), an ``out`` Dense."""

    norm: str = "layer"

    @nn.compact
    def __call__(self, x):
        norm = nn.LayerNorm(name="norm") if self.norm == "layer" else nn.RMSNorm(name="norm")
        return nn.Dense(2, name="out")(norm(nn.Dense(8, use_bias=False, name="hidden")(x)))
