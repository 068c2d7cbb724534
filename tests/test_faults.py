"""Bad input and faults: clear errors, nothing lost, nobody leaves their partition."""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest
from dagster import materialize

from retrain_plugins import ModelStore, SpecError, load_feature_service_view
from retrain_plugins.dagster.assets import asset_keys
from retrain_plugins.dagster.execution import execute, materialize_all, retraining_assets, tick
from retrain_plugins.demo.generate import DemoConfig, write_parquet
from retrain_plugins.layout import model_store_root, training_set_path
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.verify import verify_store

KEY = PartitionKey("2025-02-01", "south")
LABELS_FEB = "sources/labels/month=2025-02/part-0.parquet"


def _rewrite_labels(project, expression: pl.Expr) -> Path:
    path = project.data / LABELS_FEB
    frame = pl.read_parquet(path)
    write_parquet(frame.with_columns(expression), path)
    return path


def _failure(result) -> str:
    """The failed step's error with its causes (what the UI shows)."""
    return result.get_step_failure_events()[0].event_specific_data.error.to_string()


def _run_partition(project, key: PartitionKey, raise_on_error: bool = True):
    assets = retraining_assets(project.defs, project.spec)
    return materialize(
        assets,
        instance=project.instance,
        resources=project.defs.resources,
        partition_key=str(key.to_dagster()),
        selection=[asset_keys(project.spec)[n] for n in ("training_set", "sub_model")],
        raise_on_error=raise_on_error,
    )


@pytest.mark.parametrize(
    ("label", "problem"),
    [
        (pl.when(pl.col("region") == "south").then(2).otherwise(pl.col("churned")), "values outside {0, 1}"),
        (pl.when(pl.col("region") == "south").then(None).otherwise(pl.col("churned")), "values outside {0, 1}"),
    ],
)
def test_bad_labels_fail_their_partition_by_name_and_the_old_model_keeps_serving(materialized, label, problem):
    before = materialized.artifact_digests()
    path = _rewrite_labels(materialized, label.cast(pl.Int64).alias("churned") if problem else label)
    result = _run_partition(materialized, KEY, raise_on_error=False)
    assert not result.success
    failure = _failure(result)
    assert f"partition {KEY}: label column 'churned' has" in failure and problem in failure
    assert str(path) in failure  # the label file is named
    assert materialized.artifact_digests() == before


@pytest.mark.parametrize("column", ["region", "label_timestamp", "customer_id"])
def test_label_rows_without_cohort_time_or_entity_are_refused_by_name(materialized, column):
    """Such a row belongs to no partition: the file is refused, not silently dropped from training."""
    assert tick(materialized.defs, materialized.sensor, materialized.instance).run_requests == []  # settled
    before = materialized.artifact_digests()
    first_row_empty = pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col(column)).alias(column)
    path = _rewrite_labels(materialized, first_row_empty)
    problem = f"{path}: empty value(s) in column '{column}' (1 rows)"
    result = _run_partition(materialized, KEY, raise_on_error=False)
    assert not result.success and problem in _failure(result)
    assert materialized.artifact_digests() == before
    held = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert held.run_requests == [] and f"unreadable, skipped until fixed: {problem}" in held.skip_message


def test_infinite_features_fail_clearly(materialized):
    path = materialized.data / "sources/activity/month=2025-02/part-0.parquet"
    frame = pl.read_parquet(path)
    write_parquet(frame.with_columns(pl.lit(float("inf")).alias("spend_30d")), path)
    result = _run_partition(materialized, KEY, raise_on_error=False)
    failure = _failure(result)
    assert f"partition {KEY}: infinite feature values (count per column): {{'spend_30d':" in failure


def test_missing_column_or_corrupt_file_fails_before_anything_is_written(materialized):
    before = materialized.artifact_digests()
    path = materialized.data / "sources/profile/month=2025-01/part-0.parquet"
    pl.read_parquet(path).drop("age").write_parquet(path)
    result = _run_partition(materialized, KEY, raise_on_error=False)
    failure = _failure(result)
    assert f"{path}: missing column(s) ['age']" in failure
    path.write_bytes(b"PAR1 this is not parquet")
    result = _run_partition(materialized, KEY, raise_on_error=False)
    assert f"{path}: unreadable parquet" in _failure(result)
    assert materialized.artifact_digests() == before


def test_empty_and_single_class_partitions_are_skipped_with_a_reason(materialized):
    single = _rewrite_labels(materialized, pl.when(pl.col("region") == "south").then(0).otherwise(pl.col("churned")).alias("churned"))
    assert single.exists()
    frame = pl.read_parquet(materialized.data / LABELS_FEB)
    write_parquet(frame.filter(pl.col("region") != "west"), materialized.data / LABELS_FEB)
    before = materialized.artifact_digests()
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    runs = execute(materialized.defs, materialized.spec, result.run_requests, materialized.instance)
    assert all(r.success for r in runs)
    meta = {
        str(e.event_specific_data.materialization.partition): e.event_specific_data.materialization.metadata
        for r in runs
        for e in r.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key.path[-1] == "sub_model"
    }
    assert meta["south|2025-02-01"]["skip_reason"].value == "a single label class"
    assert meta["west|2025-02-01"]["skip_reason"].value == "no labelled rows"
    assert materialized.artifact_digests() == before  # previous models keep serving


def test_hostile_cohort_values_work_end_to_end(make_project):
    hostile = ("../../etc", "a|b,c", "O'Brien\"; DROP TABLE t; --", "日本 東京")
    project = make_project(config=DemoConfig(n_customers=30, cohorts=hostile, months=2), cohorts=list(hostile), windows={"end": "2025-03-01"})
    assert materialize_all(project.defs, project.spec, project.instance).success
    models = project.models()
    assert {k.cohort for k in models} == set(hostile)
    root = model_store_root(project.spec).resolve()
    for entry in models.values():
        assert (root / entry["path"]).resolve().is_relative_to(root)
    assert not (project.root / "etc").exists()
    assert tick(project.defs, project.sensor, project.instance).run_requests == []
    from retrain_plugins.demo import scenarios

    scenarios.edit_rows(project.data, "2025-02", "O'Brien\"; DROP TABLE t; --")
    result = tick(project.defs, project.sensor, project.instance)
    (request,) = result.run_requests
    assert json.loads(request.tags["retrain/reasons"]) == {"2025-02-01/O'Brien\"; DROP TABLE t; --": "edited_rows"}
    assert all(r.success for r in execute(project.defs, project.spec, [request], project.instance))


def test_out_of_date_registry_is_named(materialized):
    features = materialized.spec.feature_repo / "features.py"
    features.write_text(features.read_text().replace("ttl=timedelta(days=7)", "ttl=timedelta(days=8)"))
    # (a comment alone is no change of the definitions: tests/test_feast_registry.py)
    with pytest.raises(SpecError, match=r"is out of date: \['features.py'\] changed after the last apply.*differs \(ttl\)"):
        load_feature_service_view(materialized.spec.model_copy(update={"name": "other"}))


def test_two_runs_of_one_partition_at_once_both_land(materialized):
    """No lock is held while training: two real Dagster runs of one partition in two processes at
    once both succeed, each version lands in the partition's record (a conditional write), and the
    store verifies. Across hosts, Dagster's concurrency pool ``retrain_<name>`` is the lever."""
    store = ModelStore(model_store_root(materialized.spec))
    spec_file = materialized.root / "spec.json"
    spec_file.write_text(materialized.spec.model_dump_json())
    script = materialized.root / "run_partition.py"
    script.write_text(textwrap.dedent(RUN_SCRIPT))
    versions = len(store.history(KEY))
    children = [
        subprocess.Popen([sys.executable, str(script), str(spec_file)], stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    for child in children:
        _, err = child.communicate(timeout=240)
        assert child.returncode == 0, err[-2000:]
    assert len(store.history(KEY)) == versions + 2 and verify_store(store).ok
    meta = json.loads(training_set_path(materialized.spec, KEY).with_suffix(".json").read_text())
    assert store.entries()[KEY]["fingerprint"] == meta["fingerprint"]
    (training,) = retraining_assets(materialized.defs, materialized.spec, "sub_model")
    assert training.op.pool == "retrain_churn"


RUN_SCRIPT = """
import sys
from pathlib import Path
from dagster import DagsterInstance, materialize
from retrain_plugins import RetrainingSpec, build_definitions
from retrain_plugins.dagster.assets import asset_keys
from retrain_plugins.dagster.execution import retraining_assets
from retrain_plugins.partitions import PartitionKey

spec = RetrainingSpec.model_validate_json(Path(sys.argv[1]).read_text())
defs = build_definitions(spec)
assets = retraining_assets(defs, spec)
result = materialize(
    assets,
    instance=DagsterInstance.ephemeral(),
    resources=defs.resources,
    partition_key=str(PartitionKey("2025-02-01", "south").to_dagster()),
    selection=[asset_keys(spec)[n] for n in ("training_set", "sub_model")],
)
sys.exit(0 if result.success else 1)
"""


KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
from retrain_plugins.partitions import PartitionKey
from retrain_plugins import store as store_module
store = store_module.ModelStore(Path(sys.argv[1]))
key = PartitionKey("2025-02-01", "south")
if sys.argv[2] == "artifact":
    def write(path):
        path.write_bytes(b"half of a model")
        os.kill(os.getpid(), signal.SIGKILL)
    store.put(key, write, ".cbm", {})
else:
    real = os.replace
    def replace(src, dst):
        if "/entries/" in str(dst):  # the partition's record
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)
    store_module.os.replace = replace  # fault injection inside the killed process only
    store.put(key, lambda p: p.write_bytes(b"a complete model"), ".cbm", {})
"""


@pytest.mark.parametrize("moment", ["artifact", "record"])
def test_sigkill_mid_write_leaves_the_good_model_and_the_next_run_recovers(materialized, moment, tmp_path):
    store = ModelStore(model_store_root(materialized.spec))
    record = store.record_path(KEY).read_bytes()
    good = store.entries()[KEY]
    script = tmp_path / "kill.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT))
    done = subprocess.run([sys.executable, str(script), str(store.root), moment], capture_output=True, timeout=120)
    assert done.returncode == -9
    assert store.record_path(KEY).read_bytes() == record
    assert store.entries()[KEY] == good and store.verified_path(good)
    report = verify_store(store)
    assert report.ok and report.debris  # a temp file is left, and reported as debris
    # killed between the artifact's rename and its record's: the artifact is an orphan (young: kept)
    assert len(report.orphans) == (moment == "record") and not report.old_orphans
    assert _run_partition(materialized, KEY).success  # the next run recovers
    assert store.entries()[KEY]["sha256"] != good["sha256"]


def test_disk_full_and_permission_denied_keep_the_current_model(materialized, monkeypatch):
    store = ModelStore(model_store_root(materialized.spec))
    record = store.record_path(KEY).read_bytes()

    def no_space(path):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        store.put(KEY, no_space, ".cbm", {})

    def denied(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr("retrain_plugins.store.os.replace", denied)  # the filesystem refuses renames
    with pytest.raises(PermissionError):
        store.put(KEY, lambda p: p.write_bytes(b"new"), ".cbm", {})
    monkeypatch.undo()
    assert store.record_path(KEY).read_bytes() == record
    assert verify_store(store).ok and not verify_store(store).debris


def test_verify_cli_reports_problems_with_exit_code(materialized):
    store = ModelStore(model_store_root(materialized.spec))
    entry = store.entries()[KEY]
    store.path_of(entry).write_bytes(b"garbage")
    (store.root / "artifacts" / "stray.cbm").write_bytes(b"x")
    spec_file = materialized.root / "spec.yaml"
    spec_file.write_text(json.dumps(json.loads(materialized.spec.model_dump_json())))
    env = {k: v for k, v in os.environ.items() if k != "RETRAIN_SPEC"}
    done = subprocess.run(
        [shutil.which("retrain", path=str(Path(sys.executable).parent)), "verify", "--spec", str(spec_file)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert done.returncode == 1, done.stderr
    assert f"corrupted: 2025-02-01/south (current) {entry['path']}" in done.stdout
    assert "orphans: artifacts/stray.cbm" in done.stdout


def test_verify_clean_removes_old_orphans_and_rollback_says_when_a_version_is_gone(materialized, capsys):
    from retrain_plugins.cli.main import main

    spec = json.loads(materialized.spec.model_dump_json())
    spec["store"] = {"keep_versions": 2}
    spec_file = materialized.root / "spec-keep2.json"
    spec_file.write_text(json.dumps(spec))
    store = ModelStore(model_store_root(materialized.spec))
    current = store.entries()[KEY]
    folder = store.path_of(current).parent
    old, young = folder / "0123456789abcdef.cbm", folder / "fedcba9876543210.cbm"
    old.write_bytes(b"left by a crash between an artifact and its record")
    young.write_bytes(b"a put in flight")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert main(["verify", "--spec", str(spec_file)]) == 0
    out = capsys.readouterr().out
    assert f"orphans: {old.relative_to(store.root)} (older than the grace period)" in out
    assert f"orphans: {young.relative_to(store.root)} (young: kept)" in out and old.exists()
    assert main(["verify", "--clean", "--grace-seconds", "3600", "--spec", str(spec_file)]) == 0
    assert f"removed {old.relative_to(store.root)}" in capsys.readouterr().out
    assert not old.exists() and young.exists() and store.verified_path(current)
    assert main(["rollback", KEY.window, KEY.cohort, "--to", "0" * 16, "--spec", str(spec_file)]) == 1
    err = capsys.readouterr().err
    assert "not in the kept history" in err and "store.keep_versions = 2" in err


# --- damaged state store and model store records: a clear error naming the file, exit 1, no traceback ---


def _spec_file(project) -> Path:
    spec_file = project.root / "spec.json"
    spec_file.write_text(project.spec.model_dump_json())
    return spec_file


@pytest.mark.parametrize("damage", ["random bytes", "truncated"])
def test_a_damaged_state_store_stops_status_explain_and_verify_with_the_fix(materialized, capsys, damage):
    from retrain_plugins import StoreError, state_store
    from retrain_plugins.cli.main import main
    from retrain_plugins.layout import state_path

    assert tick(materialized.defs, materialized.sensor, materialized.instance).run_requests == []
    path = state_path(materialized.spec)
    data = path.read_bytes()
    path.write_bytes(os.urandom(len(data)) if damage == "random bytes" else data[: len(data) // 2])
    message = f"state store {path} is damaged"
    with pytest.raises(StoreError, match=f"{message} .*retrain state rebuild"):
        state_store(materialized.spec)
    spec = str(_spec_file(materialized))
    for command in (["status"], ["explain", "2025-02-01", "south"], ["verify"]):
        assert main([*command, "--spec", spec]) == 1
        out, err = capsys.readouterr()
        assert message in out + err and "retrain state rebuild" in out + err and "Traceback" not in out + err


def _two_versions(tmp_path) -> ModelStore:
    store = ModelStore(tmp_path / "models")
    store.put(KEY, lambda p: p.write_bytes(b"model-1"), ".cbm", {"fingerprint": "fp1"})
    store.put(KEY, lambda p: p.write_bytes(b"model-2"), ".cbm", {"fingerprint": "fp2"})
    return store


def _edit(field: str, value=None, role: str = "current"):
    def change(record: dict) -> None:
        entry = record[role] if role == "current" else record[role][0]
        if value is None:
            del entry[field]
        else:
            entry[field] = value

    return change


def _replace(**fields):
    def rewrite(text: str) -> str:
        return json.dumps({**json.loads(text), **fields})

    return rewrite


BAD_RECORDS = {
    "empty object": ("{}", "'window' and 'cohort' must be strings"),
    "empty list": ("[]", "the top level is a JSON list"),
    "truncated": (lambda text: text[: len(text) // 2], "is not valid JSON"),
    "no path": (_edit("path"), "current entry has no 'path'"),
    "no sha256": (_edit("sha256"), "current entry has no 'sha256'"),
    "no fingerprint": (_edit("fingerprint"), "current entry has no 'fingerprint'"),
    "path is a number": (_edit("path", 7), "'path' is int 7"),
    "sha256 is a list": (_edit("sha256", ["ab"]), "'sha256' is list"),
    "sha256 not a digest": (_edit("sha256", "abc"), "'sha256' 'abc' is not a SHA-256 hex digest"),
    "fingerprint is a number": (_edit("fingerprint", 3, role="history"), "history[0] entry 'fingerprint' is int 3"),
    "history is an object": (_replace(history={}), "'history' is dict, not a list"),
    "entry is a string": (_replace(current="x"), "current entry is str"),
    "no history": (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "history"}), "its slot has no ['history']"),
    "another partition's record": (_replace(cohort="north"), "it names partition 2025-02-01/north"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_a_malformed_record_raises_store_error_naming_the_file_and_problem(tmp_path, case):
    from retrain_plugins import StoreError

    store = _two_versions(tmp_path)
    assert store.entries()[KEY]["fingerprint"] == "fp2"  # the good record reads
    change, problem = BAD_RECORDS[case]
    path = store.record_path(KEY)
    text = path.read_text()
    if isinstance(change, str):
        text = change
    elif change.__name__ == "change":  # an edit of the parsed record
        record = json.loads(text)
        change(record)
        text = json.dumps(record)
    else:
        text = change(text)
    path.write_text(text)
    for read in (store.entries, lambda: store.history(KEY), lambda: verify_store(store), lambda: store.rollback(KEY)):
        with pytest.raises(StoreError, match=re.escape(f"model store record {path}")) as caught:
            read()
        assert problem in str(caught.value)


def test_status_on_a_malformed_record_exits_1_with_the_message(materialized, capsys):
    from retrain_plugins.cli.main import main

    store = ModelStore(model_store_root(materialized.spec))
    store.record_path(KEY).write_text("{}")
    assert main(["status", "--spec", str(_spec_file(materialized))]) == 1
    err = capsys.readouterr().err
    assert f"model store record {store.record_path(KEY)} is malformed: 'window' and 'cohort' must be strings" in err
