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
