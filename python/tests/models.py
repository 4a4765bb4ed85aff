"""Models for the tests that no library ships: a custom RMSNorm class (not torch.nn's) and a
position embedding that is a bare nn.Parameter, as in minGPT-style code."""

import torch
from torch import nn


class RMSNorm(nn.Module):
    """A hand-written RMSNorm, the form that name-based decay rules miss."""

    def __init__(self, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = 1e-6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class TinyLM(nn.Module):
    """Tokens in, logits out: embedding + bare position parameter, one pre-norm MLP block with a
    projection feeding the custom RMSNorm directly, and a head."""

    def __init__(self, vocab: int = 16, width: int = 16, block: int = 8):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.randn(block, width) * 0.1)
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width, bias=False)
        self.norm = RMSNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.tok(ids) + self.pos[: ids.shape[1]]
        h = self.norm(self.down(torch.relu(self.up(h))))
        return self.head(h)


def convnet(widths: tuple = (8,)) -> nn.Module:
    """A small BN ConvNet on 1x28x28 inputs: per width a bias-free 3x3 conv, batch norm, ReLU and
    2x2 pooling, then a linear classifier (with no argument, the `python -m normwd audit` test's
    factory)."""
    layers, c_in, side = [], 1, 28
    for c in widths:
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
        c_in, side = c, side // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c_in * side * side, 10))


def convnet_and_sgd():
    """The same, with the optimizer most tutorials build: every parameter decayed."""
    net = convnet()
    return net, torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
