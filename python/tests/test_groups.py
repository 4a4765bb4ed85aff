"""``normwd.torch.param_groups``: the four policies on a timm ResNet, the scale-invariant group
set apart, and the errors."""

import normwd.torch as nwd
import pytest
import torch
from models import TinyLM

timm = pytest.importorskip("timm", reason="timm is installed by scripts/test.sh")


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False)


def decayed_names(model, groups):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}


def test_each_policy_decays_what_it_names(resnet):
    convs = {n for n, p in resnet.named_parameters() if p.dim() == 4}
    everything = {n for n, _ in resnet.named_parameters()}
    expect = {
        "exclude-norm-bias": convs | {"fc.weight"},
        "all": everything,
        "scale-invariant-only": convs,
        "none-on-scale-invariant": {"fc.weight"},
    }
    for policy, names in expect.items():
        groups = nwd.param_groups(resnet, weight_decay=1e-4, policy=policy)
        assert decayed_names(resnet, groups) == names, policy
        held = [p for g in groups for p in g["params"]]
        assert len(held) == len(everything) == len({id(p) for p in held}), "every parameter once"
        torch.optim.SGD(groups, lr=0.1, momentum=0.9)


def test_the_scale_invariant_group_is_set_apart_and_audits_clean(resnet):
    groups = nwd.param_groups(resnet, weight_decay=1e-4, si_lr=0.2, si_weight_decay=5e-4)
    si = next(g for g in groups if g["name"] == "scale-invariant")
    assert (si["lr"], si["weight_decay"], len(si["params"])) == (0.2, 5e-4, 20)
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    assert nwd.audit(resnet, opt).mistakes == []


def test_bad_arguments_name_themselves():
    model = TinyLM()
    with pytest.raises(ValueError, match=r"policy='timm': expected one of all, exclude-norm-bias"):
        nwd.param_groups(model, 1e-4, policy="timm")
    with pytest.raises(ValueError, match=r"weight_decay=nan: expected a finite number >= 0"):
        nwd.param_groups(model, float("nan"))
    with pytest.raises(ValueError, match=r"si_lr=0: expected a finite number > 0"):
        nwd.param_groups(model, 1e-4, si_lr=0)


def test_tokens_and_no_weight_decay_are_never_decayed():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32)
    decayed = decayed_names(vit, nwd.param_groups(vit, weight_decay=0.05))
    assert "pos_embed" not in decayed and "cls_token" not in decayed
    assert "blocks.0.attn.qkv.weight" in decayed
    model = TinyLM()
    decayed = decayed_names(model, nwd.param_groups(model, 1e-4, no_weight_decay=["head.weight"]))
    # up's bias goes with its weight: the two are invariant only together (the test below).
    assert decayed == {"up.weight", "up.bias", "down.weight"}


def test_bad_arguments_are_named():
    net = torch.nn.Sequential(torch.nn.Linear(2, 4, bias=False), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    # One name given as a string would be taken character by character.
    with pytest.raises(TypeError, match=r"no_weight_decay='0.weight': expected a list of parameter names, e.g. \['0.weight'\]"):
        nwd.param_groups(net, 1e-4, no_weight_decay="0.weight")
    with pytest.raises(ValueError, match=r"no_weight_decay: '0.wieght' is not a parameter of the model \(its names run 0.weight"):
        nwd.param_groups(net, 1e-4, no_weight_decay=["0.wieght"])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"model: expected a torch.nn.Module, got NoneType"):
        nwd.audit(None)
    with pytest.raises(TypeError, match=r"model: expected a torch.nn.Module, got SGD \(the model comes first"):
        nwd.audit(opt, net)
    with pytest.raises(TypeError, match=r"model: expected a torch.nn.Module"):
        nwd.param_groups("net", 1e-4)


class MambaLike(torch.nn.Module):
    """The parameters of a Mamba block as mamba_ssm names them: a log-parameterised 2-D decay
    rate `A_log` and a skip gain `D` (both marked `_no_weight_decay` by mamba_ssm), the
    timestep's `dt_proj.bias`, and the projections."""

    def __init__(self, d: int = 8, state: int = 4):
        super().__init__()
        self.in_proj = torch.nn.Linear(d, 2 * d, bias=False)
        self.dt_proj = torch.nn.Linear(d, d)
        self.A_log = torch.nn.Parameter(torch.log(torch.arange(1, state + 1, dtype=torch.float32)).repeat(d, 1))
        self.D = torch.nn.Parameter(torch.ones(d))
        self.out_proj = torch.nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, z = self.in_proj(x).chunk(2, dim=-1)
        decay = torch.exp(-torch.exp(self.A_log)).mean(-1)
        return self.out_proj(u * decay * torch.sigmoid(self.dt_proj(z)) + self.D * u)


def test_state_space_dynamics_are_not_decayed_and_flagged_when_they_are():
    model = MambaLike()
    report = nwd.audit(model)
    assert (report["A_log"].role, report["D"].role, report["dt_proj.bias"].role) == ("dynamics", "dynamics", "bias")
    decayed = decayed_names(model, nwd.param_groups(model, 0.1))
    assert decayed == {"in_proj.weight", "dt_proj.weight", "out_proj.weight"}, decayed
    # Every parameter decayed (the naive AdamW): A_log and D are flagged.
    report = nwd.audit(model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1))
    assert {m.param for m in report.mistakes if m.code == "dynamics-decayed"} == {"A_log", "D"}


def test_parameters_marked_no_weight_decay_are_not_decayed():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model[1].weight._no_weight_decay = True
    assert decayed_names(model, nwd.param_groups(model, 0.1)) == {"0.weight"}


def test_a_weight_invariant_with_its_bias_keeps_it_in_its_group():
    """TinyLM's `up` feeds a ReLU, a bias-free `down` and a norm: rescaling `up`'s weight and bias
    together leaves the output unchanged, not the weight alone. The audit says so, and
    param_groups puts both in the scale-invariant group, decayed together."""
    torch.manual_seed(0)
    model = TinyLM()
    report = nwd.audit(model)
    assert report["up.weight"].with_bias and not report["down.weight"].with_bias
    groups = nwd.param_groups(model, 1e-4)
    where = {id(p): g["name"] for g in groups for p in g["params"]}
    assert where[id(model.up.weight)] == where[id(model.up.bias)] == "scale-invariant"
    assert where[id(model.head.bias)] == "no-decay"
    assert {"up.weight", "up.bias", "down.weight"} <= decayed_names(model, groups)


def test_a_policy_on_scale_invariance_that_finds_none_says_so():
    """A model torch.fx cannot trace, given no example inputs: nothing is found scale-invariant,
    and a policy that depends on it says so instead of silently decaying nothing."""
    transformers = pytest.importorskip("transformers", reason="transformers is installed by scripts/test.sh")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=1, n_head=2))
    with pytest.warns(UserWarning, match=r"policy='scale-invariant-only' depends on scale-invariance and found none \(torch.fx cannot trace .*pass example_inputs"):
        nwd.param_groups(model, 0.1, policy="scale-invariant-only")
