"""``retrain``: the command line. Exit code 0 on success, 1 on a known error (message on stderr), 2 on usage.

One module per command group, each with a ``register(add)`` that adds its commands:
:mod:`~retrain_plugins.cli.project` (demo, apply), :mod:`~retrain_plugins.cli.report` (status,
explain, savings), :mod:`~retrain_plugins.cli.maintenance` (rollback, verify, state),
:mod:`~retrain_plugins.cli.predict`, :mod:`~retrain_plugins.cli.tick` (tick [--launch]) and
:mod:`~retrain_plugins.cli.materialize` (materialize --all). Each imports what it needs when it runs,
so ``retrain --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys

from retrain_plugins.cli import maintenance, materialize, predict, project, report, tick
from retrain_plugins.cli.common import load_spec
from retrain_plugins.errors import RetrainError

__all__ = ["load_spec", "main", "parser"]

GROUPS = (project, report, tick, materialize, predict, maintenance)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="retrain", description="Partial retraining of per-segment models.")
    sub = top.add_subparsers(dest="command", required=True)
    default_spec = os.environ.get("RETRAIN_SPEC")

    def add(name: str, help_: str, fn) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument(
            "--spec",
            default=default_spec,
            required=default_spec is None,
            help="retraining spec YAML (default: $RETRAIN_SPEC)",
        )
        p.set_defaults(fn=fn)
        return p

    for group in GROUPS:
        group.register(add)
    return top


def main(argv: list[str] | None = None) -> int:
    import warnings

    # Library deprecation chatter (ibis inside Feast, Dagster betas) is not for a CLI's readers.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*is currently in beta.*")
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except RetrainError as exc:
        print(f"retrain {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except (sqlite3.Error, OSError) as exc:  # a store or file the library did not expect to fail
        print(f"retrain {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
