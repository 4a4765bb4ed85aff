"""normwd.jax: roles from a Flax model's own modules and names, optax decay masks from them
(stacked layers' 2-D norm scales never decayed), the same decisions as normwd.torch's for the
twin architecture, and bad input refused naming it."""

import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")
nnx = pytest.importorskip("flax.nnx")

import normwd.jax as nwj  # noqa: E402
import normwd.torch as nwd  # noqa: E402
import torch  # noqa: E402


class Cnn(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 8, (3, 3), use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.head = nnx.Linear(8, 10, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.bn(self.conv(x))).mean((1, 2)))


def test_roles_and_mask_of_an_nnx_cnn_in_an_optimizer():
    """Conv kernel and head kernel decayed; BatchNorm's scale and bias and the head's bias not:
    with zero gradients AdamW's step is its decay alone, so only the decayed tensors move."""
    net = Cnn(nnx.Rngs(0))
    assert nwj.roles(net) == {"bn/bias": "norm-shift", "bn/scale": "norm-scale", "conv/kernel": "weight", "head/bias": "bias", "head/kernel": "weight"}
    opt = nnx.Optimizer(net, optax.adamw(1e-2, weight_decay=0.5, mask=nwj.decay_mask(net)), wrt=nnx.Param)
    before = jax.tree_util.tree_map(jnp.copy, nnx.state(net, nnx.Param))
    grads = jax.tree_util.tree_map(jnp.zeros_like, nnx.state(net, nnx.Param))
    opt.update(net, grads)
    after = nnx.state(net, nnx.Param)
    moved = {
        "/".join(str(getattr(k, "key", k)) for k in kp[:-1]): bool(jnp.any(a != b)) for (kp, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(before), jax.tree_util.tree_leaves_with_path(after))
    }
    assert moved == {"bn/bias": False, "bn/scale": False, "conv/kernel": True, "head/bias": False, "head/kernel": True}


class Block(nnx.Module):
    def __init__(self, rngs):
        self.ln = nnx.LayerNorm(16, rngs=rngs)
        self.fc = nnx.Linear(16, 16, rngs=rngs)

    def __call__(self, x):
        return x + self.fc(self.ln(x))


def test_stacked_layers_keep_their_norm_scales_out_of_decay():
    """nnx.vmap-ed blocks (as scanned layers): the LayerNorm scale is 2-D, which the usual
    `ndim > 1` mask decays; normwd's mask does not."""

    @nnx.vmap(in_axes=0, out_axes=0)
    def make(key):
        return Block(nnx.Rngs(key))

    blocks = make(jax.random.split(jax.random.key(0), 3))
    params = nnx.state(blocks, nnx.Param)
    shapes = {"/".join(str(getattr(k, "key", k)) for k in kp[:-1]): v.shape for kp, v in jax.tree_util.tree_leaves_with_path(params)}
    assert shapes["ln/scale"] == (3, 16) and shapes["fc/kernel"] == (3, 16, 16)
    mask = nwj.decay_mask(blocks)(params)
    flat = {"/".join(str(getattr(k, "key", k)) for k in kp[:-1]): m for kp, m in jax.tree_util.tree_leaves_with_path(mask)}
    assert flat == {"fc/bias": False, "fc/kernel": True, "ln/bias": False, "ln/scale": False}
    naive = jax.tree_util.tree_map(lambda p: p.ndim > 1, params)
    assert any(jax.tree_util.tree_leaves(naive)[i] for i, kp in enumerate(jax.tree_util.tree_leaves_with_path(params)) if "scale" in str(kp[0]))


def test_linen_params_and_the_torch_twin_agree():
    """A Linen params tree read by Flax's names gets the decisions normwd.torch's param_groups
    makes for the same architecture in PyTorch (an embedding, a bias-free Linear, LayerNorm,
    Linear). (A biased layer before a norm is invariant only with its bias, which torch's
    groups then decay together: that needs the invariance JAX does not measure yet.)"""
    params = {
        "params": {
            "Embed_0": {"embedding": jnp.ones((10, 4))},
            "Dense_0": {"kernel": jnp.ones((4, 8))},
            "LayerNorm_0": {"scale": jnp.ones(8), "bias": jnp.zeros(8)},
            "Dense_1": {"kernel": jnp.ones((8, 2)), "bias": jnp.zeros(2)},
        }
    }
    flat = {"/".join(str(k.key) for k in kp): m for kp, m in jax.tree_util.tree_leaves_with_path(nwj.decay_mask(params)(params))}
    ours = {k.replace("params/", ""): v for k, v in flat.items()}

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)
            self.fc0 = torch.nn.Linear(4, 8, bias=False)
            self.ln = torch.nn.LayerNorm(8)
            self.fc1 = torch.nn.Linear(8, 2)

        def forward(self, ids):
            return self.fc1(self.ln(self.fc0(self.emb(ids))))

    twin = Twin()
    decayed = {id(p) for g in nwd.param_groups(twin, weight_decay=0.1) if g["weight_decay"] > 0 for p in g["params"]}
    torch_says = {n: id(p) in decayed for n, p in twin.named_parameters()}
    pairs = {
        "Embed_0/embedding": "emb.weight",
        "Dense_0/kernel": "fc0.weight",
        "LayerNorm_0/scale": "ln.weight",
        "LayerNorm_0/bias": "ln.bias",
        "Dense_1/kernel": "fc1.weight",
        "Dense_1/bias": "fc1.bias",
    }
    assert {k: ours[k] for k in pairs} == {k: torch_says[v] for k, v in pairs.items()}


def test_bad_input_is_named():
    """An unknown leaf, a leaf that is not an array, a policy that needs scale-invariance and
    params the mask was not made for are refused naming them."""
    with pytest.raises(ValueError, match="Dense_0/gamma_prime"):
        nwj.roles({"Dense_0": {"gamma_prime": jnp.ones(3)}})
    with pytest.raises(TypeError, match="Dense_0/kernel"):
        nwj.roles({"Dense_0": {"kernel": "not an array"}})
    params = {"Dense_0": {"kernel": jnp.ones((2, 3))}}
    with pytest.raises(ValueError, match="scale-invariant-only"):
        nwj.decay_mask(params, policy="scale-invariant-only")
    with pytest.raises(ValueError, match="policy='nope'"):
        nwj.decay_mask(params, policy="nope")
    with pytest.raises(ValueError, match="Dense_1/kernel"):
        nwj.decay_mask(params)({"Dense_1": {"kernel": jnp.ones((2, 3))}})
    with pytest.raises(TypeError, match="model"):
        nwj.roles(3)
    # NaN parameters, and a model its inputs cannot be traced through.
    net = nnx.Sequential(nnx.Linear(4, 8, use_bias=False, rngs=nnx.Rngs(0)), nnx.LayerNorm(8, rngs=nnx.Rngs(0)))
    net.layers[0].kernel[...] = net.layers[0].kernel[...].at[0, 0].set(jnp.nan)
    for read in (nwj.measure_invariance, nwj.structural_invariance, nwj.output_layers):
        with pytest.raises(ValueError, match="layers/0/kernel holds NaN"):
            read(net, jnp.ones((2, 4)))
    net = nnx.Sequential(nnx.Linear(4, 8, use_bias=False, rngs=nnx.Rngs(0)), nnx.LayerNorm(8, rngs=nnx.Rngs(0)))
    for read in (nwj.measure_invariance, nwj.structural_invariance, nwj.output_layers):
        with pytest.raises(ValueError, match="example_inputs"):
            read(net, jnp.ones((2, 3)))


def test_measured_invariance_and_the_policies_that_need_it():
    """A conv kernel before BatchNorm is invariant per output channel, a bias-free dense kernel
    before LayerNorm as a whole, the head not at all (F1a, measured with jax.grad); the
    scale-invariance policies then decay exactly those kernels, or exactly the others."""
    net = Cnn(nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (8, 6, 6, 3))
    stats = jnp.copy(net.bn.mean[...])
    assert nwj.measure_invariance(net, x) == {"conv/kernel": "channel"}
    assert bool((net.bn.mean[...] == stats).all()), "the model's batch statistics are left as they were"
    params = nnx.state(net, nnx.Param)
    only = {"/".join(str(getattr(k, "key", k)) for k in kp[:-1]): m for kp, m in jax.tree_util.tree_leaves_with_path(nwj.decay_mask(net, "scale-invariant-only", example_inputs=x)(params))}
    assert [k for k, v in only.items() if v] == ["conv/kernel"]
    rest = {"/".join(str(getattr(k, "key", k)) for k in kp[:-1]): m for kp, m in jax.tree_util.tree_leaves_with_path(nwj.decay_mask(net, "none-on-scale-invariant", example_inputs=x)(params))}
    assert [k for k, v in rest.items() if v] == ["head/kernel"]
    mlp = nnx.Sequential(nnx.Linear(4, 8, use_bias=False, rngs=nnx.Rngs(0)), nnx.LayerNorm(8, rngs=nnx.Rngs(0)), nnx.Linear(8, 2, rngs=nnx.Rngs(0)))
    assert nwj.measure_invariance(mlp, jax.random.normal(jax.random.key(2), (5, 4))) == {"layers/0/kernel": "tensor"}
    with pytest.raises(ValueError, match="example_inputs"):
        nwj.measure_invariance(mlp, jnp.ones((5, 3)))
    with pytest.raises(TypeError, match="apply_fn"):
        nwj.measure_invariance({"Dense_0": {"kernel": jnp.ones((2, 3))}}, jnp.ones((1, 2)))


def test_audit_flags_the_ndim_mask_on_a_scanned_gpt():
    """The usual `ndim > 1` mask on a GPT with stacked blocks decays the 2-D LayerNorm and
    QK-norm scales and the embeddings: the audit names each; normwd's mask leaves none; Adam
    with L2 on the RMS-normed query kernels is flagged once invariance is measured."""
    import jax_models as jm

    net = jm.ScannedGPT(rngs=nnx.Rngs(0))
    naive = optax.adamw(1e-3, weight_decay=0.1, mask=lambda p: jax.tree_util.tree_map(lambda x: x.ndim > 1, p))
    found = {(m.code, m.param) for m in nwj.audit(net, naive).mistakes}
    assert {("norm-decayed", "blocks/ln1/scale"), ("norm-decayed", "blocks/q_norm/scale"), ("embedding-decayed", "embed/embedding")} <= found
    # The stacked shifts are 2-D as well; the last LayerNorm, outside the stack, is 1-D and missed by the rule.
    assert ("norm-decayed", "blocks/ln1/bias") in found and not any(p.startswith("ln/") for _, p in found)
    assert nwj.audit(net, optax.adamw(1e-3, weight_decay=0.1, mask=nwj.decay_mask(net))).mistakes == []
    ids = jnp.asarray(jm.kjv_bytes(33 * 4).reshape(4, 33))[:, :32]
    l2 = optax.chain(optax.add_decayed_weights(1e-4, mask=nwj.decay_mask(net)), optax.adam(1e-3))
    report = nwj.audit(net, l2, example_inputs=ids)
    assert report["blocks/q/kernel"].scale_invariant and report["blocks/q/kernel"].numeric == "yes (tensor)"
    assert ("adam-l2-on-scale-invariant", "blocks/q/kernel") in {(m.code, m.param) for m in report.mistakes}
    assert "blocks/q/kernel" in str(report)


class Tied(nnx.Module):
    """Logits from the embedding's transpose (a tied head)."""

    def __init__(self, rngs):
        self.embed = nnx.Embed(50, 16, rngs=rngs)
        self.fc = nnx.Linear(16, 16, use_bias=False, rngs=rngs)
        self.ln = nnx.RMSNorm(16, rngs=rngs)

    def __call__(self, ids):
        return self.embed.attend(self.ln(self.fc(self.embed(ids))))


def test_the_output_layer_and_muons_split_from_the_structure():
    """The head is the layer whose contraction makes the outputs (read from the jaxpr), the
    embedding where the head is tied to it. Muon's dimension numbers give optax.contrib.muon the
    stacked hidden kernels (each layer orthogonalized on its own) and leave the embeddings, the
    head and the 2-D stacked norm scales to AdamW, where optax's `ndim == 2` default does the
    opposite; the split trains."""
    import jax_models as jm

    gpt = jm.ScannedGPT(rngs=nnx.Rngs(0))
    ids = jnp.asarray(jm.kjv_bytes(33 * 4).reshape(4, 33))
    assert nwj.output_layers(gpt, ids[:, :32]) == {"head/kernel"}
    assert nwj.output_layers(jm.ResNet(8, nnx.Rngs(0)), jnp.ones((2, 8, 8, 1))) == {"head/kernel"}
    assert nwj.output_layers(Tied(nnx.Rngs(0)), jnp.zeros((2, 5), jnp.int32)) == {"embed/embedding"}
    dims = nwj.muon_dimension_numbers(gpt, ids[:, :32])
    params = nnx.state(gpt, nnx.Param)
    muon = {k for k, v in nwj.flat(dims(params)).items() if v is not None}
    assert muon == {f"blocks/{n}/kernel" for n in ("q", "k", "v", "proj", "up", "down")}
    assert nwj.flat(dims(params))["blocks/q/kernel"] == optax.contrib.MuonDimensionNumbers(reduction_axis=(1,), output_axis=2)
    default = {k for k, v in nwj.flat(jax.tree_util.tree_map(lambda x: x.ndim == 2, params)).items() if v}
    assert {"embed/embedding", "head/kernel", "blocks/ln1/scale"} <= default and "blocks/q/kernel" not in default
    opt = nnx.Optimizer(gpt, optax.contrib.muon(0.02, weight_decay=0.1, muon_weight_dimension_numbers=dims, adam_learning_rate=3e-3), wrt=nnx.Param)

    def loss(m):
        return optax.softmax_cross_entropy_with_integer_labels(m(ids[:, :-1]), ids[:, 1:]).mean()

    first = float(loss(gpt))
    step = nnx.jit(lambda m, o: o.update(m, nnx.grad(loss)(m)))
    for _ in range(30):
        step(gpt, opt)
    assert float(loss(gpt)) < first - 1.0
    cnn = Cnn(nnx.Rngs(0))
    x = jnp.ones((2, 6, 6, 3))
    assert {k for k, v in nwj.flat(nwj.muon_dimension_numbers(cnn, x)(nnx.state(cnn, nnx.Param))).items() if v is not None} == set()
    conv = nwj.flat(nwj.muon_dimension_numbers(cnn, x, conv=True)(nnx.state(cnn, nnx.Param)))
    assert conv["conv/kernel"] == optax.contrib.MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3) and conv["head/kernel"] is None
    # The head is read or named, never guessed.
    with pytest.raises(ValueError, match="example_inputs"):
        nwj.muon_dimension_numbers(cnn)
    named = nwj.flat(nwj.muon_dimension_numbers(cnn, conv=True, output={"head/kernel"})(nnx.state(cnn, nnx.Param)))
    assert named["head/kernel"] is None and named["conv/kernel"] is not None


def test_partition_labels_give_scale_invariant_kernels_their_own_settings():
    """`param_labels` sends the scale-invariant conv kernel to its own transformation, the head
    kernel to decay and BatchNorm's and the head's vectors to no decay."""
    net = Cnn(nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (8, 6, 6, 3))
    labels = nwj.param_labels(net, example_inputs=x, scale_invariant=True)
    assert nwj.flat(labels(nnx.state(net, nnx.Param))) == {
        "bn/bias": "no_decay",
        "bn/scale": "no_decay",
        "conv/kernel": "scale_invariant",
        "head/bias": "no_decay",
        "head/kernel": "decay",
    }
    tx = optax.partition({"decay": optax.adamw(1e-3, weight_decay=0.1), "no_decay": optax.adam(1e-3), "scale_invariant": optax.sgd(0.1)}, labels)
    report = nwj.audit(net, tx, example_inputs=x)
    assert (report["conv/kernel"].lr, report["conv/kernel"].weight_decay) == (pytest.approx(0.1), 0.0)
    assert ("scale-invariant-undecayed", "conv/kernel") in {(m.code, m.param) for m in report.mistakes}
    with pytest.raises(ValueError, match="example_inputs"):
        nwj.param_labels(net, scale_invariant=True)


def test_the_jaxpr_reading_agrees_with_the_measurement():
    """Scale-invariance read from the jaxpr (each kernel's scale followed to a normalization)
    equals the F1a measurement on a CNN with BatchNorm (per channel), an MLP with LayerNorm and a
    Linen one (whole), a ResNet with residual blocks (per channel), a scanned GPT whose queries
    and keys are RMS-normed per head (whole, through nnx.scan) and a model with a tied head; a
    conv with a bias before its BatchNorm is not shown invariant (the bias is added to it)."""
    import jax_models as jm

    cases = [
        (Cnn(nnx.Rngs(0)), jax.random.normal(jax.random.key(1), (8, 6, 6, 3)), None),
        (
            nnx.Sequential(nnx.Linear(4, 8, use_bias=False, rngs=nnx.Rngs(0)), nnx.LayerNorm(8, rngs=nnx.Rngs(0)), nnx.Linear(8, 2, rngs=nnx.Rngs(0))),
            jax.random.normal(jax.random.key(2), (5, 4)),
            None,
        ),
        (jm.ResNet(8, nnx.Rngs(0)), jax.random.normal(jax.random.key(3), (4, 8, 8, 1)), None),
        (jm.ScannedGPT(rngs=nnx.Rngs(0)), jnp.asarray(jm.kjv_bytes(33 * 4).reshape(4, 33))[:, :32], None),
        (Tied(nnx.Rngs(0)), jnp.asarray(jm.kjv_bytes(10).reshape(2, 5)) % 50, None),
        # Pooling between a conv and its BatchNorm; a max pooling after the norm.
        (
            nnx.Sequential(
                nnx.Conv(3, 4, (3, 3), use_bias=False, rngs=nnx.Rngs(0)), lambda x: nnx.avg_pool(x, (2, 2), (2, 2)), nnx.BatchNorm(4, rngs=nnx.Rngs(0)), lambda x: nnx.max_pool(x, (2, 2), (2, 2))
            ),
            jax.random.normal(jax.random.key(6), (4, 8, 8, 3)),
            None,
        ),
    ]

    linen = jm.LinenMlp(norm="rms")
    x = jax.random.normal(jax.random.key(4), (6, 4))
    params = linen.init(jax.random.key(5), x)["params"]
    cases.append((params, x, lambda p, x: linen.apply({"params": p}, x)))
    expected = [
        {"conv/kernel": "channel"},
        {"layers/0/kernel": "tensor"},
        {f"{b}/kernel": "channel" for b in ("stem", "block1/conv1", "block1/conv2", "block2/conv1", "block2/conv2")},
        {"blocks/q/kernel": "tensor", "blocks/k/kernel": "tensor"},
        {"fc/kernel": "tensor"},
        {"layers/0/kernel": "channel"},
        {"hidden/kernel": "tensor"},
    ]
    for (model, inputs, apply), want in zip(cases, expected):
        assert nwj.structural_invariance(model, inputs, apply) == want
        assert nwj.measure_invariance(model, inputs, apply) == want
    biased = nnx.Sequential(nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0)), nnx.BatchNorm(4, rngs=nnx.Rngs(0)))
    assert nwj.structural_invariance(biased, jnp.ones((2, 5, 5, 3))) == {}
    report = nwj.audit(jm.ResNet(8, nnx.Rngs(0)), example_inputs=cases[2][1])
    assert report["stem/kernel"].structural == report["stem/kernel"].numeric == "yes (channel)"


def test_the_resnet_and_its_torch_twin_get_the_same_masks_under_every_policy():
    """The Flax ResNet and the same network in PyTorch: normwd.jax's masks (the invariance measured
    on a batch) and normwd.torch's param_groups decay the same tensors under all four policies."""
    import jax_models as jm
    from torch import nn

    class TBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

        def forward(self, x):
            return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))

    class TResNet(nn.Module):
        def __init__(self, c=8):
            super().__init__()
            self.stem, self.bn = nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.block1, self.block2 = TBlock(c), TBlock(c)
            self.head = nn.Linear(c, 10)

        def forward(self, x):
            x = self.block1(torch.relu(self.bn(self.stem(x))))
            return self.head(self.block2(nn.functional.avg_pool2d(x, 2)).mean((2, 3)))

    flax_net, twin = jm.ResNet(8, nnx.Rngs(0)), TResNet()
    x = jax.random.normal(jax.random.key(0), (8, 8, 8, 1))
    tx = torch.randn(8, 1, 8, 8)
    names = {n: n.replace(".weight", "/kernel" if "conv" in n or "stem" in n or "head" in n else "/scale").replace(".bias", "/bias").replace(".", "/") for n, _ in twin.named_parameters()}
    for policy in ("exclude-norm-bias", "all", "scale-invariant-only", "none-on-scale-invariant"):
        mask = nwj.flat(nwj.decay_mask(flax_net, policy, example_inputs=x)(nnx.state(flax_net, nnx.Param)))
        decayed = {id(p) for g in nwd.param_groups(twin, 0.1, policy, example_inputs=tx) if g["weight_decay"] > 0 for p in g["params"]}
        torch_says = {names[n]: id(p) in decayed for n, p in twin.named_parameters()}
        assert mask == torch_says, policy
