"""normwd.jax.monitor: the settings read from optax's own transformations, the measurements
taken inside ``jit`` on a Flax ResNet with BatchNorm and on a scanned GPT, at equilibrium
within 15% of the theory (F7, F8), written in normwd's run format that ``normwd report``
draws, and a training never stopped by them."""

import json
import math
import os
import warnings

import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")
nnx = pytest.importorskip("flax.nnx")

import jax_models as jm  # noqa: E402
import normwd  # noqa: E402
import normwd.jax as nwj  # noqa: E402
from normwd.jax import _optax  # noqa: E402


def _rules(tx, params):
    paths = [nwj._roles._path(kp) for kp, _ in jax.tree_util.tree_leaves_with_path(params)]
    steps = _optax.pieces(tx, params, paths, _optax.injected_hyperparams(tx.init(params)))
    return {"/".join(p): _optax.rule(s) for p, s in steps.items()}


def test_settings_are_read_from_optax_itself():
    """adamw with a schedule and a mask, SGD with L2 before Nesterov momentum, Lion, values
    injected into the state, partition labels, and a transformation with no closed form."""
    params = {"dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)}}
    mask = {"dense": {"kernel": True, "bias": False}}
    sched = optax.cosine_decay_schedule(1e-2, 100)
    r = _rules(optax.adamw(sched, b1=0.8, weight_decay=0.3, mask=mask), params)
    k, b = r["dense/kernel"], r["dense/bias"]
    assert (k.optimizer, k.betas, k.decoupled, k.decayed, k.weight_decay) == ("adamw", (0.8, 0.999), True, True, 0.3)
    assert _optax.value(k.lr, 0) == pytest.approx(1e-2) and _optax.value(k.lr, 50) == pytest.approx(float(sched(50)))
    assert (b.optimizer, b.decayed, b.weight_decay) == ("adam", False, 0.0), "an undecayed leaf of adamw is under Adam"
    r = _rules(optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9, nesterov=True)), params)
    k = r["dense/kernel"]
    assert (k.optimizer, k.momentum, k.nesterov, k.decoupled, k.weight_decay, k.lr) == ("sgd", 0.9, True, False, 5e-4, pytest.approx(0.1))
    k = _rules(optax.lion(1e-4, weight_decay=1.0), params)["dense/kernel"]
    assert (k.optimizer, k.betas, k.weight_decay, k.lr) == ("lion", (0.9, 0.99), 1.0, pytest.approx(1e-4))
    k = _rules(optax.inject_hyperparams(optax.adamw)(learning_rate=3e-3, weight_decay=0.05), params)["dense/kernel"]
    assert (k.optimizer, "learning_rate" in k.injected, k.decayed) == ("adamw", True, True)
    labels = {"dense": {"kernel": "a", "bias": "b"}}
    r = _rules(optax.partition({"a": optax.sgd(0.1, momentum=0.9), "b": optax.adam(1e-3)}, labels), params)
    assert (r["dense/kernel"].optimizer, r["dense/bias"].optimizer) == ("sgd", "adam")
    k = _rules(optax.adamw(1e-3, nesterov=True), params)["dense/kernel"]
    assert k.optimizer is None and "Nesterov" in k.why
    k = _rules(optax.adafactor(1e-3), params)["dense/kernel"]
    assert k.optimizer is None and "closed form" in k.why


def _train_resnet(out, steps, every, lr=0.1, wd=5e-3, **kw):
    net = jm.ResNet(16, nnx.Rngs(0))
    x, y = jm.fashion_mnist(2048)
    tx = nwj.monitor(
        optax.chain(optax.add_decayed_weights(wd, mask=nwj.decay_mask(net)), optax.sgd(lr, momentum=0.9)),
        out,
        net,
        every=every,
        example_inputs=x[:64],
        **kw,
    )
    opt = nnx.Optimizer(net, tx, wrt=nnx.Param)

    @nnx.jit
    def step(net, opt, xb, yb):
        loss = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(xb), yb).mean()  # noqa: E731
        opt.update(net, nnx.grad(loss)(net))

    key = jax.random.key(1)
    for _ in range(steps):
        key, sub = jax.random.split(key)
        idx = jax.random.randint(sub, (64,), 0, len(x))
        step(net, opt, x[idx], y[idx])
    tx.close()
    return tx


def test_resnet_with_batchnorm_at_f7s_equilibrium_and_reported(tmp_path):
    """Every conv kernel (before a BatchNorm) measured scale-invariant per channel and at F7's
    angle within 15% after 4 relaxation times (lr*wd/(1-momentum) = 5e-3 per step; 800 steps,
    the last 400 averaged); BatchNorm's scales and shifts and the head's bias never in the mask;
    ``normwd report`` draws the run."""
    out = str(tmp_path / "run")
    tx = _train_resnet(out, 800, 10)
    settings = json.load(open(os.path.join(out, "monitor.json")))
    tensors = {t["name"]: t for t in settings["tensors"]}
    convs = [n for n in tensors if n.endswith("kernel") and n != "head/kernel"]
    assert len(convs) == 5 and all(tensors[n]["scale_invariant"] for n in convs)
    assert all(t["weight_decay"] == 0 for n, t in tensors.items() if "bn" in n)
    assert tx.steps == 800
    for name in convs:
        late = [r for r in tx.records if r["path"] == name and r["step"] > 400]
        assert len(late) == 40
        measured = sum(r["angle"] for r in late) / len(late)
        predicted = late[-1]["pred_angle"]
        assert abs(measured / predicted - 1) < 0.15, (name, measured, predicted)
        assert late[-1]["pred_basis"] == "scale-invariant" and len(late[-1]["channel_angle_q"]) == 5
    html = normwd.report(out, out=str(tmp_path / "report"))
    assert os.path.getsize(html) > 10_000


def _gpt_steps(net, tx, steps, seed=0):
    data = jm.kjv_bytes(200_000)
    opt = nnx.Optimizer(net, tx, wrt=nnx.Param)

    @nnx.jit
    def step(net, opt, ids):
        loss = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(ids[:, :-1]), ids[:, 1:]).mean()  # noqa: E731
        value, grads = nnx.value_and_grad(loss)(net)
        opt.update(net, grads)
        return value

    rng = jax.random.key(seed)
    losses = []
    for _ in range(steps):
        rng, sub = jax.random.split(rng)
        starts = jax.random.randint(sub, (16,), 0, len(data) - 33)
        ids = jnp.stack([jax.lax.dynamic_slice(jnp.asarray(data), (s,), (33,)) for s in starts])
        losses.append(float(step(net, opt, ids)))
    return losses


def test_scanned_gpt_stacked_scales_and_f8s_equilibrium(tmp_path):
    """A GPT whose blocks are stacked on a layer axis (nnx.vmap, run by nnx.scan): the norms'
    2-D scales and the embeddings never decayed under normwd's mask; the RMS-normed queries' and
    keys' kernels measured scale-invariant and, layer by layer, at F8's angle within 15% after
    4 relaxation times (AdamW at lr*wd = 1e-2 per step, values injected into the state)."""
    net = jm.ScannedGPT(rngs=nnx.Rngs(0))
    ids = jnp.asarray(jm.kjv_bytes(33 * 8).reshape(8, 33))[:, :32]
    mask = nwj.decay_mask(net)
    flat = {"/".join(nwj._roles._path(kp)): m for kp, m in jax.tree_util.tree_leaves_with_path(mask(nnx.state(net, nnx.Param)))}
    assert not any(flat[k] for k in flat if "ln" in k or "norm" in k or "embed" in k or "pos" in k)
    assert flat["blocks/q/kernel"] and flat["blocks/up/kernel"]
    out = str(tmp_path / "gpt")
    tx = nwj.monitor(optax.inject_hyperparams(optax.adamw, static_args=("mask",))(learning_rate=1e-2, weight_decay=1.0, mask=mask), out, net, every=5, example_inputs=ids)
    with tx:
        losses = _gpt_steps(net, tx, 400)
    assert losses[-1] < losses[0] - 1.0, "the GPT learns"
    for name in ("blocks/q/kernel", "blocks/k/kernel"):
        for layer in range(2):
            late = [r for r in tx.records if r["path"] == f"{name}[{layer}]" and r["step"] > 200]
            assert len(late) == 40 and late[-1]["pred_basis"] == "scale-invariant"
            measured = sum(r["angle"] for r in late) / len(late)
            predicted = late[-1]["pred_angle"]
            assert abs(measured / predicted - 1) < 0.15, (name, layer, measured, predicted)
    # The stacked norms' scales are measured layer by layer, undecayed: no prediction.
    scales = [r for r in tx.records if r["path"].startswith("blocks/ln1/scale[")]
    assert scales and all(r["pred_angle"] is None for r in scales)


def test_a_diverging_training_is_warned_about_and_never_stopped(tmp_path):
    """A NaN weight: one warning, its records left out, the training goes on; a failure
    inside the host side (the run's file closed under it) stops the measurements, not the
    training; bad arguments are refused naming them."""
    net = nnx.Sequential(nnx.Linear(4, 8, use_bias=False, rngs=nnx.Rngs(0)), nnx.LayerNorm(8, rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(0), (16, 4))
    tx = nwj.monitor(optax.sgd(0.1), str(tmp_path / "a"), net, every=1)
    opt = nnx.Optimizer(net, tx, wrt=nnx.Param)
    grads = nnx.grad(lambda m: m(x).mean())(net)
    bad = jax.tree_util.tree_map(lambda g: g * jnp.nan, grads)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.update(net, grads)
        opt.update(net, bad)
        opt.update(net, grads)
        tx.close()
    assert [r["step"] for r in tx.records if r["path"] == "layers/0/kernel"] == [1]
    assert sum("NaN or inf" in str(w.message) for w in caught) == 2, [str(w.message) for w in caught]
    net = nnx.Sequential(nnx.Linear(4, 8, use_bias=False, rngs=nnx.Rngs(0)))
    tx = nwj.monitor(optax.sgd(0.1), str(tmp_path / "b"), net, every=1)
    opt = nnx.Optimizer(net, tx, wrt=nnx.Param)
    tx._host._file.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before = jnp.copy(net.layers[0].kernel[...])
        opt.update(net, nnx.grad(lambda m: m(x).mean())(net))
        jax.effects_barrier()
    assert bool((net.layers[0].kernel[...] != before).any()), "the step happened"
    with pytest.raises(ValueError, match="every=0"):
        nwj.monitor(optax.sgd(0.1), str(tmp_path / "c"), net, every=0)
    with pytest.raises(ValueError, match="already holds a run"):
        nwj.monitor(optax.sgd(0.1), str(tmp_path / "a"), net)
    with pytest.raises(TypeError, match="tx"):
        nwj.monitor("sgd", str(tmp_path / "d"), net)
    other = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="layers/0/bias"):
        nnx.Optimizer(other, nwj.monitor(optax.sgd(0.1), str(tmp_path / "e"), net), wrt=nnx.Param)


def test_a_plain_optax_loop_on_a_linen_params_tree(tmp_path):
    """``tx.update(grads, state, params)`` outside NNX, with Linen's names for the roles and an
    ``apply_fn`` for the invariance: the angles are those of the weights themselves."""
    model = jm.LinenMlp(norm="layer")
    x = jax.random.normal(jax.random.key(0), (32, 4))
    params = model.init(jax.random.key(1), x)["params"]
    apply = lambda p, x: model.apply({"params": p}, x)  # noqa: E731
    tx = nwj.monitor(optax.adamw(1e-2, weight_decay=0.1, mask=nwj.decay_mask(params)), str(tmp_path / "run"), params, every=2, example_inputs=x, apply_fn=apply)
    state = tx.init(params)
    history = [params]
    for _ in range(4):
        grads = jax.grad(lambda p: (apply(p, x) ** 2).mean())(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        history.append(params)
    tx.close()
    recs = [r for r in tx.records if r["path"] == "hidden/kernel"]
    assert [r["step"] for r in recs] == [2, 4]
    for r in recs:
        w0, w1 = history[r["step"] - 1]["hidden"]["kernel"], history[r["step"]]["hidden"]["kernel"]
        cos = float((w0 * w1).sum() / jnp.sqrt((w0 * w0).sum() * (w1 * w1).sum()))
        assert r["angle"] == pytest.approx(math.acos(min(1.0, cos)), rel=1e-3, abs=1e-6)
        assert r["pred_basis"] == "scale-invariant"


def test_optax_muon_on_the_scanned_gpt_at_f18(tmp_path):
    """optax.contrib.muon on the stacked hidden kernels (normwd's dimension numbers), its
    Nesterov AdamW on the rest: the monitor reads Muon's momentum and decay from optax and predicts F18 from each
    layer's shape; the RMS-normed queries and keys are at it within 15% after 4 relaxation times
    (lr*wd = 1e-2; measured here: 3-11% above)."""
    net = jm.ScannedGPT(rngs=nnx.Rngs(0))
    ids = jnp.asarray(jm.kjv_bytes(33 * 8).reshape(8, 33))[:, :32]
    dims = nwj.muon_dimension_numbers(net, ids)
    tx = optax.contrib.muon(0.02, weight_decay=0.5, muon_weight_dimension_numbers=dims, adam_learning_rate=3e-3)
    with nwj.monitor(tx, str(tmp_path / "run"), net, every=5, example_inputs=ids) as mon:
        _gpt_steps(net, mon, 400)
    tensors = {t["name"]: t for t in json.load(open(tmp_path / "run" / "monitor.json"))["tensors"]}
    assert tensors["blocks/q/kernel"]["optimizer"] == "muon"
    # optax's Muon gives its AdamW branch Nesterov momentum too (nesterov=True): no closed form.
    assert tensors["head/kernel"]["optimizer"] is None and "Nesterov" in tensors["head/kernel"]["no_prediction"]
    for name in ("blocks/q/kernel", "blocks/k/kernel"):
        for layer in range(2):
            late = [r for r in mon.records if r["path"] == f"{name}[{layer}]" and r["step"] > 200]
            measured = sum(r["angle"] for r in late) / len(late)
            assert late[-1]["pred_basis"] == "scale-invariant"
            assert abs(measured / late[-1]["pred_angle"] - 1) < 0.15, (name, layer, measured, late[-1]["pred_angle"])
