"""``normwd`` (installed with the package; also ``python -m normwd``): ``report`` draws the
report of normwd or Monitor runs, ``audit`` audits a model from the shell. The full command
line (training, sweeps, ``inspect``, ``predict``) is the Rust program, ``cargo install --path .``
in normwd's repository.

``normwd report RUN_DIR ... [--out DIR]`` writes ``report.html`` (into the first run's folder by
default) and prints its path.

``normwd audit pkg.module:factory``: the audit of a model.

The factory is called with no arguments and returns a model, or a ``(model, optimizer)`` pair;
``--input-shape 2,3,224,224`` measures scale-invariance on a random batch of that shape. The
exit code is 1 when the audit finds an error-level mistake (for CI), 2 for bad input.

Example:
    python -m normwd audit torchvision.models:resnet18 --input-shape 2,3,64,64
"""

import argparse
import importlib
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the command line; returns the exit code (1 for an error-level mistake found, 2 for
    bad input, named)."""
    p = argparse.ArgumentParser(
        prog="normwd",
        description="normwd's Python package from the shell (the full command line is the Rust program: cargo install --path . in the repository)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="the report of normwd runs or normwd.torch.Monitor runs")
    r.add_argument("runs", nargs="+", help="run folders")
    r.add_argument("--out", help="where to write report.html (default: the first run's folder)")
    a = sub.add_parser("audit", help="roles, scale-invariance, groups and mistakes of a model (and optimizer)")
    a.add_argument("factory", help="pkg.module:function returning a model or (model, optimizer)")
    a.add_argument("--input-shape", help="comma-separated shape of a random example batch, to measure scale-invariance")
    a.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    if args.command == "report":
        from . import report

        try:
            print(f"report: {report(*args.runs, out=args.out)}")
        except (ValueError, OSError) as e:
            print(str(e), file=sys.stderr)
            return 2
        return 0
    import torch

    from .torch import audit

    module_name, _, attr = args.factory.partition(":")
    if not attr:
        print(f"factory {args.factory!r}: expected pkg.module:function", file=sys.stderr)
        return 2
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        print(f"factory {args.factory!r}: {e}", file=sys.stderr)
        return 2
    made = factory()
    model, optimizer = made if isinstance(made, tuple) else (made, None)
    inputs = None
    if args.input_shape:
        try:
            shape = [int(x) for x in args.input_shape.split(",")]
        except ValueError:
            print(f"--input-shape {args.input_shape!r}: expected comma-separated integers", file=sys.stderr)
            return 2
        inputs = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    try:
        report = audit(model, optimizer, example_inputs=inputs)
    except (ValueError, TypeError) as e:
        print(str(e), file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report)
    return 1 if any(m.severity == "error" for m in report.mistakes) else 0


def entry() -> None:
    """The ``normwd`` console script."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
