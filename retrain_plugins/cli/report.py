"""``retrain status``, ``explain`` and ``savings``: what the sensor and the runs know, per partition and per update."""

from __future__ import annotations

import argparse

from retrain_plugins.cli.common import AddCommand, load_spec, optional_instance


def cmd_status(args: argparse.Namespace) -> int:
    from retrain_plugins.cli.status import HEADERS, status_rows
    from retrain_plugins.cli.table import render

    print(render(HEADERS, status_rows(load_spec(args), optional_instance())))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from retrain_plugins.cli.status import explain
    from retrain_plugins.partitions import PartitionKey

    print(explain(load_spec(args), PartitionKey(args.window, args.cohort), optional_instance()))
    return 0


def cmd_savings(args: argparse.Namespace) -> int:
    from retrain_plugins.cli.status import savings
    from retrain_plugins.cli.table import render

    rows = savings(load_spec(args), optional_instance())
    headers = ("tick", "at", "requested", "retrained", "rejected", "failed/skipped/pending", "not retrained", "training s avoided", "reasons")
    print(render(headers, rows))
    print(f"total: {sum(r[3] for r in rows)} retrained, {sum(r[4] for r in rows)} rejected by the gate, "
          f"{sum(r[5] for r in rows)} failed, skipped or pending, {sum(r[6] for r in rows)} not retrained, "
          f"{sum(r[7] for r in rows):.1f} s of training avoided")
    return 0


def register(add: AddCommand) -> None:
    add("status", "Every partition with its state, rows, holdout AUC and last reason.", cmd_status)
    explain = add("explain", "Why one partition was or was not retrained.", cmd_explain)
    explain.add_argument("window", help="window key, e.g. 2025-03-01")
    explain.add_argument("cohort", help="cohort value, e.g. north")
    add("savings", "The savings ledger: partitions skipped and training time avoided per update.", cmd_savings)
