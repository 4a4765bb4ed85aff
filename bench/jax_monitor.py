#!/usr/bin/env python3
"""The cost of normwd.jax.monitor per training step, in the same script as the run without it:
each model trained (an ``nnx.jit`` step with ``nnx.Optimizer``) alternately with the plain optax
transformation, with ``monitor(tx, every=10)``, with ``every=1`` and plain again (the control: the
two plain rows differ by the host's noise), in rounds; prints the median step time of each and the
difference from the first plain run.

Models (python/tests/jax_models.py): resnet (a ResNet with BatchNorm, 32 channels, Fashion-MNIST
batch 128, SGD with momentum and L2), gpt (the scanned GPT, 4 layers of 256, 8x128 bytes of the
King James text, AdamW). JAX on the CPU.

Run: bench/.venv/bin/python bench/jax_monitor.py --model gpt   (scripts/python-env.sh installs the package)
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python", "tests"))
import jax_models as jm  # noqa: E402
import normwd.jax as nwj  # noqa: E402


def setup(name):
    """(model, optax transformation, batch, loss function) for model ``name``."""
    if name == "resnet":
        net = jm.ResNet(32, nnx.Rngs(0))
        x, y = jm.fashion_mnist(128)
        tx = optax.chain(optax.add_decayed_weights(5e-4, mask=nwj.decay_mask(net)), optax.sgd(0.1, momentum=0.9))
        return net, tx, (x, y), lambda m, b: optax.softmax_cross_entropy_with_integer_labels(m(b[0]), b[1]).mean()
    net = jm.ScannedGPT(d=256, heads=8, layers=4, ctx=128, rngs=nnx.Rngs(0))
    ids = jnp.asarray(jm.kjv_bytes(8 * 129).reshape(8, 129))
    tx = optax.adamw(1e-3, weight_decay=0.1, mask=nwj.decay_mask(net))
    return net, tx, ids, lambda m, b: optax.softmax_cross_entropy_with_integer_labels(m(b[:, :-1]), b[:, 1:]).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["resnet", "gpt"], default="gpt")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40, help="steps per round and variant")
    args = ap.parse_args()
    runs = {}
    monitors = []
    # A second plain run is the control: the gap between the two plain rows is this host's noise.
    for variant, every in (("plain", None), ("every=10", 10), ("every=1", 1), ("plain (control)", None)):
        net, tx, batch, loss_fn = setup(args.model)
        if every is not None:
            example = batch[0][:16] if isinstance(batch, tuple) else batch[:4, :-1]
            tx = nwj.monitor(tx, tempfile.mkdtemp(prefix="normwd-jax-bench-"), net, every=every, example_inputs=example)
            monitors.append(tx)
        opt = nnx.Optimizer(net, tx, wrt=nnx.Param)

        @nnx.jit
        def step(net, opt, batch, loss_fn=loss_fn):
            value, grads = nnx.value_and_grad(loss_fn)(net, batch)
            opt.update(net, grads)
            return value

        for _ in range(3):
            jax.block_until_ready(step(net, opt, batch))
        runs[variant] = (net, opt, step, batch, [])
    for _ in range(args.rounds):
        for variant, (net, opt, step, batch, times) in runs.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                out = step(net, opt, batch)
            jax.block_until_ready(out)
            jax.effects_barrier()
            times.append((time.perf_counter() - t) / args.steps)
    for m in monitors:
        m.close()
    base = statistics.median(runs["plain"][4])
    print(f"model {args.model}, JAX {jax.__version__} on {jax.devices()[0].platform}, {args.rounds} rounds of {args.steps} steps, median step time")
    print("| variant | step (ms) | against plain |")
    print("|---|---:|---:|")
    for variant, (_, _, _, _, times) in runs.items():
        med = statistics.median(times)
        print(f"| {variant} | {med * 1e3:.2f} | {med / base - 1:+.1%} |")


if __name__ == "__main__":
    main()
