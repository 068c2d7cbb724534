"""``retrain demo`` and ``retrain apply``: set a project up."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from retrain_plugins.cli.common import AddCommand, load_spec

DEMO_SIZES = {"demo": 400, "small": 60}


def cmd_demo(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from retrain_plugins.demo.generate import DemoConfig
    from retrain_plugins.demo.instance import write_demo_instance
    from retrain_plugins.demo.run import reset_data_dir, run_demo

    spec = load_spec(args)
    reset_data_dir(spec.data_dir)
    home = Path(os.environ.get("DAGSTER_HOME") or Path(spec.data_dir) / "dagster_home").resolve()
    write_demo_instance(home)  # when missing: no telemetry, a queue checked every second
    os.environ["DAGSTER_HOME"] = str(home)
    config = DemoConfig(n_customers=DEMO_SIZES[args.size], cohorts=spec.cohorts)
    with DagsterInstance.get() as instance:
        run_demo(spec, config, instance)
    print(f"\nDagster history is in DAGSTER_HOME={home}; `make dev` opens it in the UI.")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from retrain_plugins.feast_store import apply_feature_repo
    from retrain_plugins.feast_view import load_feature_service_view
    from retrain_plugins.validation import check_label_source

    spec = load_spec(args)
    apply_feature_repo(spec.feature_repo)
    view = load_feature_service_view(spec)
    check_label_source(spec, view)
    print(f"applied {spec.feature_repo}; feature service {view.service} version {view.version}: {view.feature_columns}")
    return 0


def register(add: AddCommand) -> None:
    demo = add("demo", "From an empty data/: generate, apply, full run, one change, sensor tick, partial run, report.", cmd_demo)
    demo.add_argument("--size", choices=sorted(DEMO_SIZES), default="demo", help="customers per cohort")
    add("apply", "feast apply the spec's repo and check the label source against the spec.", cmd_apply)
