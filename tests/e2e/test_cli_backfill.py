"""A partition-range backfill from the command line is one run over the whole range."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from retrain_plugins.partitions import PartitionKey

from .dagster_dev import PACKAGE


def test_cli_partition_range_is_one_run(served):
    location = served.server.workspace.parent
    env = {**os.environ, "DAGSTER_HOME": str(served.server.home)}
    command = [
        str(Path(sys.executable).with_name("dagster")),
        "asset", "materialize",
        "-m", f"{PACKAGE}.definitions",
        "--select", "churn/training_set,churn/sub_model",
        "--partition-range", "east|2025-02-01...east|2025-03-01",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=location, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with DagsterInstance.from_config(str(served.server.home)) as instance:
        (run,) = [
            r
            for r in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
            if r.tags.get("dagster/asset_partition_range_start") == "east|2025-02-01"
        ]
        records = instance.fetch_materializations(AssetKey(["churn", "sub_model"]), limit=100).records
        by_run = {PartitionKey.from_dagster(r.partition_key) for r in records if r.run_id == run.run_id}
    assert by_run == {PartitionKey("2025-02-01", "east"), PartitionKey("2025-03-01", "east")}
