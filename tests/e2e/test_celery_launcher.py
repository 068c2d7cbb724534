"""Warm run workers for real: ``dagster dev`` with dagster-celery's ``CeleryRunLauncher``.

The instance is the usual e2e one (queued runs, one at a time) with the run launcher of
``docs/deploy/dagster-celery.yaml``; a real Celery worker (``dagster-celery worker start``, one pool
process) executes every run. The broker is kombu's filesystem transport (no server here; see
``celery_worker.py``). The project is the test size (12 partitions), fully materialized in-process
before the server starts. Then the daemon's change sensor drives three updates, each of one
edited partition, all executed by the same long-lived pool process: the warm process must train
each on the data as it is now (a stale cache would train on the old rows, and the sensor would
see the fingerprint differ and ask again), and every other sub-model stays byte-identical. Both
forms of the code location's definitions.py run it: dg's lazy ``defs()`` (rebuilt for every run)
and a module-level ``defs`` built once per worker process, which must not make a run stale either.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import DagsterInstance

from retrain_plugins.dagster.execution import materialize_all
from retrain_plugins.dagster.tags import RETRAINING_TAG
from retrain_plugins.demo import scenarios
from retrain_plugins.partitions import PartitionKey

from ..conftest import Project, new_project
from .celery_worker import CeleryWorker, celery_run_launcher, working
from .dagster_dev import LOCATION, SUB_MODEL, DagsterDev, serving, write_code_location, write_instance
from .graphql import RANGE_TAGS, GraphQL, by_run, wait_for

READY_TIMEOUT = 240.0
RUN_TIMEOUT = 180.0
TICK_TIMEOUT = 90.0
SENSOR = "churn_change_sensor"
# (month, cohort, seed): the third edits the first cell again, in the same warm process
EDITS = [("2025-02", "east", 0), ("2025-03", "west", 0), ("2025-02", "east", 1)]


@dataclass
class OnCelery:
    project: Project
    server: DagsterDev
    worker: CeleryWorker
    home: Path

    @property
    def graphql(self) -> GraphQL:
        return self.server.graphql

    def digests(self) -> dict[PartitionKey, tuple[str, str]]:
        return {k: (path, sha) for k, (path, sha, _) in self.project.artifact_digests().items()}

    def run_pids(self, run_id: str) -> set[int]:
        """The process ids that wrote the run's events after its launch (the run worker's)."""
        with DagsterInstance.from_config(str(self.home)) as instance:
            return {
                e.dagster_event.pid
                for e in instance.all_logs(run_id)
                if e.dagster_event is not None and e.dagster_event.pid is not None
                and e.dagster_event.event_type_value not in ("PIPELINE_ENQUEUED", "PIPELINE_DEQUEUED", "PIPELINE_STARTING")
            }  # fmt: skip


# "lazy": definitions.py as dg scaffolds it (Dagster rebuilds the definitions for every run);
# "once": a module-level Definitions object, built once per worker process (docs/deployment.md).
@pytest.fixture(scope="module", params=["lazy", "once"])
def on_celery(request, tmp_path_factory) -> Iterator[OnCelery]:
    root = tmp_path_factory.mktemp(f"e2e_celery_{request.param}")
    project = new_project(root / "project")
    home = write_instance(root / "dagster_home", run_launcher=celery_run_launcher(root / "celery"))
    workspace = write_code_location(root / "location", project.spec, definitions=request.param)
    with DagsterInstance.from_config(str(home)) as instance:
        assert materialize_all(project.defs, project.spec, instance).success
    with working(root / "celery", home, root / "location") as worker:
        with serving(workspace, home, root / "dagster_dev.log", READY_TIMEOUT) as server:
            yield OnCelery(project, server, worker, home)


def test_sensor_driven_updates_run_in_one_warm_celery_worker(on_celery):
    gql, project = on_celery.graphql, on_celery.project
    assert gql.instance()["runLauncher"]["name"] == "CeleryRunLauncher"
    started = time.time()
    assert project.sensor == SENSOR and gql.start_sensor(LOCATION, SENSOR) == "RUNNING"
    first = wait_for(lambda: gql.finished_ticks(LOCATION, SENSOR, started - 1), TICK_TIMEOUT, "the sensor's first tick")[0]
    assert first["status"] == "SKIPPED" and first["skipReason"].startswith("no partition changed"), first

    pids: list[set[int]] = []
    for month, cohort, seed in EDITS:
        edited = PartitionKey(f"{month}-01", cohort)
        before = on_celery.digests()
        edited_at = time.time()
        assert scenarios.edit_rows(project.data, month, cohort, seed=seed)
        tick = wait_for(
            lambda: next((t for t in gql.finished_ticks(LOCATION, SENSOR, edited_at) if t["status"] != "SKIPPED"), None),
            TICK_TIMEOUT,
            f"a sensor tick that requests a run after the edit of {edited}",
        )
        assert tick["status"] == "SUCCESS" and len(tick["runIds"]) == 1, tick
        run = gql.wait_run(tick["runIds"][0], RUN_TIMEOUT)
        assert run["status"] == "SUCCESS", f"{run}\n{on_celery.worker.log_tail()}"
        assert run["tags"]["dagster-celery/task_id"], run["tags"]  # the launcher sent it to Celery
        assert (run["tags"][RANGE_TAGS[0]], run["tags"][RANGE_TAGS[1]]) == (str(edited.to_dagster()),) * 2
        assert run["tags"]["retrain/reason"] == "edited_rows" and run["tags"][RETRAINING_TAG] == "churn"
        sub_model = by_run(gql.materializations(SUB_MODEL), run["runId"])
        assert list(sub_model) == [str(edited.to_dagster())]
        assert sub_model[str(edited.to_dagster())]["metadata"]["status"] == "trained"
        after = on_celery.digests()
        assert {k for k in before if before[k] != after[k]} == {edited}
        assert {k: v for k, v in after.items() if k != edited} == {k: v for k, v in before.items() if k != edited}
        # the model matches the data now: the sensor rests, nothing is asked again (a warm process
        # that trained on cached rows would leave a fingerprint the sensor re-requests as `retry`)
        later = gql.settle(LOCATION, SENSOR, run["startTime"], run["endTime"], TICK_TIMEOUT, RUN_TIMEOUT)
        assert later == [], [(r["runId"], r["status"], r["tags"].get("retrain/reason")) for r in later]
        pids.append(on_celery.run_pids(run["runId"]))

    # one process executed every run, and it is the worker's long-lived pool process, not one per run
    assert all(len(p) == 1 for p in pids) and len(set.union(*pids)) == 1, pids
    (pid,) = pids[0]
    assert Path(f"/proc/{pid}").exists(), f"pool process {pid} is gone: not a warm worker"
    assert _ancestor(pid, on_celery.worker.process.pid), f"process {pid} is not the Celery worker's"


def _ancestor(pid: int, ancestor: int) -> bool:
    """Whether ``ancestor`` is a parent, grandparent, ... of ``pid``."""
    while pid > 1:
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        if pid == ancestor:
            return True
    return False
