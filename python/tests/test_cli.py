"""``python -m normwd audit pkg.module:factory``."""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(*args):
    env = dict(os.environ, PYTHONPATH=HERE)
    return subprocess.run([sys.executable, "-m", "normwd", "audit", *args], capture_output=True, text=True, env=env, timeout=300)


def test_audit_from_the_shell():
    # An error-level mistake found exits 1, so a CI job can stop on it.
    r = run("models:convnet_and_sgd", "--input-shape", "4,1,28,28")
    assert r.returncode == 1, r.stderr
    assert "0.weight" in r.stdout and "yes (channel)" in r.stdout
    assert "ERROR norm-decayed: 1.weight, 1.bias" in r.stdout
    r = run("models:convnet", "--json")
    assert r.returncode == 0 and '"params"' in r.stdout


def test_bad_factories_and_shapes_exit_2_naming_them():
    r = run("models:nothing")
    assert r.returncode == 2 and "factory 'models:nothing'" in r.stderr
    r = run("models")
    assert r.returncode == 2 and "expected pkg.module:function" in r.stderr
    r = run("models:convnet", "--input-shape", "4,x")
    assert r.returncode == 2 and "--input-shape '4,x'" in r.stderr
    r = run("models:convnet", "--input-shape", "4,3,28,28")
    assert r.returncode == 2 and "example_inputs:" in r.stderr


def test_report_from_the_shell(tmp_path):
    """`normwd report RUN` (the console script the package installs, here as `python -m
    normwd`) draws a Monitor run's report, and names a folder that is no run."""
    import normwd.torch as nwd
    import torch
    from models import convnet

    net = convnet()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    with nwd.Monitor(net, opt, out=str(tmp_path / "run"), every=1):
        for _ in range(2):
            opt.zero_grad()
            net(torch.randn(8, 1, 28, 28)).square().mean().backward()
            opt.step()
    env = dict(os.environ, PYTHONPATH=HERE)
    r = subprocess.run([sys.executable, "-m", "normwd", "report", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("report.html"), r.stderr
    r = subprocess.run([sys.executable, "-m", "normwd", "report", str(tmp_path / "none")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "none" in r.stderr, (r.stdout, r.stderr)
    # pip installs the same as a command beside the interpreter.
    script = os.path.join(os.path.dirname(sys.executable), "normwd")
    assert os.path.exists(script), f"{script}: pip install ./python installs the normwd command"
    r = subprocess.run([script, "report", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("report.html"), r.stderr
