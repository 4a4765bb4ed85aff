"""``normwd.torch.audit`` on architectures not written here (timm, Hugging Face) and on custom
code, with their usual optimizers: roles, scale-invariance from the graph and measured, and the
mistakes flagged."""

import copy

import normwd.torch as nwd
import pytest
import torch
from models import TinyLM

timm = pytest.importorskip("timm", reason="timm is installed by scripts/test.sh")
transformers = pytest.importorskip("transformers", reason="transformers is installed by scripts/test.sh")


def by_role(report, role):
    return [p for p in report.params if p.role == role]


def codes(report, name):
    return sorted(m.code for m in report.mistakes if m.param == name)


def test_resnet18_convs_feeding_batch_norm_are_invariant_per_channel():
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False)
    # timm zero-initializes each block's last batch norm scale, which silences the block; a
    # trained network's are not zero.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    report = nwd.audit(model, opt, example_inputs=torch.randn(4, 3, 64, 64))
    convs = [p for p in report.params if p.role == "weight" and len(p.shape) == 4]
    assert len(convs) == 20
    for p in convs:
        assert (p.scale_invariant, p.granularity, p.structural, p.numeric) == (True, "channel", "yes (channel)", "yes (channel)"), p
    fc = report["fc.weight"]
    assert not fc.scale_invariant and fc.numeric.startswith("no")
    # SGD(model.parameters(), weight_decay=...) decays every batch norm parameter and fc.bias.
    assert len(by_role(report, "norm-scale")) == 20
    for p in by_role(report, "norm-scale") + by_role(report, "norm-shift"):
        assert codes(report, p.name) == ["norm-decayed"], p.name
    assert codes(report, "fc.bias") == ["bias-decayed"]
    assert "ERROR norm-decayed" in str(report)


def test_convnext_layer_norms_make_their_convs_invariant_as_a_tensor():
    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", pretrained=False)
    report = nwd.audit(model, example_inputs=torch.randn(2, 3, 64, 64))
    dw = [p for p in report.params if p.name.endswith("conv_dw.weight")]
    assert dw
    for p in dw:
        # Depthwise conv -> LayerNorm over channels: the whole kernel, with its bias.
        assert p.structural == "yes (tensor) with bias" and p.scale_invariant and p.granularity == "tensor", p
    for p in report.params:
        if p.name.endswith(("mlp.fc1.weight", "mlp.fc2.weight")):
            assert not p.scale_invariant and p.structural == "no" and p.numeric.startswith("no"), p
    # A disagreement is explained: the downsampling convs feed residual branches that the
    # 1e-6 layer scale silences at initialization.
    down = report["stages.1.downsample.1.weight"]
    assert down.structural == "no" and down.scale_invariant and "layer scale" in down.note


def test_vit_qk_norm_makes_the_q_and_k_rows_invariant_per_head():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, qk_norm=True, img_size=32)
    dim, head = 192, 64
    # nanoGPT's rule: decay everything with dim >= 2.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=1e-3)
    report = nwd.audit(model, opt, example_inputs=torch.randn(2, 3, 32, 32))
    qkv = [p for p in report.params if p.name.endswith("attn.qkv.weight")]
    assert len(qkv) == 12
    for p in qkv:
        # q and k (rows 0-383) feed q_norm / k_norm per head; v does not.
        assert p.structural == f"partial (head of {head})" and p.numeric == f"rows 0-{2 * dim - 1} with bias" and not p.scale_invariant, p
    assert {p.name for p in by_role(report, "token")} == {"cls_token", "pos_embed"}
    assert codes(report, "pos_embed") == ["embedding-decayed"] and codes(report, "cls_token") == ["embedding-decayed"]
    assert not any(m.code == "norm-decayed" for m in report.mistakes)


def test_gpt2_untraceable_is_measured_and_its_embeddings_flagged():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    model = transformers.GPT2LMHeadModel(cfg)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=3e-3)
    report = nwd.audit(model, opt, example_inputs=torch.randint(0, 64, (2, 16)))
    # torch.fx cannot trace it; the forward pass run for the measurement was recorded instead.
    assert not report.notes, report.notes
    assert {p.name for p in by_role(report, "embedding")} == {"transformer.wte.weight", "transformer.wpe.weight"}
    assert {p.name for p in by_role(report, "norm-scale")} == {
        "transformer.h.0.ln_1.weight",
        "transformer.h.0.ln_2.weight",
        "transformer.h.1.ln_1.weight",
        "transformer.h.1.ln_2.weight",
        "transformer.ln_f.weight",
    }
    # Pre-LN: no Conv1D feeds a norm directly, and none measures invariant.
    weights = by_role(report, "weight")
    assert weights and all(not p.scale_invariant and p.structural == "no" and p.numeric.startswith("no") for p in weights), [(p.name, p.structural, p.numeric) for p in weights]
    assert sorted({m.param for m in report.mistakes}) == ["transformer.wpe.weight", "transformer.wte.weight"]
    # Without inputs there is nothing to record: said, with what to give.
    bare = nwd.audit(model, opt)
    assert any(n.startswith("torch.fx cannot trace the model") and "give a batch" in n for n in bare.notes), bare.notes


def test_qwen3_qk_norm_found_in_the_recorded_forward_pass():
    """torch.fx cannot trace a Hugging Face model; the forward pass recorded with the example
    inputs shows q_proj and k_proj reaching only their per-head RMSNorm (QK-norm), and the
    measurement agrees per head; v, o and the MLP are not invariant."""
    torch.manual_seed(0)
    cfg = transformers.Qwen3Config(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    model = transformers.Qwen3ForCausalLM(cfg)
    ids = torch.randint(0, 97, (2, 12))
    report = nwd.audit(model, example_inputs={"input_ids": ids, "labels": ids})
    assert not report.notes, report.notes
    for layer in range(2):
        for proj in ("q_proj", "k_proj"):
            p = report[f"model.layers.{layer}.self_attn.{proj}.weight"]
            assert (p.structural, p.numeric, p.scale_invariant, p.granularity) == ("yes (head of 16)", "yes (head of 16)", True, "head of 16"), p
        for proj in ("self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            p = report[f"model.layers.{layer}.{proj}.weight"]
            assert p.structural == "no" and p.numeric.startswith("no (") and not p.scale_invariant, p


def test_a_tokenizer_batch_is_taken_as_keyword_inputs():
    """A Hugging Face tokenizer's batch (a dict) is passed as keyword arguments, and measures
    what the positional form measures."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=1, n_head=2)
    model = transformers.GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 64, (2, 16))
    batch = transformers.BatchEncoding({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    by_kwargs = nwd.audit(model, example_inputs=batch)
    positional = nwd.audit(model, example_inputs=ids)
    assert [(p.name, p.scale_invariant, p.numeric.split(" ")[0]) for p in by_kwargs.params] == [(p.name, p.scale_invariant, p.numeric.split(" ")[0]) for p in positional.params]
    assert any(p.numeric != "-" for p in by_kwargs.params), "it measured"


def test_custom_rmsnorm_and_a_bare_position_parameter():
    torch.manual_seed(0)
    model = TinyLM()
    report = nwd.audit(model, example_inputs=torch.randint(0, 16, (2, 8)))
    assert report["norm.weight"].role == "norm-scale"
    assert report["pos"].role == "token"
    assert report["tok.weight"].role == "embedding"
    down = report["down.weight"]
    assert (down.structural, down.numeric, down.scale_invariant) == ("yes (tensor)", "yes (tensor)", True)
    # up -> ReLU -> down (no bias) -> norm: up is invariant too, with its bias (ReLU keeps a
    # positive scale of its whole input, not of the weight alone).
    up = report["up.weight"]
    assert (up.structural, up.numeric, up.scale_invariant) == ("yes (tensor) with bias", "yes (tensor) with bias", True)
    assert not report["head.weight"].scale_invariant and report["head.weight"].numeric.startswith("no")


def test_groups_and_their_mistakes():
    model = TinyLM()
    extra = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match=r"optimizer.param_groups\[0\]\['params'\]\[1\] \(shape \(3,\)\) is not a parameter of the model"):
        nwd.audit(model, torch.optim.SGD([model.head.weight, extra], lr=0.1))
    with pytest.raises(ValueError, match=r"optimizer.param_groups\[0\]\['lr'\]=nan: expected a finite number"):
        nwd.audit(model, torch.optim.SGD(model.parameters(), lr=float("nan")))
    twice = torch.optim.SGD([{"params": [model.head.weight]}, {"params": [model.down.weight], "weight_decay": 0.0}], lr=0.1)
    # torch refuses a parameter in two groups when they are built, not when they are edited.
    twice.param_groups[1]["params"].append(model.head.weight)
    report = nwd.audit(model, twice)
    assert codes(report, "head.weight") == ["two-groups"]
    assert codes(report, "down.weight") == ["scale-invariant-undecayed"]
    assert codes(report, "norm.weight") == ["no-group"]
    adam = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    assert "adam-l2-on-scale-invariant" in codes(nwd.audit(model, adam), "down.weight")
    with pytest.raises(ValueError, match=r"example_inputs: the model.s forward and backward pass on them raised"):
        nwd.audit(model, example_inputs=torch.randn(2, 8))
    with torch.no_grad():
        model.down.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"model: down.weight holds 1 NaN/inf values of 1024"):
        nwd.audit(model)


def test_json_and_wrappers():
    model = TinyLM()
    # torch.compile wraps lazily (nothing is compiled until a forward pass): its names are the model's.
    compiled = nwd.audit(torch.compile(model), torch.optim.SGD(model.parameters(), lr=0.1))
    assert {p.name for p in compiled.params} == {p.name for p in nwd.audit(model).params}
    report = nwd.audit(torch.nn.DataParallel(model), torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-4))
    data = report.to_dict()
    assert {p["name"] for p in data["params"]} >= {"tok.weight", "pos", "down.weight"}
    assert all({"param", "code", "severity", "why"} <= set(m) for m in data["mistakes"])
    assert '"code": "embedding-decayed"' in report.to_json()


def test_weights_the_outputs_do_not_depend_on_are_said_in_one_line():
    """Behind a zero-initialised scale (timm's last norm of a residual block) the outputs do not
    depend on a weight, so rescaling it measures nothing: the table says so once for all of them."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, bias=False), torch.nn.BatchNorm2d(4))
    torch.nn.init.zeros_(net[4].weight)
    report = nwd.audit(net, example_inputs=torch.randn(2, 3, 8, 8))
    assert report["0.weight"].numeric == report["3.weight"].numeric == "no effect"
    assert report["0.weight"].scale_invariant, "the graph's verdict stands"
    said = [line for line in str(report).splitlines() if "do not depend" in line]
    assert said == [line for line in said if line.startswith("0.weight, 3.weight: ")] and len(said) == 1, str(report)


def test_the_measurement_leaves_the_model_and_the_random_state_as_they_were():
    """The measurement runs on the model's own parameters: its weights, batch-norm running
    statistics, modes, norms' epsilon, .grad and the random state are as they were after it; a
    bfloat16 copy gets the float32 model's verdicts (measured in float32)."""
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    model.layer1[0].bn1.eps = 1e-3
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    rng = torch.get_rng_state()
    report = nwd.audit(model, example_inputs=x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(grads[n], p.grad) for n, p in model.named_parameters())
    assert torch.equal(rng, torch.get_rng_state())
    assert not any(m.training for m in model.modules()) and model.layer1[0].bn1.eps == 1e-3
    half = nwd.audit(copy.deepcopy(model).bfloat16(), example_inputs=x.bfloat16())
    verdict = lambda r: [(p.name, p.scale_invariant, p.granularity) for p in r.params]  # noqa: E731
    assert verdict(half) == verdict(report)
    assert sum(p.scale_invariant for p in report.params) == 20
    # At 32 px layer4's maps are 1x1: its batch norms see 2 values per channel, whatever feeds
    # them; the measurement says it cannot tell and the graph's verdict stands.
    down = report["layer4.0.downsample.0.weight"]
    assert down.numeric == "undefined" and down.scale_invariant and "only 2 value(s) per channel" in down.note


def _hf_cases():
    T = transformers
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    small = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    return {
        "gpt2": (lambda: T.GPT2LMHeadModel(T.GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2)), {"input_ids": ids}),
        "llama": (lambda: T.LlamaForCausalLM(T.LlamaConfig(num_key_value_heads=2, **small)), {"input_ids": ids}),
        "qwen2": (lambda: T.Qwen2ForCausalLM(T.Qwen2Config(num_key_value_heads=2, **small)), {"input_ids": ids}),
        "qwen3": (lambda: T.Qwen3ForCausalLM(T.Qwen3Config(num_key_value_heads=2, head_dim=8, **small)), {"input_ids": ids}),
        "mistral": (lambda: T.MistralForCausalLM(T.MistralConfig(num_key_value_heads=2, **small)), {"input_ids": ids}),
        "olmo2": (lambda: T.Olmo2ForCausalLM(T.Olmo2Config(**small)), {"input_ids": ids}),
        "bert": (lambda: T.BertForMaskedLM(T.BertConfig(**small)), {"input_ids": ids}),
        "t5": (lambda: T.T5ForConditionalGeneration(T.T5Config(vocab_size=100, d_model=32, d_ff=64, num_layers=2, num_heads=4, d_kv=8)), {"input_ids": ids, "decoder_input_ids": ids}),
        "vit": (
            lambda: T.ViTForImageClassification(T.ViTConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)),
            {"pixel_values": torch.randn(2, 3, 32, 32)},
        ),
        "mamba": (lambda: T.MambaForCausalLM(T.MambaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, state_size=8)), {"input_ids": ids}),
    }


#: What is scale-invariant in each (layer-local names): pre-norm models nothing, every matrix
#: feeding the residual stream; Qwen3 its QK-normed projections per head; OLMo2 (post-norm, QK-norm
#: over the full width) q, k, v (attention is linear in the values), o, up (a gate's other factor)
#: and down, not the gate behind SiLU.
_INVARIANT = {
    "qwen3": {"self_attn.q_proj", "self_attn.k_proj"},
    "olmo2": {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj"},
}


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2", "qwen3", "mistral", "olmo2", "bert", "t5", "vit", "mamba"])
def test_hugging_face_architectures_recorded_and_measured(arch):
    """torch.fx traces none of them; the recorded forward pass gives each a graph, and on every
    weight the graph's verdict and the measurement's agree."""
    torch.manual_seed(0)
    make, inputs = _hf_cases()[arch]
    report = nwd.audit(make(), example_inputs=inputs)
    assert not report.notes, report.notes
    weights = [p for p in report.params if p.role == "weight" and len(p.shape) >= 2]
    assert weights and all(p.structural != "-" for p in weights)
    for p in weights:
        if p.numeric not in ("no effect", "undefined"):
            assert p.structural.split(" ")[0] == p.numeric.split(" ")[0], (p.name, p.structural, p.numeric)
    found = {".".join(p.name.split(".")[-3:-1]) for p in weights if p.scale_invariant}
    assert found == _INVARIANT.get(arch, set()), found


def test_inputs_for_a_part_of_the_model():
    """A wrapper that is never called itself (a LightningModule without forward): the inputs
    are its part's, named by ``submodule``, and the verdicts come under the wrapper's names."""

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Sequential(torch.nn.Linear(8, 16, bias=False), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 4))

    torch.manual_seed(0)
    wrapper = Wrapper()
    report = nwd.audit(wrapper, example_inputs=torch.randn(8, 8), submodule="model")
    first = report["model.0.weight"]
    assert (first.structural, first.numeric, first.scale_invariant) == ("yes (channel)", "yes (channel)", True)
    assert report["model.3.weight"].numeric.startswith("no (")
    with pytest.raises(ValueError, match=r"submodule='net': Wrapper has no such submodule"):
        nwd.audit(wrapper, example_inputs=torch.randn(8, 8), submodule="net")
    with pytest.raises(TypeError, match=r"submodule: expected a submodule's name"):
        nwd.audit(wrapper, example_inputs=torch.randn(8, 8), submodule=3)
