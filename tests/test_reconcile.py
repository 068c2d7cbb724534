"""No change is lost: a tick or a run that dies anywhere is healed by a later tick, without a human.

Kill points are real: a child process evaluates a real sensor tick and SIGKILLs itself at one step
of the tick's commit (or right after it, before Dagster could receive the requests). Runs fail for
real (a file where the store needs a directory), and in-flight runs are real Dagster run records.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import uuid

import pytest
from dagster import DagsterRun, DagsterRunStatus
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG, RUN_KEY_TAG

from retrain_plugins import build_definitions
from retrain_plugins.changes.reconcile import admit
from retrain_plugins.changes.state import Trained
from retrain_plugins.cli.status import partition_states
from retrain_plugins.dagster.assets import asset_keys
from retrain_plugins.dagster.execution import execute, full_build_tags, tick
from retrain_plugins.changes.request_log import read_request_log
from retrain_plugins.dagster.tags import ATTEMPTS_TAG, REASONS_TAG, RETRAINING_TAG, SEQ_TAG
from retrain_plugins.demo import scenarios
from retrain_plugins.layout import model_store_root
from retrain_plugins.partitions import PartitionKey, path_segment
from retrain_plugins.spec import RetrySpec
from retrain_plugins.store import ModelStore

from .conftest import REPO_ROOT, Project
from .helpers import make_spec, ui_backfill

KEY = PartitionKey("2025-02-01", "north")
RANGE_TAGS = (ASSET_PARTITION_RANGE_START_TAG, ASSET_PARTITION_RANGE_END_TAG)
NO_WAIT = {"change_detection": {"retry": {"max_attempts": 3, "backoff_seconds": 0}}}


def _reconciling(project: Project, **retry) -> Project:
    spec = make_spec(project.root, change_detection={"retry": {"max_attempts": 3, "backoff_seconds": 0, **retry}})
    project = project._replace(spec=spec, defs=build_definitions(spec))
    assert tick(project.defs, project.sensor, project.instance).run_requests == []  # the copy's listing
    return project


def _reasons(result) -> dict[str, str]:
    out = {}
    for request in result.run_requests:
        out |= json.loads(request.tags[REASONS_TAG])
    return out


KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from dagster import DagsterInstance
from retrain_plugins import RetrainingSpec, build_definitions
from retrain_plugins.changes import state as state_module
from retrain_plugins.dagster import sensors as sensors_module
from retrain_plugins.dagster.execution import tick

spec = RetrainingSpec.model_validate_json(Path(sys.argv[1]).read_text())
point = sys.argv[2]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "after_commit":  # the transaction is committed; Dagster never gets the result
    sensors_module.SensorResult = lambda *a, **k: die()
else:
    real = getattr(state_module.StateStore, point)
    def killed(self, *args, **kwargs):
        real(self, *args, **kwargs)
        die()
    setattr(state_module.StateStore, point, killed)  # fault injection inside the killed process only
tick(build_definitions(spec), f"{spec.name}_change_sensor", DagsterInstance.ephemeral())
sys.exit(3)  # never reached: the tick must have hit the kill point
"""


@pytest.mark.parametrize("point", ["save_files", "save_cells", "set_meta", "log_requests", "after_commit"])
def test_a_tick_killed_at_any_step_of_its_commit_loses_nothing(materialized, point):
    project = _reconciling(materialized)
    scenarios.edit_rows(project.data, "2025-02", "north")
    spec_file = project.root / "spec.json"
    spec_file.write_text(project.spec.model_dump_json())
    script = project.root / "kill_tick.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT))
    done = subprocess.run([sys.executable, str(script), str(spec_file), point, str(REPO_ROOT)], capture_output=True, timeout=300)
    assert done.returncode == -9, done.stderr.decode()[-2000:]  # SIGKILLed at the kill point
    healed = tick(project.defs, project.sensor, project.instance)
    expected = "retry" if point == "after_commit" else "edited_rows"  # committed: the data is not news any more
    assert _reasons(healed) == {str(KEY): expected}
    assert all(r.success for r in execute(project.defs, project.spec, healed.run_requests, project.instance))
    assert project.models()[KEY]["reason"] == expected
    assert tick(project.defs, project.sensor, project.instance).run_requests == []


def test_requests_dagster_never_received_are_asked_again_with_their_attempt_number(materialized):
    project = _reconciling(materialized)
    scenarios.edit_rows(project.data, "2025-02", "north")
    first = tick(project.defs, project.sensor, project.instance)
    assert _reasons(first) == {str(KEY): "edited_rows"}
    again = tick(project.defs, project.sensor, project.instance)  # the first one's runs never started
    assert _reasons(again) == {str(KEY): "retry"}
    assert json.loads(again.run_requests[0].tags[ATTEMPTS_TAG]) == {str(KEY): 2}
    assert again.run_requests[0].tags[RETRAINING_TAG] == project.spec.name


@pytest.mark.parametrize("launched", ["by the sensor", "from the UI"])
def test_a_partition_with_a_run_in_flight_is_not_asked_again(materialized, launched):
    project = _reconciling(materialized)
    scenarios.edit_rows(project.data, "2025-02", "north")
    (request,) = tick(project.defs, project.sensor, project.instance).run_requests
    # A UI launch of the same partition has its asset selection and partition tags, not ours.
    tags = dict(request.tags) if launched == "by the sensor" else {k: request.tags[k] for k in RANGE_TAGS}
    running = DagsterRun(
        job_name="__ASSET_JOB", run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTED,
        asset_selection=frozenset(request.asset_selection), tags=tags,
    )
    project.instance.add_run(running)
    held = tick(project.defs, project.sensor, project.instance)
    assert held.run_requests == [] and "1 partition(s) with a run in flight" in held.skip_message
    states = {s["partition"]: s["state"] for s in partition_states(project.spec, project.instance)}
    assert states[KEY] == f"stale: data changed (1 of 3 requests made) (run {running.run_id[:8]} in flight)"
    assert not any("in flight" in state for key, state in states.items() if key != KEY)
    project.instance.report_run_failed(project.instance.get_run_by_id(running.run_id))  # its worker died
    assert _reasons(tick(project.defs, project.sensor, project.instance)) == {str(KEY): "retry"}


@pytest.mark.parametrize("launched", ["in-process (materialize_all)", "from the UI"])
def test_a_tick_during_a_full_build_defers_detection_and_records_nothing(materialized, launched):
    """While a run covers every partition, a tick detects nothing (it would only compete with the
    build for the cores) and records nothing, so the change it did not look at is still news after."""
    project = _reconciling(materialized)
    scenarios.edit_rows(project.data, "2025-02", "north")
    tags = full_build_tags(project.spec, project.instance)
    selection = frozenset(asset_keys(project.spec).values())
    if launched == "from the UI":  # a single-run launch of the whole range: its selection, no tag of ours
        tags.pop(RETRAINING_TAG)
    else:  # an in-process run records no selection: the tag says what it covers
        selection = None
    build = DagsterRun(job_name="__ASSET_JOB", run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTED, asset_selection=selection, tags=tags)
    project.instance.add_run(build)
    deferred = tick(project.defs, project.sensor, project.instance)
    assert deferred.run_requests == [] and deferred.asset_events == ()
    assert deferred.skip_message.startswith(f"every partition has a run in flight (run {build.run_id[:8]})"), deferred.skip_message
    project.instance.report_run_failed(project.instance.get_run_by_id(build.run_id))
    # Had the deferred tick recorded the edit's listing and cells, this would be a "retry".
    assert _reasons(tick(project.defs, project.sensor, project.instance)) == {str(KEY): "edited_rows"}


def test_a_requested_ui_backfill_holds_what_it_has_yet_to_materialize(materialized):
    """Before the backfill daemon has created its runs (up to its 30 s loop) a backfill of every
    partition defers the ticks as a full-build run does; one of a single partition holds it."""
    from dagster._core.execution.backfill import BulkActionStatus

    project = _reconciling(materialized)
    scenarios.edit_rows(project.data, "2025-02", "north")
    one = ui_backfill(project, ("training_set", "sub_model"), [KEY.to_dagster()])
    held = tick(project.defs, project.sensor, project.instance)
    assert held.run_requests == [] and "1 partition(s) with a run in flight" in held.skip_message, held.skip_message
    # Its daemon has seen the partition materialized (the backfill is still requested): not held any more.
    data = one.asset_backfill_data
    done = data._replace(materialized_subset=data.target_subset)
    project.instance.update_backfill(one.with_asset_backfill_data(done, project.instance, project.defs.resolve_asset_graph()))
    assert _reasons(tick(project.defs, project.sensor, project.instance)) == {str(KEY): "retry"}
    project.instance.update_backfill(one.with_status(BulkActionStatus.CANCELED))
    everything = ui_backfill(project, ("training_set", "sub_model", "fallback_model", "model_bundle"), None)
    deferred = tick(project.defs, project.sensor, project.instance)
    assert deferred.skip_message.startswith(f"every partition has a run in flight (backfill {everything.backfill_id})"), deferred.skip_message
    project.instance.update_backfill(everything.with_status(BulkActionStatus.COMPLETED_FAILED))
    assert _reasons(tick(project.defs, project.sensor, project.instance)) == {str(KEY): "retry"}


def test_a_cold_start_build_of_every_partition_with_data_defers_the_ticks_during_it(make_project):
    """The sensor's first tick requests the partitions that have data (here not the empty last
    month's): while their run is in flight, ticks detect and record nothing, and an edit made
    meanwhile is still news to the first tick after it (a changed cell: ``new_data``, as the
    partition was never trained; the untouched ones are only unsettled: ``retry``)."""
    project = make_project(windows={"end": "2025-05-01"}, **NO_WAIT)  # 2025-04: no labels yet
    (request,) = tick(project.defs, project.sensor, project.instance).run_requests
    assert len(json.loads(request.tags[REASONS_TAG])) == 12  # 3 months x 4 cohorts: one rectangle
    build = DagsterRun(
        job_name="__ASSET_JOB", run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTED,
        asset_selection=frozenset(request.asset_selection), tags=dict(request.tags),
    )
    project.instance.add_run(build)
    scenarios.edit_rows(project.data, "2025-02", "north")
    deferred = tick(project.defs, project.sensor, project.instance)
    assert deferred.run_requests == [] and deferred.skip_message.startswith("every partition has a run in flight"), deferred.skip_message
    project.instance.report_run_failed(project.instance.get_run_by_id(build.run_id))
    reasons = _reasons(tick(project.defs, project.sensor, project.instance))
    assert reasons.pop(str(KEY)) == "new_data"
    assert len(reasons) == 11 and set(reasons.values()) == {"retry"}  # the others: never trained, asked again


def test_failed_runs_are_retried_with_backoff_until_the_attempts_run_out(materialized):
    project = _reconciling(materialized)
    scenarios.edit_rows(project.data, "2025-02", "north")
    store = ModelStore(model_store_root(project.spec))
    # Where the store needs a folder for the partition's artifacts, a file: every write fails (even as root).
    folder = store.root / "artifacts" / path_segment(KEY.window) / path_segment(KEY.cohort)
    shutil.rmtree(folder)
    folder.write_text("not a folder")
    for attempt in (1, 2, 3):
        result = tick(project.defs, project.sensor, project.instance)
        assert list(_reasons(result)) == [str(KEY)], (attempt, result.skip_message)
        assert json.loads(result.run_requests[0].tags[ATTEMPTS_TAG]) == {str(KEY): attempt}
        assert not any(r.success for r in execute(project.defs, project.spec, result.run_requests, project.instance, raise_on_error=False))
    gave_up = tick(project.defs, project.sensor, project.instance)
    assert gave_up.run_requests == [] and "gave up after the attempts allowed by change_detection.retry" in gave_up.skip_message
    assert str(KEY) in gave_up.skip_message
    state = next(s for s in partition_states(project.spec, project.instance) if s["partition"] == KEY)
    assert state["state"] == "stale: data changed (3 of 3 requests made; given up until the data changes)"
    # Fixed, and the data changes again: a new fingerprint is new work, attempts start over.
    folder.unlink()
    scenarios.edit_rows(project.data, "2025-02", "north", seed=7)
    healed = tick(project.defs, project.sensor, project.instance)
    assert _reasons(healed) == {str(KEY): "edited_rows"}
    assert all(r.success for r in execute(project.defs, project.spec, healed.run_requests, project.instance))
    assert tick(project.defs, project.sensor, project.instance).run_requests == []


def test_backoff_doubles_between_attempts():
    change = type("C", (), {"partition": KEY, "fingerprint": "f"})()
    retry = RetrySpec(max_attempts=4, backoff_seconds=10)
    assert admit([change], set(), {}, retry, now=100).admitted == [(change, 1)]
    assert admit([change], set(), {(KEY, "f"): (1, 100.0)}, retry, now=109).waiting == [(KEY, 1.0)]
    assert admit([change], set(), {(KEY, "f"): (1, 100.0)}, retry, now=110).admitted == [(change, 2)]
    assert admit([change], set(), {(KEY, "f"): (2, 100.0)}, retry, now=119).waiting == [(KEY, 1.0)]
    assert admit([change], set(), {(KEY, "f"): (3, 100.0)}, retry, now=139).waiting == [(KEY, 1.0)]
    assert admit([change], set(), {(KEY, "f"): (4, 100.0)}, retry, now=10_000).gave_up == [KEY]
    assert admit([change], {KEY}, {}, retry, now=100).in_flight == [KEY]
    # trained on other data since the last request (by hand, a backfill): the data coming back is new work
    since = Trained("other", 10, "trained", "run", 150.0, "d", 1.0, None)
    assert admit([change], set(), {(KEY, "f"): (4, 100.0)}, retry, now=160, trained={KEY: since}).admitted == [(change, 1)]
    failed = since._replace(fingerprint="f", status="failed")
    assert admit([change], set(), {(KEY, "f"): (4, 100.0)}, retry, now=160, trained={KEY: failed}).gave_up == [KEY]


def test_a_repair_request_that_never_ran_is_asked_again(materialized):
    """No stored 'repairing' mark: whether a repair is under way is Dagster's run state."""
    project = _reconciling(materialized)
    store = ModelStore(model_store_root(project.spec))
    store.path_of(store.entries()[KEY]).write_bytes(b"corrupted")
    first = tick(project.defs, project.sensor, project.instance)
    assert _reasons(first) == {str(KEY): "repair"}
    again = tick(project.defs, project.sensor, project.instance)  # the first request was lost
    assert _reasons(again) == {str(KEY): "repair"}
    assert all(r.success for r in execute(project.defs, project.spec, again.run_requests, project.instance))
    assert tick(project.defs, project.sensor, project.instance).run_requests == []


def test_a_definition_change_under_mark_stale_never_becomes_a_full_retrain_later(materialized):
    project = _reconciling(materialized)
    changed = make_spec(project.root, trainer={"params": {"iterations": 30, "depth": 4}}, **NO_WAIT)
    project = project._replace(spec=changed, defs=build_definitions(changed))
    for _ in range(3):  # the change tick, then reconciliation ticks: nothing requested
        result = tick(project.defs, project.sensor, project.instance)
        assert result.run_requests == [], result.skip_message
    scenarios.edit_rows(project.data, "2025-02", "north")
    assert _reasons(tick(project.defs, project.sensor, project.instance)) == {str(KEY): "edited_rows"}


def test_a_deleted_state_store_is_rebuilt_from_the_model_store_without_a_full_retrain(materialized):
    from retrain_plugins.layout import state_path

    project = _reconciling(materialized)
    digests = project.artifact_digests()
    for path in state_path(project.spec).parent.glob("state.sqlite*"):
        path.unlink()
    result = tick(project.defs, project.sensor, project.instance)
    assert result.run_requests == [], result.skip_message  # every file re-read once, nothing differs
    assert "11 changed file(s) of 11" in result.skip_message
    assert project.artifact_digests() == digests
    scenarios.edit_rows(project.data, "2025-02", "north")
    assert _reasons(tick(project.defs, project.sensor, project.instance)) == {str(KEY): "edited_rows"}


@pytest.mark.parametrize("lost", ["deleted", "rebuilt by the CLI"])
def test_a_rebuilt_state_store_never_reuses_a_tick_number(materialized, lost):
    """Dagster drops a run request whose run key a run already has (its run-key dedup): a state
    store rebuilt after ticks that requested runs must number its ticks after theirs, or the next
    change would be requested under an old key and never run. The old ticks' request logs stay."""
    from retrain_plugins.cli.main import main
    from retrain_plugins.layout import state_path

    project = _reconciling(materialized)
    scenarios.edit_rows(project.data, "2025-02", "north")
    first = tick(project.defs, project.sensor, project.instance)
    assert _reasons(first) == {str(KEY): "edited_rows"}
    assert all(r.success for r in execute(project.defs, project.spec, first.run_requests, project.instance))
    used = {run.tags.get(RUN_KEY_TAG) for run in project.instance.get_runs()} - {None}
    assert {r.run_key for r in first.run_requests} <= used
    first_seq = int(first.run_requests[0].tags[SEQ_TAG])
    first_log = read_request_log(project.spec, first_seq)

    for path in state_path(project.spec).parent.glob("state.sqlite*"):
        path.unlink()
    if lost == "rebuilt by the CLI":
        spec_file = project.root / "spec.yaml"
        spec_file.write_text(project.spec.model_dump_json())
        assert main(["state", "rebuild", "--spec", str(spec_file)]) == 0
    assert tick(project.defs, project.sensor, project.instance).run_requests == []
    scenarios.edit_rows(project.data, "2025-02", "north")
    again = tick(project.defs, project.sensor, project.instance)
    assert _reasons(again) == {str(KEY): "edited_rows"}
    assert not {r.run_key for r in again.run_requests} & used
    assert int(again.run_requests[0].tags[SEQ_TAG]) > first_seq
    assert read_request_log(project.spec, first_seq) == first_log


def test_state_rebuild_moves_a_broken_store_aside(materialized, capsys):
    from retrain_plugins.cli.main import main
    from retrain_plugins.layout import state_path

    project = _reconciling(materialized)
    path = state_path(project.spec)
    for side in path.parent.glob("state.sqlite-*"):
        side.unlink()
    path.write_bytes(b"this is not a database" * 100)
    spec_file = project.root / "spec.yaml"
    import yaml

    spec_file.write_text(yaml.safe_dump(json.loads(project.spec.model_dump_json())))
    assert main(["state", "rebuild", "--spec", str(spec_file)]) == 0
    out = capsys.readouterr().out
    assert "moved the old state store to" in out and f"{len(project.models())} trained sub-model(s)" in out
    assert list(path.parent.glob("state.sqlite.broken-*"))
    assert tick(project.defs, project.sensor, project.instance).run_requests == []


CHAOS_SCRIPT = """
import json, os, random, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from dagster import DagsterInstance
from retrain_plugins import RetrainingSpec, build_definitions
from retrain_plugins import training as training_module
from retrain_plugins.changes import state as state_module
from retrain_plugins.dagster import sensors as sensors_module
from retrain_plugins.dagster.execution import execute, tick

spec = RetrainingSpec.model_validate_json(Path(sys.argv[1]).read_text())
tick_point, run_point = json.loads(sys.argv[2])

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def after(owner, name):
    real = getattr(owner, name)
    def killed(*args, **kwargs):
        out = real(*args, **kwargs)
        die()
        return out
    setattr(owner, name, killed)  # fault injection inside the killed process only

if tick_point == "after_commit":
    sensors_module.SensorResult = lambda *a, **k: die()
elif tick_point:
    after(state_module.StateStore, tick_point)
if run_point == "after_training_set":
    after(training_module, "build_training_set")
elif run_point == "after_promotion":  # the model is in the store, the run's record not yet written
    setattr(state_module.StateStore, "record_trained", lambda *a, **k: die())
defs = build_definitions(spec)
instance = DagsterInstance.ephemeral()
result = tick(defs, f"{spec.name}_change_sensor", instance)
execute(defs, spec, result.run_requests, instance, raise_on_error=False)
"""


@pytest.mark.parametrize("seed", [1, 2])
def test_random_kills_of_ticks_and_runs_lose_no_change(materialized, tmp_path, seed):
    """Random edits, each followed by a tick and its runs in a process killed at a random point;
    then the sensor alone (no human) heals: every partition is trained on its final data, exactly
    as a fresh full retrain of that data is."""
    import random

    from retrain_plugins.dagster.execution import materialize_all

    from .conftest import new_project

    project = _reconciling(materialized, max_attempts=10)
    rng = random.Random(seed)
    spec_file = project.root / "spec.json"
    spec_file.write_text(project.spec.model_dump_json())
    script = project.root / "chaos.py"
    script.write_text(textwrap.dedent(CHAOS_SCRIPT))
    tick_points = [None, "save_files", "save_cells", "set_meta", "log_requests", "after_commit"]
    run_points = [None, "after_training_set", "after_promotion"]
    for step in range(4):
        month, cohort = rng.choice(["2025-01", "2025-02", "2025-03"]), rng.choice(["east", "north", "south", "west"])
        scenarios.edit_rows(project.data, month, cohort, seed=100 * seed + step)
        points = [rng.choice(tick_points), rng.choice(run_points)]
        subprocess.run([sys.executable, str(script), str(spec_file), json.dumps(points), str(REPO_ROOT)], capture_output=True, timeout=300)
    for _ in range(6):  # healing: ticks and their runs, nothing else
        result = tick(project.defs, project.sensor, project.instance)
        if not result.run_requests:
            break
        execute(project.defs, project.spec, result.run_requests, project.instance, raise_on_error=False)
    assert result.run_requests == [], result.skip_message
    full_root = tmp_path / "full"
    full_root.mkdir()
    shutil.copytree(project.data / "sources", full_root / "data" / "sources")
    full = new_project(full_root, None)
    assert materialize_all(full.defs, full.spec, full.instance).success
    assert {k: e["fingerprint"] for k, e in project.models().items()} == {k: e["fingerprint"] for k, e in full.models().items()}


def test_data_that_returns_after_a_manual_retrain_is_requested_at_once(materialized):
    """A -> requested and trained; back to the original, retrained by hand; A again: new work, no backoff."""
    from retrain_plugins.dagster.execution import materialize_all

    project = _reconciling(materialized, backoff_seconds=3600)
    path = project.data / "sources/labels/month=2025-02/part-0.parquet"
    original = path.read_bytes()
    scenarios.edit_rows(project.data, "2025-02", "north")
    edited = path.read_bytes()
    first = tick(project.defs, project.sensor, project.instance)
    assert all(r.success for r in execute(project.defs, project.spec, first.run_requests, project.instance))
    path.write_bytes(original)
    assert materialize_all(project.defs, project.spec, project.instance).success  # by hand
    path.write_bytes(edited)
    # No tick saw the original come back, so no cell changed in the sensor's eyes: the model (trained
    # by hand on the original) differs from the data it last observed. Asked at once, as a retry.
    assert _reasons(tick(project.defs, project.sensor, project.instance)) == {str(KEY): "retry"}
