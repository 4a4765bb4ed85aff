#!/usr/bin/env python3
"""Train a small BN ConvNet in PyTorch and save what `normwd inspect` reads.

Writes into OUT (default: checkpoints/):
  ckpt_<step>.safetensors   model.state_dict() every --every steps (safetensors.torch.save_file)
  model.onnx                the graph, exported in training mode so BatchNormalization stays
                            a node (an eval-mode export folds it into the conv)
  angles.json               per tensor, the angle between consecutive checkpoints computed here
                            in float64 (the reference the normwd tests compare against)

Then:  normwd inspect OUT --graph OUT/model.onnx --optimizer sgd --lr 0.1 --momentum 0.9 --weight-decay 5e-4

`torch.save(model.state_dict(), f"ckpt_{step}.pt")` (or a whole training checkpoint with the
weights under "model") is read the same way; tests/fixtures/pytorch/torch_save.py writes the
fixtures again in those forms.

Needs: pip install torch safetensors onnx (not needed by normwd's tests, which use the
committed output of this script in tests/fixtures/pytorch/).
"""
import argparse
import json
import os

import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(16)
        self.fc = torch.nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = torch.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(x.flatten(1))


def main():
    # Imported here, so that importing this file for `Net` (tests/fixtures/pytorch/torch_save.py)
    # needs only torch.
    from safetensors.torch import save_file

    p = argparse.ArgumentParser()
    p.add_argument("--out", default="checkpoints")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--every", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    a = p.parse_args()
    torch.manual_seed(0)
    os.makedirs(a.out, exist_ok=True)
    # Synthetic 28x28 data with a learnable rule, so the script needs no download.
    x = torch.randn(2048, 1, 28, 28)
    y = (x[:, 0, :14].mean(dim=(1, 2)) * 40).long().clamp(-5, 4) + 5
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay)
    saved = []
    for step in range(a.steps + 1):
        if step % a.every == 0:
            sd = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
            save_file(sd, os.path.join(a.out, f"ckpt_{step:06d}.safetensors"))
            saved.append(sd)
        if step == a.steps:
            break
        idx = torch.randint(0, len(x), (64,))
        loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    angles = {}
    for k in saved[0]:
        v = []
        for s0, s1 in zip(saved, saved[1:]):
            a0, a1 = s0[k].double().flatten(), s1[k].double().flatten()
            n0, n1 = a0.norm(), a1.norm()
            v.append(0.0 if n0 == 0 or n1 == 0 else float(torch.arccos(torch.clamp(a0 @ a1 / (n0 * n1), -1, 1))))
        angles[k] = v
    with open(os.path.join(a.out, "angles.json"), "w") as f:
        json.dump(angles, f, indent=1, sort_keys=True)
    net.train()
    torch.onnx.export(net, x[:2], os.path.join(a.out, "model.onnx"), training=torch.onnx.TrainingMode.TRAINING,
                      do_constant_folding=False, input_names=["x"], output_names=["logits"], dynamo=False)
    print(f"wrote {len(saved)} checkpoints, angles.json and model.onnx to {a.out}")


if __name__ == "__main__":
    main()
