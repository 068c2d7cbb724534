"""What every ``retrain`` command shares: the spec it acts on, the Dagster instance, how a command registers."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrain_plugins.errors import RetrainError
from retrain_plugins.spec import RetrainingSpec

if TYPE_CHECKING:
    from dagster import DagsterInstance

# add(name, help, fn) -> the command's parser (with --spec), as main.parser() hands it to each group's register()
AddCommand = Callable[[str, str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]


def load_spec(args: argparse.Namespace) -> RetrainingSpec:
    """The spec in ``--spec`` (see :func:`load_retraining`)."""
    return load_retraining(args)[0]


def load_retraining(args: argparse.Namespace) -> tuple[RetrainingSpec, dict[str, Any]]:
    """(spec, resources) in ``--spec``: a Dagster ``defs.yaml`` declaring a RetrainingComponent
    (what the code location loads: its ``mlflow:`` registry too), or a plain spec YAML (no resources)."""
    import yaml

    path = Path(args.spec)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RetrainError(f"cannot read {path}: {exc}") from exc
    if isinstance(raw, dict) and "type" in raw and "attributes" in raw:
        from retrain_plugins.dagster.component import retraining_from_defs_yaml

        return retraining_from_defs_yaml(path)
    return RetrainingSpec.from_yaml(path), {}


def optional_instance() -> DagsterInstance | None:
    """The Dagster instance of ``DAGSTER_HOME`` (where runs record what they trained), if set."""
    if not os.environ.get("DAGSTER_HOME"):
        return None
    from dagster import DagsterInstance

    return DagsterInstance.get()


def instance() -> DagsterInstance:
    """The Dagster instance of ``DAGSTER_HOME``, for commands that evaluate the sensor or make runs."""
    found = optional_instance()
    if found is None:
        raise RetrainError(
            "DAGSTER_HOME is not set: point it at the instance the runs belong to (the one `dagster dev` "
            "or the daemon uses), e.g. DAGSTER_HOME=$PWD/data/dagster_home"
        )
    return found
