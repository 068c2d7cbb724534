"""The example code location loads, and its asset graph is what the README describes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, Definitions

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_dagster_project_definitions_load_and_validate():
    from dagster_project.definitions import defs

    loaded = defs()
    assert isinstance(loaded, Definitions)
    Definitions.validate_loadable(loaded)
    graph = loaded.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "churn/labels",
        "churn/features",
        "churn/training_set",
        "churn/sub_model",
        "churn/fallback_model",
        "churn/model_bundle",
        "churn/online_features",
    }
    # the graph reads sources -> training sets -> sub-models -> bundle
    assert graph.get(AssetKey(["churn", "training_set"])).parent_keys == {
        AssetKey(["churn", "labels"]),
        AssetKey(["churn", "features"]),
    }
    assert graph.get(AssetKey(["churn", "sub_model"])).parent_keys == {AssetKey(["churn", "training_set"])}
    assert graph.get(AssetKey(["churn", "model_bundle"])).parent_keys == {
        AssetKey(["churn", "sub_model"]),
        AssetKey(["churn", "fallback_model"]),
    }
    sensor = loaded.resolve_sensor_def("churn_change_sensor")
    # the default 10 s (the demo's defs.yaml does not set it), one second under it for the daemon's loop
    assert sensor.minimum_interval_seconds == 9
    partitions = graph.get(AssetKey(["churn", "sub_model"])).partitions_def
    assert len(partitions.get_partition_keys()) == 48
    # loaded through the RetrainingComponent in defs/churn/defs.yaml, paths relative to that file
    assert loaded.resources["churn_feast"].repo_path == str(REPO_ROOT / "feature_repo")


def test_dagster_cli_validates_the_code_location():
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-m", "dagster_project.definitions"],
        cwd=REPO_ROOT,
        env={k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "All code locations passed validation" in done.stderr + done.stdout


def test_library_never_imports_the_example_project():
    offenders = [
        str(p.relative_to(REPO_ROOT))
        for p in (REPO_ROOT / "retrain_plugins").rglob("*.py")
        if re.search(r"^\s*(from|import)\s+dagster_project\b", p.read_text(), re.MULTILINE)
    ]
    assert offenders == []


def test_two_retrainings_with_their_own_data_dirs_keep_their_own_stores(make_project):
    """Each retraining's sub-models, training sets and bundle go to its own data dir's storage."""
    from dagster import DagsterInstance

    from retrain_plugins import build_definitions
    from retrain_plugins.bundle import read_bundle
    from retrain_plugins.dagster.execution import materialize_all
    from retrain_plugins.layout import model_store

    a = make_project("a").spec
    b = make_project("b").spec.model_copy(update={"name": "churn_b"})
    defs = build_definitions([a, b])
    instance = DagsterInstance.ephemeral()
    assert materialize_all(defs, b, instance).success
    assert model_store(a).entries() == {} and read_bundle(a) is None
    entries = model_store(b).entries()
    assert len(entries) == 12 and all(e["path"].startswith("artifacts/") for e in entries.values())
    assert model_store(b).root == b.data_dir / "models" / "churn_b"
    assert sum(len(v) for v in read_bundle(b)["routes"].values()) == 12


def test_the_sensor_interval_is_set_for_the_daemons_loop():
    """The daemon's loop is what ``dagster_interval`` rounds to: an upgrade that changes it fails here."""
    from dagster._daemon.sensor import MIN_INTERVAL_LOOP_TIME

    from retrain_plugins.dagster.sensors import DAEMON_LOOP_SECONDS, dagster_interval

    assert DAEMON_LOOP_SECONDS == MIN_INTERVAL_LOOP_TIME
    assert [dagster_interval(s) for s in (1, 4, 5, 6, 10, 11, 60)] == [4, 4, 4, 9, 9, 14, 59]
