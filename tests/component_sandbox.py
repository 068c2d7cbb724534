"""The Component's test project: a test-size defs.yaml in a fresh Dagster defs folder, loaded as Dagster loads it.

Loading goes through Dagster's own defs-folder machinery (``create_defs_folder_sandbox``: a temp
project with a ``dg.toml`` and a ``defs/`` package, loaded by ``ComponentTree`` as ``dagster dev``
loads one), so the errors the tests assert are the ones a user sees.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import Definitions
from dagster.components.testing import create_defs_folder_sandbox

# A test-size retraining, as a user writes it; {repo} and {data} are relative to the defs.yaml folder.
DEFS_YAML = """\
type: retrain_plugins.dagster.component.RetrainingComponent
attributes:
  name: churn
  feature_repo: {repo}
  feature_service: churn_model_v1
  data_dir: {data}
  labels:
    path: sources/labels/*/*.parquet
    entity_column: customer_id
    timestamp_column: label_timestamp
    label_column: churned
    cohort_column: region
  windows:
    granularity: monthly
    start: 2025-01-01
    end: 2025-04-01
    lookback: 1
  cohorts: [north, south, east, west]
  trainer:
    name: catboost
    params: {{iterations: 25, depth: 4}}
  sensor_interval_seconds: 7
"""


def chain(exc: BaseException) -> str:
    """The text of an exception and all its causes: what Dagster prints for a failed load."""
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


@contextmanager
def defs_sandbox(tmp_path: Path) -> Iterator[tuple[object, Path, Path]]:
    """(Dagster's defs-folder sandbox, its ``churn/defs.yaml``, the project root its relative paths name)."""
    root = tmp_path / "project"
    (root / "feature_repo").mkdir(parents=True)
    (root / "data").mkdir()
    with create_defs_folder_sandbox() as sandbox:
        folder = sandbox.defs_folder_path / "churn"
        folder.mkdir()
        rel = Path(os.path.relpath(root, folder))
        path = folder / "defs.yaml"
        path.write_text(DEFS_YAML.format(repo=rel / "feature_repo", data=rel / "data"))
        yield sandbox, path, root


def load(sandbox) -> Definitions:
    with sandbox.build_all_defs() as defs:
        return defs
